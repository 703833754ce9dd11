"""What TensorFlow prints that a user cannot act on is kept off their notebooks and scripts."""
import logging


def test_the_retracing_warning_is_left_out_and_tensorflows_other_warnings_pass():
    import carecore  # noqa: F401 - installs the filter

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log = logging.getLogger("tensorflow")
    log.addHandler(handler)
    try:
        log.warning("5 out of the last 25 calls to <function f at 0x1> triggered tf.function retracing. Tracing is "
                    "expensive and the excessive number of tracings could be due to ...")
        log.warning("a checkpoint could not be read")
    finally:
        log.removeHandler(handler)
    assert seen == ["a checkpoint could not be read"]

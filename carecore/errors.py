"""The one exception type users see: a message that says what was got, what was expected, and how to fix it;
and the warnings (:class:`CareWarning`) of work that goes on."""
import contextlib
import threading
import warnings


class CareError(ValueError):
    """Bad input or a request that cannot be honoured.

    The message is one line, names the file (when there is one) and the problem. The CLI prints it
    without a traceback and exits with status 2; the app shows it next to the step.
    """


class CareWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. an image unlike the training
    images). The CLI prints it as ``carecore: warning: ...``; the app shows it with the result."""


_sinks = threading.local()


def warn(message, *, stacklevel=2):
    """Say ``message`` as a :class:`CareWarning`, or into the collector of :func:`collect_warnings`
    open in this thread (the app shows them with the step's result)."""
    sink = getattr(_sinks, "sink", None)
    if sink is not None:
        if message not in sink:
            sink.append(message)
        return
    warnings.warn(message, CareWarning, stacklevel=stacklevel + 1)


@contextlib.contextmanager
def collect_warnings():
    """Collect the :func:`warn` messages of this thread (a list, each once) instead of warning; other
    threads are not affected (unlike :func:`warnings.catch_warnings`, which swaps global state)."""
    before = getattr(_sinks, "sink", None)
    sink = []
    _sinks.sink = sink
    try:
        yield sink
    finally:
        _sinks.sink = before


def warn_frames(messages, what="frame"):
    """Warn the first of ``messages`` (one per frame of a time-lapse, say), naming how many more said the same."""
    if messages:
        more = len(messages) - 1
        warn(messages[0] + (f" (and {more} more {what}{'s' * (more != 1)} likewise)" if more else ""), stacklevel=3)

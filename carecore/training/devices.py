"""Which devices a training run uses: data parallelism over several GPUs (or logical CPUs).

Keras 3's own ``keras.distribution`` API works with the JAX backend only; with TensorFlow, data
parallelism is ``tf.distribute.MirroredStrategy``: the network and its optimizer are created inside the
strategy's scope, every step's batch is split across the devices (each computes the gradient of its
part), and the gradients are summed before one update shared by all. The configured ``batch_size`` is
the global batch, so a run on one device and a run on two follow the same schedule and learn the same
thing (tested with two logical CPU devices).
"""
from __future__ import annotations

from ..errors import CareError


def available_devices():
    """Names of the devices TensorFlow can train on: its GPUs, or else its (logical) CPUs."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def resolve_devices(devices):
    """The device names for ``devices``: None (one, TensorFlow's default), ``"all"``, a count or names.

    Raises
    ------
    CareError
        When more devices are asked for than there are, or a named device does not exist.
    """
    if devices is None:
        return []
    have = available_devices()
    if devices == "all":
        return have
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(have):
            raise CareError(f"devices: {devices} asked for, but this machine has {len(have)} ({', '.join(have)}); "
                            "for several CPU devices configure logical ones before TensorFlow starts "
                            "(tf.config.set_logical_device_configuration)")
        return have[:devices]
    if isinstance(devices, (list, tuple)) and all(isinstance(d, str) for d in devices):
        missing = [d for d in devices if not any(h.lower().endswith(d.lower().lstrip("/")) or h == d for h in have)]
        if missing:
            raise CareError(f"devices: {missing} not found; this machine has {have}")
        return list(devices)
    raise CareError(f"devices: give None, 'all', a number or a list of device names, got {devices!r}")


def training_strategy(devices):
    """A ``tf.distribute.MirroredStrategy`` over ``devices`` (see :func:`resolve_devices`), or None for one device."""
    names = resolve_devices(devices)
    if len(names) <= 1:
        return None
    import tensorflow as tf

    cross = tf.distribute.ReductionToOneDevice() if all("CPU" in n.upper() for n in names) else None
    return tf.distribute.MirroredStrategy(names, cross_device_ops=cross)

"""Which precision a new model computes in, chosen for the machine it is configured on.

Mixed bfloat16 halves the memory a step moves, but it is only fast where the hardware computes in
bfloat16: a CPU with AVX512-BF16 or AMX (x86) or the BF16 extension (ARM), or a GPU of compute
capability 8.0 or newer. Elsewhere TensorFlow converts every value and computes in float32: on a
2-core AVX2 CPU a training step of the fast 2D network took 1.6 s in bfloat16 against 0.21 s in
float32, and the 3D demo made 6 steps in 3 minutes (README, "Conventions": Precision).

Where bfloat16 is fast, it is still only chosen for 3D networks: on a CPU with bfloat16 in hardware,
3-minute runs of the 2D cases restored as well or better in float32 (2D demo SSIM 0.723 against
0.683, BPAE actin at 5 photons 0.813 against 0.776), while the 3D cases did as well or better in
bfloat16 (embryo 0.883 against 0.870, in the same time).
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

#: CPU flags (``/proc/cpuinfo``) of instructions that compute in bfloat16.
CPU_BFLOAT16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_has_bfloat16(cpuinfo=None):
    """Whether the CPU computes in bfloat16 in hardware (read from ``/proc/cpuinfo``; False where it
    cannot be read, as on macOS and Windows).

    Parameters
    ----------
    cpuinfo : str, optional
        The text of ``/proc/cpuinfo``; read from the machine when None.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features") and CPU_BFLOAT16_FLAGS & set(value.split()):
            return True
    return False


def gpu_has_bfloat16():
    """Whether the first GPU Keras' backend sees computes in bfloat16 (compute capability 8.0 or newer);
    False without a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return False
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        return tuple(cc) >= (8, 0)
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "gpu":
            return False
        return float(getattr(dev, "compute_capability", "0") or 0) >= 8.0
    return False


@functools.lru_cache(maxsize=None)
def native_bfloat16():
    """Whether this machine trains in bfloat16 faster than in float32: its GPU when it has one, else its CPU."""
    try:
        if gpu_has_bfloat16():
            return True
    except Exception:   # a backend that cannot tell: judge by the CPU
        pass
    return platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64") and cpu_has_bfloat16()


def onednn_enabled():
    """Whether TensorFlow computes with oneDNN in this process (True/False; None where it cannot tell, or
    with another backend). ``import carecore`` turns it on unless ``TF_ENABLE_ONEDNN_OPTS`` says otherwise
    or TensorFlow was imported before carecore; the run card records it (a step without it was 2-4 times
    slower on AVX2 CPUs)."""
    try:
        import keras

        if keras.backend.backend() != "tensorflow":
            return None
        from tensorflow.python.util import _pywrap_util_port   # TensorFlow's own test of the switch

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:   # a TensorFlow without that function: say nothing rather than guess
        return None


def default_precision(ndim, *, native=None):
    """The precision a new ``ndim``-D network computes in on this machine: ``"mixed_bfloat16"`` for 3D
    networks where the hardware computes in bfloat16 (:func:`native_bfloat16`), else ``"float32"``.

    Parameters
    ----------
    ndim : int
        2 or 3, the spatial dimensions of the network.
    native : bool, optional
        Whether bfloat16 is fast here; asked of the machine when None.

    Examples
    --------
    >>> default_precision(2)
    'float32'
    >>> default_precision(3, native=True)
    'mixed_bfloat16'
    """
    if native is None:
        native = native_bfloat16()
    return "mixed_bfloat16" if ndim == 3 and native else "float32"


def bfloat16_fits(patch_size, unet_depth):
    """Whether a network of ``unet_depth`` poolings trains in bfloat16 on patches of ``patch_size``: 3D
    bfloat16 training needs patch sides of at least ``2**(unet_depth + 1)`` (2D patches always fit).

    Examples
    --------
    >>> bfloat16_fits((16, 32, 32), 2), bfloat16_fits((4, 32, 32), 2)
    (True, False)
    """
    return len(patch_size) != 3 or min(patch_size) >= 2 ** (unet_depth + 1)

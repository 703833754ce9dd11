"""Which precision a new model computes in, chosen for the machine it is configured on.

Mixed bfloat16 halves the memory a step moves, but it is only fast where the hardware computes in
bfloat16: a CPU with AVX512-BF16 or AMX (x86) or the BF16 extension (ARM), or a GPU of compute
capability 8.0 or newer. Elsewhere TensorFlow converts every value and computes in float32: on a
2-core AVX2 CPU a training step of the fast 2D network took 1.6 s in bfloat16 against 0.21 s in
float32, and the 3D demo made 6 steps in 3 minutes (README, "Conventions": Precision).

Nor is it fast on every CPU that has the instructions: on an AMD EPYC with AVX512-BF16 the 3D demo
passed the tuned filter in 32 s in bfloat16 against 62 s in float32, but on an Intel Xeon with
AVX512-BF16 and without AMX a step of the same network took 0.22-0.23 s in bfloat16 against 0.13-0.17 s
in float32 (three timings). So where the CPU has the instructions, :func:`bfloat16_timing` times a
training step of the 3D budget recipe's network in both precisions, once per machine and software
(about 10 s; the answer is kept in ``$XDG_CACHE_HOME/carecore``, by default ``~/.cache/carecore``),
and bfloat16 is chosen where its step is at least :data:`BFLOAT16_MIN_SPEEDUP` times as fast
(benchmarks/quality-per-minute.md, "bfloat16 timed, not assumed").

Where bfloat16 is fast, it is still only chosen for 3D networks: on a CPU with bfloat16 in hardware,
3-minute runs of the 2D cases restored as well or better in float32 (2D demo SSIM 0.723 against
0.683, BPAE actin at 5 photons 0.813 against 0.776), while the 3D cases did as well or better in
bfloat16 (embryo 0.883 against 0.870, in the same time).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

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
def bfloat16_hardware():
    """Whether this machine has instructions that compute in bfloat16: its GPU when it has one, else its
    CPU's flags (:func:`gpu_has_bfloat16`, :func:`cpu_has_bfloat16`). Whether they make training faster
    is :func:`native_bfloat16`'s question."""
    try:
        if gpu_has_bfloat16():
            return True
    except Exception:   # a backend that cannot tell: judge by the CPU
        pass
    return platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64") and cpu_has_bfloat16()


#: How much faster a bfloat16 training step must be than a float32 one for bfloat16 to be chosen: where
#: both are about as fast, float32 is kept (at equal speed the 3D cases restored as well in it, the 2D ones
#: better).
BFLOAT16_MIN_SPEEDUP = 1.1

#: The step :func:`bfloat16_timing` times: the 3D budget recipe's network (16 filters, two poolings) on a
#: batch of 8 patches of 16x32x32, as bfloat16 trains it (:data:`~carecore.models.config.FAST_RECIPE`).
TIMED_STEP = {"unet_filters": 16, "unet_depth": 2, "batch_size": 8, "patch_size": (16, 32, 32)}


def bfloat16_timing(*, repeats=3):
    """Seconds a training step of the 3D budget recipe's network (:data:`TIMED_STEP`, plain MAE) takes
    on this machine in each precision: ``{"mixed_bfloat16": s, "float32": s}``, each the fastest of
    ``repeats`` steps after one untimed, the two precisions' steps alternating so that other work on
    the machine slows both alike. Takes about 10 s on 2 CPU cores (building and tracing both networks).

    The same network in both precisions: what it answers is whether this machine computes in bfloat16
    faster. (What a float32 step is best spent on, smaller batches and fewer filters for short budgets,
    was measured separately: :data:`~carecore.models.config.FAST_RECIPE_3D_FLOAT32`.)"""
    import keras
    import numpy as np

    from .config import CareConfig
    from .unet import build_unet

    shape = (TIMED_STEP["batch_size"], *TIMED_STEP["patch_size"], 1)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    models = {}
    for precision in ("mixed_bfloat16", "float32"):
        config = CareConfig(axes="ZYX", precision=precision, residual=False, unet_filters=TIMED_STEP["unet_filters"],
                            unet_depth=TIMED_STEP["unet_depth"], patch_size=TIMED_STEP["patch_size"],
                            batch_size=TIMED_STEP["batch_size"])
        model = build_unet(config, name=f"timed_{precision}")
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mae")
        model.train_on_batch(x, x)   # traced, not timed
        models[precision] = model
    best = dict.fromkeys(models, float("inf"))
    for _ in range(max(int(repeats), 1)):
        for precision, model in models.items():
            t = time.perf_counter()
            model.train_on_batch(x, x)
            best[precision] = min(best[precision], time.perf_counter() - t)
    return best


def _devices():
    """The accelerators Keras' backend sees (names), where it can tell: part of what a timing was taken on."""
    import keras

    try:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return [d.name for d in tf.config.list_physical_devices() if d.device_type != "CPU"]
        if keras.backend.backend() == "jax":
            import jax

            return [str(d) for d in jax.devices() if d.platform != "cpu"]
    except Exception:   # a backend that cannot list them: the key without them
        pass
    return []


def _timing_cache():
    """The file that keeps :func:`bfloat16_timing`'s result for this machine and software, and its key."""
    import keras

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    lines = {line.partition(":")[0].strip().lower(): line.partition(":")[2].strip() for line in cpuinfo.splitlines()}
    backend = keras.backend.backend()
    versions = {"keras": keras.version()}
    try:
        versions[backend] = importlib.import_module(backend).__version__
    except Exception:   # a backend that does not say its version: the key without it
        pass
    try:
        cores = len(os.sched_getaffinity(0))   # the cores this process may use (a container's, a taskset's)
    except (AttributeError, OSError):
        cores = os.cpu_count()
    threads = {k: os.environ[k] for k in sorted(os.environ)
               if k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS") or k.startswith("TF_NUM_")}
    key = json.dumps({"machine": platform.machine(), "cpu": lines.get("model name", ""),
                      "flags": lines.get("flags", lines.get("features", "")), "cores": cores,
                      "threads": threads, "devices": _devices(),
                      "backend": backend, "versions": versions, "onednn": onednn_enabled(),
                      "step": {k: list(v) if isinstance(v, tuple) else v for k, v in TIMED_STEP.items()}},
                     sort_keys=True)
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "carecore"
    return folder / f"bfloat16-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json", key


def _read_kept(path, key):
    """The answer kept in ``path`` for ``key``; None where there is none (not timed yet, another key, a
    file that is not one of these)."""
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(kept, dict) and kept.get("key") == key and isinstance(kept.get("bfloat16_faster"), bool):
        return kept["bfloat16_faster"]
    return None


class _Lock:
    """An exclusive lock on ``path`` (POSIX ``flock``) while a timing is taken and kept: other processes
    configuring at the same moment (test workers, the app's kernel, a training job) wait for its answer
    instead of timing beside it. No lock where the platform or the folder has none."""

    def __init__(self, path):
        self.path, self.file = path, None

    def __enter__(self):
        if self.path is None:
            return self
        try:
            import fcntl

            self.file = open(self.path, "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        except (ImportError, OSError):
            if self.file is not None:
                self.file.close()
            self.file = None
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()   # (closing releases the lock)


def bfloat16_faster():
    """Whether a training step is at least :data:`BFLOAT16_MIN_SPEEDUP` times as fast in bfloat16 as in
    float32 here, timed once per machine and software by :func:`bfloat16_timing` and kept in
    ``$XDG_CACHE_HOME/carecore`` (``~/.cache/carecore``); timed again where that cannot be read or written.
    Where the timing fails (a backend that cannot train this network in bfloat16, memory), False: float32,
    nothing kept."""
    try:
        path, key = _timing_cache()
        path.parent.mkdir(parents=True, exist_ok=True)
    except Exception:   # no cache folder to keep it in: time it
        path, key = None, None
    if path is not None and (kept := _read_kept(path, key)) is not None:
        return kept
    with _Lock(path.with_name(".bfloat16.lock")) if path is not None else _Lock(None):
        if path is not None and (kept := _read_kept(path, key)) is not None:
            return kept   # timed by another process while this one waited
        log.info("timing a training step in bfloat16 and in float32 (once on this machine, about 10 s)")
        try:
            seconds = bfloat16_timing()
        except Exception as e:   # float32 is right everywhere: bfloat16 only where it was measured faster
            log.warning("carecore could not time a bfloat16 training step (%s: %s): float32", type(e).__name__, e)
            return False
        faster = seconds["float32"] >= BFLOAT16_MIN_SPEEDUP * seconds["mixed_bfloat16"]
        if path is not None:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
            try:
                tmp.write_text(json.dumps({"key": key, "seconds_per_step": seconds, "bfloat16_faster": faster,
                                           "timed": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
                os.replace(tmp, path)
            except OSError:   # a read-only cache: timed again next time
                tmp.unlink(missing_ok=True)
    return faster


def needs_timing():
    """Whether :func:`native_bfloat16` would time a training step now (about 10 s): a CPU with bfloat16
    instructions, no GPU that answers, and no answer kept for this machine yet. For a caller that says so
    before it asks (the app's Train step)."""
    if native_bfloat16.cache_info().currsize or _untimed_answer() is not None:
        return False
    try:
        path, key = _timing_cache()
    except Exception:   # no cache folder: it would be timed
        return True
    return _read_kept(path, key) is None


@functools.lru_cache(maxsize=None)
def native_bfloat16():
    """Whether this machine trains in bfloat16 faster than in float32: a GPU with bfloat16 (compute
    capability 8.0 or newer) does; a CPU with bfloat16 instructions does where a timed step says so
    (:func:`bfloat16_faster`); other CPUs do not."""
    answer = _untimed_answer()
    return bfloat16_faster() if answer is None else answer


def _untimed_answer():
    """:func:`native_bfloat16`'s answer where no step is timed: False without bfloat16 instructions, True
    with a GPU that has bfloat16; None where a step must be timed."""
    if not bfloat16_hardware():
        return False
    try:
        if gpu_has_bfloat16():
            return True
    except Exception:   # a backend that cannot tell: time it
        pass
    return None


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
    networks where a training step is faster in it (:func:`native_bfloat16`), else ``"float32"``.

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
    if ndim != 3:
        return "float32"
    return "mixed_bfloat16" if (native_bfloat16() if native is None else native) else "float32"


def bfloat16_fits(patch_size, unet_depth):
    """Whether a network of ``unet_depth`` poolings trains in bfloat16 on patches of ``patch_size``: 3D
    bfloat16 training needs patch sides of at least ``2**(unet_depth + 1)`` (2D patches always fit).

    Examples
    --------
    >>> bfloat16_fits((16, 32, 32), 2), bfloat16_fits((4, 32, 32), 2)
    (True, False)
    """
    return len(patch_size) != 3 or min(patch_size) >= 2 ** (unet_depth + 1)

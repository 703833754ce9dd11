"""CARE Lab engine: content-aware image restoration for fluorescence microscopy.

The public API lives here: what a notebook cell, a wizard button or the CLI calls.
Heavy modules (Keras models, training) are imported lazily so that ``import carecore``
and the command line start fast.
"""
from __future__ import annotations

import logging as _logging
import os as _os

# TensorFlow computes with oneDNN by default only on CPUs it finds AVX512-VNNI, AVX512-BF16 or AMX on; on
# other x86 CPUs (2 AVX2 cores: CI's kind) its own kernels trained the budget's 3D network 3.7 times slower
# (a float32 step 0.17 s against 0.046 s) and the 2D one 2.2 times (benchmarks/quality-per-minute.md,
# "Precision, and CPUs without bfloat16"). The switch is read when TensorFlow is imported, so it is set
# here, before any carecore module imports it; a value the user set wins (``TF_ENABLE_ONEDNN_OPTS=0`` turns
# it off).
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# TensorFlow's start-up notes (oneDNN, CPU features) are information, not warnings: kept off a notebook's or a
# script's output (the command line keeps its C++ warnings off too: _TF_LOG_OURS); a value the user set wins
_TF_LOG_OURS = "TF_CPP_MIN_LOG_LEVEL" not in _os.environ
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _not_retracing(record):
    """TensorFlow's "N out of the last M calls ... triggered tf.function retracing" is left out: tiled
    prediction gives the network tiles of a few shapes (the edges', an ensemble's members) by design, and
    its advice (reduce_retracing, tensor arguments) is not the user's to follow (a workshop trial saw it
    in notebook 6). TensorFlow's other warnings pass."""
    return "triggered tf.function retracing" not in str(getattr(record, "msg", ""))


_logging.getLogger("tensorflow").addFilter(_not_retracing)

__version__ = "0.1.0"

from .errors import CareError, CareWarning
from .axes import check_axes, move_axes, guess_axes
from .io import Image, read_image, write_image
from .normalize import (
    DEFAULT_PERCENTILES,
    Normalization,
    percentile_normalize,
    denormalize,
    compute_percentiles,
)
from .metrics import evaluate, nrmse, ssim, psnr, isotropy_ratio, affine_fit
from .baselines import baseline, BASELINES
from .data.pairs import find_pairs, load_pair, check_alignment, PairListing
from .data.patches import create_patches, PatchSet, load_patches
from .simulate import (
    simulate_photon_noise,
    simulate_anisotropic,
    simulate_subdiffraction,
    psf_sigma_from_optics,
    nuclei_volume,
    surface_stack,
    write_demo_data,
)

_LAZY = {
    "CARE": ("carecore.models.care", "CARE"),
    "UpsamplingCARE": ("carecore.models.upsampling", "UpsamplingCARE"),
    "TrainingResult": ("carecore.models.care", "TrainingResult"),
    "CareConfig": ("carecore.models.config", "CareConfig"),
    "care_config": ("carecore.models.config", "care_config"),
    "with_channels_of": ("carecore.models.config", "with_channels_of"),
    "load_model": ("carecore.models.folder", "load_model"),
    "create_model": ("carecore.models.kinds", "create_model"),
    "export_bioimageio": ("carecore.export.bioimageio", "export_bioimageio"),
    "import_csbdeep": ("carecore.export.csbdeep", "import_csbdeep"),
    "load_bioimageio": ("carecore.export.package", "load_bioimageio"),
    "predict_chunked": ("carecore.prediction.distributed", "predict_chunked"),
    "read_ngff": ("carecore.ngff", "read_ngff"),
    "write_ngff": ("carecore.ngff", "write_ngff"),
}


def __getattr__(name):
    """Keras/TensorFlow load only when a model is first used, so `import carecore` stays fast."""
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'carecore' has no attribute {name!r}")


__all__ = list(_LAZY) + [
    "__version__", "CareError", "CareWarning", "check_axes", "move_axes", "guess_axes", "Image", "read_image",
    "write_image", "DEFAULT_PERCENTILES", "Normalization", "percentile_normalize", "denormalize",
    "compute_percentiles", "evaluate", "nrmse", "ssim", "psnr", "isotropy_ratio", "affine_fit",
    "baseline", "BASELINES", "find_pairs", "load_pair", "check_alignment", "PairListing",
    "create_patches", "PatchSet", "load_patches", "simulate_photon_noise", "simulate_anisotropic",
    "simulate_subdiffraction", "psf_sigma_from_optics", "nuclei_volume", "surface_stack",
    "write_demo_data",
]

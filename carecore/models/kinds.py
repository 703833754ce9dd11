"""Model kinds: the ``kind`` of a configuration -> the class that trains and predicts it.

Each kind is a small subclass of :class:`~carecore.models.care.CARE` in a module of its own that
overrides a few hooks (``_build``, ``_preprocess``, ``on_output_grid``, ``output_spacing``,
``_halo(output_sigma=None)`` (the tiles' overlap for an output smoothing of that sigma, default the model's),
``output_shape``...) and sets its class flags (``needs_pairs``: trained on low/high pairs;
``smooths_output``: ``predict`` can smooth its output; if not, configurations and ``predict`` refuse a
non-zero ``output_sigma``). Adding a kind is that module and one line in
:data:`KINDS`; configurations validate ``kind`` against it, and :func:`create_model` /
:func:`~carecore.models.folder.load_model` build the right class from a configuration. Classes are
imported only when first used, so reading a configuration does not load Keras.
"""
from __future__ import annotations

import importlib

from ..errors import CareError

#: kind -> (module, class, what it does)
KINDS = {
    "care": ("carecore.models.care", "CARE", "restoration on the input's grid (denoising 2D/3D)"),
    "upsampling": ("carecore.models.upsampling", "UpsamplingCARE",
                   "interpolate Z by the axial factor, then a 3D network"),
    "isotropic": ("carecore.models.isotropic", "IsotropicCARE",
                  "a 2D network trained on the stack's own lateral slices restores its XZ and YZ slices"),
    "subdiffraction": ("carecore.models.subdiffraction", "SubdiffractionCARE", "trained on synthetic tubules/granules with the microscope's PSF"),
    "projection": ("carecore.models.projection", "ProjectionCARE", "3D stack -> 2D surface projection, denoised"),
}


def model_class(kind):
    """The class registered for ``kind``."""
    if kind not in KINDS:
        raise CareError(f"kind: must be one of {tuple(KINDS)}, got {kind!r}")
    module, name, _ = KINDS[kind]
    return getattr(importlib.import_module(module), name)


def create_model(config, path=None):
    """A new, untrained model of the kind ``config.kind`` (saved to ``path`` while training)."""
    return model_class(config.kind)(config, path)

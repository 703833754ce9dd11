"""Upsampling CARE: interpolate Z by the axial factor, then the 3D network (CARE-NOTES §1).

Training pairs come from :func:`~carecore.simulate_anisotropic` (``axis="Z"``, interpolated back onto
the fine grid); prediction interpolates a coarse stack of ``n`` slices the same way, onto ``n × factor``
slices at positions ``0, 1/f, 2/f, ...`` of the coarse grid (the last ones held at the last coarse
slice, exactly as the training inputs were made), with the interpolation stored in the configuration
(``interpolation``: linear by default). So a coarse stack of 8 slices and factor 4 gives 32 slices,
on the grid of a ground truth of 32 slices.
"""
from __future__ import annotations

import numpy as np

from ..simulate.anisotropic import INTERPOLATION_ORDER, resample_axis
from ..errors import CareError
from .care import CARE


def interpolate_z(image, factor, axis, interpolation="linear"):
    """``image`` interpolated along ``axis`` onto ``round(n × factor)`` positions ``0, 1/f, 2/f, ...`` of
    its grid (the last ones held at the last slice), as the training inputs of the axial kinds were made."""
    x = np.asarray(image, np.float32)
    n_out = int(round(x.shape[axis] * factor))
    return resample_axis(x, np.arange(n_out) / factor, axis, order=INTERPOLATION_ORDER[interpolation])


class UpsamplingCARE(CARE):
    """A :class:`CARE` whose input stack is first interpolated along Z by ``config.upsampling_factor``."""

    @classmethod
    def check_config(cls, config):
        if config.axes != "ZYX":
            raise CareError("kind and axes: upsampling needs a 3D (ZYX) model")
        if not config.upsampling_factor > 1:
            raise CareError(f"upsampling_factor: must be > 1 for kind='upsampling', got {config.upsampling_factor}")

    def _preprocess(self, x, axes):
        """(Z, Y, X, C) coarse -> (round(Z × factor), Y, X, C), as the training inputs were made."""
        return interpolate_z(x, self.config.upsampling_factor, 0, self.config.interpolation)

    def on_output_grid(self, image, *, axes, interpolation=None):
        """The coarse stack interpolated onto the output's Z grid (``interpolation``: the model's own by default)."""
        return interpolate_z(image, self.config.upsampling_factor, axes.index("Z"),
                             interpolation or self.config.interpolation)

    def grid_starts(self):
        """The coarse stack interpolated along Z three ways (nearest, linear, cubic): a classical
        restoration starts from whichever does best (:meth:`carecore.CARE.grid_starts`)."""
        import functools

        return {f"{how} interpolation": functools.partial(self.on_output_grid, interpolation=how)
                for how in ("nearest", "linear", "cubic")}

    def output_spacing(self, spacing):
        out = dict(spacing or {})
        if "Z" in out:
            out["Z"] = out["Z"] / self.config.upsampling_factor
        return out


#: How far (relative) a stack's recorded Z/X voxel-size ratio may lie from the axial factor before it is told
SPACING_TOLERANCE = 0.1


def spacing_ratio(spacing):
    """The axial factor a voxel size records: Z size over the lateral (X, else Y) size, or None when
    either is unknown (not recorded, or zero)."""
    spacing = spacing or {}
    z = spacing.get("Z")
    lateral = spacing.get("X") or spacing.get("Y")
    if not z or not lateral or z <= 0 or lateral <= 0:
        return None
    return float(z) / float(lateral)


def spacing_mismatch(spacing, factor, *, name="image", tolerance=SPACING_TOLERANCE,
                     factor_label="the model's axial factor (upsampling_factor)"):
    """A sentence when the Z/X (or Z/Y) voxel-size ratio that ``spacing`` records differs from the axial
    ``factor`` by more than ``tolerance`` (relative), else None (also when the file records no voxel size).
    ``factor_label`` names where the factor comes from (a CLI flag, say)."""
    spacing = spacing or {}
    z = spacing.get("Z")
    for a in "XY":
        lateral = spacing.get(a)
        if not z or not lateral or z <= 0 or lateral <= 0:
            continue
        ratio = float(z) / float(lateral)
        if abs(ratio / float(factor) - 1) > tolerance:
            size = ", ".join(f"{k} {spacing[k]:g}" for k in "ZYX" if spacing.get(k))
            return (f"{name}: its voxel size ({size} µm) gives a Z/{a} ratio of {ratio:.3g}, but {factor_label} is "
                    f"{float(factor):g}")
    return None

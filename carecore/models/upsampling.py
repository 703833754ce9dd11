"""Upsampling CARE: interpolate Z by the axial factor, then the 3D network (CARE-NOTES §1).

Training pairs come from :func:`~carecore.simulate_anisotropic` (``axis="Z"``, linear
interpolation back onto the fine grid); prediction interpolates a coarse stack the same way, so the
network sees what it was trained on.
"""
from __future__ import annotations

import numpy as np

from ..simulate.anisotropic import resample_axis
from .care import CARE


class UpsamplingCARE(CARE):
    """A :class:`CARE` whose input stack is first interpolated along Z by ``config.upsampling_factor``."""

    def _preprocess(self, x, axes):
        f = self.config.upsampling_factor
        n = x.shape[0]
        n_out = int(round((n - 1) * f)) + 1
        return resample_axis(np.asarray(x, dtype=np.float32), np.arange(n_out) / f, 0, order=1)

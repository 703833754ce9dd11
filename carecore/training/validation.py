"""The validation read-outs of a training run: SSIM on held-out patches, and the best classical
baseline on the same patches with the same measure (the line CARE has to beat).

Validation patches come from blocks no training patch touches (:func:`~carecore.data.patches.
validation_blocks`). Each patch's prediction is fitted to its target by least squares before SSIM
(the paper's protocol, CARE-NOTES §4), so a classical filter, whose output is not in the target's
intensity units, is measured exactly like the network.
"""
from __future__ import annotations

import numpy as np

from ..baselines import FAST_GRIDS, available_baselines, baseline
from ..errors import CareError
from ..metrics import affine_fit, ssim

#: Validation loss is computed on at most this many patches; SSIM (and the baseline) on the first few.
MAX_VAL_PATCHES = 256
SSIM_PATCHES = 8


def patch_ssim(pred, target):
    """Mean SSIM over patches and channels of ``pred`` fitted to ``target`` (both (N, ..., C))."""
    vals = []
    for p, t in zip(pred, target):
        for c in range(t.shape[-1]):
            pc, tc = np.asarray(p[..., c], np.float64), np.asarray(t[..., c], np.float64)
            a, b = affine_fit(pc, tc)
            try:
                vals.append(ssim(a * pc + b, tc, data_range=max(float(tc.max() - tc.min()), 1e-6)))
            except CareError:
                return float("nan")
    return float(np.mean(vals))


class ValidationSet:
    """Validation patches of one training run, with the model that is being trained."""

    def __init__(self, X, Y, model):
        self.X = np.asarray(X[:MAX_VAL_PATCHES], dtype=np.float32)
        self.Y = np.asarray(Y[:MAX_VAL_PATCHES], dtype=np.float32)
        self.model = model
        self.sx, self.sy = self.X[:SSIM_PATCHES], self.Y[:SSIM_PATCHES]

    def ssim(self):
        """SSIM of the network's (mean) output on the first validation patches."""
        pred = np.asarray(self.model.keras_model.predict_on_batch(self.sx), np.float32)
        return patch_ssim(pred[..., : self.sy.shape[-1]], self.sy)

    def baseline(self, cached=None, names=None):
        """The best tuned classical baseline on the same patches and measure, as a dict
        ``{"name", "params", "val_ssim", "tuned": {name: (params, val_ssim)}}`` (None when the task
        changes the grid, e.g. input and target channels differ).

        ``cached``: a result computed before (stored with the patches) is returned as is. The grids
        are :data:`~carecore.baselines.FAST_GRIDS` (the QC report tunes over the full ones).
        """
        if cached:
            return cached
        if self.sx.shape != self.sy.shape:
            return None
        spatial = "ZYX"[-(self.sx.ndim - 2):]
        tuned = {}
        for name in names or available_baselines(len(spatial)):
            best = None
            for params in FAST_GRIDS.get(name, [{}]):
                out = np.stack([np.stack([baseline(name, p[..., c], axes=spatial, normalize=False, **params)
                                          for c in range(p.shape[-1])], -1) for p in self.sx])
                score = patch_ssim(out, self.sy)
                if best is None or score > best[1]:
                    best = (params, score)
            tuned[name] = best
        name = max(tuned, key=lambda n: tuned[n][1])
        return {"name": name, "params": tuned[name][0], "val_ssim": tuned[name][1],
                "tuned": {n: {"params": p, "val_ssim": v} for n, (p, v) in tuned.items()}}

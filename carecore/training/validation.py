"""The validation read-outs of a training run: SSIM on held-out patches, and the best classical
baseline on the same patches with the same measure (the line CARE has to beat).

Validation patches are patch-sized boxes spread through the held-out images that no training patch
touches (:func:`~carecore.data.patches.validation_blocks`), placed without regard to content,
background included. SSIM follows the protocol of
:func:`~carecore.metrics.evaluate` on a whole image (CARE-NOTES §4): one least-squares fit of the
prediction to the targets per channel over all the patches, then SSIM on a data range of 1 (the
targets are percentile-normalized per image), averaged over patches. A classical filter, whose output
is not in the target's intensity units, is measured exactly like the network. (A fit and a data range
per patch, as before, scored near-empty patches near 0 whatever the prediction and made the curve
flat on sparse images.)
"""
from __future__ import annotations

import os

import numpy as np

from ..baselines import FAST_GRIDS, past_the_edge, available_baselines, baseline
from ..errors import CareError
from ..metrics import affine_fit, ssim

#: Validation loss is computed on at most this many patches; SSIM (and the baseline) on the first few.
MAX_VAL_PATCHES = 256
SSIM_PATCHES = 32


def line_key(model):
    """What a validation line tuned on a patch set depends on besides the patches: the model's kind and the
    settings of its classical starts (its axial factor and interpolation, its PSF sigma). A line kept with the
    patches is reused only by a model with the same key: a notebook's second model on the same patch set,
    with another PSF or kind, tunes its own."""
    c = model.config
    return repr((c.kind, c.axes, float(c.upsampling_factor), c.interpolation, float(c.psf_sigma or 0.0)))


def cached_line(meta, model):
    """The validation line kept in a patch set's metadata ``meta`` for ``model`` (:func:`line_key`), or None."""
    line = meta.get("validation_baseline")
    return line if line and meta.get("validation_baseline_for") == line_key(model) else None


def keep_line(meta, model, line):
    """Keep the validation ``line`` tuned for ``model`` in a patch set's metadata, for the next training on
    the same patches (an ensemble's members)."""
    if line:
        meta["validation_baseline"] = line
        meta["validation_baseline_for"] = line_key(model)


def patch_ssim(pred, target):
    """Mean SSIM over patches and channels of ``pred`` against ``target`` (both (N, ..., C)).

    Per channel, ``pred`` is fitted to ``target`` by one least-squares affine map over all patches
    (as :func:`~carecore.metrics.evaluate` fits a whole image); SSIM uses a data range of 1.
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise CareError(f"validation: prediction of shape {pred.shape} but targets of shape {target.shape}")
    vals = []
    for c in range(target.shape[-1]):
        a, b = affine_fit(pred[..., c], target[..., c])
        for p, t in zip(pred[..., c], target[..., c]):
            try:
                vals.append(ssim(a * p + b, t, data_range=1.0))
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
        km = self.model.keras_model
        if km.distribute_strategy.num_replicas_in_sync > 1:  # predict_on_batch would run it on every device
            pred = np.asarray(km(self.sx, training=False), np.float32)
        else:
            pred = np.asarray(km.predict_on_batch(self.sx), np.float32)
        return patch_ssim(pred[..., : self.sy.shape[-1]], self.sy)

    def baseline(self, cached=None, names=None):
        """The best tuned classical baseline on the same patches and measure, as a dict
        ``{"name", "params", "start", "val_ssim", "tuned": {name: {"params", "start", "val_ssim"}}}``: each
        filter on each of the model's classical starts from the input patches onto the targets' grid
        (:meth:`~carecore.CARE.patch_grid_starts`: the patches themselves; a projection's maximum and
        surface-following projections; ``start`` names the one chosen, "" for the patches themselves);
        None when the grids still differ (e.g. input and target channels).

        ``cached``: a result computed before (stored with the patches) is returned as is. The grids
        are :data:`~carecore.baselines.FAST_GRIDS` (the QC report tunes over the full ones), extended past
        their tops and below their bottoms as the QC report's are (:data:`~carecore.baselines.EDGE_STEPS`,
        :data:`~carecore.baselines.EDGE_STEPS_DOWN`); of more than
        :data:`~carecore.baselines.SCREENED_STARTS` starts, those a tuned Gaussian filter does best on.
        """
        if cached:
            return cached
        from concurrent.futures import ThreadPoolExecutor

        from ..baselines import SCREENED_STARTS

        starts = {label: np.asarray(x, np.float32) for label, x in self.model.patch_grid_starts(self.sx).items()}
        starts = {label: x for label, x in starts.items() if x.shape == self.sy.shape}
        if not starts:
            return None
        spatial = "ZYX"[-(self.sy.ndim - 2):]

        # the filters release the GIL: patches in parallel threads (on 2 cores half the wall time)
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            def score(sx, name, params):
                def one(p):
                    return np.stack([baseline(name, p[..., c], axes=spatial, normalize=False, **params)
                                     for c in range(p.shape[-1])], -1)

                value = patch_ssim(np.stack(list(pool.map(one, sx))), self.sy)
                return {"params": params, "ssim": value if np.isfinite(value) else -np.inf}

            def grid(sx, name):
                return [score(sx, name, params) for params in FAST_GRIDS.get(name, [{}])]

            if len(starts) > SCREENED_STARTS:   # screened by a tuned Gaussian filter
                screen = {label: max(r["ssim"] for r in grid(x, "gaussian")) for label, x in starts.items()}
                starts = {k: starts[k] for k in sorted(starts, key=lambda k: -screen[k])[:SCREENED_STARTS]}
            rows = {(name, label): grid(sx, name) for name in names or available_baselines(len(spatial))
                    for label, sx in starts.items()}
            # past a grid's top where the best lies there, as the QC report and the app tune (a best value at
            # a grid's end is not a tuned one: on the validation boxes, background included, a Gaussian's
            # best sigma was often the grid's 32 px)
            top = max(r["ssim"] for rs in rows.values() for r in rs)
            for (name, label), rs in rows.items():
                past_the_edge(name, rs, lambda n, p, sx=starts[label]: score(sx, n, p), three_d=len(spatial) == 3,
                               top=(top,), metrics=("ssim",))
            tuned = {}
            for (name, label), rs in rows.items():
                best = max(rs, key=lambda r: r["ssim"])
                if name not in tuned or best["ssim"] > tuned[name][2]:
                    tuned[name] = (label, best["params"], best["ssim"])
        ssim_of = lambda v: float(v) if np.isfinite(v) else float("nan")   # noqa: E731
        name = max(tuned, key=lambda n: tuned[n][2])
        start, params, value = tuned[name]
        return {"name": name, "params": params, "start": start, "val_ssim": ssim_of(value),
                "tuned": {n: {"params": p, "start": lb, "val_ssim": ssim_of(v)} for n, (lb, p, v) in tuned.items()}}

"""Test-time augmentation: the mean of the restorations of an image's flips and 90° rotations.

A network trained with augmentation (:func:`carecore.training.pipeline.augment_batch`: flips of Y
and X, 90° rotations in the YX plane when the patches are square) has learned each of these views;
its run card records how many (``trained_views``: 8, 4 or 1), and prediction averages exactly those.
Its errors in the different views are partly independent (the view moves the noise against the
network's pooling grid and filters), so their mean is smoother where the truth is flat. Measured by
``benchmarks/bench_quality.py`` (180 s of training, the README's figures): test SSIM +0.002 to +0.035
and NRMSE 1-7 % lower on all seven cases; shifting the image by 1-3 pixels instead (the pooling grid
alone) gained a tenth of that on the BPAE nuclei.

Prediction averages tile by tile (each tile's window with its halo), so the result equals the mean
over the views of the whole image padded at its end to the network's divisor.

Arrays here are channels-last with Y and X the last two spatial axes: ``(..., Y, X, C)``.
"""
from __future__ import annotations

import numpy as np

_Y, _X = -3, -2


def views(square=True):
    """The transforms as ``(k, flip)``: ``k`` quarter turns in the YX plane, then a flip of X.

    All 8 of the square's symmetries when ``square``; otherwise the 4 that keep the sides
    (rotations by 0 and 180°, each with and without the flip), as augmentation does.
    """
    return [(k, f) for k in ((0, 1, 2, 3) if square else (0, 2)) for f in (False, True)]


def learnable_views(augment, square):
    """How many views a network trained with ``augment`` on patches ``square`` in YX (or not) learns:
    the 8 of :func:`views`, the 4 that keep the sides, or 1 without augmentation
    (:func:`carecore.training.pipeline.augment_batch` draws from the same views)."""
    return len(views(square)) if augment else 1


def forward(a, k, flip):
    """``a`` seen in view ``(k, flip)``."""
    a = np.rot90(a, k, axes=(_Y, _X)) if k else a
    return a[..., ::-1, :] if flip else a


def inverse(a, k, flip):
    """Undo :func:`forward`: a prediction made in view ``(k, flip)`` back in the image's own."""
    a = a[..., ::-1, :] if flip else a
    return np.rot90(a, -k, axes=(_Y, _X)) if k else a


def swap_yx(counts, k):
    """Per-axis counts (spatial order) as seen in view ``k``: Y and X swap on odd quarter turns."""
    counts = tuple(counts)
    return counts[:-2] + (counts[-1], counts[-2]) if k % 2 else counts


def mean_over_views(run, x, square=True, *, n_mean=None, scale_factor=1.0, stop=None):
    """The mean of ``inverse(run(forward(x, k, flip), k))`` over :func:`views` (float32).

    ``run(view, k)`` restores one view. With ``n_mean`` (probabilistic outputs: the first ``n_mean``
    channels are Laplace means, the rest their scales) the views are a mixture of Laplaces, answered
    as one Laplace with the mixture's mean and variance (the convention of ensembles' ``--scale-out``):
    mean ``m = mean(mu)``, scale ``scale_factor * sqrt(mean(b**2) + var(mu) / 2)``, so that where the
    views disagree the interval widens. The mean of the views errs less than one view does, which the
    views' own scales do not know: ``scale_factor`` (:func:`fit_scale_factor`, measured on a model's
    validation patches) brings the intervals back to calibration. ``stop()`` is polled before every view.
    """
    from ..progress import check_stop

    vs = views(square)
    s1 = s2 = None
    for k, flip in vs:
        check_stop(stop)
        p = inverse(np.asarray(run(np.ascontiguousarray(forward(x, k, flip)), k), np.float32), k, flip)
        if s1 is None:
            s1, s2 = p.copy(), (p * p if n_mean is not None else None)
        else:
            s1 += p
            if n_mean is not None:
                s2 += p * p
    s1 /= len(vs)
    if n_mean is not None:   # var(mu) = E[mu²] - m²; mean(b²) from the scale channels' second moment
        s2 /= len(vs)
        var_mu = np.maximum(s2[..., :n_mean] - s1[..., :n_mean] ** 2, 0)
        s1[..., n_mean:] = scale_factor * np.sqrt(s2[..., n_mean:] + var_mu / 2)
    return s1


#: candidate factors of :func:`fit_scale_factor`
SCALE_FACTORS = np.round(np.arange(0.1, 2.01, 0.02), 2)


def fit_scale_factor(run, X, Y, square=True, *, max_values=200_000, seed=0):
    """The factor on the views' mixture-matched scale that calibrates the mean over views best.

    Restores the validation patches ``X`` (network units, (B, *spatial, C)) in every view with
    ``run(view, k)`` (means, then scales, as the network answers) and returns the factor of
    :data:`SCALE_FACTORS` whose intervals have the least expected calibration error against the
    targets ``Y`` (:func:`carecore.uncertainty.calibration_curve`, on at most ``max_values`` values).
    Held-out patches, as the validation curve's: the test image's truth is never used.

    Without it (factor 1) the intervals of the mean over views were too wide on the demo's test images
    (README, "The mean over flips and rotations at prediction": expected calibration error 0.088 in 3D
    where one view has 0.020; 0.026 with the factor).
    """
    from ..uncertainty import calibration_curve

    X, Y = np.asarray(X, np.float32), np.asarray(Y, np.float32)
    n = Y.shape[-1]
    p = mean_over_views(run, X, square, n_mean=n)
    m, b, y = p[..., :n].ravel(), p[..., n:].ravel(), Y.ravel()
    if m.size > max_values:
        pick = np.random.default_rng(seed).choice(m.size, max_values, replace=False)
        m, b, y = m[pick], b[pick], y[pick]
    ece = [calibration_curve(y, m, f * b)["ece"] for f in SCALE_FACTORS]
    return float(SCALE_FACTORS[int(np.argmin(ece))])

"""One Laplace distribution per pixel: the read-outs of a probabilistic CARE network (§5).

A probabilistic CARE network predicts, per pixel, a Laplace distribution with mean ``mu`` and scale
``b``: density ``exp(-|z - mu| / b) / (2 b)``, variance ``2 b²``, entropy ``1 + log(2 b)``, quantile
``mu + b ln(2q)`` (q < 1/2) or ``mu - b ln(2 - 2q)``. Every read-out here is a per-pixel function of
``(mu, b)``, so it is exactly as tiled as the prediction it comes from.
"""
from __future__ import annotations

import numpy as np

from ..errors import CareError


# -- one Laplace distribution per pixel --------------------------------------------------------
def _check(mean, scale):
    mean = np.asarray(mean, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    if mean.shape != scale.shape:
        raise CareError(f"mean has shape {mean.shape} but scale has {scale.shape}")
    if not (scale > 0).all():
        raise CareError("the Laplace scale must be positive everywhere")
    return mean, scale


def laplace_variance(scale):
    """Variance ``2 b²``."""
    return 2.0 * np.asarray(scale, np.float32) ** 2


def laplace_entropy(scale):
    """Differential entropy ``1 + log(2 b)`` (nats)."""
    return 1.0 + np.log(2.0 * np.asarray(scale, np.float32))


def laplace_quantile(mean, scale, q):
    """The ``q``-quantile per pixel (``q`` in (0, 1))."""
    mean, scale = _check(mean, scale)
    if not 0 < q < 1:
        raise CareError(f"quantile must be in (0, 1), got {q}")
    return mean + scale * np.float32(np.log(2 * q)) if q < 0.5 else mean - scale * np.float32(np.log(2 - 2 * q))


def laplace_interval(mean, scale, confidence=0.9):
    """The central ``confidence`` interval ``(lower, upper)`` per pixel.

    Examples
    --------
    >>> lo, hi = laplace_interval(0.0, 1.0, 0.9)
    >>> round(float(hi), 4)
    2.3026
    """
    if not 0 < confidence < 1:
        raise CareError(f"confidence must be in (0, 1), got {confidence}")
    return (laplace_quantile(mean, scale, (1 - confidence) / 2),
            laplace_quantile(mean, scale, (1 + confidence) / 2))


def laplace_cdf(z, mean, scale):
    z = np.asarray(z, np.float64)
    t = (z - mean) / scale
    return np.where(t < 0, 0.5 * np.exp(np.minimum(t, 0)), 1 - 0.5 * np.exp(-np.maximum(t, 0)))


def laplace_samples(mean, scale, n, *, seed=None):
    """``n`` samples per pixel, stacked on a new first axis (frames of an "uncertainty movie")."""
    mean, scale = _check(mean, scale)
    rng = np.random.default_rng(seed)
    return (mean[None] + scale[None] * rng.laplace(size=(int(n),) + mean.shape)).astype(np.float32)

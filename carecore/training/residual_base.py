"""The smoothed input a residual network starts from (``residual_sigma="auto"``, issue 16).

A network trained for minutes on very noisy data still passes grain through where a tuned Gaussian
filter is flat. With ``residual_sigma`` the network's correction is added to a Gaussian-smoothed input
and starts at zero, so an untrained network already answers with that filter and training only adds
what the filter misses. ``"auto"`` picks the sigma whose smoothing of the training input patches has the
best SSIM against their targets (the validation read-out's measure, after its affine fit; zeros beyond
the patch as in the network), from a grid up to a quarter of the smallest patch side; sigma 0 (the
input itself) competes too. A mean absolute error cannot choose: inputs and targets are normalized
apart, and only the affine fit puts them on one scale.

That fit is kept (``residual_affine``, :func:`fit_base_affine`): the base is the smoothed input times a
gain plus an offset per channel, so that step 0 is the filter in the targets' units. Without it the
first epochs only learn that scale (at 5 photons the normalized input's scale is half the target's),
and the untrained network's mean absolute error is twice the fitted filter's.
"""
from __future__ import annotations

import numpy as np

#: candidate sigmas (pixels) for ``residual_sigma="auto"``
SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
#: the variance (normalized units) at or below which a smoothed input channel counts as flat
FLAT = 1e-8


def _subset(X, Y, max_patches, seed, name):
    from ..errors import CareError

    X, Y = np.asarray(X), np.asarray(Y)
    if X.shape != Y.shape:
        raise CareError(f"{name}: input patches {X.shape} and targets {Y.shape} differ in shape")
    if len(X) > max_patches:
        pick = np.sort(np.random.default_rng(seed).choice(len(X), max_patches, replace=False))
        X, Y = X[pick], Y[pick]
    return X.astype(np.float32), Y.astype(np.float32)


def _smooth(X, sigma):
    from scipy.ndimage import gaussian_filter

    nd = X.ndim - 2
    return X if sigma == 0 else gaussian_filter(X, (0,) + (sigma,) * nd + (0,), mode="constant", truncate=3.0)


def fit_base_affine(X, Y, sigma, *, max_patches=64, seed=0):
    """The least-squares gain and offset per channel from the input patches ``X`` smoothed by ``sigma``
    to the targets ``Y``.

    Parameters
    ----------
    X, Y : numpy.ndarray
        Normalized training patches (batch, *spatial, channels) with as many input as output channels.
    sigma : float
        Gaussian sigma (pixels) of the residual base; 0 for the input itself.
    max_patches : int
        At most this many patches (a random subset) are fitted.

    Returns
    -------
    tuple of (float, float)
        ``(gain, offset)`` per channel (``residual_affine``); gain 1 and the mean difference for a
        channel whose smoothed input is flat (variance at most :data:`FLAT`: normalized patches span
        about 0 to 1).
    """
    from ..metrics import affine_fit

    X, Y = _subset(X, Y, max_patches, seed, "fit_base_affine")
    S = _smooth(X, sigma)
    pairs = []
    for ch in range(X.shape[-1]):
        s, y = S[..., ch].astype(np.float64), Y[..., ch].astype(np.float64)
        pairs.append(affine_fit(s, y) if s.var() > FLAT else (1.0, float(y.mean() - s.mean())))
    return tuple(pairs)


def choose_residual_sigma(X, Y, *, max_patches=64, seed=0):
    """The Gaussian sigma whose smoothing of the input patches ``X`` has the best SSIM against ``Y``.

    Parameters
    ----------
    X, Y : numpy.ndarray
        Normalized training patches (batch, *spatial, channels) with as many input as output channels.
    max_patches : int
        At most this many patches (a random subset) are compared.

    Returns
    -------
    float
        The sigma in pixels (0: no smoothing is better than the input itself).
    """
    from .validation import patch_ssim

    X, Y = _subset(X, Y, max_patches, seed, "choose_residual_sigma")
    limit = min(X.shape[1:-1]) / 4
    scores = {}
    for s in SIGMAS:
        if s > limit:
            break
        scores[s] = patch_ssim(_smooth(X, s), Y)
    return max(scores, key=scores.get)

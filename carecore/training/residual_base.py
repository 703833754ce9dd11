"""The smoothed input a residual network starts from (``residual_sigma="auto"``, issue 16).

A network trained for minutes on very noisy data still passes grain through where a tuned Gaussian
filter is flat. With ``residual_sigma`` the network's correction is added to a Gaussian-smoothed input
and starts at zero, so an untrained network already answers with that filter and training only adds
what the filter misses. ``"auto"`` picks the sigma whose smoothing of the training input patches has the
best SSIM against their targets (the validation read-out's measure, after its affine fit; zeros beyond
the patch as in the network), from a grid up to a quarter of the smallest patch side; sigma 0 (the
input itself) competes too. A mean absolute error cannot choose: inputs and targets are normalized
apart, and only the affine fit puts them on one scale.
"""
from __future__ import annotations

import numpy as np

#: candidate sigmas (pixels) for ``residual_sigma="auto"``
SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


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
    from scipy.ndimage import gaussian_filter

    from ..errors import CareError
    from .validation import patch_ssim

    X, Y = np.asarray(X), np.asarray(Y)
    if X.shape != Y.shape:
        raise CareError(f"choose_residual_sigma: input patches {X.shape} and targets {Y.shape} differ in shape")
    if len(X) > max_patches:
        pick = np.sort(np.random.default_rng(seed).choice(len(X), max_patches, replace=False))
        X, Y = X[pick], Y[pick]
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    nd = X.ndim - 2
    limit = min(X.shape[1:-1]) / 4
    scores = {}
    for s in SIGMAS:
        if s > limit:
            break
        sm = X if s == 0 else gaussian_filter(X, (0,) + (s,) * nd + (0,), mode="constant", truncate=3.0)
        scores[s] = patch_ssim(sm, Y)
    return max(scores, key=scores.get)

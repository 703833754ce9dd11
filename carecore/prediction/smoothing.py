"""A Gaussian smoothing of the restoration, its sigma chosen on the validation patches (``output_sigma``).

A network trained for a few minutes leaves a fine, pixel-to-pixel grain in flat regions; where the
structures are coarse (nuclei), a slight Gaussian smoothing of its output takes the grain away and
costs no detail. Whether it helps, and how much, depends on the data, so ``output_sigma="auto"``
chooses the sigma when training ends: the one of :data:`OUTPUT_SIGMAS` whose smoothed predictions of
the validation patches (regions no training patch touched) have the lowest RMSE after the paper's
affine fit to their targets; 0 (no smoothing) when none is better. Chosen by SSIM instead, smoothing
trades NRMSE for SSIM. Measured on the benchmark's seven cases, three seeds each
(benchmarks/quality-per-minute.md, "Validation boxes spread through the image"): the nuclei gain
0.013 SSIM and 0.001 NRMSE on their held-out part with sigma 3-4, the 2D demo 0.029 SSIM with 0.5;
where it misjudges (the actin at sigma 1) the cost is 0.0001-0.0002 NRMSE.

Only the mean is smoothed; a probabilistic model's scale stays as the network predicts it.

Borders: along each spatial axis in turn, a 1D Gaussian truncated at 3 sigma whose taps beyond the
array give their weight to the centre pixel (no darkening at the border, unlike zeros beyond it).
The same arithmetic is a handful of standard layers in an exported network
(:func:`carecore.export.plain.build_plain_unet`): a zero-padded convolution, plus the input times
one minus the convolution of ones.
"""
from __future__ import annotations

import numpy as np

from ..errors import CareError

#: the candidate sigmas (pixels, every spatial axis) of ``output_sigma="auto"``
OUTPUT_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
#: the largest sigma (pixels) ``output_sigma`` accepts
MAX_OUTPUT_SIGMA = 8.0


def output_radius(sigma):
    """Half-width (pixels) of the smoothing of ``sigma`` (0: none, also for ``"auto"`` not yet chosen)."""
    if not sigma or sigma == "auto":
        return 0
    return int(np.ceil(3 * float(sigma)))


def edge_weight(n, taps):
    """For a 1D axis of ``n`` pixels: the weight of ``taps`` (centred) that falls inside it, per pixel."""
    r = len(taps) // 2
    inside = np.zeros(n, np.float64)
    for k, t in enumerate(taps):   # tap k reads pixel i + k - r
        inside[max(0, r - k):min(n, n + r - k)] += t
    return inside


def smooth(x, sigma, *, n_channels=None):
    """Gaussian smoothing of ``sigma`` pixels along every spatial axis of ``x`` (batch, *spatial, C).

    Parameters
    ----------
    x : array_like
        A batch of restorations, channels last.
    sigma : float
        Pixels; 0 returns ``x`` as float32.
    n_channels : int, optional
        Smooth only the first ``n_channels`` channels (a probabilistic model's means; its scales
        follow them and are left as they are). Default: every channel.

    Returns
    -------
    numpy.ndarray (float32), the shape of ``x``.
    """
    from scipy.ndimage import correlate1d

    from ..models.unet import gaussian_taps

    x = np.asarray(x, np.float32)
    if x.ndim < 3:
        raise CareError(f"smooth: needs (batch, *spatial, channel), got shape {x.shape}")
    if not sigma:
        return x
    k = x.shape[-1] if n_channels is None else int(n_channels)
    taps = gaussian_taps(float(sigma))
    y = x[..., :k]
    for axis in range(1, x.ndim - 1):
        n = y.shape[axis]
        keep = (1.0 - edge_weight(n, taps)).astype(np.float32)
        shape = [1] * y.ndim
        shape[axis] = n
        y = correlate1d(y, taps, axis=axis, mode="constant", cval=0.0) + keep.reshape(shape) * y
    if k == x.shape[-1]:
        return y.astype(np.float32)
    return np.concatenate([y.astype(np.float32), x[..., k:]], axis=-1)


def choose_output_sigma(pred, Y, *, sigmas=OUTPUT_SIGMAS):
    """The sigma of :data:`OUTPUT_SIGMAS` whose smoothing of ``pred`` is closest to ``Y`` (RMSE after
    the affine fit of :func:`carecore.metrics.affine_fit`, pooled over the patches).

    Parameters
    ----------
    pred, Y : array_like
        Predicted means and targets of the validation patches, (batch, *spatial, C), the same shape.

    Returns
    -------
    (float, dict)
        The sigma (0 when no smoothing lowers the RMSE), and ``{sigma: rmse}`` for every candidate.
    """
    from ..metrics import affine_fit

    pred, Y = np.asarray(pred, np.float32), np.asarray(Y, np.float32)
    if pred.shape != Y.shape:
        raise CareError(f"choose_output_sigma: predictions of shape {pred.shape} and targets of shape {Y.shape} differ")
    y64 = Y.astype(np.float64)
    table = {}
    for s in sigmas:
        p = smooth(pred, s).astype(np.float64)
        a, b = affine_fit(p, y64)
        table[float(s)] = float(np.sqrt(np.mean((a * p + b - y64) ** 2)))
    best = min(table, key=lambda s: (table[s], s))
    return best, table

"""Quality metrics with the paper's protocol (CARE-NOTES §4).

1. the ground truth is normalized, ``g = N(gt, 0.1, 99.9)``;
2. the restored image ``y`` is fitted to ``g`` by least squares, ``phi(y) = alpha * y + beta``;
3. NRMSE, SSIM (Wang et al. 2004, Gaussian window sigma 1.5) and PSNR compare ``phi(y)`` with ``g``
   on a data range of 1.

Inputs, classical baselines and CARE outputs all go through the same protocol, so their numbers
are comparable. SSIM is computed here (separable Gaussian filters, any number of dimensions) and is
tested to agree with scikit-image's ``structural_similarity(gaussian_weights=True,
use_sample_covariance=False, data_range=1)``.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .axes import check_axes, spatial_axes
from .errors import CareError
from .normalize import percentile_normalize

GT_PERCENTILES = (0.1, 99.9)


def affine_fit(y, g):
    """Least-squares ``alpha, beta`` such that ``alpha * y + beta`` is closest to ``g``."""
    y = np.asarray(y, dtype=np.float64).ravel()
    g = np.asarray(g, dtype=np.float64).ravel()
    ym, gm = y.mean(), g.mean()
    var = ((y - ym) ** 2).mean()
    alpha = ((y - ym) * (g - gm)).mean() / var if var > 0 else 0.0
    return float(alpha), float(gm - alpha * ym)


def ssim(a, b, *, data_range=1.0, sigma=1.5, truncate=3.5):
    """Mean structural similarity of two arrays of the same shape (any number of dimensions).

    Gaussian-weighted statistics as in Wang et al. (2004); the border where the window does not fit
    is left out of the mean, as in scikit-image.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise CareError(f"ssim: shapes differ, {a.shape} vs {b.shape}")
    radius = int(truncate * sigma + 0.5)
    # Axes shorter than the window (a thin stack) are not filtered along: SSIM is then the mean of
    # the per-slice values over the other axes.
    sigmas = [sigma if n >= 2 * radius + 1 else 0.0 for n in a.shape]
    if sum(s > 0 for s in sigmas) < min(2, a.ndim):
        raise CareError(f"ssim: needs at least two axes of {2 * radius + 1} pixels or more, got shape {a.shape}")
    f = lambda v: ndi.gaussian_filter(v, sigmas, truncate=truncate, mode="reflect")  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    saa = f(a * a) - mu_a * mu_a
    sbb = f(b * b) - mu_b * mu_b
    sab = f(a * b) - mu_a * mu_b
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    inner = tuple(slice(radius, -radius) if sg > 0 else slice(None) for sg in sigmas)
    return float(s[inner].mean())


def nrmse(y, g):
    """Root mean squared error (``g`` is on a unit range, so this is already normalized)."""
    return float(np.sqrt(np.mean((np.asarray(y, np.float64) - np.asarray(g, np.float64)) ** 2)))


def psnr(y, g, *, data_range=1.0):
    """Peak signal-to-noise ratio in dB."""
    mse = np.mean((np.asarray(y, np.float64) - np.asarray(g, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def _one(pred, gt, name):
    """Paper protocol for one channel: returns (phi(pred), g)."""
    g, _ = percentile_normalize(gt, *GT_PERCENTILES, axes="ZYX"[-pred.ndim:], name=f"{name} (ground truth)")
    if not np.isfinite(pred).all():
        raise CareError(f"{name}: the restored image contains NaN or infinite values")
    alpha, beta = affine_fit(pred, g)
    return alpha * np.asarray(pred, np.float64) + beta, g.astype(np.float64)


def evaluate(pred, gt, *, axes, per_slice=False, name="image"):
    """NRMSE, SSIM and PSNR of ``pred`` against ``gt`` with the paper's protocol.

    Parameters
    ----------
    pred, gt : array_like
        Restored image and ground truth, same shape.
    axes : str
        Their axes; channels (``C``) are evaluated separately and averaged.
    per_slice : bool
        Also report the metrics of each Z slice (2D SSIM per slice), under ``"per_slice"``.

    Returns
    -------
    dict
        ``{"nrmse": ..., "ssim": ..., "psnr": ...}`` (plus ``"per_channel"``/``"per_slice"``).

    Examples
    --------
    >>> m = evaluate(restored, truth, axes="ZYX")   # doctest: +SKIP
    >>> sorted(m)                                   # doctest: +SKIP
    ['nrmse', 'psnr', 'ssim']
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    axes = check_axes(axes, pred.ndim, name=name, shape=pred.shape)
    if pred.shape != gt.shape:
        raise CareError(f"{name}: restored image has shape {pred.shape} but the ground truth has {gt.shape}")
    if set(axes) - set("CZYX"):
        raise CareError(f"{name}: evaluate takes axes made of C, Z, Y, X; got {axes!r}")
    sp = spatial_axes(axes)
    order = ("C" if "C" in axes else "") + sp
    p = np.transpose(pred, [axes.index(a) for a in order])
    t = np.transpose(gt, [axes.index(a) for a in order])
    if "C" not in axes:
        p, t = p[None], t[None]
    per_channel = []
    per_slice_rows = []
    for c in range(p.shape[0]):
        y, g = _one(p[c], t[c], name)
        per_channel.append({"nrmse": nrmse(y, g), "ssim": ssim(y, g), "psnr": psnr(y, g)})
        if per_slice and "Z" in sp:
            per_slice_rows.append([
                {"nrmse": nrmse(y[z], g[z]), "ssim": ssim(y[z], g[z]), "psnr": psnr(y[z], g[z])}
                for z in range(y.shape[0])
            ])
    out = {k: float(np.mean([m[k] for m in per_channel])) for k in ("nrmse", "ssim", "psnr")}
    if "C" in axes:
        out["per_channel"] = per_channel
    if per_slice and "Z" in sp:
        out["per_slice"] = per_slice_rows[0] if len(per_slice_rows) == 1 else per_slice_rows
    return out


def isotropy_ratio(volume, *, axes="ZYX", axial="Z", lateral="X", spacing=None, half_angle=45.0):
    """Spectral isotropy ratio ``Phi``: Fourier power along the axial axis / along a lateral axis (CARE-NOTES §4).

    The volume (mean removed, Hann-windowed) is Fourier transformed on *physical* frequencies (voxel
    sizes from ``spacing``). The power is summed in two cones of ``half_angle`` around the axial and
    the lateral frequency axis, both inside the ball ``0 < |f| <= min(1 / (2 d_axial), 1 / (2 d_lateral))``
    that both axes resolve; ``Phi`` is the ratio of the two sums. Every frequency bin covers the same
    volume of frequency space, so the sums compare spectral energy directly: 1 for an isotropic
    volume, whatever the axis lengths and voxel sizes; below 1 when the axial axis is blurred
    (restorations approach 1). Power is summed as it is, not weighted by frequency.

    Parameters
    ----------
    volume : array_like
    axes : str
        Spatial axes of ``volume`` (``ZYX``).
    axial, lateral : str
        The two axes compared.
    spacing : dict, optional
        Voxel size per axis (one unit for all), e.g. ``{"Z": 2.0, "Y": 0.5, "X": 0.5}``; default 1.
    half_angle : float
        Half opening angle of the cones, degrees (45: the cones just touch).
    """
    v = np.asarray(volume, dtype=np.float64)
    axes = check_axes(axes, v.ndim, shape=v.shape)
    if v.ndim != 3 or set(axes) != set("ZYX"):
        raise CareError(f"isotropy_ratio: needs a ZYX volume, got axes {axes!r}")
    spacing = {a: float((spacing or {}).get(a, 1.0)) for a in axes}
    v = v - v.mean()
    for i, n in enumerate(v.shape):  # a Hann window: the periodic FFT would see the faces' jumps
        shape = [1, 1, 1]
        shape[i] = n
        v = v * np.hanning(n).reshape(shape)
    power = np.abs(np.fft.fftn(v)) ** 2
    f = np.meshgrid(*[np.fft.fftfreq(n, d=spacing[a]) for n, a in zip(v.shape, axes)], indexing="ij")
    r = np.sqrt(sum(fi**2 for fi in f))
    ball = (r > 0) & (r <= min(0.5 / spacing[axial], 0.5 / spacing[lateral]) + 1e-12)
    cos = np.cos(np.deg2rad(half_angle))

    def energy(letter):
        return float(power[ball & (np.abs(f[axes.index(letter)]) >= cos * r - 1e-12)].sum())

    ez, ex = energy(axial), energy(lateral)
    if ex == 0:
        raise CareError("isotropy_ratio: the volume has no lateral structure")
    return ez / ex

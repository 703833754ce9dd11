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

import numbers

import numpy as np
from scipy import ndimage as ndi

from .axes import check_axes, spatial_axes
from .errors import CareError
from .normalize import percentile_normalize

GT_PERCENTILES = (0.1, 99.9)


def affine_fit(y, g):
    """Least-squares ``alpha, beta`` such that ``alpha * y + beta`` is closest to ``g``, with ``alpha >= 0``.

    The fit may scale and shift an image, not invert it: an image anti-correlated with the ground truth
    (its negative scored SSIM 1 with a free sign) gets ``alpha = 0``, the truth's mean, as one that is not
    correlated at all."""
    y = np.asarray(y, dtype=np.float64).ravel()
    g = np.asarray(g, dtype=np.float64).ravel()
    ym, gm = y.mean(), g.mean()
    var = ((y - ym) ** 2).mean()
    alpha = max(((y - ym) * (g - gm)).mean() / var, 0.0) if var > 0 else 0.0
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


def z_slices_hint(pred_shape, gt_shape, axes, *, factor=None, n_input=None, pred="the restoration",
                  gt="the ground truth"):
    """Why a restoration and its ground truth that differ only in their number of Z slices do, and what to
    do about it (an empty string for other differences).

    A restoration along Z (kinds isotropic and upsampling) of an ``n``-slice stack has ``round(n × f)``
    slices at ``0, 1/f, 2/f, ...`` of the stack's grid; a ground truth degraded by subsampling every
    ``f``-th slice gives back its own depth only when that depth is a multiple of ``f`` (106 slices
    subsampled by 4 keep slices 0, 4, ..., 104: 27 of them, restored to 108). ``factor`` and ``n_input``
    (the input's slices), when known, are named.
    """
    pred_shape, gt_shape = tuple(pred_shape), tuple(gt_shape)
    if len(pred_shape) != len(gt_shape) or "Z" not in axes or len(axes) != len(pred_shape):
        return ""
    z = axes.index("Z")
    if any(a != b for i, (a, b) in enumerate(zip(pred_shape, gt_shape)) if i != z):
        return ""
    pz, gz = pred_shape[z], gt_shape[z]
    if pz == gz or (factor is not None and not factor > 1):   # (the same depth; a kind that keeps Z)
        return ""
    if factor and n_input:
        how = f"round({n_input} input slices x factor {factor:g}) = {pz} slices"
    else:
        how = "round(input slices x factor) slices"
    # (said as a condition where no model is known: `cc.evaluate` of two stacks of different depths is often just
    # the wrong pair of files, and a user trial read the hint as a claim that an isotropic model was involved)
    lead = ("a restoration along Z (an isotropic or upsampling model) has" if factor and n_input else
            "if it is a restoration along Z (by an isotropic or upsampling model): such a restoration has")
    why = f"{lead} {how}, at 0, 1/f, 2/f, ... of the input's grid, and {pred} has {pz} Z slices where {gt} has {gz}"
    multiple = f"a multiple of the factor ({factor:g})" if factor else "a multiple of the factor"
    if pz * 1.5 < gz and not (factor and n_input):   # (far fewer slices: the coarse stack, not a restoration)
        f = gz / pz
        return (f"{pred} has {pz} Z slices where {gt} has {gz}, about 1/{f:.3g} of them: it looks like a coarse "
                f"(subsampled) stack, not a restoration on the ground truth's grid: restore it first (an upsampling "
                f"or isotropic model), or compare it with the ground truth's slices it was taken from (every "
                f"{round(f)}-th), not with the ground truth's first {pz}")
    if pz > gz:
        fix = (f"compare the restoration's first {gz} slices (its last {pz - gz} lie past the ground truth's last "
               f"slice), or crop the ground truth to a depth that is {multiple}"
               + (f", e.g. its first {int(gz // factor * factor)} slices," if factor and gz // factor else "")
               + " before degrading it, so that the restoration has its depth exactly")
    else:
        fix = (f"crop the ground truth to its first {pz} slices (the restored slices lie on those), or degrade a "
               f"ground truth whose depth is {multiple}")
    return f"{why}: {fix}"


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
        hint = z_slices_hint(pred.shape, gt.shape, axes)
        raise CareError(f"{name}: restored image has shape {pred.shape} but the ground truth has {gt.shape}"
                        + (f"; {hint}" if hint else ""))
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


def isotropy_ratio(volume, *, axes="ZYX", axial="Z", lateral="X", spacing=None, half_angle=45.0,
                   min_frequency=0.0):
    """Spectral isotropy ratio ``Phi``: Fourier power along the axial axis / along a lateral axis (CARE-NOTES §4).

    The volume (mean removed, Hann-windowed) is Fourier transformed on *physical* frequencies (voxel
    sizes from ``spacing``). The power is summed in two cones of ``half_angle`` around the axial and
    the lateral frequency axis, both inside the shell ``max(min_frequency, 0+) <= |f| <=
    min(1 / (2 d_axial), 1 / (2 d_lateral))`` that both axes resolve; ``Phi`` is the ratio of the two
    sums. Every frequency bin covers the same volume of frequency space, so the sums compare spectral
    energy directly: 1 for an isotropic volume, whatever the axis lengths and voxel sizes; below 1 when
    the axial axis is blurred (restorations approach 1). Power is summed as it is, not weighted by
    frequency.

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
    min_frequency : float
        Sum only frequencies with ``|f| >= min_frequency``, in cycles per unit of ``spacing`` (per
        voxel with the default spacing of 1). The power of a microscopy volume sits mostly at low
        frequencies, which an axial blur barely touches. ``0.5 / d_acquired``, the Nyquist frequency
        of the acquired axial spacing (``0.5 / factor`` per voxel of a grid restored by ``factor``),
        keeps only the band that the sub-sampling lost, where restorations and interpolations
        differ most.
    """
    v = np.asarray(volume, dtype=np.float64)
    axes = check_axes(axes, v.ndim, shape=v.shape)
    if v.ndim != 3 or set(axes) != set("ZYX"):
        raise CareError(f"isotropy_ratio: needs a ZYX volume, got axes {axes!r}")
    spacing = {a: float((spacing or {}).get(a, 1.0)) for a in axes}
    top = min(0.5 / spacing[axial], 0.5 / spacing[lateral])
    if not isinstance(min_frequency, numbers.Real) or not 0 <= min_frequency < top:
        raise CareError(f"isotropy_ratio: min_frequency must be a number in [0, {top:g}) (the Nyquist "
                        f"frequency of the coarser of the {axial} and {lateral} spacings), got {min_frequency!r}")
    v = v - v.mean()
    for i, n in enumerate(v.shape):  # a Hann window: the periodic FFT would see the faces' jumps
        shape = [1, 1, 1]
        shape[i] = n
        v = v * np.hanning(n).reshape(shape)
    power = np.abs(np.fft.fftn(v)) ** 2
    f = np.meshgrid(*[np.fft.fftfreq(n, d=spacing[a]) for n, a in zip(v.shape, axes)], indexing="ij")
    r = np.sqrt(sum(fi**2 for fi in f))
    ball = (r > 0) & (r >= min_frequency - 1e-12) & (r <= top + 1e-12)
    cos = np.cos(np.deg2rad(half_angle))

    cones = {a: ball & (np.abs(f[axes.index(a)]) >= cos * r - 1e-12) for a in (axial, lateral)}
    if not all(c.any() for c in cones.values()):
        raise CareError(f"isotropy_ratio: no frequency of the {v.shape} volume lies in both cones between "
                        f"min_frequency={min_frequency:g} and {top:g}: lower min_frequency")
    ez, ex = (float(power[cones[a]].sum()) for a in (axial, lateral))
    if ex == 0:
        raise CareError("isotropy_ratio: the volume has no lateral structure")
    return ez / ex


# -- resolution read-outs (sub-diffraction restoration) ----------------------------------------------


def profile_fwhm(image, start, end, *, n_samples=None, order=1, pixel_size=1.0):
    """Full width at half maximum of the brightest peak on a line profile.

    The profile from ``start`` to ``end`` (pixel coordinates along the image's axes, any number of
    dimensions) is sampled every ~0.1 pixel (interpolation of ``order``); the peak's height is taken
    above the profile's minimum (the local background), and the two half-maximum crossings are
    found by linear interpolation.

    Parameters
    ----------
    image : array_like
    start, end : sequence of float
        End points of the line, one coordinate per axis of ``image`` (e.g. ``(y, x)``).
    n_samples : int, optional
        Samples along the line (default: 10 per pixel of its length, at least 21).
    order : int
        Spline order of the interpolation (1: linear).
    pixel_size : float
        Length of a pixel (the result is in these units; default pixels).

    Returns
    -------
    float
        The FWHM along the line, or NaN when the peak does not fall below half its height on both
        sides within the line (a profile too short, or a peak at its end).

    Examples
    --------
    >>> x = np.exp(-0.5 * ((np.arange(41) - 20) / 2.0) ** 2)[None, :].repeat(5, 0)
    >>> round(profile_fwhm(x, (2, 0), (2, 40)), 1)   # about 2.355 × sigma (linear interpolation adds a little)
    4.8
    """
    img = np.asarray(image, np.float64)
    start = np.asarray(start, np.float64)
    end = np.asarray(end, np.float64)
    if start.shape != (img.ndim,) or end.shape != (img.ndim,):
        raise CareError(f"profile_fwhm: start {tuple(start)} and end {tuple(end)} need one coordinate per axis of "
                        f"the image (shape {img.shape})")
    length = float(np.linalg.norm(end - start))
    if length <= 0:
        raise CareError(f"profile_fwhm: start and end are the same point {tuple(start)}")
    n = int(n_samples or max(21, int(np.ceil(length * 10)) + 1))
    t = np.linspace(0.0, 1.0, n)
    coords = start[:, None] + (end - start)[:, None] * t[None, :]
    prof = ndi.map_coordinates(img, coords, order=order, mode="nearest")
    return _fwhm_1d(prof, length / (n - 1)) * pixel_size


def _fwhm_1d(prof, step):
    """FWHM (in units of ``step``) of the brightest peak of a 1D profile above its minimum; NaN if not bounded."""
    prof = np.asarray(prof, np.float64)
    k = int(np.argmax(prof))
    base = float(prof.min())
    half = base + (prof[k] - base) / 2
    if not prof[k] > base:
        return float("nan")
    left = k
    while left > 0 and prof[left - 1] >= half:
        left -= 1
    right = k
    while right < len(prof) - 1 and prof[right + 1] >= half:
        right += 1
    if left == 0 or right == len(prof) - 1:
        return float("nan")
    # linear interpolation of the crossings between (left-1, left) and (right, right+1)
    xl = left - (prof[left] - half) / (prof[left] - prof[left - 1])
    xr = right + (prof[right] - half) / (prof[right] - prof[right + 1])
    return float((xr - xl) * step)


def tubule_fwhm(image, reference=None, *, n_profiles=200, half_length=8.0, sigma=1.0, min_level=0.3, seed=0,
                return_all=False):
    """Median FWHM of profiles across thin line-like structures (tubules) of a 2D image.

    Ridge points are found in ``reference`` (e.g. the ground truth, so that the same places are
    measured in every restoration; default ``image`` itself): pixels brighter than ``min_level`` ×
    its maximum that are local maxima across a ridge of the Hessian (scale ``sigma``). At up to
    ``n_profiles`` of them (drawn with ``seed``) a profile of ±``half_length`` pixels is taken across
    the ridge (along the Hessian's most negative eigenvector); only profiles where the reference
    shows one isolated tubule (its peak falls to below half on both sides) are kept, and the FWHM of
    ``image`` along each (:func:`profile_fwhm`) is summarized by the median.

    Parameters
    ----------
    image : array_like, 2D
    reference : array_like, 2D, optional
        Where the tubules are (same shape).
    n_profiles : int
    half_length : float
        Half the length of each profile in pixels (should exceed the blurred tubule's FWHM).
    sigma : float
        Scale (pixels) of the Hessian that finds ridges and their orientation in ``reference``.
    min_level : float
        Ridge points must reach this fraction of the reference's maximum.
    seed : int
    return_all : bool
        Also return the individual widths and the profile centres.

    Returns
    -------
    float
        Median FWHM in pixels (NaN when no profile qualified); with ``return_all`` a tuple
        ``(median, widths, centres)``.
    """
    img = np.asarray(image, np.float64)
    ref = img if reference is None else np.asarray(reference, np.float64)
    if img.ndim != 2 or ref.shape != img.shape:
        raise CareError(f"tubule_fwhm: needs a 2D image and a reference of the same shape, got {img.shape} and "
                        f"{ref.shape} (measure 3D stacks slice by slice)")
    hyy = ndi.gaussian_filter(ref, sigma, order=(2, 0))
    hxx = ndi.gaussian_filter(ref, sigma, order=(0, 2))
    hxy = ndi.gaussian_filter(ref, sigma, order=(1, 1))
    # most negative eigenvalue and its eigenvector (across the ridge)
    tr, det = hyy + hxx, hyy * hxx - hxy**2
    lam = tr / 2 - np.sqrt(np.maximum(tr**2 / 4 - det, 0))
    vy, vx = hxy, lam - hyy
    small = np.hypot(vy, vx) < 1e-12
    vy, vx = np.where(small, lam - hxx, vy), np.where(small, hxy, vx)
    norm = np.maximum(np.hypot(vy, vx), 1e-12)
    vy, vx = vy / norm, vx / norm
    yy, xx = np.mgrid[: ref.shape[0], : ref.shape[1]].astype(np.float64)
    sm = ndi.gaussian_filter(ref, 0.5)
    fwd = ndi.map_coordinates(sm, [yy + vy, xx + vx], order=1, mode="nearest")
    bwd = ndi.map_coordinates(sm, [yy - vy, xx - vx], order=1, mode="nearest")
    h = float(half_length)
    border = (yy >= h) & (yy < ref.shape[0] - h) & (xx >= h) & (xx < ref.shape[1] - h)
    cand = (lam < 0) & (ref > min_level * ref.max()) & (sm >= fwd) & (sm >= bwd) & border
    idx = np.flatnonzero(cand)
    rng = np.random.default_rng(seed)
    widths, centres = [], []
    for i in rng.permutation(idx):
        if len(widths) >= n_profiles:
            break
        p = np.array(np.unravel_index(i, ref.shape), np.float64)
        d = np.array([vy.flat[i], vx.flat[i]])
        a, b = p - h * d, p + h * d
        if not np.isfinite(profile_fwhm(ref, a, b)):
            continue
        w = profile_fwhm(img, a, b)
        if np.isfinite(w):
            widths.append(w)
            centres.append(tuple(p))
    med = float(np.median(widths)) if widths else float("nan")
    return (med, np.asarray(widths), centres) if return_all else med


def _radial_frequency(shape):
    """Normalized radial frequency per FFT bin (1 at Nyquist along each axis)."""
    f = np.meshgrid(*[np.fft.fftfreq(n) * 2 for n in shape], indexing="ij")
    return np.sqrt(sum(v**2 for v in f))


def _apodize(img, width):
    """Mean removed, edges tapered to 0 with a cosine over ``width`` pixels (no FFT edge artefacts)."""
    x = np.asarray(img, np.float64)
    x = x - x.mean()
    for ax, n in enumerate(x.shape):
        w = int(min(width, n // 4))
        if w < 1:
            continue
        ramp = np.ones(n)
        r = 0.5 * (1 - np.cos(np.pi * (np.arange(w) + 0.5) / w))
        ramp[:w], ramp[n - w:] = r, r[::-1]
        shape = [1] * x.ndim
        shape[ax] = n
        x = x * ramp.reshape(shape)
    return x


def _dcorr_peak(d, eps=1e-3):
    """Index and amplitude of the decorrelation curve's peak (Descloux et al.'s rule: a maximum at the
    last radius is not a peak unless it rises more than ``eps`` above the curve's later minimum)."""
    t = list(d)
    ind = int(np.argmax(t))
    while ind == len(t) - 1:
        t.pop()
        if not t:
            return 0, 0.0
        ind = int(np.argmax(t))
        if t[ind] - min(d[ind:]) > eps:
            break
        t[ind] = min(d[ind:])
        ind = len(t) - 1
    return ind, float(d[ind])


def decorrelation_resolution(image, *, n_radii=50, n_highpass=10, pixel_size=1.0, apodize=20, full_output=False):
    """Image resolution from one image by decorrelation analysis (Descloux, Grußmayer & Radenovic,
    Nature Methods 16, 918-924, 2019).

    The image's Fourier transform ``F`` (mean removed, edges apodized) is cross-correlated with its
    normalized version ``F/|F|`` inside discs of growing radius ``r`` (1 = Nyquist). Noise is white,
    so the correlation ``d(r)`` peaks where the signal gives way to noise. The peak is searched again
    after Gaussian high-pass filters ``1 - exp(-2 g² r²)`` of decreasing ``g`` (which emphasize the
    finest structures); the highest peak radius ``k_c`` gives the resolution ``2 / k_c`` pixels.
    (The original's final refinement of the filter width is left out.)

    Parameters
    ----------
    image : array_like, 2D
        One image (measure 3D stacks slice by slice).
    n_radii : int
        Disc radii sampled in (0, 1].
    n_highpass : int
        High-pass filters searched.
    pixel_size : float
        Length of a pixel; the resolution is returned in this unit (default pixels).
    apodize : int
        Width in pixels of the cosine edge taper.
    full_output : bool
        Also return a dict with the cut-off frequencies, amplitudes and the unfiltered curve.

    Returns
    -------
    float
        Resolution (``2 / k_c`` pixels × ``pixel_size``), NaN when no curve has a peak (no
        structure above the noise); with ``full_output`` a tuple ``(resolution, info)``.

    Examples
    --------
    >>> res = decorrelation_resolution(widefield_image, pixel_size=0.065)   # doctest: +SKIP
    """
    x = np.asarray(image, np.float64)
    if x.ndim != 2 or min(x.shape) < 16:
        raise CareError(f"decorrelation_resolution: needs a 2D image of at least 16×16 pixels, got shape {x.shape} "
                        "(measure 3D stacks slice by slice)")
    if not np.isfinite(x).all():
        raise CareError("decorrelation_resolution: the image contains NaN or infinite values")
    F = np.fft.fftn(_apodize(x, apodize))
    R = _radial_frequency(x.shape)
    F[R > 1] = 0
    mag = np.abs(F)
    order = np.argsort(R, axis=None)
    r_sorted = R.ravel()[order]
    mag_s = mag.ravel()[order]
    valid_s = (mag_s > 0).astype(np.float64)
    radii = np.linspace(0, 1, n_radii + 1)[1:]
    ends = np.searchsorted(r_sorted, radii, side="left")
    cnt = np.concatenate([[0.0], np.cumsum(valid_s)])[ends]

    def curve(h):
        """d(r) for the filtered transform F·h (h real >= 0): Re(Fh · conj(F/|F|)) = |F| h."""
        a = mag_s * h
        c = np.sqrt((a**2).sum())
        if c == 0:
            return np.zeros(len(radii))
        num = np.concatenate([[0.0], np.cumsum(a)])[ends]
        return np.where(cnt > 0, num / (c * np.sqrt(np.maximum(cnt, 1))), 0.0)

    d0 = curve(np.ones_like(mag_s))
    i0, a0 = _dcorr_peak(d0)
    r0 = radii[i0] if a0 > 0 else 0.0
    g_max = 2 / r0 if r0 > 0 else max(x.shape) / 4
    gs = np.exp(np.linspace(np.log(g_max), np.log(0.15), n_highpass))
    kcs, amps = [r0 if a0 > 0 else 0.0], [a0]
    for g in gs:
        i, a = _dcorr_peak(curve(1 - np.exp(-2 * g * g * r_sorted**2)))
        kcs.append(radii[i] if a > 0 else 0.0)
        amps.append(a)
    kc = max(kcs)
    res = float(2.0 / kc * pixel_size) if kc > 0 else float("nan")
    if full_output:
        return res, {"kc": kc, "kc_per_filter": kcs, "amplitudes": amps, "highpass_g": [float(g) for g in gs],
                     "A0": a0, "d0": d0.tolist(), "radii": radii.tolist()}
    return res


def frc_resolution(a, b, *, threshold=1 / 7, n_bins=None, pixel_size=1.0, apodize=8, full_output=False):
    """Fourier ring correlation resolution of two images of the same structure with independent noise
    (e.g. two acquisitions, or the restorations of two noise realizations).

    ``FRC(r) = Re Σ_ring A·conj(B) / sqrt(Σ_ring |A|² Σ_ring |B|²)``; the resolution is ``2 / r_c``
    pixels at the first ring ``r_c`` (1 = Nyquist) where the (3-ring smoothed) FRC falls below
    ``threshold`` (1/7 by default).

    Parameters
    ----------
    a, b : array_like, 2D, same shape
    threshold : float
    n_bins : int, optional
        Rings between 0 and Nyquist (default: half the smaller side).
    pixel_size : float
    apodize : int
        Width in pixels of the cosine edge taper.
    full_output : bool
        Also return ``{"radii": ..., "frc": ...}``.

    Returns
    -------
    float
        Resolution in pixels × ``pixel_size``; the Nyquist limit 2 pixels when the FRC never falls
        below the threshold; with ``full_output`` a tuple ``(resolution, info)``.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape or min(a.shape) < 16:
        raise CareError(f"frc_resolution: needs two 2D images of the same shape (at least 16×16), got {a.shape} and "
                        f"{b.shape}")
    A, B = np.fft.fftn(_apodize(a, apodize)), np.fft.fftn(_apodize(b, apodize))
    R = _radial_frequency(a.shape)
    n_bins = int(n_bins or min(a.shape) // 2)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(R.ravel(), edges) - 1, 0, n_bins)
    inside = R.ravel() <= 1
    sumw = lambda w: np.bincount(idx[inside], weights=w[inside], minlength=n_bins + 1)[:n_bins]  # noqa: E731
    num = sumw(np.real(A * np.conj(B)).ravel())
    den = np.sqrt(sumw((np.abs(A) ** 2).ravel()) * sumw((np.abs(B) ** 2).ravel()))
    frc = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    smooth = np.convolve(frc, np.ones(3) / 3, mode="same")
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.flatnonzero((smooth < threshold) & (centres > 0.05))
    rc = centres[below[0]] if below.size else 1.0
    res = float(2.0 / rc * pixel_size)
    return (res, {"radii": centres.tolist(), "frc": frc.tolist()}) if full_output else res

"""Synthetic sub-diffraction structures: tubular networks and granules (CARE-NOTES §8).

Structures are rendered on a fine grid (``supersample`` × the output grid) with their physical
width, then summed into the output pixels: the target is this sharp image; the input is the target
plus a smooth background, blurred with the widefield PSF and imaged with Poisson + Gaussian noise.

Structures and pairs are 2D (``YX``) or 3D (``ZYX``: give a shape of three sizes; tubules are 3D
worm-like chains, granules spheres, and ``pixel_size_z`` sets the Z voxel size). The 2D outputs for
a given seed are those of the first, 2D-only version (the demo data depend on them).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import CareError
from ._rng import make_rng
from .photon import simulate_photon_noise
from .psf import psf_sigma_from_optics


def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 8:
        raise CareError(f"structures are 2D images of at least 8×8 pixels, got shape {shape}")
    return shape


def _downsample(fine, ss):
    h, w = fine.shape[0] // ss, fine.shape[1] // ss
    return fine[: h * ss, : w * ss].reshape(h, ss, w, ss).sum(axis=(1, 3))


def tubules(shape, *, n_tubules=12, persistence=30.0, width=0.025, pixel_size=0.05, supersample=4, seed=None,
            **kw3d):
    """Tubular network (e.g. microtubules) as worm-like random walks.

    Parameters
    ----------
    shape : (int, int) or (int, int, int)
        Output size in pixels (YX), or in voxels (ZYX) for a 3D network of tubules.
    n_tubules : int
    persistence : float
        Persistence length in output pixels: the direction decorrelates as ``exp(-s / persistence)``.
    width : float
        Tubule width (FWHM) in micrometres (microtubules: ~0.025).
    pixel_size : float
        Output pixel size in micrometres.
    supersample : int
        Fine-grid factor for rendering.
    **kw3d
        3D only: ``pixel_size_z`` (Z voxel size in micrometres, default ``pixel_size``).

    Returns
    -------
    image : numpy.ndarray (float32), max 1
    params : dict
    """
    if np.ndim(shape) == 1 and len(shape) == 3:
        return _tubules_3d(shape, n_tubules=n_tubules, persistence=persistence, width=width, pixel_size=pixel_size,
                           supersample=supersample, seed=seed, **kw3d)
    shape = _check_shape(shape)
    rng, seed = make_rng(seed)
    ss = int(supersample)
    fine = np.zeros((shape[0] * ss, shape[1] * ss), np.float32)
    step = 0.25  # output pixels per step
    n_steps = int(2 * max(shape) / step)
    for _ in range(n_tubules):
        pos = rng.uniform(0, shape)
        theta = rng.uniform(0, 2 * np.pi)
        dtheta = rng.normal(0, np.sqrt(step / persistence), size=n_steps)
        angles = theta + np.cumsum(dtheta)
        path = pos + np.cumsum(step * np.stack([np.sin(angles), np.cos(angles)], 1), axis=0)
        inside = (path[:, 0] >= 0) & (path[:, 0] < shape[0]) & (path[:, 1] >= 0) & (path[:, 1] < shape[1])
        idx = np.floor(path[inside] * ss).astype(int)
        np.add.at(fine, (idx[:, 0], idx[:, 1]), rng.uniform(0.6, 1.0))
    fine_px = pixel_size / ss
    fine = ndi.gaussian_filter(fine, max(width / fine_px / 2.355, 0.3))
    image = _downsample(fine, ss)
    image /= max(float(image.max()), 1e-12)
    return image.astype(np.float32), {"n_tubules": n_tubules, "persistence": persistence, "width": width,
                                      "pixel_size": pixel_size, "supersample": ss, "seed": seed}


def granules(shape, *, n_granules=60, radius_range=(0.015, 0.08), pixel_size=0.05, supersample=4, seed=None,
             **kw3d):
    """Granules: bright discs (2D) or spheres (3D shape; ``pixel_size_z`` in ``kw3d``) with radii drawn
    from ``radius_range`` (micrometres)."""
    if np.ndim(shape) == 1 and len(shape) == 3:
        return _granules_3d(shape, n_granules=n_granules, radius_range=radius_range, pixel_size=pixel_size,
                            supersample=supersample, seed=seed, **kw3d)
    shape = _check_shape(shape)
    rng, seed = make_rng(seed)
    ss = int(supersample)
    fs = (shape[0] * ss, shape[1] * ss)
    fine = np.zeros(fs, np.float32)
    fine_px = pixel_size / ss
    for _ in range(n_granules):
        c = rng.uniform(0, fs)
        r = rng.uniform(*radius_range) / fine_px
        a = rng.uniform(0.5, 1.0)
        r0 = int(np.ceil(r)) + 1
        y0, y1 = max(int(c[0]) - r0, 0), min(int(c[0]) + r0 + 1, fs[0])
        x0, x1 = max(int(c[1]) - r0, 0), min(int(c[1]) + r0 + 1, fs[1])
        yy, xx = np.mgrid[y0:y1, x0:x1]
        fine[y0:y1, x0:x1] += a * (((yy - c[0]) ** 2 + (xx - c[1]) ** 2) <= max(r, 0.5) ** 2)
    image = _downsample(fine, ss)
    image /= max(float(image.max()), 1e-12)
    return image.astype(np.float32), {"n_granules": n_granules, "radius_range": list(radius_range),
                                      "pixel_size": pixel_size, "supersample": ss, "seed": seed}


def smooth_background(shape, *, scale=32.0, seed=None):
    """Smooth, low-frequency (Perlin-like) background in [0, 1]: octaves of blurred noise."""
    rng, seed = make_rng(seed)
    out = np.zeros(shape, np.float64)
    for octave, amp in ((1.0, 1.0), (0.5, 0.5), (0.25, 0.25)):
        out += amp * ndi.gaussian_filter(rng.normal(size=shape), scale * octave, mode="wrap")
    out -= out.min()
    out /= max(out.max(), 1e-12)
    return out.astype(np.float32), {"scale": scale, "seed": seed}


def simulate_subdiffraction(shape=(128, 128), *, kind="tubules", pixel_size=0.05, wavelength=0.52, na=1.3,
                            refractive_index=1.52, peak_photons=50.0, background_level=0.3,
                            read_noise=2.0, seed=None, psf=None, target_sigma=0.0, pixel_size_z=None,
                            **structure_params):
    """A fully synthetic training pair for sub-diffraction restoration.

    The target is the sharp structure (max 1); the input is ``target + background_level *
    smooth_background`` blurred with the widefield PSF (Gaussian, sigma 0.21 λ/NA) and imaged with
    ``peak_photons`` photons at its brightest pixel plus Gaussian read noise.

    Parameters
    ----------
    shape : tuple of int
        ``(Y, X)`` for a 2D pair, ``(Z, Y, X)`` for a 3D one.
    psf : float, tuple of float or array_like, optional
        The microscope's PSF instead of the Gaussian from ``wavelength`` and ``na``: a Gaussian sigma
        in pixels (one, or one per axis), or a PSF image with as many axes as ``shape`` (normalized to
        sum 1 and centred on its centroid, see :func:`prepare_psf`).
    target_sigma : float or tuple of float
        Blur the target with this Gaussian sigma (pixels), e.g. a much smaller PSF than the
        microscope's: the resolution the restoration is trained to reach. 0 (default): the sharp target.
    pixel_size_z : float, optional
        3D: Z voxel size in micrometres (default ``pixel_size``); the optical PSF's axial sigma is then
        :func:`~carecore.psf_sigma_from_optics` ``(direction="axial")`` in Z voxels.

    Returns
    -------
    low, target : numpy.ndarray (float32), shape ``shape``
    params : dict

    Examples
    --------
    >>> low, target, p = simulate_subdiffraction((128, 128), kind="granules", seed=1)  # doctest: +SKIP
    """
    if kind not in ("tubules", "granules"):
        raise CareError(f"kind must be 'tubules' or 'granules', got {kind!r}")
    rng, seed = make_rng(seed)
    sub = lambda: int(rng.integers(2**32))  # noqa: E731
    make = tubules if kind == "tubules" else granules
    ndim = len(tuple(shape))
    if ndim not in (2, 3):
        raise CareError(f"simulate_subdiffraction: shape must be (Y, X) or (Z, Y, X), got {tuple(shape)}")
    if ndim == 3:
        structure_params = {"pixel_size_z": pixel_size_z or pixel_size, **structure_params}
    target, sparams = make(shape, pixel_size=pixel_size, seed=sub(), **structure_params)
    bg, bparams = smooth_background(target.shape, scale=max(target.shape) / 4, seed=sub())
    extra = {}
    if psf is None:
        sigma = psf_sigma_from_optics(na, wavelength, pixel_size, refractive_index=refractive_index)
        if ndim == 3:
            sz = psf_sigma_from_optics(na, wavelength, pixel_size_z or pixel_size, direction="axial",
                                       refractive_index=refractive_index)
            sigma = [sz, sigma, sigma]
            extra["pixel_size_z"] = pixel_size_z or pixel_size
        blurred = ndi.gaussian_filter(target + background_level * bg, sigma)
    else:
        kernel, sigma = prepare_psf(psf, ndim)
        extra["psf"] = "gaussian" if kernel is None else "measured"
        x = target + background_level * bg
        blurred = ndi.gaussian_filter(x, sigma) if kernel is None else _convolve(x, kernel)
        sigma = sigma[0] if len(set(sigma)) == 1 else list(sigma)
    if np.any(np.asarray(target_sigma) > 0):
        target = ndi.gaussian_filter(target, target_sigma).astype(np.float32)
        target /= max(float(target.max()), 1e-12)
        extra["target_sigma"] = target_sigma if np.ndim(target_sigma) == 0 else list(target_sigma)
    low, nparams = simulate_photon_noise(blurred, peak_photons, read_noise=read_noise, seed=sub())
    params = {"kind": kind, "structure": sparams, "background": bparams, "background_level": background_level,
              "psf_sigma": sigma, "wavelength": wavelength, "na": na, "pixel_size": pixel_size,
              "noise": nparams, "seed": seed, **extra}
    return low, target, params


def psf_sigma_equivalent(psf):
    """The Gaussian sigma per axis (pixels) with the same second moments as a PSF image.

    Negative values (camera offset left in a measured PSF) are clipped to 0 first.

    Examples
    --------
    >>> from scipy import ndimage as ndi
    >>> delta = np.zeros((31, 31)); delta[15, 15] = 1
    >>> [round(s, 2) for s in psf_sigma_equivalent(ndi.gaussian_filter(delta, 2.0))]
    [2.0, 2.0]
    """
    p = np.clip(np.asarray(psf, np.float64), 0, None)
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        raise CareError(f"PSF of shape {p.shape}: its values sum to {total} (need a positive, finite PSF)")
    out = []
    for ax in range(p.ndim):
        prof = p.sum(axis=tuple(i for i in range(p.ndim) if i != ax)) / total
        pos = np.arange(p.shape[ax])
        mean = (prof * pos).sum()
        out.append(float(np.sqrt(max((prof * (pos - mean) ** 2).sum(), 0.0))))
    return out


def prepare_psf(psf, ndim, *, name="psf"):
    """``(kernel, sigmas)`` for a PSF given as Gaussian sigma(s) in pixels or as a PSF image.

    Gaussian: ``kernel`` is None and ``sigmas`` one per axis. Image (``ndim`` axes): clipped to >= 0,
    padded to odd sizes and shifted so that its centroid is the centre pixel (a PSF off-centre would
    shift the simulated inputs against their targets), normalized to sum 1; ``sigmas`` are its
    :func:`psf_sigma_equivalent`.
    """
    if np.ndim(psf) <= 1 and np.size(psf) in (1, ndim):
        sig = [float(v) for v in np.broadcast_to(np.asarray(psf, np.float64).ravel(), (ndim,))]
        if not all(np.isfinite(v) and v >= 0 for v in sig) or not any(v > 0 for v in sig):
            raise CareError(f"{name}: Gaussian PSF sigma(s) must be >= 0 and finite, not all 0; got {psf!r}")
        return None, sig
    p = np.clip(np.asarray(psf, np.float64), 0, None)
    if p.ndim != ndim:
        raise CareError(f"{name}: a PSF image of shape {p.shape} ({p.ndim}D) for {ndim}D images; give a "
                        f"{'ZYX' if ndim == 3 else 'YX'} PSF")
    sig = psf_sigma_equivalent(p)
    p = np.pad(p, [(0, 1 - n % 2) for n in p.shape])
    grid = np.indices(p.shape, dtype=np.float64)
    centroid = [(g * p).sum() / p.sum() for g in grid]
    shift = [(n - 1) / 2 - c for n, c in zip(p.shape, centroid)]
    if any(abs(v) > 1e-6 for v in shift):
        p = np.clip(ndi.shift(p, shift, order=1, mode="constant"), 0, None)
    return (p / p.sum()).astype(np.float32), sig


def _convolve(x, kernel):
    """``x`` convolved with a centred, odd-sized ``kernel`` (FFT, reflected borders), same shape."""
    from scipy.signal import fftconvolve

    pad = [(n // 2, n // 2) for n in kernel.shape]
    xp = np.pad(np.asarray(x, np.float64), pad, mode="reflect" if all(
        s > n // 2 for s, n in zip(x.shape, kernel.shape)) else "edge")
    return np.clip(fftconvolve(xp, kernel, mode="valid"), 0, None).astype(np.float32)


def _fine_shape(shape, ss):
    return tuple(n * ss for n in shape)


def _downsample_nd(fine, ss):
    shape = tuple(n // ss for n in fine.shape)
    f = fine[tuple(slice(0, n * ss) for n in shape)]
    return f.reshape([v for n in shape for v in (n, ss)]).sum(axis=tuple(range(1, 2 * len(shape), 2)))


def _check_shape_3d(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4 or min(shape[1:]) < 8:
        raise CareError(f"3D structures need a (Z, Y, X) shape of at least 4×8×8 voxels, got {shape}")
    return shape


def _tubules_3d(shape, *, n_tubules, persistence, width, pixel_size, supersample, seed, pixel_size_z=None):
    """3D worm-like chains; positions in voxels, steps isotropic in physical space (Z scaled by the voxel size)."""
    shape = _check_shape_3d(shape)
    rng, seed = make_rng(seed)
    ss = int(supersample)
    pz = float(pixel_size_z or pixel_size)
    zr = pz / pixel_size                        # lateral pixels per Z voxel
    fine = np.zeros(_fine_shape(shape, ss), np.float32)
    step = 0.25
    n_steps = int(2 * max(shape[1:]) / step)
    scale = np.array([1 / zr, 1.0, 1.0])        # physical (lateral-pixel) step -> voxels
    for _ in range(n_tubules):
        pos = rng.uniform(0, shape)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        kicks = rng.normal(0, np.sqrt(step / persistence), size=(n_steps, 3))
        dirs = np.empty((n_steps, 3))
        for i in range(n_steps):                # a persistent random walk of unit directions
            d = d + kicks[i] - (kicks[i] @ d) * d
            d /= np.linalg.norm(d)
            dirs[i] = d
        path = pos + np.cumsum(step * dirs * scale, axis=0)
        inside = np.all((path >= 0) & (path < shape), axis=1)
        idx = np.floor(path[inside] * ss).astype(int)
        np.add.at(fine, tuple(idx.T), rng.uniform(0.6, 1.0))
    sig = width / 2.355
    fine = ndi.gaussian_filter(fine, [max(sig / (pz / ss), 0.3), max(sig / (pixel_size / ss), 0.3),
                                      max(sig / (pixel_size / ss), 0.3)])
    image = _downsample_nd(fine, ss)
    image /= max(float(image.max()), 1e-12)
    return image.astype(np.float32), {"n_tubules": n_tubules, "persistence": persistence, "width": width,
                                      "pixel_size": pixel_size, "pixel_size_z": pz, "supersample": ss, "seed": seed}


def _granules_3d(shape, *, n_granules, radius_range, pixel_size, supersample, seed, pixel_size_z=None):
    """3D granules: bright spheres (ellipsoids in voxels when Z voxels are larger)."""
    shape = _check_shape_3d(shape)
    rng, seed = make_rng(seed)
    ss = int(supersample)
    pz = float(pixel_size_z or pixel_size)
    fs = _fine_shape(shape, ss)
    fine = np.zeros(fs, np.float32)
    vox = np.array([pz, pixel_size, pixel_size]) / ss
    for _ in range(n_granules):
        c = rng.uniform(0, fs)
        r_um = rng.uniform(*radius_range)
        a = rng.uniform(0.5, 1.0)
        r = np.maximum(r_um / vox, 0.5)         # radius in fine voxels per axis
        lo = [max(int(ci - ri) - 1, 0) for ci, ri in zip(c, r)]
        hi = [min(int(ci + ri) + 2, n) for ci, ri, n in zip(c, r, fs)]
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
        fine[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += a * inside
    image = _downsample_nd(fine, ss)
    image /= max(float(image.max()), 1e-12)
    return image.astype(np.float32), {"n_granules": n_granules, "radius_range": list(radius_range),
                                      "pixel_size": pixel_size, "pixel_size_z": pz, "supersample": ss, "seed": seed}

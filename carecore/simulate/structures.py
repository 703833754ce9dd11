"""Synthetic sub-diffraction structures: tubular networks and granules (CARE-NOTES §8).

Structures are rendered on a fine grid (``supersample`` × the output grid) with their physical
width, then summed into the output pixels: the target is this sharp image; the input is the target
plus a smooth background, blurred with the widefield PSF and imaged with Poisson + Gaussian noise.
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


def tubules(shape, *, n_tubules=12, persistence=30.0, width=0.025, pixel_size=0.05, supersample=4, seed=None):
    """Tubular network (e.g. microtubules) as worm-like random walks.

    Parameters
    ----------
    shape : (int, int)
        Output size in pixels.
    n_tubules : int
    persistence : float
        Persistence length in output pixels: the direction decorrelates as ``exp(-s / persistence)``.
    width : float
        Tubule width (FWHM) in micrometres (microtubules: ~0.025).
    pixel_size : float
        Output pixel size in micrometres.
    supersample : int
        Fine-grid factor for rendering.

    Returns
    -------
    image : numpy.ndarray (float32), max 1
    params : dict
    """
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


def granules(shape, *, n_granules=60, radius_range=(0.015, 0.08), pixel_size=0.05, supersample=4, seed=None):
    """Granules: bright discs with radii drawn from ``radius_range`` (micrometres)."""
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
                            read_noise=2.0, seed=None, **structure_params):
    """A fully synthetic training pair for sub-diffraction restoration.

    The target is the sharp structure (max 1); the input is ``target + background_level *
    smooth_background`` blurred with the widefield PSF (Gaussian, sigma 0.21 λ/NA) and imaged with
    ``peak_photons`` photons at its brightest pixel plus Gaussian read noise.

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
    target, sparams = make(shape, pixel_size=pixel_size, seed=sub(), **structure_params)
    bg, bparams = smooth_background(target.shape, scale=max(target.shape) / 4, seed=sub())
    sigma = psf_sigma_from_optics(na, wavelength, pixel_size, refractive_index=refractive_index)
    blurred = ndi.gaussian_filter(target + background_level * bg, sigma)
    low, nparams = simulate_photon_noise(blurred, peak_photons, read_noise=read_noise, seed=sub())
    params = {"kind": kind, "structure": sparams, "background": bparams, "background_level": background_level,
              "psf_sigma": sigma, "wavelength": wavelength, "na": na, "pixel_size": pixel_size,
              "noise": nparams, "seed": seed}
    return low, target, params

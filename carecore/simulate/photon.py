"""Photon-budget degradation: what a clean image looks like at a lower light dose (CARE-NOTES §8).

The clean image is scaled so that its brightest pixel collects ``peak_photons`` photons on top of
``background`` photons per pixel; the camera counts them (Poisson), multiplies by ``gain`` and adds
Gaussian read noise and an ``offset``::

    lam   = peak_photons * (clean - min) / (max - min) + background      # expected photons
    noisy = gain * Poisson(lam) + offset + Normal(0, read_noise)         # in camera units

so ``mean(noisy) = gain * lam + offset`` and ``var(noisy) = gain² * lam + read_noise²``.

Light dose and SNR: the signal-to-noise ratio of a pixel with ``N`` signal photons is
``N / sqrt(N + background + (read_noise / gain)²)``. In the shot-noise limit it grows as the square
root of the dose: 60-fold less light (the paper's headline) lowers the SNR √60 ≈ 7.7-fold, and read
noise makes very low doses worse still. :func:`photon_snr` computes it.
"""
from __future__ import annotations

import numpy as np

from ..errors import CareError
from ._rng import make_rng


def photon_snr(photons, *, background=0.0, read_noise=0.0, gain=1.0):
    """SNR of a pixel receiving ``photons`` signal photons (see the module docstring)."""
    photons = np.asarray(photons, dtype=np.float64)
    return photons / np.sqrt(photons + background + (read_noise / gain) ** 2)


def simulate_photon_noise(clean, peak_photons, *, background=0.0, read_noise=0.0, gain=1.0, offset=0.0,
                          seed=None):
    """Degrade a clean image to a photon budget.

    Parameters
    ----------
    clean : array_like
        High-SNR image (any shape).
    peak_photons : float
        Expected photons at the brightest pixel; lower means less light, more noise.
    background : float
        Expected background photons per pixel (stray light, autofluorescence).
    read_noise : float
        Standard deviation of the camera's Gaussian read noise, in output units.
    gain : float
        Output units per photon.
    offset : float
        Constant camera offset added to the output.
    seed : int, optional
        Same seed, same output.

    Returns
    -------
    noisy : numpy.ndarray (float32)
    params : dict
        Everything used, the seed and the clean image's range included, and ``snr_peak``.

    Examples
    --------
    >>> low, params = simulate_photon_noise(clean, peak_photons=20, read_noise=2, seed=0)  # doctest: +SKIP
    """
    x = np.asarray(clean, dtype=np.float64)
    if peak_photons <= 0:
        raise CareError(f"peak_photons must be positive, got {peak_photons}")
    if background < 0 or read_noise < 0 or gain <= 0:
        raise CareError(f"need background >= 0, read_noise >= 0, gain > 0; got {background}, {read_noise}, {gain}")
    if not np.isfinite(x).all():
        raise CareError("clean image contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        raise CareError(f"clean image is constant (all values {lo:g}); nothing to scale to a photon budget")
    rng, seed = make_rng(seed)
    lam = peak_photons * (x - lo) / (hi - lo) + background
    noisy = gain * rng.poisson(lam).astype(np.float64) + offset
    if read_noise > 0:
        noisy += rng.normal(0.0, read_noise, size=x.shape)
    params = {
        "peak_photons": float(peak_photons), "background": float(background),
        "read_noise": float(read_noise), "gain": float(gain), "offset": float(offset),
        "seed": seed, "clean_range": [lo, hi],
        "snr_peak": float(photon_snr(peak_photons, background=background, read_noise=read_noise, gain=gain)),
    }
    return noisy.astype(np.float32), params

"""Anisotropic degradation: training pairs for isotropic restoration and axial upsampling (§8).

A clean image is blurred along one axis with the axial PSF (a Gaussian), optionally made noisy,
sampled every ``factor`` pixels along that axis, and interpolated back onto the original grid.
For isotropic restoration the axis is a *lateral* one of lateral slices (the PSF rotated into the
plane); for axial upsampling it is Z of a 3D stack.

The factor may be non-integer: samples are taken at the exact positions ``0, f, 2f, ...`` (linear
interpolation between pixels of the blurred image, exact nearest sampling for integer factors), and
the factor is recorded unchanged in the returned parameters. Nothing is rounded silently.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.interpolate import make_interp_spline

from ..axes import check_axes
from ..errors import CareError
from ._rng import make_rng
from .photon import simulate_photon_noise

INTERPOLATION_ORDER = {"nearest": 0, "linear": 1, "cubic": 3}


def resample_axis(x, positions, axis, order=1):
    """Values of ``x`` at fractional ``positions`` along ``axis`` (clamped to the valid range)."""
    n = x.shape[axis]
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0, n - 1)
    if order == 0:
        return np.take(x, np.rint(positions).astype(int), axis=axis)
    if order == 1 or n < 4:
        i0 = np.clip(np.floor(positions).astype(int), 0, max(n - 2, 0))
        w = positions - i0
        a = np.take(x, i0, axis=axis)
        b = np.take(x, np.minimum(i0 + 1, n - 1), axis=axis)
        shape = [1] * x.ndim
        shape[axis] = -1
        w = w.reshape(shape)
        return (a * (1 - w) + b * w).astype(x.dtype, copy=False)
    spline = make_interp_spline(np.arange(n), x, k=order, axis=axis)
    return spline(positions).astype(x.dtype, copy=False)


def simulate_anisotropic(clean, factor, *, axes, axis="Z", psf_sigma=0.0, peak_photons=None,
                         background=0.0, read_noise=0.0, interpolation="linear", upsample_back=True,
                         seed=None, noise_std=0.0):
    """Blur, subsample and re-interpolate ``clean`` along one axis.

    Parameters
    ----------
    clean : array_like
        The high-quality image.
    factor : float
        Subsampling factor (>= 1), e.g. the ratio of axial to lateral pixel size. Non-integer
        factors are honoured exactly.
    axes : str
        Axes of ``clean``.
    axis : str
        The letter of the axis to degrade (``"Z"`` for upsampling, ``"X"`` or ``"Y"`` for
        isotropic-restoration pairs built from lateral slices).
    psf_sigma : float
        Standard deviation of the Gaussian PSF along ``axis``, in pixels of ``clean``; see
        :func:`~carecore.simulate.psf_sigma_from_optics` to derive it from NA, wavelength and voxel size.
    peak_photons : float, optional
        Add photon + read noise (see :func:`simulate_photon_noise`) after blurring.
    interpolation : {"nearest", "linear", "cubic"}
        How the subsampled image is interpolated back.
    upsample_back : bool
        Return the image on the original grid (default), or the subsampled one.
    seed : int, optional
    noise_std : float or callable
        Gaussian noise of this standard deviation (in the image's units; or a function of the blurred image
        giving it per pixel) added after blurring: the noise a noisy image's blur took away, given back
        (isotropic training pairs from a noisy stack's own slices).

    Returns
    -------
    degraded : numpy.ndarray (float32)
    params : dict

    Examples
    --------
    >>> low, p = simulate_anisotropic(vol, 4, axes="ZYX", axis="Z", psf_sigma=2.0)  # doctest: +SKIP
    """
    x = np.asarray(clean, dtype=np.float32)
    axes = check_axes(axes, x.ndim, shape=x.shape)
    axis = axis.upper()
    if axis not in axes or axis not in "ZYX":
        raise CareError(f"axis {axis!r} is not a spatial axis of {axes!r}: degrade a stack (ZYX) along Z, or name "
                        "one of its spatial axes (`carecore degrade anisotropic --axis`)")
    factor = float(factor)
    if not factor >= 1:
        raise CareError(f"subsampling factor must be >= 1, got {factor}")
    if interpolation not in INTERPOLATION_ORDER:
        raise CareError(f"interpolation must be one of {list(INTERPOLATION_ORDER)}, got {interpolation!r}")
    if psf_sigma < 0:
        raise CareError(f"psf_sigma must be >= 0, got {psf_sigma}")
    ax = axes.index(axis)
    n = x.shape[ax]
    if n < 2 * factor:
        raise CareError(f"axis {axis} has {n} pixels, too few to subsample by {factor}")
    rng, seed = make_rng(seed)
    y = ndi.gaussian_filter1d(x, psf_sigma, axis=ax, mode="reflect") if psf_sigma > 0 else x.copy()
    noise = None
    std = noise_std(y) if callable(noise_std) else float(noise_std)
    if np.any(np.asarray(std) > 0):
        y = y + (rng.standard_normal(y.shape) * std).astype(np.float32)
    if peak_photons is not None:
        y, noise = simulate_photon_noise(y, peak_photons, background=background, read_noise=read_noise,
                                         seed=int(rng.integers(2**32)))
    positions = np.arange(0, n - 1 + 1e-9, factor)
    sub = resample_axis(y, positions, ax, order=0 if factor.is_integer() else 1)
    out = sub
    if upsample_back:
        out = resample_axis(sub, np.arange(n) / factor, ax, order=INTERPOLATION_ORDER[interpolation])
    params = {
        "factor": factor, "axis": axis, "psf_sigma": float(psf_sigma), "interpolation": interpolation,
        "subsampled_length": int(len(positions)), "seed": seed, "noise": noise,
        "upsample_back": bool(upsample_back),
    }
    return out.astype(np.float32), params

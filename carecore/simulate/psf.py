"""Gaussian approximations of the microscope's point spread function."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import CareError

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def psf_sigma_from_optics(na, wavelength, pixel_size, *, direction="lateral", refractive_index=1.33,
                          confocal=False):
    """Standard deviation (in pixels) of a Gaussian approximating the PSF.

    Parameters
    ----------
    na : float
        Numerical aperture of the objective.
    wavelength : float
        Emission wavelength, in the same unit as ``pixel_size`` (e.g. micrometres).
    pixel_size : float
        Size of a pixel along ``direction``.
    direction : {"lateral", "axial"}
        Lateral: widefield FWHM 0.51 λ/NA, i.e. sigma ≈ 0.21 λ/NA. Axial: widefield FWHM
        0.88 λ / (n - sqrt(n² - NA²)).
    refractive_index : float
        Of the immersion medium (1.33 water, 1.52 oil).
    confocal : bool
        Divide the widths by √2 (pinhole of about one Airy unit).

    Examples
    --------
    >>> round(psf_sigma_from_optics(1.2, 0.52, 0.1), 2)
    0.94
    """
    if not 0 < na < refractive_index:
        raise CareError(f"numerical aperture must be in (0, n={refractive_index}), got {na}")
    if wavelength <= 0 or pixel_size <= 0:
        raise CareError(f"wavelength and pixel size must be positive, got {wavelength}, {pixel_size}")
    if direction == "lateral":
        fwhm = 0.51 * wavelength / na
    elif direction == "axial":
        fwhm = 0.88 * wavelength / (refractive_index - np.sqrt(refractive_index**2 - na**2))
    else:
        raise CareError(f"direction must be 'lateral' or 'axial', got {direction!r}")
    if confocal:
        fwhm /= np.sqrt(2.0)
    return float(fwhm * FWHM_TO_SIGMA / pixel_size)


def gaussian_blur(x, sigma):
    """Gaussian blur with one sigma per axis (in pixels); 0 leaves that axis alone."""
    return ndi.gaussian_filter(np.asarray(x, dtype=np.float32), sigma, mode="reflect")

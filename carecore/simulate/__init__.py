"""Simulators: deterministic by seed; each returns the images and the parameters it used."""
from .psf import psf_sigma_from_optics, gaussian_blur
from .photon import simulate_photon_noise, photon_snr
from .anisotropic import simulate_anisotropic
from .structures import tubules, granules, smooth_background, simulate_subdiffraction
from .samples import nuclei_volume, surface_stack, write_demo_data, DEMO_TASKS

__all__ = [
    "psf_sigma_from_optics", "gaussian_blur", "simulate_photon_noise", "photon_snr",
    "simulate_anisotropic", "tubules", "granules", "smooth_background", "simulate_subdiffraction",
    "nuclei_volume", "surface_stack", "write_demo_data", "DEMO_TASKS",
]

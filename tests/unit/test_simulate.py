import numpy as np
import pytest
from scipy import ndimage as ndi

from carecore import (CareError, isotropy_ratio, nuclei_volume, psf_sigma_from_optics, simulate_anisotropic,
                      simulate_photon_noise, simulate_subdiffraction, surface_stack, write_demo_data)
from carecore.simulate import photon_snr


def test_photon_noise_statistics():
    # three flat regions: mean = gain*lam + offset, var = gain^2*lam + read^2
    clean = np.repeat(np.array([0.0, 0.5, 1.0]), 200_000).reshape(3, -1)
    peak, bg, read, gain, off = 40.0, 5.0, 3.0, 2.0, 100.0
    noisy, p = simulate_photon_noise(clean, peak, background=bg, read_noise=read, gain=gain, offset=off, seed=3)
    for row, level in zip(noisy, (0.0, 0.5, 1.0)):
        lam = peak * level + bg
        assert row.mean() == pytest.approx(gain * lam + off, rel=0.01)
        assert row.var() == pytest.approx(gain**2 * lam + read**2, rel=0.03)
    assert p["seed"] == 3 and p["snr_peak"] == pytest.approx(40 / np.sqrt(40 + 5 + 1.5**2))


def test_photon_noise_is_poisson_at_low_counts():
    clean = np.ones((1000, 1000))
    clean[0, 0] = 0
    noisy, _ = simulate_photon_noise(clean, 2.0, seed=0)
    # P(0 photons | lam=2) = exp(-2)
    assert (noisy == 0).mean() == pytest.approx(np.exp(-2), abs=0.005)


def test_photon_noise_deterministic_and_dose():
    clean, _ = nuclei_volume((8, 32, 32), seed=1)
    a, _ = simulate_photon_noise(clean, 10, seed=5)
    b, _ = simulate_photon_noise(clean, 10, seed=5)
    c, _ = simulate_photon_noise(clean, 10, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # SNR grows with the square root of the dose in the shot-noise limit
    assert photon_snr(600) / photon_snr(10) == pytest.approx(np.sqrt(60), rel=1e-6)


def test_photon_noise_errors():
    with pytest.raises(CareError, match="constant"):
        simulate_photon_noise(np.ones((4, 4)), 10)
    with pytest.raises(CareError, match="positive"):
        simulate_photon_noise(np.random.rand(4, 4), 0)


def test_anisotropic_integer_factor_is_nearest_subsampling():
    x = np.random.default_rng(0).random((32, 8, 8)).astype(np.float32)
    sub, p = simulate_anisotropic(x, 4, axes="ZYX", axis="Z", psf_sigma=0, upsample_back=False, seed=0)
    np.testing.assert_array_equal(sub, x[::4])
    back, p = simulate_anisotropic(x, 4, axes="ZYX", axis="Z", psf_sigma=0, seed=0)
    assert back.shape == x.shape
    np.testing.assert_allclose(back[::4][:-1], x[::4][:-1], atol=1e-6)  # samples kept exactly


def test_anisotropic_non_integer_factor_kept():
    z = np.arange(40, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    sub, p = simulate_anisotropic(z, 2.5, axes="ZYX", axis="Z", upsample_back=False, seed=0)
    assert p["factor"] == 2.5
    np.testing.assert_allclose(sub[:, 0, 0], np.arange(0, 39.01, 2.5), atol=1e-5)  # exact positions 0, 2.5, 5 ...
    back, _ = simulate_anisotropic(z, 2.5, axes="ZYX", axis="Z", seed=0)
    np.testing.assert_allclose(back[:38, 0, 0], np.arange(38), atol=1e-4)  # a linear ramp comes back exactly


def test_anisotropic_blurs_only_that_axis_and_lowers_isotropy():
    vol, _ = nuclei_volume((48, 48, 48), radius=(4, 4, 4), seed=2)
    low, _ = simulate_anisotropic(vol, 4, axes="ZYX", axis="Z", psf_sigma=2.0, seed=0)
    assert isotropy_ratio(low) < 0.6 * isotropy_ratio(vol)
    # lateral detail untouched within a slice that was sampled
    assert np.abs(np.diff(low[8], axis=1)).mean() > 0.5 * np.abs(np.diff(vol[8], axis=1)).mean()
    with pytest.raises(CareError, match=">= 1"):
        simulate_anisotropic(vol, 0.5, axes="ZYX")
    with pytest.raises(CareError, match="not a spatial axis"):
        simulate_anisotropic(vol, 2, axes="ZYX", axis="C")


def test_isotropy_ratio_of_isotropic_volume_is_one():
    noise = ndi.gaussian_filter(np.random.default_rng(0).normal(size=(64, 64, 64)), 1.0, mode="wrap")
    assert isotropy_ratio(noise) == pytest.approx(1.0, abs=0.1)
    assert isotropy_ratio(ndi.gaussian_filter(noise, (3, 0, 0), mode="wrap")) < 0.5


def test_psf_from_optics():
    assert psf_sigma_from_optics(1.2, 0.52, 0.1) == pytest.approx(0.51 * 0.52 / 1.2 / 2.3548 / 0.1, rel=1e-3)
    ax = psf_sigma_from_optics(1.2, 0.52, 0.1, direction="axial")
    assert ax > 2.5 * psf_sigma_from_optics(1.2, 0.52, 0.1)  # axial PSF much longer than lateral
    with pytest.raises(CareError, match="numerical aperture"):
        psf_sigma_from_optics(1.5, 0.5, 0.1)


@pytest.mark.parametrize("kind", ["tubules", "granules"])
def test_subdiffraction_pairs(kind):
    low, target, p = simulate_subdiffraction((64, 64), kind=kind, seed=4)
    low2, target2, _ = simulate_subdiffraction((64, 64), kind=kind, seed=4)
    np.testing.assert_array_equal(low, low2)
    assert low.shape == target.shape == (64, 64) and target.max() == pytest.approx(1)
    # the input is the target seen through the PSF: it matches the blurred target better than the sharp one
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    assert corr(low, ndi.gaussian_filter(target, p["psf_sigma"])) > corr(low, target) + 0.05
    assert p["psf_sigma"] > 0 and p["kind"] == kind


def test_sample_volumes():
    v, p = nuclei_volume((16, 48, 48), seed=0)
    assert v.shape == (16, 48, 48) and v.max() == pytest.approx(1) and 0.02 < (v > 0.2).mean() < 0.8
    stack, proj, q = surface_stack((16, 48, 48), seed=0)
    assert stack.shape == (16, 48, 48) and proj.shape == (48, 48)
    # the surface carries the pattern: the stack sampled at the surface correlates with the target
    assert np.corrcoef(stack.max(0).ravel(), proj.ravel())[0, 1] > 0.3


def test_demo_data_deterministic(tmp_path):
    a = write_demo_data(tmp_path / "a", size="tiny", seed=0)
    b = write_demo_data(tmp_path / "b", tasks=["denoising3d"], size="tiny", seed=0)
    fa = (a["denoising3d"] / "train/low/sample00.tif").read_bytes()
    fb = (b["denoising3d"] / "train/low/sample00.tif").read_bytes()
    assert fa == fb  # a task's data does not depend on which other tasks were written
    for task, folder in a.items():
        assert (folder / "dataset.json").exists()
        assert sorted(p.name for p in (folder / "train/low").iterdir()) == sorted(p.name for p in (folder / "train/high").iterdir())

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from carecore import BASELINES, CareError, affine_fit, baseline, evaluate, nuclei_volume, simulate_photon_noise, ssim
from carecore.metrics import GT_PERCENTILES
from carecore.normalize import percentile_normalize


@pytest.mark.parametrize("shape", [(64, 80), (12, 40, 48)])
def test_ssim_psnr_agree_with_skimage(shape):
    rng = np.random.default_rng(0)
    g = rng.random(shape)
    y = g + 0.2 * rng.normal(size=shape)
    ours = ssim(y, g, data_range=1.0)
    ref = structural_similarity(y, g, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(ref, abs=1e-6)


def test_evaluate_follows_paper_protocol():
    gt, _ = nuclei_volume((12, 48, 48), seed=1)
    noisy, _ = simulate_photon_noise(gt, 5, seed=1)
    m = evaluate(noisy, gt, axes="ZYX")
    g, _ = percentile_normalize(gt, *GT_PERCENTILES, axes="ZYX")
    a, b = affine_fit(noisy, g)
    phi = a * noisy.astype(np.float64) + b
    assert m["nrmse"] == pytest.approx(np.sqrt(np.mean((phi - g) ** 2)), rel=1e-6)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(g.astype(np.float64), phi, data_range=1.0), rel=1e-6)
    assert m["ssim"] == pytest.approx(structural_similarity(phi, g.astype(np.float64), data_range=1.0, gaussian_weights=True,
                                                            sigma=1.5, use_sample_covariance=False), abs=1e-6)
    # the affine fit makes the metric blind to scale and offset
    m2 = evaluate(3 * noisy + 7, gt, axes="ZYX")
    assert m2["nrmse"] == pytest.approx(m["nrmse"], rel=1e-5)
    assert evaluate(gt, gt, axes="ZYX")["ssim"] == pytest.approx(1.0)


def test_evaluate_per_slice_and_channels():
    gt = np.random.default_rng(0).random((2, 5, 32, 32))
    m = evaluate(gt + 0.1, gt, axes="CZYX", per_slice=True)
    assert len(m["per_channel"]) == 2 and len(m["per_slice"]) == 2 and len(m["per_slice"][0]) == 5
    with pytest.raises(CareError, match="shape"):
        evaluate(gt[0], gt[1, :4], axes="ZYX")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_improve_noisy_image(name):
    gt, _ = nuclei_volume((6, 48, 48), seed=3)
    noisy, _ = simulate_photon_noise(gt, 8, seed=3)
    out = baseline(name, noisy, axes="ZYX")
    assert out.shape == noisy.shape
    assert evaluate(out, gt, axes="ZYX")["ssim"] > evaluate(noisy, gt, axes="ZYX")["ssim"]


def test_unknown_baseline():
    with pytest.raises(CareError, match="unknown baseline 'bm3d'"):
        baseline("bm3d", np.random.rand(8, 8), axes="YX")

import numpy as np
import pytest
from scipy import stats

from carecore import CareError
from carecore.uncertainty import (calibration_curve, disagreement, laplace_entropy, laplace_interval, laplace_quantile,
                                  laplace_samples, laplace_variance, mixture_mean_variance, ood_check)


def test_laplace_readouts_match_scipy():
    mu, b = np.array([0.0, 2.0, -1.0]), np.array([1.0, 0.5, 3.0])
    for q in (0.05, 0.3, 0.5, 0.8, 0.95):
        np.testing.assert_allclose(laplace_quantile(mu, b, q), stats.laplace.ppf(q, mu, b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(laplace_variance(b), stats.laplace.var(mu, b), rtol=1e-6)
    np.testing.assert_allclose(laplace_entropy(b), stats.laplace.entropy(mu, b), rtol=1e-6)
    lo, hi = laplace_interval(mu, b, 0.9)
    np.testing.assert_allclose(stats.laplace.cdf(hi, mu, b) - stats.laplace.cdf(lo, mu, b), 0.9, rtol=1e-5)
    s = laplace_samples(np.zeros((200, 200)), np.full((200, 200), 2.0), 5, seed=0)
    assert s.shape == (5, 200, 200) and s.var() == pytest.approx(8.0, rel=0.05)
    with pytest.raises(CareError, match="positive"):
        laplace_interval(mu, -b)


def test_disagreement_known_answers():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(50, 40))
    b = rng.uniform(0.1, 2, size=(50, 40))
    same = disagreement(np.stack([mu] * 5), np.stack([b] * 5))
    assert same.max() < 0.01
    far = disagreement(np.stack([mu + 100 * k for k in range(5)]), np.stack([b * 0.01] * 5))
    assert far.min() > 0.95
    mixed = disagreement(np.stack([mu, mu + rng.normal(size=mu.shape) * 2] * 2), np.stack([b, b * 1.5] * 2))
    assert 0 <= mixed.min() and mixed.max() <= 1 and 0.01 < mixed.mean() < 0.95


def test_disagreement_matches_brute_force_integration():
    mus = np.array([[0.0], [1.0], [3.0]])
    bs = np.array([[1.0], [0.5], [2.0]])
    z = np.linspace(-60, 60, 400_001)
    pdf = lambda m, s: np.exp(-np.abs(z - m) / s) / (2 * s)  # noqa: E731
    pens = np.mean([pdf(m, s) for m, s in zip(mus[:, 0], bs[:, 0])], 0)
    kl = np.mean([np.trapezoid(pdf(m, s) * np.log(pdf(m, s) / pens), z) for m, s in zip(mus[:, 0], bs[:, 0])])
    assert disagreement(mus, bs)[0] == pytest.approx(kl / np.log(3), abs=1e-3)


def test_mixture_moments():
    mus = np.array([[0.0], [2.0]])
    bs = np.array([[1.0], [1.0]])
    m, v = mixture_mean_variance(mus, bs)
    assert m[0] == pytest.approx(1.0) and v[0] == pytest.approx(2.0 + 1.0)


def test_calibration_of_true_distribution_and_overconfidence():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(300, 300))
    b = rng.uniform(0.2, 2, size=mu.shape)
    gt = mu + rng.laplace(size=mu.shape) * b
    good = calibration_curve(gt, mu, b)
    assert good["ece"] < 0.02
    over = calibration_curve(gt, mu, b / 3)
    assert over["ece"] > 0.15
    assert all(a < c for a, c in zip(over["accuracy"], over["confidence"]))  # below the diagonal
    # a mixture (ensemble) of the right distribution is calibrated too
    ens = calibration_curve(gt, np.stack([mu, mu]), np.stack([b, b]))
    assert ens["ece"] < 0.02


def test_ood_check():
    assert ood_check(0.05, 0.04) is None
    assert "unlike anything" in ood_check(0.2, 0.04)

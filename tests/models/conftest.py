import numpy as np
import pytest
from scipy.ndimage import gaussian_filter


def _smooth_pairs(n_train, n_val, seed=0):
    rng = np.random.default_rng(seed)
    clean = gaussian_filter(rng.random((n_train + n_val, 32, 32, 1)), (0, 2, 2, 0)).astype(np.float32)
    clean = (clean - clean.min()) / np.ptp(clean)
    noisy = (clean + rng.normal(0, 0.2, clean.shape)).astype(np.float32)
    return noisy[:n_train], clean[:n_train], noisy[n_train:], clean[n_train:]


@pytest.fixture(scope="session")
def smooth_pairs():
    """``smooth_pairs(n_train, n_val, seed=0)`` -> ``(X, Y, X_val, Y_val)``: 32×32 "YXC" patches, the targets
    smoothed noise scaled to [0, 1], the inputs the targets plus Gaussian noise of sigma 0.2."""
    return _smooth_pairs

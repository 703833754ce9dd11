import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _environment_restored():
    """What a test or a library changes in ``os.environ`` lasts for that test only: bioimageio.core's
    ``test_model`` sets ``TF_ENABLE_ONEDNN_OPTS=0`` for good, and every notebook kernel and command-line
    subprocess started after it ran TensorFlow's bfloat16 without oneDNN, about ten times slower."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    from carecore import write_demo_data

    root = tmp_path_factory.mktemp("demo")
    write_demo_data(root, size="tiny", seed=0)
    return root


def _noisy_pair(seed, shape=(16, 48, 48), photons=10, background=1):
    """A simulated (noisy, clean) nuclei volume pair."""
    from carecore import nuclei_volume, simulate_photon_noise

    clean, _ = nuclei_volume(shape, seed=seed)
    noisy, _ = simulate_photon_noise(clean, photons, background=background, seed=seed)
    return noisy, clean


@pytest.fixture(scope="session")
def noisy_pair():
    """``noisy_pair(seed, shape=(16, 48, 48))`` -> (noisy, clean) simulated nuclei volumes."""
    return _noisy_pair

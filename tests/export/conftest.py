"""Tiny trained models shared by the export tests (trained once per session)."""
import numpy as np
import pytest

from carecore import care_config, create_model


def simulated_image(shape, seed=0):
    """(noisy, clean) float32: sparse blobs (~3000 photons) under Poisson noise."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    clean = gaussian_filter((rng.random(shape) > 0.97).astype(np.float32), 2) * 3000 + 10
    return rng.poisson(clean).astype(np.float32), clean.astype(np.float32)


def _train(path, axes, image_shape, **overrides):
    """A tiny model trained for a few steps on one simulated image (patches normalized as carecore does)."""
    from carecore import percentile_normalize

    noisy, clean = simulated_image(image_shape)
    cfg = care_config(axes, quick=True, epochs=1, steps_per_epoch=2, **overrides)
    xn, _ = percentile_normalize(noisy, *cfg.percentiles, axes=axes)
    yn, _ = percentile_normalize(clean, *cfg.percentiles, axes=axes)
    rng = np.random.default_rng(0)
    X, Y = [], []
    for _ in range(10):
        start = [rng.integers(0, s - p + 1) for s, p in zip(image_shape, cfg.patch_size)]
        sl = tuple(slice(a, a + p) for a, p in zip(start, cfg.patch_size))
        X.append(xn[sl])
        Y.append(yn[sl])
    X, Y = np.stack(X)[..., None], np.stack(Y)[..., None]
    model = create_model(cfg, path)
    model.train((X[:8], Y[:8], X[8:], Y[8:]))
    return model, noisy


@pytest.fixture(scope="session")
def make_image():
    """``make_image(shape, seed=0)`` -> (noisy, clean), see :func:`simulated_image`."""
    return simulated_image


@pytest.fixture(scope="session")
def model2d(tmp_path_factory):
    """(model, noisy image): a float32 2D CARE model and the 112×120 image it was trained on."""
    return _train(tmp_path_factory.mktemp("m") / "care2d", "YX", (112, 120), precision="float32")


@pytest.fixture(scope="session")
def model3d_prob(tmp_path_factory):
    """(model, noisy stack): a probabilistic 3D CARE model (bfloat16) and its 56×64×64 training stack."""
    return _train(tmp_path_factory.mktemp("m") / "care3d", "ZYX", (56, 64, 64), probabilistic=True,
                  precision="mixed_bfloat16")   # the export's float32 twin is tested on every machine


@pytest.fixture(scope="session")
def model2d_smooth(tmp_path_factory):
    """(model, noisy image): a float32 2D model whose correction is added to the input smoothed by a
    Gaussian of sigma 16 (its reach, 48 px, exceeds the network's receptive field of 43), times a gain
    plus an offset (``residual_affine``), its output smoothed by a Gaussian of sigma 2 (``output_sigma``)."""
    return _train(tmp_path_factory.mktemp("m") / "care2d_smooth", "YX", (112, 120), precision="float32",
                  residual_sigma=16.0, residual_affine=((1.6, -0.3),), output_sigma=2.0)


@pytest.fixture(scope="session")
def model2d_training_scaled(tmp_path_factory):
    """(model, noisy image): a float32 2D model trained on patches from ``create_patches``, so that it
    records its training inputs' percentiles and scales every input by them (``input_normalization``)."""
    from carecore import create_patches

    noisy, clean = simulated_image((112, 120))
    cfg = care_config("YX", quick=True, epochs=1, steps_per_epoch=2, precision="float32")
    patches = create_patches([(noisy, clean)], cfg.patch_size, axes="YX", n_patches_per_image=12, seed=0)
    model = create_model(cfg, tmp_path_factory.mktemp("m") / "care2d_training_scaled")
    model.train(patches)
    assert model.config.input_normalization == "training" and model.training_normalization is not None
    return model, noisy


@pytest.fixture(scope="session")
def model2d_prob_training_scaled(tmp_path_factory):
    """(model, noisy image): a float32 probabilistic 2D model trained on patches from ``create_patches``,
    so that it scales every input by its training inputs' percentiles (the default, as ensemble members)."""
    from carecore import create_patches

    noisy, clean = simulated_image((112, 120))
    cfg = care_config("YX", quick=True, epochs=1, steps_per_epoch=2, precision="float32", probabilistic=True)
    patches = create_patches([(noisy, clean)], cfg.patch_size, axes="YX", n_patches_per_image=12, seed=0)
    model = create_model(cfg, tmp_path_factory.mktemp("m") / "care2d_prob_training_scaled")
    model.train(patches)
    assert model.scales_by_training and model.config.probabilistic
    return model, noisy

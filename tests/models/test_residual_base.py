"""A residual network on a Gaussian-smoothed input (``residual_sigma``, issue 16): the untrained
network answers with the filter, tiling and staged prediction stay exact with the filter's reach, the
standard-layer export computes the same, and ``"auto"`` picks a sigma that fits the data."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import carecore as cc
from carecore import CareError
from carecore.models.config import care_config
from carecore.models.unet import GaussianSmooth, smoothing_radius
from carecore.training.residual_base import choose_residual_sigma


@pytest.mark.parametrize("shape,sigma", [((2, 40, 50, 1), 3.0), ((1, 12, 20, 22, 2), 1.5)])
def test_gaussian_layer_equals_scipy(shape, sigma):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    got = np.asarray(GaussianSmooth(sigma)(x))
    spatial = (sigma,) * (len(shape) - 2)
    np.testing.assert_allclose(got, gaussian_filter(x, (0, *spatial, 0), mode="constant", truncate=3.0), atol=1e-5)


def test_untrained_network_answers_with_the_filter():
    cfg = care_config("YX", unet_filters=4, residual_sigma=4.0, precision="float32", patch_size=(32, 32))
    model = cc.create_model(cfg)
    x = np.random.default_rng(1).random((1, 48, 56, 1)).astype(np.float32)
    got = np.asarray(model.keras_model.predict_on_batch(x))
    np.testing.assert_allclose(got, gaussian_filter(x, (0, 4, 4, 0), mode="constant", truncate=3.0), atol=1e-5)


@pytest.mark.parametrize("axes", ["YX", "ZYX"])
def test_a_wide_filter_widens_the_halo_and_tiles_stay_exact(axes):
    """With a filter reaching beyond the network's receptive field, tiled (plain and staged) equals untiled."""
    sigma = 16.0 if axes == "YX" else 10.0
    cfg = care_config(axes, quick=True, residual_sigma=sigma, precision="float32")
    model = cc.create_model(cfg)
    from carecore.models.unet import receptive_radius

    assert model._halo() == smoothing_radius(cfg) > receptive_radius(cfg)
    # the network's correction is zero before training: give it weights so both parts count
    rng = np.random.default_rng(2)
    model.keras_model.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) if w.ndim > 1 else w
                                   for w in model.keras_model.get_weights()])
    shape = (40, 150, 130) if axes == "ZYX" else (150, 170)
    img = rng.random(shape).astype(np.float32)
    whole = model.predict(img, axes=axes, n_tiles=(1,) * len(axes))
    tiled = model.predict(img, axes=axes, n_tiles=(1, 2, 3) if axes == "ZYX" else (2, 3))
    tol = 1e-5 * float(np.ptp(whole))   # float rounding of different tile shapes, relative to the range
    np.testing.assert_allclose(tiled, whole, atol=tol)
    stages = ((1, 2, 2), (1, 1, 2), (1, 2, 2)) if axes == "ZYX" else ((2, 2), (1, 2), (2, 2))
    np.testing.assert_allclose(model.predict(img, axes=axes, stage_tiles=stages), whole, atol=tol)
    # and a halo one pixel short of the filter's reach would not be exact: the filter does reach that far
    assert smoothing_radius(cfg) == int(np.ceil(3 * sigma))


def test_standard_layer_export_computes_the_same():
    from carecore.export.plain import build_plain_unet, care_conv_weights

    cfg = care_config("YX", unet_filters=4, residual_sigma=2.5, precision="float32", patch_size=(32, 32))
    model = cc.create_model(cfg)
    rng = np.random.default_rng(3)
    model.keras_model.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) if w.ndim > 1 else w
                                   for w in model.keras_model.get_weights()])
    plain = build_plain_unet(cfg, care_conv_weights(model))
    x = rng.random((1, 64, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(plain.predict_on_batch(x)),
                               np.asarray(model.keras_model.predict_on_batch(x)), atol=1e-4)


def test_auto_sigma_fits_the_noise():
    """Very noisy smooth patches get a wide filter, clean ones none; training records the number."""
    rng = np.random.default_rng(4)
    clean = gaussian_filter(rng.random((64, 64, 64)), (0, 6, 6))[..., None].astype(np.float32)
    clean = (clean - clean.min()) / np.ptp(clean)
    noisy = clean + rng.normal(0, 0.5, clean.shape).astype(np.float32)
    assert choose_residual_sigma(noisy, clean) >= 3
    assert choose_residual_sigma(clean, clean) == 0
    cfg = care_config("YX", quick=True, residual_sigma="auto", patch_size=(32, 32))
    model = cc.create_model(cfg)
    model.train((noisy[:48, :32, :32], clean[:48, :32, :32], noisy[48:, :32, :32], clean[48:, :32, :32]),
                epochs=1, steps_per_epoch=2)
    assert isinstance(model.config.residual_sigma, float) and model.config.residual_sigma >= 3
    assert model.keras_model.get_layer("smooth").sigma == model.config.residual_sigma


def test_residual_sigma_is_validated():
    with pytest.raises(CareError, match="residual_sigma"):
        care_config("YX", residual_sigma=-1)
    with pytest.raises(CareError, match="residual_sigma"):
        care_config("YX", residual_sigma="wide")
    with pytest.raises(CareError, match="residual_sigma and residual"):
        care_config("YX", residual_sigma=2.0, residual=False)

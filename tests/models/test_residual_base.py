"""A residual network on a Gaussian-smoothed input (``residual_sigma``, issue 16): the untrained
network answers with the filter (times the fitted gain plus offset, ``residual_affine``), tiling and
staged prediction stay exact with the filter's reach, the standard-layer export computes the same, and
``"auto"`` picks a sigma and fits a gain and offset that suit the data."""
import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import carecore as cc
from carecore import CareError
from carecore.models.config import CareConfig, care_config
from carecore.models.unet import GaussianSmooth, smoothing_radius
from carecore.training.residual_base import choose_residual_sigma, fit_base_affine


@pytest.mark.parametrize("shape,sigma", [((2, 40, 50, 1), 3.0), ((1, 12, 20, 22, 2), 1.5)])
def test_gaussian_layer_equals_scipy(shape, sigma):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    got = np.asarray(GaussianSmooth(sigma)(x))
    spatial = (sigma,) * (len(shape) - 2)
    np.testing.assert_allclose(got, gaussian_filter(x, (0, *spatial, 0), mode="constant", truncate=3.0), atol=1e-5)


@pytest.mark.parametrize("sigma, affine", [(4.0, ()), (4.0, ((2.0, -0.5),)), (0.0, ((0.5, 0.25),))])
def test_untrained_network_answers_with_the_filter(sigma, affine):
    cfg = care_config("YX", unet_filters=4, residual_sigma=sigma, residual_affine=affine, precision="float32",
                      patch_size=(32, 32))
    model = cc.create_model(cfg)
    x = np.random.default_rng(1).random((1, 48, 56, 1)).astype(np.float32)
    got = np.asarray(model.keras_model.predict_on_batch(x))
    want = gaussian_filter(x, (0, sigma, sigma, 0), mode="constant", truncate=3.0) if sigma else x
    gain, offset = affine[0] if affine else (1.0, 0.0)
    np.testing.assert_allclose(got, gain * want + offset, atol=1e-5)


@pytest.mark.parametrize("axes", ["YX", "ZYX"])
def test_a_wide_filter_widens_the_halo_and_tiles_stay_exact(axes):
    """With a filter reaching beyond the network's receptive field (and a gain and offset on it), tiled
    (plain and staged) equals untiled."""
    sigma = 16.0 if axes == "YX" else 10.0
    cfg = care_config(axes, quick=True, residual_sigma=sigma, residual_affine=((1.7, -0.3),), precision="float32")
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

    cfg = care_config("YX", unet_filters=4, residual_sigma=2.5, precision="float32", patch_size=(32, 32),
                      n_channel_in=2, n_channel_out=2, residual_affine=((1.5, 0.25), (0.5, -0.1)))
    model = cc.create_model(cfg)
    rng = np.random.default_rng(3)
    model.keras_model.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) if w.ndim > 1 else w
                                   for w in model.keras_model.get_weights()])
    plain = build_plain_unet(cfg, care_conv_weights(model))
    x = rng.random((1, 64, 48, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(plain.predict_on_batch(x)),
                               np.asarray(model.keras_model.predict_on_batch(x)), rtol=1e-4, atol=1e-4)


def test_auto_sigma_fits_the_noise(tmp_path):
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
    # the base's gain and offset: fitted on the training patches, and kept by a saved model
    (gain, offset), = model.config.residual_affine
    assert (gain, offset) == fit_base_affine(noisy[:48, :32, :32], clean[:48, :32, :32], model.config.residual_sigma)[0]
    assert model.keras_model.get_layer("base_affine").affine == [[gain, offset]]   # the network applies it
    model.save(tmp_path / "m")
    assert cc.load_model(tmp_path / "m").config.residual_affine == ((gain, offset),)
    # a gain and offset given are kept: ((1, 0),) trains on the smoothed input as it is
    kept = cc.create_model(cfg.replace(residual_affine=((1.0, 0.0),)))
    kept.train((noisy[:48, :32, :32], clean[:48, :32, :32], noisy[48:, :32, :32], clean[48:, :32, :32]),
               epochs=1, steps_per_epoch=1)
    assert kept.config.residual_sigma >= 3 and kept.config.residual_affine == ((1.0, 0.0),)


def test_fitted_gain_and_offset():
    """The least-squares gain and offset per channel from the smoothed input to the targets: exact for
    targets that are an affine map of the smoothed input, and gain 1 for a flat channel."""
    rng = np.random.default_rng(5)
    x = rng.random((8, 32, 32, 2)).astype(np.float32)
    smooth = gaussian_filter(x, (0, 2, 2, 0), mode="constant", truncate=3.0)
    y = np.stack([1.8 * smooth[..., 0] - 0.4, 0.5 * smooth[..., 1] + 0.2], -1)
    (g0, o0), (g1, o1) = fit_base_affine(x, y, 2.0)
    assert (g0, o0, g1, o1) == pytest.approx((1.8, -0.4, 0.5, 0.2), abs=1e-4)
    flat = np.full((4, 16, 16, 1), 0.3, np.float32)
    flat[0, 0, 0] += 1e-5   # nearly flat: treated as flat (a fit would give gain 0 here)
    (g, o), = fit_base_affine(flat, np.full_like(flat, 0.4), 0.0)
    assert g == 1.0 and o == pytest.approx(0.1, abs=1e-6)


def test_residual_sigma_is_validated():
    with pytest.raises(CareError, match="residual_sigma"):
        care_config("YX", residual_sigma=-1)
    with pytest.raises(CareError, match="residual_sigma"):
        care_config("YX", residual_sigma="wide")
    with pytest.raises(CareError, match="residual_sigma and residual"):
        care_config("YX", residual_sigma=2.0, residual=False)
    for bad in (((1.0, 0.0), (1.0, 0.0)), ((np.nan, 0.0),), ((1.0,),), "wide"):
        with pytest.raises(CareError, match="residual_affine: "):
            care_config("YX", residual_affine=bad)
    with pytest.raises(CareError, match="residual_affine and residual"):
        care_config("YX", residual=False, residual_affine=((2.0, 0.0),))
    # saved only when set (older carecore reads the rest), and read back
    assert "residual_affine" not in care_config("YX").to_dict()
    c = care_config("YX", n_channel_in=2, n_channel_out=2, residual_affine=((2.0, -0.5), (1.0, 0.25)))
    assert CareConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c

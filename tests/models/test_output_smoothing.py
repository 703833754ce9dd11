"""The restoration's output smoothing (``output_sigma``, issue 16): the filter keeps flat images flat
up to their borders, ``"auto"`` picks a sigma only where the validation patches ask for one, prediction
applies it identically at any tiling, staged or not, with or without the views' mean, and training
chooses it, records it and saves it."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import carecore as cc
from carecore import CareError
from carecore.models.config import care_config
from carecore.prediction.smoothing import OUTPUT_SIGMAS, choose_output_sigma, smooth


def test_smoothing_keeps_a_flat_image_flat_to_its_borders_and_equals_a_gaussian_inside():
    x = np.full((2, 20, 30, 1), 3.0, np.float32)
    np.testing.assert_allclose(smooth(x, 2.0), x, rtol=1e-6)   # zeros beyond the border would darken it
    z = np.random.default_rng(0).random((1, 12, 30, 34, 2)).astype(np.float32)
    got = smooth(z, 1.5, n_channels=1)
    want = gaussian_filter(z[..., :1], (0, 1.5, 1.5, 1.5, 0), truncate=3.0)
    r = 5   # beyond 3 sigma of every border, the taps all fall inside
    np.testing.assert_allclose(got[:, r:-r, r:-r, r:-r, :1], want[:, r:-r, r:-r, r:-r], atol=1e-6)
    assert not np.allclose(got[..., :1], z[..., :1], atol=1e-2)
    np.testing.assert_array_equal(got[..., 1], z[..., 1])   # a probabilistic model's scale is left alone
    with pytest.raises(CareError, match="batch"):
        smooth(np.zeros((8, 8), np.float32), 1.0)


def test_auto_chooses_smoothing_only_where_it_brings_the_validation_closer():
    rng = np.random.default_rng(0)
    truth = np.zeros((4, 48, 48, 1), np.float32)
    truth[:, 12:36, 10:30] = 1.0
    truth = gaussian_filter(truth, (0, 3, 3, 0))
    grainy = truth + rng.normal(0, 0.1, truth.shape).astype(np.float32)
    sigma, table = choose_output_sigma(grainy, truth)
    assert sigma > 0 and table[sigma] < 0.5 * table[0.0] and set(table) == set(OUTPUT_SIGMAS)
    sharp = truth.copy()
    sharp[:, ::4] += 0.3   # detail the truth has: any smoothing takes some of it away
    assert choose_output_sigma(sharp, sharp)[0] == 0.0
    with pytest.raises(CareError, match="differ"):
        choose_output_sigma(grainy[:2], truth)


def test_config_accepts_a_sigma_or_auto_and_names_the_problem():
    assert care_config("YX", output_sigma=1.5).output_sigma == 1.5
    assert care_config("YX", time_limit=180).output_sigma == "auto"   # the fast denoising recipe
    assert care_config("YX").output_sigma == 0.0
    for bad in (-1, 100, "wide", True):
        with pytest.raises(CareError, match="output_sigma"):
            care_config("YX", output_sigma=bad)
    # the kinds that do not smooth (smooths_output False) take 0 and refuse any other value, "auto" too
    for kind, axes, kw in (("projection", "ZYX", {"residual": False}), ("isotropic", "YX", {"upsampling_factor": 4})):
        assert care_config(axes, kind=kind, output_sigma=0, **kw).output_sigma == 0
        for sigma in (1.0, "auto"):
            with pytest.raises(CareError, match=f"output_sigma: {kind} models do not smooth .*set output_sigma=0"):
                care_config(axes, kind=kind, output_sigma=sigma, **kw)


@pytest.mark.parametrize("axes,shape,n_tiles", [("YX", (150, 123), (3, 2)), ("ZYX", (20, 70, 52), (2, 1, 3))])
def test_prediction_smooths_the_whole_image_the_same_at_any_tiling(axes, shape, n_tiles):
    """Sizes not divisible by the network's divisor: the smoothing stops at the image's end, not at the
    padding past it, so a tiled prediction (each tile smoothed with its halo) is the untiled one smoothed."""
    cfg = care_config(axes, quick=True, precision="float32", probabilistic=True)
    plain = cc.CARE(cfg)
    smoothed = cc.CARE(cfg.replace(output_sigma=2.0))
    smoothed.keras_model.set_weights(plain.keras_model.get_weights())
    assert smoothed._halo() == plain._halo() + 6
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    mean, scale = plain.predict(x, axes=axes, n_tiles=(1,) * len(axes))
    want = smooth(mean[None, ..., None], 2.0)[0, ..., 0]
    for tiles in ((1,) * len(axes), n_tiles):
        got_mean, got_scale = smoothed.predict(x, axes=axes, n_tiles=tiles)
        np.testing.assert_allclose(got_mean, want, atol=1e-5 * float(np.ptp(want)))
        np.testing.assert_allclose(got_scale, scale, atol=1e-5 * float(np.ptp(scale)))
    if axes == "ZYX":   # staged prediction, and the views' mean, smoothed the same way
        staged = smoothed.predict(x, axes=axes, n_tiles=(1, 2, 1), stage_tiles=(1, 2, 2))[0]
        np.testing.assert_allclose(staged, want, atol=1e-4 * float(np.ptp(want)))
    views = plain.predict(x, axes=axes, tta=True)[0]
    np.testing.assert_allclose(smoothed.predict(x, axes=axes, tta=True, n_tiles=n_tiles)[0],
                               smooth(views[None, ..., None], 2.0)[0, ..., 0], atol=1e-5 * float(np.ptp(views)))


def test_a_per_call_sigma_overrides_the_models_own_at_any_tiling():
    """``predict(output_sigma=...)`` smooths as a model configured with that sigma does, tiles' overlap
    included (a sigma wider than the model's needs a wider halo: 18 px more for 6), staged or not, with or
    without the views' mean; 0 shows the network's output; the model itself is unchanged."""
    cfg = care_config("YX", quick=True, precision="float32")
    plain = cc.CARE(cfg)
    smoothed = cc.CARE(cfg.replace(output_sigma=6.0))
    smoothed.keras_model.set_weights(plain.keras_model.get_weights())
    x = np.random.default_rng(1).random((150, 123)).astype(np.float32)
    raw = plain.predict(x, axes="YX")
    want = smoothed.predict(x, axes="YX")
    assert np.abs(want - raw).max() > 0.05 * float(np.ptp(raw))   # the smoothing is visible
    assert plain.tile_plan(x.shape, (3, 2), output_sigma=6.0).halo == smoothed.tile_plan(x.shape, (3, 2)).halo
    for tiles in ((1, 1), (3, 2)):
        np.testing.assert_allclose(plain.predict(x, axes="YX", n_tiles=tiles, output_sigma=6.0), want,
                                   atol=1e-5 * float(np.ptp(want)))
        np.testing.assert_allclose(smoothed.predict(x, axes="YX", n_tiles=tiles, output_sigma=0), raw,
                                   atol=1e-5 * float(np.ptp(raw)))
    np.testing.assert_allclose(plain.predict(x, axes="YX", n_tiles=(3, 2), tta=True, output_sigma=6.0),
                               smoothed.predict(x, axes="YX", tta=True), atol=1e-5 * float(np.ptp(want)))
    assert smoothed.output_sigma == 6.0 and plain.output_sigma == 0.0   # the calls changed neither model
    for bad in (-1, 100, "wide", True, float("nan")):
        with pytest.raises(CareError, match="output_sigma: must be a number of pixels"):
            plain.predict(x, axes="YX", output_sigma=bad)
    cfg3 = care_config("ZYX", quick=True, precision="float32")
    plain3 = cc.CARE(cfg3)
    smoothed3 = cc.CARE(cfg3.replace(output_sigma=3.0))
    smoothed3.keras_model.set_weights(plain3.keras_model.get_weights())
    z = np.random.default_rng(2).random((20, 70, 52)).astype(np.float32)
    want3 = smoothed3.predict(z, axes="ZYX")
    staged = plain3.predict(z, axes="ZYX", n_tiles=(1, 2, 1), stage_tiles=(1, 2, 2), output_sigma=3.0)
    np.testing.assert_allclose(staged, want3, atol=1e-4 * float(np.ptp(want3)))


def test_training_chooses_the_sigma_records_and_saves_it(smooth_pairs, tmp_path):
    X, Y, Xv, Yv = smooth_pairs(32, 16)
    cfg = care_config("YX", quick=True, precision="float32", patch_size=(32, 32), output_sigma="auto",
                      epochs=2, steps_per_epoch=10)
    model = cc.create_model(cfg, tmp_path / "m")
    model.train((X, Y, Xv, Yv))
    chosen = model.config.output_sigma
    card = model.run_card["output_smoothing"]
    assert chosen in OUTPUT_SIGMAS and card["sigma"] == chosen and card["auto"] and card["patches"] == 16
    assert min(card["val_rmse"].values()) == card["val_rmse"][f"{chosen:g}"]
    loaded = cc.load_model(tmp_path / "m")
    assert loaded.config.output_sigma == chosen
    x = Xv[0, ..., 0]
    np.testing.assert_allclose(loaded.predict(x, axes="YX"), model.predict(x, axes="YX"), atol=1e-5)
    # a resumed run chooses again for its new weights
    model.train((X, Y, Xv, Yv), epochs=1)
    assert model.run_card["output_smoothing"]["auto"] and model.config.output_sigma in OUTPUT_SIGMAS

"""A probabilistic network's mean learns as the plain network's (MAE); its scale's head is fitted to the
training patches at the end with the mean held fixed (``losses.laplace_split``, ``uncertainty.scale_head``)."""
import numpy as np
from scipy.ndimage import gaussian_filter

import carecore as cc
from carecore.models.config import care_config


def test_the_mean_learns_as_a_plain_network_and_the_scale_is_fitted_to_the_errors(smooth_pairs):
    """The mean of a probabilistic network equals, to the last bit, a plain network's trained from the same
    seed (the scale's loss reaches neither the mean nor the features), and on held-out pairs its scale is
    the size of its errors (a Laplace scale is the mean absolute error): before the fit the head, trained
    for these 20 steps alongside, gave scales ~10x too wide."""
    data = smooth_pairs(12, 4)
    out, models = {}, {}
    for prob in (False, True):
        m = models[prob] = cc.CARE(care_config("YX", quick=True, epochs=2, steps_per_epoch=10, residual_sigma=1.0,
                                               precision="float32", seed=4, probabilistic=prob))
        m.train(data)
        out[prob] = np.asarray(m.keras_model.predict_on_batch(data[2]), np.float32)
    assert out[True].shape[-1] == 2 and out[False].shape[-1] == 1
    np.testing.assert_array_equal(out[True][..., :1], out[False])
    fit = models[True].run_card["scale_head_fit"]
    assert fit["nll_after"] < fit["nll_before"] - 0.5, fit
    err, scale = np.abs(data[3] - out[True][..., :1]), out[True][..., 1:]
    assert 0.7 < err.mean() / scale.mean() < 1.4, (err.mean(), scale.mean())
    # where the errors are larger, so are the scales (the head reads the features, not a constant)
    assert np.corrcoef(gaussian_filter(err, (0, 3, 3, 0)).ravel(), scale.ravel())[0, 1] > 0.25   # 0.37; unfitted 0.21


def test_the_saved_best_and_last_weights_carry_a_fitted_scale_also_after_resuming(smooth_pairs, tmp_path):
    """Both weight files of the folder hold a fitted head (an export or a load of "last" gives intervals of
    the errors' size), the best weights are chosen by the mean's validation MAE, and a resumed run fits
    again."""
    data = smooth_pairs(12, 4)
    config = care_config("YX", quick=True, epochs=2, steps_per_epoch=10, residual_sigma=1.0, precision="float32",
                         seed=5, probabilistic=True)
    model = cc.CARE(config, tmp_path / "m")
    model.train(data)
    model.best_val_loss = -1.0   # no epoch of the resumed run beats it: the last weights are not the best
    model.train(data, epochs=3)
    assert model.run_card["scale_head_fit"]["nll_after"] <= model.run_card["scale_head_fit"]["nll_before"]
    assert "resumed" in model.run_card and model.run_card["best_by"] == "val_laplace_mae"
    assert "error" not in model.run_card["scale_head_fit"], model.run_card["scale_head_fit"]
    for weights in ("best", "last"):
        out = np.asarray(cc.CARE.load(tmp_path / "m", weights=weights).keras_model.predict_on_batch(data[2]))
        ratio = np.abs(data[3] - out[..., :1]).mean() / out[..., 1:].mean()
        assert 0.7 < ratio < 1.4, (weights, ratio)

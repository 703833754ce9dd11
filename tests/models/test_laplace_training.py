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

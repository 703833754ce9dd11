import numpy as np
import pytest

from carecore import CareError, compute_percentiles, denormalize, percentile_normalize


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("axes,shape", [("YX", (40, 50)), ("ZYX", (4, 40, 50)), ("CYX", (3, 40, 50)),
                                        ("ZYXC", (4, 20, 30, 2))])
def test_round_trip(dtype, axes, shape):
    x = (np.random.default_rng(0).random(shape) * 250).astype(dtype)
    y, norm = percentile_normalize(x, axes=axes)
    assert y.dtype == np.float32
    back = denormalize(y, norm, axes=axes)
    np.testing.assert_allclose(back, x.astype(np.float32), rtol=1e-5, atol=1e-3)
    # each channel's percentiles map to 0 and 1
    yc = np.moveaxis(y, axes.index("C"), 0) if "C" in axes else y[None]
    for c in yc:
        assert np.percentile(c, 2) == pytest.approx(0, abs=1e-2) and np.percentile(c, 99.8) == pytest.approx(1, abs=1e-2)


def test_per_channel():
    x = np.stack([np.linspace(0, 1, 1000), np.linspace(100, 500, 1000)]).reshape(2, 10, 100)
    y, norm = percentile_normalize(x, 0, 100, axes="CYX")
    assert norm.lo == pytest.approx((0, 100)) and norm.hi == pytest.approx((1, 500))
    assert y[0].min() == pytest.approx(0) and y[1].max() == pytest.approx(1)


def test_constant_and_nan_images_are_errors():
    with pytest.raises(CareError, match="constant \\(all values 7"):
        percentile_normalize(np.full((10, 10), 7.0), axes="YX")
    x = np.random.default_rng(0).random((10, 10))
    x[3, 3] = np.nan
    with pytest.raises(CareError, match="1 NaN"):
        percentile_normalize(x, axes="YX", name="img.tif")
    with pytest.raises(CareError, match="channel 1.*constant"):
        compute_percentiles(np.stack([np.arange(100.0).reshape(10, 10), np.ones((10, 10))]), axes="CYX")


def test_nearly_constant_image_never_explodes():
    x = np.zeros((100, 100))
    x[0, 0] = 1.0  # percentiles 2 and 99.8 are both 0
    with pytest.raises(CareError, match="nearly constant"):
        percentile_normalize(x, axes="YX")


def test_bad_percentiles():
    with pytest.raises(CareError, match="0 <= p_lo < p_hi <= 100"):
        percentile_normalize(np.random.rand(4, 4), 99, 2, axes="YX")

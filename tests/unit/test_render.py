"""Display helpers: the line profile's default row."""
import numpy as np
import pytest

from carecore.render import profile_row


def test_profile_row_crosses_the_brightest_structure_not_a_hot_pixel():
    rng = np.random.default_rng(0)
    plane = rng.normal(0, 0.1, (96, 80)).astype(np.float32)
    plane[70:76, 20:40] += 3.0          # a nucleus
    plane[10, 60] = 12.0                 # one hot pixel, brighter than it
    assert 70 <= profile_row(plane) < 76
    assert profile_row(plane, sigma=0) == 10   # (unsmoothed: the hot pixel)
    assert profile_row(np.full((9, 5), 3.0)) == 4   # flat: the middle row
    with pytest.raises(ValueError, match=r"2D plane \(YX\), got shape \(2, 9, 5\)"):
        profile_row(np.zeros((2, 9, 5)))

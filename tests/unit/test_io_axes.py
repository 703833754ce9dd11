import numpy as np
import pytest
import tifffile

from carecore import CareError, check_axes, move_axes, read_image, write_image


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape,axes", [((20, 30), "YX"), ((5, 20, 30), "ZYX"), ((2, 5, 20, 30), "CZYX"),
                                        ((5, 3, 20, 30), "ZCYX")])
def test_write_read_round_trip(tmp_path, dtype, shape, axes):
    data = (np.random.default_rng(1).random(shape) * 200).astype(dtype)
    p = write_image(tmp_path / "a.tif", data, axes=axes, spacing={"Z": 2.0, "Y": 0.5, "X": 0.5})
    img = read_image(p)
    assert img.axes == axes and not img.axes_guessed
    assert img.data.dtype == dtype
    np.testing.assert_array_equal(img.data, data)
    assert img.spacing["X"] == pytest.approx(0.5)
    if "Z" in axes:
        assert img.spacing["Z"] == pytest.approx(2.0)


def test_imagej_file_and_override(shared_data):
    img = read_image(shared_data / "morpholibj_arabidopsis_embryo_106x112x109.tif")
    assert img.axes == "ZYX" and img.shape == (106, 112, 109) and img.data.dtype == np.uint8
    img2 = read_image(shared_data / "bian_BPAE_actin_680x1100.tif")
    assert img2.axes == "YX" and img2.data.dtype == np.float32


def test_imagej_hyperstack_axes_and_spacing(tmp_path):
    data = np.zeros((4, 2, 8, 9), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 3.0, "unit": "um"})
    img = read_image(tmp_path / "ij.tif")
    assert img.axes == "ZCYX" and img.spacing["Z"] == 3.0 and img.spacing["X"] == pytest.approx(0.5)


def test_plain_tiff_axes_guessed_and_override(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((3, 8, 9), np.float32), photometric="minisblack")
    img = read_image(tmp_path / "plain.tif")
    assert img.axes == "ZYX" and img.axes_guessed
    assert read_image(tmp_path / "plain.tif", axes="CYX").axes == "CYX"


def test_same_pixels_same_bytes(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    write_image(tmp_path / "a.tif", data, axes="ZYX")
    write_image(tmp_path / "b.tif", data, axes="ZYX")
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"this is not a tiff at all", "not a readable TIFF"),
                                           (b"II*\x00\x08\x00\x00\x00\x99\x99", "TIFF|read")])
def test_bad_files(tmp_path, content, match):
    p = tmp_path / "bad.tif"
    p.write_bytes(content)
    with pytest.raises(CareError, match=match) as e:
        read_image(p)
    assert "bad.tif" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(CareError, match="no such file"):
        read_image(tmp_path / "nope.tif")


@pytest.mark.parametrize("axes,match", [("YX", "2 letters but the image of shape \\(3, 8, 9\\) has 3"),
                                        ("YQ", "unknown letter"), ("YY", "repeat"), ("ZY", "must contain both")])
def test_bad_axes(tmp_path, axes, match):
    write_image(tmp_path / "a.tif", np.zeros((3, 8, 9), np.float32), axes="ZYX")
    with pytest.raises(CareError, match=match) as e:
        read_image(tmp_path / "a.tif", axes=axes)
    assert "a.tif" in str(e.value)


def test_an_image_object_given_for_an_array_is_told(tmp_path):
    """A carecore.Image where an array is asked (a user trial was told "cannot guess axes for an array with 0
    dimensions; give axes explicitly", with axes given): its .data and .axes are named."""
    import carecore as cc

    write_image(tmp_path / "a.tif", np.ones((8, 9), np.float32), axes="YX")
    image = read_image(tmp_path / "a.tif")
    with pytest.raises(CareError, match=r"image: not an image array \(0 dimensions\): .*its \.data, with axes=its \.axes"):
        cc.evaluate(image, image.data, axes="YX")


def test_write_is_atomic_and_checks_range(tmp_path):
    with pytest.raises(CareError, match="do not fit in uint8"):
        write_image(tmp_path / "a.tif", np.array([[0, 300]], float), axes="YX", dtype=np.uint8)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CareError, match="3 letters"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4)), axes="ZYX")
    assert list(tmp_path.iterdir()) == []


def test_move_axes():
    x = np.zeros((2, 5, 6, 7))
    assert move_axes(x, "CZYX", "ZYXC").shape == (5, 6, 7, 2)
    assert move_axes(np.zeros((6, 7)), "YX", "ZYXC").shape == (1, 6, 7, 1)
    with pytest.raises(CareError, match="cannot drop axis 'C' of size 2"):
        move_axes(x, "CZYX", "ZYX")
    assert check_axes("zyx", 3) == "ZYX"


def test_a_one_channel_truth_saved_without_c_gets_the_restorations_c():
    """A ground truth saved without C gets the C of a one-channel restoration, at its place there and in
    the restoration's order of axes (the QC report and the app's Restore step both compare such pairs)."""
    from carecore.axes import with_channel_of

    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    y, axes = with_channel_of(x, "ZYX", "TZCYX")
    assert axes == "ZCYX" and y.shape == (2, 1, 3, 4) and np.array_equal(y[:, 0], x)
    y, axes = with_channel_of(x, "ZXY", "CZYX")   # brought into the restoration's order
    assert axes == "CZYX" and np.array_equal(y[0], x.transpose(0, 2, 1))
    # left as they are, for the caller's shape check to say what does not match: a truth with C, a
    # restoration without C, a truth with an axis the restoration lacks
    for axes_in, out in (("CYX", "CYX"), ("ZYX", "ZYX"), ("ZYX", "CYX")):
        y, axes = with_channel_of(x, axes_in, out)
        assert y is x and axes == axes_in
    # a lazy truth (an OME-Zarr's Dask array) stays lazy: a time-lapse's frames are read one at a time
    import dask.array as da

    y, axes = with_channel_of(da.from_array(x, chunks=1), "TYX", "TCYX")
    assert isinstance(y, da.Array) and axes == "TCYX" and np.array_equal(y.compute()[:, 0], x)


def test_folder_swap_survives_a_crash_between_the_renames(tmp_path, monkeypatch):
    """Atomic saving (trust issue, item 9): unique temporary folders; a crash between the two renames
    leaves the old folder aside, and the loader puts it back."""
    import os

    from carecore import _atomic

    target = tmp_path / "model"
    target.mkdir()
    (target / "a.txt").write_text("old")
    (target / "manifest.json").write_text("{}")   # a model folder carecore wrote
    t1, t2 = _atomic.fresh_tmp(target), _atomic.fresh_tmp(target)
    assert t1 != t2 and t1.exists() and t2.exists()   # two writers never share (or delete) a folder
    (t1 / "a.txt").write_text("new")
    calls = []
    real = os.replace

    def crash_on_second(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError("power cut")
        return real(a, b)

    monkeypatch.setattr(_atomic.os, "replace", crash_on_second)
    with pytest.raises(OSError, match="power cut"):
        _atomic.swap_in(t1, target, _atomic.MODEL_FOLDER)
    monkeypatch.setattr(_atomic.os, "replace", real)
    assert not target.exists()
    assert not _atomic.recover(target)   # too young: it may be a live writer's
    assert _atomic.recover(target, min_age=0) and (target / "a.txt").read_text() == "old"
    _atomic.swap_in(t2, target, _atomic.MODEL_FOLDER)   # the other writer's folder is still intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [t1.name, "model"]


def test_axes_given_in_another_order_than_the_file_records_are_warned_about(tmp_path):
    """A YXZ stack read with axes ZYX would relabel its dimensions without moving the pixels: told. The
    same axes, added size-1 axes, and overriding guessed axes stay silent."""
    import warnings

    from carecore import CareWarning

    data = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    write_image(tmp_path / "yxz.tif", data, axes="YXZ")
    with pytest.warns(CareWarning, match=r"yxz.tif: the file records its axes as 'YXZ'.*the axes given, 'ZYX', are "
                                         r"the same letters in another order.*its Y is read as Z"):
        img = read_image(tmp_path / "yxz.tif", axes="ZYX")
    assert img.axes == "ZYX" and img.shape == (6, 5, 4)   # relabelled (warned), as asked
    tifffile.imwrite(tmp_path / "plain.tif", data, photometric="minisblack")   # guessed ZYX: overridden silently
    write_image(tmp_path / "zarr.ome.zarr", data, axes="YXZ")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CareWarning)
        assert read_image(tmp_path / "plain.tif").axes_guessed
        read_image(tmp_path / "plain.tif", axes="YXZ")
        read_image(tmp_path / "yxz.tif", axes="YXZ")
        read_image(tmp_path / "yxz.tif", axes="CYXZ")   # a size-1 axis added
    with pytest.warns(CareWarning, match="zarr.ome.zarr: the file records its axes as 'ZYX'"):   # NGFF: Z first
        read_image(tmp_path / "zarr.ome.zarr", axes="YXZ")

"""TIFF layouts, units, permissions and output checks of carecore.io (user trial: channel-last images,
RGB and channel-last plain TIFFs, one-slice ImageJ stacks, nm calibrations, files on a shared server,
output paths that could never be written)."""
import os
import stat

import numpy as np
import pytest
import tifffile

from carecore import CareError, read_image, write_image
from carecore import _atomic
from carecore.io import check_writable, peek_axes, unit_to_um


def _data(shape, dtype=np.uint16):
    return (np.random.default_rng(7).random(shape) * 1000).astype(dtype)


# 1. any axes order is written and read back with the same axes and pixels ------------------------------

@pytest.mark.parametrize("axes,shape", [
    ("YXC", (12, 13, 2)), ("YXC", (12, 13, 3)), ("YXC", (12, 13, 4)), ("YXC", (12, 13, 5)),
    ("ZYXC", (3, 12, 13, 2)), ("CYX", (2, 12, 13)), ("CYX", (3, 12, 13)), ("CZYX", (2, 3, 12, 13)),
    ("TZYX", (2, 3, 12, 13)), ("ZCYX", (3, 2, 12, 13)), ("TCZYX", (2, 2, 3, 12, 13)), ("YCX", (12, 2, 13)),
    ("XY", (12, 13)), ("SYX", (3, 12, 13)), ("SCYX", (2, 3, 12, 13)), ("STCZYX", (2, 2, 2, 2, 12, 13)),
    ("CZYX", (1, 3, 12, 13)), ("TZYX", (1, 1, 12, 13)), ("ZYXC", (1, 12, 13, 1)), ("SYX", (1, 12, 13)),
])
def test_any_axes_order_round_trips(tmp_path, axes, shape):
    """Back in the order given; axes of size 1 (but Y and X) dropped as in any file read, put back by axes=."""
    data = _data(shape)
    p = write_image(tmp_path / "a.tif", data, axes=axes, spacing={"Z": 2.0, "Y": 0.5, "X": 0.25})
    kept = "".join(a for a, n in zip(axes, shape) if n != 1 or a in "YX")
    squeezed = tuple(n for a, n in zip(axes, shape) if n != 1 or a in "YX")
    for mmap in (False, True):
        img = read_image(p, mmap=mmap)
        assert (img.axes, img.shape, img.axes_guessed) == (kept, squeezed, False)
        np.testing.assert_array_equal(img.data, data.reshape(squeezed))
        again = read_image(p, axes=axes, mmap=mmap)
        assert (again.axes, again.shape) == (axes, shape)
        np.testing.assert_array_equal(again.data, data)
    assert peek_axes(p) == (kept, squeezed, False)
    assert img.spacing["X"] == pytest.approx(0.25) and img.spacing["Y"] == pytest.approx(0.5)
    with tifffile.TiffFile(p) as tif:   # a proper OME-TIFF: Y and X last, grey planes
        assert tif.is_ome and tif.series[0].axes.endswith("YX")
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK


def test_channel_last_is_stored_as_ome_channels(tmp_path):
    data = _data((12, 13, 2))
    write_image(tmp_path / "a.tif", data, axes="YXC")
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:   # what Fiji/Bio-Formats see: two channels
        assert tif.series[0].axes == "CYX"
        np.testing.assert_array_equal(tif.series[0].asarray(), np.moveaxis(data, -1, 0))


def test_channel_last_same_pixels_same_bytes(tmp_path):
    data = _data((12, 13, 2))
    write_image(tmp_path / "a.tif", data, axes="YXC")
    write_image(tmp_path / "b.tif", data, axes="YXC")
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


# 2. RGB and channel-last plain TIFF files --------------------------------------------------------------

def test_rgb_camera_tiff_is_yxc(tmp_path):
    data = _data((100, 120, 3), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb", metadata=None)
    with tifffile.TiffFile(tmp_path / "rgb.tif") as tif:
        assert tif.series[0].axes == "YXS" and not tif.is_shaped
    img = read_image(tmp_path / "rgb.tif")
    assert (img.axes, img.shape, img.axes_guessed) == ("YXC", (100, 120, 3), False)
    np.testing.assert_array_equal(img.data, data)
    assert peek_axes(tmp_path / "rgb.tif") == ("YXC", (100, 120, 3), False)


def test_two_channel_last_plain_tiff_is_yxc(tmp_path):
    data = _data((34, 55, 2))
    tifffile.imwrite(tmp_path / "c2.tif", data, photometric="minisblack", planarconfig="contig",
                     extrasamples=["unspecified"], metadata=None)
    img = read_image(tmp_path / "c2.tif")
    assert (img.axes, img.shape, img.axes_guessed) == ("YXC", (34, 55, 2), False)
    np.testing.assert_array_equal(img.data, data)


def test_planar_samples_are_channels_and_shaped_axes_are_used(tmp_path):
    tifffile.imwrite(tmp_path / "planar.tif", _data((3, 10, 12), np.uint8), photometric="rgb",
                     planarconfig="separate", metadata=None)
    assert read_image(tmp_path / "planar.tif").axes == "CYX"
    tifffile.imwrite(tmp_path / "shaped.tif", _data((10, 12, 4)), photometric="minisblack",
                     metadata={"axes": "YXC"})
    img = read_image(tmp_path / "shaped.tif")
    assert (img.axes, img.shape, img.axes_guessed) == ("YXC", (10, 12, 4), False)


def test_plain_stack_without_axes_is_still_guessed(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", _data((1, 3, 8, 9)), photometric="minisblack")
    img = read_image(tmp_path / "plain.tif")
    assert (img.axes, img.shape, img.axes_guessed) == ("ZYX", (3, 8, 9), True)
    assert peek_axes(tmp_path / "plain.tif") == ("ZYX", (3, 8, 9), True)
    assert read_image(tmp_path / "plain.tif", axes="TZYX").shape == (1, 3, 8, 9)
    assert read_image(tmp_path / "plain.tif", axes="CYX").shape == (3, 8, 9)


def test_imagej_rgb_keeps_its_axes(tmp_path):
    tifffile.imwrite(tmp_path / "ij.tif", _data((4, 8, 9, 3), np.uint8), imagej=True, photometric="rgb",
                     metadata={"axes": "ZYXS"})
    assert read_image(tmp_path / "ij.tif").axes == "ZYXC"


# 3. a one-slice stack read with the axes it was saved with ----------------------------------------------

def test_one_slice_imagej_stack_read_as_zyx(tmp_path):
    data = _data((1, 112, 109), np.uint8)
    tifffile.imwrite(tmp_path / "one.tif", data, imagej=True, metadata={"axes": "ZYX"})
    assert read_image(tmp_path / "one.tif").axes == "YX"
    img = read_image(tmp_path / "one.tif", axes="ZYX")
    assert (img.axes, img.shape) == ("ZYX", (1, 112, 109))
    np.testing.assert_array_equal(img.data, data)
    assert read_image(tmp_path / "one.tif", axes="YXC").shape == (112, 109, 1)
    assert read_image(tmp_path / "one.tif", axes="TCZYX").shape == (1, 1, 1, 112, 109)


def test_one_slice_imagej_hyperstack_adds_only_missing_axes(tmp_path):
    data = _data((1, 2, 8, 9))
    tifffile.imwrite(tmp_path / "one.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    img = read_image(tmp_path / "one.tif", axes="ZCYX")
    assert (img.axes, img.shape) == ("ZCYX", (1, 2, 8, 9))
    assert read_image(tmp_path / "one.tif", axes="TZCYX").shape == (1, 1, 2, 8, 9)
    with pytest.raises(CareError, match=r"one\.tif: axes 'ZTYX' have 4 letters but the image of shape "
                                        r"\(2, 8, 9\) has 3 dimensions \(the file's axes are 'CYX'\)"):
        read_image(tmp_path / "one.tif", axes="ZTYX")   # two letters the file lacks, for one added axis


def test_added_axes_without_metadata_are_leading_and_not_y_or_x(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 8, 9), np.float32), photometric="minisblack")
    assert read_image(tmp_path / "a.tif", axes="TZYX").shape == (1, 3, 8, 9)
    with pytest.raises(CareError, match="a.tif: axes 'YXZC' have 4 letters but the image of shape"):
        read_image(tmp_path / "a.tif", axes="YXZC")


# 4. length units ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("unit,factor", [("nm", 1e-3), ("um", 1.0), ("micron", 1.0),
                                         ("\\u00B5m", 1.0), ("mm", 1e3)])
def test_imagej_units_are_converted_to_micrometres(tmp_path, unit, factor):
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((3, 8, 9), np.uint8), imagej=True,
                     resolution=(1 / 50.0, 1 / 40.0), metadata={"axes": "ZYX", "spacing": 500, "unit": unit})
    img = read_image(tmp_path / "ij.tif")
    assert img.spacing["Z"] == pytest.approx(500 * factor)
    assert img.spacing["X"] == pytest.approx(50 * factor) and img.spacing["Y"] == pytest.approx(40 * factor)
    write_image(tmp_path / "back.tif", img.data, axes=img.axes, spacing=img.spacing)
    assert read_image(tmp_path / "back.tif").spacing["Z"] == pytest.approx(500 * factor)


def test_imagej_pixel_unit_is_no_spacing(tmp_path):
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((3, 8, 9), np.uint8), imagej=True,
                     metadata={"axes": "ZYX", "spacing": 2, "unit": "pixel"})
    assert read_image(tmp_path / "ij.tif").spacing == {}


@pytest.mark.parametrize("unit,factor", [("nm", 1e-3), ("µm", 1.0), ("mm", 1e3), (None, 1.0)])
def test_ome_units_are_converted_to_micrometres(tmp_path, unit, factor):
    md = {"axes": "ZYX", "PhysicalSizeZ": 500.0, "PhysicalSizeX": 100.0, "PhysicalSizeY": 100.0}
    if unit:
        md.update(PhysicalSizeZUnit=unit, PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit)
    tifffile.imwrite(tmp_path / "ome.tif", np.zeros((3, 8, 9), np.uint8), ome=True, metadata=md)
    img = read_image(tmp_path / "ome.tif")
    assert img.spacing == pytest.approx({"Z": 500 * factor, "Y": 100 * factor, "X": 100 * factor})


def test_unit_to_um():
    assert unit_to_um("NM") == 1e-3 and unit_to_um("\u03bcm") == 1.0 and unit_to_um("microns") == 1.0
    assert unit_to_um("pixel") is None and unit_to_um(None) is None


# 5. permissions a colleague can read --------------------------------------------------------------------

@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_image_and_folder_get_the_umask_mode(tmp_path, umask_022):
    p = write_image(tmp_path / "a.tif", np.zeros((8, 9), np.float32), axes="YX")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    tmp = _atomic.fresh_tmp(tmp_path / "model")
    assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o755
    os.replace(tmp, tmp_path / "model")
    assert stat.S_IMODE(os.stat(tmp_path / "model").st_mode) == 0o755
    os.umask(0o077)
    p = write_image(tmp_path / "b.tif", np.zeros((8, 9), np.float32), axes="YX")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


def test_written_zarr_store_gets_the_umask_mode(tmp_path, umask_022):
    p = write_image(tmp_path / "a.ome.zarr", np.zeros((8, 9), np.float32), axes="YX")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o755


# 6, 7. outputs that cannot be written are refused before the work --------------------------------------

def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "a.tif") == tmp_path / "a.tif"
    for name in ("a.TIFF", "a.ome.tif", "a.ome.tiff", "a.zarr", "a.ome.zarr"):
        check_writable(tmp_path / name)
    with pytest.raises(CareError, match=r"nope/a\.tif: cannot write the --scale-out: the folder .*nope does not"):
        check_writable(tmp_path / "nope" / "a.tif", what="--scale-out")
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(CareError, match=r"d\.tif: is a folder"):
        check_writable(tmp_path / "d.tif")
    (tmp_path / "f.zarr").write_text("")
    with pytest.raises(CareError, match=r"f\.zarr: is a file"):
        check_writable(tmp_path / "f.zarr")
    (tmp_path / "file").write_text("")
    with pytest.raises(CareError, match=r"is not a folder"):
        check_writable(tmp_path / "file" / "a.tif")


@pytest.mark.parametrize("name", ["restored.png", "restored.jpg", "restored", "restored.tif.gz"])
def test_write_image_refuses_suffixes_it_cannot_write(tmp_path, name):
    with pytest.raises(CareError) as e:
        write_image(tmp_path / name, np.zeros((8, 9), np.float32), axes="YX")
    assert name in str(e.value) and ".tif" in str(e.value) and ".ome.zarr" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_write_image_to_missing_folder_fails_before_converting(tmp_path):
    with pytest.raises(CareError, match="does not exist"):
        write_image(tmp_path / "nope" / "a.tif", np.full((8, 9), 300.0), axes="YX", dtype=np.uint8)

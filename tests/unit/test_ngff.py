"""OME-Zarr (NGFF 0.4) through read_image / write_image, carecore convert and find_pairs."""
import json

import numpy as np
import pytest
import tifffile

pytest.importorskip("zarr")

import carecore as cc  # noqa: E402
from carecore import CareError, read_image, write_image  # noqa: E402
from carecore.cli import main  # noqa: E402
from carecore.ngff import describe, read_ngff  # noqa: E402


@pytest.mark.parametrize("shape,axes,stored", [((40, 30), "YX", "YX"), ((5, 150, 130), "ZYX", "ZYX"),
                                               ((5, 2, 140, 90), "ZCYX", "CZYX"), ((3, 70, 66), "TYX", "TYX")])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_round_trip_axes_spacing_pyramid(tmp_path, shape, axes, stored, dtype):
    data = (np.random.default_rng(1).random(shape) * 200).astype(dtype)
    spacing = {"Z": 2.0, "Y": 0.5, "X": 0.25} if "Z" in axes else {"Y": 0.5, "X": 0.25}
    p = write_image(tmp_path / "a.ome.zarr", data, axes=axes, spacing=spacing)
    img = read_image(p)
    assert img.axes == stored and img.data.dtype == dtype and img.spacing == spacing
    np.testing.assert_array_equal(img.data, cc.move_axes(data, axes, stored))
    lazy = read_image(p, mmap=True)  # a dask array: nothing read yet
    assert hasattr(lazy.data, "dask") and lazy.shape == img.shape
    np.testing.assert_array_equal(np.asarray(lazy.data[..., :7]), img.data[..., :7])
    # NGFF 0.4 metadata (what Fiji's MoBIE/BigDataViewer read) and the pyramid: Y and X halved per level
    attrs = json.loads((p / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == list(stored.lower())
    assert json.loads((p / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    ny, nx = img.shape[-2:]
    levels = [d["path"] for d in ms["datasets"]]
    assert len(levels) == (1 if max(ny, nx) <= 64 else 2 if max(ny, nx) <= 128 else 3)
    for k, d in enumerate(ms["datasets"]):
        lvl = read_ngff(p, level=k)
        assert lvl.shape[-2:] == (ny // 2**k, nx // 2**k) and lvl.shape[:-2] == img.shape[:-2]
        assert d["coordinateTransformations"][0]["scale"][-1] == pytest.approx(0.25 * 2**k)
    if len(levels) > 1:  # level 1 is the mean of 2x2 blocks
        fine = img.data.astype(np.float32)[..., : ny // 2 * 2, : nx // 2 * 2]
        binned = fine.reshape(fine.shape[:-2] + (ny // 2, 2, nx // 2, 2)).mean((-3, -1))
        np.testing.assert_allclose(read_ngff(p, level=1).data, binned.round() if dtype == np.uint16 else binned,
                                   rtol=1e-6, atol=1e-4)
    # ome-zarr, the reference reader, finds one image with these axes and levels
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(p), fmt=FormatV04()))()))
    assert [a["name"] for a in node.metadata["axes"]] == list(stored.lower()) and len(node.data) == len(levels)
    assert not list(tmp_path.glob(".*"))   # written aside and swapped in: nothing left behind


def test_validates_against_the_ngff_schema(tmp_path):
    from ome_zarr_models.v04.image import ImageAttrs

    p = write_image(tmp_path / "v.ome.zarr", np.ones((4, 80, 80), np.float32), axes="ZYX", spacing={"Z": 1.0})
    ImageAttrs.model_validate(json.loads((p / ".zattrs").read_text()))


def test_extras_are_images_of_the_store(tmp_path):
    x = np.random.default_rng(0).random((3, 40, 50)).astype(np.float32)
    p = cc.write_ngff(tmp_path / "r.ome.zarr", x, axes="ZYX", extras={"scale": x / 2})
    np.testing.assert_array_equal(read_image(p).data, x)
    np.testing.assert_array_equal(read_image(p / "extras" / "scale").data, x / 2)
    assert json.loads((p / ".zattrs").read_text())["carecore"]["extras"] == ["scale"]


def test_errors_name_file_axes_and_sizes(tmp_path):
    with pytest.raises(CareError, match=r"nothing\.ome\.zarr: no such OME-Zarr folder"):
        read_image(tmp_path / "nothing.ome.zarr")
    with pytest.raises(CareError, match=r"axes 'SYX' have S \(sample\)"):
        write_image(tmp_path / "s.ome.zarr", np.zeros((2, 8, 8), np.float32), axes="SYX")
    with pytest.raises(CareError, match=r"axes 'ZYX' have 3 letters but the image of shape \(8, 8\)"):
        write_image(tmp_path / "d.ome.zarr", np.zeros((8, 8), np.float32), axes="ZYX")
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    with pytest.raises(CareError, match="plain.zarr: a Zarr group without OME-NGFF multiscales"):
        read_image(tmp_path / "plain.zarr")
    assert not list(tmp_path.glob(".*"))


def test_convert_tiff_to_zarr_and_back(tmp_path, capsys):
    data = (np.random.default_rng(2).random((6, 2, 70, 90)) * 1000).astype(np.uint16)
    write_image(tmp_path / "a.tif", data, axes="ZCYX", spacing={"Z": 1.5, "Y": 0.2, "X": 0.2})
    assert main(["convert", str(tmp_path / "a.tif"), str(tmp_path / "a.ome.zarr")]) == 0
    assert "6 x 2 x 70 x 90 ZCYX" in capsys.readouterr().out
    z = read_image(tmp_path / "a.ome.zarr")
    assert z.axes == "CZYX" and z.spacing == pytest.approx({"Z": 1.5, "Y": 0.2, "X": 0.2})
    assert main(["convert", str(tmp_path / "a.ome.zarr"), str(tmp_path / "b.tif")]) == 0
    assert "replaced" not in capsys.readouterr().out
    # an output that exists is said to be replaced, before the work (a store, then a file)
    assert main(["convert", str(tmp_path / "a.tif"), str(tmp_path / "a.ome.zarr")]) == 0
    assert f"note: {tmp_path / 'a.ome.zarr'} exists and will be replaced" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "a.ome.zarr"), str(tmp_path / "b.tif")]) == 0
    assert f"note: {tmp_path / 'b.tif'} exists and will be replaced" in capsys.readouterr().out
    back = read_image(tmp_path / "b.tif")
    assert back.axes == "CZYX" and back.data.dtype == np.uint16 and back.spacing == pytest.approx(z.spacing)
    np.testing.assert_array_equal(back.data, np.moveaxis(data, 1, 0))
    assert main(["convert", str(tmp_path / "missing.ome.zarr"), str(tmp_path / "c.tif")]) == 2
    assert "missing.ome.zarr: no such OME-Zarr folder" in capsys.readouterr().err


def test_a_time_lapse_keeps_its_frame_interval(tmp_path, capsys):
    """The frame interval (ImageJ's finterval, OME's TimeIncrement, an OME-Zarr t axis in seconds) is read
    and kept by every writer and by a restoration (it was dropped: the t scale came out 1, with no unit)."""
    from ome_zarr_models.v04.image import ImageAttrs

    data = (np.random.default_rng(3).random((3, 40, 44)) * 500).astype(np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "TYX", "finterval": 5.0})
    assert read_image(tmp_path / "ij.tif").spacing["T"] == 5.0
    assert main(["convert", str(tmp_path / "ij.tif"), str(tmp_path / "tl.ome.zarr")]) == 0
    assert "T 5 s" in capsys.readouterr().out
    attrs = json.loads((tmp_path / "tl.ome.zarr" / ".zattrs").read_text())
    ImageAttrs.model_validate(attrs)
    assert attrs["multiscales"][0]["axes"][0] == {"name": "t", "type": "time", "unit": "second"}
    assert read_image(tmp_path / "tl.ome.zarr").spacing["T"] == 5.0
    assert main(["convert", str(tmp_path / "tl.ome.zarr"), str(tmp_path / "back.tif")]) == 0
    assert read_image(tmp_path / "back.tif").spacing["T"] == 5.0
    tifffile.imwrite(tmp_path / "min.ome.tif", data, ome=True,
                     metadata={"axes": "TYX", "TimeIncrement": 0.5, "TimeIncrementUnit": "min"})
    assert read_image(tmp_path / "min.ome.tif").spacing["T"] == 30.0
    model = cc.CARE(cc.care_config("YX", quick=True), tmp_path / "m")
    model.save()
    assert main(["predict", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "ij.tif"), "--out",
                 str(tmp_path / "r.tif")]) == 0
    assert read_image(tmp_path / "r.tif").spacing["T"] == 5.0


def test_find_pairs_and_patches_read_ome_zarr(tmp_path, noisy_pair):
    for d in ("low", "high"):
        (tmp_path / d).mkdir()
    for i in range(2):
        noisy, clean = noisy_pair(i, (8, 40, 40))
        write_image(tmp_path / "low" / f"s{i}.ome.zarr", noisy, axes="ZYX")
        write_image(tmp_path / "high" / f"s{i}.ome.zarr", clean, axes="ZYX")
    write_image(tmp_path / "low" / "extra.tif", noisy, axes="ZYX")
    listing = cc.find_pairs(tmp_path / "low", tmp_path / "high")
    assert [p.name for p in listing] == ["s0.ome.zarr", "s1.ome.zarr"] and [p.name for p in listing.unmatched_low] == ["extra.tif"]
    low, high = cc.load_pair(listing.pairs[0])
    assert low.axes == "ZYX" and low.shape == high.shape == (8, 40, 40)
    ps = cc.create_patches(listing, (4, 16, 16), axes="ZYX", n_patches_per_image=4, seed=0)
    assert ps.X.shape[1:] == (4, 16, 16, 1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # ome-zarr's own default argument (Scaler)
def test_reads_ngff_05_written_by_ome_zarr(tmp_path):
    """NGFF 0.5 (Zarr v3, written by the reference library) is read with its axes and voxel size."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image as ome_write

    data = np.random.default_rng(3).random((2, 6, 64, 48)).astype(np.float32)
    root = zarr.open_group(str(tmp_path / "v5.ome.zarr"), mode="w", zarr_format=3)
    ome_write(data, root, axes=["c", "z", "y", "x"], fmt=FormatV05(), scale_factors=[2],
              scale={"c": 1.0, "z": 3.0, "y": 0.4, "x": 0.4}, axes_units={"z": "micrometer", "y": "nanometer",
                                                                        "x": "nanometer"})
    img = read_image(tmp_path / "v5.ome.zarr")
    assert img.axes == "CZYX" and img.spacing == pytest.approx({"Z": 3.0, "Y": 4e-4, "X": 4e-4})
    np.testing.assert_array_equal(img.data, data)
    assert cc.ngff.read_ngff(tmp_path / "v5.ome.zarr", level=1).shape == (2, 6, 32, 24)


def test_an_unknown_voxel_size_stays_unknown(tmp_path, capsys):
    # a TIFF that records no voxel size, through OME-Zarr and back: not "1 µm" (scale 1 with a unit would
    # claim it; a trial saw a round trip make an uncalibrated stack look calibrated and isotropic)
    data = (np.random.default_rng(3).random((4, 40, 50)) * 100).astype(np.uint16)
    tifffile.imwrite(tmp_path / "raw.tif", data, photometric="minisblack")
    assert read_image(tmp_path / "raw.tif", axes="ZYX").spacing == {}
    assert main(["convert", str(tmp_path / "raw.tif"), str(tmp_path / "raw.ome.zarr"), "--axes", "ZYX"]) == 0
    z = read_image(tmp_path / "raw.ome.zarr")
    assert z.spacing == {}, z.spacing
    axes_md = json.loads((tmp_path / "raw.ome.zarr" / ".zattrs").read_text())["multiscales"][0]["axes"]
    assert not any("unit" in a for a in axes_md), axes_md
    assert main(["convert", str(tmp_path / "raw.ome.zarr"), str(tmp_path / "back.tif")]) == 0
    assert "µm" not in capsys.readouterr().out and read_image(tmp_path / "back.tif").spacing == {}
    # a size known along Z only keeps Z's, and 1 µm given is 1 µm kept
    p = write_image(tmp_path / "z.ome.zarr", data, axes="ZYX", spacing={"Z": 1.0})
    assert read_image(p).spacing == {"Z": 1.0}
    # another writer's scale without a unit (not 1) is read as micrometres, as before
    attrs = json.loads((p / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [2.0, 0.5, 0.5]
    attrs["multiscales"][0]["axes"] = [{"name": a, "type": "space"} for a in "zyx"]
    (p / ".zattrs").write_text(json.dumps(attrs))
    assert read_image(p).spacing == {"Z": 2.0, "Y": 0.5, "X": 0.5}

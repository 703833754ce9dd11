"""bioimage.io packages run by carecore itself (``carecore predict --model PKG.zip``,
``carecore.load_bioimageio``): the package's own weights (ONNX through onnxruntime, or Keras), its
processing and its halo, tiled like a carecore model; the same restoration as carecore's model, tiled
or not; clear errors for what it cannot run; the model kinds the format can and cannot express."""
import io
import json
import sys
import warnings
import zipfile

import numpy as np
import pytest

from carecore import CareError, CareWarning, care_config, compute_percentiles, create_model
from carecore.export import export_bioimageio, load_bioimageio

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pkg2d(model2d, tmp_path_factory):
    """The 2D model as a package with its default postprocessing (scale_linear: the test image's range)."""
    model, noisy = model2d
    return export_bioimageio(model.path, tmp_path_factory.mktemp("p") / "care2d.zip", test_input=noisy,
                             weight_formats=["keras_v3", "tensorflow_saved_model_bundle", "onnx"])


@pytest.fixture
def no_bioimageio(monkeypatch):
    """bioimageio.core and bioimageio.spec made unimportable: carecore must not need them to run a package."""
    for name in [m for m in sys.modules if m == "bioimageio" or m.startswith("bioimageio.")] + ["bioimageio"]:
        monkeypatch.setitem(sys.modules, name, None)


def _rewrite(pkg, dest, change=None, drop=()):
    """A copy of package ``pkg`` with its rdf.yaml passed through ``change(rdf)`` and files ``drop`` left out."""
    with zipfile.ZipFile(pkg) as z, zipfile.ZipFile(dest, "w") as out:
        for name in z.namelist():
            if name in drop:
                continue
            data = z.read(name)
            if name == "rdf.yaml" and change is not None:
                rdf = json.loads(data)
                change(rdf)
                data = json.dumps(rdf).encode()
            out.writestr(name, data)
    return dest


def test_2d_package_predicts_like_carecore_tiled_or_not(model2d, pkg2d, make_image, no_bioimageio, tmp_path):
    model, noisy = model2d
    m = load_bioimageio(pkg2d)
    assert m.weight_format == "onnx" and m.axes == "YX" and not m.probabilistic
    # on the test image the fixed mapping-back is carecore's own: the same restoration
    ours = model.predict(noisy, axes="YX")
    np.testing.assert_allclose(m.predict(noisy, axes="YX"), ours, atol=1e-4 * np.ptp(ours))
    # a time-lapse, frame by frame
    movie = m.predict(np.stack([noisy, noisy[::-1]]), axes="TYX")
    np.testing.assert_allclose(movie[0], ours, atol=1e-4 * np.ptp(ours))
    np.testing.assert_allclose(movie[1], m.predict(noisy[::-1], axes="YX"), atol=1e-4 * np.ptp(ours))

    # another image, another range: equal after the same normalization (package: test image's gain/offset)
    other = make_image((240, 256), seed=5)[0] * 0.5 + 40
    rdf = m.description
    kw = rdf["outputs"][0]["postprocessing"][0]["kwargs"]
    norm = compute_percentiles(other, *model.config.percentiles, axes="YX")
    expected = (model.predict(other, axes="YX") - norm.lo[0]) / (norm.hi[0] - norm.lo[0])
    whole = m.predict(other, axes="YX", n_tiles=(1, 1))
    assert len(m.tile_plan(other.shape, (1, 1))) == 1 and len(m.tile_plan(other.shape, (3, 2))) == 6
    tiled = m.predict(other, axes="YX", n_tiles=(3, 2))
    atol = 1e-4 * np.ptp(expected)
    np.testing.assert_allclose((whole - kw["offset"]) / kw["gain"], expected, atol=atol)
    np.testing.assert_allclose(tiled, whole, atol=1e-5 * np.ptp(whole))
    # the Keras weights and the SavedModel, tiled otherwise, and the unpacked folder
    for fmt in ("keras_v3", "tensorflow_saved_model_bundle"):
        k = load_bioimageio(pkg2d, weight_format=fmt)
        assert k.weight_format == fmt
        np.testing.assert_allclose(k.predict(other, axes="YX", n_tiles=(2, 3)), whole, atol=1e-4 * np.ptp(whole))
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(pkg2d).extractall(folder)
    f = load_bioimageio(folder)
    np.testing.assert_allclose(f.predict(other.T, axes="XY"), whole.T, atol=1e-4 * np.ptp(whole))
    # as written in the package: a carecore package with postprocessing none is mapped back unless told not to
    none = load_bioimageio(export_bioimageio(model.path, tmp_path / "none.zip", test_input=noisy,
                                             postprocessing="none", weight_formats=["onnx"]))
    np.testing.assert_allclose(none.predict(other, axes="YX", map_back=False), expected, atol=atol)
    np.testing.assert_allclose(none.predict(other, axes="YX"), model.predict(other, axes="YX"),
                               atol=1e-4 * np.ptp(other))


def test_3d_probabilistic_package_through_the_cli(model3d_prob, no_bioimageio, tmp_path, capsys):
    from carecore.cli import main
    from carecore.export.bioimageio import _float32_twin
    from carecore.io import read_image, write_image

    model, noisy = model3d_prob
    # a 32-slice test input (the demo's stacks) under the package's minimum side: mirrored up to it
    pkg = export_bioimageio(model.path, tmp_path / "care3d.zip", test_input=noisy[:32],
                            weight_formats=["onnx", "keras_v3"])
    rdf = json.loads(zipfile.ZipFile(pkg).read("rdf.yaml"))
    assert np.load(zipfile.ZipFile(pkg).open("test_input.npy")).shape[1] == rdf["inputs"][0]["axes"][1]["size"]["min"]
    m = load_bioimageio(pkg)
    assert m.probabilistic and m.axes == "ZYX" and m.n_channel_out == 1
    write_image(tmp_path / "stack.tif", noisy, axes="ZYX")
    rc = main(["predict", "--model", str(pkg), "--in", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "mean.tif"),
               "--scale-out", str(tmp_path / "scale.tif"), "--upper-out", str(tmp_path / "hi.tif"), "--tiles", "1,2,2"])
    assert rc == 0, capsys.readouterr().err
    assert len(m.tile_plan(noisy.shape, (1, 2, 2))) == 4
    # carecore's own prediction with the package's arithmetic (float32; the model trained in bfloat16)
    mean, scale = _float32_twin(model).predict(noisy, axes="ZYX")
    got_mean, got_scale = read_image(tmp_path / "mean.tif"), read_image(tmp_path / "scale.tif")
    assert got_mean.axes == "ZYX" and got_mean.shape == noisy.shape
    np.testing.assert_allclose(got_mean.data, mean, atol=1e-4 * np.ptp(mean))
    np.testing.assert_allclose(got_scale.data, scale, atol=1e-4 * np.ptp(mean))
    assert (read_image(tmp_path / "hi.tif").data > got_mean.data).all()
    # the Keras weights, untiled, give the same
    k_mean, k_scale = load_bioimageio(pkg, weight_format="keras_v3").predict(noisy, axes="ZYX", n_tiles=(1, 1, 1))
    np.testing.assert_allclose(k_mean, got_mean.data, atol=1e-4 * np.ptp(mean))
    np.testing.assert_allclose(k_scale, got_scale.data, atol=1e-4 * np.ptp(mean))


def test_a_channel_first_package_runs(model2d, pkg2d, tmp_path):
    """Packages made elsewhere (PyTorch's layout): axes (batch, channel, y, x), the network wrapped in transposes."""
    import onnx
    from onnx import helper

    model, noisy = model2d
    net = onnx.load_from_string(zipfile.ZipFile(pkg2d).read("weights.onnx"))
    g = net.graph
    inner_in, inner_out = g.input[0].name, g.output[0].name
    g.node.insert(0, helper.make_node("Transpose", ["x_cf"], [inner_in], perm=[0, 2, 3, 1]))
    g.node.append(helper.make_node("Transpose", [inner_out], ["y_cf"], perm=[0, 3, 1, 2]))
    del g.input[:], g.output[:]
    g.input.append(helper.make_tensor_value_info("x_cf", onnx.TensorProto.FLOAT, [None, 1, None, None]))
    g.output.append(helper.make_tensor_value_info("y_cf", onnx.TensorProto.FLOAT, [None, 1, None, None]))
    (tmp_path / "cf.onnx").write_bytes(net.SerializeToString())

    def channel_first(rdf):
        for t in rdf["inputs"] + rdf["outputs"]:
            t["axes"] = [t["axes"][0], t["axes"][-1]] + t["axes"][1:-1]
        rdf["weights"] = {"onnx": {"source": "weights.onnx"}}
    pkg = _rewrite(pkg2d, tmp_path / "cf.zip", channel_first, drop={"weights.onnx"})
    with zipfile.ZipFile(pkg, "a") as z:
        z.write(tmp_path / "cf.onnx", "weights.onnx")
    ours = model.predict(noisy, axes="YX")
    got = load_bioimageio(pkg).predict(noisy[None], axes="CYX", n_tiles=(2, 2))
    assert got.shape == (1,) + noisy.shape
    np.testing.assert_allclose(got[0], ours, atol=1e-4 * np.ptp(ours))


def test_what_cannot_run_is_named(pkg2d, tmp_path, capsys):
    from carecore.cli import main

    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(CareError, match="bad.zip: not a zip file"):
        load_bioimageio(bad)
    assert main(["predict", "--model", str(bad), "--in", "x.tif", "--out", "y.tif"]) == 2
    assert "bad.zip: not a zip file" in capsys.readouterr().err
    with pytest.raises(CareError, match="no rdf.yaml"):
        load_bioimageio(_rewrite(pkg2d, tmp_path / "nordf.zip", drop={"rdf.yaml"}))

    def custom_step(rdf):
        rdf["inputs"][0]["preprocessing"][1] = {"id": "custom_denoise", "kwargs": {}}
    with pytest.raises(CareError, match=r"rdf.yaml field inputs\[0\].preprocessing\[1\].id: .*'custom_denoise'"):
        load_bioimageio(_rewrite(pkg2d, tmp_path / "custom.zip", custom_step))

    def per_slice(rdf):
        rdf["inputs"][0]["preprocessing"][1]["kwargs"]["axes"] = ["x"]
    with pytest.raises(CareError, match=r"preprocessing\[1\].kwargs.axes: statistics per \['y'\]"):
        load_bioimageio(_rewrite(pkg2d, tmp_path / "slice.zip", per_slice)).predict(np.ones((96, 96)), axes="YX")

    def old_format(rdf):
        rdf["format_version"] = "0.4.10"
    with pytest.raises(CareError, match="format_version"):
        load_bioimageio(_rewrite(pkg2d, tmp_path / "old.zip", old_format))

    def url(rdf):
        rdf["weights"] = {"onnx": {"source": "https://example.org/weights.onnx"}}
    with pytest.raises(CareError, match="is a URL"):
        load_bioimageio(_rewrite(pkg2d, tmp_path / "url.zip", url))
    with pytest.raises(CareError, match=r"weights.keras_v3.source: the package has no file"):
        load_bioimageio(_rewrite(pkg2d, tmp_path / "nofile.zip", drop={"weights.keras"}), weight_format="keras_v3")

    def torch_only(rdf):
        rdf["weights"] = {"pytorch_state_dict": {"source": "weights.keras"}}
    with pytest.raises(CareError, match="carecore runs onnx"):
        load_bioimageio(_rewrite(pkg2d, tmp_path / "torch.zip", torch_only))
    m = load_bioimageio(pkg2d)
    with pytest.raises(CareError, match="spatial axes YX"):
        m.predict(np.zeros((8, 96, 96), np.float32), axes="ZYX")
    holed = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    holed[40:42, 50] = np.nan   # (its percentiles say so; a package scaled by fixed values: below)
    with pytest.raises(CareError, match=r"holed.tif \(channel 0\): contains 2 NaN or infinite value"):
        m.predict(holed, axes="YX", name="holed.tif")


def test_kinds_the_format_can_and_cannot_express(tmp_path, make_image):
    from carecore.models.projection import ProjectionCARE

    noisy = make_image((96, 104), seed=2)[0]
    sub = create_model(care_config("YX", quick=True, kind="subdiffraction", psf_sigma=2.0, precision="float32"),
                       tmp_path / "sub")
    sub.save()
    pkg = export_bioimageio(sub.path, tmp_path / "sub.zip", test_input=noisy, weight_formats=["keras_v3"])
    rdf = json.loads(zipfile.ZipFile(pkg).read("rdf.yaml"))
    assert rdf["config"]["carecore"]["kind"] == "subdiffraction" and "deconvolution" in rdf["tags"]
    ours = sub.predict(noisy, axes="YX")
    np.testing.assert_allclose(load_bioimageio(pkg).predict(noisy, axes="YX"), ours, atol=1e-4 * np.ptp(ours))
    # without a test input: an image simulated as its training inputs were (its training data is no file: a user
    # trial's export was refused), the package's test output its restoration
    pkg = export_bioimageio(sub.path, tmp_path / "sub2.zip", weight_formats=["keras_v3"])
    with zipfile.ZipFile(pkg) as z:
        x = np.load(io.BytesIO(z.read("test_input.npy")))
    assert x.size >= 64 * 64 and np.ptp(x) > 0, x.shape

    iso = create_model(care_config("YX", quick=True, kind="isotropic", upsampling_factor=4.0), tmp_path / "iso")
    iso.save()
    with pytest.raises(CareError, match="kind 'isotropic' cannot be exported.*XZ and every YZ slice.*carecore predict"):
        export_bioimageio(iso.path, tmp_path / "iso.zip", test_input=noisy)
    proj = create_model(ProjectionCARE.default_config("ZYX", unet_filters=8), tmp_path / "proj")
    proj.save()
    with pytest.raises(CareError, match="kind 'projection' cannot be exported.*softmax"):
        export_bioimageio(proj.path, tmp_path / "proj.zip", test_input=np.stack([noisy] * 8))


def test_probabilistic_package_scaled_by_training_writes_what_the_model_folder_writes(
        model2d_prob_training_scaled, make_image, no_bioimageio, tmp_path, capsys):
    """A probabilistic model with the default input normalization ("training": a fixed ``scale_linear``
    before the network, as ensemble members): its package maps mean and scale back by a fixed
    ``scale_linear`` per channel (mean: gain and offset; scale: the gain alone), so ``carecore predict``
    with the package writes what it writes with the model folder, on any image. A package written
    without that mapping back (``postprocessing="none"``, as carecore wrote them before) is mapped back
    by the reader with the inverse of its input's ``scale_linear``."""
    from carecore.cli import main
    from carecore.io import read_image, write_image

    model, noisy = model2d_prob_training_scaled
    pkg = export_bioimageio(model.path, tmp_path / "prob.zip", test_input=noisy, weight_formats=["onnx"])
    rdf = json.loads(zipfile.ZipFile(pkg).read("rdf.yaml"))
    lo, hi = model.training_normalization.lo[0], model.training_normalization.hi[0]
    assert rdf["inputs"][0]["preprocessing"][1]["id"] == "scale_linear"
    post = rdf["outputs"][0]["postprocessing"]
    assert [p["id"] for p in post] == ["scale_linear"] and post[0]["kwargs"]["axis"] == "channel"
    assert post[0]["kwargs"]["gain"] == pytest.approx([hi - lo, hi - lo], rel=1e-6)
    assert post[0]["kwargs"]["offset"] == pytest.approx([lo, 0.0], rel=1e-6, abs=1e-6)
    assert rdf["config"]["carecore"]["postprocessing"] == "scale_linear"

    other = make_image((96, 104), seed=4)[0] * 0.5 + 40   # another image, another intensity range
    write_image(tmp_path / "other.tif", other, axes="YX")
    folder_args = ["--in", str(tmp_path / "other.tif"), "--tiles", "1,1"]
    for src, tag in ((model.path, "folder"), (pkg, "pkg")):
        rc = main(["predict", "--model", str(src), *folder_args, "--out", str(tmp_path / f"r_{tag}.tif"),
                   "--scale-out", str(tmp_path / f"s_{tag}.tif")])
        assert rc == 0, capsys.readouterr().err
    mean, scale = (read_image(tmp_path / f"{k}_folder.tif").data for k in "rs")
    tol = 1e-4 * np.ptp(mean)
    np.testing.assert_allclose(read_image(tmp_path / "r_pkg.tif").data, mean, atol=tol)
    np.testing.assert_allclose(read_image(tmp_path / "s_pkg.tif").data, scale, atol=tol)
    ours = model.predict(other, axes="YX")
    np.testing.assert_allclose(mean, ours[0], atol=tol)   # the folder's files are the model's prediction
    # an image from a camera at another gain and offset is warned about, by the package as by the folder
    camera = other * 30 + 1000
    with pytest.warns(CareWarning, match=r"cam.tif: its 2-99.8 percentiles .* are far from the training inputs' .*"
                                         r"--normalization image"):
        model.predict(camera, axes="YX", name="cam.tif")
    with pytest.warns(CareWarning, match=r"cam.tif: its 2-99.8 percentiles .* are far from the training inputs' .*the "
                                         r"package scales every image by them"):
        load_bioimageio(pkg).predict(camera, axes="YX", name="cam.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CareWarning)
        load_bioimageio(pkg).predict(other, axes="YX")
    # NaN is an error naming where, as with the folder (it wrote a restoration with a hole 8 times wider)
    holed = other.copy()
    holed[40:42, 50] = np.nan
    for m in (model, load_bioimageio(pkg)):
        with pytest.raises(CareError, match=r"holed.tif: contains NaN or infinite values \(2 pixels in the tile .*, the "
                                            r"first at Y 40 X 50\)"):
            m.predict(holed, axes="YX", name="holed.tif")

    old = load_bioimageio(export_bioimageio(model.path, tmp_path / "none.zip", test_input=noisy,
                                            postprocessing="none", weight_formats=["onnx"]))
    assert json.loads(zipfile.ZipFile(old.path).read("rdf.yaml"))["outputs"][0]["postprocessing"] == []
    for got, want in zip(old.predict(other, axes="YX"), ours):
        np.testing.assert_allclose(got, want, atol=tol)
    n_mean, n_scale = old.predict(other, axes="YX", map_back=False)   # as written: normalized units
    np.testing.assert_allclose(n_mean, (ours[0] - lo) / (hi - lo), atol=1e-4 * np.ptp(n_mean))
    np.testing.assert_allclose(n_scale, ours[1] / (hi - lo), atol=1e-4 * np.ptp(n_mean))
    with pytest.raises(CareError, match="probabilistic.*scale channels"):
        export_bioimageio(model.path, tmp_path / "x.zip", test_input=noisy, postprocessing="scale_mean_variance")


def test_a_cropped_test_input_maps_back_with_the_whole_images_range(model2d, make_image, no_bioimageio, tmp_path):
    """A test input larger than the test tensor is centre-cropped; the fixed mapping back of a model that
    scales each image by its own percentiles is the range of the whole image given, not of the crop, so
    that the package restores the image it was given as carecore does, and its own test tensor as the
    test output says."""
    model, _ = model2d
    noisy = make_image((300, 284), seed=6)[0]
    noisy += np.linspace(0, 2000, noisy.shape[1], dtype=np.float32)   # the crop misses the brightest columns
    pkg = export_bioimageio(model.path, tmp_path / "big.zip", test_input=noisy, weight_formats=["onnx"])
    with zipfile.ZipFile(pkg) as z:
        x = np.load(z.open("test_input.npy"))[0, ..., 0]
        y = np.load(z.open("test_output.npy"))[0, ..., 0]
        kw = json.loads(z.read("rdf.yaml"))["outputs"][0]["postprocessing"][0]["kwargs"]
    assert x.shape == (256, 256)
    whole, crop = (compute_percentiles(a, *model.config.percentiles, axes="YX") for a in (noisy, x))
    assert kw["gain"] == pytest.approx(whole.hi[0] - whole.lo[0], rel=1e-5)
    assert abs((crop.hi[0] - crop.lo[0]) / kw["gain"] - 1) > 0.05   # the crop's range is another one
    m = load_bioimageio(pkg)
    ours = model.predict(noisy, axes="YX")
    np.testing.assert_allclose(m.predict(noisy, axes="YX"), ours, atol=1e-4 * np.ptp(ours))
    np.testing.assert_allclose(m.predict(x, axes="YX"), y, atol=1e-4 * np.ptp(y))

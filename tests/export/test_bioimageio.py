"""bioimage.io export: the package validates and test-runs in bioimageio.core (every weight format),
reproduces carecore's prediction, and refuses what it cannot express."""
import json
import re
import zipfile

import numpy as np
import pytest

from carecore import CareError, care_config, create_model
from carecore.export import export_bioimageio

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # bioimageio.core unzips TensorFlow weights into the working directory


def _test_model(pkg):
    from bioimageio.core import test_model

    summary = test_model(str(pkg))
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    return summary


def _bioimageio_predict(pkg, x, *, pad=False):
    """bioimageio.core's prediction of ``x`` (spatial..., C). ``pad``: as ``bioimageio.core.predict``,
    which pads the image by the halo *before* computing the percentiles (on a small image that shifts
    them: ~1% here); without, as ``test_model`` runs it (percentiles of the image itself)."""
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_model_description, predict

    x = x[None].astype(np.float32)
    if pad:
        out = predict(model=str(pkg), inputs=x)
        return np.asarray(next(iter(out.members.values())).data)[0]
    dims = ("batch", "z", "y", "x", "channel")[-x.ndim:] if x.ndim == 5 else ("batch", "y", "x", "channel")
    pipeline = create_prediction_pipeline(load_model_description(str(pkg)))
    sample = Sample(members={"input": Tensor.from_numpy(x, dims=dims)}, stat={}, id="s")
    out = pipeline.predict_sample_without_blocking(sample, skip_input_padding=True, skip_output_cropping=True)
    return np.asarray(out.members["output"].data)[0]


def test_2d_package_passes_test_model_and_reproduces_carecore(model2d, tmp_path):
    model, noisy = model2d
    pkg = export_bioimageio(model.path, tmp_path / "care2d.zip", authors=["A. Tester"], test_input=noisy)
    with zipfile.ZipFile(pkg) as z:
        names = set(z.namelist())
        rdf = json.loads(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "weights.keras",
            "weights_tf_saved_model.zip", "weights.onnx"} <= names
    assert set(rdf["weights"]) == {"keras_v3", "tensorflow_saved_model_bundle", "onnx"}
    assert rdf["inputs"][0]["preprocessing"][1]["kwargs"]["min_percentile"] == model.config.percentiles[0]
    assert "## Validation" in readme and "10.1038/s41592-018-0216-7" in readme
    summary = _test_model(pkg)
    tested = {d.name for d in summary.details if d.name.startswith("Reproduce test outputs")}
    assert len(tested) == 3  # every weight format reproduced the test output

    # the package restores like carecore (fixed mapping-back: exact for the test image)
    x = np.load(zipfile.ZipFile(pkg).open("test_input.npy"))[0]
    ours = model.predict(x[..., 0], axes="YX")
    theirs = _bioimageio_predict(pkg, x)[..., 0]
    np.testing.assert_allclose(theirs, ours, atol=1e-4 * np.ptp(ours))
    # bioimageio.core.predict pads by the halo (reflecting: the border pixels see other context than in
    # carecore, whose convolutions pad with zeros) before the percentiles: compare the interior, loosely
    h = rdf["outputs"][0]["axes"][1]["halo"]
    padded = _bioimageio_predict(pkg, x, pad=True)[h:-h, h:-h, 0]
    np.testing.assert_allclose(padded, ours[h:-h, h:-h], atol=0.03 * np.ptp(ours))


def test_unnormalized_output_maps_back_to_carecore_on_any_image(model2d, make_image, tmp_path):
    from carecore import compute_percentiles

    model, noisy = model2d
    pkg = export_bioimageio(model.path, tmp_path / "none.zip", test_input=noisy, postprocessing="none",
                            weight_formats=["onnx"])
    other = make_image((96, 104), seed=3)[0] * 0.5 + 40   # another image, another intensity range
    norm = compute_percentiles(other, *model.config.percentiles, axes="YX")
    ours = model.predict(other, axes="YX")
    theirs = _bioimageio_predict(pkg, other[..., None])[..., 0]
    np.testing.assert_allclose(theirs * (norm.hi[0] - norm.lo[0]) + norm.lo[0], ours, atol=1e-4 * np.ptp(ours))
    # the ONNX weights alone in onnxruntime: normalized input -> the same network output
    import onnxruntime as ort

    with zipfile.ZipFile(pkg) as z:
        sess = ort.InferenceSession(z.read("weights.onnx"), providers=["CPUExecutionProvider"])
    xn = ((other - norm.lo[0]) / (norm.hi[0] - norm.lo[0]))[None, ..., None].astype(np.float32)
    direct = sess.run(None, {sess.get_inputs()[0].name: xn})[0][0, ..., 0]
    np.testing.assert_allclose(direct * (norm.hi[0] - norm.lo[0]) + norm.lo[0], ours, atol=1e-4 * np.ptp(ours))


def test_a_model_scaled_by_its_training_inputs_exports_that_scaling(model2d_training_scaled, make_image, tmp_path):
    """The package scales inputs (``scale_linear``) and outputs by the training inputs' percentiles, as
    carecore does, so it restores *every* image exactly as carecore, not only its test image."""
    model, noisy = model2d_training_scaled
    pkg = export_bioimageio(model.path, tmp_path / "scaled.zip", test_input=noisy, weight_formats=["onnx"])
    with zipfile.ZipFile(pkg) as z:
        rdf = json.loads(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
    norm = model.training_normalization
    lo, hi = norm.lo[0], norm.hi[0]
    pre = rdf["inputs"][0]["preprocessing"][1]
    assert pre["id"] == "scale_linear"
    assert pre["kwargs"]["gain"] == pytest.approx(1 / (hi - lo)) and pre["kwargs"]["offset"] == pytest.approx(-lo / (hi - lo))
    post = rdf["outputs"][0]["postprocessing"][0]
    assert post["kwargs"] == pytest.approx({"gain": hi - lo, "offset": lo})
    assert rdf["config"]["carecore"]["input_normalization"] == "training" and "training inputs" in readme
    # the output's description says whose units, as the README does (it said the test image's, a trial)
    assert "the training inputs' intensity units" in rdf["outputs"][0]["description"], rdf["outputs"][0]["description"]
    _test_model(pkg)
    other = make_image((96, 104), seed=3)[0] * 0.5 + 40   # another image, another intensity range
    ours = model.predict(other, axes="YX")
    theirs = _bioimageio_predict(pkg, other[..., None])[..., 0]
    np.testing.assert_allclose(theirs, ours, atol=1e-4 * np.ptp(ours))
    # carecore's own reader of packages agrees too
    import carecore as cc

    np.testing.assert_allclose(cc.load_bioimageio(pkg).predict(other, axes="YX"), ours, atol=1e-4 * np.ptp(ours))


def test_3d_probabilistic_package_has_mean_and_scale(model3d_prob, tmp_path):
    model, noisy = model3d_prob
    pkg = export_bioimageio(model.path, tmp_path / "care3d.zip", test_input=noisy,
                            weight_formats=["keras_v3", "tensorflow_saved_model_bundle"])
    rdf = json.loads(zipfile.ZipFile(pkg).read("rdf.yaml"))
    assert rdf["outputs"][0]["axes"][-1]["channel_names"] == ["mean", "scale"]
    # the model card names what chose the weights (it called the MAE of the mean a "validation loss")
    readme = zipfile.ZipFile(pkg).read("README.md").decode()
    assert f"- Best validation MAE of the mean: {model.best_val_loss:.4g}" in readme, readme
    assert f"- Epochs: {len(model.history)} ({model.run_card['steps_done']} steps, " in readme, readme
    assert rdf["outputs"][0]["postprocessing"] == []
    _test_model(pkg)
    # the network's float32 output against carecore's (bfloat16) prediction, in normalized units
    x = np.load(zipfile.ZipFile(pkg).open("test_input.npy"))[0]
    from carecore import compute_percentiles

    norm = compute_percentiles(x[..., 0], *model.config.percentiles, axes="ZYX")
    mean, scale = model.predict(x[..., 0], axes="ZYX", normalization=norm)
    out = _bioimageio_predict(pkg, x)
    rng = norm.hi[0] - norm.lo[0]
    np.testing.assert_allclose(out[..., 0] * rng + norm.lo[0], mean, atol=0.02 * np.ptp(mean))
    np.testing.assert_allclose(out[..., 1] * rng, scale, atol=0.02 * np.ptp(mean))
    with pytest.raises(CareError, match="probabilistic"):
        export_bioimageio(model.path, tmp_path / "x.zip", test_input=noisy, postprocessing="scale_linear")


def test_refusals_name_the_problem(model2d, tmp_path):
    model, noisy = model2d
    # (not a refusal: a test input under half the package's minimum side, as the app's tiny demo stacks are, is
    # mirrored up to it as often as needed; it was refused, and the app's Export could do nothing about it)
    small = noisy[:20, :20]
    out = export_bioimageio(model.path, tmp_path / "small.zip", test_input=small, weight_formats=["keras_v3"])
    with zipfile.ZipFile(out) as z, z.open("test_input.npy") as f:
        x = np.load(f)[0, ..., 0]
    assert min(x.shape) > 2 * max(small.shape) and x.shape[0] % model.config.divisor == 0, x.shape
    np.testing.assert_array_equal(np.sort(np.unique(x)), np.sort(np.unique(small.astype(np.float32))))
    with pytest.raises(CareError, match=r"\.zip"):
        export_bioimageio(model.path, tmp_path / "x.tar", test_input=noisy)
    with pytest.raises(CareError, match="weight_formats"):
        export_bioimageio(model.path, tmp_path / "x.zip", test_input=noisy, weight_formats=["torchscript"])
    up = create_model(care_config("ZYX", quick=True, kind="upsampling", upsampling_factor=2.0), tmp_path / "up")
    up.save()
    with pytest.raises(CareError, match="kind 'upsampling'"):
        export_bioimageio(up.path, tmp_path / "up.zip", test_input=np.zeros((16, 64, 64), np.float32))


def test_the_package_name_is_one_bioimageio_takes(model2d, tmp_path):
    """bioimage.io refuses names shorter than 5 characters or with other characters than letters, digits,
    spaces and _+-() (the README's own `models/care` made such a package): a folder's name is made valid,
    a given name bioimage.io would refuse is refused with a valid one to use, and so is an author with a slash."""
    import shutil

    from bioimageio.spec import load_description

    from carecore.export.bioimageio import package_name

    assert package_name(None, "models/care") == "care (CARE)"
    # the app's trainings (models/<task>_<time>/model): named by their job's folder, not "model"
    assert package_name(None, "models/denoising2d_20261207_214250/model") == "denoising2d_20261207_214250"
    assert package_name(None, "lab/models/x_1/ensemble") == "x_1 (CARE)"
    assert package_name(None, "models/mito v2.1é") == "mito v2 1"
    assert package_name(None, "x/__") == "__ (CARE)" and package_name("BPAE mito denoiser", "x") == "BPAE mito denoiser"
    model, noisy = model2d
    folder = tmp_path / "mito"
    shutil.copytree(model.path, folder)
    pkg = export_bioimageio(folder, tmp_path / "mito.zip", test_input=noisy, weight_formats=["keras_v3"])
    assert json.loads(zipfile.ZipFile(pkg).read("rdf.yaml"))["name"] == "mito (CARE)"
    summary = load_description(str(pkg)).validation_summary
    assert summary.status != "failed", [(d.name, [e.msg for e in d.errors]) for d in summary.details]
    for bad, hint in (("care", "'care (CARE)'"), ("mito v2.1", "'mito v2 1'"), ("Zellkerne ä", "'Zellkerne'")):
        with pytest.raises(CareError, match=rf"name {re.escape(repr(bad))}: a bioimage.io package name takes 5 to 128 "
                                            rf"letters, .* for example {re.escape(hint)}"):
            export_bioimageio(folder, tmp_path / "x.zip", name=bad, test_input=noisy)
    with pytest.raises(CareError, match=r"authors: 'A. One / B. Two' has a slash"):
        export_bioimageio(folder, tmp_path / "x.zip", authors=["A. One / B. Two"], test_input=noisy)
    with pytest.raises(CareError, match=r"license 'CC BY 4.0': give an SPDX identifier, e.g. 'CC-BY-4.0'"):
        export_bioimageio(folder, tmp_path / "x.zip", license="CC BY 4.0", test_input=noisy)
    with pytest.raises(CareError, match="description: 1100 characters, but bioimage.io takes at most 1024"):
        export_bioimageio(folder, tmp_path / "x.zip", description="x" * 1100, test_input=noisy)
    assert not (tmp_path / "x.zip").exists()


def test_cli_export(model2d, tmp_path, capsys):
    from carecore.cli import main
    from carecore.io import write_image

    model, noisy = model2d
    write_image(tmp_path / "test.tif", noisy, axes="YX")
    rc = main(["export", "--model", str(model.path), "--out", str(tmp_path / "cli.zip"), "--name", "my care",
               "--test-input", str(tmp_path / "test.tif"), "--weight-formats", "keras_v3"])
    assert rc == 0, capsys.readouterr().err
    assert "note: its test input" not in capsys.readouterr().out   # (said where a training crop is embedded)
    rdf = json.loads(zipfile.ZipFile(tmp_path / "cli.zip").read("rdf.yaml"))
    assert rdf["name"] == "my care" and list(rdf["weights"]) == ["keras_v3"]
    assert main(["export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "m.zip")]) == 2


def test_a_network_on_a_smoothed_input_exports_with_its_filter(model2d_smooth, tmp_path):
    """The fast recipe's networks add their correction to a Gaussian-smoothed input, and smooth their
    output: the package carries both filters (standard layers) and their reach as the halo, and restores
    as carecore does, borders included."""
    model, noisy = model2d_smooth
    # (128 x 128: above the package's minimum side of 116, so the test tensor is the whole image, whose percentiles
    # map the output back; a shorter side is mirrored up to it, and the tensor's percentiles are then not those)
    big = np.pad(noisy, ((8, 8), (4, 4)), mode="reflect")
    pkg = export_bioimageio(model.path, tmp_path / "smooth.zip", authors=["A. Tester"], test_input=big)
    rdf = json.loads(zipfile.ZipFile(pkg).read("rdf.yaml"))
    # the reach of both (48 + 6) rounded up to the divisor: a consumer's padding by it keeps the pooling grid
    assert model._halo() == 48 + 6 and rdf["outputs"][0]["axes"][1]["halo"] == 56 == 14 * model.config.divisor
    _test_model(pkg)
    x = np.load(zipfile.ZipFile(pkg).open("test_input.npy"))[0]
    assert x.shape[:2] == big.shape
    ours = model.predict(x[..., 0], axes="YX")
    theirs = _bioimageio_predict(pkg, x)[..., 0]
    np.testing.assert_allclose(theirs, ours, atol=1e-4 * np.ptp(ours))
    # the network of an input padded by the halo, as bioimageio.core and other consumers pad, is the network's of
    # the input away from its border (a halo of half the divisor moved the U-Net's pooling grid: 3 % of the range
    # everywhere, in a user trial; the package's statistics of a padded image differ too, so the network alone)
    from carecore.export.package import BioimageioModel

    h = rdf["outputs"][0]["axes"][1]["halo"]
    net = BioimageioModel(pkg)._run
    xn = (x - x.mean()) / x.std()
    plain = net(xn[None])[0, h:-h, h:-h]
    padded = net(np.pad(xn, ((h, h), (h, h), (0, 0)), mode="reflect")[None])[0, 2 * h:-2 * h, 2 * h:-2 * h]
    np.testing.assert_allclose(padded, plain, atol=1e-4 * np.ptp(plain))


def test_a_weight_format_with_another_output_shape_is_refused(tmp_path):
    """The check of each written format compares shapes first: an output with an extra axis (as a faulty
    conversion can give) would broadcast against carecore's and pass unseen."""
    import keras

    from carecore.export.bioimageio import _check_format

    x = np.random.default_rng(0).random((8, 8, 1)).astype(np.float32)
    inp = keras.Input((8, 8, 1))
    keras.Model(inp, keras.layers.Reshape((1, 8, 8, 1))(inp)).save(tmp_path / "extra_axis.keras")
    keras.Model(inp, keras.layers.Identity()(inp)).save(tmp_path / "same.keras")
    assert _check_format("keras_v3", tmp_path / "same.keras", x, x) == 0
    with pytest.raises(CareError, match=r"output has shape \(1, 1, 8, 8, 1\).*carecore's \(1, 8, 8, 1\)"):
        _check_format("keras_v3", tmp_path / "extra_axis.keras", x, x)


def test_the_onnx_graph_is_written_layer_by_layer_the_same_every_time(tmp_path):
    """The ONNX weights are written from the network's layers, not converted from a traced function:
    the same network gives the same bytes (a converter gave, now and then, an output with an extra
    axis) at the opset's lowest IR version (older onnxruntime builds read it), each configuration
    computes what Keras computes, its residual base included, and what the writer cannot write is named."""
    import keras
    import onnx
    import onnxruntime as ort

    from carecore.export.onnx_graph import write_onnx
    from carecore.export.plain import build_plain_unet

    rng = np.random.default_rng(0)

    def run(path, x):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {"input": x})[0]

    for axes, kw in [("YX", dict(residual_sigma=3.0, residual_affine=((1.6, -0.3),), output_sigma=2.0)),
                     ("ZYX", dict(probabilistic=True, n_channel_in=2, n_channel_out=2, output_sigma=1.0))]:
        cfg = care_config(axes, quick=True, precision="float32", **kw)
        plain = build_plain_unet(cfg)
        for layer in plain.layers:   # weights far from the initial ones, activations of order 1 throughout
            if layer.trainable and layer.weights:
                fan_in = np.prod(layer.get_weights()[0].shape[:-1])
                layer.set_weights([rng.normal(0, np.sqrt(2 / fan_in), w.shape).astype(np.float32)
                                   for w in layer.get_weights()])
        first = write_onnx(plain, tmp_path / f"{axes}_1.onnx", n_spatial=cfg.ndim, n_channel_in=cfg.n_channel_in)
        again = write_onnx(plain, tmp_path / f"{axes}_2.onnx", n_spatial=cfg.ndim, n_channel_in=cfg.n_channel_in)
        assert first.read_bytes() == again.read_bytes()
        assert onnx.load(str(first)).ir_version == 8
        x = rng.random((2,) + ((16, 24, 40) if cfg.ndim == 3 else (40, 56)) + (cfg.n_channel_in,), dtype=np.float32)
        got, want = run(first, x), np.asarray(plain(x))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5 * float(np.ptp(want)))
        # the residual base alone (the correction's head at zero): the smoothing, gain and offset, and
        # (probabilistic) the scale's softplus + 1e-3, each exact to float32 rounding
        head = plain.get_layer("head_mean")
        head.set_weights([np.zeros_like(w) for w in head.get_weights()])
        base = write_onnx(plain, tmp_path / f"{axes}_base.onnx", n_spatial=cfg.ndim, n_channel_in=cfg.n_channel_in)
        got, want = run(base, x), np.asarray(plain(x))
        np.testing.assert_allclose(got, want, atol=1e-5 * max(float(np.ptp(want)), 1.0))
        assert np.ptp(want[..., :cfg.n_channel_out]) > 0.5   # the base is not zero: the check above compares it

    inp = keras.Input((None, None, 1))
    refused = {"norm": keras.Model(inp, keras.layers.BatchNormalization(name="norm")(inp)),
               "per_channel": keras.Model(inp, keras.layers.Rescaling([2.0], name="per_channel")(inp))}
    twice = keras.layers.Conv2D(1, 3, padding="same", name="twice")
    refused["twice"] = keras.Model(inp, keras.layers.Add(name="sum")([twice(inp), twice(twice(inp))]))
    for name, model in refused.items():
        with pytest.raises(CareError, match=f"layer '{name}'|rescaling '{name}'|'sum' takes a tensor"):
            write_onnx(model, tmp_path / f"{name}.onnx", n_spatial=2, n_channel_in=1)
        assert not (tmp_path / f"{name}.onnx").exists()


def test_probabilistic_model_scaled_by_training_gives_intensities_in_bioimageio_core(
        model2d_prob_training_scaled, make_image, tmp_path):
    """What Fiji/deepImageJ and bioimageio.core run is the rdf's own processing: a probabilistic model with
    the default input normalization maps mean and scale back there (``scale_linear`` along the channel
    axis), so they get carecore's mean and scale on any image, in intensity units."""
    model, noisy = model2d_prob_training_scaled
    pkg = export_bioimageio(model.path, tmp_path / "prob.zip", test_input=noisy, weight_formats=["onnx"])
    _test_model(pkg)
    other = make_image((96, 104), seed=3)[0] * 0.5 + 40   # another image, another intensity range
    mean, scale = model.predict(other, axes="YX")
    theirs = _bioimageio_predict(pkg, other[..., None])
    np.testing.assert_allclose(theirs[..., 0], mean, atol=1e-4 * np.ptp(mean))
    np.testing.assert_allclose(theirs[..., 1], scale, atol=1e-4 * np.ptp(mean))


def test_ensembles_and_missing_test_inputs_are_refused_with_what_to_do(tmp_path, capsys):
    from carecore.cli import main
    from carecore.uncertainty.ensemble import Ensemble

    members = []
    for i in (1, 2):
        m = create_model(care_config("YX", quick=True, probabilistic=True, precision="float32"),
                         tmp_path / "ens" / f"member_{i}")
        m.save()
        members.append(m)
    Ensemble(members, tmp_path / "ens").save_index()
    assert main(["export", "--model", str(tmp_path / "ens"), "--out", str(tmp_path / "ens.zip")]) == 2
    err = capsys.readouterr().err
    assert "an ensemble folder (2 members)" in err and "Export one member's model folder" in err, err
    assert str(tmp_path / "ens" / "member_1") in err and str(tmp_path / "ens" / "member_2") in err
    assert not (tmp_path / "ens.zip").exists()
    with pytest.raises(CareError, match="ensemble folder"):
        export_bioimageio(tmp_path / "ens", tmp_path / "ens.zip")

    # a model without recorded training data (as imported CSBDeep models): the test input's option is named
    # for the command line and for Python
    bare = create_model(care_config("YX", quick=True, precision="float32"), tmp_path / "bare")
    bare.save()
    assert main(["export", "--model", str(bare.path), "--out", str(tmp_path / "bare.zip")]) == 2
    err = capsys.readouterr().err
    assert "`--test-input low.tif`" in err and "test_input=read_image('low.tif').data" in err, err
    assert "--axes YX" in err and "test_axes='YX'" in err

"""Joint surface projection + denoising (kind ``projection``): ZYX stacks in, YX projections out."""
import subprocess
import sys

import numpy as np
import pytest

from carecore import CareError, evaluate, read_image
from carecore.baselines import max_projection, projection_baselines, surface_projection
from carecore.simulate.photon import simulate_photon_noise
from carecore.simulate.samples import surface_stack


def _pair(seed, shape=(16, 128, 128)):
    """A noisy surface stack (as the demo's) and its clean projection."""
    stack, proj, _ = surface_stack(shape, seed=seed)
    low, _ = simulate_photon_noise(stack, 6.0, background=1.0, read_noise=1.0, seed=seed + 1000)
    return low.astype(np.float32), proj


@pytest.fixture(scope="module")
def small_model():
    from carecore.models.projection import ProjectionCARE

    cfg = ProjectionCARE.default_config("ZYX", precision="float32", unet_filters=8)
    return ProjectionCARE(cfg)


def test_config_rules():
    from carecore import care_config
    from carecore.models.projection import ProjectionCARE

    cfg = ProjectionCARE.default_config("ZYX")
    assert (cfg.kind, cfg.axes, cfg.residual) == ("projection", "ZYX", False)
    with pytest.raises(CareError, match="residual"):
        care_config("ZYX", kind="projection", residual=True)
    with pytest.raises(CareError, match="ZYX"):
        care_config("YX", kind="projection", residual=False)
    with pytest.raises(CareError, match="ZYX"):
        ProjectionCARE.default_config("YX")


def test_shapes_spacing_and_channels(small_model):
    m = small_model
    low, _ = _pair(1, (12, 40, 56))   # any Z; Y, X not multiples of the divisor
    out = m.predict(low, axes="ZYX")
    assert out.shape == (40, 56) and out.dtype == np.float32 and np.isfinite(out).all()
    assert m.output_spacing({"Z": 2.0, "Y": 0.5, "X": 0.4}) == {"Y": 0.5, "X": 0.4}
    assert m.output_axes("CZYX") == "CYX"
    assert m.on_output_grid(low, axes="ZYX").shape == (40, 56)
    with pytest.raises(CareError, match="spatial axes"):
        m.predict(low[0], axes="YX")
    with pytest.raises(CareError, match="Z whole"):
        m.predict(low, axes="ZYX", n_tiles=(2, 1, 1))
    # every kind's predict takes output_sigma; a projection never smooths, and says so rather than a TypeError
    np.testing.assert_array_equal(m.predict(low, axes="ZYX", output_sigma=0), out)
    with pytest.raises(CareError, match="output_sigma: projection models do not smooth"):
        m.predict(low, axes="ZYX", output_sigma=1.5)


def test_two_channels_keep_c():
    from carecore.models.projection import ProjectionCARE

    m = ProjectionCARE(ProjectionCARE.default_config("ZYX", n_channel_in=2, n_channel_out=2, unet_filters=8,
                                                     precision="float32"))
    low, _ = _pair(2, (8, 32, 32))
    out = m.predict(np.stack([low, 2 * low], 1), axes="ZCYX")
    assert out.shape == (2, 32, 32)


def test_tiled_equals_untiled(small_model):
    m = small_model
    low, _ = _pair(3, (10, 150, 130))
    whole = m.predict(low, axes="ZYX", n_tiles=(1, 1))
    for tiles in [(3, 2), (1, 1, 4), (2, 3)]:
        plan = m.tile_plan(low.shape, tiles)
        assert len(plan) > 1
        np.testing.assert_allclose(m.predict(low, axes="ZYX", n_tiles=tiles, batch_size=2), whole,
                                   atol=1e-5 * float(np.abs(whole).max()))


def test_patches_and_training_shapes():
    from carecore.models.projection import ProjectionCARE

    cfg = ProjectionCARE.default_config("ZYX")
    pairs = [_pair(10 + i, (12, 64, 64)) for i in range(2)]
    ps = ProjectionCARE.make_patches(cfg, pairs, axes="ZYX", n_patches_per_image=8)
    assert ps.X.shape[1:] == (12, 32, 32, 1) and ps.Y.shape[1:] == (32, 32, 1)   # Z whole
    assert ps.axes == "SZYXC" and ps.axes_y == "SYXC"
    m = ProjectionCARE(cfg)
    with pytest.raises(CareError, match="target patches"):
        m._check_patches(ps.X, ps.Y[:, :16], "training patches")


def test_cli_trains_on_a_projection_patch_folder_of_any_depth(tmp_path, capsys):
    """A projection patch folder records its stacks' whole depth as its patch size (10 here, not a multiple of
    the network's divisor): `carecore train --patches` takes it as it did (a review found it refused once the
    CLI took plain CARE folders' patch size into the configuration)."""
    from carecore.cli import main
    from carecore.models.projection import ProjectionCARE

    cfg = ProjectionCARE.default_config("ZYX")
    pairs = [_pair(20 + i, (10, 64, 64)) for i in range(2)]
    ProjectionCARE.make_patches(cfg, pairs, axes="ZYX", n_patches_per_image=8).save(tmp_path / "p")
    assert main(["train", "--task", "projection", "--patches", str(tmp_path / "p"), "--model-dir",
                 str(tmp_path / "m"), "--epochs", "1", "--steps", "1"]) == 0, capsys.readouterr().err


def test_save_load_round_trip(tmp_path, small_model):
    import carecore

    m = small_model
    m.save(tmp_path / "m")
    loaded = carecore.load_model(tmp_path / "m")
    assert type(loaded).__name__ == "ProjectionCARE"
    low, _ = _pair(4, (8, 48, 48))
    np.testing.assert_allclose(loaded.predict(low, axes="ZYX"), m.predict(low, axes="ZYX"), rtol=1e-5, atol=1e-5)


def test_baselines_project():
    low, gt = _pair(5, (16, 64, 64))
    assert max_projection(low, axes="ZYX").shape == (64, 64)
    proj, height = surface_projection(low, axes="ZYX", sigma=2, half_width=1, return_height=True)
    assert proj.shape == height.shape == (64, 64)
    assert surface_projection(np.stack([low, low]), axes="CZYX").shape == (2, 64, 64)
    with pytest.raises(CareError, match="ZYX"):
        max_projection(low[0], axes="YX")
    tuned = projection_baselines([(low, gt)], axes="ZYX", names=["gaussian"])
    assert set(tuned) == {"mip", "surface"}
    assert tuned["surface"].apply(low, axes="ZYX").shape == (64, 64)


def test_cli_train_and_predict_writes_yx(tmp_path, capsys):
    from carecore import write_demo_data

    root = write_demo_data(tmp_path / "demo", tasks=["projection"], size="tiny")["projection"]
    model_dir = tmp_path / "model"
    cli = [sys.executable, "-m", "carecore.cli"]
    r = subprocess.run(cli + ["train", "--task", "projection", "--low", str(root / "train/low"), "--high",
                              str(root / "train/high"), "--axes", "ZYX", "--model-dir", str(model_dir),
                              "--epochs", "1", "--steps", "3", "--n-per-image", "8"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "proj.tif"
    r = subprocess.run(cli + ["predict", "--model", str(model_dir), "--in", str(root / "test/low/sample00.tif"),
                              "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    img = read_image(out)
    gt = read_image(root / "test/high/sample00.tif")
    assert img.axes == "YX" and img.data.shape == gt.data.shape
    # --output-sigma: 0 (no smoothing) is accepted by every kind; a smoothing is refused, naming the flag
    from carecore.cli import main

    args = ["predict", "--model", str(model_dir), "--in", str(root / "test/low/sample00.tif"), "--out"]
    assert main(args + [str(tmp_path / "plain.tif")]) == 0
    assert main(args + [str(tmp_path / "zero.tif"), "--output-sigma", "0"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "zero.tif").data, read_image(tmp_path / "plain.tif").data)
    capsys.readouterr()
    assert main(args + [str(tmp_path / "no.tif"), "--output-sigma", "1"]) == 2
    assert "--output-sigma: projection models do not smooth their output; leave it out" in capsys.readouterr().err
    assert not (tmp_path / "no.tif").exists()


def test_qc_report_of_a_probabilistic_projection(tmp_path):
    """The QC report compares on the projection's YX grid: the maximum projection as the input,
    filters tuned on it, calibration of the YX scale, figures."""
    import json

    from carecore import write_demo_data
    from carecore.cli import main
    from carecore.models.projection import ProjectionCARE

    root = write_demo_data(tmp_path / "demo", tasks=["projection"], size="tiny")["projection"]
    cfg = ProjectionCARE.default_config("ZYX", probabilistic=True, unet_filters=8, epochs=1, steps_per_epoch=3)
    from carecore import find_pairs

    patches = ProjectionCARE.make_patches(cfg, find_pairs(root / "train/low", root / "train/high"), axes="ZYX",
                                          n_patches_per_image=8)
    ProjectionCARE(cfg, tmp_path / "model").train(patches)
    assert main(["qc", "--model", str(tmp_path / "model"), "--low", str(root / "test/low"),
                 "--gt", str(root / "test/high"), "--out", str(tmp_path / "qc")]) == 0
    rep = json.loads((tmp_path / "qc" / "report.json").read_text())
    entry = rep["images"][0]
    assert rep["kind"] == "projection" and entry["axes"] == "ZYX" and len(entry["shape"]) == 3
    assert {"input", "gaussian", "CARE"} <= set(entry["metrics"]) and 0 <= rep["calibration"]["ece"] <= 1
    mip = max_projection(read_image(root / "test/low/sample00.tif").data, axes="ZYX")
    assert entry["metrics"]["input"]["ssim"] == pytest.approx(
        evaluate(mip, read_image(root / "test/high/sample00.tif").data, axes="YX")["ssim"])
    assert all((tmp_path / "qc" / f).stat().st_size > 1000 for f in entry["figures"].values())


def test_trained_model_beats_tuned_projection_baselines():
    """A few minutes' worth of CPU training (180 steps) beats MIP and surface-following projections,
    each followed by the best classical denoiser tuned on the test image's own ground truth."""
    from carecore.models.projection import ProjectionCARE

    train = [_pair(100 + i) for i in range(4)]
    test_low, test_gt = _pair(7)
    cfg = ProjectionCARE.default_config("ZYX", epochs=6, steps_per_epoch=30)
    patches = ProjectionCARE.make_patches(cfg, train, axes="ZYX", n_patches_per_image=64)
    model = ProjectionCARE(cfg)
    events = []
    result = model.train(patches, callback=events.append)
    assert result.status == "completed"
    # the chart's validation line: the best tuned filter after the best of the maximum and surface projections
    # of the patches (never below the filters on the maximum projection alone)
    line = [e for e in events if e["kind"] == "baseline"]
    assert len(line) == 1 and 0 < line[0]["val_ssim"] < 1 and model.run_card["validation_baseline"]["val_ssim"] == line[0]["val_ssim"]
    assert line[0]["start"] in model.grid_starts() and all(t["start"] for t in line[0]["tuned"].values())
    from carecore.training.validation import ValidationSet

    val = ValidationSet(patches.X[patches.n_train:], patches.Y[patches.n_train:], model)
    model.patch_grid_starts = lambda X: {"": model.patches_on_output_grid(X)}   # (the maximum projection alone)
    assert line[0]["val_ssim"] >= val.baseline()["val_ssim"]
    del model.patch_grid_starts
    assert max(e["val_ssim"] for e in events if e["kind"] == "epoch") > line[0]["val_ssim"]
    care = evaluate(model.predict(test_low, axes="ZYX"), test_gt, axes="YX")
    tuned = projection_baselines([(test_low, test_gt)], axes="ZYX")
    scores = {k: evaluate(b.apply(test_low, axes="ZYX"), test_gt, axes="YX") for k, b in tuned.items()}
    print("projection CARE", care, {k: (tuned[k].label(), v) for k, v in scores.items()})
    for name, s in scores.items():
        assert care["ssim"] > s["ssim"] + 0.03, (name, care, s)
        assert care["nrmse"] < s["nrmse"], (name, care, s)


def test_a_stack_of_another_depth_than_the_training_stacks_is_warned_about():
    """Patches take Z whole: the run card records the training depth (projection: {"z": nz}), and prediction
    on a stack of another depth warns (the surface found there is unreliable); the same depth is silent."""
    import warnings

    from carecore import CareWarning
    from carecore.models.projection import ProjectionCARE

    cfg = ProjectionCARE.default_config("ZYX", precision="float32", unet_filters=8, batch_size=2,
                                        patch_size=(8, 32, 32))
    pairs = [_pair(20 + i, (12, 32, 32)) for i in range(2)]
    ps = ProjectionCARE.make_patches(cfg, pairs, axes="ZYX", n_patches_per_image=4)
    m = ProjectionCARE(cfg)
    m.train(ps, epochs=1, steps_per_epoch=1)
    assert m.run_card["projection"] == {"z": 12} and m.trained_depth == 12
    with pytest.warns(CareWarning, match=r"shallow: 8 Z slices, but this projection model was trained on stacks "
                                         r"of 12 slices"):
        m.predict(pairs[0][0][:8], axes="ZYX", name="shallow")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CareWarning)
        m.predict(pairs[0][0], axes="ZYX")

import json
import subprocess
import sys

import numpy as np
import pytest

import carecore as cc
from carecore import care_config
from carecore.uncertainty import Ensemble, measure_calibration, train_ensemble

pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def patches(noisy_pair):
    return cc.create_patches([noisy_pair(s) for s in range(3)], (8, 32, 32), axes="ZYX", n_patches_per_image=48,
                             validation_fraction=0.15, seed=0)


def test_probabilistic_intervals_cover_ground_truth(patches, tmp_path, noisy_pair):
    cfg = care_config("ZYX", quick=True, probabilistic=True, unet_filters=16, batch_size=8, epochs=10, steps_per_epoch=20,
                      learning_rate=2e-3, seed=0)
    model = cc.CARE(cfg, tmp_path / "prob")
    model.train(patches)
    assert "mean_scale" in model.run_card["reference"]
    noisy, clean = noisy_pair(50, (16, 64, 64))
    mean, scale = model.predict(noisy, axes="ZYX")
    # measured where the network makes its promise (normalized target units, no fit to this ground truth).
    # After these 200 tiny steps, with the scale's head fitted to the training patches at the end
    # (uncertainty.scale_head), measured ECE 0.014 with its own scales, 0.187 with them halved, 0.169 with
    # them doubled (before that fit: 0.127 over-confident, with the NLL trained jointly after an MAE
    # warm-up; 0.48 far too wide, with the head trained alongside the mean but not fitted). The test holds
    # the model's own scales to beating half and twice them by far, and to a bound a 3x error breaks.
    norm = model.input_normalization(noisy, axes="ZYX")    # as predict scaled it: the training inputs' percentiles
    ece = {f: measure_calibration(clean, mean, f * scale, image=noisy, axes="ZYX", percentiles=cfg.percentiles,
                                  normalization=norm)["ece"]
           for f in (1 / 3, 0.5, 1.0, 3.0)}
    ece.update({f: measure_calibration(clean, mean, f * scale, image=noisy, axes="ZYX", percentiles=cfg.percentiles,
                                       normalization=norm)["ece"] for f in (2.0,)})
    assert ece[1.0] < 0.05 and ece[1.0] < ece[0.5] / 2 and ece[1.0] < ece[2.0] / 2, ece
    assert ece[1.0] < ece[0.5] < ece[1 / 3] and ece[1 / 3] > 0.2 and ece[3.0] > 0.1, ece


def test_ensemble_train_predict_and_qc(patches, tmp_path, noisy_pair, capsys):
    cfg = care_config("ZYX", quick=True, probabilistic=True, epochs=2, steps_per_epoch=5, seed=3)
    events = []
    ens = train_ensemble(patches, cfg, tmp_path / "ens", n_members=3, callback=events.append)
    assert len(ens.members) == 3 and {e["member"] for e in events[:-1]} == {1, 2, 3}
    assert events[-1] == {"kind": "ensemble_end", "state": "completed", "message": "", "members": 3, "n_members": 3}
    assert [m.config.seed for m in ens.members] == [3, 4, 5]
    info = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert info["members"] == ["member01", "member02", "member03"] and "mean_disagreement" in info["reference"]
    loaded = Ensemble.load(tmp_path / "ens")
    noisy, clean = noisy_pair(9)
    out = loaded.predict(noisy, axes="ZYX")
    assert out["mean"].shape == noisy.shape
    np.testing.assert_allclose(out["mean"], out["member_means"].mean(0), rtol=1e-6, atol=1e-6)
    # QC report from the command line, on files
    d = tmp_path / "data"
    for sub in ("low", "gt"):
        (d / sub).mkdir(parents=True)
    cc.write_image(d / "low" / "a.tif", noisy, axes="ZYX")
    cc.write_image(d / "gt" / "a.tif", clean, axes="ZYX")
    r = subprocess.run([sys.executable, "-m", "carecore.cli", "qc", "--model", tmp_path / "ens", "--low", d / "low",
                        "--gt", d / "gt", "--out", tmp_path / "qc"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "qc" / "report.json").read_text())
    assert set(rep["overall"]) >= {"input", "gaussian", "median", "tv", "nlm", "bilateral", "CARE"}
    # the baselines were tuned on this image and the report says with which values (trust issue, item 3)
    from carecore.baselines import TUNING_GRIDS, tune_baselines

    tv = tune_baselines([(noisy, clean)], axes="ZYX", names=["tv"])["tv"]
    assert rep["baselines"]["tv"]["params_ssim"] == tv.params and tv.params in TUNING_GRIDS["tv"]
    assert rep["overall"]["tv"]["ssim"] == pytest.approx(tv.ssim, abs=1e-6)
    html = (tmp_path / "qc" / "index.html").read_text()
    assert "tuned on these images with their ground truth" in html and f"weight={tv.params['weight']:g}" in html
    # the maps' units said (a trial could not tell them), and D's scale where there is a D
    assert "The error map is in the normalized ground truth's units" in html and "D is 0 where" in html
    assert "No classical filter was tuned" not in html
    # an image small enough to be tuned whole: no crop to mention (the grid's scores are the table's)
    assert noisy.size <= 2**20 and "baselines_grid_note" not in rep and "centred crop" not in html
    # calibration of the mixture, measured without a fit (item 1)
    from carecore.uncertainty import measure_calibration

    mus, bs = loaded.predict_members(noisy, axes="ZYX")
    norm = loaded.input_normalization(noisy, axes="ZYX")
    direct = measure_calibration(clean, mus, bs, image=noisy, axes="ZYX", percentiles=cfg.percentiles,
                                 normalization=norm, truth_normalization=loaded.truth_normalization(norm))
    # ECE bins pixels: predictions made in another process (the CLI) may differ in the last float bit and
    # move a few pixels across a bin edge (seen: 2e-5); a fit to the ground truth would move it far more
    assert rep["calibration"]["ece"] == pytest.approx(direct["ece"], abs=2e-4)
    assert rep["calibration"]["space"] == "normalized target (no fit)"
    assert (tmp_path / "qc" / "index.html").exists() and (tmp_path / "qc" / "a_maps.png").exists()
    # ensemble prediction from the CLI with the disagreement map
    r = subprocess.run([sys.executable, "-m", "carecore.cli", "predict", "--model", *[tmp_path / "ens" / m for m in info["members"]],
                        "--in", d / "low" / "a.tif", "--out", tmp_path / "mean.tif", "--disagreement-out", tmp_path / "D.tif"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    D = cc.read_image(tmp_path / "D.tif").data
    # the same D as in Python. Member predictions made in another process differ in their last bfloat16
    # bits, and D of near-identical members is tiny (~3e-4), so pixels moved by up to 7.5e-4 in a full
    # suite run: compared as maps (correlation) and in level (the mean; a D not divided by log M is 9 % off)
    ref = out["disagreement"]
    assert D.shape == ref.shape and np.corrcoef(D.ravel(), ref.ravel())[0, 1] > 0.98
    assert float(D.mean()) == pytest.approx(float(ref.mean()), rel=0.05)
    # the mean of 8 views would hide part of the disagreement its reference levels were measured without
    from carecore.cli import main   # (in this process: the commands above ran as a user runs them)

    assert main(["predict", "--model", str(tmp_path / "ens"), "--tta", "--in", str(d / "low" / "a.tif"), "--out",
                 str(tmp_path / "mean8.tif"), "--disagreement-out", str(tmp_path / "D8.tif")]) != 0
    assert "--tta with --disagreement-out" in capsys.readouterr().err and not (tmp_path / "D8.tif").exists()


def test_ood_warning_reaches_the_report(patches, tmp_path, noisy_pair):
    """The warning's plumbing, end to end: an ensemble's reference level (measured on its validation
    patches) is stored with it; a new nuclei volume stays below 3× that level (1.2-1.6× over seeds 0-2),
    and the same volume is flagged, by name, once the stored reference is 10× lower.

    Whether unfamiliar data (stripes, noise) exceeds the factor depends on how long the members trained
    (measured: 1.5-3.4× after 4×10 steps, 0.4-2.8× after 10×20), so no test pretends it always does.
    """
    cfg = care_config("ZYX", quick=True, probabilistic=True, unet_filters=16, batch_size=8, epochs=4, steps_per_epoch=10,
                      learning_rate=2e-3)
    ens = train_ensemble(patches, cfg, tmp_path / "ens", n_members=3)
    ref = ens.info["reference"]["mean_disagreement"]
    assert 0 < ref < 1
    d = tmp_path / "data"
    for sub in ("low", "gt"):
        (d / sub).mkdir(parents=True)
    noisy, clean = noisy_pair(11)
    cc.write_image(d / "low" / "nuclei.tif", noisy, axes="ZYX")
    cc.write_image(d / "gt" / "nuclei.tif", clean, axes="ZYX")
    from carecore.qc import quality_report

    rep = quality_report(tmp_path / "ens", d / "low", d / "gt", tmp_path / "qc", baselines={})
    ratio = rep["images"][0]["mean_disagreement"] / ref
    assert rep["warnings"] == [] and ratio < 3, (rep["warnings"], ratio)
    index = tmp_path / "ens" / "ensemble.json"
    info = json.loads(index.read_text())
    info["reference"]["mean_disagreement"] = ref / 10
    index.write_text(json.dumps(info))
    rep = quality_report(tmp_path / "ens", d / "low", d / "gt", tmp_path / "qc2", baselines={})
    assert len(rep["warnings"]) == 1 and rep["warnings"][0].startswith("nuclei.tif:"), rep["warnings"]
    assert "unlike anything the model was trained on" in (tmp_path / "qc2" / "index.html").read_text()
    # no filter tuned (baselines=[], `carecore qc --baselines none`): said, so that the report does not read as
    # CARE having beaten them
    assert "No classical filter was tuned for this report" in (tmp_path / "qc2" / "index.html").read_text()



def test_qc_report_on_the_upsampling_demo(demo_root, tmp_path, monkeypatch):
    """Upsampling is evaluable (trust issue, item 11): the restoration lies on the ground truth's grid, and
    the input and the filters are the coarse stack interpolated as the model's training inputs were."""
    from carecore.qc import quality_report

    d = demo_root / "upsampling"
    cfg = care_config("ZYX", quick=True, kind="upsampling", upsampling_factor=4, precision="float32")
    model = cc.create_model(cfg, tmp_path / "up")
    model.save()
    said = []
    rep = quality_report(tmp_path / "up", d / "test" / "low", d / "test" / "high", tmp_path / "qc",
                         baselines=["gaussian", "tv"], progress=lambda *event: said.append(event))
    # the tuning's count over every start's grid is said, then the images' (it was "tuning tv", with no count, for
    # minutes of NLM, and then a count of the images that stood at 0/1 while the filters were tuned)
    tuning = [e for e in said if e[2].startswith("tuning the filters: ")]
    assert [e[:2] for e in tuning] == [(i + 1, len(tuning)) for i in range(len(tuning))] and " on " in tuning[-1][2], said
    assert said[len(tuning):] == [(0, 1, "sample00.tif"), (1, 1, "sample00.tif")], said
    low = cc.read_image(d / "test" / "low" / "sample00.tif")
    truth = cc.read_image(d / "test" / "high" / "sample00.tif").data
    assert low.shape[0] * 4 == truth.shape[0]
    expect = cc.evaluate(model.on_output_grid(low.data, axes="ZYX"), truth, axes="ZYX")
    assert rep["overall"]["input"]["ssim"] == pytest.approx(expect["ssim"], abs=1e-9)
    assert set(rep["overall"]) == {"input", "gaussian", "tv", "CARE"} and rep["kind"] == "upsampling"
    # a filter best at its grid's edge and not tuned past it is said to be (a user trial wondered); the report
    # names exactly the parameters whose next step up or down was not tried
    from carecore.baselines import edge_moves

    page = (tmp_path / "qc" / "index.html").read_text()
    for name, b in rep["baselines"].items():
        tried = [r["params"] for r in b["grid"] if r["start"] == b["start_ssim"]]
        assert b["edge_ssim"] == sorted({k for k, _ in edge_moves(name, tried, b["params_ssim"], three_d=True)})
        item = page.split(f"<li><b>{name}</b>")[1].split("</li>")[0]
        assert ("best at the edge of the values tried" in item) == bool(b["edge_ssim"] or b["edge_nrmse"]), item
    assert "baselines_grid_note" not in rep   # (tuned whole)
    # an image larger than the tuning looks at: the grid is searched on a crop, and the report says so
    import carecore.baselines

    monkeypatch.setattr(carecore.baselines, "TUNING_MAX_VOXELS", truth.size // 2)
    # (and a grid of one value, not tuned past: at its edge both ways)
    monkeypatch.setitem(carecore.baselines.TUNING_GRIDS, "gaussian", [{"sigma": 1.0}])
    monkeypatch.setattr(carecore.baselines, "EDGE_REACH", (-1.0, 0.0))
    rep = quality_report(tmp_path / "up", d / "test" / "low", d / "test" / "high", tmp_path / "qc2", baselines=["gaussian"])
    assert "centred crop of at most" in rep["baselines_grid_note"]
    assert rep["baselines"]["gaussian"]["edge_ssim"] == ["sigma"], rep["baselines"]["gaussian"]
    assert "(of 3 values tried; best at the edge of the values tried for sigma, not tuned past it" in \
        (tmp_path / "qc2" / "index.html").read_text()
    import html

    assert html.escape(rep["baselines_grid_note"]) in (tmp_path / "qc2" / "index.html").read_text()


def test_qc_report_of_a_model_that_makes_other_channels(tmp_path):
    """A model taking two channels and making one (two stains in, one out) is scored alone: no input or
    filter row (neither is on the ground truth's channels), said in the report; a one-channel truth saved
    without a C axis is compared on the restoration's grid. (It stopped with a grid-shape error before.)"""
    from carecore.qc import quality_report

    rng = np.random.default_rng(0)
    for d in ("low", "gt"):
        (tmp_path / d).mkdir()
    truth = rng.random((64, 64), dtype=np.float32)
    cc.write_image(tmp_path / "low" / "a.tif", np.stack([truth + rng.normal(0, 0.2, truth.shape)] * 2), axes="CYX")
    cc.write_image(tmp_path / "gt" / "a.tif", truth, axes="YX")
    model = cc.create_model(care_config("YX", quick=True, n_channel_in=2, n_channel_out=1), tmp_path / "m")
    model.save()
    rep = quality_report(tmp_path / "m", tmp_path / "low", tmp_path / "gt", tmp_path / "qc", axes="CYX")
    assert set(rep["overall"]) == {"CARE"} and rep["baselines"] == {}, rep["overall"]
    assert np.isfinite(rep["overall"]["CARE"]["ssim"])
    assert any("takes 2 channels and makes 1" in w for w in rep["warnings"]), rep["warnings"]
    assert "takes 2 channels and makes 1" in (tmp_path / "qc" / "index.html").read_text()
    # a truth of another size still stops before anything is restored, naming the restoration's shape
    cc.write_image(tmp_path / "gt" / "a.tif", truth[:32], axes="YX")
    with pytest.raises(cc.CareError, match=r"shape \(1, 64, 64\) \(axes CYX\) but the ground truth has \(1, 32, 64\)"):
        quality_report(tmp_path / "m", tmp_path / "low", tmp_path / "gt", tmp_path / "qc2", axes="CYX")

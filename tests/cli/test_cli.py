import json
import re
import subprocess
import sys

import numpy as np
import pytest

from carecore import care_config, nuclei_volume, read_image, write_image
from carecore.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "carecore.cli", *map(str, args)], capture_output=True, text=True)


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("demo-data", "evaluate", "degrade", "patches", "lab"):
        assert cmd in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("carecore 0.")
    r = subprocess.run([sys.executable, "-m", "carecore", "--version"], capture_output=True, text=True)   # (the package)
    assert r.returncode == 0 and r.stdout.startswith("carecore 0."), r.stderr[-500:]


@pytest.fixture
def clean_tif(tmp_path):
    vol, _ = nuclei_volume((8, 32, 32), seed=0)
    return write_image(tmp_path / "clean.tif", vol, axes="ZYX")


def test_degrade_same_seed_same_bytes(tmp_path, clean_tif, capsys):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert main(["degrade", "noise", "--in", str(clean_tif), "--out", str(tmp_path / f"{name}.tif"),
                     "--photons", "5", "--read-noise", "1", "--seed", str(seed)]) == 0
    a, b, c = ((tmp_path / f"{n}.tif").read_bytes() for n in "abc")
    assert a == b and a != c
    out = capsys.readouterr()
    assert "photons per pixel: mean " in out.out and "brightest 5 (plus the background)" in out.out and "warning" not in out.err
    # one hot pixel sets the scale (a user's trial: a whole image 13 times darker, without a word)
    hot = read_image(clean_tif).data.copy()
    hot[0, 0, 0] = 40 * hot.max()
    write_image(tmp_path / "hot.tif", hot, axes="ZYX")
    assert main(["degrade", "noise", "--in", str(tmp_path / "hot.tif"), "--out", str(tmp_path / "h.tif"),
                 "--photons", "5"]) == 0
    assert "hot.tif: its brightest pixel is" in capsys.readouterr().err
    beads = read_image(clean_tif).data.copy()   # (sparse bright beads, not hot pixels: no warning)
    for z, y, x in ((2, 4, 4), (4, 20, 8), (6, 10, 24), (3, 26, 26)):
        beads[z, y:y + 3, x:x + 3] = 40 * hot.max()
    write_image(tmp_path / "beads.tif", beads, axes="ZYX")
    assert main(["degrade", "noise", "--in", str(tmp_path / "beads.tif"), "--out", str(tmp_path / "b2.tif"),
                 "--photons", "5"]) == 0
    assert "brightest pixel" not in capsys.readouterr().err
    assert main(["degrade", "noise", "--in", str(clean_tif), "--out", str(tmp_path / "z.tif"), "--photons", "0"]) == 2
    assert "--photons 0: give the expected photons" in capsys.readouterr().err
    assert main(["degrade", "anisotropic", "--in", str(clean_tif), "--out", str(tmp_path / "d.tif"),
                 "--factor", "2.5", "--psf-sigma", "1.5", "--seed", "3", "--params", str(tmp_path / "p.json")]) == 0
    assert read_image(tmp_path / "d.tif").shape == (8, 32, 32)
    assert json.loads((tmp_path / "p.json").read_text())["factor"] == 2.5


def test_evaluate_json(tmp_path, clean_tif):
    vol = read_image(clean_tif).data
    write_image(tmp_path / "n.tif", vol + 0.2 * np.random.default_rng(0).random(vol.shape), axes="ZYX")
    r = run("evaluate", "--pred", tmp_path / "n.tif", "--gt", clean_tif, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert set(m) == {"nrmse", "ssim", "psnr"} and 0 < m["ssim"] < 1
    # the lines a person reads say what each number is (a user trial asked)
    r = run("evaluate", "--pred", tmp_path / "n.tif", "--gt", clean_tif)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith(f"ssim   {m['ssim']:.4f}   (structural similarity, -1 to 1: higher is better"), lines
    assert "lower is better" in lines[0] and "dB" in lines[2], lines


@pytest.mark.parametrize("make,args,match", [
    (lambda p: p.write_bytes(b"garbage"), ["evaluate", "--pred", "{f}", "--gt", "{f}"], "not a readable TIFF"),
    (lambda p: p.write_bytes(b""), ["degrade", "noise", "--in", "{f}", "--out", "{o}", "--photons", "3"], "empty"),
    (lambda p: write_image(p, np.full((4, 16, 16), 3, np.float32), axes="ZYX"),
     ["evaluate", "--pred", "{f}", "--gt", "{f}"], "constant"),
    (lambda p: write_image(p, np.zeros((16, 16), np.float32), axes="YX"),
     ["evaluate", "--pred", "{f}", "--gt", "{f}", "--axes", "ZYXQ"], "unknown letter"),
    (lambda p: write_image(p, np.random.default_rng(0).random((16, 16), np.float32), axes="YX"),   # (a user's trial)
     ["degrade", "anisotropic", "--in", "{f}", "--out", "{o}", "--factor", "2", "--psf-sigma", "1"], "have no Z to degrade"),
    (lambda p: None, ["train", "--low", "{f}", "--high", "{f}", "--model-dir", "{o}"], "no such folder or file (--low)"),
    # an image given for the folders (a user trial was told "no such folder"), an empty folder ("no namesake")
    (lambda p: write_image(p, np.zeros((64, 64), np.float32), axes="YX"),
     ["train", "--low", "{f}", "--high", "{f}", "--model-dir", "{o}"], "bad.tif: an image, not a folder: give the folder"),
    (lambda p: p.mkdir(),
     ["train", "--low", "{f}", "--high", "{f}", "--axes", "YX", "--model-dir", "{o}"], "bad.tif holds no images"),
])
def test_bad_input_exit_2_one_line(tmp_path, make, args, match):
    f = tmp_path / "bad.tif"
    make(f)
    out = tmp_path / "out.tif"
    r = run(*[a.format(f=f, o=out) for a in args])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert match in r.stderr and "bad.tif" in r.stderr
    assert not out.exists()


def test_demo_data_and_patches(tmp_path):
    r = run("demo-data", tmp_path / "demo", "--task", "denoising3d", "--size", "tiny")
    assert r.returncode == 0, r.stderr
    d = tmp_path / "demo" / "denoising3d" / "train"
    r = run("patches", "--low", d / "low", "--high", d / "high", "--patch", "8,32,32", "--n-per-image", "4",
            "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p" / "X.npy").exists() and "fields of view" not in r.stdout
    # few validation patches are said (a trial's 3 of 64 were not): their scores rest on them
    n_val = json.loads((tmp_path / "p" / "patches.json").read_text())["n_val"]
    assert 0 < n_val < 8 and f"note: only {n_val} validation patch" in r.stdout, r.stdout
    # cut again into the same folder: said before it is replaced (a trial's was replaced unsaid)
    r = run("patches", "--low", d / "low", "--high", d / "high", "--patch", "8,32,32", "--n-per-image", "4",
            "--out", tmp_path / "p")
    assert r.returncode == 0 and f"note: {tmp_path / 'p'} exists and will be replaced when this run finishes" in r.stdout
    # a second condition of the same samples (one ground truth folder): the pairs validate together
    (d / "low2").mkdir()
    for f in (d / "low").iterdir():
        (d / "low2" / f.name).write_bytes(f.read_bytes())
    n = len(list((d / "high").iterdir()))
    r = run("patches", "--low", d / "low", d / "low2", "--high", d / "high", "--patch", "8,32,32",
            "--n-per-image", "4", "--out", tmp_path / "p2")
    assert r.returncode == 0, r.stderr
    assert f"{2 * n} image pairs show {n} fields of view" in r.stdout
    meta = json.loads((tmp_path / "p2" / "patches.json").read_text())
    blocks = [s["validation_block"] for s in meta["sources"]]
    assert blocks[:n] == blocks[n:] and any(blocks)
    # a time-lapse pair: each time point a pair, the time-lapse one field of view
    movie = read_image(next((d / "high").iterdir())).data[:, :32]
    for sub, img in (("mlow", movie + np.float32(0.1)), ("mhigh", movie)):
        (tmp_path / sub).mkdir()
        write_image(tmp_path / sub / "movie.tif", img, axes="TYX")
    r = run("patches", "--low", tmp_path / "mlow", "--high", tmp_path / "mhigh", "--patch", "32,32",
            "--n-per-image", "4", "--out", tmp_path / "p3")
    assert r.returncode == 0, r.stderr
    t = len(movie)
    assert f"{t} image pairs from 1 pair(s) of files" in r.stdout and f"{t} image pairs show 1 field of view" in r.stdout
    sources = json.loads((tmp_path / "p3" / "patches.json").read_text())["sources"]
    assert [s["frame"] for s in sources] == [{"T": k} for k in range(t)]
    assert len({json.dumps(s["validation_block"]) for s in sources}) == 1 and sources[0]["validation_block"]
    # time points saved as files, joined by --same-field: the same boxes in each
    for sub, img in (("tlow", movie + np.float32(0.1)), ("thigh", movie)):
        (tmp_path / sub).mkdir()
        for k, name in enumerate(["cell", "pos0_t0", "pos1_t0", "pos1_t1"]):
            write_image(tmp_path / sub / f"{name}.tif", img[k], axes="YX")
    args = ["patches", "--low", tmp_path / "tlow", "--high", tmp_path / "thigh", "--patch", "16,16", "--n-per-image", "8"]
    r = run(*args, "--same-field", r"(pos\d+)_t\d", "--out", tmp_path / "p4")   # the group, not the whole match
    assert r.returncode == 0, r.stderr
    assert "4 image pairs show 3 fields of view" in r.stdout and "1 file name(s) without a match" in r.stdout
    meta = json.loads((tmp_path / "p4" / "patches.json").read_text())
    assert [s["field"] for s in meta["sources"]] == [0, 1, 2, 2]
    blocks = [s["validation_block"] for s in meta["sources"]]
    assert blocks[2] == blocks[3] and blocks[2]["boxes"]
    for bad, match in (("(pos", "not a regular expression"), ("zebra", "matches none of the file names")):
        r = run(*args, "--same-field", bad, "--out", tmp_path / "p5")
        assert r.returncode == 2 and match in r.stderr and not (tmp_path / "p5").exists()
    # train makes its patches with the same fields; refused where there are no pairs of files to join
    train = ["train", "--low", tmp_path / "tlow", "--high", tmp_path / "thigh", "--axes", "YX", "--patch", "16,16",
             "--n-per-image", "8", "--epochs", "1", "--steps", "1", "--batch", "2"]
    r = run(*train, "--same-field", r"(pos\d+)_t\d", "--model-dir", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    assert "4 image pairs show 3 fields of view" in r.stdout and "1 file name(s) without a match" in r.stdout
    r = run(*train, "--model-dir", tmp_path / "m2")
    assert r.returncode == 0 and "fields of view" not in r.stdout, r.stderr
    r = run("train", "--patches", tmp_path / "p4", "--same-field", "pos", "--model-dir", tmp_path / "m3")
    assert r.returncode == 2 and "the patch folder" in r.stderr and "cut already" in r.stderr


def test_file_system_errors_are_one_line_with_status_2(tmp_path, clean_tif):
    """A user's mistake with paths is one line and exit status 2, not a traceback (trust issue, item 14)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run("degrade", "noise", "--in", clean_tif, "--out", blocker / "out.tif", "--photons", "5")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("carecore: error:") and "a_file" in r.stderr


def _noisy_pair_folders(tmp_path, seed):
    """``low/a.tif`` and ``high/a.tif`` under ``tmp_path``: a 96x96 random image and its noisy copy."""
    rng = np.random.default_rng(seed)
    for name in ("low", "high"):
        (tmp_path / name).mkdir()
    clean = rng.random((96, 96)).astype(np.float32)
    write_image(tmp_path / "high" / "a.tif", clean, axes="YX")
    write_image(tmp_path / "low" / "a.tif", (clean + rng.normal(0, 0.3, clean.shape)).astype(np.float32), axes="YX")


def test_a_refused_training_leaves_no_empty_bar_and_a_training_says_it_prepares(tmp_path, capsys):
    """A training refused before its first step ends with its error, no empty "training: 0/5 s" bar above it
    (a user trial saw empty bars above refusals); one that trains draws its bar once it prepares (the
    filters' line and the network: seconds to a minute before the first step)."""
    _noisy_pair_folders(tmp_path, seed=2)
    assert main(["patches", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--axes", "YX",
                 "--out", str(tmp_path / "p"), "--patch", "32,32", "--n-per-image", "16", "--validation", "0"]) == 0
    capsys.readouterr()
    assert main(["train", "--patches", str(tmp_path / "p"), "--model-dir", str(tmp_path / "m"), "--time-limit", "5s",
                 "--batch", "4"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "carecore: error: no validation patches: create patches with validation_fraction > 0", err
    assert main(["train", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--axes", "YX",
                 "--model-dir", str(tmp_path / "m"), "--patch", "32,32", "--batch", "4", "--n-per-image", "16",
                 "--epochs", "1", "--steps", "2"]) == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    assert re.search(r"^training: +0%.* 0/2 .*preparing: the filters' line, the network", err, re.M), err


def test_images_saved_with_their_axes_in_another_order_train_and_restore(tmp_path, capsys):
    """Images whose files record XY (saved transposed) train a YX network and are restored in their own order
    (a user trial's `--axes XY` was refused: "axes: must be 'YX' (2D) or 'ZYX' (3D), got 'XY'")."""
    from scipy.ndimage import gaussian_filter

    import carecore as cc

    rng = np.random.default_rng(4)
    clean = gaussian_filter(rng.random((96, 64)), 2).astype(np.float32)
    for name, img in (("high", clean), ("low", clean + rng.normal(0, 0.3, clean.shape).astype(np.float32))):
        (tmp_path / name).mkdir()
        write_image(tmp_path / name / "a.tif", img.T, axes="XY")
    assert main(["train", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--model-dir",
                 str(tmp_path / "m"), "--patch", "32,32", "--batch", "4", "--n-per-image", "16", "--epochs", "1",
                 "--steps", "2"]) == 0
    model = cc.load_model(tmp_path / "m")
    assert model.config.axes == "YX"
    assert main(["predict", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "low" / "a.tif"), "--out",
                 str(tmp_path / "r.tif")]) == 0
    out = cc.read_image(tmp_path / "r.tif")
    assert out.axes == "XY" and out.shape == (64, 96)
    np.testing.assert_allclose(out.data.T, model.predict(cc.read_image(tmp_path / "low" / "a.tif").data.T, axes="YX"),
                               atol=1e-5)
    capsys.readouterr()


def test_budgeted_training_from_two_channels_to_one(tmp_path, step_clock, capsys):
    """A time budget gives the fast recipe, whose smoothed residual base needs as many channels out as in:
    with 2 channels in and 1 out the CLI trains a plain (not residual) network instead of refusing.
    Its budget, on a clock where a step takes 1 s, is used up by the preparation: the model is saved and the
    exit status is 1 (it was 0, and a script went on with a network that had hardly trained: a user trial)."""
    import carecore as cc

    step_clock(1.0)

    rng = np.random.default_rng(0)
    for i in range(2):
        high = rng.random((1, 96, 96)).astype(np.float32)
        low = np.concatenate([high, 0.5 * high]) + rng.normal(0, 0.3, (2, 96, 96)).astype(np.float32)
        for name, img in (("low", low), ("high", high)):
            (tmp_path / name).mkdir(exist_ok=True)
            write_image(tmp_path / name / f"s{i}.tif", img.astype(np.float32), axes="CYX")
    rc = main(["train", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--axes", "CYX",
               "--model-dir", str(tmp_path / "m"), "--time-limit", "5s", "--patch", "32,32", "--batch", "4",
               "--n-per-image", "16"])
    said = capsys.readouterr()
    assert rc == 1 and "too few to learn from" in said.out, said.out
    assert said.err.strip().endswith(f"the model saved in {tmp_path / 'm'} has hardly trained"), said.err
    c = cc.load_model(tmp_path / "m").config
    assert (c.n_channel_in, c.n_channel_out, c.residual, c.residual_sigma, c.residual_affine) == (2, 1, False, 0.0, ())



def test_a_resumed_model_trains_for_the_budget_or_steps_asked_for(tmp_path, capsys, monkeypatch, step_clock):
    """A model saved with a budget, resumed with --epochs/--steps, trains those (not its saved budget);
    the line after "resuming" says what this run does. (The budgets on a clock where a step takes 0.05 s: long
    enough to train in on every machine.)"""
    step_clock(0.05)
    _noisy_pair_folders(tmp_path, seed=1)
    args = ["train", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--axes", "YX",
            "--model-dir", str(tmp_path / "m"), "--patch", "32,32", "--batch", "4", "--n-per-image", "16"]
    for bad, said in (("0s", "a budget must be more than 0"), ("2", "give a number with its unit"),
                      ("-1m", "--time-limit -1m: a budget must be more than 0")):   # (argparse: "expected one argument")
        assert main(args + ["--time-limit", bad]) == 2   # (0 once meant no budget: 10 x 400 steps)
        assert said in capsys.readouterr().err and not (tmp_path / "m").exists()
    assert main(args + ["--time-limit", "4s"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("time_limit: ")
    # the filters' line with its parameters as the report writes them (it was a Python dict)
    assert any(re.fullmatch(r"best classical filter on the validation patches: \w+ \((\w+=[\d.e-]+(, )?)+\) "
                            r"val_ssim [\d.]+", line) for line in out), out
    # the plan before the first step, with the schedule that the epochs' "lr" follows
    plan = [line for line in out if line.startswith("plan: about ")]
    assert len(plan) == 1 and re.search(r"steps? of 4 patches in \d+ s \(a step took [\d.]+ s\), a validation every "
                                        r"\d+ steps?; the learning rate rises from 0 to [\d.e-]+ over the first \d+% of "
                                        r"the time \(warm-up", plan[0]), out
    # a 2D model's folder given images as stacks: said as the resume's conflict (it was "patch size (32, 32) has
    # 2 values but the images have 3 spatial axes", for a patch size the user never gave)
    assert main(args + ["--time-limit", "4s", "--axes", "ZYX"]) == 2
    err = capsys.readouterr().err
    assert "already holds a model" in err and "images with spatial axes ZYX, from --axes (it takes YX)" in err, err
    assert err.strip().endswith("; or, to resume, give --axes with the images' own letters (e.g. TYX or SYX for frames "
                                "of a YX model)"), err
    # a resumed model's short budget: said, but not a failure (its earlier weights are kept)
    assert main(args + ["--time-limit", "1s"]) == 0
    err = capsys.readouterr().err
    assert "too few to learn from" in err and f"this run hardly trained the model in {tmp_path / 'm'}" in err, err
    assert main(args[:-6] + ["--epochs", "1", "--steps", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "this run: 1 epoch(s) of 2 steps" in out and out[-1].startswith("completed: "), out
    # the weights kept are named: this run's epoch, or a run before (a trial's line said neither)
    assert out[-1].startswith("completed: 4 epoch(s)") and (
        ("(epoch 4, val_ssim " in out[-1]) != ("(of a run before this one: none of this run's epochs beat it)" in out[-1])), out
    assert any(line.startswith("plan: 1 epoch(s) of 2 steps of 4 patches, each followed by a validation; the "
                               "learning rate rises from 0 to ") for line in out), out
    import carecore.models.care as care_module

    asked, train = [], care_module.CARE.train

    def spy(self, *a, **kw):
        asked.append((kw.get("time_limit"), kw.get("steps_per_epoch")))
        return train(self, *a, **kw)

    monkeypatch.setattr(care_module.CARE, "train", spy)
    assert main(args[:-6] + ["--time-limit", "4s", "--steps", "2"]) == 0   # a budget validated every 2 steps
    assert asked == [(4.0, 2)], asked
    out = capsys.readouterr().out.strip().splitlines()
    assert "this run: a time budget of 4 s, validated every 2 step(s)" in out and out[-1].startswith("time_limit: "), out
    # the resumed run's budget is its own, not what the run before left (a user trial took it for that)
    assert any("this run has a budget of its own, 4 s (the runs before trained" in line for line in out), out
    # and why its loss rises first (the cosine schedule starts again)
    assert any("warms up and falls again (a warm restart)" in line for line in out), out
    # (the epochs of 2 steps that the budget holds: tests/models/test_care.py, on a step clock)
    # CARE's best validation SSIM below the filters' line: said at the end (it was only in the scrolled lines)
    def fake(val_ssim):
        def train(self, *a, callback=None, **kw):
            callback({"kind": "baseline", "name": "median", "params": {"size": 3}, "val_ssim": 0.925})
            for k, v in enumerate(val_ssim):
                callback({"kind": "epoch", "epoch": k + 1, "epochs": 2, "loss": 0.1, "val_loss": 0.1, "val_ssim": v,
                          "lr": 1e-3})
            return care_module.TrainingResult("time_limit", "", len(val_ssim), best_val_loss=0.1)
        return train

    for scores, said in (([0.80, 0.871], True), ([0.80, 0.93], False)):
        monkeypatch.setattr(care_module.CARE, "train", fake(scores))
        assert main(args[:-6] + ["--time-limit", "4s"]) == 0
        out = capsys.readouterr().out
        assert ("CARE stayed below the best classical filter on the validation patches (SSIM 0.871 against "
                "median's 0.925)" in out) == said, out
        assert out.strip().splitlines()[-1].startswith("time_limit: "), out   # (the last line says how it ended)


def test_a_fine_tune_from_a_folder_that_is_no_model_is_one_line_and_writes_nothing(tmp_path):
    r = run("demo-data", tmp_path / "demo", "--task", "denoising3d", "--size", "tiny")
    assert r.returncode == 0, r.stderr
    d = tmp_path / "demo" / "denoising3d" / "train"
    r = run("train", "--low", d / "low", "--high", d / "high", "--axes", "ZYX", "--model-dir", tmp_path / "m",
            "--patch", "8,32,32", "--n-per-image", "8", "--epochs", "1", "--steps", "1",
            "--init-weights", tmp_path / "nowhere")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "init_weights" in r.stderr and "nowhere is not a model folder" in r.stderr
    assert not (tmp_path / "m").exists()
    # a 2D network for a 3D training: refused with both before the patches are made (from folders that do
    # not exist, which making them would have been refused for)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "config.json").write_text(json.dumps(care_config("YX").to_dict()))
    r = run("train", "--low", tmp_path / "no-low", "--high", tmp_path / "no-high", "--axes", "ZYX",
            "--model-dir", tmp_path / "m", "--epochs", "1", "--init-weights", tmp_path / "flat")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "another size of network (dimensions 3 here, 2 there; unet_kernel 3 here, 5 there)" in r.stderr, r.stderr
    assert not (tmp_path / "m").exists()


def test_train_takes_its_axes_from_the_images_or_the_patch_folder(tmp_path, capsys):
    """Without --axes, 2D pairs train a 2D model (the axes of the first low-quality image, or of the patch
    folder), not the 3D default; nothing to read them from is one line."""
    import carecore as cc

    rng = np.random.default_rng(0)
    for i in range(2):
        high = cc.nuclei_volume((4, 96, 96), seed=i)[0].max(axis=0)
        for name, img in (("low", high + rng.normal(0, 0.1, high.shape)), ("high", high)):
            (tmp_path / name).mkdir(exist_ok=True)
            write_image(tmp_path / name / f"s{i}.tif", img.astype(np.float32), axes="YX")
    assert main(["train", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--model-dir",
                 str(tmp_path / "m"), "--epochs", "1", "--steps", "1", "--n-per-image", "8", "--patch", "32,32"]) == 0
    assert cc.load_model(tmp_path / "m").config.axes == "YX"
    # a stack saved without metadata: its guessed axes are said (a time-lapse read as Z, silently, in a user's trial)
    import tifffile

    tifffile.imwrite(tmp_path / "bare.tif", np.stack([high] * 6).astype(np.float32))
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "bare.tif"), "--out",
                 str(tmp_path / "r.tif")]) == 2   # (a stack given to a 2D model: refused, --axes SYX advised)
    err = capsys.readouterr().err
    assert "note: axes ZYX guessed for" in err and "bare.tif (shape (6, 96, 96)" in err, err
    # as advised, its slices restored one by one (--axes SYX): written back as Z, not as time points (read so in Fiji)
    write_image(tmp_path / "stack.tif", np.stack([high] * 3).astype(np.float32), axes="ZYX")
    assert main(["predict", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "stack.tif"), "--axes", "SYX",
                 "--out", str(tmp_path / "r.tif")]) == 0
    back = read_image(tmp_path / "r.tif")
    assert back.axes == "ZYX" and back.shape == (3, 96, 96), (back.axes, back.shape)
    assert main(["patches", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--patch", "32,32",
                 "--n-per-image", "8", "--out", str(tmp_path / "p")]) == 0
    assert main(["train", "--patches", str(tmp_path / "p"), "--model-dir", str(tmp_path / "m2"), "--epochs", "1",
                 "--steps", "1", "--patch", "32,32"]) == 0
    assert cc.load_model(tmp_path / "m2").config.axes == "YX"
    # the model records the folder's patch size (a user trial's recorded the default 64x64), and another --patch
    # is refused (it was taken and not used)
    capsys.readouterr()
    assert main(["train", "--patches", str(tmp_path / "p"), "--model-dir", str(tmp_path / "m4"), "--epochs", "1",
                 "--steps", "1"]) == 0
    assert cc.load_model(tmp_path / "m4").config.patch_size == (32, 32)
    # few validation patches are said by train too (a trial's were said by `carecore patches` only)
    n_val = json.loads((tmp_path / "p" / "patches.json").read_text())["n_val"]
    assert 0 < n_val < 8 and f"note: only {n_val} validation patch" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["train", "--patches", str(tmp_path / "p"), "--model-dir", str(tmp_path / "m5"), "--epochs", "1",
                 "--steps", "1", "--patch", "16,16"]) == 2
    err = capsys.readouterr().err
    assert f"--patch 16,16: the patch folder {tmp_path / 'p'} holds patches of 32x32" in err, err
    assert not (tmp_path / "m5").exists()
    # a bad value is told by its flag, not by the configuration's field (a trial read "batch_size:")
    assert main(["train", "--patches", str(tmp_path / "p"), "--model-dir", str(tmp_path / "m5"), "--batch", "0"]) == 2
    assert "carecore: error: --batch: must be an integer >= 1, got 0" in capsys.readouterr().err
    # a folder's patch size the network cannot take: said as the folder's (not --patch, which was not given)
    assert main(["patches", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--patch", "30,30",
                 "--n-per-image", "8", "--out", str(tmp_path / "p30")]) == 0
    capsys.readouterr()
    assert main(["train", "--patches", str(tmp_path / "p30"), "--model-dir", str(tmp_path / "m5")]) == 2
    err = capsys.readouterr().err
    assert f"carecore: error: the patch size of the patch folder {tmp_path / 'p30'} and unet_depth: each patch side " \
           "must be divisible by" in err, err
    assert main(["patches", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--patch", "32,32",
                 "--n-per-image", "0", "--out", str(tmp_path / "p0")]) == 2
    assert "carecore: error: --n-per-image: must be >= 1, got 0" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["train", "--patches", str(tmp_path / "low"), "--model-dir", str(tmp_path / "m3")]) == 2
    assert "not a patch folder" in capsys.readouterr().err and not (tmp_path / "m3").exists()


def test_qc_baselines_option_is_checked_before_any_work(tmp_path, capsys):
    # a filter name that is not one: said at once, naming it and the names there are (nothing read or tuned)
    assert main(["qc", "--model", str(tmp_path / "m"), "--low", str(tmp_path / "l"), "--gt", str(tmp_path / "g"),
                 "--out", str(tmp_path / "o"), "--baselines", "gaussian,wiener"]) == 2
    err = capsys.readouterr().err
    assert "wiener is not one of gaussian, median, nlm, tv, bilateral" in err and not (tmp_path / "o").exists(), err



def test_an_interrupted_train_says_what_its_folder_kept(tmp_path):
    """Ctrl-C during ``carecore train``: the line says what the folder kept and how to go on (a user trial was
    told only "interrupted"); other commands, and a folder without an interrupted run card, say no more."""
    import argparse

    from carecore.cli import _kept_after_interrupt

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "run_card.json").write_text(json.dumps({"status": "interrupted", "epochs_done": 3}))
    said = _kept_after_interrupt(argparse.Namespace(command="train", model_dir=str(folder)))
    assert said == f": {folder} keeps the best weights of its 3 epoch(s) and the last ones (run the same command again to resume)"
    assert _kept_after_interrupt(argparse.Namespace(command="predict", model_dir=str(folder))) == ""
    (folder / "run_card.json").write_text(json.dumps({"status": "running", "epochs_done": 3}))
    assert _kept_after_interrupt(argparse.Namespace(command="train", model_dir=str(folder))) == ""
    assert _kept_after_interrupt(argparse.Namespace(command="train", model_dir=str(tmp_path / "none"))) == ""


def test_members_below_the_filter_are_named(capsys):
    """An ensemble whose members did not all rise above the best filter's validation SSIM names those that did not
    (the last line, "ensemble of 3 member(s)", read as all well: a user trial's member 3 stayed at 0.874 under tv's
    0.918); none of them above: said as before; all above: nothing said."""
    from carecore.cli import _say_below_line

    line = {"filter": 0.918, "name": "tv", "care": 0.93, "members": {1: 0.93, 2: 0.925, 3: 0.874}}
    _say_below_line(line, ensemble=True)
    assert capsys.readouterr().out == ("member 3 stayed below the best classical filter on the validation patches "
                                       "(SSIM 0.874 against tv's 0.918); the ensemble's mean is scored with `carecore "
                                       "qc` on held-out images\n")
    _say_below_line({**line, "care": 0.9, "members": {1: 0.9, 2: 0.8}}, ensemble=True)
    assert capsys.readouterr().out.startswith("no member of the ensemble rose above the best classical filter")
    _say_below_line({**line, "members": {1: 0.93, 2: 0.92}}, ensemble=True)
    _say_below_line({**line, "members": {}}, ensemble=False)
    assert capsys.readouterr().out == ""

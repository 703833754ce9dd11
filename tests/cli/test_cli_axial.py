"""The command line with the axial kinds (isotropic, upsampling): the voxel size against the factor, resuming
with flags that contradict the model, the messages of wrong patch sizes, ensembles and Z depths."""
import json
import re

import numpy as np
import pytest

import carecore as cc
from carecore import CareError
from carecore.cli import build_parser, main
from carecore.io import write_image

pytestmark = pytest.mark.slow

TRAIN = ["--psf-sigma", "2", "--epochs", "1", "--steps", "1", "--batch", "2", "--n-per-image", "2"]


def _stack(seed, shape=(8, 32, 32)):
    return cc.nuclei_volume(shape, seed=seed)[0].astype(np.float32)


def test_isotropic_cli_voxel_size_factor_resume_and_messages(tmp_path, capsys):
    low = tmp_path / "low"
    low.mkdir()
    write_image(low / "a.tif", _stack(1), axes="ZYX", spacing={"Z": 4.0, "Y": 1.0, "X": 1.0})
    write_image(tmp_path / "z2.tif", _stack(2), axes="ZYX", spacing={"Z": 2.0, "Y": 1.0, "X": 1.0})
    # --factor left out: the first stack's recorded ratio, said; --low a single file without --axes
    assert main(["train", "--task", "isotropic", "--low", str(low / "a.tif"), "--model-dir", str(tmp_path / "m"),
                 "--patch", "32,32"] + TRAIN) == 0
    err = capsys.readouterr().err
    assert "--factor 4 taken from the voxel size of" in err and "a.tif" in err, err
    assert cc.load_model(tmp_path / "m").config.upsampling_factor == 4
    # resuming with flags that contradict the model is refused, naming each
    assert main(["train", "--task", "isotropic", "--low", str(low / "a.tif"), "--model-dir", str(tmp_path / "m"),
                 "--factor", "2", "--psf-sigma", "1", "--epochs", "1", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--factor 2 (its axial factor is 4)" in err and "--psf-sigma 1 (it was trained with 2 px)" in err, err
    assert main(["train", "--task", "care", "--low", str(low / "a.tif"), "--model-dir", str(tmp_path / "m"),
                 "--epochs", "1", "--steps", "1"]) == 2
    assert "--task care (it is a model of kind isotropic)" in capsys.readouterr().err
    # resumes that agree: its stacks (ZYX, restored by the 2D network), or a patch folder of its 2D slices
    assert main(["train", "--task", "isotropic", "--low", str(low / "a.tif"), "--model-dir", str(tmp_path / "m"),
                 "--epochs", "1", "--steps", "1"]) == 0, capsys.readouterr().err
    from carecore.models.isotropic import IsotropicCARE

    IsotropicCARE.make_patches(cc.load_model(tmp_path / "m").config, low / "a.tif", n_patches_per_image=2,
                               out=tmp_path / "iso_patches")
    assert main(["train", "--patches", str(tmp_path / "iso_patches"), "--model-dir", str(tmp_path / "m"),
                 "--epochs", "1", "--steps", "1"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    # a stack whose voxel size records another ratio: warned at training and at prediction
    write_image(low / "b.tif", _stack(3), axes="ZYX", spacing={"Z": 2.0, "Y": 1.0, "X": 1.0})
    assert main(["train", "--task", "isotropic", "--low", str(low), "--axes", "ZYX", "--factor", "4", "--model-dir",
                 str(tmp_path / "m2"), "--patch", "32,32"] + TRAIN) == 0
    err = capsys.readouterr().err
    assert "carecore: warning: " in err and "b.tif: its voxel size (Z 2, Y 1, X 1 µm) gives a Z/X ratio of 2, " \
                                           "but --factor is 4" in err, err
    assert main(["predict", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "z2.tif"), "--out",
                 str(tmp_path / "o.tif")]) == 0
    err = capsys.readouterr().err
    assert "z2.tif: its voxel size (Z 2, Y 1, X 1 µm) gives a Z/X ratio of 2, but the model's axial factor " \
           "(upsampling_factor) is 4; the output's Z voxel size will be 2 / 4 = 0.5 µm" in err, err
    assert main(["predict", "--model", str(tmp_path / "m"), "--in", str(low / "a.tif"), "--out",
                 str(tmp_path / "o2.tif")]) == 0
    assert "warning" not in capsys.readouterr().err
    # the default patch larger than the stacks: the file and a --patch that fits
    assert main(["train", "--task", "isotropic", "--low", str(low / "a.tif"), "--factor", "4", "--model-dir",
                 str(tmp_path / "m3")] + TRAIN) == 2
    err = capsys.readouterr().err
    assert "a.tif: its lateral slices are 32 x 32 pixels" in err and "--patch 32,32" in err, err
    # an ensemble of isotropic models: told in the command's terms
    assert main(["train", "--task", "isotropic", "--low", str(low / "a.tif"), "--factor", "4", "--ensemble", "2",
                 "--model-dir", str(tmp_path / "m4"), "--patch", "32,32"] + TRAIN) == 2
    err = capsys.readouterr().err
    assert "carecore: error: --ensemble: an ensemble's members are probabilistic models" in err \
        and "isotropic models cannot be probabilistic" in err, err
    # an ensemble of fewer than 2 (0 trained one plain model without a word; 1 failed after the patches, in Python's
    # terms): refused before any work, in the command's
    for m in ("0", "1"):
        assert main(["train", "--task", "isotropic", "--low", str(low / "a.tif"), "--factor", "4", "--ensemble", m,
                     "--model-dir", str(tmp_path / "m4"), "--patch", "32,32"] + TRAIN) == 2
        err = capsys.readouterr().err
        assert f"carecore: error: --ensemble {m}: an ensemble has at least 2 members" in err, err
    assert not (tmp_path / "m4").exists()
    # without --factor and without a recorded voxel size: the error names --factor
    write_image(tmp_path / "plain.tif", _stack(4), axes="ZYX")
    assert main(["train", "--task", "isotropic", "--low", str(tmp_path / "plain.tif"), "--model-dir",
                 str(tmp_path / "m5"), "--patch", "32,32"] + TRAIN) == 2
    err = capsys.readouterr().err
    assert "--task isotropic needs --factor F" in err and "records no voxel size" in err, err
    assert main(["train", "--task", "upsampling", "--low", str(low), "--high", str(low), "--model-dir",
                 str(tmp_path / "m6")] + TRAIN) == 2
    assert "--task upsampling needs --factor F" in capsys.readouterr().err
    # an axial factor with a kind that has none, or --upsampling with another kind: refused, not another kind made
    assert main(["train", "--task", "care", "--low", str(low), "--high", str(low), "--factor", "4", "--model-dir",
                 str(tmp_path / "m7")] + TRAIN) == 2
    assert "--factor: a care model has no axial factor" in capsys.readouterr().err
    assert main(["train", "--task", "isotropic", "--low", str(low), "--upsampling", "4", "--model-dir",
                 str(tmp_path / "m8")] + TRAIN) == 2
    assert "with --task isotropic give --factor F" in capsys.readouterr().err
    assert not (tmp_path / "m7").exists() and not (tmp_path / "m8").exists()
    assert main(["train", "--task", "isotropic", "--low", str(low / "a.tif"), "--factor", "1", "--model-dir",
                 str(tmp_path / "m7"), "--patch", "32,32"] + TRAIN) == 2
    assert "carecore: error: --factor: must be > 1" in capsys.readouterr().err

    # evaluate and qc: a restoration of round(27 x 4) = 108 slices against a ground truth of 106
    for d in ("qlow", "qgt"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(0)
    write_image(tmp_path / "qlow" / "s.tif", rng.random((27, 16, 16), np.float32), axes="ZYX")
    write_image(tmp_path / "qgt" / "s.tif", rng.random((106, 16, 16), np.float32), axes="ZYX")
    assert main(["qc", "--model", str(tmp_path / "m"), "--low", str(tmp_path / "qlow"), "--gt", str(tmp_path / "qgt"),
                 "--out", str(tmp_path / "qc")]) == 2
    err = capsys.readouterr().err
    assert "round(27 input slices x factor 4) = 108 slices" in err and "first 106 slices" in err \
        and "its first 104 slices" in err, err
    (tmp_path / "qgt2").mkdir()   # a ground truth of the restoration's depth: the report is made
    write_image(tmp_path / "qgt2" / "s.tif", rng.random((108, 16, 16), np.float32), axes="ZYX")
    assert main(["qc", "--model", str(tmp_path / "m"), "--low", str(tmp_path / "qlow"), "--gt", str(tmp_path / "qgt2"),
                 "--out", str(tmp_path / "qc_ok")]) == 0, capsys.readouterr().err
    printed = capsys.readouterr()   # the tuning's minutes on stacks said before they begin (a trial thought it hung)
    assert "note: the classical filters are tuned on each image's ground truth before it is scored: minutes for a " \
           "3D stack (1 here)" in printed.err, printed.err
    # the filters' grid points counted on a bar of their own, then the image (its bar stood at "0/1 image" before)
    bars = printed.err.replace("\r", "\n")
    assert re.search(r"^filters: 100%.* (\d+)/\1 ", bars, re.M) and re.search(r"^qc: 100%.* 1/1 ", bars, re.M), bars
    assert bars.index("filters: 100%") < bars.index("qc: "), bars   # (the filters' bar closed first: in order)
    from carecore.qc import beaten_by   # the report's "CARE is beaten here" is printed too (it was in index.html only)

    said = beaten_by(json.loads((tmp_path / "qc_ok" / "report.json").read_text())["overall"])
    assert said and f"CARE is beaten here on {'; '.join(said)}" in printed.out   # (noise: an untrained model)
    from carecore.qc import quality_report   # (the same from Python)

    with pytest.raises(CareError, match=r"round\(27 input slices x factor 4\) = 108 slices.*its first 104 slices"):
        quality_report(tmp_path / "m", tmp_path / "qlow", tmp_path / "qgt", tmp_path / "qc2")
    write_image(tmp_path / "pred.tif", rng.random((108, 16, 16), np.float32), axes="ZYX")
    assert main(["evaluate", "--pred", str(tmp_path / "pred.tif"), "--gt", str(tmp_path / "qgt" / "s.tif")]) == 2
    err = capsys.readouterr().err
    assert "round(input slices x factor)" in err and "compare the restoration's first 106 slices" in err \
        and "a multiple of the factor" in err, err


def test_help_says_what_the_flags_do():
    sub = build_parser()._subparsers._group_actions[0].choices
    predict, train = sub["predict"].format_help(), sub["train"].format_help()
    assert "mixture std" not in predict and "not for ensembles" in " ".join(predict.split())
    assert "lateral (Y/X) pixels, not Z slices" in " ".join(train.split())


def test_evaluate_names_the_z_depths_in_python():
    from carecore import CareError

    with pytest.raises(CareError, match=r"crop the ground truth to its first 104 slices"):
        cc.evaluate(np.zeros((104, 16, 16), np.float32), np.zeros((106, 16, 16), np.float32), axes="ZYX")
    # the coarse stack itself (a user followed the advice above and compared it with the first 27 slices)
    with pytest.raises(CareError, match=r"looks like a coarse \(subsampled\) stack.*every 4-th"):
        cc.evaluate(np.zeros((27, 16, 16), np.float32), np.zeros((106, 16, 16), np.float32), axes="ZYX")


def test_a_ground_truth_folder_for_a_kind_that_makes_its_own_pairs_is_refused(tmp_path, capsys):
    """--high with --task isotropic was read by no one (a user trial): refused, saying why."""
    (tmp_path / "low").mkdir()
    write_image(tmp_path / "low" / "s.tif", np.zeros((8, 16, 16), np.float32), axes="ZYX")
    assert main(["train", "--task", "isotropic", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "low"),
                 "--factor", "4", "--psf-sigma", "2", "--axes", "ZYX", "--model-dir", str(tmp_path / "m")]) == 2
    assert "--high: kind 'isotropic' makes its own training pairs from the --low stacks alone" in capsys.readouterr().err


def test_degrade_anisotropic_writes_the_voxel_size_and_warns_of_a_depth_the_factor_does_not_divide(tmp_path, capsys):
    """A user trial: --voxel-size was not written (and had no help), and 106 slices at factor 4 gave a coarse
    stack whose restoration could not be compared with the original, found out only at qc."""
    write_image(tmp_path / "clean.tif", cc.nuclei_volume((10, 16, 16), seed=0)[0], axes="ZYX")
    assert main(["degrade", "anisotropic", "--in", str(tmp_path / "clean.tif"), "--out", str(tmp_path / "low.tif"),
                 "--factor", "4", "--psf-sigma", "2", "--subsampled", "--voxel-size", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "10 slices along Z are not a multiple of the factor 4" in err and "crop it to 8 slices first" in err, err
    low = cc.read_image(tmp_path / "low.tif")
    assert low.shape[0] == 3 and low.spacing["Z"] == pytest.approx(2.0)


def test_isotropic_cli_noise_given_back_or_not(tmp_path, capsys):
    """The training inputs get the stack's noise back after their blur unless --no-match-noise (a stack simulated
    from a clean one): the run card says which; the flag with another kind, or with cut patches, is refused."""
    write_image(tmp_path / "a.tif", _stack(1), axes="ZYX", spacing={"Z": 4.0, "Y": 1.0, "X": 1.0})
    for flag, folder in (([], "given"), (["--no-match-noise"], "not")):
        assert main(["train", "--task", "isotropic", "--low", str(tmp_path / "a.tif"), "--model-dir",
                     str(tmp_path / folder), "--patch", "32,32"] + TRAIN + flag) == 0
    capsys.readouterr()
    given = json.loads((tmp_path / "given" / "run_card.json").read_text())["data_sources"][0]["noise_given_back"]
    assert given["variance_per_level"] >= 0 and "variance_at_0" in given, given
    assert json.loads((tmp_path / "not" / "run_card.json").read_text())["data_sources"][0]["noise_given_back"] is None
    assert main(["train", "--task", "care", "--low", str(tmp_path / "a.tif"), "--high", str(tmp_path / "a.tif"),
                 "--model-dir", str(tmp_path / "c"), "--no-match-noise"] + TRAIN) == 2
    assert "--no-match-noise: only isotropic training (--task isotropic)" in capsys.readouterr().err

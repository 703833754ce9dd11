import subprocess
import sys

import numpy as np
import pytest

import carecore as cc
from carecore.cli import main

pytestmark = pytest.mark.slow


def test_cli_train_then_python_load_and_cli_predict(demo_root, tmp_path, capsys):
    d = demo_root / "denoising3d"
    model_dir = tmp_path / "m"
    r = subprocess.run([sys.executable, "-m", "carecore.cli", "train", "--low", d / "train/low", "--high", d / "train/high",
                        "--axes", "ZYX", "--model-dir", model_dir, "--epochs", "1", "--steps", "3", "--patch", "8,32,32",
                        "--batch", "4", "--n-per-image", "8", "--probabilistic", "--seed", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    model = cc.load_model(model_dir)
    assert model.config.probabilistic and model.config.seed == 2
    out, scale = tmp_path / "out.tif", tmp_path / "scale.tif"
    r = subprocess.run([sys.executable, "-m", "carecore.cli", "predict", "--model", model_dir, "--in", d / "test/low/sample00.tif",
                        "--out", out, "--tiles", "1,2,2", "--scale-out", scale], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    low = cc.read_image(d / "test/low/sample00.tif")
    mean_py, scale_py = model.predict(low.data, axes="ZYX", n_tiles=(1, 2, 2))
    np.testing.assert_allclose(cc.read_image(out).data, mean_py, atol=1e-4 * np.abs(mean_py).max())
    assert cc.read_image(scale).data.min() > 0
    # an image taken with another gain and offset, scaled by its own percentiles instead of the training
    # inputs' (the model's default)
    assert model.config.input_normalization == "training" and model.training_normalization is not None
    other = (low.data * 0.5 + 40).astype(np.float32)
    cc.write_image(tmp_path / "other.tif", other, axes="ZYX")
    own = tmp_path / "own.tif"
    r = subprocess.run([sys.executable, "-m", "carecore.cli", "predict", "--model", model_dir, "--in", tmp_path / "other.tif",
                        "--out", own, "--tiles", "1,2,2", "--normalization", "image"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    own_py, _ = model.predict(other, axes="ZYX", n_tiles=(1, 2, 2), normalization="image")
    np.testing.assert_allclose(cc.read_image(own).data, own_py, atol=1e-4 * np.abs(own_py).max())
    with pytest.warns(cc.CareWarning, match="far from the training inputs'"):   # said, with the remedy
        by_training, _ = model.predict(other, axes="ZYX", n_tiles=(1, 2, 2))
    assert np.abs(own_py - by_training).max() > 0.05 * np.ptp(own_py)   # the option reached predict
    # the restored mean smoothed by a sigma of the user's for this call instead of the model's own
    smoothed = tmp_path / "smoothed.tif"
    args = ["predict", "--model", str(model_dir), "--in", str(d / "test/low/sample00.tif"), "--tiles", "1,2,2"]
    assert main(args + ["--out", str(smoothed), "--output-sigma", "2"]) == 0
    smoothed_py, _ = model.predict(low.data, axes="ZYX", n_tiles=(1, 2, 2), output_sigma=2)
    np.testing.assert_allclose(cc.read_image(smoothed).data, smoothed_py, atol=1e-4 * np.abs(smoothed_py).max())
    assert np.abs(smoothed_py - mean_py).max() > 0.05 * np.ptp(mean_py)   # the option reached predict
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "no.tif"), "--output-sigma", "20"]) == 2
    assert "--output-sigma: must be a number of pixels in [0, 8] (0: no smoothing), got 20" in capsys.readouterr().err
    assert not (tmp_path / "no.tif").exists()
    # a time-lapse (T) restored in memory, time point by time point, with its scale
    movie = np.stack([low.data, other])
    cc.write_image(tmp_path / "movie.tif", movie, axes="TZYX")
    assert main(["predict", "--model", str(model_dir), "--in", str(tmp_path / "movie.tif"), "--tiles", "1,2,2",
                 "--out", str(tmp_path / "movie_out.tif"), "--scale-out", str(tmp_path / "movie_scale.tif")]) == 0
    restored = cc.read_image(tmp_path / "movie_out.tif")
    assert restored.axes == "TZYX" and restored.shape == movie.shape
    np.testing.assert_allclose(restored.data[0], mean_py, atol=1e-4 * np.abs(mean_py).max())
    np.testing.assert_allclose(restored.data[1], by_training, atol=1e-4 * np.abs(by_training).max())
    assert cc.read_image(tmp_path / "movie_scale.tif").data.shape == movie.shape
    capsys.readouterr()
    assert main(["predict", "--model", str(model_dir), "--in", str(tmp_path / "movie.tif"), "--out",
                 str(tmp_path / "no.tif"), "--samples-out", str(tmp_path / "s.tif")]) == 2
    assert "--samples-out: the samples are written along T" in capsys.readouterr().err
    # --interval with nothing that writes an interval: refused (it was ignored unsaid: a user trial)
    assert main(["predict", "--model", str(model_dir), "--in", str(tmp_path / "movie.tif"), "--out",
                 str(tmp_path / "no.tif"), "--interval", "0.5"]) == 2
    assert "--interval 0.5: the confidence of the interval that --lower-out and --upper-out write; give them too" \
        in capsys.readouterr().err
    assert not (tmp_path / "no.tif").exists()
    # a model trained in Python predicts from the CLI
    r = subprocess.run([sys.executable, "-m", "carecore.cli", "predict", "--model", model_dir, "--in", d / "test/low/sample00.tif",
                        "--out", tmp_path / "x.tif", "--axes", "YXZ"], capture_output=True, text=True)
    # (the file's own axes given in another order: warned that they relabel its dimensions, then restored in the
    # model's order and written back in the one given; such axes were refused before images saved transposed were
    # taken)
    assert r.returncode == 0 and "relabel the dimensions" in r.stderr, r.stderr[-2000:]
    given = cc.read_image(d / "test/low/sample00.tif")
    out = cc.read_image(tmp_path / "x.tif")
    assert out.axes == "YXZ" and out.shape == given.shape, (out.axes, out.shape)

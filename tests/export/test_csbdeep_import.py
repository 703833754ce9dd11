"""CSBDeep model folders become carecore model folders that predict what CSBDeep predicts."""
import json

import numpy as np
import pytest

from carecore import CareError, load_model
from carecore.export import import_csbdeep

import csbdeep  # noqa: E402,F401  (the test extra installs it: a missing CSBDeep fails, never skips)
pytestmark = pytest.mark.slow


def _csbdeep_model(basedir, name, axes, **config):
    """A CSBDeep CARE model folder as CSBDeep 0.8 writes it (config.json + weights_best.h5), with random
    weights (every bias non-zero) instead of a training run."""
    from csbdeep.models import CARE, Config

    model = CARE(Config(axes, n_channel_in=1, n_channel_out=1, train_tensorboard=False, **config), name,
                 basedir=str(basedir))
    rng = np.random.default_rng(0)
    model.keras_model.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(np.float32)
                                   for w in model.keras_model.get_weights()])
    model.keras_model.save_weights(str(model.logdir / "weights_best.h5"))
    return model


@pytest.mark.parametrize("axes,shape,config", [
    ("ZYXC", (16, 40, 48), dict(unet_n_depth=2, unet_n_first=8, unet_kern_size=3)),
    ("YXC", (64, 48), dict(unet_n_depth=3, unet_n_first=8, unet_kern_size=5, probabilistic=True)),
])
def test_import_predicts_like_csbdeep(tmp_path, axes, shape, config):
    theirs = _csbdeep_model(tmp_path, "csb", axes, **config)
    imported = import_csbdeep(tmp_path / "csb", tmp_path / "carecore")
    assert imported.count_params() == theirs.keras_model.count_params()
    model = load_model(tmp_path / "carecore")  # the folder on disk, as a user opens it
    rng = np.random.default_rng(1)
    x = (rng.random(shape) * 300 + 50).astype(np.float32)
    spatial = axes.replace("C", "")
    ours = model.predict(x, axes=spatial)
    if config.get("probabilistic"):
        p = theirs.predict_probabilistic(x, spatial)
        np.testing.assert_allclose(ours[0], p.mean(), atol=1e-5 * np.ptp(p.mean()))
        np.testing.assert_allclose(ours[1], p.scale(), atol=1e-5 * np.ptp(p.mean()))
    else:
        ref = theirs.predict(x, spatial)
        np.testing.assert_allclose(ours, ref, atol=1e-5 * np.ptp(ref))
    assert model.run_card["imported_from"]["weights"] == "weights_best.h5"


def test_cli_import_and_refusals(tmp_path, capsys):
    from carecore.cli import main

    _csbdeep_model(tmp_path, "csb", "YXC", unet_n_depth=1, unet_n_first=4)
    assert main(["import-csbdeep", "--in", str(tmp_path / "csb"), "--model-dir", str(tmp_path / "m")]) == 0
    assert "carecore model" in capsys.readouterr().out
    with pytest.raises(CareError, match="already exists"):
        import_csbdeep(tmp_path / "csb", tmp_path / "m")
    cfg = json.loads((tmp_path / "csb" / "config.json").read_text())
    (tmp_path / "csb" / "config.json").write_text(json.dumps(dict(cfg, unet_last_activation="relu")))
    with pytest.raises(CareError, match="unet_last_activation 'relu'"):
        import_csbdeep(tmp_path / "csb", tmp_path / "m2")
    with pytest.raises(CareError, match="weights_last.h5"):
        import_csbdeep(tmp_path / "csb", tmp_path / "m3", weights="last")
    assert main(["import-csbdeep", "--in", str(tmp_path / "nothing"), "--model-dir", str(tmp_path / "m4")]) == 2

"""An ensemble's training job says how its members ended (``carecore.training.jobs``): the app's Train
step reads the job's state and message, so a budgeted ensemble must not read "completed", nor a failed
one look trained."""
import json

import numpy as np
from scipy.ndimage import gaussian_filter

import carecore as cc
from carecore.models.config import care_config
from carecore.training.jobs import STATES_DONE, ensemble_outcome, run_job


def test_the_outcome_follows_the_members():
    budget = [{"member": i, "status": "time_limit", "message": f"time budget reached after {9 + i} steps"}
              for i in (1, 2)]
    state, msg = ensemble_outcome(budget, 2, 2, False)
    assert state == "time_limit"
    assert msg == "member 1: time budget reached after 10 steps; member 2: time budget reached after 11 steps"
    mixed = [budget[0], {"member": 2, "status": "completed", "message": ""}]
    assert ensemble_outcome(mixed, 2, 2, False) == ("completed", "member 1: time budget reached after 10 steps")
    # member 3 failed (NaN) with no usable epoch: the ensemble keeps 2 of 3 and says so
    failed = mixed + [{"member": 3, "status": "nan", "message": "training stopped: the loss became nan"}]
    state, msg = ensemble_outcome(failed, 3, 2, False)
    assert state == "completed" and msg.startswith("2 of 3 members trained") and "member 3: training stopped" in msg
    # the first member failed: no ensemble, and the state is a failure the app shows as one
    state, msg = ensemble_outcome(failed[2:], 3, 0, False)
    assert state == "nan" and state not in STATES_DONE
    assert msg.startswith("an ensemble needs at least 2 trained members, 0 of 3 trained")
    assert ensemble_outcome([], 3, 1, True) == ("stopped", "stopped with 1 of 3 members: an ensemble needs at "
                                                           "least 2, none was saved")


def test_a_budgeted_ensemble_job_ends_on_its_budget(tmp_path):
    """Two members share a budget: each ends on its half, and the job's status says so."""
    rng = np.random.default_rng(0)
    clean = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    cc.create_patches([(noisy, clean)], (32, 32), axes="YX", n_patches_per_image=16, out=tmp_path / "patches")
    config = care_config("YX", quick=True, probabilistic=True, time_limit=8.0, residual_sigma=1.0,
                         precision="float32")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "job.json").write_text(json.dumps(
        {"config": config.to_dict(), "patches": str(tmp_path / "patches"), "ensemble": 2}))
    status = run_job(tmp_path / "job")
    assert [e["status"] for e in status["member_ends"]] == ["time_limit", "time_limit"], status
    assert status["state"] == "time_limit" and status["members"] == 2
    assert status["message"].startswith("member 1: time budget reached after ")
    assert "; member 2: time budget reached after " in status["message"]
    assert json.loads((tmp_path / "job" / "status.json").read_text())["state"] == "time_limit"
    assert (tmp_path / "job" / "ensemble" / "member02" / "manifest.json").exists()


def test_the_cli_says_how_an_ensemble_ended(tmp_path, capsys):
    """``carecore train --ensemble 2 --time-limit``: the members share the budget and the last line says so."""
    from carecore.cli import main

    rng = np.random.default_rng(2)
    for name in ("low", "high"):
        (tmp_path / name).mkdir()
    clean = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    cc.write_image(tmp_path / "high" / "a.tif", clean, axes="YX")
    cc.write_image(tmp_path / "low" / "a.tif", (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32), axes="YX")
    rc = main(["train", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--axes", "YX",
               "--model-dir", str(tmp_path / "ens"), "--ensemble", "2", "--time-limit", "8s", "--patch", "32,32",
               "--n-per-image", "16", "--batch", "4"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0 and out.startswith(f"time_limit: ensemble of 2 member(s) in {tmp_path / 'ens'}; member 1: time "
                                      "budget reached after "), out

"""An ensemble's training job says how its members ended (``carecore.training.jobs``): the app's Train
step reads the job's state and message, so a budgeted ensemble must not read "completed", nor a failed
one look trained."""
import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import carecore as cc
from carecore.models.config import care_config
from carecore.training.jobs import STATES_DONE, run_job
from carecore.uncertainty import train_ensemble
from carecore.uncertainty.ensemble import ENSEMBLE_FILE, Ensemble, ensemble_outcome


def _end(member, status, message="", kept=True):
    return {"member": member, "status": status, "message": message, "kept": kept}


def test_the_outcome_follows_the_members():
    budget = [_end(1, "time_limit", "time budget reached after 10 steps"), _end(2, "time_limit", "after 11")]
    assert ensemble_outcome(budget, 2, False) == ("time_limit", "")        # as planned: nothing to add
    assert ensemble_outcome([budget[0], _end(2, "completed")], 2, False) == ("completed", "")
    # member 3 of 4 failed (NaN) before a validated epoch: left out, member 4 never trained
    nan = _end(3, "nan", "training stopped: the loss became nan", kept=False)
    state, msg = ensemble_outcome(budget + [nan], 4, False)
    assert state == "time_limit"          # the two kept members both ended on their budget
    assert msg == ("the ensemble has 2 of its 4 members; member 3 was left out (no epoch of it was validated): "
                   "training stopped: the loss became nan; member 4 was not trained")
    # a failure with a validated epoch keeps that member, and says what happened to it
    state, msg = ensemble_outcome(budget + [{**nan, "kept": True}], 3, False)
    assert state == "completed" and msg == "member 3: training stopped: the loss became nan"
    # the first member failed: no ensemble, and the state is a failure the app shows as one
    state, msg = ensemble_outcome([{**nan, "member": 1}], 3, False)
    assert state == "nan" and state not in STATES_DONE
    assert msg.startswith("no ensemble was made: it needs at least 2 trained members, 0 of 3 were trained; member 1")
    assert msg.endswith("members 2-3 were not trained")


def test_the_loss_trace_covers_the_whole_run_in_few_points():
    """The job's loss for the chart: 5,000 steps in fewer than 2,000 points from the first steps to the last
    (the old status kept the last 2,000 steps, and a chart of 3,000 started a third of the way in), each
    point the mean of the steps it stands for."""
    from carecore.training.jobs import LossTrace

    trace = LossTrace()
    for step in range(1, 5001):
        trace.add(step, float(step % 7))
    steps = [p[0] for p in trace.points]
    assert len(steps) < 2000 and steps[0] <= 4 and steps[-1] >= 4990 and steps == sorted(steps)
    assert trace.stride == 4 and abs(np.mean([p[1] for p in trace.points]) - 3.0) < 0.01
    trace.add(5001, 100.0)                               # a step not yet averaged into a point is shown
    assert trace.view()[-1] == [5001, 100.0] and trace.points[-1][0] == 5000
    with pytest.raises(ValueError, match="even"):
        LossTrace(limit=3)


def test_a_stop_between_members_ends_the_ensemble_as_stopped(tmp_path):
    """A stop request that comes between two members (after one finished) is a stop, not an error, and
    an index left from an earlier training of the folder does not survive it."""
    rng = np.random.default_rng(0)
    clean = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    patches = cc.create_patches([(noisy, clean)], (32, 32), axes="YX", n_patches_per_image=16)
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / ENSEMBLE_FILE).write_text(json.dumps({"members": ["member01", "member02"]}))
    events = []
    config = care_config("YX", quick=True, residual_sigma=1.0, precision="float32")
    ens = train_ensemble(patches, config, tmp_path / "ens", n_members=3, epochs=1, steps_per_epoch=2,
                         callback=events.append, stop=lambda: any(e["kind"] == "end" for e in events))
    end = events[-1]
    assert ens is None and end["kind"] == "ensemble_end" and (end["state"], end["members"]) == ("stopped", 1)
    assert end["message"] == ("no ensemble was made: it needs at least 2 trained members, 1 of 3 was trained; "
                              "members 2-3 were not trained")
    assert not (tmp_path / "ens" / ENSEMBLE_FILE).exists()



def test_a_member_that_fails_loses_nothing_trained_before_it(tmp_path):
    """Member 3 raises (a full disk, a bug): members 1 and 2 stay an ensemble, and the outcome says what
    happened; with fewer than 2 members before it the error itself is raised."""
    rng = np.random.default_rng(0)
    clean = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    patches = cc.create_patches([(noisy, clean)], (32, 32), axes="YX", n_patches_per_image=16)
    config = care_config("YX", quick=True, residual_sigma=1.0, precision="float32")
    events = []

    def failing_at(member):
        def callback(e):
            events.append(e)
            if e.get("member") == member and e["kind"] == "batch":
                raise OSError("No space left on device")
        return callback

    ens = train_ensemble(patches, config, tmp_path / "ens", n_members=3, epochs=1, steps_per_epoch=2,
                         callback=failing_at(3))
    assert ens is not None and len(ens.members) == 2
    assert len(cc.load_model(tmp_path / "ens").members) == 2          # the index lists the two
    end = events[-1]
    assert (end["kind"], end["state"], end["members"]) == ("ensemble_end", "completed", 2)
    assert end["message"] == "the ensemble has 2 of its 3 members; member 3 failed: OSError: No space left on device"
    with pytest.raises(OSError, match="No space left"):
        train_ensemble(patches, config, tmp_path / "ens2", n_members=3, epochs=1, steps_per_epoch=2,
                       callback=failing_at(2))


def test_members_after_the_budget_is_used_up_are_not_trained(tmp_path, monkeypatch):
    """The ensemble's clock says the budget is spent after two members: the other two are not trained
    on no time at all (they would only blur the mean and the disagreement), and the outcome says why."""
    import carecore.uncertainty.ensemble as ensemble_module

    class Clock:   # the ensemble's own clock: 1.5 s at every reading
        now = 0.0

        def perf_counter(self):
            self.now += 1.5
            return self.now

    monkeypatch.setattr(ensemble_module, "time", Clock())
    rng = np.random.default_rng(0)
    clean = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    patches = cc.create_patches([(noisy, clean)], (32, 32), axes="YX", n_patches_per_image=16)
    events = []
    ens = train_ensemble(patches, care_config("YX", quick=True, residual_sigma=1.0, precision="float32"),
                         tmp_path / "ens", n_members=4, time_limit=4.0, callback=events.append)
    shares = [e["budget_share"] for e in events if e.get("kind") == "batch"]
    assert ens is not None and len(ens.members) == 2 and max(shares) == pytest.approx((4 - 1.5) / 4)
    end = events[-1]
    assert (end["state"], end["members"]) == ("time_limit", 2), end
    assert end["message"].endswith("members 3-4 were not trained: the budget was used up"), end["message"]


def test_a_budgeted_ensemble_job_ends_on_its_budget(tmp_path, step_clock, monkeypatch):
    """Two members share a budget: the filters' line is tuned first, then each member trains for half of
    what is left when it starts, and the job's status says so (a share long enough to train in: no note
    that the budget was too short). On a clock where a step takes 0.1 s and the filters' line 2 s: on the
    wall clock the shares' steps depended on the machine (a loaded 2-core one left too few: the note)."""
    from carecore.training import jobs
    from carecore.uncertainty import ensemble as ensemble_module

    step_clock(0.1, filters_line=2.0, also=(jobs, ensemble_module))
    rng = np.random.default_rng(0)
    clean = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    cc.create_patches([(noisy, clean)], (32, 32), axes="YX", n_patches_per_image=16, out=tmp_path / "patches")
    config = care_config("YX", quick=True, probabilistic=True, time_limit=30.0, residual_sigma=1.0,
                         precision="float32")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "job.json").write_text(json.dumps(
        {"config": config.to_dict(), "patches": str(tmp_path / "patches"), "ensemble": 2}))
    status = run_job(tmp_path / "job")
    assert (status["state"], status["members"], status["message"], status["notes"]) == ("time_limit", 2, "", []), status
    assert json.loads((tmp_path / "job" / "status.json").read_text())["state"] == "time_limit"
    ens = cc.load_model(tmp_path / "job" / "ensemble")
    shares = [m.run_card["time_limit"] for m in ens.members]
    # the first share is half of the budget less the filters' line; the second all the first left (measured:
    # 14.0 and 22.1 s: the first member's planned steps, its epochs' at most, took 5.9 s of its share)
    assert shares[0] == pytest.approx((30 - 2) / 2, abs=0.1) and shares[0] - 0.1 <= shares[1] < 28 - 1, shares
    for m in ens.members:   # each on its share, with best weights
        assert m.run_card["status"] == "time_limit" and m.run_card["validation_baseline"], m.run_card


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
    assert rc == 0 and out == f"time_limit: ensemble of 2 member(s) in {tmp_path / 'ens'}", out


def test_a_resumed_job_trains_for_the_budget_it_is_given(tmp_path):
    """The app's Resume writes the Train step's new choice into the job: a model saved with epochs x
    steps resumes for a time budget, and one saved with a budget resumes for epochs x steps."""
    rng = np.random.default_rng(0)
    clean = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    cc.create_patches([(noisy, clean)], (32, 32), axes="YX", n_patches_per_image=16, out=tmp_path / "patches")
    base = care_config("YX", quick=True, residual_sigma=1.0, precision="float32", epochs=1, steps_per_epoch=2)
    (tmp_path / "job").mkdir()

    def run(config):
        (tmp_path / "job" / "job.json").write_text(json.dumps(
            {"config": config.to_dict(), "patches": str(tmp_path / "patches"), "ensemble": 0}))
        return run_job(tmp_path / "job")

    assert run(base)["state"] == "completed"
    status = run(base.replace(time_limit=4.0))                  # resumed for a budget of 4 s
    assert (status["state"], status["time_limit"]) == ("time_limit", 4.0), status   # the app's line reads it
    model = cc.load_model(tmp_path / "job" / "model")
    assert model.run_card["time_limit"] == 4.0 and len(model.history) >= 2
    n = len(model.history)
    status = run(base.replace(epochs=1, steps_per_epoch=3))     # and again for one epoch of 3 steps
    assert (status["state"], status["time_limit"]) == ("completed", 0.0), status
    model = cc.load_model(tmp_path / "job" / "model")
    assert len(model.history) == n + 1 and "time_limit" not in model.run_card   # the card is this run's


def test_a_member_that_is_not_probabilistic_is_named(tmp_path):
    """An ensemble of a probabilistic model and a plain one names the plain one (a user trial could not tell which
    of its folders the refusal meant)."""
    prob = cc.CARE(care_config("YX", quick=True, probabilistic=True), tmp_path / "prob")
    plain = cc.CARE(care_config("YX", quick=True, probabilistic=False), tmp_path / "plain")
    with pytest.raises(cc.CareError, match=r"must be probabilistic models .*; not probabilistic: \S*plain \(trained"):
        Ensemble([prob, plain])

"""A network that stopped depending on its input is found after its epoch and started again from new
weights, or the run says it could not be (``carecore.training.dead_network``, issue 16)."""
import numpy as np
from scipy.ndimage import gaussian_filter

import carecore as cc
from carecore.models.config import care_config
from carecore.training.dead_network import Revival


def _kill(model, net=None):
    """What a bad step does: every unit of the last feature layer below zero for every input."""
    layer = (net or model.keras_model).get_layer(f"up0_conv{model.config.unet_n_conv - 1}_bias")
    layer.bias.assign(np.full(tuple(layer.bias.shape), -1e3, np.float32))


def _model(epochs):
    return cc.CARE(care_config("YX", quick=True, epochs=epochs, steps_per_epoch=5, residual_sigma=1.0,
                               precision="float32", seed=4))


def test_the_check_tells_a_dead_network_from_a_live_one(smooth_pairs):
    X = smooth_pairs(10, 2)[2]
    model = _model(1)
    model.keras_model.get_layer("head_mean").kernel.assign(np.full((1, 1, 8, 1), 0.1, np.float32))
    assert not Revival(model, X, 0).dead()
    _kill(model)
    assert Revival(model, X, 0).dead()


def test_the_check_finds_the_head_inside_a_projection():
    from carecore.models.projection import ProjectionCARE

    model = ProjectionCARE(ProjectionCARE.default_config("ZYX", precision="float32", unet_filters=8))
    X = np.random.default_rng(2).random((2, 8, 32, 32, 1)).astype(np.float32)
    check = Revival(model, X, 0)
    assert check.chain is not None and not check.dead()
    _kill(model, model.keras_model.get_layer("unet2d"))
    assert check.dead()


def test_a_dead_network_starts_again_from_new_weights_and_learns(smooth_pairs):
    data = smooth_pairs(10, 2)
    model = _model(4)
    _kill(model)
    events = []

    def record(e):
        events.append(e)
        if e["kind"] == "dead_network":   # a fresh optimizer: Adam's step count (and moments) from zero
            e["iterations"] = int(model.keras_model.optimizer.iterations.numpy())

    result = model.train(data, callback=record)
    dead = [e for e in events if e["kind"] == "dead_network"]
    assert [(e["epoch"], e["restarted"], e["seed"], e["iterations"]) for e in dead] == [(1, True, 4 + 1000, 0)]
    assert model.run_card["restarts"] == [{"epoch": 1, "seed": 1004, "left": 0.75}]
    assert "started again from new weights (seed 1004) with 75% of the training left" in result.message
    assert result.message == model.run_card["message"]
    best = min(range(4), key=lambda i: result.history[i]["val_loss"]) + 1
    assert ("did not beat the validation loss of epoch 1" in result.message) == (best == 1)
    # the new network answers its input again (a dead one validates alike every epoch), after a new warm-up
    ssim = [row["val_ssim"] for row in result.history]
    assert len(set(ssim[1:])) > 1, ssim
    lrs = [e["lr"] for e in events if e["kind"] == "batch"]
    assert lrs[5] < lrs[4] and lrs[5] < 0.1 * model.config.learning_rate


def test_restarts_are_capped_and_counted_against_the_whole_training(smooth_pairs):
    """Killed after each of the first three epochs: two restarts (7/8 and 6/8 of the steps left), then
    one note, though the network stays dead to the end."""
    model = _model(8)
    _kill(model)
    events = []

    def kill_again(e):
        events.append(e)
        if e["kind"] == "epoch" and e["epoch"] <= 3:
            _kill(model)

    result = model.train(smooth_pairs(10, 2), callback=kill_again)
    dead = [e for e in events if e["kind"] == "dead_network"]
    assert [(e["epoch"], e["restarted"]) for e in dead] == [(1, True), (2, True), (3, False)]
    assert [r["left"] for r in model.run_card["restarts"]] == [0.875, 0.75]
    assert result.message.count("had stopped learning") == 3   # epochs 4-8, dead too, add nothing


def test_a_budgeted_run_restarts_its_schedule_over_the_time_left(smooth_pairs, step_clock):
    model = cc.CARE(care_config("YX", quick=True, epochs=3, residual_sigma=1.0, precision="float32", seed=4,
                                time_limit=15))
    _kill(model)
    # the budget counted in steps of 0.25 s: on the wall clock a busy machine's slow first epoch left 31 % of
    # the budget for the restart in a full run (the assertion below wants 40-80 %)
    step_clock(0.25)
    events = []
    result = model.train(smooth_pairs(10, 2), callback=events.append)
    dead = [e for e in events if e["kind"] == "dead_network"]
    assert result.status == "time_limit" and [e["restarted"] for e in dead] == [True]
    assert 0.4 < model.run_card["restarts"][0]["left"] < 0.8, model.run_card["restarts"]
    batches = [e for e in events if e["kind"] == "batch"]
    after = next(i for i, e in enumerate(batches) if e["epoch"] == 2)
    peak = model.config.learning_rate
    # warm-up again (its first step is one 0.25 s step into a 5 % warm-up of the ~9 s left: 0.18 of the peak)
    assert batches[after - 1]["lr"] > 0.5 * peak and batches[after]["lr"] < 0.25 * peak
    assert max(e["lr"] for e in batches[after:]) > 0.5 * peak   # and the peak, in the time left
    assert result.seconds < 15 + 10


def test_a_network_dead_at_the_end_is_reported_not_hidden(smooth_pairs):
    data = smooth_pairs(10, 2)
    model = _model(1)
    _kill(model)
    events = []
    result = model.train(data, callback=events.append)
    dead = [e for e in events if e["kind"] == "dead_network"]
    assert [(e["epoch"], e["restarted"], e["seed"]) for e in dead] == [(1, False, None)]
    assert "restarts" not in model.run_card and dead[0]["message"] in result.message
    assert "had stopped learning" in result.message and "train again with another seed" in result.message
    assert Revival(model, data[2], 0).dead()


def test_a_training_job_keeps_the_note_for_the_app(tmp_path):
    """The app's training runs as a job: the note reaches its status file (and from there the Train step)."""
    import json

    from carecore.training.jobs import run_job

    rng = np.random.default_rng(1)
    clean = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    cc.create_patches([(noisy, clean)], (32, 32), axes="YX", n_patches_per_image=16, out=tmp_path / "patches")
    model = _model(2)
    _kill(model)
    model.save(tmp_path / "job" / "model")
    (tmp_path / "job" / "job.json").write_text(json.dumps(
        {"config": model.config.to_dict(), "patches": str(tmp_path / "patches"), "epochs": 2, "steps_per_epoch": 5}))
    status = run_job(tmp_path / "job")
    assert status["state"] == "completed", status
    assert len(status["notes"]) == 1 and "started again from new weights (seed 1004)" in status["notes"][0]
    assert json.loads((tmp_path / "job" / "status.json").read_text())["notes"] == status["notes"]

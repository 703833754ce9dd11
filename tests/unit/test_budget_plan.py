"""The plan of a time budget (training.events.plan_budget) against the callback that ends training.

The app's Estimate says ``plan.trained`` steps; training takes the steps ``EventCallback`` lets it take
before the deadline. Here the callback runs as Keras' ``fit`` calls it, on a clock that moves only by the
steps, validations and saves, so the two must agree exactly.
"""
import math
import random

import keras
import pytest

from carecore.training import events
from carecore.training.events import EventCallback, plan_budget


class Clock:
    now = 0.0

    def perf_counter(self):
        return self.now


def run_callback(plan, prep, s_step, s_val, monkeypatch, model, *, jitter=None, callback=None):
    """The steps and epochs of a budgeted ``fit``: after each step the deadline is checked; after each
    epoch a validation (its SSIM, then the folder saved: ``s_val`` in all) and the callback's decision.
    ``jitter()``: a factor on each step's time; ``callback``: the events."""
    clock = Clock()
    monkeypatch.setattr(events, "time", clock)
    model.stop_training = False

    def val_fn():
        clock.now += s_val - 0.3 * s_val
        return 0.5

    def save(cb):
        clock.now += 0.3 * s_val

    cb = EventCallback(epochs=plan.validations, steps=plan.steps, val_fn=val_fn, on_epoch=save,
                       deadline=plan.deadline, t_start=0.0, callback=callback)
    cb.set_model(model)
    cap = max(10 * plan.epochs, 1000)
    cb.set_params({"epochs": cap, "steps": plan.steps})
    clock.now = prep
    cb.on_train_begin()
    epochs = 0
    for epoch in range(cap):
        cb.on_epoch_begin(epoch)
        for batch in range(plan.steps):
            cb.on_train_batch_begin(batch)
            clock.now += s_step * (jitter() if jitter else 1.0)
            cb.on_train_batch_end(batch, {"loss": 1.0})
            if model.stop_training:
                break
        epochs += 1
        cb.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0 / (epoch + 1)})
        if model.stop_training:
            break
    return cb.steps_done, epochs, clock.now


@pytest.fixture(scope="module")
def model():
    m = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    m.compile(optimizer="adam", loss="mse")
    return m


def test_the_plan_is_what_the_callback_trains(monkeypatch, model):
    rng = random.Random(0)
    for _ in range(60):
        budget, prep, s_step = rng.uniform(5, 60), rng.uniform(0.5, 4), rng.uniform(0.02, 0.2)
        s_val, after = rng.uniform(0.05, 2.0), rng.uniform(0.5, 8)
        steps = rng.choice([None, rng.randint(1, 40)])
        plan = plan_budget(budget, prep, s_step, s_val, after, epochs=rng.randint(1, 12), steps_per_epoch=steps)
        trained, epochs, end = run_callback(plan, prep, s_step, s_val, monkeypatch, model)
        case = (budget, prep, s_step, s_val, after, steps, plan)
        assert (trained, epochs) == (plan.trained, plan.validations), case
        # no time left unused before the deadline beyond a step and a validation, none taken after it
        # beyond the last step (the one that reaches it, or the one step of a budget already spent) and
        # that epoch's validation
        assert plan.deadline - s_step - s_val <= end <= max(plan.deadline, prep) + s_step + s_val, case


def test_plan_edges():
    # no room at all: one step (training takes it, then the deadline ends it) and its validation
    p = plan_budget(5.0, 6.0, 0.1, 0.5, 2.0, epochs=3)
    assert (p.trained, p.validations, p.room) == (1, 1, 0)
    # exact multiples: 4 epochs of 10 steps of 0.25 s and validations of 0.5 s in 3 × 3 s + 2.5 s
    p = plan_budget(14.0, 1.0, 0.25, 0.5, 1.5, epochs=4, steps_per_epoch=10)
    assert (p.deadline, p.trained, p.validations) == (12.5, 40, 4)
    # timed steps of 0 s (a clock too coarse) do not divide by zero
    p = plan_budget(10.0, 1.0, 0.0, 0.0, 1.0, epochs=3)
    assert p.trained >= 1 and p.validations == 3
    p = plan_budget(10.0, 1.0, 0.0, 0.0, 1.0, epochs=3, steps_per_epoch=4)
    assert math.isfinite(p.trained)


def test_the_total_shown_does_not_flip_with_timing_jitter(monkeypatch, model):
    # steps that take 0.1 s give or take 15 %: the epochs the time left holds hover near whole numbers, and
    # the total in "epoch 3 of 10" must not go "of 10", "of 9", "of 10" (seen in the app)
    flips = 0
    for seed in range(20):
        rng, totals = random.Random(seed), []
        plan = plan_budget(30.0, 1.0, 0.1, 0.3, 1.0, epochs=10, steps_per_epoch=25)
        _, epochs, _ = run_callback(plan, 1.0, 0.1, 0.3, monkeypatch, model, jitter=lambda: rng.uniform(0.85, 1.15),
                                    callback=lambda e: totals.append(e["epochs"]) if e["kind"] == "epoch" else None)
        assert totals[-1] == epochs, (seed, totals)   # the last event says the epochs trained
        shown = [t for i, t in enumerate(totals[:-1]) if i == 0 or t != totals[i - 1]]
        flips += len(shown) - len(set(shown))   # a total shown, left, and shown again
    assert flips == 0


def test_the_time_left_is_paced_without_the_first_step(monkeypatch, model):
    # steps and epochs (no budget): the first step builds the graph (5 s here), the others take 0.1 s; the
    # time left said after the third step is the pace of the steps after the first (not 1.7 s a step)
    clock = Clock()
    monkeypatch.setattr(events, "time", clock)
    model.stop_training = False
    etas = []
    cb = EventCallback(epochs=2, steps=10, callback=lambda e: etas.append(e["eta"]) if e["kind"] == "batch" else None)
    cb.set_model(model)
    cb.set_params({"epochs": 2, "steps": 10})
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    for batch in range(3):
        cb.on_train_batch_begin(batch)
        clock.now += 5.0 if batch == 0 else 0.1
        cb.on_train_batch_end(batch, {"loss": 1.0})
    assert etas[0] is None and etas[2] == pytest.approx(17 * 0.1)


def test_the_plan_said_before_training_is_the_schedule_it_follows():
    """The plan's warm-up is the steps the schedule warms up in (the k-th of N at k / N, below ``warmup``: 3 of
    50 at 5 %, where rounding said 2); no warm-up is said where there is none; the plateau rule says the rate
    a resumed run begins at, not the configured one; the time of a fast step is not "0.00 s"."""
    from carecore.models.config import care_config
    from carecore.training.events import cosine_lr, plan_text

    cfg = care_config("YX", quick=True, lr_schedule="cosine", warmup=0.05)
    lr = cosine_lr(cfg.learning_rate, cfg.warmup)
    warming = sum(lr(k / 50) < lr((k + 1) / 50) for k in range(49))   # the steps before the rate's peak
    assert warming == 3 and "over the first 3 steps (warm-up" in plan_text(cfg, epochs=2, steps=25, batch_size=8)
    flat = plan_text(cfg.replace(warmup=0.0), epochs=2, steps=25, batch_size=8)
    assert "starts at 0.0004 and falls along a cosine towards 0 by the last step (no warm-up)" in flat, flat
    plateau = plan_text(cfg.replace(lr_schedule="plateau"), epochs=2, steps=25, batch_size=8, start_lr=1e-4)
    assert plateau.endswith("the learning rate starts at 0.0001 and is halved after 10 validations without "
                            "improvement"), plateau
    p = plan_budget(60.0, 5.0, 0.004, 1.0, 3.0, epochs=10)
    timed = plan_text(cfg, epochs=p.epochs, steps=p.steps, batch_size=8, budget_plan=p, s_step=0.004, prep=5.0)
    assert f"plan: about {p.trained} steps of 8 patches in 52 s (a step took 0.004 s)" in timed, timed
    assert "over the first 5% of the time" in timed and timed.endswith("to 0 at the deadline")
    # a probabilistic network's loss below 0, and what chooses its weights (not a column of the epochs' lines)
    laplace = plan_text(cfg.replace(probabilistic=True, loss="laplace"), epochs=2, steps=25, batch_size=8)
    assert laplace.endswith("the loss is the Laplace distribution's negative log-likelihood, below 0 once the "
                            "network is sure of its pixels, and the weights kept are the epoch's with the best "
                            "validation MAE of the mean"), laplace

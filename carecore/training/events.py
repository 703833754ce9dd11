"""Training progress as events, and the stop request, shared by the app, notebooks and the CLI.

``callback(event)`` receives dicts:

- ``{"kind": "preparing", "tuning", "message"}`` first, once the inputs are checked, before the preparation
  (the filters' line, unless ``tuning`` is False: tuned before, building the network, timed steps: seconds
  to a minute; :func:`preparing_event`);
- ``{"kind": "resume", "message"}`` when a saved model's training goes on from its folder;
- ``{"kind": "baseline", "name", "params", "start", "val_ssim", "tuned"}`` before the first step, where there is one:
  the best classical filter tuned on the validation patches, the line CARE has to beat
  (:meth:`~carecore.training.validation.ValidationSet.baseline`);
- ``{"kind": "batch", "epoch", "epochs", "step", "steps", "loss", "lr", "elapsed", "eta"}`` after
  every training step (``loss``: that batch's own loss; ``eta``: the seconds left, to the deadline for a
  time budget, else at the pace of the steps after the first, None after the first);
- ``{"kind": "epoch", "epoch", "epochs", "loss", "val_loss", "val_ssim", "lr", "elapsed", "eta",
  "best": bool}`` after every epoch (for a time budget ``epochs`` is the number the time left holds at
  the pace so far, updated after every epoch when it moves by more than one, and the last epoch's own
  number at the end);
- ``{"kind": "dead_network", "epoch", "restarted": bool, "seed", "message"}`` when the network stopped
  depending on its input, and training started again from new weights of ``seed`` or (the run ending,
  restarted enough, or too little left: ``seed`` None) goes on to its end
  (:mod:`carecore.training.dead_network`);
- ``{"kind": "note", "message", "reason"}``: something the user should know before training ends (a time
  budget that its preparation nearly used up: ``"reason": "short_budget"``);
- ``{"kind": "plan", "message"}`` last before the first step: the steps, validations and learning-rate
  schedule planned (:func:`plan_text`);
- ``{"kind": "end", "status": "completed" | "time_limit" | "stopped" | "early_stopped" | "nan", "message"}``.

An ensemble's members' events carry ``"member"``, ``"members"`` and, under a budget, ``"budget_start"`` and
``"budget_share"``, and the last is ``{"kind": "ensemble_end", ...}``
(:func:`~carecore.uncertainty.ensemble.train_ensemble`).

``stop()`` is polled after every step; when it returns True training ends after that step
(:meth:`~carecore.models.care.CARE.train` also polls it during its preparation, and a stop there ends
the call before the first step).

Learning-rate schedules: ``lr_fn(fraction)`` gives the rate at a fraction of the training done,
counted in steps or, for a time budget (``deadline``), in wall-clock seconds, so that the decay
ends at the deadline that ends the steps (the budget less the work after training). Without ``lr_fn``
the rate is halved after ``lr_patience`` epochs without validation improvement (CSBDeep's plateau rule).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np


def _steps(n):
    return f"{n} step{'' if n == 1 else 's'}"


class EventCallback(keras.callbacks.Callback):
    """Turns Keras' hooks into events; keeps the best weights; halves the LR on plateaus; NaN guard."""

    def __init__(self, *, epochs, steps, callback=None, stop=None, val_data=None, val_fn=None,
                 lr_patience=10, early_stopping=0, initial_epoch=0, best_val=math.inf, on_epoch=None, lr_fn=None,
                 deadline=None, t_start=None, loss_scale=1.0, revival=None, monitor="val_loss"):
        super().__init__()
        # Keras 3 (TensorFlow, MirroredStrategy) reports losses and metrics summed over the replicas
        # (measured: twice the loss on two devices, the same network): ``1 / replicas`` undoes it
        self.loss_scale = float(loss_scale)
        self.epochs, self.steps = epochs, steps
        self.callback, self.stop = callback, stop
        self.val_fn = val_fn
        self.on_epoch = on_epoch
        self.lr_patience, self.early_stopping = lr_patience, early_stopping
        self.initial_epoch = initial_epoch
        self.best_val = best_val
        self.monitor = monitor   # the logged value that chooses the best weights (and drives patience)
        self.best_weights = None
        self.wait_lr = self.wait_stop = 0
        self.status, self.message = "completed", ""
        self.rows = []
        self._epoch = initial_epoch
        self._mean = 0.0
        self.lr_fn = lr_fn
        # a time budget: training must end ``deadline`` seconds after ``t_start`` (the budget's own clock,
        # started before fit: whatever fit does before its first hook counts too); the schedule runs
        # from fit's first hook to that deadline
        self.deadline = deadline
        self.t_start = t_start
        # the dead-network check after every epoch (dead_network.Revival), and what it found
        self.revival = revival
        self.restarts = []   # {"epoch", "seed", "left"} of every restart
        self.notes = []      # sentences for the run's message
        self._dead_reported = False
        self.best_epoch = None

    def _emit(self, event):
        if self.callback is not None:
            self.callback(event)

    def _lr(self):
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_begin(self, logs=None):
        self.t0 = self.t_sched = time.perf_counter()   # t_sched: where the schedule starts (a restart moves it)
        if self.t_start is None:
            self.t_start = self.t0
        self.steps_done = 0
        self.epoch_ends = []   # the end of each epoch, seconds after t_start
        self.total_steps = (self.epochs - self.initial_epoch) * self.steps
        # the schedule's own steps (a restart starts them again over what is left) and the first rate
        self.sched_steps, self.sched_total = 0, self.total_steps
        self._t_first = None   # the end of the schedule's first step
        self.lr0 = self._lr()

    def fraction(self):
        """How much of the planned training is done: steps, or for a budget the time (the deadline, not
        a step count planned from a few timed steps, ends a budgeted run)."""
        if self.deadline:
            span = self.deadline - (self.t_sched - self.t_start)
            done = (time.perf_counter() - self.t_sched) / max(span, 1e-9)
        else:
            done = self.sched_steps / max(self.sched_total, 1)
        return float(min(1.0, max(0.0, done)))

    def left(self):
        """The share of the whole training (time to the deadline, or steps) still to come."""
        if self.deadline:
            span = self.deadline - (self.t0 - self.t_start)
            left = (self.deadline - (time.perf_counter() - self.t_start)) / max(span, 1e-9)
        else:
            left = 1.0 - self.steps_done / max(self.total_steps, 1)
        return float(min(1.0, max(0.0, left)))

    def _eta(self):
        if self.deadline:
            return max(0.0, self.deadline - (time.perf_counter() - self.t_start))
        if self.sched_steps < 2:   # the first step also builds the graph (seconds): no pace from it alone
            return None
        # the pace of the steps after the first one since the schedule (re)started (with the first, the
        # first estimates were several times too long, then fell: a trial)
        since = time.perf_counter() - self._t_first
        return since / (self.sched_steps - 1) * (self.sched_total - self.sched_steps)

    def on_train_batch_begin(self, batch, logs=None):
        f = self.fraction()
        if self.lr_fn is not None:
            self.model.optimizer.learning_rate.assign(self.lr_fn(f))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done += 1
        self.sched_steps += 1
        if self.sched_steps == 1:
            self._t_first = time.perf_counter()
        mean = float((logs or {}).get("loss", np.nan)) * self.loss_scale  # the running mean of the epoch
        loss = mean * (batch + 1) - self._mean * batch if batch else mean   # this batch's own loss
        self._mean = mean
        elapsed = time.perf_counter() - self.t0
        if not math.isfinite(loss):
            self.status = "nan"
            self.message = (f"training stopped: the loss became {loss} at epoch {self._epoch + 1}, step {batch + 1}; "
                            "the best weights so far are kept (try a lower learning rate, or check the data)")
            self.model.stop_training = True
            return
        event = {"kind": "batch", "epoch": self._epoch + 1, "epochs": self.epochs, "step": batch + 1,
                 "steps": self.steps, "loss": loss, "lr": self._lr(), "elapsed": elapsed, "eta": self._eta()}
        self._emit(event)
        if self.stop is not None and self.stop():
            self.status, self.message = "stopped", f"training stopped on request at epoch {self._epoch + 1}, step {batch + 1}"
            self.model.stop_training = True
        elif self.deadline and time.perf_counter() - self.t_start >= self.deadline:
            self.status = "time_limit"
            self.message = f"time budget reached after {_steps(self.steps_done)}; the best weights are kept"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: (v * self.loss_scale if k != "learning_rate" and isinstance(v, (int, float)) else v)
                for k, v in (logs or {}).items()}
        if self.status == "nan":
            return
        val_loss = float(logs.get("val_loss", logs.get("loss", np.nan)))
        val_ssim = float(self.val_fn()) if self.val_fn is not None else float("nan")
        score = float(logs.get(self.monitor, val_loss))
        best = math.isfinite(score) and score < self.best_val
        if best:
            self.best_val = score
            self.best_epoch = epoch + 1
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            self.wait_lr = self.wait_stop = 0
        else:
            self.wait_lr += 1
            self.wait_stop += 1
            if self.lr_fn is None and self.wait_lr >= self.lr_patience:
                self.model.optimizer.learning_rate.assign(self._lr() * 0.5)
                self.wait_lr = 0
            if self.early_stopping and self.wait_stop >= self.early_stopping and self.status == "completed":
                self.status = "early_stopped"
                self.message = f"early stopping after {self.wait_stop} epochs without validation improvement"
                self.model.stop_training = True
        elapsed = time.perf_counter() - self.t0
        row = {"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)), "val_loss": val_loss,
               "val_ssim": val_ssim, "lr": self._lr(), "elapsed": elapsed}
        self.rows.append(row)
        if self.on_epoch is not None:   # the history and best weights kept, the folder saved
            self.on_epoch(self)
        self.epoch_ends.append(time.perf_counter() - self.t_start)   # the saving included, as planned
        if self.deadline and self.status == "completed":
            # a budget ends with the deadline: the epochs left are what the time left holds at the pace
            # measured so far (the pace after the first epoch, which also pays for starting the pipeline);
            # one more is begun while a step still fits, the deadline cutting it short (its validation is
            # the last one, kept for after the deadline: stopping here would leave that time unused)
            now = self.epoch_ends[-1]
            done = len(self.epoch_ends)
            per_epoch = (now - self.epoch_ends[0]) / (done - 1) if done > 1 else now - (self.t0 - self.t_start)
            left = (self.deadline - now) / max(per_epoch, 1e-9)
            if left * max(self.steps, 1) < 1:
                self.status = "time_limit"
                self.message = f"time budget reached after {_steps(self.steps_done)}; the best weights are kept"
                self.model.stop_training = True
            else:
                # the total shown moves only when the pace says more than one epoch more or fewer: timing
                # jitter near a whole number of epochs had made it flip ("of 10", "of 9", "of 10", a trial)
                plan = epoch + 1 + max(1, math.ceil(left))
                if abs(plan - self.epochs) > 1 or self.epochs <= epoch + 1:
                    self.epochs = plan
        if self.model.stop_training or epoch + 1 >= (self.params or {}).get("epochs", math.inf):  # the last epoch
            self.epochs = epoch + 1
        self._emit({"kind": "epoch", "epochs": self.epochs, "best": best, "eta": self._eta(), **row})
        if self.revival is not None and self.status != "nan" and self.revival.dead():
            self._dead(epoch + 1)

    def _dead(self, epoch):
        """The network answers every input alike: new weights and a new schedule over what is left, or
        (too late, or restarted enough) a note, given once."""
        from .dead_network import MAX_RESTARTS, MIN_LEFT

        left = self.left()
        what = (f"after epoch {epoch} the network had stopped learning: its last layer gave one value at every "
                "pixel of the validation patches, so what the network adds to its smoothed or plain input no "
                "longer depended on the image")
        if self.model.stop_training or len(self.restarts) >= MAX_RESTARTS or left < MIN_LEFT:
            if not self._dead_reported:
                self._dead_reported = True
                why = ("the run was ending" if self.model.stop_training else
                       f"it had been started again {len(self.restarts)} times already"
                       if len(self.restarts) >= MAX_RESTARTS else "too little training was left")
                note = f"{what}; it was not started again ({why}): train again with another seed"
                self.notes.append(note)
                self._emit({"kind": "dead_network", "epoch": epoch, "restarted": False, "seed": None,
                            "message": note})
            return
        seed = self.revival.restart(len(self.restarts) + 1)
        self.restarts.append({"epoch": epoch, "seed": seed, "left": round(left, 3)})
        # the schedule (the cosine warm-up, or the plateau rule's first rate) starts again over what is left
        self.t_sched = time.perf_counter()
        self.sched_total = max(1, self.total_steps - self.steps_done)
        self.sched_steps = 0
        self.wait_lr = self.wait_stop = 0
        self.model.optimizer.learning_rate.assign(self.lr_fn(0.0) if self.lr_fn is not None else self.lr0)
        note = (f"{what}; it started again from new weights (seed {seed}) with {left:.0%} of the training left "
                "(its learning-rate schedule starting again over it)")
        self.notes.append(note)
        self._emit({"kind": "dead_network", "epoch": epoch, "restarted": True, "seed": seed, "message": note})


def cosine_lr(peak, warmup=0.05):
    """``lr(fraction)``: linear warm-up over ``warmup`` of the training, then cosine decay to 0."""

    def lr(f):
        if f < warmup:
            return peak * max(f, 1e-3) / warmup
        return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (f - warmup) / max(1 - warmup, 1e-9))))

    return lr


def plan_text(config, *, epochs, steps, batch_size, budget_plan=None, s_step=None, prep=0.0, start_lr=None):
    """What a training run is about to do, said before its first step (the ``"plan"`` event): its steps and
    validations and its learning-rate schedule, so that the ``lr`` of the epochs' lines (rising, then falling)
    is not a surprise. ``start_lr``: the plateau rule's rate where this run begins (a resumed run's last).

    Examples
    --------
    >>> from carecore.models.config import care_config
    >>> plan_text(care_config("YX", quick=True, epochs=4, steps_per_epoch=25, lr_schedule="cosine", warmup=0.1),
    ...           epochs=4, steps=25, batch_size=8)   # doctest: +NORMALIZE_WHITESPACE
    'plan: 4 epoch(s) of 25 steps of 8 patches, each followed by a validation; the learning rate rises from 0
    to 0.0004 over the first 10 steps (warm-up: the first steps at the full rate can throw the network off),
    then falls along a cosine towards 0 by the last step'
    """
    if budget_plan is not None:
        p = budget_plan
        run = (f"plan: about {_steps(p.trained)} of {batch_size} patches in {max(p.deadline - prep, 0):.0f} s "
               f"(a step took {s_step:.2g} s), a validation every {_steps(p.steps)}")
        span, end = f"{config.warmup:.0%} of the time", "to 0 at the deadline"
    else:
        run = f"plan: {epochs} epoch(s) of {_steps(steps)} of {batch_size} patches, each followed by a validation"
        # the steps at a fraction below the warm-up's (the k-th step at k / total)
        span, end = _steps(math.ceil(config.warmup * epochs * steps - 1e-9)), "towards 0 by the last step"
    if config.lr_schedule != "cosine":
        rate = (f"the learning rate starts at {start_lr or config.learning_rate:g} and is halved after "
                f"{config.lr_patience} validations without improvement")
    elif config.warmup > 0:
        rate = (f"the learning rate rises from 0 to {config.learning_rate:g} over the first {span} (warm-up: the "
                f"first steps at the full rate can throw the network off), then falls along a cosine {end}")
    else:
        rate = f"the learning rate starts at {config.learning_rate:g} and falls along a cosine {end} (no warm-up)"
    if config.probabilistic:   # (a workshop's user asked whether a loss below 0 was an error)
        rate += ("; the loss is the Laplace distribution's negative log-likelihood, below 0 once the network is "
                 "sure of its pixels, and the weights kept are the epoch's with the best validation MAE of the mean")
    return f"{run}; {rate}"


def preparing_event(tuning=True):
    """The ``"preparing"`` event: ``tuning`` whether the classical filters' line is tuned now (False: it was
    tuned before, for these patches)."""
    what = ("tuning the classical filters on the validation patches (the line to beat) and building the network"
            if tuning else "building the network (the classical filters' line was tuned before)")
    return {"kind": "preparing", "tuning": bool(tuning), "message": f"preparing: {what}"}


def budget_clock(event, time_limit):
    """Where a ``"batch"`` event stands on a ``time_limit`` budget's clock (seconds), counted from the
    start of the call as the deadline is (the filters' line, graph building and timed steps included,
    which the event's ``elapsed``, counted from the first step, leaves out): the budget less the time to
    the deadline, so the work kept for after the last step (a validation, a probabilistic model's fits)
    counts as used, and the bar is full when the last step is done. An ensemble's member trains for
    ``event["budget_share"]`` seconds from ``event["budget_start"]`` into the budget
    (:func:`~carecore.uncertainty.train_ensemble` adds both).

    Examples
    --------
    >>> budget_clock({"budget_start": 4.5, "budget_share": 3.5, "eta": 1.0, "elapsed": 2.0}, 8.0)
    7.0
    """
    start, share = event.get("budget_start", 0.0), event.get("budget_share", time_limit)
    done = start + share - (event.get("eta") or 0.0)
    return float(min(max(done, 0.0), time_limit))


def planned_validations(epochs, seconds, s_val):
    """The validations a budget of ``seconds`` plans (``epochs`` asked for): at most a fifth of it goes to
    validations of ``s_val`` seconds each, so a short budget has fewer; at least one. :func:`plan_budget`
    sizes a budget's epochs by it.

    Examples
    --------
    >>> planned_validations(10, 180.0, 1.5), planned_validations(10, 5.0, 1.5)
    (10, 1)
    """
    return max(1, min(int(epochs), int(0.2 * seconds / max(s_val, 1e-9))))


def work_after_training(s_step, s_val, *, probabilistic, n_train, batch_size, chooses_sigma, views=1):
    """Seconds a time budget keeps after its last training step, from a timed step and validation: the
    last validation (and saving); for a probabilistic model, the two fits of its scale's head (best and
    last weights: a forward pass over their patches, a third of a step per batch, and building the probe
    and L-BFGS, 0.3-4 s measured), its reference scale and, where the network learned ``views`` > 1
    symmetries, the calibration of the mean over them (forward passes over validation patches, a third
    of a step per batch's worth: 0.6 s measured where this says 0.7, the app's 3-minute default on the
    small demo); and the output smoothing's choice (a pass over the validation patches and the
    smoothings). :meth:`~carecore.CARE.train` ends its steps this long before the budget does; the app's
    estimate takes it out too.

    Examples
    --------
    >>> work_after_training(0.1, 1.0, probabilistic=False, n_train=500, batch_size=8, chooses_sigma=False)
    1.0
    >>> round(work_after_training(0.1, 1.0, probabilistic=True, n_train=500, batch_size=8, chooses_sigma=True,
    ...                           views=8), 2)
    8.67
    """
    from ..models.care import TTA_FIT_PATCHES
    from ..uncertainty.ensemble import REFERENCE_PATCHES
    from ..uncertainty.scale_head import FIT_PATCHES

    seconds = s_val
    if probabilistic:
        seconds += 2 * (math.ceil(min(n_train, FIT_PATCHES) / batch_size) * s_step / 3 + 2.0)
        forward = REFERENCE_PATCHES + (views * TTA_FIT_PATCHES if views > 1 else 0)
        seconds += forward / batch_size * s_step / 3
    if chooses_sigma:
        seconds += s_val + 1.0
    return float(seconds)


@dataclass(frozen=True)
class BudgetPlan:
    """How a time budget is spent (:func:`plan_budget`): ``epochs`` of ``steps`` steps (each followed by a
    validation) planned; the ``deadline`` (seconds from the start) that ends the steps; ``room``, the steps
    from the end of the preparation to the deadline; ``trained``, the steps that training takes in them once
    the validations are taken out, and ``validations``, the epochs it begins (each ends in a validation; the
    last one's is kept for after the deadline when the deadline cuts that epoch)."""

    epochs: int
    steps: int
    deadline: float
    room: int
    trained: int
    validations: int


def plan_budget(budget, prep, s_step, s_val, after, *, epochs, steps_per_epoch=None):
    """The plan of a ``budget`` of seconds whose preparation took ``prep`` of them, from a timed step
    ``s_step`` and validation ``s_val`` and the work kept for after the last step (``after``:
    :func:`work_after_training`). :meth:`~carecore.CARE.train` trains by it and the app's Estimate
    (:func:`~carecore.training.jobs.preflight`) says its ``trained`` steps, so the two agree.

    Without ``steps_per_epoch`` the validations are :func:`planned_validations` of what the preparation
    left, spaced evenly; with it, a validation every ``steps_per_epoch`` steps and ``epochs`` is the number
    that fits. Either way the deadline, not the planned epochs, ends training (:class:`EventCallback`): the
    epoch that reaches it is cut there.

    Examples
    --------
    >>> p = plan_budget(60.0, 5.0, 0.1, 1.0, 3.0, epochs=10)
    >>> p.epochs, p.steps, p.deadline, p.trained, p.validations
    (10, 45, 57.0, 430, 10)
    """
    s_step = max(s_step, 1e-9)
    remaining = budget - prep
    if steps_per_epoch:
        steps = int(steps_per_epoch)
    else:   # validations take at most a fifth of what is left: fewer in a short budget
        epochs = planned_validations(epochs, remaining, s_val)
        steps = max(1, int((max(remaining, s_step) / epochs - s_val) / s_step))
    deadline = budget - after   # the last validation starts before the budget ends, and the fits after it
    span = max(deadline - prep, 0.0)
    if steps_per_epoch:   # the validations' spacing asked for: the epochs are what the budget holds
        epochs = max(1, int(span / (steps * s_step + s_val)))
    # the steps taken (at least one): after each step the deadline is checked, and after each epoch and its
    # validation another is begun while a step of it fits at the epochs' pace (as EventCallback decides):
    # ``full`` epochs after which that holds, then the last one, cut by the deadline or not
    epoch = steps * s_step + s_val
    full = max(0, math.floor((span - epoch / steps) / epoch + 1e-9))
    last = min(steps, max(1, math.ceil((span - full * epoch) / s_step - 1e-9)))
    trained, begun = full * steps + last, full + 1
    return BudgetPlan(int(epochs), steps, float(deadline), int(span / s_step), trained, max(begun, 1))

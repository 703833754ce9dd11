"""Training as a background process that writes its progress into a job folder.

Closing the browser tab (or the notebook) does not stop the training; any page can re-attach to a
running job by reading its status. A job folder holds::

    job.json      what to train (configuration, patch folder, epochs, ensemble size)
    status.json   written atomically as training goes: state, last event, epoch history, the loss
                  per step from the first one (averaged over more steps a point as training goes)
    job.log       the process's output
    STOP          present when a stop was requested (honoured within one training step)
    model/        the model folder (or ensemble/ for an ensemble)

Run one with :func:`start_job`; follow it with :func:`job_status`; stop it with :func:`request_stop`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from ..errors import CareError

STATES_RUNNING = ("starting", "running")
#: States of a job that ended with a usable model.
STATES_DONE = ("completed", "time_limit", "stopped", "early_stopped")


def _write_json(path, data):
    tmp = Path(str(path) + ".part")
    tmp.write_text(json.dumps(data, default=float))
    os.replace(tmp, path)


#: The most points of a training-loss curve kept for the charts (neighbours averaged in pairs beyond): a run's
#: (:class:`LossTrace`) and the earlier runs' that a resumed job carries (:func:`_earlier_losses`).
LOSS_POINTS = 2000


class LossTrace:
    """The training loss for a chart, from the first step to the last in fewer than ``limit`` points: when
    ``limit`` are reached, neighbours are averaged in pairs and each later point averages twice as many steps.
    ``points`` is ``[[step, loss], ...]``, each at the last step it averages (a chart that kept only the
    last 2,000 steps lost the start of a run of 3,000); :meth:`view` adds the steps not yet averaged into
    a point as one more.

    Examples
    --------
    >>> trace = LossTrace(limit=4)
    >>> for step in range(1, 7):
    ...     trace.add(step, float(step))
    >>> trace.points, trace.stride
    ([[2, 1.5], [4, 3.5], [6, 5.5]], 2)
    >>> trace.add(7, 7.0)
    >>> trace.view()[-1]
    [7, 7.0]
    """

    def __init__(self, limit=LOSS_POINTS):
        if limit < 2 or limit % 2:
            raise ValueError(f"LossTrace: limit must be an even number of at least 2, got {limit}")
        self.limit, self.stride, self.points, self._pending, self._last = int(limit), 1, [], [], 0

    def view(self):
        """The points, and the last steps not yet averaged into one as a point of their own."""
        if not self._pending:
            return list(self.points)
        return self.points + [[self._last, sum(self._pending) / len(self._pending)]]

    def add(self, step, loss):
        self._pending.append(float(loss))
        self._last = int(step)
        if len(self._pending) < self.stride:
            return
        self.points.append([int(step), sum(self._pending) / len(self._pending)])
        self._pending = []
        if len(self.points) >= self.limit:
            self.points = [[b[0], (a[1] + b[1]) / 2] for a, b in zip(self.points[0::2], self.points[1::2])]
            self.stride *= 2


def model_path(job_dir):
    """The trained model (or ensemble) folder of a job."""
    job = json.loads((Path(job_dir) / "job.json").read_text())
    return Path(job_dir) / ("ensemble" if job.get("ensemble", 0) >= 2 else "model")


def _earlier_losses(status):
    """The training loss of the runs before, in epochs (``[[epoch, loss], ...]``), from a job's status: what it
    carries (``earlier_losses``) and its own run's (``losses`` in steps, placed after its ``earlier_epochs`` by its
    ``steps_per_epoch``), at most :data:`LOSS_POINTS` (a user trial found the first run's curve gone from the
    app's charts after Stop and Resume).

    >>> _earlier_losses({"earlier_losses": [[1.0, 0.5]], "earlier_epochs": 2, "steps_per_epoch": 4,
    ...                  "losses": [[2, 0.4], [4, 0.3]]})
    [[1.0, 0.5], [2.5, 0.4], [3.0, 0.3]]
    >>> len(_earlier_losses({"earlier_losses": [[k, 1.0] for k in range(5001)]}))
    1251
    """
    ran = status.get("steps_per_epoch")
    points = [list(p) for p in status.get("earlier_losses") or []] + (
        [[float(status.get("earlier_epochs") or 0) + s / ran, loss] for s, loss in status.get("losses") or []]
        if ran else [])
    while len(points) > LOSS_POINTS:   # (each point at the last step it averages, as LossTrace's)
        points = [[b[0], (a[1] + b[1]) / 2] for a, b in zip(points[::2], points[1::2])] + \
            ([points[-1]] if len(points) % 2 else [])
    return points


def start_job(job_dir, patches_dir, config, *, epochs=None, steps_per_epoch=None, ensemble=0, python=None):
    """Start training in a separate process; returns the process id.

    Parameters
    ----------
    job_dir : str or Path
        The job folder (created). If it holds a finished single model, training resumes from it.
    patches_dir : str or Path
        A patch folder written by :func:`~carecore.create_patches` (``out=``) or ``PatchSet.save``.
    config : CareConfig
    ensemble : int
        Train this many probabilistic members instead of one model (0 or 1: one model).
    """
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    st = job_status(job_dir)
    if st.get("alive"):
        raise CareError(f"{job_dir}: a training job is already running (pid {st.get('pid')})")
    if not (Path(patches_dir) / "patches.json").exists():
        raise CareError(f"{patches_dir}: not a patch folder (no patches.json)")
    (job_dir / "STOP").unlink(missing_ok=True)
    _write_json(job_dir / "job.json", {"config": config.to_dict(), "patches": str(Path(patches_dir).resolve()),
                                       "epochs": epochs, "steps_per_epoch": steps_per_epoch, "ensemble": int(ensemble)})
    earlier = _earlier_losses(st)   # (a resumed model's runs before: kept for the charts)
    _write_json(job_dir / "status.json", {"state": "starting", "started": time.time(), "history": [], "losses": [],
                                          **({"earlier_losses": earlier} if earlier else {})})
    log = open(job_dir / "job.log", "ab")
    proc = subprocess.Popen([python or sys.executable, "-m", "carecore.training.jobs", str(job_dir)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    st = json.loads((job_dir / "status.json").read_text())
    st["pid"] = proc.pid
    _write_json(job_dir / "status.json", st)
    return proc.pid


def _alive(pid):
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    try:  # a finished child that was not reaped yet is a zombie: not alive
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def job_status(job_dir):
    """The job's status dict (``state``, ``history``, ``losses``, ``event``, ``message``, ``alive``)."""
    f = Path(job_dir) / "status.json"
    if not f.exists():
        return {"state": "none", "alive": False, "history": [], "losses": []}
    try:
        st = json.loads(f.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        st = None
    if not isinstance(st, dict):
        return {"state": "unknown", "alive": False, "history": [], "losses": [],
                "message": f"{f}: unreadable job status"}
    st["alive"] = st.get("state") in STATES_RUNNING and _alive(st.get("pid"))
    if st.get("state") in STATES_RUNNING and not st["alive"] and st.get("pid"):
        st["state"] = "died"
        st.setdefault("message", "the training process ended unexpectedly; see job.log")
    elif st.get("state") in STATES_RUNNING and not st.get("pid") and time.time() - f.stat().st_mtime > NEVER_STARTED_AFTER:
        st["state"] = "died"   # its process never started (it records its pid within seconds)
        st.setdefault("message", "the training process never started; see job.log")
    return st


#: Seconds after which a job still "starting" without a process id is taken to have never started.
NEVER_STARTED_AFTER = 60.0


def request_stop(job_dir):
    """Ask a running job to stop after its current step."""
    (Path(job_dir) / "STOP").write_text("stop requested\n")


def find_jobs(root):
    """Job folders under ``root`` (one level), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    jobs = [p for p in root.iterdir() if (p / "job.json").exists()]
    return sorted(jobs, key=lambda p: (p / "job.json").stat().st_mtime, reverse=True)


def run_job(job_dir):
    """The body of the background process (also callable in-process, e.g. from tests)."""
    from ..data.patches import load_patches
    from ..models.config import CareConfig
    from ..models.folder import load_model_folder
    from ..models.kinds import create_model
    from ..uncertainty import train_ensemble

    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    status = json.loads((job_dir / "status.json").read_text()) if (job_dir / "status.json").exists() else {}
    # the earlier runs' training loss in this folder, in epochs (a resumed model's): kept until this run says
    # whether it resumes (a failure before keeps it for the next)
    earlier_losses = _earlier_losses(status)
    status.pop("steps_per_epoch", None)
    if earlier_losses:
        status["earlier_losses"] = earlier_losses
    status.update(state="running", pid=os.getpid(), history=[], losses=[], notes=[], message="")
    status.pop("members", None)   # an ensemble's, from an earlier run in this folder
    status.pop("earlier_epochs", None)
    status.pop("event", None)     # and an earlier run's last event
    # the budget the app's running line reads, from the first write on (a configuration that is not valid
    # ends the job below, as an error)
    try:
        status["time_limit"] = float(job["config"].get("time_limit") or 0.0)
    except (AttributeError, KeyError, TypeError, ValueError):
        status["time_limit"] = 0.0
    last_write = [0.0]
    step = [0]
    trace = LossTrace()

    def write(force=False):
        now = time.time()
        if force or now - last_write[0] > 0.5:
            status["losses"] = trace.view()
            status["updated"] = now
            _write_json(job_dir / "status.json", status)
            last_write[0] = now

    def on_event(e):
        if e["kind"] == "batch":
            step[0] += 1
            trace.add(step[0], e["loss"])
            status["event"] = e
            status["steps_per_epoch"] = e.get("steps")   # (this run's loss placed in epochs, should it be resumed)
            write()
        elif e["kind"] == "epoch":
            status["history"].append({k: e.get(k) for k in ("epoch", "loss", "val_loss", "val_ssim", "lr", "member")})
            status["event"] = e
            write(force=True)
        elif e["kind"] == "preparing":   # (the app says so until the first step: seconds to a minute)
            status["event"] = e
            write(force=True)
        elif e["kind"] == "baseline":   # the best tuned classical filter on the validation patches
            status["baseline"] = {k: e.get(k) for k in ("name", "params", "start", "val_ssim")}
            write(force=True)
        elif e["kind"] == "resume":
            status["resume"] = e.get("message", "")
        elif e["kind"] in ("dead_network", "note"):   # shown by the app until the next job
            member = f"member {e['member']}: " if e.get("member") else ""
            status.setdefault("notes", []).append(member + e.get("message", ""))
            write(force=True)
        elif e["kind"] == "end":
            status["message"] = e.get("message", "")
        elif e["kind"] == "ensemble_end":   # how the ensemble's training ended, from its members'
            status.update(state=e["state"], message=e["message"], members=e["members"])
            if e.get("traceback"):   # a member that failed: for whoever looks into it
                status["traceback"] = e["traceback"]
            if e["message"] and e["state"] in ("completed", "time_limit"):   # shown by the app as a note
                status["notes"].append(e["message"])

    stop = lambda: (job_dir / "STOP").exists()  # noqa: E731
    write(force=True)
    try:
        config = CareConfig.from_dict(job["config"])
        patches = load_patches(job["patches"])
        if job.get("ensemble", 0) >= 2:
            status.pop("earlier_losses", None)   # (an ensemble trains its members anew)
            # its last event ("ensemble_end") sets the state and message
            train_ensemble(patches, config, job_dir / "ensemble", n_members=job["ensemble"], callback=on_event,
                           stop=stop, epochs=job.get("epochs"), steps_per_epoch=job.get("steps_per_epoch"),
                           time_limit=config.time_limit or None)
        else:
            mdir = job_dir / "model"
            model = load_model_folder(mdir, weights="last") if (mdir / "manifest.json").exists() else create_model(config, mdir)
            # a resumed model's epochs before this run stay in the record (a user trial: after Stop and Resume the
            # charts had lost them, and drew the new ones from epoch 1); the training loss of this run's steps
            # follows them ("earlier_epochs")
            status["history"] = [{k: h.get(k) for k in ("epoch", "loss", "val_loss", "val_ssim", "lr")}
                                 for h in model.history]
            status["earlier_epochs"] = len(model.history)
            # (epochs x, loss y: the app draws them before this run's; none past the epochs the model kept: a run that
            # died or went NaN kept fewer than it trained)
            kept = [p for p in earlier_losses if p[0] <= len(model.history)]
            if kept:
                status["earlier_losses"] = kept
            else:
                status.pop("earlier_losses", None)
            # the job's own budget (or epochs x steps), not the one a resumed model was saved with: the app's
            # Resume trains for what the Train step shows
            result = model.train(patches, epochs=job.get("epochs") or config.epochs, time_limit=config.time_limit,
                                 steps_per_epoch=job.get("steps_per_epoch")   # a budget's own planning
                                 or (None if config.time_limit else config.steps_per_epoch),
                                 callback=on_event, stop=stop)
            status["state"] = result.status
            status["message"] = result.message
    except CareError as e:
        status.update(state="error", message=str(e))
    except Exception as e:  # the job must always leave a readable final state
        status.update(state="error", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    status["finished"] = time.time()
    write(force=True)
    return status


def preflight(config, patches, *, members=1):
    """Estimates before training: patch memory, seconds per step (timed) and per epoch;
    with a time budget, the steps it holds (each of ``members`` ensemble members: their share's) once
    what :meth:`~carecore.CARE.train` does around its steps is taken out: its preparation, timed here by
    doing it (the filters' line on the validation patches, the smoothed input to start from, building the
    network and its graphs, timing three steps and a validation: ``seconds_preparation``, the filters' line
    counted once for an ensemble as :func:`~carecore.uncertainty.train_ensemble` does), the validations the budget plans
    and the work after the last step (``seconds_per_validation``, ``validations``, ``seconds_after_training``).
    It estimates a fresh training (a resumed one keeps its smoothed input: it does not choose it again).
    ``room`` is the steps from the preparation's end to the deadline; training warns below
    :data:`~carecore.models.care.MIN_BUDGET_STEPS` of them.
    """
    from ..models.care import parse_duration
    from ..models.kinds import create_model
    from .events import plan_budget, work_after_training
    from .validation import ValidationSet, cached_line

    members = max(int(members), 1)
    if members > 1:
        from ..uncertainty.ensemble import member_config

        config = member_config(config)
    X, Y = patches.train
    mem = (X.nbytes if hasattr(X, "nbytes") else 0) + (Y.nbytes if hasattr(Y, "nbytes") else 0)
    budget = parse_duration(config.time_limit)
    t = time.perf_counter()
    model = create_model(config)
    # a background job creates its model before the budget starts; an ensemble its members within it,
    # before each member's share is taken from what is left
    create = time.perf_counter() - t if members > 1 else 0.0
    t_prep = time.perf_counter()
    model._choose_residual_base(X, Y)   # the network training trains: its smoothed input chosen as training does
    model._compile(config.learning_rate)
    if budget and len(patches.val[0]) == 0:
        raise CareError("no validation patches: create patches with validation_fraction > 0")
    val = ValidationSet(*patches.val, model) if budget else None
    step, s_val = model._time_step_and_validation(X, Y, val, model._validation_dataset(val) if budget else None,
                                                  seed=config.seed + 10_000, saves=True)   # as training times them
    out = {"parameters": model.count_params(), "patch_memory_mib": mem / 2**20, "seconds_per_step": step,
           "seconds_per_epoch": step * config.steps_per_epoch,
           "seconds_total": step * config.steps_per_epoch * config.epochs}
    if budget:  # what a budget buys: its share less the preparation, validations and the work after
        prep = time.perf_counter() - t_prep
        # the filters' line, unless tuned before (a training on these patches keeps it with them); an
        # ensemble tunes it once, before the budget is shared, a single model within its budget
        line = 0.0
        if not cached_line(patches.meta, model):
            t = time.perf_counter()
            model._adopt_records(patches.meta)   # (as training does: a measured PSF's starts)
            val.baseline()
            line = time.perf_counter() - t
        share = max(budget - line - create, 0.0) / members if members > 1 else budget
        prep += line if members == 1 else 0.0
        after = work_after_training(step, s_val, probabilistic=config.probabilistic, n_train=len(X),
                                    batch_size=config.batch_size, chooses_sigma=model._chooses_output_sigma(),
                                    views=model._views_to_learn(X))
        plan = plan_budget(share, prep, step, s_val, after, epochs=config.epochs)   # as training plans it
        out.update(seconds_total=budget, members=members, seconds_preparation=prep, seconds_filters_line=line,
                   seconds_per_validation=s_val, validations=plan.validations, seconds_after_training=after,
                   steps_in_budget=plan.trained, room=plan.room)
    return out


if __name__ == "__main__":
    final = run_job(sys.argv[1])
    sys.exit(0 if final.get("state") in STATES_DONE else 1)

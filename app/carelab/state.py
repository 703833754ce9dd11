"""The wizard's state: plain Python (traitlets), testable without a browser.

Every action is a method that calls one carecore function and stores what the views show. File
access is confined to ``data_root``. Errors from carecore (``CareError``) are caught by the views
and shown next to the step; the state stays usable.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
from traitlets import Bool, Dict, Enum, Float, HasTraits, Int, List, Unicode, observe, validate

import carecore as cc
from carecore import CareError

#: Training budgets offered in step 2 (label, seconds); 0 is "custom": epochs × steps as typed.
BUDGETS = [("Quick · 3 min", 180.0), ("Standard · 20 min", 1200.0), ("Thorough · 60 min", 3600.0),
           ("Custom (epochs × steps)", 0.0)]
#: The extra budget offered in quick mode (tests and demos on tiny data).
QUICK_BUDGET = ("Test · 20 s", 20.0)

TASKS = {
    "denoising3d": {"label": "Denoising 3D", "axes": "ZYX", "patch": (16, 64, 64), "quick_patch": (8, 32, 32)},
    "denoising2d": {"label": "Denoising 2D", "axes": "YX", "patch": (128, 128), "quick_patch": (32, 32)},
    "upsampling": {"label": "Axial upsampling (3D)", "axes": "ZYX", "patch": (16, 64, 64), "quick_patch": (8, 32, 32)},
}


def filter_label(name, params):
    """``tv (weight=0.2)``: a classical filter with its chosen parameters."""
    text = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}"
                     for k, v in (params or {}).items())
    return f"{name} ({text})" if text else name


class LabState(HasTraits):
    data_root = Unicode()
    quick = Bool(False)
    # step 1: data
    task = Enum(list(TASKS), default_value="denoising3d")
    source = Enum(["folders", "simulate"], default_value="folders")
    low_dir = Unicode()
    high_dir = Unicode()
    axes = Unicode("ZYX")
    axes_error = Unicode("")
    pairs = List()                  # rows: name, shape low, shape high, shift, aligned
    unmatched = Unicode("")
    light_dose = Float(8.0)         # peak photons for the simulator
    axial_factor = Float(4.0)
    psf_sigma = Float(2.0)
    sim_seed = Int(0)
    patches_dir = Unicode()
    n_patches = Int(0)
    # step 2: train
    time_limit = Float(180.0)   # seconds for the whole training (0: custom, epochs × steps below)
    epochs = Int(10)          # defaults sized for a first run on a laptop CPU: a few minutes
    steps = Int(25)
    batch_size = Int(8)
    filters = Int(16)
    probabilistic = Bool(True)
    ensemble = Int(0)
    learning_rate = Float(1e-3)   # short first runs converge faster than with CSBDeep's 4e-4
    precision = Enum(["mixed_bfloat16", "float32"], default_value="mixed_bfloat16")
    seed = Int(0)
    preflight = Dict()
    job_dir = Unicode()
    job_state = Unicode("none")
    job_message = Unicode("")
    history = List()
    losses = List()
    baseline = Dict()             # the best tuned classical filter on the validation patches
    last_event = Dict()           # the job's last progress event (epochs, steps per epoch, elapsed, eta)
    resume_note = Unicode("")
    progress_epoch = Int(0)
    progress_step = Int(0)
    # step 3: restore
    model_dir = Unicode()
    input_path = Unicode()
    restored_path = Unicode()
    metrics = Dict()
    metrics_note = Unicode("")
    restore_note = Unicode("")    # what the restore thread is doing now
    model_problems = List()       # model folders that were not offered, and why
    restore_done = Int(0)
    restore_total = Int(0)
    # step 5: reliability
    reliability_ready = Bool(False)

    def __init__(self, data_root, *, quick=None, **kw):
        root = Path(data_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        if quick is None:
            quick = os.environ.get("CARELAB_QUICK", "") not in ("", "0")
        super().__init__(data_root=str(root), quick=bool(quick), **kw)
        if self.quick:
            self.filters, self.epochs, self.steps, self.batch_size = 8, 2, 6, 4
            self.time_limit = QUICK_BUDGET[1]
        self.low = self.high = None          # arrays for the previews
        self.restored = self.scale = self.members = None
        self.input_image = self.truth = None
        self.image_axes, self.model_config = "", None
        self.readouts = {}
        self._poller = None
        self.set_task_defaults()

    # -- paths -----------------------------------------------------------------------------
    def resolve(self, path, *, must_exist=True):
        """A path inside the data root (relative paths are taken from it); anything else is refused."""
        root = Path(self.data_root)
        p = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
        if p != root and root not in p.parents:
            raise CareError(f"{path}: outside the data root {root}; choose a file or folder inside it")
        if must_exist and not p.exists():
            raise CareError(f"{path}: does not exist under the data root")
        return p

    def rel(self, path):
        return str(Path(path).resolve().relative_to(Path(self.data_root)))

    def inside(self, path):
        """``path`` resolved inside the data root, or None (a link out of it, a missing file)."""
        try:
            return self.resolve(path)
        except (CareError, OSError, RuntimeError):   # RuntimeError: a symlink loop
            return None

    def tif_files(self, sub=""):
        """TIFF files under the data root (links that lead out of it are left out)."""
        root = self.resolve(sub) if sub else Path(self.data_root)
        found = (self.inside(p) for p in root.rglob("*.tif") if not any(part.startswith(".") for part in p.parts))
        return sorted({self.rel(p) for p in found if p is not None and p.is_file()})

    # -- step 1 ----------------------------------------------------------------------------
    @observe("task")
    def _task_changed(self, change):
        self.set_task_defaults()

    def set_task_defaults(self):
        t = TASKS[self.task]
        self.axes = t["axes"]
        low = Path(self.data_root) / self.task / "train" / "low"   # the demo data of this task
        if low.exists():
            self.low_dir = self.rel(low)
            self.high_dir = self.rel(low.parent / "high")
        self.pairs, self.patches_dir, self.n_patches = [], "", 0

    @observe("low_dir")
    def _guess_axes(self, change):
        """Axes from the first file of the chosen folder (its metadata, else its number of dimensions)."""
        try:
            folder = self.resolve(change["new"])
            first = next(iter(sorted(folder.glob("*.tif*"))), None)
        except (CareError, OSError):
            return
        if first is not None:
            try:
                self.axes = cc.io.peek_axes(first)[0]
            except CareError as e:
                self.axes_error = str(e)

    @validate("axes")
    def _valid_axes(self, proposal):
        axes = proposal["value"].upper().strip()
        try:
            cc.check_axes(axes)
            self.axes_error = ""
        except CareError as e:
            self.axes_error = str(e)
        return axes

    @property
    def patch_size(self):
        """The training patch size: the configuration's (it depends on the chosen budget)."""
        return self.config().patch_size

    def scan_pairs(self):
        """Pairs under the chosen folders: shapes and the alignment check, as table rows."""
        if self.axes_error:
            raise CareError(self.axes_error)
        listing = cc.find_pairs(self.resolve(self.low_dir), self.resolve(self.high_dir))
        rows = []
        for pair in listing:
            low, high = cc.load_pair(pair, axes=self.axes)
            al = cc.check_alignment(low, high)
            rows.append({"name": pair.name, "low": "×".join(map(str, low.shape)), "high": "×".join(map(str, high.shape)),
                         "shift": ", ".join(f"{k} {v:+.1f}" for k, v in al["shift"].items()), "aligned": al["aligned"]})
        self.low, self.high = np.asarray(low.data, np.float32), np.asarray(high.data, np.float32)
        self.unmatched = "" if not (listing.unmatched_low or listing.unmatched_high) else listing.report()
        self.pairs = rows
        return rows

    def demo_clean(self):
        """A clean demo sample for the simulator (the high-SNR demo image of this task)."""
        demo = Path(self.data_root) / self.task / "train" / "high"
        files = sorted(demo.glob("*.tif"))
        if files:
            return cc.read_image(files[0]).data
        if TASKS[self.task]["axes"] == "ZYX":
            return cc.nuclei_volume((16, 64, 64) if self.quick else (32, 128, 128), seed=0)[0]
        return cc.simulate_subdiffraction((96, 96) if self.quick else (256, 256), kind="granules", seed=0)[1]

    def simulate(self, clean=None):
        """Simulated low-quality version(s) of the clean demo data, written as a pair folder."""
        clean = self.demo_clean() if clean is None else clean
        out = Path(self.data_root) / "simulated" / self.task
        axes = TASKS[self.task]["axes"]
        highs = sorted((Path(self.data_root) / self.task / "train" / "high").glob("*.tif")) or [None]
        for i, f in enumerate(highs):
            hi = clean if f is None else cc.read_image(f).data.astype(np.float32)
            if self.task == "upsampling":
                lo, _ = cc.simulate_anisotropic(hi, self.axial_factor, axes=axes, axis="Z", psf_sigma=self.psf_sigma,
                                                peak_photons=self.light_dose * 5, seed=self.sim_seed + i)
            else:
                lo, _ = cc.simulate_photon_noise(hi, self.light_dose, background=1.0, read_noise=1.0, seed=self.sim_seed + i)
            name = f.name if f is not None else "sample00.tif"
            for sub, data in (("low", lo), ("high", hi)):
                (out / sub).mkdir(parents=True, exist_ok=True)
                cc.write_image(out / sub / name, data, axes=axes)
            if i == 0:
                self.low, self.high = lo, hi
        self.low_dir, self.high_dir = self.rel(out / "low"), self.rel(out / "high")
        return self.low, self.high

    def make_patches(self, progress=None):
        if not self.pairs:
            self.scan_pairs()
        out = Path(self.data_root) / "work" / f"patches_{self.task}"
        n = 16 if self.quick else 64
        ps = cc.create_patches(cc.find_pairs(self.resolve(self.low_dir), self.resolve(self.high_dir)), self.patch_size,
                               axes=self.axes, n_patches_per_image=n, validation_fraction=0.15, out=out, progress=progress)
        self.patches_dir = str(out)
        self.n_patches = len(ps.X)
        return ps

    def ensure_patches(self, note=None):
        """The patches, extracted again when their size is not the configuration's (another budget)."""
        if not self.patches_dir:
            raise CareError("make training patches first (step 1)")
        ps = cc.load_patches(self.patches_dir)
        if tuple(ps.meta.get("patch_size", ())) != tuple(self.patch_size):
            if note is not None:
                note(f"this budget trains on {'×'.join(map(str, self.patch_size))} patches: extracting them again ...")
            ps = self.make_patches()
        return ps

    # -- step 2 ----------------------------------------------------------------------------
    def budget_options(self):
        """(label, seconds) of the budgets offered; quick mode adds a very short one."""
        return ([QUICK_BUDGET] if self.quick else []) + BUDGETS

    def config(self):
        """The model configuration for the chosen budget.

        With a time budget, carecore sizes the network, batches, patches and learning rate for it
        (only probabilistic, precision, seed and the task are passed; quick mode also passes tiny
        sizes); "custom" (``time_limit`` 0) passes every field as typed.
        """
        from carecore.models.config import care_config

        t = TASKS[self.task]
        kw = dict(probabilistic=self.probabilistic or self.ensemble >= 2, precision=self.precision, seed=self.seed)
        if self.task == "upsampling":
            kw.update(kind="upsampling", upsampling_factor=self.axial_factor)
        if self.time_limit > 0:
            kw.update(time_limit=float(self.time_limit))
            if self.quick:
                kw.update(unet_filters=8, batch_size=4, patch_size=t["quick_patch"], epochs=3)
        else:
            kw.update(epochs=self.epochs, steps_per_epoch=self.steps, batch_size=self.batch_size,
                      unet_filters=self.filters, learning_rate=self.learning_rate,
                      patch_size=t["quick_patch"] if self.quick else t["patch"])
        return care_config(t["axes"], **kw)

    def run_preflight(self, note=None):
        from carecore.training.jobs import preflight

        self.preflight = preflight(self.config(), self.ensure_patches(note))
        return self.preflight

    def start_training(self, resume=False, note=None):
        from carecore.training.jobs import start_job

        self.ensure_patches(note)
        if not resume or not self.job_dir:
            self.job_dir = str(Path(self.data_root) / "models" / time.strftime(f"{self.task}_%Y%m%d_%H%M%S"))
        start_job(self.job_dir, self.patches_dir, self.config(), ensemble=self.ensemble if self.ensemble >= 2 else 0)
        self.job_state = "starting"
        self.watch_job()

    def stop_training(self):
        from carecore.training.jobs import request_stop

        if self.job_dir:
            request_stop(self.job_dir)

    def attach_latest_job(self):
        """Re-attach to the newest job under ``models/`` (a reloaded page or a second tab)."""
        from carecore.training.jobs import find_jobs

        try:
            jobs = find_jobs(Path(self.data_root) / "models")
            if jobs:
                self.job_dir = str(jobs[0])
                self.poll_job()
                if self.job_state in ("starting", "running"):
                    self.watch_job()
        except Exception as e:  # noqa: BLE001 - a damaged job folder must not break the page
            self.job_state = "unreadable"
            self.job_message = f"cannot read the last training job ({self.job_dir or 'models/'}): {type(e).__name__}: {e}"
        return self.job_dir

    def poll_job(self):
        from carecore.training.jobs import STATES_DONE, job_status, model_path

        st = job_status(self.job_dir)
        if not isinstance(st, dict):
            raise CareError(f"{self.job_dir}: status.json does not hold a status")
        self.losses = list(st.get("losses") or [])
        self.history = list(st.get("history") or [])
        self.baseline = dict(st.get("baseline") or {})
        self.resume_note = str(st.get("resume") or "")
        ev = st.get("event") or {}
        if ev.get("kind") == "batch":
            self.last_event = dict(ev)
        self.progress_epoch = int(ev.get("epoch", 0) or 0)
        self.progress_step = int(ev.get("step", 0) or 0)
        self.job_message = st.get("message", "") or ""
        self.job_state = st.get("state", "none")
        if self.job_state in STATES_DONE:
            mp = model_path(self.job_dir)
            if (mp / "manifest.json").exists() or (mp / "ensemble.json").exists():
                self.model_dir = str(mp)
        return st

    def curves(self):
        """What the training charts show, in epochs of this run: ``{name: (x, y)}``.

        The training loss is placed at step / steps-per-epoch (the steps per epoch come from the
        job's last batch event: a time budget plans them itself); validation points at their epoch
        count; ``baseline`` is the best classical filter's validation SSIM as a flat line.
        Points that are not finite are left out (a chart cannot place them).
        """
        steps = int(self.last_event.get("steps") or 0) or max(self.steps, 1)
        hist = [h for h in self.history if h.get("epoch") is not None]

        def finite(xs, ys):
            keep = [(float(x), float(y)) for x, y in zip(xs, ys)
                    if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
            return [k[0] for k in keep], [k[1] for k in keep]

        out = {"training": finite([p[0] / steps for p in self.losses], [p[1] for p in self.losses]),
               "validation": finite(range(1, len(hist) + 1), [h.get("val_loss") for h in hist]),
               "ssim": finite(range(1, len(hist) + 1), [h.get("val_ssim") for h in hist])}
        b = self.baseline.get("val_ssim")
        if b is not None and np.isfinite(b):
            end = max([1.0] + out["training"][0] + out["ssim"][0])
            out["baseline"] = ([0.0, end], [float(b), float(b)])
        return out

    def baseline_label(self):
        """``best filter: tv (weight=0.2)`` for the chart's legend."""
        b = self.baseline
        return f"best filter: {filter_label(b['name'], b.get('params'))}" if b.get("name") else ""

    def watch_job(self, interval=0.5):
        """Poll the job in a background thread until it ends (views observe the traits)."""
        if self._poller is not None and self._poller.is_alive():
            return

        def loop():
            while True:
                time.sleep(interval)
                try:
                    st = self.poll_job()
                except Exception as e:  # noqa: BLE001 - keep the page alive
                    self.job_message = f"cannot read the job status: {e}"
                    return
                if st.get("state") not in ("starting", "running"):
                    return

        self._poller = threading.Thread(target=loop, daemon=True)
        self._poller.start()

    # -- step 3 ----------------------------------------------------------------------------
    def check_model_folder(self, path):
        """The model folder resolved inside the data root; an ensemble's members must lie inside it too.

        A member listed with ``..`` or as an absolute path is refused (never followed), and so is
        one that a link leads out of the data root.
        """
        import json

        folder = self.resolve(path)
        index = folder / "ensemble.json"
        if not index.exists():
            return folder
        try:
            members = json.loads(index.read_text()).get("members")
        except (OSError, ValueError, AttributeError) as e:
            raise CareError(f"{self.rel(folder)}/ensemble.json: unreadable ({e})") from None
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise CareError(f"{self.rel(folder)}/ensemble.json: 'members' must be a list of folder names")
        for m in members:
            if Path(m).is_absolute() or ".." in Path(m).parts:
                raise CareError(f"{self.rel(folder)}/ensemble.json: member {m!r} is not a folder inside the "
                                "ensemble (absolute paths and '..' are refused)")
            try:
                self.resolve(folder / m)
            except CareError:
                raise CareError(f"{self.rel(folder)}/ensemble.json: member {m!r} leads outside the data root "
                                "or does not exist") from None
        return folder

    def models_available(self):
        """Model and ensemble folders under ``models/``; refused ones are listed in ``model_problems``."""
        root = Path(self.data_root) / "models"
        found = [p for p in root.glob("*/model") if (p / "manifest.json").exists()]
        found += [p for p in root.glob("*/ensemble") if (p / "ensemble.json").exists()]
        ok, problems = [], []
        for p in found:
            try:
                ok.append(self.rel(self.check_model_folder(p)))
            except CareError as e:
                problems.append(str(e))
        self.model_problems = problems
        return sorted(ok, reverse=True)

    def truth_for(self, input_path):
        """The ground truth of ``<...>/low/NAME``: ``<...>/high/NAME`` inside the data root, else None."""
        p = Path(input_path)
        if p.parent.name != "low":
            return None
        return self.inside(p.parent.parent / "high" / p.name)

    def output_path(self, model_dir, input_path):
        """``restored/<model>/<input name>``: the model is named by its job folder (``.../job/model``)."""
        m = Path(model_dir)
        name = m.parent.name if m.name in ("model", "ensemble") and m.parent.name else m.name
        return Path(self.data_root) / "restored" / name / Path(input_path).name

    def default_input(self):
        demo = Path(self.data_root) / self.task / "test" / "low"
        files = sorted(demo.glob("*.tif"))
        return self.rel(files[0]) if files else ""

    def restore(self, progress=None):
        """Restore the chosen image with the chosen model; metrics (with tuned filters) when a truth exists."""
        try:
            return self._restore(progress)
        finally:
            self.restore_note = ""

    def _restore(self, progress):
        from carecore.uncertainty import Ensemble, mixture_mean_variance

        if not self.model_dir:
            raise CareError("choose a model (train one in step 2, or pick a model folder)")
        if not self.input_path:
            raise CareError("choose an image to restore")
        src = self.resolve(self.input_path)
        folder = self.check_model_folder(self.model_dir)
        self.restore_note = "loading the model ..."
        model = cc.load_model(folder)          # a model or an ensemble folder
        img = cc.read_image(src)
        self.input_image = np.asarray(img.data, np.float32)
        self.image_axes, self.model_config = img.axes, model.config
        self.members = self.scale = None
        self.restore_note = "restoring ..."
        if isinstance(model, Ensemble):
            self.members = model.predict_members(img.data, axes=img.axes, progress=progress)
            self.restored = mixture_mean_variance(*self.members)[0]
            spacing = model.members[0].output_spacing(img.spacing)
        else:
            out = model.predict(img.data, axes=img.axes, progress=progress)
            self.restored, self.scale = out if isinstance(out, tuple) else (out, None)
            spacing = model.output_spacing(img.spacing)
        dest = self.output_path(folder, src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        cc.write_image(dest, self.restored, axes=img.axes, spacing=spacing or None)
        self.restored_path = self.rel(dest)
        self.truth, self.metrics, self.metrics_note = None, {}, ""
        gt = self.truth_for(self.input_path)
        if gt is not None and gt != src:
            truth = cc.read_image(gt).data.astype(np.float32)
            if truth.shape == self.restored.shape:
                self.truth = truth
                self.metrics = self._metrics(img.axes, progress)
            else:
                self.metrics_note = f"the ground truth {self.rel(gt)} has shape {truth.shape}, the restoration {self.restored.shape}"
        self.reliability_ready = False
        self.restore_done += 1
        return self.restored

    def _metrics(self, axes, progress=None):
        """NRMSE/SSIM/PSNR of the input, CARE and the classical filters tuned on this very pair."""
        from carecore.baselines import best_baseline, tune_baselines

        rows = {"CARE": cc.evaluate(self.restored, self.truth, axes=axes)}
        if self.input_image.shape != self.truth.shape:
            self.metrics_note = "the input is on another grid than the ground truth: no input or filter rows"
            return rows
        rows = {"input": cc.evaluate(self.input_image, self.truth, axes=axes), **rows}

        def tuning(done, total, what):
            self.restore_note = f"tuning classical filters on this image's ground truth: {what} ({done}/{total})"
            if progress is not None:
                progress(done, total, "filters")

        tuned = tune_baselines([(self.input_image, self.truth)], axes=axes, progress=tuning)
        by_ssim, by_nrmse = best_baseline(tuned)
        picks = [("SSIM", by_ssim, by_ssim.params, "ssim"), ("NRMSE", by_nrmse, by_nrmse.params_nrmse, "nrmse")]
        if (by_nrmse.name, by_nrmse.params_nrmse) == (by_ssim.name, by_ssim.params):
            picks = [("SSIM and NRMSE", by_ssim, by_ssim.params, "ssim")]
        for what, t, params, metric in picks:
            label = filter_label(t.name, params)
            self.restore_note = f"scoring {label} on the whole image ..."
            rows[f"best filter by {what}: {label}"] = cc.evaluate(t.apply(self.input_image, axes=axes, for_metric=metric),
                                                                   self.truth, axes=axes)
        self.metrics_note = "filters tuned on this image's own ground truth (their best case); CARE never saw it"
        return rows

    # -- step 5 ----------------------------------------------------------------------------
    def compute_reliability(self, n_samples=8, confidence=0.9):
        """Interval, samples (and disagreement) from the predicted distribution; calibration without a fit.

        An ensemble's read-outs come from the mixture of its members, never from one Laplace
        matched to the mixture's variance. Everything is in the input's intensity units.
        """
        from carecore.uncertainty import disagreement, predictive_readouts

        if self.restored is None:
            raise CareError("restore an image first (step 3)")
        if self.members is None and self.scale is None:
            raise CareError("this model is not probabilistic: train with 'probabilistic' (or an ensemble) for confidence intervals")
        means, scales = self.members if self.members is not None else (self.restored, self.scale)
        members = self.members is not None
        r = predictive_readouts(means, scales, members=members, confidence=confidence, n_samples=n_samples)
        if members:
            r["disagreement"] = disagreement(means, scales)
        if self.truth is not None:
            r.update(self._truth_readouts(means, scales, members))
        self.readouts = r
        self.reliability_ready = True
        return r

    def _truth_readouts(self, means, scales, members):
        """The calibration curve (no fit) and the ground truth for display, labelled with how it was scaled."""
        from carecore.uncertainty import measure_calibration

        cfg, axes = self.model_config, self.image_axes
        pct = tuple(cfg.percentiles) if cfg is not None else cc.DEFAULT_PERCENTILES
        out = {}
        # the network's promise is about the truth normalized with its own percentiles; predict maps
        # that back with the input's: the same two maps put the truth into the input's units
        g, _ = cc.percentile_normalize(self.truth, *pct, axes=axes)
        norm_in = cc.compute_percentiles(self.input_image, *pct, axes=axes, name="input")
        out["truth_rescaled"] = cc.denormalize(g, norm_in, axes=axes)
        out["truth_label"] = (f"ground truth (rescaled for display: its {pct[0]:g}–{pct[1]:g} percentile range "
                              "mapped onto the input's)")
        if self.truth.shape == self.input_image.shape:
            mapped_back = cfg is None or cfg.n_channel_in == cfg.n_channel_out
            out["calibration"] = measure_calibration(self.truth, means, scales, image=self.input_image, axes=axes,
                                                     percentiles=pct, mapped_back=mapped_back)
        else:
            out["calibration_note"] = ("no calibration curve: the input is on another grid than the ground truth "
                                       "(its percentiles cannot be matched pixel by pixel)")
        return out

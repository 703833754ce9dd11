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

TASKS = {
    "denoising3d": {"label": "Denoising 3D", "axes": "ZYX", "patch": (16, 64, 64), "quick_patch": (8, 32, 32)},
    "denoising2d": {"label": "Denoising 2D", "axes": "YX", "patch": (128, 128), "quick_patch": (32, 32)},
    "upsampling": {"label": "Axial upsampling (3D)", "axes": "ZYX", "patch": (16, 64, 64), "quick_patch": (8, 32, 32)},
}


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
    progress_epoch = Int(0)
    progress_step = Int(0)
    # step 3: restore
    model_dir = Unicode()
    input_path = Unicode()
    restored_path = Unicode()
    metrics = Dict()
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
        self.low = self.high = None          # arrays for the previews
        self.restored = self.scale = None
        self.input_image = self.truth = None
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

    def tif_files(self, sub=""):
        root = self.resolve(sub) if sub else Path(self.data_root)
        return sorted(self.rel(p) for p in root.rglob("*.tif") if not any(part.startswith(".") for part in p.parts))

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
        t = TASKS[self.task]
        return t["quick_patch"] if self.quick else t["patch"]

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

    # -- step 2 ----------------------------------------------------------------------------
    def config(self):
        from carecore.models.config import care_config

        kw = dict(epochs=self.epochs, steps_per_epoch=self.steps, batch_size=self.batch_size, unet_filters=self.filters,
                  probabilistic=self.probabilistic or self.ensemble >= 2, learning_rate=self.learning_rate,
                  precision=self.precision, seed=self.seed, patch_size=self.patch_size)
        if self.task == "upsampling":
            kw.update(kind="upsampling", upsampling_factor=self.axial_factor)
        return care_config(TASKS[self.task]["axes"], **kw)

    def run_preflight(self):
        from carecore.training.jobs import preflight

        if not self.patches_dir:
            raise CareError("make training patches first (step 1)")
        self.preflight = preflight(self.config(), cc.load_patches(self.patches_dir))
        return self.preflight

    def start_training(self, resume=False):
        from carecore.training.jobs import start_job

        if not self.patches_dir:
            raise CareError("make training patches first (step 1)")
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

        jobs = find_jobs(Path(self.data_root) / "models")
        if jobs:
            self.job_dir = str(jobs[0])
            self.poll_job()
            if self.job_state in ("starting", "running"):
                self.watch_job()
        return self.job_dir

    def poll_job(self):
        from carecore.training.jobs import job_status, model_path

        st = job_status(self.job_dir)
        self.losses = st.get("losses", [])
        self.history = st.get("history", [])
        ev = st.get("event") or {}
        self.progress_epoch = int(ev.get("epoch", 0) or 0)
        self.progress_step = int(ev.get("step", 0) or 0)
        self.job_message = st.get("message", "") or ""
        self.job_state = st.get("state", "none")
        if self.job_state in ("completed", "stopped", "early_stopped"):
            mp = model_path(self.job_dir)
            if (mp / "manifest.json").exists() or (mp / "ensemble.json").exists():
                self.model_dir = str(mp)
        return st

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
    def models_available(self):
        root = Path(self.data_root) / "models"
        found = [p for p in root.glob("*/model") if (p / "manifest.json").exists()]
        found += [p for p in root.glob("*/ensemble") if (p / "ensemble.json").exists()]
        return sorted((self.rel(p) for p in found), reverse=True)

    def default_input(self):
        demo = Path(self.data_root) / self.task / "test" / "low"
        files = sorted(demo.glob("*.tif"))
        return self.rel(files[0]) if files else ""

    def restore(self, progress=None):
        from carecore.qc import _load_models
        from carecore.uncertainty import Ensemble, mixture_mean_variance

        if not self.model_dir:
            raise CareError("choose a model (train one in step 2, or pick a model folder)")
        if not self.input_path:
            raise CareError("choose an image to restore")
        model = _load_models(self.resolve(self.model_dir))
        img = cc.read_image(self.resolve(self.input_path))
        self.input_image = np.asarray(img.data, np.float32)
        self.members = None
        if isinstance(model, Ensemble):
            mus, bs = model.predict_members(img.data, axes=img.axes, progress=progress)
            self.restored, var = mixture_mean_variance(mus, bs)
            self.scale = np.sqrt(var / 2)
            self.members = (mus, bs)
        else:
            out = model.predict(img.data, axes=img.axes, progress=progress)
            self.restored, self.scale = out if isinstance(out, tuple) else (out, None)
        out_dir = Path(self.data_root) / "restored"
        out_dir.mkdir(exist_ok=True)
        dest = out_dir / Path(self.input_path).name
        cc.write_image(dest, self.restored, axes=img.axes)
        self.restored_path = self.rel(dest)
        gt = Path(str(self.resolve(self.input_path)).replace(f"{os.sep}low{os.sep}", f"{os.sep}high{os.sep}"))
        self.truth = None
        metrics = {}
        if gt.exists() and gt != self.resolve(self.input_path):
            truth = cc.read_image(gt).data.astype(np.float32)
            if truth.shape == self.restored.shape:
                self.truth = truth
                metrics["input"] = cc.evaluate(self.input_image, truth, axes=img.axes) \
                    if self.input_image.shape == truth.shape else None
                metrics["CARE"] = cc.evaluate(self.restored, truth, axes=img.axes)
        self.metrics = {k: v for k, v in metrics.items() if v}
        self.reliability_ready = False
        self.restore_done += 1
        return self.restored

    # -- step 5 ----------------------------------------------------------------------------
    def compute_reliability(self, n_samples=8):
        from carecore.uncertainty import calibration_curve, disagreement, laplace_samples, probabilistic_readouts

        if self.restored is None:
            raise CareError("restore an image first (step 3)")
        if self.scale is None:
            raise CareError("this model is not probabilistic: train with 'probabilistic' (or an ensemble) for confidence intervals")
        r = probabilistic_readouts(self.restored, self.scale, confidence=0.9)
        r["samples"] = laplace_samples(self.restored, self.scale, n_samples, seed=0)
        if self.members is not None:
            r["disagreement"] = disagreement(*self.members)
        if self.truth is not None:
            g, _ = cc.percentile_normalize(self.truth, *cc.metrics.GT_PERCENTILES, axes="ZYX"[-self.truth.ndim:])
            a, b = cc.affine_fit(self.restored, g)
            r["calibration"] = calibration_curve(g, a * self.restored + b, abs(a) * self.scale)
            at, bt = cc.affine_fit(self.truth, self.restored)   # the truth in the restored image's units
            r["truth_display"] = (at * self.truth + bt).astype(np.float32)
        self.readouts = r
        self.reliability_ready = True
        return r

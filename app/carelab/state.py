"""The wizard's state: plain Python (traitlets), testable without a browser.

Every action is a method that calls one carecore function and stores what the views show. File
access is confined to ``data_root``. Errors from carecore (``CareError``) are caught by the views
and shown next to the step; the state stays usable.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
from traitlets import Bool, Dict, Enum, Float, HasTraits, Int, List, Unicode, observe, validate

import carecore as cc
from carecore import CareError
from carecore.axes import with_channel_of
from carecore.errors import collect_warnings
from carecore.prediction.frames import FRAME_AXES
from carecore.progress import Stopped

#: Beside a task's patches: the folders and settings they were made of (``LabState._adopt_patches``).
PATCHES_RECORD = "lab_patches.json"
#: What a frame along each frame axis is called.
FRAME_NAMES = {"T": "time point", "S": "sample"}


def preview(img):
    """An image's spatial axes as float32 for the Data step's previews: its first channel, time point or
    sample (the views' slider walks Z, never C or T)."""
    from carecore.axes import spatial_axes

    keep = spatial_axes(img.axes)
    return np.asarray(img.data[tuple(slice(None) if a in keep else 0 for a in img.axes)], np.float32)


def _frame_at(sizes, index):
    """Frame ``index`` (counted through the frame axes in order) as an index per frame axis."""
    return {a: int(i) for a, i in zip(sizes, np.unravel_index(index, tuple(sizes.values())))} if sizes else {}


def _frame_clause(sizes, at):
    """ "time point 2 of 3 (T=1, counted from 0)" for each frame axis."""
    return ", ".join(f"{FRAME_NAMES[a]} {i + 1} of {sizes[a]} ({a}={i}, counted from 0)" for a, i in at.items())


#: Training budgets offered in step 2 (label, seconds); 0 is "custom": epochs × steps as typed.
BUDGETS = [("Quick · 3 min", 180.0), ("Standard · 20 min", 1200.0), ("Thorough · 60 min", 3600.0),
           ("Custom (epochs × steps)", 0.0)]
#: The extra budget offered in quick mode (tests and demos on tiny data).
QUICK_BUDGET = ("Test · 30 s", 30.0)   # preparation (the filters' line, graph building, timed steps) takes 12-19 s of it on 2 cores

#: The tasks the Data step offers. Each names its model ``kind`` (:data:`carecore.models.kinds.KINDS`;
#: the kind's class says whether training needs pairs) and what the Data step needs:
#:
#: - ``axes``: axes of the images the task takes; ``patch``/``quick_patch``: the network's patch size
#:   for the custom budget (quick mode: always), in the configuration's axes;
#: - ``options``: state traits shown in the Data step in both modes and passed on: to the configuration
#:   (:data:`CONFIG_FIELDS`) or to the kind's ``make_patches`` (:data:`PATCH_OPTIONS`);
#: - ``simulate``: how "Simulate from the demo" degrades the clean demo (``noise``, ``anisotropic``: on
#:   the clean grid, ``coarse``: subsampled along Z onto a coarse grid; None: not offered), ``sim_options``: its settings;
#: - ``high_axes``: axes of the high-quality images when they differ from ``axes`` (projection: YX);
#: - ``z_whole``: the kind's patches take Z whole (only Y and X follow the configured patch size);
#: - ``folders``: False for kinds trained on simulations alone (no folders, a preview of generated pairs);
#: - ``probabilistic``: False for kinds that predict one value per voxel (no intervals, no ensembles);
#: - ``patches_per_image``: (quick, normal) patches per image (per lateral slice and direction for
#:   isotropic); ``input_label``: what the input is called once brought onto the output's grid.
TASKS = {
    "denoising3d": {"label": "Denoising 3D", "kind": "care", "axes": "ZYX", "patch": (16, 64, 64),
                    "quick_patch": (8, 32, 32)},
    "denoising2d": {"label": "Denoising 2D", "kind": "care", "axes": "YX", "patch": (128, 128), "quick_patch": (32, 32)},
    "upsampling": {"label": "Axial upsampling (3D)", "kind": "upsampling", "axes": "ZYX", "patch": (16, 64, 64),
                   "quick_patch": (8, 32, 32), "options": ("axial_factor", "psf_sigma"), "simulate": "anisotropic",
                   "sim_options": ("light_dose",), "input_label": "input interpolated along Z"},
    "isotropic": {"label": "Isotropic restoration (3D)", "kind": "isotropic", "axes": "ZYX", "patch": (64, 64),
                  "quick_patch": (32, 32), "options": ("axial_factor", "psf_sigma"), "simulate": "coarse",
                  "probabilistic": False, "patches_per_image": (4, 16), "input_label": "input interpolated along Z"},
    "projection": {"label": "Surface projection (3D stack → 2D image)", "kind": "projection", "axes": "ZYX",
                   "high_axes": "YX", "patch": (16, 64, 64), "quick_patch": (8, 32, 32), "simulate": None,
                   "z_whole": True, "input_label": "maximum projection of the input"},
    "subdiffraction": {"label": "Sub-diffraction (2D, trained on simulations)", "kind": "subdiffraction", "axes": "YX",
                       "patch": (64, 64), "quick_patch": (32, 32), "folders": False,
                       "options": ("structures", "psf_sigma", "sim_photons"), "sim_options": (),
                       "patches_per_image": (8, 32)},
}
#: What every TASKS entry has unless it says otherwise.
TASK_DEFAULTS = {"kind": "care", "options": (), "simulate": "noise", "sim_options": ("light_dose",), "folders": True,
                 "high_axes": None, "z_whole": False,
                 "probabilistic": True, "patches_per_image": (16, 64), "input_label": "input"}
#: Data-step traits that are configuration fields.
CONFIG_FIELDS = {"axial_factor": "upsampling_factor", "psf_sigma": "psf_sigma"}
#: Data-step traits that are task options of the kind's ``make_patches``: trait -> (option, how the value is passed).
PATCH_OPTIONS = {"structures": ("structures", str),
                 # the simulator draws each image's photons log-uniformly: a range around the chosen level
                 "sim_photons": ("peak_photons", lambda v: (v / 3.0, v * 3.0))}

#: Where the Restore step runs the network (label, value): in the app's own process (tiled), or chunk by
#: chunk over Dask (``carecore.predict_chunked``) on a local cluster or on a running scheduler.
RESTORE_WHERE = [("In this process", "here"), ("Local Dask cluster", "local"), ("Dask scheduler", "scheduler")]
#: Seconds the app waits for a Dask scheduler to answer (and for its first worker) before it gives up.
SCHEDULER_TIMEOUT = 10.0
#: A scheduler address: ``tcp://host:port`` (also tls, ws, wss, ucx), or ``host:port``.
_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ws|wss|ucx)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")
#: Name endings of the images the app reads (longest first: ``x.ome.zarr`` has the stem ``x``).
IMAGE_SUFFIXES = (".ome.zarr", ".zarr", ".tiff", ".tif")


def image_stem(name):
    """``sample00`` for ``sample00.tif`` and for ``sample00.ome.zarr``."""
    low = name.lower()
    return next((name[: -len(s)] for s in IMAGE_SUFFIXES if low.endswith(s)), Path(name).stem)


def _trained_order(model):
    """A model folder's place in the Restore step's list: named by hand (``models/mine/model``) first, by
    name; then the lab's trainings (``models/<task>_<YYYYmmdd_HHMMSS>/model``) by the time they started."""
    started = re.search(r"_(\d{8}_\d{6})$", Path(model).parent.name)
    return (1, started.group(1), model) if started else (0, "", model)


def parse_chunks(text):
    """Block sides for chunked prediction from ``"8,64,64"`` (one per spatial axis); None when empty (automatic)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        sides = tuple(int(v) for v in re.split(r"[,x×\s]+", text) if v)
    except ValueError:
        sides = ()
    if not sides or min(sides) < 1:
        raise CareError(f"chunks {text!r}: give one positive whole number per spatial axis, e.g. 8,64,64 (Z,Y,X) "
                        "or 128,128 (Y,X), or leave it empty for chunks sized from the memory budget")
    return sides


def _dask_client_class():
    """``distributed.Client``, or a CareError saying what to install."""
    try:
        from distributed import Client
    except ImportError:
        raise CareError("restoring on a Dask cluster needs the optional packages of carecore[zarr] (dask, distributed, "
                        "zarr): pip install -e '.[zarr]'; or restore in this process") from None
    return Client


def progress_text(done, total, what):
    """``chunk 3/12``, ``tile 2/4``, ``tile view 5/8``, ``member 1/2: 5/8``: what a progress event says."""
    if what in ("chunks", "tiles", "tile views"):
        return f"{what[:-1]} {done}/{total}"
    return f"{what}: {done}/{total}" if what else f"{done}/{total}"


def task_spec(task):
    """The TASKS entry of ``task`` with the defaults filled in."""
    return {**TASK_DEFAULTS, **TASKS[task]}


def job_task(job_dir):
    """The task a training job's folder was started for: its name begins with it (``<task>_<YYYYmmdd_HHMMSS>``);
    "" for a folder named otherwise."""
    task = Path(job_dir).name.rsplit("_", 2)[0] if job_dir else ""
    return task if task in TASKS else ""


def needs_pairs(task):
    """Whether the task's model kind trains on pairs (a high-quality folder is needed)."""
    from carecore.models.kinds import model_class

    return bool(model_class(task_spec(task)["kind"]).needs_pairs)


def input_label(kind):
    """What the input is called on the output's grid for a model of ``kind`` (its task's ``input_label``)."""
    return next((task_spec(t)["input_label"] for t in TASKS if task_spec(t)["kind"] == kind), "input")


def smoothing_note(members, off=False):
    """How the restored mean was smoothed after the network (the ``output_sigma`` of each model in ``members``),
    as a clause of the restore summary; empty when it was not. ``off``: the user left the smoothing off."""
    sigmas = [m.output_sigma for m in members]
    if not any(sigmas):
        return ""
    if off:
        return (f"; the network's output as it is (the model's smoothing, sigma {', '.join(f'{s:g}' for s in sigmas)} "
                "px, left off)")
    chosen = all((getattr(m, "run_card", None) or {}).get("output_smoothing", {}).get("auto") for m in members)
    how = "chosen when training ended, on the validation patches" if chosen else "set in its configuration"
    text = ", ".join(f"{s:g}" for s in sigmas)
    return f"; the restored mean smoothed by a Gaussian of sigma {text} px ({how})"


def make_kind_patches(config, sources, *, out, **kw):
    """The kind's ``make_patches`` writing into ``out`` (kinds whose hook takes no ``out`` are saved after)."""
    import inspect

    from carecore.models.kinds import model_class

    make = model_class(config.kind).make_patches
    if "out" in inspect.signature(make).parameters:
        return make(config, sources, out=out, **kw)
    ps = make(config, sources, **kw)
    ps.save(out)
    return ps


def filter_label(name, params):
    """``tv (weight=0.2)``: a classical filter with its chosen parameters."""
    text = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}"
                     for k, v in (params or {}).items())
    return f"{name} ({text})" if text else name


def pair_key(*arrays):
    """A digest of arrays' shapes, types and values: the same pair of images, read again, has the same key."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


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
    needs_high = Bool(True)         # the task's kind trains on pairs (else: on low-quality stacks alone)
    pairs = List()                  # rows: name, shape low, shape high, shift, aligned
    stacks = List()                 # rows (kinds without pairs): name, shape, axes, voxel size
    unmatched = Unicode("")
    light_dose = Float(8.0)         # peak photons for the simulator
    axial_factor = Float(4.0)
    psf_sigma = Float(2.0)
    sim_seed = Int(0)
    structures = Enum(["tubules,granules", "tubules", "granules"], default_value="tubules,granules")
    sim_photons = Float(100.0)      # photons at the brightest simulated pixel (sub-diffraction training)
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
    precision = Enum(["auto", "mixed_bfloat16", "float32"], default_value="auto")   # auto: carecore picks for this machine
    seed = Int(0)
    preflight = Dict()
    job_dir = Unicode()
    job_state = Unicode("none")
    job_message = Unicode("")
    history = List()
    losses = List()
    baseline = Dict()             # the best tuned classical filter on the validation patches
    last_event = Dict()           # the job's last progress event (epochs, steps per epoch, elapsed, eta)
    earlier_epochs = 0            # a resumed model's epochs before its job's run (in its history, not its losses)
    earlier_losses = ()           # and their training loss, as (epoch, loss) (a job's record since 2026-12-07)
    resume_note = Unicode("")
    job_time_limit = Float(0.0)   # the running job's budget in seconds (0: epochs x steps)
    job_notes = Unicode("")   # the training job's notes: a network started again, ensemble members missing
    job_preparing = Dict()        # the job's "preparing" event while it prepares (before a network's first step)
    progress_epoch = Int(0)
    progress_step = Int(0)
    # step 3: restore
    model_dir = Unicode()
    input_path = Unicode()
    restored_path = Unicode()
    metrics = Dict()
    metrics_note = Unicode("")
    metrics_verdict = List()   # sentences under the scores: a filter beats CARE, CARE worse than its input
    scores_pending = Bool(False)   # the restoration shown, the classical filters' rows still being tuned
    restore_note = Unicode("")    # what the restore thread is doing now
    model_problems = List()       # model folders that were not offered, and why
    restore_done = Int(0)
    restore_total = Int(0)
    restore_where = Enum([v for _, v in RESTORE_WHERE], default_value="here")
    scheduler_address = Unicode("tcp://127.0.0.1:8786")   # a running `dask scheduler` (DASK_SCHEDULER_ADDRESS)
    n_workers = Int(2)            # workers of the local cluster
    chunks = Unicode("")          # block sides for the cluster, "8,64,64"; empty: from the memory budget
    restore_summary = Unicode("")  # what the last restoration restored and how (in this process, chunks on a cluster)
    tta = Bool(True)              # the mean over the image's flips and rotations (models trained with them)
    own_percentiles = Bool(False)  # scale the input by its own percentiles, not the training images' (another gain)
    smooth = Bool(True)           # the model's own output smoothing (output_sigma); off: the network's output
    frame_count = Int(1)          # frames (time points, samples) of the last restoration; 1 for one image
    frame_index = Int(0)          # the one shown and scored (show_frame), counted from 0
    view_count = Int(0)           # counts the views' changes (a restoration, another frame shown): steps 4 and 5 follow
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
        self.low_spacing = None              # the voxel size of ``low`` where known (stacks)
        self.previews = []                   # generated (low, high) pairs (kinds trained on simulations)
        self.restored = self.scale = self.members = None
        self.input_image = self.input_on_grid = self.truth = None
        self.input_spacing = self.output_spacing = None
        self.input_label = "input"
        self.restore_warnings = []           # what the restoration shown warned about (an image unlike the training's)
        self._patch_key = None
        self._filter_rows = {}               # pair's key -> (rows, note): the filters tuned on the last pairs
        self._view_lock = threading.RLock()  # one restoration's frame shown at a time (show_frame, restore)
        self._view = None                    # the attributes of the frame shown (_set_view)
        self.image_axes, self.model_config, self.input_norm = "", None, None
        self.truth_norm = None   # how the ground truth is scaled into the network's units (None: its own percentiles)
        self.readouts = {}
        self.patch_warnings = []             # what the last patches' making warned about (misaligned pairs)
        self._task_data = {}                 # task -> its Data step's folders, scan and patches (TASK_DATA)
        self._scanned = None                 # the task, folders and axes the pairs' table is of
        self._starting = False               # a training being started (start_training)
        self._frames = None                  # the last restoration, all its frames (show_frame)
        self._poller = None
        self._poll_lock = threading.RLock()   # re-entrant: the watcher polls while holding it (watch_job)
        self._stop_restore = threading.Event()
        self._restored_chunked_ensemble = False
        if os.environ.get("DASK_SCHEDULER_ADDRESS"):   # dask's own setting for a configured scheduler
            self.scheduler_address = os.environ["DASK_SCHEDULER_ADDRESS"]
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

    def image_files(self, sub=""):
        """The images the app restores under the data root: TIFF files and OME-Zarr images (``*.ome.zarr``
        folders, not entered); hidden folders (a store being written) and links out of the root are left out."""
        from carecore.io import is_image_path

        root = self.resolve(sub) if sub else Path(self.data_root)
        found = set()
        for folder, dirs, files in os.walk(root):
            for d in list(dirs):
                if d.startswith(".") or d.lower().endswith(".zarr"):
                    dirs.remove(d)
                if d.lower().endswith(".zarr") and not d.startswith("."):
                    p = self.inside(Path(folder) / d)
                    if p is not None and is_image_path(p):
                        found.add(self.rel(p))
            for f in files:
                if f.lower().endswith((".tif", ".tiff")) and not f.startswith("."):
                    p = self.inside(Path(folder) / f)
                    if p is not None and p.is_file():
                        found.add(self.rel(p))
        return sorted(found)

    def image_choices(self):
        """The Restore step's images as (label, path): the images to restore first, the ground truths (a
        ``high`` folder's images) last; the chosen model's training inputs (the files its run card records)
        and ground truths (the card's) named as such (their scores would flatter CARE; a ground truth needs
        no restoring). The order does not depend on the model: a dropdown sends the position chosen, and a
        list reordered by a change of model while the user chooses would take another image (a test under
        load restored another task's training image). (A copy under another name is listed with the images
        to restore: the score note knows it by its pixels.)"""
        import json

        lows, highs = set(), set()
        folder = self.inside(self.model_dir) if self.model_dir else None
        cards = [folder / "run_card.json"] if folder is not None else []
        if folder is not None and (folder / "ensemble.json").exists():
            with contextlib.suppress(OSError, ValueError, TypeError):
                members = json.loads((folder / "ensemble.json").read_text()).get("members", [])
                cards = [folder / m / "run_card.json" for m in members]
        for card in cards:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                for src in json.loads(card.read_text()).get("data_sources") or []:
                    lows.add(self.inside(str(src.get("low", ""))))
                    highs.add(self.inside(str(src.get("high", ""))))
        lows.discard(None), highs.discard(None)   # (files gone, outside the data root, arrays)
        plain, truths = [], []
        for f in self.image_files():
            path = self.inside(f)
            label = (f"{f} · trained on (scores flatter CARE)" if path in lows else
                     f"{f} · a ground truth" if path in highs or Path(f).parent.name == "high" else f)
            (truths if Path(f).parent.name == "high" else plain).append((label, f))
        return plain + truths

    # -- step 1 ----------------------------------------------------------------------------
    #: What the Data step holds for a task: kept when another task is chosen, back when it is chosen again.
    #: (The previews' arrays are not kept: a scan reads them again.) ``unmatched`` before the tables it notes.
    TASK_DATA = ("low_dir", "high_dir", "axes", "axial_factor", "psf_sigma", "unmatched", "pairs", "stacks",
                 "patches_dir", "n_patches", "_patch_key", "patch_warnings", "model_dir")

    @observe("task")
    def _task_changed(self, change):
        kept = getattr(self, "_task_data", None)   # (None while the state is made)
        if kept is not None and change["old"]:
            kept[change["old"]] = {k: getattr(self, k) for k in self.TASK_DATA}
        self.low = self.high = self.low_spacing = None   # (the other task's previews)
        self.set_task_defaults()
        for k, v in (kept or {}).get(change["new"], {}).items():   # (in order: the folders, then their axes)
            setattr(self, k, v)
        if kept is not None:
            self._attach_task_job()

    def _attach_task_job(self):
        """The Train step shows the chosen task's last training, or none (a user trial chose projection and saw
        an isotropic job's charts and filter as "last training"); Resume continues it. A running job stays
        attached whatever the task (the Train step names its task). The model chosen for Restore is left as it is
        (the Restore step offers the task's own)."""
        from carecore.training.jobs import find_jobs

        with self._poll_lock:   # (not while a Start attaches its job, nor beside the watcher's poll)
            if self.job_state in ("starting", "running") or self._starting:
                return
            try:
                mine = [j for j in find_jobs(Path(self.data_root) / "models") if job_task(j) == self.task]
            except OSError:
                mine = []
            if mine and str(mine[0]) == self.job_dir:
                return
            self.job_dir, self.job_state, self.job_message = "", "none", ""
            self.last_event, self.job_preparing, self.job_time_limit = {}, {}, 0.0
            self.earlier_epochs, self.earlier_losses = 0, ()
            self.losses, self.history, self.baseline = [], [], {}
            self.resume_note = self.job_notes = ""
            self.progress_epoch = self.progress_step = 0
            if mine:
                self.job_dir = str(mine[0])
                try:
                    self.poll_job(adopt_model=False)
                except Exception as e:  # noqa: BLE001 - a damaged job folder must not break the page
                    self.job_state = "unreadable"
                    self.job_message = f"cannot read the last training job ({self.job_dir}): {type(e).__name__}: {e}"
            running = self.job_state in ("starting", "running")
        if running:   # (a training of this task started from another page: followed as it runs)
            self.watch_job()

    @property
    def spec(self):
        """The chosen task's TASKS entry (defaults filled in)."""
        return task_spec(self.task)

    def set_task_defaults(self):
        """The task's axes, its demo folders and the settings its demo was made with (dataset.json); the patches a
        page before this one made of them (:meth:`_adopt_patches`)."""
        t = self.spec
        self.needs_high = needs_pairs(self.task)
        self.axes = t["axes"]
        demo = Path(self.data_root) / self.task
        low = demo / "train" / "low"
        if low.exists():
            self.low_dir = self.rel(low)
            self.high_dir = self.rel(low.parent / "high") if self.needs_high else ""
        try:
            info = json.loads((demo / "dataset.json").read_text())
        except (OSError, ValueError):
            info = {}
        first = next(iter((info.get("files") or {}).values()), {}).get("clean") or {}
        for key, trait in (("factor", "axial_factor"), ("psf_sigma", "psf_sigma")):
            value = info.get(key, first.get(key) if t["kind"] == "subdiffraction" else None)
            if isinstance(value, (int, float)):
                setattr(self, trait, round(float(value), 2))
        self.pairs, self.stacks, self.patches_dir, self.n_patches = [], [], "", 0
        self.unmatched = ""
        self.input_path = self.default_input() or self.input_path
        self._adopt_patches()

    def _adopt_patches(self):
        """The task's patches that a page before this one made with these folders and settings (a reloaded page
        said "make training patches first" with them on disk: a user trial); others are left to be made."""
        folder = Path(self.data_root) / "work" / f"patches_{self.task}"
        try:
            made = json.loads((folder / PATCHES_RECORD).read_text())
            meta = json.loads((folder / "patches.json").read_text())
            if made["key"] != json.loads(json.dumps(self._key(), default=str)):
                return
            n = int(meta["n_patches"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        self.patches_dir, self.n_patches, self._patch_key = str(folder), n, self._key()
        self.patch_warnings = [str(w) for w in made.get("warnings") or []]

    @observe("low_dir")
    def _guess_axes(self, change):
        """Axes from the first file of the chosen folder (its metadata, else its number of dimensions)."""
        try:
            folder = self.resolve(change["new"])
            first = next(iter(cc.io.list_images(folder)), None)    # a TIFF or an OME-Zarr image
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

    def scan(self):
        """What the Data step checks: pairs, or (kinds without pairs) the low-quality stacks."""
        return self.scan_pairs() if self.needs_high else self.scan_stacks()

    def scan_pairs(self):
        """Pairs under the chosen folders: shapes and the alignment check, as table rows."""
        self.pairs = []   # (a failed scan leaves no table of the one before)
        if self.axes_error:
            raise CareError(self.axes_error)
        from carecore.axes import spatial_axes

        listing = cc.find_pairs(self.resolve(self.low_dir), self.resolve(self.high_dir))
        rows = []
        high_axes = self.spec["high_axes"]
        want = spatial_axes(self.spec["axes"])
        channels = lambda img: img.shape[img.axes.index("C")] if "C" in img.axes else 1   # noqa: E731
        for pair in listing:
            if high_axes:   # (a projection's 2D ground truths: a stack there was told "axes 'YX' have 2 letters ...")
                file_axes, file_shape, _ = cc.io.peek_axes(pair.high)
                shape = [n for a, n in zip(file_axes, file_shape) if n > 1 and a != "C"]   # (channels: said below)
                if len(shape) > len(high_axes):
                    raise CareError(f"{self.rel(pair.high)}: an image of {'×'.join(map(str, shape))} pixels, but "
                                    f"{self.spec['label']} takes {len(high_axes)}D ground truths ({high_axes}) in the "
                                    "High folder: the projections of the stacks in Low, not stacks")
            low, high = cc.load_pair(pair, axes=self.axes, axes_high=high_axes, check_shapes=high_axes is None)
            if spatial_axes(low.axes) != want:   # (a 2D task given ZYX: its patches would be refused later)
                extra = [a for a in spatial_axes(low.axes) if a not in want]
                flat = extra and all(low.shape[low.axes.index(a)] == 1 for a in extra)
                raise CareError(f"{self.rel(pair.low)}: axes {low.axes} (shape {'×'.join(map(str, low.shape))}); "
                                f"{self.spec['label']} takes {want} images: "
                                + (f"its {', '.join(extra)} of 1 is no axis of theirs; give the axes without it"
                                   if flat else
                                   f"the app takes them in that order (images saved transposed, {spatial_axes(low.axes)}: "
                                   "train them with `carecore train`, which moves them to it)"
                                   if sorted(spatial_axes(low.axes)) == sorted(want) else
                                   f"choose a task for {spatial_axes(low.axes)} images, or give the file's axes (Axes)"))
            if channels(low) == 1 and channels(high) > 1:   # (several stains in, one out, is a model's; not this)
                raise CareError(f"{self.rel(pair.high)}: {channels(high)} channels (axes {high.axes}, shape "
                                f"{'×'.join(map(str, high.shape))}) but its input {self.rel(pair.low)} has one "
                                f"(axes {low.axes}, shape {'×'.join(map(str, low.shape))}): a model would make "
                                f"{channels(high)} channels of one; give ground truths of the inputs' channel (planes "
                                "of another axis, such as Z slices or time points, are not channels: give the "
                                "file's axes)")
            al = cc.check_alignment(low, high)
            rows.append({"name": pair.name, "low": "×".join(map(str, low.shape)), "high": "×".join(map(str, high.shape)),
                         "shift": ", ".join(f"{k} {v:+.1f}" for k, v in al["shift"].items()), "aligned": al["aligned"]})
        self.low, self.high = preview(low), preview(high)
        self.low_spacing = None
        self.unmatched = "" if not (listing.unmatched_low or listing.unmatched_high) else listing.report()
        self.pairs = rows
        self._scanned = (self.task, self.low_dir, self.high_dir, self.axes)   # (what the table is of)
        return rows

    def scan_stacks(self):
        """The low-quality stacks a kind without pairs trains on: shapes, axes and voxel sizes, as table rows."""
        from carecore.axes import spatial_axes

        self.stacks = []   # (a failed scan leaves no table of the one before)
        if self.axes_error:
            raise CareError(self.axes_error)
        folder = self.resolve(self.low_dir)
        if not folder.is_dir():
            raise CareError(f"{self.low_dir}: not a folder; choose the folder of the low-quality stacks")
        files = [p for p in cc.io.list_images(folder) if self.inside(p)]   # TIFF files and OME-Zarr images
        if not files:
            raise CareError(f"{self.low_dir}: no TIFF or OME-Zarr stacks in this folder")
        want = spatial_axes(self.spec["axes"])
        rows, notes = [], []
        for f in files:
            img = cc.read_image(f, axes=self.axes, mmap=True)
            if spatial_axes(img.axes) != want:
                raise CareError(f"{self.rel(f)}: axes {img.axes} (shape {tuple(img.shape)}); "
                                f"{self.spec['label']} takes {want} stacks")
            sp = img.spacing or {}
            rows.append({"name": f.name, "shape": "×".join(map(str, img.shape)), "axes": img.axes,
                         "spacing": " × ".join(f"{sp[a]:g}" for a in want if a in sp) if sp else "not recorded"})
            if "axial_factor" in self.spec["options"] and sp.get("Z") and sp.get("X"):
                ratio = sp["Z"] / sp["X"]
                if abs(ratio - self.axial_factor) > 0.05 * self.axial_factor:
                    notes.append(f"{f.name}: voxel size Z/X = {ratio:g}, the axial factor is {self.axial_factor:g}")
        first = cc.read_image(files[0], axes=self.axes)
        self.low, self.high, self.low_spacing = preview(first), None, dict(first.spacing or {})
        self.unmatched = "; ".join(notes)
        self.stacks = rows
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
        """Simulated low-quality version(s) of the clean demo data, written as a pair folder.

        ``coarse`` tasks (isotropic) get stacks subsampled along Z by the axial factor, written with
        their voxel size (Z: the factor); the clean volumes stay next to them as ground truth.
        """
        axes, how = self.spec["axes"], self.spec["simulate"]
        if how is None:
            raise CareError(f"{self.spec['label']}: simulating from the demo is not offered; load pairs from folders")
        clean = self.demo_clean() if clean is None else clean
        out = Path(self.data_root) / "simulated" / self.task
        highs = sorted((Path(self.data_root) / self.task / "train" / "high").glob("*.tif")) or [None]
        for i, f in enumerate(highs):
            hi = clean if f is None else cc.read_image(f).data.astype(np.float32)
            spacing = None
            if how in ("anisotropic", "coarse"):
                lo, _ = cc.simulate_anisotropic(hi, self.axial_factor, axes=axes, axis="Z", psf_sigma=self.psf_sigma,
                                                peak_photons=self.light_dose * 5, seed=self.sim_seed + i,
                                                upsample_back=how == "anisotropic")
                if how == "coarse":
                    spacing = {"Z": float(self.axial_factor), "Y": 1.0, "X": 1.0}
            else:
                lo, _ = cc.simulate_photon_noise(hi, self.light_dose, background=1.0, read_noise=1.0, seed=self.sim_seed + i)
            name = f.name if f is not None else "sample00.tif"
            for sub, data, sp in (("low", lo, spacing), ("high", hi, None)):
                (out / sub).mkdir(parents=True, exist_ok=True)
                cc.write_image(out / sub / name, data, axes=axes, spacing=sp)
            if i == 0:
                self.low, self.high = lo, hi
        self.low_dir = self.rel(out / "low")
        self.high_dir = self.rel(out / "high") if self.needs_high else ""
        return self.low, self.high

    def preview_pairs(self, n_images=2):
        """A few pairs as the kind simulates them for training (``simulate_pairs``), for the Data step's preview."""
        from carecore.models.kinds import model_class

        cls = model_class(self.spec["kind"])
        if not hasattr(cls, "simulate_pairs"):
            raise CareError(f"{self.spec['label']}: this kind does not simulate its training pairs")
        opts = {k: v for k, v in self.patch_options().items() if k not in ("n_images", "image_shape")}
        pairs, _ = cls.simulate_pairs(self.config(), n_images=n_images, image_shape=(96, 96), **opts)
        self.previews = pairs
        self.low, self.high = pairs[0]
        self.low_spacing = None
        return pairs

    def patch_options(self):
        """The Data step's settings that the kind's ``make_patches`` takes as task options."""
        opts = {PATCH_OPTIONS[k][0]: PATCH_OPTIONS[k][1](getattr(self, k)) for k in self.spec["options"] if k in PATCH_OPTIONS}
        if opts and self.quick:   # simulated training data: a few small images in quick mode
            opts.update(n_images=4, image_shape=(96, 96))
        return opts

    def _key(self):
        """What the patches depend on besides their size: the task, its folders and settings."""
        return (self.task, self.low_dir, self.high_dir, self.axes, self.seed,
                tuple((k, getattr(self, k)) for k in self.spec["options"]))

    def make_patches(self, progress=None, resumed=None):
        """Training patches through the kind's ``make_patches``: from pairs, or from the low-quality stacks
        alone (kinds without pairs never read the high-quality folder); ``resumed``: the patch size and seed
        of a resumed training (``{"patch_size": ..., "seed": ...}``), whatever the budget and seed chosen now.
        A failure with other folders or settings than the last patches' forgets those (their "ready" note came
        back on a return to the task: a review)."""
        task, key = self.task, self._key()
        try:
            return self._make_patches(progress, resumed)
        except Exception:
            if self.task == task:
                if self.patches_dir and self._patch_key != key:
                    self.patches_dir, self.n_patches, self._patch_key = "", 0, None
            else:   # (another task chosen meanwhile: the first task's kept data)
                kept = self._task_data.get(task) or {}
                if kept.get("patches_dir") and kept.get("_patch_key") != key:
                    kept.update(patches_dir="", n_patches=0, _patch_key=None)
            raise

    def _make_patches(self, progress, resumed):
        if not self.spec["folders"]:
            sources = None                     # trained on simulations alone
        elif self.needs_high:
            if not self.pairs or self._scanned != (self.task, self.low_dir, self.high_dir, self.axes):
                self.scan_pairs()   # (not checked, or checked with other folders or axes: a trial typed others)
            sources = cc.find_pairs(self.resolve(self.low_dir), self.resolve(self.high_dir))
        else:
            if not self.stacks:
                self.scan_stacks()
            sources = self.resolve(self.low_dir)
        out = Path(self.data_root) / "work" / f"patches_{self.task}"
        n = self.spec["patches_per_image"][0 if self.quick else 1]
        task, key = self.task, self._key()   # (what the patches are of, should the task change meanwhile)
        with collect_warnings() as warned:   # (misaligned pairs: shown with the patches)
            config = self.config().replace(**(resumed or {}))
            ps = make_kind_patches(config, sources, out=out, axes=self.axes, n_patches_per_image=n,
                                   progress=progress, **self.patch_options())
        made = {"patch_warnings": warned, "patches_dir": str(out), "n_patches": len(ps.X), "_patch_key": key}
        with contextlib.suppress(OSError):   # what they were made of, for a page opened later (_adopt_patches)
            (out / PATCHES_RECORD).write_text(json.dumps({"key": key, "warnings": list(warned)}, default=str))
        if self.task != task:   # another task chosen while they were cut: they are the first task's
            self._task_data.setdefault(task, {}).update(made)
            return ps
        for k, v in made.items():
            setattr(self, k, v)
        return ps

    def ensure_patches(self, note=None, resumed=None):
        """The patches, extracted again when their size is not the configuration's (another budget), or
        when they are not a resumed training's (``resumed``: its patch size and seed; it validates on the
        boxes it began with, whatever budget and seed are chosen now)."""
        if not self.patches_dir:
            raise CareError("make training patches first (step 1)")
        ps = cc.load_patches(self.patches_dir)
        size = tuple((resumed or {}).get("patch_size") or self.patch_size)
        if self._patch_key is not None and self._patch_key != self._key():
            if note is not None:
                note("the data or its settings changed: extracting the patches again ...")
            return self.make_patches(resumed=resumed)
        made, want = tuple(ps.meta.get("patch_size", ())), size
        if self.spec["z_whole"]:                 # Z is taken whole: only Y and X follow the configuration
            made, want = made[-2:], want[-2:]
        if made != want or ps.meta.get("seed") != (resumed or {}).get("seed", ps.meta.get("seed")):
            if note is not None:
                note(f"{'this budget' if resumed is None else 'the training resumed'} trains on "
                     f"{'×'.join(map(str, size))} patches: extracting them again ...")
            ps = self.make_patches(resumed=resumed)
        return ps

    # -- step 2 ----------------------------------------------------------------------------
    @property
    def ensemble_members(self):
        """The members the Train step's training will have: ``ensemble`` when 2 or more and the task's
        kind is probabilistic, else 0 (one model)."""
        return int(self.ensemble) if self.ensemble >= 2 and self.spec["probabilistic"] else 0

    def budget_options(self):
        """(label, seconds) of the budgets offered; quick mode adds a very short one."""
        return ([QUICK_BUDGET] if self.quick else []) + BUDGETS

    def config(self):
        """The model configuration for the chosen budget, from the task's kind (``default_config``).

        With a time budget, carecore sizes the network, batches, patches and learning rate for it
        (only probabilistic, precision unless "auto", seed, the kind and its settings are passed; quick mode also
        passes tiny sizes; an ensemble's budget is sized for one member's share, ``members``); "custom"
        (``time_limit`` 0) passes every field as typed. Kinds that predict one value per voxel are never
        probabilistic.
        """
        from carecore.models.kinds import model_class

        t = self.spec
        prob = bool(self.probabilistic or self.ensemble >= 2) if t["probabilistic"] else False
        kw = dict(kind=t["kind"], probabilistic=prob, seed=self.seed)
        if self.precision != "auto":
            kw["precision"] = self.precision
        kw.update({CONFIG_FIELDS[k]: getattr(self, k) for k in t["options"] if k in CONFIG_FIELDS})
        if self.time_limit > 0:
            kw.update(time_limit=float(self.time_limit))
            if self.ensemble_members:   # the members share the budget: the recipe is sized for a share
                kw.update(members=self.ensemble_members)
            if self.quick:
                kw.update(unet_filters=8, batch_size=4, patch_size=t["quick_patch"], epochs=3)
        else:
            kw.update(epochs=self.epochs, steps_per_epoch=self.steps, batch_size=self.batch_size,
                      unet_filters=self.filters, learning_rate=self.learning_rate,
                      patch_size=t["quick_patch"] if self.quick else t["patch"])
        config = model_class(t["kind"]).default_config(t["axes"], **kw)
        if self.time_limit <= 0 and config.time_limit:   # a kind's own default budget must not override "custom"
            config = config.replace(time_limit=0.0)
        return config

    def _live_job(self):
        """A training job alive under ``models/`` (also one another page started), or None."""
        from carecore.training.jobs import find_jobs, job_status

        return next((j for j in find_jobs(Path(self.data_root) / "models") if job_status(j).get("alive")), None)

    def run_preflight(self, note=None):
        from carecore.models.config import with_channels_of
        from carecore.training.jobs import preflight

        # (a user trial pressed Estimate while a training ran: its timed steps shared the CPU with it, slowing
        # the training and timing steps at half their speed)
        if (live := self._live_job()) is not None:
            raise CareError(f"a training is running ({self.rel(live)}): an estimate times training steps on this "
                            "machine, and beside it both would be slowed and the estimate off; estimate when it has "
                            "ended, or Stop it")
        patches = self.ensure_patches(note)
        self.preflight = preflight(with_channels_of(self.config(), patches), patches, members=self.ensemble_members or 1)
        return self.preflight

    def start_training(self, resume=False, note=None):
        from carecore.models.config import with_channels_of
        from carecore.training.jobs import start_job

        # one training at a time (a second would share the CPU unseen): any live job under models/, also one
        # another page started, and a start under way here
        with self._poll_lock:
            if self._starting:
                raise CareError("a training is being started: wait for it")
            if (live := self._live_job()) is not None:
                raise CareError(f"a training is running ({self.rel(live)}): stop it (Stop), or wait for it to end")
            self._starting = True
        try:
            job_dir = self.job_dir
            # a resumed training's own patch size, whatever the budget chosen now (another budget's patches hold
            # out other validation boxes, some on regions it trained on: training refuses them)
            was = self._check_resumable(job_dir) if resume else {}
            own = {k: (tuple(was[k]) if k == "patch_size" else was[k]) for k in ("patch_size", "seed") if was.get(k) is not None}
            patches = self.ensure_patches(note, resumed=own or None)
            if not resume:
                job_dir = str(Path(self.data_root) / "models" / time.strftime(f"{self.task}_%Y%m%d_%H%M%S"))
            config = self.config().replace(**own)   # (a resumed training's own patch size and seed, in its record)
            # (the images' channels: two-channel pairs train a two-channel network)
            start_job(job_dir, self.patches_dir, with_channels_of(config, patches), ensemble=self.ensemble_members)
            with self._poll_lock:   # not in the middle of a poll of the job before
                self.job_dir, self.job_state = job_dir, "starting"
        finally:
            self._starting = False
        self.watch_job()

    def _check_resumable(self, job_dir):
        """Resume continues the last training: refused, before anything is written, where there is none, or
        where it trained another kind of model or on other axes than the task chosen now (a user trial: Resume
        after a change of task wrote the new task's job into the last one's folder and wiped its record).
        Returns the configuration it was started with (its job's)."""
        import json

        if not job_dir or not (Path(job_dir) / "job.json").exists():
            from carecore.training.jobs import find_jobs

            others = find_jobs(Path(self.data_root) / "models")
            if others:   # (the Train step shows the chosen task's last training: none here)
                raise CareError(f"nothing to resume for {self.spec['label']}: no training of this task has run in this "
                                f"lab yet (the last one, {self.rel(others[0])}, is another task's: choose that task to "
                                "resume it); press Start to start one")
            raise CareError("nothing to resume: no training has run in this lab yet; press Start to start one")
        try:
            was = json.loads((Path(job_dir) / "job.json").read_text()).get("config") or {}
        except (OSError, ValueError) as e:
            raise CareError(f"cannot resume {self.rel(job_dir)}: its job.json is unreadable ({e}); press Start to "
                            "start a new training") from None
        now = self.config()
        if (was.get("kind") or "care", was.get("axes")) != (now.kind, now.axes):
            raise CareError(f"Resume continues the last training, {self.rel(job_dir)}: a model of kind "
                            f"{was.get('kind') or 'care'!r} on {was.get('axes')} images; the task chosen now makes one "
                            f"of kind {now.kind!r} on {now.axes} images: press Start to start a new training (or "
                            "choose that task again to resume it)")
        return was

    def stop_training(self):
        """Ask this page's training to stop after its running step (it keeps its best weights); what the
        Train step says of it (a Stop with nothing running said nothing)."""
        from carecore.training.jobs import STATES_RUNNING, job_status, request_stop

        if self.job_dir and job_status(self.job_dir).get("state") in STATES_RUNNING:
            request_stop(self.job_dir)
            return f"stopping {self.rel(self.job_dir)} after its running step: it keeps its best weights so far"
        if self._starting:
            return "a training is being prepared (its patches): press Stop again once it has started"
        return "no training is running: nothing to stop"

    def attach_latest_job(self):
        """Re-attach to the newest job under ``models/`` (a reloaded page or a second tab): the chosen task's last
        one where it has one and no other runs."""
        from carecore.training.jobs import find_jobs, job_status

        try:
            jobs = find_jobs(Path(self.data_root) / "models")
            # the task's own last training where it has one (a change of task shows that task's: the same on a new
            # page), unless another one runs
            mine = [j for j in jobs if job_task(j) == self.task]
            if mine and mine[0] != jobs[0] and job_status(jobs[0]).get("alive"):
                mine = []
            jobs = mine[:1] + jobs
            if jobs:
                self.job_dir = str(jobs[0])
                self.poll_job()
                if self.job_state in ("starting", "running"):
                    # a page reloaded while a training runs comes back to its task (the folder's name begins
                    # with it): a user trial found the page on the first task, showing another task's training
                    task = job_task(jobs[0])
                    if task and task != self.task:
                        self.task = task
                    self.watch_job()
        except Exception as e:  # noqa: BLE001 - a damaged job folder must not break the page
            self.job_state = "unreadable"
            self.job_message = f"cannot read the last training job ({self.job_dir or 'models/'}): {type(e).__name__}: {e}"
        return self.job_dir

    def poll_job(self, adopt_model=True):
        """Read the job's status into the traits; a job seen ending here makes its model the one to restore with
        (``adopt_model``; not for a task's last job attached on a change of task: the model chosen is kept)."""
        from carecore.training.jobs import STATES_DONE, job_status, model_path

        # the background watcher and the page (or a test) may poll at once: one poll at a time
        with self._poll_lock:
            job_dir = self.job_dir
            st = job_status(job_dir)
            if not isinstance(st, dict):
                raise CareError(f"{job_dir}: status.json does not hold a status")
            # the event and budget first: the Train step redraws when the losses and history change
            ev = st.get("event") or {}
            if ev.get("kind") == "batch":
                self.last_event = dict(ev)
            elif not ev:   # a job that has not trained a step yet: no earlier job's plan or clock
                self.last_event = {}
            self.job_preparing = dict(ev) if ev.get("kind") == "preparing" else {}
            self.job_time_limit = float(st.get("time_limit") or 0.0)
            self.progress_epoch = int(ev.get("epoch", 0) or 0)
            self.progress_step = int(ev.get("step", 0) or 0)
            self.earlier_epochs = int(st.get("earlier_epochs") or 0)   # a resumed model's, before this run (first: charts)
            self.earlier_losses = [tuple(p) for p in st.get("earlier_losses") or []]   # (their training loss, in epochs)
            self.losses = list(st.get("losses") or [])
            self.history = list(st.get("history") or [])
            self.baseline = dict(st.get("baseline") or {})
            self.resume_note = str(st.get("resume") or "")
            self.job_notes = "\n".join(str(n) for n in st.get("notes") or [])
            self.job_message = st.get("message", "") or ""
            state = st.get("state", "none")
            # the job's model becomes the one to restore with once, when the job ends: a later poll
            # (the watcher's last one) must not take back a model the user picked meanwhile. It is
            # set before the state, so that whoever sees the job done also sees its model.
            if adopt_model and state in STATES_DONE and self.job_state not in STATES_DONE:
                mp = model_path(job_dir)
                if (mp / "manifest.json").exists() or (mp / "ensemble.json").exists():
                    self.model_dir = str(mp)
            self.job_state = state
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

        losses = sorted((x, y) for x, y in self.earlier_losses if x <= self.earlier_epochs) + \
            [(self.earlier_epochs + p[0] / steps, p[1]) for p in self.losses]
        out = {"training": finite([p[0] for p in losses], [p[1] for p in losses]),
               "validation": finite(range(1, len(hist) + 1), [h.get("val_loss") for h in hist]),
               "ssim": finite(range(1, len(hist) + 1), [h.get("val_ssim") for h in hist])}
        b = self.baseline.get("val_ssim")
        if b is not None and np.isfinite(b):
            end = max([1.0, self.epochs_planned()] + out["training"][0] + out["ssim"][0])
            out["baseline"] = ([0.0, end], [float(b), float(b)])
        return out

    def epochs_planned(self):
        """The epochs a running job plans to train, as the charts count them (from 1 at the job's start;
        an ensemble's members one after the other: the epochs of the members before, this member's plan
        for it and each member after it), from its last batch event: the charts' x axes span them from the
        first step on. 0 before the first event and once the job has ended (the charts then end with the
        data). A time budget can train past its plan (the plan sizes the epochs from a few timed steps;
        the deadline ends training)."""
        ev = self.last_event
        if not ev.get("epochs") or self.job_state not in ("starting", "running"):
            return 0
        member, epoch = ev.get("member"), int(ev.get("epoch") or 1)
        rows = [h for h in self.history if h.get("epoch") is not None]
        mine = [h for h in rows if h.get("member") == member]
        done = len([h for h in mine if int(h["epoch"]) < epoch])    # this run's epochs before the current one
        initial = max(epoch - 1 - done, 0)                          # a resumed model's earlier epochs
        if member is None:
            return max(int(ev["epochs"]) - initial, 1)
        earlier = len(rows) - len(mine)                             # the members before this one
        return earlier + max(int(ev["epochs"]) - initial, 1) * max(int(ev.get("members") or 1) - int(member) + 1, 1)

    @staticmethod
    def ssim_range(curves):
        """The validation SSIM chart's y range: CARE's points and the filters' line with a margin, at least
        0.02 tall (with the line alone, the axis would have no height)."""
        ys = list(curves["ssim"][1]) + list(curves.get("baseline", ([], []))[1])
        if not ys:
            return None
        lo, hi = min(ys), max(ys)
        pad = max(0.08 * (hi - lo), (0.02 - (hi - lo)) / 2, 0.0)
        return lo - pad, hi + pad

    def line_verdict(self):
        """Where a training's best validation SSIM ended against the best classical filter's (the chart's
        dashed line), in a sentence; "" without both (a user trial: the Train step said "Next: step 3" whether
        CARE had passed the filters or stayed below them)."""
        b = self.baseline.get("val_ssim")
        care = [float(h["val_ssim"]) for h in self.history if h.get("val_ssim") is not None and np.isfinite(h["val_ssim"])]
        if b is None or not np.isfinite(b) or not care:
            return ""
        named = filter_label(self.baseline["name"], self.baseline.get("params")) if self.baseline.get("name") else "the filter"
        versus = f"(best validation SSIM {max(care):.3f} against {named}'s {float(b):.3f})"
        if max(care) > b:
            return f"CARE passed the best classical filter on the validation patches {versus}"
        return (f"CARE stayed below the best classical filter on the validation patches {versus}: that filter restores "
                "these images better so far; train longer (a larger budget, or Resume), and compare on a test image "
                "in step 3")

    def baseline_label(self):
        """``best filter: tv (weight=0.2)`` for the chart's legend."""
        b = self.baseline
        start = f" on the {b['start']}" if b.get("start") else ""   # (a projection's or an axial kind's best start)
        return f"best filter: {filter_label(b['name'], b.get('params'))}{start}" if b.get("name") else ""

    def watch_job(self, interval=0.5):
        """Poll the job in a background thread until it ends (views observe the traits).

        One watcher at a time: it decides to stop, and forgets itself, under the poll lock, so that a
        job started just as the last one ended always gets a watcher.
        """
        with self._poll_lock:
            if self._poller is not None:
                return

            def loop():
                try:
                    while True:
                        time.sleep(interval)
                        with self._poll_lock:
                            try:
                                st = self.poll_job()
                            except Exception as e:  # noqa: BLE001 - keep the page alive
                                self.job_message = f"cannot read the job status: {e}"
                                self.job_state = "unknown"   # (not left "running": Start would stay off)
                                st = {}
                            if st.get("state") not in ("starting", "running"):
                                self._poller = None
                                return
                finally:   # whatever ended it: the next job gets a watcher
                    with self._poll_lock:
                        if self._poller is threading.current_thread():
                            self._poller = None

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
        """Model and ensemble folders under ``models/``, in the order they were trained: folders a user put
        there by name first, then the lab's trainings by their start (``<task>_<YYYYmmdd_HHMMSS>``). (The
        Restore step keeps the places it has shown and lists new folders last: the page sends a pick as a
        place in its list, and newest first, a model picked in the instant a training ended landed on its
        neighbour.) Refused folders are listed in ``model_problems``."""
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
        return sorted(ok, key=_trained_order)

    @property
    def chosen_model(self):
        """The chosen model folder as the Restore step lists it: relative to the data root (a job's watcher sets
        an absolute path); "" if none."""
        m = self.model_dir
        return self.rel(m) if m and Path(m).is_absolute() else m

    def model_scales_by_own(self):
        """Why the chosen model scales every image by its own percentiles whatever the Restore step's choice, or ""
        where the choice applies (a user trial found the box unticked for a sub-diffraction model, and the summary
        saying "input scaled by its own percentiles"); the rule of :attr:`carecore.CARE.scales_by_training`, read
        from the folder's files (an ensemble's members follow the choice)."""
        import json

        try:
            folder = self.resolve(self.model_dir)
            if (folder / "ensemble.json").exists():
                return ""
            config = json.loads((folder / "config.json").read_text())
        except (CareError, OSError, ValueError, TypeError):
            return ""
        if config.get("kind") == "subdiffraction":
            return "it was trained on simulated images, which have no intensity scale of their own to keep"
        if config.get("input_normalization", "image") == "image":   # (folders saved before the choice existed)
            return "its configuration scales each image by its own percentiles"
        try:
            card = json.loads((folder / "run_card.json").read_text())
            sources = (card.get("normalization_seen") or {}).get("sources") or []
        except (OSError, ValueError, AttributeError):
            sources = []
        if not any(isinstance(x, dict) and x.get("norm_low") is not None for x in sources):
            return "it was trained on arrays with no record of their scaling"
        return ""

    def model_for_task(self, models=None):
        """The model the Restore step offers first: the chosen one when it was trained for the current task
        (its job folder is named ``<task>_<time>``) or is no job's; else the newest of the lab's trainings
        for the task (a folder named by hand ``<task>_...`` where there is none), if any."""
        import json

        models = self.models_available() if models is None else models
        current = self.chosen_model
        job = Path(current).parent.name if current else ""
        if current and (job.startswith(f"{self.task}_") or not any(job.startswith(f"{t}_") for t in TASKS)):
            return current

        def finished(m):   # not the checkpoint of a job still training (or one that died while training)
            try:
                return json.loads((Path(self.data_root) / m / "run_card.json").read_text()).get("status") != "running"
            except (OSError, ValueError, AttributeError):
                return True   # (an ensemble folder has no run card of its own)

        return next((m for m in reversed(models) if Path(m).parent.name.startswith(f"{self.task}_") and finished(m)),
                    current)

    def truth_for(self, input_path):
        """The ground truth of ``<...>/low/NAME``: ``<...>/high/NAME`` inside the data root, else an image
        of the same stem in another format (``low/a.ome.zarr`` and ``high/a.tif``), else None."""
        p = Path(input_path)
        if p.parent.name != "low":
            return None
        high = p.parent.parent / "high"
        same = self.inside(high / p.name)
        if same is not None:
            return same
        stem = image_stem(p.name)
        return next((t for t in (self.inside(high / (stem + s)) for s in (".tif", ".tiff", ".ome.zarr"))
                     if t is not None), None)

    def output_path(self, model_dir, input_path, *, ome_zarr=False):
        """``restored/<model>/<input's path in the data root>``: the model is named by its job folder
        (``.../job/model``), and the image by its folders too (``train/low/a.tif`` and ``test/low/a.tif`` are
        two restorations); ``ome_zarr``: ``.../<input stem>.ome.zarr`` (what chunked prediction writes)."""
        m = Path(model_dir)
        name = m.parent.name if m.name in ("model", "ensemble") and m.parent.name else m.name
        try:
            out = Path(self.rel(self.resolve(input_path, must_exist=False)))
        except CareError:   # (outside the data root: by its name)
            out = Path(Path(input_path).name)
        if ome_zarr:
            out = out.parent / (image_stem(out.name) + ".ome.zarr")
        return Path(self.data_root) / "restored" / name / out

    def export_model(self, author=""):
        """The chosen model as a bioimage.io package (Fiji's deepImageJ, KNIME, napari, ``carecore predict``):
        ``exports/<model>.zip`` in the data root, named by its job folder (an earlier export of it replaced),
        through :func:`carecore.export_bioimageio`. An ensemble's first member is exported (the format holds
        one network). Returns a dict: ``path`` (in the data root), ``mib``, ``member`` (the member exported,
        or ""), ``test_input`` (what the package's test image was cropped from), ``replaced`` (an earlier export
        of it was), ``authors`` (``author`` split at ``;``), ``probabilistic`` (two output channels per channel)."""
        import json

        from carecore.export.bioimageio import EXPORTABLE_KINDS, REFUSED_KINDS, package_name

        if not self.model_dir:
            raise CareError("no model chosen: train one (step 2) or choose one above")
        folder = self.resolve(self.model_dir)
        name = folder.parent.name if folder.name in ("model", "ensemble") and folder.parent.name else folder.name
        title, member = None, ""   # (the package's name: by default the folder's, made one bioimage.io takes)
        if (folder / "ensemble.json").exists():   # (the format cannot express the members' mixture nor their D)
            try:
                members = json.loads((folder / "ensemble.json").read_text())["members"]
                member_dir = self.resolve(folder / members[0])   # (confined to the data root)
            except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
                raise CareError(f"{self.rel(folder)}: its ensemble.json names no member to export ({e})") from None
            title, member = f"{package_name(None, folder)} member 1", self.rel(member_dir)
            folder = member_dir
        try:
            config = json.loads((folder / "config.json").read_text())
            kind = config.get("kind", "care")
        except (OSError, ValueError, AttributeError) as e:
            raise CareError(f"{self.rel(folder)}: no readable config.json ({e})") from None
        if kind not in EXPORTABLE_KINDS:
            why = REFUSED_KINDS.get(kind, "it needs processing around its network that the format cannot express")
            raise CareError(f"a model of kind {kind!r} cannot be exported as a bioimage.io package: {why}. Restore "
                            "with it here instead and open the saved OME-TIFF in Fiji, KNIME or napari")
        authors = [a.strip() for a in author.split(";") if a.strip()]   # (several: "A. Name; B. Name")
        slashed = [a for a in authors if "/" in a or "\\" in a]
        if slashed:   # (carecore's own refusal speaks of the command line's --author)
            raise CareError(f"Author {slashed[0]!r}: bioimage.io refuses a slash in an author's name; separate several "
                            "authors with ';' (A. Name; B. Name)")
        out = Path(self.data_root) / "exports" / f"{name}.zip"
        replaced = out.exists()
        try:
            written = cc.export_bioimageio(folder, out, name=title, authors=authors or None)
        except CareError as e:   # (the app has no field for a test image: the command line has)
            if not str(e).startswith("test input: none given"):
                raise
            raise CareError(f"{self.rel(folder)}: its training images cannot be read, and the package needs a test "
                            f"image; export it on the command line with one: `carecore export --model "
                            f"{self.rel(folder)} --out {self.rel(out)} --test-input IMAGE`") from None
        try:
            sources = json.loads((folder / "run_card.json").read_text()).get("data_sources") or []
            low = str(sources[0]["low"])
            low = self.rel(low) if self.inside(low) is not None else low
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            low = ""
        return {"path": self.rel(written), "mib": written.stat().st_size / 2**20, "member": member,
                "test_input": "" if kind == "subdiffraction" else low, "replaced": replaced, "authors": authors,
                "probabilistic": bool(config.get("probabilistic"))}

    def default_input(self):
        """The task's demo test image: a TIFF, else an OME-Zarr image, in ``<task>/test/low``."""
        from carecore.io import is_image_path

        demo = Path(self.data_root) / self.task / "test" / "low"
        files = sorted(demo.glob("*.tif")) or sorted(p for p in demo.glob("*.zarr") if is_image_path(p))
        return self.rel(files[0]) if files else ""

    @validate("n_workers")
    def _valid_workers(self, proposal):
        return min(max(int(proposal["value"]), 1), 64)

    def stop_restore(self):
        """Ask the running restoration to stop (after the running tiles or chunks; a chunked store stays resumable)."""
        self._stop_restore.set()

    def connect_scheduler(self):
        """A ``distributed.Client`` of the scheduler at ``scheduler_address`` with a worker, or a CareError
        within :data:`SCHEDULER_TIMEOUT` seconds (a bad address, nothing listening, no workers)."""
        address = self.scheduler_address.strip()
        if not _ADDRESS.match(address):
            raise CareError(f"{address!r}: not a Dask scheduler address; give one like tcp://127.0.0.1:8786 "
                            "(what `dask scheduler` prints), or restore in this process")
        Client = _dask_client_class()
        self.restore_note = f"connecting to the Dask scheduler at {address} ..."
        try:
            client = Client(address, timeout=SCHEDULER_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise CareError(f"cannot reach the Dask scheduler at {address} within {SCHEDULER_TIMEOUT:g} s "
                            f"({type(e).__name__}: {e}); start one with `dask scheduler` and workers with "
                            f"`dask worker {address}`, or restore in this process") from None
        try:
            client.wait_for_workers(1, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError) as e:
            client.close()
            raise CareError(f"the Dask scheduler at {address} has no workers (waited {SCHEDULER_TIMEOUT:g} s: "
                            f"{type(e).__name__}); start some with `dask worker {address}`") from None
        return client

    def restore(self, progress=None, shown=None):
        """Restore the chosen image with the chosen model; metrics (with tuned filters) when a truth exists.

        ``restore_where``: ``"here"`` predicts tile by tile in this process and writes a TIFF;
        ``"local"`` (a local cluster of ``n_workers``) and ``"scheduler"`` (``scheduler_address``) run
        ``carecore.predict_chunked`` and write ``restored/<model>/<folders>/<name>.ome.zarr``, reporting
        ``progress(done, total, "chunks")``; the app then reads its full-resolution level back to show it.
        :meth:`stop_restore` ends either (``carecore.progress.Stopped``; the chunks written are kept and
        a rerun with the same settings continues); a stop while the classical filters are tuned (the
        restoration done and saved) shows it without the filter rows, and the note says so.
        ``shown()``, where given, is called once the restoration is saved and its views, summary and
        the input's and CARE's scores are set, before the classical filters are tuned on its ground
        truth (minutes for a large image): their rows follow (``scores_pending`` until then; the
        reliability read-outs can be computed meanwhile). A failure of their tuning is then raised with
        the restoration shown, and the scores' note says it.
        """
        self._stop_restore.clear()
        try:
            with self._view_lock:   # not while another frame is being shown and scored
                self._restore(progress, tune=shown is None)
            self._tune_after(shown, progress)
            return self.restored
        finally:
            self.restore_note = ""

    def choose_frame(self, index, progress=None, shown=None):
        """Show and score frame ``index`` of the last restoration (the Restore step's time-point slider):
        :meth:`show_frame` with a fresh stop request (:meth:`stop_restore` ends the filters' tuning)."""
        self._stop_restore.clear()
        try:
            return self.show_frame(index, progress, shown)
        finally:
            self.restore_note = ""

    def _restore(self, progress, tune=True):
        from carecore.uncertainty import Ensemble

        if not self.model_dir:
            raise CareError("choose a model (train one in step 2, or pick a model folder)")
        if not self.input_path:
            raise CareError("choose an image to restore")
        src = self.resolve(self.input_path)
        folder = self.check_model_folder(self.model_dir)
        chunked = self.restore_where != "here"
        chunks = parse_chunks(self.chunks) if chunked else None   # a typo fails before anything runs
        self.restore_note = "loading the model ..."
        model = cc.load_model(folder)          # a model or an ensemble folder
        single = model.members[0] if isinstance(model, Ensemble) else model   # the kind's hooks
        axes, shape, _ = cc.io.peek_axes(src)
        if single.config.kind in ("care", "subdiffraction") and single.config.axes == "YX" and "Z" in axes \
                and shape[axes.index("Z")] > 1:   # (an isotropic model restores stacks slice by slice itself)
            # (the engine's remedy, other axes, is not a setting of this step: a user trial was told to give them)
            raise CareError(f"{self.rel(src)}: a stack of {shape[axes.index('Z')]} slices (axes {axes}, shape "
                            f"{'×'.join(map(str, shape))}), and {self.rel(folder)} is a 2D model (trained on YX "
                            "images): choose a 2D image, or a 3D model (to restore each slice with this 2D model: "
                            f"carecore predict --model {self.rel(folder)} --in {self.rel(src)} --axes "
                            f"{axes.replace('Z', 'S')} --out ... on the command line, in the data root)")
        stop = self._stop_restore.is_set
        # views the network never learned are not averaged; nor an ensemble's members, whose disagreement
        # D and its reference levels (ood_check) are measured on one view
        tta = bool(self.tta and single.learned_views > 1 and not isinstance(model, Ensemble))
        # the model's output smoothing left off: the network's output as it is (an ensemble keeps its members',
        # on which its disagreement's reference levels were measured)
        off = not self.smooth and bool(single.output_sigma) and not isinstance(model, Ensemble)
        options = {"output_sigma": 0.0} if off else {}
        if self.own_percentiles:   # an image taken with another gain, offset or laser power
            options["normalization"] = "image"
        with collect_warnings() as warned:   # (an image unlike the training's: said with the result)
            restored, scale, members, img, out_axes, output_spacing, dest, summary = self._restore_image(
                model, folder, src, chunked, chunks, progress, stop, tta, options)
            single.check_spacing(img.spacing, name=self.rel(src))   # (isotropic: the voxel size against its factor)
        # what was restored and how, and the views' data: set together once the restoration and its first frame's
        # scores succeeded
        summary = f"{self.rel(src)}: {summary}"
        summary += ("; input scaled by the training images' percentiles"
                    if single.scales_by_training and not self.own_percentiles else "; input scaled by its own percentiles")
        if tta:
            summary += "; the mean over its flips and 90° rotations"
        elif self.tta:
            summary += ("; one view (an ensemble's disagreement is measured on one view)" if isinstance(model, Ensemble)
                        else "; one view (the model was trained without flips and rotations)")
        summary += smoothing_note(model.members if isinstance(model, Ensemble) else [model], off)
        if not self.smooth and isinstance(model, Ensemble) and any(m.output_sigma for m in model.members):
            summary += "; kept: an ensemble's disagreement is measured on its smoothed means"
        return self._show_restoration(model, single, src, img, restored, scale, members, out_axes, output_spacing,
                                      dest, summary, chunked, progress, warned, options.get("normalization"), tune)

    def _restore_image(self, model, folder, src, chunked, chunks, progress, stop, tta, options):
        """Restore ``src`` (in this process or chunk by chunk) and save it; what :meth:`_restore` shows.
        ``options``: ``output_sigma`` and ``normalization`` where they are not the model's own."""
        from carecore.uncertainty import Ensemble, mixture_mean_variance

        single = model.members[0] if isinstance(model, Ensemble) else model
        if chunked:
            return self._restore_chunked(folder, src, chunks, progress, stop, tta, **options)
        img = cc.read_image(src)
        self.restore_note = "restoring ..."
        members = scale = None
        if isinstance(model, Ensemble):   # (an ensemble keeps its members' smoothing)
            norm = {k: v for k, v in options.items() if k == "normalization"}
            members = model.predict_members(img.data, axes=img.axes, tta=tta, progress=progress, stop=stop, **norm)
            restored = mixture_mean_variance(*members)[0]
        else:
            out = model.predict(img.data, axes=img.axes, tta=tta, progress=progress, stop=stop, **options)
            restored, scale = out if isinstance(out, tuple) else (out, None)
        # the output's grid, axes and voxel size are the kind's (a finer Z, or no Z for a projection)
        out_axes = single.output_axes(img.axes) if hasattr(single, "output_axes") else img.axes
        output_spacing = single.output_spacing(img.spacing)
        dest = self.output_path(folder, src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        cc.write_image(dest, restored, axes=out_axes, spacing=output_spacing or None,
                       attrs={"model": [str(folder)]})   # (an OME-Zarr one marked a restoration: replaceable)
        return restored, scale, members, img, out_axes, output_spacing, dest, "restored in this process, tile by tile"

    def _show_restoration(self, model, single, src, img, restored, scale, members, out_axes, output_spacing, dest,
                          summary, chunked, progress, warnings=(), normalization=None, tune=True):
        """The restoration's first frame shown and scored (with its ground truth, if any); ``tune=False``:
        without the classical filters' rows where they were not tuned on it before (see :meth:`restore`)."""
        from carecore.uncertainty import Ensemble

        truth, note = None, ""
        gt = self.truth_for(self.input_path)
        if gt is not None and gt != src:
            t = cc.read_image(gt, mmap=True)
            truth = t.data
            if "C" in out_axes and restored.shape[out_axes.index("C")] == 1:   # (a one-channel truth saved without C)
                truth, _ = with_channel_of(truth, t.axes, out_axes)
            frame_shape = tuple(n for a, n in zip(out_axes, restored.shape) if a not in FRAME_AXES)
            if truth.shape != restored.shape and not (frame_shape != restored.shape and truth.shape == frame_shape):
                # (a ground truth without the frame axes serves every frame: a fixed sample imaged again and again)
                note = (f"not scored: its ground truth {self.rel(gt)} has shape {truth.shape}, the restoration "
                        f"{restored.shape} (is the model made for images like this one? it is of kind "
                        f"{model.config.kind!r}, trained on {model.config.axes} patches)")
                truth = None
        # a time-lapse (T) or a stack of samples (S): all its frames restored and saved; the views and the
        # read-outs show one frame at a time (show_frame), first the middle one. The input is kept memory-mapped.
        sizes = {a: img.shape[img.axes.index(a)] for a in img.axes if a in FRAME_AXES}
        frames = {"input": cc.read_image(src, mmap=True).data, "in_axes": img.axes, "restored": restored,
                  "scale": scale, "members": members, "out_axes": out_axes, "truth": truth, "model": single,
                  "name": self.rel(src), "summary": summary, "note": note, "sizes": sizes,
                  "input_label": input_label(model.config.kind), "trained_on": model.trained_on(img.data, axes=img.axes, path=src),
                  "target_seen": truth is not None and bool(model.truth_seen(   # (one truth for all frames: no T)
                      truth, axes=out_axes if truth.ndim == len(out_axes) else
                      "".join(a for a in out_axes if a not in FRAME_AXES))),
                  "warnings": list(warnings), "normalization": normalization}
        view = self._frame_view(frames, int(np.prod(list(sizes.values()), dtype=np.int64)) // 2, progress, tune=tune)
        self.image_axes, self.model_config = "".join(a for a in img.axes if a not in FRAME_AXES), model.config
        self._restored_chunked_ensemble = chunked and isinstance(model, Ensemble)
        self.input_spacing, self.output_spacing = dict(img.spacing or {}), output_spacing
        self.restored_path = self.rel(dest)
        self._set_view(view)
        self.restore_done += 1
        return self.restored

    def _tune_after(self, shown, progress):
        """Where the frame shown waits for the classical filters' rows (``scores_pending``): ``shown()``,
        then the filters tuned on it, outside the view lock (the read-outs of step 5 need not wait), and
        their rows set if that frame is still the one shown. A failure is said in the scores' note."""
        with self._view_lock:
            view, count = self._view, self.view_count
        if not view["scores_pending"]:
            return
        try:
            shown()
            scores = self._frame_scores(view["_frames"], view, progress)
        except Exception as e:
            with self._view_lock:
                if self.view_count == count:
                    self.metrics_note = f"the classical filters could not be tuned on it ({e}): no filter rows" + \
                        view["_seen"]
                    self.metrics_verdict = self._verdict(self.metrics, view["_frames"])
                    self.scores_pending = False
            raise
        with self._view_lock:
            if self.view_count == count:   # (else another restoration or frame is shown: these are not its)
                for name in ("metrics", "metrics_note", "metrics_verdict", "scores_pending"):
                    setattr(self, name, scores[name])

    @property
    def frame_axes(self):
        """The last restoration's frame axes ("T", "S", "TS"), "" for a single image."""
        return "".join(self._frames["sizes"]) if self._frames else ""

    @property
    def frame_name(self):
        """What a frame of the last restoration is called: "time point", "sample" or "frame"."""
        return FRAME_NAMES.get(self.frame_axes, "frame")

    @property
    def shown_caption(self):
        """What the views show: the saved restoration and, for a time-lapse, the frame (steps 4 and 5)."""
        if self.restored is None:
            return ""
        if self.frame_count <= 1:
            return self.restored_path
        sizes = self._frames["sizes"]
        return f"{self.restored_path}, {_frame_clause(sizes, _frame_at(sizes, self.frame_index))}"

    def show_frame(self, index, progress=None, shown=None):
        """Show and score frame ``index`` of the last restoration (its time points or samples counted from
        0 through the frame axes in order; 0 for a single image): the views' input, restoration, scale and
        members, the scores against the ground truth (the filters tuned on this frame) and the summary's
        frame clause, set together once all are computed (an error or a stop leaves the frame shown as it
        was). The reliability read-outs are computed again for it (step 5). A stop request (stop_restore)
        ends the filters' tuning: the frame is then shown without their rows. ``shown()``, where given, is
        called once the frame is set with the input's and CARE's scores, before the filters are tuned on
        it (then a failure of their tuning leaves the frame shown and says so in the scores' note)."""
        with self._view_lock:
            if self._frames is None:
                raise CareError("restore an image first")
            self._set_view(self._frame_view(self._frames, index, progress, tune=shown is None))
        self._tune_after(shown, progress)
        return self.restored

    def _frame_view(self, f, index, progress=None, tune=True):
        """The attributes that show frame ``index`` of the restoration ``f`` (a ``_frames`` record);
        ``tune=False``: scored without the classical filters where they were not tuned on it before
        (``scores_pending``; :meth:`_frame_scores` adds them)."""
        sizes = f["sizes"]
        count = int(np.prod(list(sizes.values()), dtype=np.int64))
        if not 0 <= index < count:
            raise CareError(f"frame {index}: the restoration has {count} (0 to {count - 1})")
        at = _frame_at(sizes, index)
        pick = lambda a, axes: a[tuple(at.get(x, slice(None)) for x in axes)]  # noqa: E731
        in_axes, out_axes = ("".join(x for x in axes if x not in at) for axes in (f["in_axes"], f["out_axes"]))
        single = f["model"]
        v = {"_frames": f, "frame_count": count, "frame_index": index, "input_label": f["input_label"],
             "restore_warnings": f["warnings"]}
        v["input_image"] = x = np.asarray(pick(f["input"], f["in_axes"]), np.float32)
        with collect_warnings():   # (said with the restoration)
            v["input_norm"] = single.input_normalization(x, axes=in_axes, name=f["name"],
                                                         normalization=f["normalization"])   # as it was restored
        v["truth_norm"] = single.truth_normalization(v["input_norm"])   # (scaled by the training inputs': their targets')
        v["input_on_grid"] = np.asarray(single.on_output_grid(x, axes=in_axes), np.float32)
        v["restored"] = np.asarray(pick(f["restored"], f["out_axes"]))
        v["scale"] = None if f["scale"] is None else pick(f["scale"], f["out_axes"])
        v["members"] = None if f["members"] is None else tuple(pick(m, "M" + f["out_axes"]) for m in f["members"])
        v["restore_summary"] = f["summary"] + (
            "; all " + " × ".join(f"{n} {FRAME_NAMES[a]}{'s' * (n != 1)}" for a, n in sizes.items())
            + " restored and saved; shown and scored here: " + _frame_clause(sizes, at) if at else "")
        v["truth"] = None
        if f["truth"] is not None:   # with the frames, or one for all of them
            t = f["truth"]
            v["truth"] = np.asarray(pick(t, f["out_axes"]) if t.shape == f["restored"].shape else t, np.float32)
        v["_axes"] = out_axes, in_axes
        v.update(self._frame_scores(f, v, progress, tune))
        return v

    def _frame_scores(self, f, v, progress=None, tune=True):
        """The scores of the frame view ``v`` (of the restoration ``f``): ``metrics`` (the input's, CARE's
        and, unless ``tune`` is False and they were not tuned on this frame before, the tuned classical
        filters'), their ``metrics_note`` and ``metrics_verdict``, and ``scores_pending`` (the filters' rows
        to follow). The input's and CARE's rows already in ``v`` are reused."""
        out = {"metrics": {}, "metrics_note": f["note"], "metrics_verdict": [], "scores_pending": False, "_seen": ""}
        if v["truth"] is not None:
            out_axes, in_axes = v["_axes"]
            single = f["model"]
            out["metrics"], note, out["scores_pending"] = self._metrics(
                v["restored"], v["truth"], v["input_on_grid"], out_axes, f["input_label"], progress, model=single,
                raw=v["input_image"], raw_axes=in_axes, tune=tune, rows=v.get("metrics"))
            # (none while the filters' rows are to follow: not a verdict on the input alone)
            out["metrics_verdict"] = [] if out["scores_pending"] else self._verdict(out["metrics"], f)
            seen = {True: "; CARE was trained on this image or a part of it (a crop of a training image, or "
                          "one a training image was cut from): its scores here flatter it (score images "
                          "it never saw, e.g. a test folder)",
                    False: "; CARE never saw it",
                    None: "; whether CARE was trained on this image is not recorded"}[f["trained_on"]] \
                if not (f.get("target_seen") and not f["trained_on"]) else \
                ("; its ground truth was one of CARE's training targets (another exposure of a field CARE trained on): "
                 "its scores here flatter it (score fields it never saw)")
            out["metrics_note"], out["_seen"] = note + seen, seen
        return out

    @staticmethod
    def _verdict(metrics, f):
        """The sentences under the scores ``metrics`` of the restoration ``f`` (a ``_frames`` record)."""
        from carecore.qc import verdict

        named = {k.split(": ", 1)[1] if k.startswith("best filter by ") else k: m   # (the filter's own name)
                 for k, m in metrics.items()}
        return verdict(named, input_name=f["input_label"], kind=f["model"].config.kind,
                       seen=bool(f.get("trained_on") or f.get("target_seen")))

    def _set_view(self, v):
        for name in ("restored", "scale", "members", "truth", "metrics", "metrics_note", "metrics_verdict", "scores_pending",
                     "input_image",
                     "input_norm",
                     "truth_norm", "input_on_grid", "input_label", "restore_summary", "_frames", "frame_count", "frame_index",
                     "restore_warnings"):
            setattr(self, name, v[name])
        self._view = v
        self.readouts = {}   # of the frame shown before
        self.reliability_ready = False
        self.view_count += 1

    def _restore_chunked(self, folder, src, chunks, progress, stop, tta=False, output_sigma=None, normalization=None):
        """``carecore.predict_chunked`` on a local cluster or the configured scheduler, into
        ``restored/<model>/<folders>/<name>.ome.zarr``; its full-resolution level read back for the views."""
        _dask_client_class()
        dest = self.output_path(folder, src, ome_zarr=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.restore_where == "scheduler":
            client = self.connect_scheduler()
            where = f"the Dask scheduler at {self.scheduler_address.strip()}"
        else:
            client = None
            where = f"a local Dask cluster of {self.n_workers} worker(s)"
            self.restore_note = f"starting {where} ..."

        def chunk_progress(done, total, what):
            self.restore_note = f"restoring on {where}: {progress_text(done, total, what)}"
            if progress is not None:
                progress(done, total, what)

        try:
            result = cc.predict_chunked(folder, src, dest, scheduler=client,
                                        n_workers=None if client is not None else self.n_workers, chunks=chunks,
                                        tta=tta, output_sigma=output_sigma, normalization=normalization,
                                        progress=chunk_progress, stop=stop)
        finally:
            if client is not None:
                client.close()
        self.restore_note = "reading the restored image back to show it ..."
        out = cc.read_image(dest)                    # level 0 of the pyramid, into memory
        img = cc.read_image(src, mmap=True)          # chunk by chunk (OME-Zarr) or memory-mapped (TIFF)
        restored = np.asarray(out.data, np.float32)
        scale = None
        if "scale" in result.outputs:                # a probabilistic model: its Laplace scale, for step 5
            scale = np.asarray(cc.read_image(dest / "extras" / "scale").data, np.float32)
        again = f", {result.blocks - result.computed} done before" if result.computed < result.blocks else ""
        summary = f"restored on {where}: {result.blocks} chunk(s){again}"
        return restored, scale, None, img, out.axes, dict(out.spacing or {}), dest, summary

    def _metrics(self, restored, truth, x, axes, label, progress=None, *, model=None, raw=None, raw_axes=None,
                 tune=True, rows=None):
        """(rows, note, pending): NRMSE/SSIM/PSNR on the output's grid of the input brought onto it (``x``, the kind's
        ``on_output_grid``: itself, interpolated along Z, ...; its row named ``label``), CARE, and classical
        restorations tuned on this very pair: each filter on each of ``model``'s classical starts from the
        input ``raw`` (``raw_axes``) onto the output's grid (:func:`carecore.baselines.tune_output_baselines`;
        without a model: the filters on ``x``). ``tune=False``: the filters' rows only where they were
        tuned on this pair before, else none and ``pending`` is True. ``rows``: the input's and CARE's
        rows computed before (SSIM on a large stack takes seconds). A model that makes other channels than it
        takes is scored alone."""
        from carecore.qc import other_channels_note

        rows = rows or {}
        care = {"CARE": rows["CARE"] if "CARE" in rows else cc.evaluate(restored, truth, axes=axes)}
        cfg = getattr(model, "config", None)
        if cfg is not None and cfg.n_channel_in != cfg.n_channel_out:   # (two stains in, one out)
            return care, other_channels_note(cfg.n_channel_in, cfg.n_channel_out), False
        if x is None or x.shape != truth.shape:
            return care, "the input cannot be brought onto the ground truth's grid: no input or filter rows", False
        rows = {label: rows[label] if label in rows else cc.evaluate(x, truth, axes=axes), **care}
        # the filters depend on the pair alone, not the model: restoring the same image again (another model,
        # more training), or going back to a time point, reuses them (54 s for the demo's 3D test volume on 2
        # cores, before they ran in threads)
        starts = sorted(model.grid_starts()) if model is not None else [""]
        factor = getattr(getattr(model, "config", None), "upsampling_factor", None)
        # (and the PSF a deconvolution start uses: another model's PSF is another competitor)
        psf = (getattr(getattr(model, "config", None), "psf_sigma", None),
               repr(model.psf_sigmas()) if hasattr(model, "psf_sigmas") else None,
               model.axial_psf_sigma() if hasattr(model, "axial_psf_sigma") else None)   # (a measured PSF's)
        key = (pair_key(x if model is None else raw, truth), axes, label, tuple(starts), factor, psf)
        if key in self._filter_rows:
            tuned, note = self._filter_rows[key]
            return {**rows, **tuned}, note, False
        if not tune:
            return rows, ("the classical filters are being tuned on this image's ground truth: their rows follow "
                          "(Stop skips them)"), True
        try:
            tuned, note = self._tuned_filter_rows(x, truth, axes, label, progress, model=model, raw=raw,
                                                  raw_axes=raw_axes)
        except Stopped:   # the restoration is done and saved: shown without the filters, nothing kept of them
            return rows, ("the classical filters' tuning was stopped: no filter rows (restore again, or choose the frame again, "
                          "to tune them)"), False
        self._filter_rows[key] = (tuned, note)
        while len(self._filter_rows) > 8:   # the last few pairs (frames) only
            del self._filter_rows[next(iter(self._filter_rows))]
        return {**rows, **tuned}, note, False

    def _tuned_filter_rows(self, x, truth, axes, label, progress=None, *, model=None, raw=None, raw_axes=None):
        """(rows, note) of the classical restorations tuned on the input and the ground truth ``truth``."""
        from carecore.baselines import best_baseline, filter_glossary, tune_baselines, tune_output_baselines

        rows = {}

        def tuning(done, total, what):
            self.restore_note = f"tuning classical filters on this image's ground truth: {what} ({done}/{total})"
            if progress is not None:   # (the screening of a model's starts counted as starts: "filters 7/7, 1/90")
                progress(done, total, "starts" if what.startswith("choosing ") else "filters")

        if model is None:
            tuned = tune_baselines([(x, truth)], axes=axes, progress=tuning, stop=self._stop_restore.is_set)
            start_of = lambda t, metric: ""  # noqa: E731
            source, source_axes = x, axes
        else:   # each filter on the best of the model's classical starts (nearest/linear/cubic, MIP/surface)
            tuned = tune_output_baselines(model, [(raw, truth)], axes=raw_axes, progress=tuning,
                                          stop=self._stop_restore.is_set)
            start_of = lambda t, metric: t.start if metric == "ssim" else t.start_nrmse  # noqa: E731
            source, source_axes = raw, raw_axes
        by_ssim, by_nrmse = best_baseline(tuned)
        picks = [("SSIM", by_ssim, by_ssim.params, "ssim"), ("NRMSE", by_nrmse, by_nrmse.params_nrmse, "nrmse")]
        if (by_nrmse.name, by_nrmse.params_nrmse, start_of(by_nrmse, "nrmse")) == \
                (by_ssim.name, by_ssim.params, start_of(by_ssim, "ssim")):
            picks = [("SSIM and NRMSE", by_ssim, by_ssim.params, "ssim")]
        for what, t, params, metric in picks:
            start = start_of(t, metric)
            named = filter_label(t.name, params) + (f" on the {start}" if start else "")
            self.restore_note = f"scoring {named} on the whole image ..."
            rows[f"best filter by {what}: {named}"] = cc.evaluate(t.apply(source, axes=source_axes, for_metric=metric),
                                                                   truth, axes=axes)
        self.restore_note = ""
        note = "filters tuned on this image's own ground truth (their best case)"
        named = [s for s in (model.grid_starts() if model is not None else ()) if s]
        plain = [s for s in named if "Richardson-Lucy" not in s]
        deconvolved = len(named) - len(plain)
        also = f"; or {deconvolved} Richardson-Lucy deconvolutions with the model's PSF" if deconvolved else ""
        if label != "input":
            starts = ", ".join(plain[:3]) + (f" and {len(plain) - 3} more" if len(plain) > 3 else "") + also
            note = (f"compared on the output's grid (the input row: {label}; each filter starts from the best of "
                    f"{starts or 'the input'}); " + note)
        elif deconvolved:   # (sub-diffraction: the input itself, its top-hat background subtraction, or deconvolutions)
            note += f" (each starts from the best of the input itself{''.join('; ' + p for p in plain)}{also})"
        # the rows' short names said in words (a trial: "tv" and "nlm" meant nothing to a microscopist)
        note += f"; {filter_glossary(t.name for _, t, _, _ in picks)}"
        return rows, note

    # -- step 5 ----------------------------------------------------------------------------
    def compute_reliability(self, n_samples=8, confidence=0.9):
        """Interval, samples (and disagreement) from the predicted distribution; calibration without a fit.

        An ensemble's read-outs come from the mixture of its members, never from one Laplace
        matched to the mixture's variance. Everything is on the input's intensity scale. Of the frame
        shown (:meth:`show_frame`); not while another frame is being shown.
        """
        with self._view_lock:
            return self._compute_reliability(n_samples, confidence)

    def _compute_reliability(self, n_samples, confidence):
        from carecore.uncertainty import disagreement, interval_spread, predictive_readouts

        if self.restored is None:
            raise CareError("restore an image first (step 3)")
        if self._restored_chunked_ensemble:
            raise CareError("an ensemble restored on a Dask cluster keeps its interval and disagreement in the "
                            f"OME-Zarr store ({self.restored_path}/extras), not its members: restore in this "
                            "process for the reliability step")
        if self.members is None and self.scale is None:
            config = self.model_config
            try:   # (kinds that predict one value per voxel cannot be trained so: not advised)
                if config is not None:
                    config.replace(probabilistic=True, loss="laplace")
            except CareError as e:
                raise CareError(f"this {config.kind} model gives no confidence intervals: "
                                f"{str(e).split(': ', 1)[-1].split('; ')[0]}; "
                                "the Reliability step reads out probabilistic models and ensembles of the other "
                                "tasks") from None
            raise CareError("this model is not probabilistic: train with 'probabilistic' (or an ensemble) for confidence intervals")
        means, scales = self.members if self.members is not None else (self.restored, self.scale)
        members = self.members is not None
        r = predictive_readouts(means, scales, members=members, confidence=confidence, n_samples=n_samples)
        r["spread"] = interval_spread(r["mean"], r["lower"], r["upper"])   # (how wide, on the brightest structures)
        if members:
            r["disagreement"] = disagreement(means, scales)
        if self.truth is not None:
            r.update(self._truth_readouts(means, scales, members))
            r["trained_on"] = (self._frames or {}).get("trained_on")   # (a training image flatters its calibration)
        r["of"] = self.shown_caption
        self.readouts = r
        self.reliability_ready = True
        return r

    def _truth_readouts(self, means, scales, members):
        """The calibration curve (no fit) and the ground truth for display, labelled with how it was scaled."""
        single, axes = self._frames["model"], self.image_axes   # (a truth comes with a restoration's frames)
        pct = tuple(single.config.percentiles)
        # the network's promise is about the truth scaled as its training targets were; predict maps that back
        # with the input's scaling: the same two maps put the truth into the input's units (carecore's)
        out = {"truth_rescaled": single.truth_in_input_units(self.truth, image=self.input_image, axes=axes,
                                                             normalization=self.input_norm)}
        out["truth_label"] = (f"ground truth (rescaled for display: its {pct[0]:g}–{pct[1]:g} percentile range "
                              "mapped as the input was scaled)" if self.truth_norm is None else
                              "ground truth (rescaled for display: scaled as the training targets were, mapped as the "
                              "input was scaled)")
        if self.truth.shape == np.shape(self.restored):   # (on the output's grid: an upsampling model's finer Z too)
            out["calibration"] = single.calibration(self.truth, means, scales, image=self.input_image, axes=axes,
                                                    normalization=self.input_norm)
        else:
            out["calibration_note"] = ("no calibration curve: the ground truth is not on the restoration's grid "
                                       f"(shape {tuple(self.truth.shape)}, the restoration {tuple(np.shape(self.restored))})")
        return out

"""Chunked prediction over a Dask cluster, written into an OME-Zarr store (resumable).

The output is cut into blocks: whole chunks of the output store, sides multiples of the network's
divisor ``2**depth``, one task per block and time frame. A task reads its block's *window* from the
input (the block plus the network's halo on each side: its receptive field plus the reach of the
output smoothing, 3 sigma, the widest of an ensemble's members, rounded up to the divisor; shifted
inwards at the image borders so that every window has one size, starting on the pooling grid),
restores the window with the model's own tiled :meth:`~carecore.CARE.predict` under
the worker's memory budget, and writes only the block. That is the rule of
:mod:`carecore.prediction.tiling` with blocks for tiles: the result equals the in-memory
prediction up to float rounding. Each block has one writer (chunk-aligned writes need no lock).

Workers receive paths and block indices, never arrays, and load the model once per process (a
cache keyed by the model folders' manifests): a worker's memory is the model plus one window,
whatever the size of the volume. The input's scaling (per frame) is decided once by the client as
the in-memory prediction decides it (:meth:`carecore.CARE.input_normalization`: the training inputs'
percentiles, or the frame's own from a bounded sample).

The store is written beside its destination (``.NAME.resume.part``) with a marker array ``_done``
(one byte per block, set after the block's data): zarr does not store chunks equal to the fill
value, so "the chunk exists" cannot tell a finished block. A rerun with the same model, input and
settings computes only the blocks not marked; when all are done the pyramid levels are computed
(on the cluster) and the store is swapped in.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CareError
from ..progress import Stopped, check_stop, report

DONE = "_done"


def resume_part(dst):
    """Where the store ``dst`` is built, and kept after a stop or a crash for a rerun to continue."""
    dst = Path(dst)
    return dst.parent / f".{dst.name}.resume.part"


_LOCK = threading.Lock()
_MODELS = {}     # per worker process: model key -> loaded model (or ensemble)
_SOURCES = {}    # per worker process: (path, axes) -> array sliced by the tasks
_OUTPUTS = {}    # per worker process: (store, path) -> zarr array


@dataclass(frozen=True)
class BlockJob:
    """What every task of one chunked prediction needs (small: paths, shapes, numbers)."""

    models: tuple        # model folder(s): one folder (a model or an ensemble folder) or several members
    model_key: str       # digest of the folders' manifests: the per-process cache key
    src: str             # the input image (OME-Zarr or TIFF)
    src_axes: str
    out: str             # the store being written
    out_axes: str        # axes of the stored outputs (NGFF order)
    frame_axes: str      # axes processed frame by frame (T)
    spatial: str         # the model's spatial axes, in the model's order
    shape: dict          # size per input axis letter
    block: tuple         # block sides per spatial axis
    window: tuple        # window sides per spatial axis
    divisor: int         # the network's 2**depth
    norms: tuple         # per frame (row-major over frame_axes): Normalization.to_dict()
    names: tuple         # outputs written: "image" and extras (scale, lower, upper, disagreement)
    interval: float
    memory_budget: int
    tta: bool = False    # test-time augmentation (CARE.predict's tta)
    output_sigma: float | None = None   # CARE.predict's per-call output_sigma (None: each model's own)


@dataclass
class ChunkedPrediction:
    """What :func:`predict_chunked` did."""

    path: Path
    blocks: int                 # blocks in all (frames included)
    computed: int               # blocks computed by this call (the others were done before)
    outputs: tuple              # images in the store: "image" at its root, extras under extras/<name>
    workers: dict = field(default_factory=dict)   # worker pid -> peak resident memory (bytes) seen by its tasks


def _up(v, d):
    return int(math.ceil(v / d) * d)


def _output_path(name):
    from ..ngff import EXTRAS

    return "0" if name == "image" else f"{EXTRAS}/{name}/0"


def block_window(start, block, window, length, divisor):
    """``(window start, window stop)`` along one axis for the block starting at ``start``.

    The window is the block plus the halo on each side, shifted inwards at the borders so that it
    keeps its size on the image padded to the divisor (its stop is clipped to the image; prediction
    pads the end by reflection as the whole image is padded).
    """
    padded = _up(length, divisor)
    size = min(window, padded)
    halo = (window - block) // 2
    w0 = min(max(start - halo, 0), padded - size)
    return w0, min(w0 + size, length)


def _model_key(folders):
    h = hashlib.sha256()
    for f in folders:
        f = Path(f)
        files = sorted(f.rglob("manifest.json")) + sorted(f.rglob("ensemble.json"))
        if not files:
            raise CareError(f"{f}: not a saved model folder (no manifest.json); save the model first")
        for p in files:
            h.update(str(p.relative_to(f)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cached_model(job):
    with _LOCK:
        model = _MODELS.get(job.model_key)
        if model is None:
            from ..models.folder import load_model

            _MODELS.clear()   # one model per worker at a time
            model = _MODELS[job.model_key] = load_model(list(job.models) if len(job.models) > 1 else job.models[0])
        return model


def _source(job):
    key = (job.src, job.src_axes)
    with _LOCK:
        if key not in _SOURCES:
            from ..ngff import is_ngff, open_level

            if is_ngff(job.src):
                arr = open_level(job.src)
            else:
                from ..io import read_image

                arr = read_image(job.src, axes=job.src_axes, mmap=True).data
            _SOURCES.clear()
            _SOURCES[key] = arr
        return _SOURCES[key]


def _output(job, name):
    key = (job.out, name)
    with _LOCK:
        if key not in _OUTPUTS:
            import zarr

            if len(_OUTPUTS) > 32:
                _OUTPUTS.clear()
            _OUTPUTS[key] = zarr.open_array(f"{job.out}/{name}", mode="r+")
        return _OUTPUTS[key]


def frame_indices(job):
    """The frames (tuples of indices over ``frame_axes``), row-major."""
    import itertools

    return list(itertools.product(*[range(job.shape[a]) for a in job.frame_axes]))


def predict_block(job, index):
    """Restore one block (a task run by a worker): read its window, predict, write the block, mark it done.

    ``index``: the block's index over ``frame_axes`` then ``spatial``. Returns ``(index, pid, peak RSS
    in bytes)``.
    """
    from ..axes import move_axes
    from ..normalize import Normalization
    from ..uncertainty import Ensemble, disagreement, predictive_readouts

    nf = len(job.frame_axes)
    frame, blk = tuple(index[:nf]), tuple(index[nf:])
    model = _cached_model(job)
    src = _source(job)
    windows, inner, core = {}, {}, {}
    for a, i, b, w in zip(job.spatial, blk, job.block, job.window):
        n = job.shape[a]
        b0, b1 = i * b, min(i * b + b, n)
        w0, w1 = block_window(b0, b, w, n, job.divisor)
        windows[a], inner[a], core[a] = slice(w0, w1), slice(b0 - w0, b1 - w0), slice(b0, b1)
    src_index = tuple(frame[job.frame_axes.index(a)] if a in job.frame_axes else windows.get(a, slice(None))
                      for a in job.src_axes)
    x = np.asarray(src[src_index])
    axes = "".join(a for a in job.src_axes if a not in job.frame_axes)
    norm = Normalization.from_dict(job.norms[frame_indices(job).index(frame)] if nf else job.norms[0])
    origin = " ".join(f"{a} {windows[a].start}" for a in job.spatial)   # (a block's positions count from it)
    kw = dict(axes=axes, normalization=norm, memory_budget=job.memory_budget,
              name=f"{job.src} block {index} (read from {origin})")
    if job.tta:
        kw["tta"] = True
    if job.output_sigma is not None:
        kw["output_sigma"] = job.output_sigma
    crop = tuple(inner.get(a, slice(None)) for a in axes)
    if isinstance(model, Ensemble):
        means, scales = model.predict_members(x, **kw)
        means, scales = means[(slice(None),) + crop], scales[(slice(None),) + crop]
        r = predictive_readouts(means, scales, members=True, confidence=job.interval)
        outs = {"image": r["mean"], "lower": r["lower"], "upper": r["upper"]}
        if "disagreement" in job.names:
            outs["disagreement"] = disagreement(means, scales)
    else:
        out = model.predict(x, **kw)
        if isinstance(out, tuple):
            mean, scale = out[0][crop], out[1][crop]
            r = predictive_readouts(mean, scale, confidence=job.interval)
            outs = {"image": mean, "scale": scale, "lower": r["lower"], "upper": r["upper"]}
        else:
            outs = {"image": out[crop]}
    stored = "".join(a for a in job.out_axes if a not in job.frame_axes)
    out_index = tuple(frame[job.frame_axes.index(a)] if a in job.frame_axes else core.get(a, slice(None))
                      for a in job.out_axes)
    for name in job.names:  # move_axes adds a C of size 1 where the store has one and the image not
        _output(job, _output_path(name))[out_index] = move_axes(outs[name], axes, stored).astype(np.float32)
    _output(job, DONE)[tuple(slice(i, i + 1) for i in index)] = 1
    return tuple(index), os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def warm_worker(job):
    """Load the model and run it once on a window of zeros (a task per worker before the blocks): the
    model loads on every worker at once, and the first blocks do not wait for it."""
    from ..normalize import Normalization
    from ..uncertainty import Ensemble

    model = _cached_model(job)
    axes = "".join(a for a in job.src_axes if a not in job.frame_axes)
    shape = tuple(min(job.window[job.spatial.index(a)], job.shape[a]) if a in job.spatial else job.shape[a]
                  for a in axes)
    n = job.shape.get("C", 1)
    norm = Normalization((0.0,) * n, (1.0,) * n)
    (model.predict_members if isinstance(model, Ensemble) else model.predict)(
        np.zeros(shape, np.float32), axes=axes, normalization=norm, memory_budget=job.memory_budget)
    return os.getpid()


def _warm_all(client, job):
    workers = list(client.scheduler_info()["workers"])
    futures = [client.submit(warm_worker, job, workers=[w], allow_other_workers=False, pure=False) for w in workers]
    client.gather(futures)


def _executing(dask_worker):
    return dask_worker.state.executing_count


def _wait_idle(client, timeout=60.0):
    """Wait (at most ``timeout`` seconds) until no worker is running a task."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not any(client.run(_executing).values()):
                return
        except Exception:  # a worker gone, a closed client: nothing more to wait for
            return
        time.sleep(0.1)


def worker_peak_memory():
    """Peak resident memory (bytes) of the calling process; ``client.run(worker_peak_memory)`` asks every worker."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _resolve_models(model):
    """(folders, loaded model) from a folder, several folders, a loaded model or an ensemble."""
    from ..models.folder import load_model
    from ..uncertainty import Ensemble

    if isinstance(model, (str, Path)):
        return (str(Path(model).resolve()),), load_model(model)
    if isinstance(model, (list, tuple)) and all(isinstance(m, (str, Path)) for m in model):
        folders = tuple(str(Path(m).resolve()) for m in model)
        return folders, load_model(list(folders) if len(folders) > 1 else folders[0])
    if isinstance(model, Ensemble):
        if model.path is not None:
            return (str(Path(model.path).resolve()),), model
        if any(m.path is None for m in model.members):
            raise CareError("the ensemble's members have no folders; save them (workers load models from folders)")
        return tuple(str(Path(m.path).resolve()) for m in model.members), model
    if getattr(model, "path", None) is None or not (Path(model.path) / "manifest.json").exists():
        raise CareError("the model has no saved folder; save it first (model.save(path)): workers load models "
                        "from folders")
    return (str(Path(model.path).resolve()),), model


def source_id(path):
    """What changes when the input at ``path`` is rewritten, for a resumed store to match: a file's inode,
    modification time and size; for a folder (a Zarr store), its inode and, over every file and folder in it,
    the latest modification time, their count and their total size. (The store folder's own time was kept when
    chunks inside it were rewritten in place: a user trial's resume mixed the old input's blocks with the new; an
    OME-Zarr image's full-resolution array only is walked. Parts written before 2026-12-08 start again.)"""
    st = os.stat(path)
    if not os.path.isdir(path):
        return [st.st_ino, st.st_mtime_ns, st.st_size]
    latest, count, size = st.st_mtime_ns, 0, 0
    walked = path
    try:   # an OME-Zarr image: its full-resolution array only (not its labels, not the pyramid's other levels)
        import zarr

        level0 = zarr.open_group(str(path), mode="r").attrs["multiscales"][0]["datasets"][0]["path"]
        if os.path.isdir(os.path.join(path, level0)):
            walked = os.path.join(path, level0)
    except Exception:  # noqa: BLE001 - a plain Zarr array or group: all of it
        pass
    for root, _, files in os.walk(walked):
        latest = max(latest, os.stat(root).st_mtime_ns)
        for f in files:
            fs = os.stat(os.path.join(root, f))
            latest, count, size = max(latest, fs.st_mtime_ns), count + 1, size + fs.st_size
    return [st.st_ino, latest, count, size]


def _auto_block(model, shape, memory_budget, halo):
    """Block sides (multiples of the divisor) whose window's activations fit the budget, with ``halo``
    (per axis) on each side."""
    div = model.config.divisor
    halo = _up(max(np.atleast_1d(halo)), div)
    block = [_up(s, div) for s in shape]
    bpv = model._bytes_per_voxel()
    while math.prod(min(b + 2 * halo, _up(s, div)) for b, s in zip(block, shape)) * bpv > memory_budget:
        i = int(np.argmax(block))
        if block[i] <= div:
            break
        block[i] = max(div, _up(block[i] // 2, div))
    return tuple(block)


def local_cluster(n_workers, memory_limit=None):
    """A Dask cluster on this machine: ``n_workers`` worker processes of one thread each, on loopback.

    ``memory_limit`` is each worker's, as Dask reads it ("4GiB", "auto": the machine's memory times the
    worker's share of the cores); None: the machine's memory shared among the workers (Dask's default).
    Its scheduler serves no dashboard and its HTTP endpoints on a free port (Dask's default takes port
    8787 even without a dashboard, and warns when another cluster, a notebook's say, has it).
    """
    from distributed import LocalCluster

    limit = {} if memory_limit is None else {"memory_limit": memory_limit}
    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, **limit,
                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})


def _said_by_the_caller(record):
    """A logging filter for the workers: False for their "Compute Failed" record of a
    :class:`~carecore.CareError` (bad data in a block: the caller says it, in one line)."""
    message = record.msg if isinstance(record.msg, str) else ""
    return not (message.startswith("Compute Failed") and "CareError(" in str(record.args))


def _quiet_care_errors():
    """Run on each worker before the blocks: :func:`_said_by_the_caller` on its log (other failures, memory
    and event-loop warnings are logged as Dask logs them)."""
    import logging

    logger = logging.getLogger("distributed.worker")
    if _said_by_the_caller not in logger.filters:
        logger.addFilter(_said_by_the_caller)


#: Seconds a scheduler's client waits for the workers asked for (``n_workers``).
WAIT_FOR_WORKERS = 120


def _client(scheduler, n_workers, memory_limit):
    """(client, owned cluster or None); a scheduler's client waits for ``n_workers`` (none: for none)."""
    from distributed import Client

    if scheduler is None:
        cluster = local_cluster(n_workers or max(1, min(4, (os.cpu_count() or 2) // 2)), memory_limit)
        return Client(cluster), cluster
    if isinstance(scheduler, Client):
        return scheduler, None
    try:
        client = Client(str(scheduler), timeout=30)
    except (OSError, TimeoutError) as e:
        raise CareError(f"cannot reach the Dask scheduler at {scheduler} ({e}); start one with `dask scheduler` "
                        "and give its address, e.g. tcp://127.0.0.1:8786") from None
    if n_workers:
        _await_workers(client, scheduler, n_workers)
    return client, None


def _await_workers(client, scheduler, n_workers):
    """Wait for the scheduler's ``n_workers``, or close the client and say how many it has."""
    try:
        client.wait_for_workers(n_workers, timeout=WAIT_FOR_WORKERS)
    except TimeoutError as e:   # (a trial waited 2 minutes for "carecore: error: 120 2")
        have = getattr(e, "available_workers", None)   # (scheduler_info() lists 5 workers at most)
        if have is None:
            have = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        client.close()
        raise CareError(f"the Dask scheduler at {scheduler} has {have} worker(s) after {WAIT_FOR_WORKERS} s of "
                        f"waiting for {n_workers} (--workers / n_workers): start more (`dask worker {scheduler}`), "
                        "or ask for as many as it has") from None


def predict_chunked(model, src, dst, *, axes=None, chunks=None, scheduler=None, n_workers=None,
                    memory_limit="auto", memory_budget=None, interval=0.9, normalization=None, tta=False,
                    output_sigma=None, progress=None, stop=None):
    """Restore an image chunk by chunk over a Dask cluster into an OME-Zarr store (resumable).

    Parameters
    ----------
    model : str, Path, list of them, CARE or Ensemble
        A model folder, an ensemble folder, several member folders, or a loaded model saved in a
        folder (workers load it from there, once per process). Kinds whose output lies on the input's
        grid (``care``, ``subdiffraction``).
    src : str or Path
        The input image: an OME-Zarr image (read chunk by chunk) or an uncompressed TIFF (memory-mapped;
        a compressed TIFF is read whole by every worker: convert it first, ``carecore convert``).
    dst : str or Path
        The OME-Zarr store to write (``*.ome.zarr``): the restored image at its root (NGFF 0.4, with a
        pyramid), and for probabilistic models the extra images ``extras/scale``, ``extras/lower``,
        ``extras/upper`` (the central ``interval``), for ensembles ``extras/lower``, ``extras/upper``
        and ``extras/disagreement``.
    axes : str, optional
        Overrides the input's axes. Axes besides C and the model's spatial axes (T) are processed frame
        by frame (frames in parallel).
    chunks : tuple or dict, optional
        Block sides per spatial axis (rounded up to the network's divisor; also the chunks of the
        store). Default: the largest blocks whose window fits ``memory_budget``.
    scheduler : str or distributed.Client, optional
        The address of a running Dask scheduler (``tcp://host:8786``) or a client; default: a
        ``LocalCluster`` of ``n_workers`` processes on this machine, closed at the end.
    n_workers : int, optional
        Workers of the local cluster (default: half the CPU cores, 1 to 4); with ``scheduler``, wait
        for this many workers.
    memory_limit : str or int
        Memory limit per worker of the local cluster (dask's syntax, e.g. ``"2GiB"``).
    memory_budget : int, optional
        Bytes of working memory of a task's network (default: :data:`carecore.models.care.DEFAULT_PREDICT_BUDGET`).
    interval : float
        Confidence of the ``lower``/``upper`` extras.
    normalization : Normalization, "image" or "training", optional
        The input's scaling for every frame, as in :meth:`~carecore.CARE.predict` (default: the model's
        ``input_normalization``; ``"image"`` computes each frame's own percentiles).
    tta : bool
        Average the restorations of the flips and 90° rotations in YX, block by block (as
        :meth:`~carecore.CARE.predict`'s ``tta``: 8 views, 8× the work); not for an ensemble (its
        disagreement is of one view).
    output_sigma : float, optional
        The Gaussian sigma (pixels) that smooths the restored mean, as :meth:`~carecore.CARE.predict`'s
        ``output_sigma`` (default: each model's own).
    progress, stop : callables, optional
        ``progress(done, total, "chunks")`` as blocks complete; ``stop()`` is polled likewise and ends
        the run (the store stays resumable).

    Returns
    -------
    ChunkedPrediction

    Examples
    --------
    >>> predict_chunked("models/care", "big.ome.zarr", "restored.ome.zarr", n_workers=2)  # doctest: +SKIP
    >>> predict_chunked("models/care", "big.ome.zarr", "restored.ome.zarr", scheduler="tcp://10.0.0.5:8786")  # doctest: +SKIP
    """
    import dask
    import zarr

    from .._atomic import ZARR_STORE, check_replaceable, swap_in
    from ..errors import collect_warnings, warn_frames
    from ..axes import spatial_axes
    from ..io import read_image
    from ..models.care import CARE, DEFAULT_PREDICT_BUDGET
    from ..ngff import check_restoration_target, create_image, fill_pyramid, ngff_axes
    from ..normalize import Normalization
    from ..uncertainty import Ensemble

    memory_budget = int(memory_budget or DEFAULT_PREDICT_BUDGET)
    dst = Path(dst)   # (before the models load: a wrong name is said at once, a trial waited for it)
    if not dst.name.lower().endswith(".zarr"):
        raise CareError(f"{dst}: chunked prediction writes an OME-Zarr store; name it *.ome.zarr")
    if not dst.parent.is_dir():
        raise CareError(f"{dst}: the folder {dst.parent} does not exist")
    folders, loaded = _resolve_models(model)
    first = loaded.members[0] if isinstance(loaded, Ensemble) else loaded
    if not isinstance(first, CARE):
        raise CareError(f"{folders[0]}: chunked prediction runs carecore model folders, not {type(first).__name__}")
    cls = type(first)
    if any(getattr(cls, hook) is not getattr(CARE, hook)   # a kind whose output lies elsewhere
           for hook in ("predict", "_preprocess", "output_axes", "output_spacing", "on_output_grid")):
        raise CareError(f"{folders[0]}: a {first.config.kind!r} model changes the image's grid; chunked prediction "
                        "runs models whose output lies on the input's grid (kinds care, subdiffraction): restore "
                        "it in memory (carecore predict without --dask)")
    c = first.config
    if tta:   # before anything is read or any worker starts
        if isinstance(loaded, Ensemble):
            raise CareError("tta with an ensemble: the store's disagreement (extras/disagreement) would be of the mean "
                            "of the views, which hides part of the members' disagreement, and the ensemble's reference "
                            "levels of D were measured on one view; restore an ensemble without tta (--tta)")
        first._tta_views(tta, str(folders[0]))
    if output_sigma is not None:
        output_sigma = first._check_output_sigma(output_sigma)
    check_replaceable(dst, ZARR_STORE)   # before the work: never a folder of the user's
    check_restoration_target(dst)        # nor a store of raw data (a user trial's acquisition was replaced)
    img = read_image(src, axes=axes, mmap=True)
    src_axes = img.axes
    sp = spatial_axes(src_axes)
    frame_axes = "".join(a for a in src_axes if a not in sp + "C")
    if sp != c.axes:
        raise CareError(f"{src}: the model is {c.ndim}D ({c.axes}) but the image has spatial axes {sp!r} "
                        f"(shape {tuple(img.shape)}, axes {src_axes})"
                        + ("; chunk by chunk the spatial axes are taken in the model's order only: restore it in memory "
                           "(without --dask), or save it with its axes in that order" if sorted(sp) == sorted(c.axes)
                           else "; a 2D model restores a stack slice by slice in memory: without --dask, with --axes "
                           f"{src_axes.replace('Z', 'S')} (predict(..., axes={src_axes.replace('Z', 'S')!r}) in "
                           "Python)" if c.ndim == 2 and "Z" in sp else ""))
    if set(frame_axes) - set("T"):
        raise CareError(f"{src}: axes {src_axes!r} (shape {tuple(img.shape)}): besides C and {c.axes} only T "
                        "(frames) can be predicted chunk by chunk")
    shape = dict(zip(src_axes, img.shape))
    nc = shape.get("C", 1)
    if nc != c.n_channel_in:
        raise CareError(f"{src}: the model takes {c.n_channel_in} channel(s) but the image has {nc} "
                        f"(shape {tuple(img.shape)}, axes {src_axes})")
    # blocks: multiples of the divisor; windows: block + halo (rounded to the divisor) on each side
    div = c.divisor
    # the widest member's (ensemble members may each have chosen their own output smoothing)
    members = loaded.members if isinstance(loaded, Ensemble) else [loaded]
    halo = np.max([np.broadcast_to(np.asarray(m._halo(output_sigma)), (len(sp),)) for m in members], axis=0)
    halo = tuple(_up(int(h), div) for h in halo)
    if chunks is None:
        block = _auto_block(first, [shape[a] for a in sp], memory_budget, halo)
    else:
        if isinstance(chunks, dict):
            chunks = tuple(int(chunks.get(a, shape[a])) for a in sp)
        chunks = tuple(int(v) for v in chunks)
        if len(chunks) != len(sp) or min(chunks) < 1:
            raise CareError(f"chunks {chunks}: give one positive side per spatial axis {sp}")
        block = tuple(_up(v, div) for v in chunks)
    block = tuple(min(b, _up(shape[a], div)) for b, a in zip(block, sp))
    window = tuple(b + 2 * h for b, h in zip(block, halo))
    # normalization per frame, as the in-memory prediction takes it (the same sample, or the training inputs')
    frame_list = [()]
    if frame_axes:
        import itertools

        frame_list = list(itertools.product(*[range(shape[a]) for a in frame_axes]))
    frame_data_axes = "".join(a for a in src_axes if a not in frame_axes)
    if isinstance(normalization, Normalization):
        norms = tuple(normalization.to_dict() for _ in frame_list)
    else:
        norms = []
        with dask.config.set(scheduler="threads"), collect_warnings() as said:   # (said once for all frames)
            for f in frame_list:
                view = img.data[tuple(f[frame_axes.index(a)] if a in frame_axes else slice(None) for a in src_axes)]
                norms.append(first.input_normalization(view, axes=frame_data_axes, normalization=normalization,
                                                       name=f"{src}" + (f" frame {f}" if f else "")).to_dict())
        warn_frames(said)
        norms = tuple(norms)
    probabilistic = c.probabilistic
    if isinstance(loaded, Ensemble):
        names = ("image", "lower", "upper", "disagreement")
    elif probabilistic:
        names = ("image", "scale", "lower", "upper")
    else:
        names = ("image",)
    out_letters = src_axes if ("C" in src_axes or c.n_channel_out == 1) else src_axes + "C"
    out_axes = ngff_axes(out_letters, name=str(dst))
    out_shape = {**shape, "C": c.n_channel_out} if "C" in out_axes else dict(shape)
    part = resume_part(dst)
    job = BlockJob(models=folders, model_key=_model_key(folders), src=str(Path(src).resolve()), src_axes=src_axes,
                   out=str(part.resolve()), out_axes=out_axes, frame_axes=frame_axes, spatial=sp, shape=shape,
                   block=block, window=window, divisor=div, norms=norms, names=names, interval=float(interval),
                   memory_budget=memory_budget, tta=bool(tta), output_sigma=output_sigma)
    signature = {"models": job.model_key, "src": job.src, "src_id": source_id(job.src),
                 "src_axes": src_axes, "shape": shape, "block": list(block),
                 "window": list(window), "norms": list(norms), "names": list(names), "interval": job.interval,
                 **({"tta": True} if job.tta else {}),   # (parts written before tta existed still resume)
                 **({"output_sigma": output_sigma} if output_sigma is not None else {})}
    grid = tuple(shape[a] for a in frame_axes) + tuple(math.ceil(shape[a] / b) for a, b in zip(sp, block))
    client = cluster = None
    awaited = False
    if scheduler is not None and not _is_client(scheduler):   # reached, or refused, before anything is written (a
        # trial's refusal left a part folder behind); its workers awaited here for a fresh run, for a resume only
        # where blocks are left (one with its pyramid left needs none)
        client, cluster = _client(scheduler, None if part.exists() else n_workers, memory_limit)
        awaited = not part.exists()
    try:
        done = None
        if part.exists():
            try:
                g = zarr.open_group(str(part), mode="r+")
                if json.loads(json.dumps(g.attrs.get("carecore", {}).get("job"))) == json.loads(json.dumps(signature)):
                    done = zarr.open_array(str(part / DONE), mode="r+")
            except Exception:  # an unreadable leftover: start again
                done = None
            if done is None:
                shutil.rmtree(part)
        arrays = {}
        if done is None:
            root = zarr.open_group(str(part), mode="w", zarr_format=2)
            store_chunks = tuple(1 if a in frame_axes else out_shape[a] if a == "C" else block[sp.index(a)]
                                 for a in out_axes)
            for name in names:
                group = root if name == "image" else root.require_group("extras").require_group(name)
                arrays[name] = create_image(group, tuple(out_shape[a] for a in out_axes), out_axes, dtype=np.float32,
                                            chunks=store_chunks, spacing=first.output_spacing(img.spacing),
                                            name=dst.name if name == "image" else name)
            done = root.create_array(DONE, shape=grid, chunks=(1,) * len(grid), dtype="u1", fill_value=0,
                                     chunk_key_encoding={"name": "v2", "separator": "/"}, compressors=None)
            root.attrs["carecore"] = {"job": signature}
        else:
            for name in names:
                g = zarr.open_group(str(part if name == "image" else part / "extras" / name), mode="r+")
                arrays[name] = [g[d["path"]] for d in g.attrs["multiscales"][0]["datasets"]]
        todo = [tuple(int(i) for i in ix) for ix in np.argwhere(done[...] == 0)]
        total = int(np.prod(grid))
        result = ChunkedPrediction(dst, total, 0, names)
        report(progress, total - len(todo), total, "chunks")
        if todo:
            check_stop(stop)
            if client is None:
                client, cluster = _client(scheduler, n_workers, memory_limit)
            elif n_workers and cluster is None and not awaited:
                _await_workers(client, scheduler, n_workers)
            from distributed import as_completed

            client.run(_quiet_care_errors)
            _warm_all(client, job)
            futures = [client.submit(predict_block, job, ix, pure=False) for ix in todo]
            try:
                for future in as_completed(futures, loop=client.loop):   # the client need not be the default
                    ix, pid, rss = future.result()
                    result.computed += 1
                    result.workers[pid] = max(result.workers.get(pid, 0), rss)
                    report(progress, total - len(todo) + result.computed, total, "chunks")
                    check_stop(stop)
            except BaseException:
                client.cancel(futures)
                _wait_idle(client)   # tasks already running finish their block: nothing writes after we return
                raise
        compute = (lambda jobs: client.compute(jobs, sync=True)) if client is not None else None
        for name in names:
            fill_pyramid(arrays[name], out_axes, compute=compute)
    except Stopped:   # (said what it kept: a trial's Stopped had no message)
        try:
            kept = f"{int(zarr.open_array(str(part / DONE), mode='r')[...].sum())} of {int(np.prod(grid))} chunks done, "
        except Exception:  # noqa: BLE001 - the count is a courtesy
            kept = ""
        raise Stopped(f"stopped: {kept}kept in {part}; the same call again continues from there") from None
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
        elif client is not None and not _is_client(scheduler):
            client.close()
    root = zarr.open_group(str(part), mode="r+")
    root.attrs["carecore"] = {"extras": [n for n in names if n != "image"], "model": list(folders),
                              "source": job.src, "normalization": list(norms), "interval": job.interval,
                              "tta": job.tta, **({"output_sigma": output_sigma} if output_sigma is not None else {})}
    shutil.rmtree(part / DONE)
    swap_in(part, dst, ZARR_STORE)
    return result


def _is_client(scheduler):
    try:
        from distributed import Client
    except ImportError:
        return False
    return isinstance(scheduler, Client)


__all__ = ["predict_chunked", "predict_block", "block_window", "BlockJob", "ChunkedPrediction",
           "worker_peak_memory", "Stopped"]

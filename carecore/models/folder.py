"""Model folders: save atomically, load with checks, migrate old formats (CARE-NOTES §9).

A model lives in a folder (``config.json``, ``weights_best.weights.h5``, ``weights_last.weights.h5``,
``normalization.json``, ``history.csv``, ``run_card.json``, ``optimizer.npz``, ``manifest.json``)
written into a fresh temporary folder and swapped in. Loading checks the manifest (completeness,
SHA-256 of every file, format version), rebuilds the network of the configured kind from
``config.json`` (:mod:`carecore.models.kinds`) and loads weights only: no pickle, no deserialized code.
:func:`load_model` also opens ensemble folders; it is the one loader of the command line, the app,
the QC report and the notebooks.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np

from .. import __version__
from .._atomic import MODEL_FOLDER, check_replaceable, fresh_tmp, recover, swap_in
from ..errors import CareError
from .config import CareConfig
from .kinds import create_model

MODEL_FORMAT = "carecore-model"
#: 2: the up path's first convolution is one ``UpsampleConcatConv`` layer (same variables as 1).
MODEL_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
WEIGHT_FILES = ("weights_best.weights.h5", "weights_last.weights.h5")
OPTIMIZER_FILE = "optimizer.npz"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model, path=None):
    """Write ``model``'s folder atomically (best and last weights, config, history, run card, optimizer
    state, normalization, manifest) to ``path`` (default: ``model.path``); returns the path."""
    if path is None and model.path is None:
        raise CareError("no folder to save to: pass a path")
    path = Path(path or model.path)
    check_replaceable(path, MODEL_FOLDER)
    tmp = fresh_tmp(path)
    km = model.keras_model
    km.save_weights(tmp / "weights_last.weights.h5")
    if model._best_weights is not None:
        last = km.get_weights()
        km.set_weights(model._best_weights)
        km.save_weights(tmp / "weights_best.weights.h5")
        km.set_weights(last)
    else:
        km.save_weights(tmp / "weights_best.weights.h5")
    opt = getattr(km, "optimizer", None)
    values = [np.asarray(v) for v in opt.variables] if opt is not None and getattr(opt, "built", False) else None
    if values is not None and not all(np.isfinite(v).all() for v in values if v.dtype.kind == "f"):
        values = None   # after a NaN: a resumed run must not start from NaN moments
    if values is not None:  # plain arrays: loaded without pickle
        np.savez(tmp / OPTIMIZER_FILE, **{f"v{i:04d}": v for i, v in enumerate(values)})
        model._optimizer_state = {"class": type(opt).__name__, "values": values}
    elif getattr(model, "_optimizer_state", None) and model.path is not None and (model.path / OPTIMIZER_FILE).exists():
        shutil.copy2(model.path / OPTIMIZER_FILE, tmp / OPTIMIZER_FILE)  # not trained since loading: keep it
    (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    (tmp / "normalization.json").write_text(json.dumps(model._normalization_record(), indent=1))
    with open(tmp / "history.csv", "w", newline="") as f:
        cols = ["epoch", "loss", "val_loss", "val_ssim", "lr", "elapsed"]
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for row in model.history:
            w.writerow({k: row.get(k) for k in cols})
    card = dict(model.run_card, best_val_loss=model.best_val_loss if math.isfinite(model.best_val_loss) else None)
    (tmp / "run_card.json").write_text(json.dumps(card, indent=1, default=str))
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
    (tmp / "manifest.json").write_text(json.dumps({
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "carecore_version": __version__,
        "model_class": type(model).__name__, "optimizer_class": (model._optimizer_state or {}).get("class"),
        "files": files}, indent=1))
    swap_in(tmp, path, MODEL_FOLDER)
    model.path = path
    return path


def load_model_folder(path, *, weights="best"):
    """Load a model folder, refusing incomplete, incompatible or modified folders."""
    path = Path(path)
    recover(path)   # a crash while the folder was being replaced left it aside
    if not path.is_dir():
        raise CareError(f"{path}: no such model folder")
    man_path = path / "manifest.json"
    if not man_path.exists():
        raise CareError(f"{path}: not a complete model folder (manifest.json is missing)")
    try:
        man = json.loads(man_path.read_text())
    except json.JSONDecodeError as e:
        raise CareError(f"{path}/manifest.json: unreadable ({e})") from None
    if man.get("format") != MODEL_FORMAT:
        raise CareError(f"{path}: not a carecore model (format {man.get('format')!r})")
    if man.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise CareError(f"{path}: model format version {man.get('format_version')} is not supported "
                        f"(this carecore reads versions {', '.join(map(str, READABLE_FORMAT_VERSIONS))})")
    for name, digest in man.get("files", {}).items():
        f = path / name
        if not f.exists():
            raise CareError(f"{path}: incomplete model folder, {name} is missing")
        if _sha256(f) != digest:
            raise CareError(f"{path}: {name} was modified after the model was saved (checksum mismatch); "
                            "refusing to load it")
    for name in ("config.json",) + WEIGHT_FILES:
        if name not in man.get("files", {}):
            raise CareError(f"{path}: incomplete model folder, {name} is not listed in the manifest")
    config = CareConfig.from_dict(json.loads((path / "config.json").read_text()))
    model = create_model(config, path)
    wfile = {"best": WEIGHT_FILES[0], "last": WEIGHT_FILES[1]}.get(weights)
    if wfile is None:
        raise CareError(f"weights must be 'best' or 'last', got {weights!r}")
    load = (lambda f: _load_format1_weights(model.keras_model, f)) if man["format_version"] == 1 else \
        model.keras_model.load_weights
    load(path / WEIGHT_FILES[0])   # the best weights are kept in any case (a resumed run must not lose them)
    model._best_weights = [w.copy() for w in model.keras_model.get_weights()]
    if weights == "last":
        load(path / wfile)
    if OPTIMIZER_FILE in man.get("files", {}):
        with np.load(path / OPTIMIZER_FILE, allow_pickle=False) as z:
            model._optimizer_state = {"class": man.get("optimizer_class"), "values": [z[k] for k in sorted(z.files)]}
    hist = path / "history.csv"
    if hist.exists():
        with open(hist, newline="") as f:
            model.history = [{k: (float(v) if v not in ("", None) else float("nan")) for k, v in r.items()}
                             for r in csv.DictReader(f)]
            for r in model.history:
                r["epoch"] = int(r["epoch"])
    card = path / "run_card.json"
    if card.exists():
        model.run_card = json.loads(card.read_text())
        bv = model.run_card.get("best_val_loss")
        model.best_val_loss = float(bv) if bv is not None else math.inf
    return model


def _snake(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _load_format1_weights(km, file):
    """Weights saved in format 1, whose up path was UpSampling, Concatenate and a ``ConvND``.

    The variables are the same, in the same order; Keras stored them under keys derived from the
    layer classes (``conv3d``, ``conv3d_1``, ..., ``bias``, ``bias_1``, ...), so the keys are
    recomputed with each ``UpsampleConcatConv`` counted as the convolution it replaces.
    """
    import h5py

    seen = {}
    with h5py.File(file, "r") as f:
        for layer in km.layers:
            cls = type(layer).__name__
            if cls == "UpsampleConcatConv":
                cls = f"Conv{layer.ndim}D"
            key = _snake(cls)
            n = seen.get(key, 0)
            seen[key] = n + 1
            if not layer.weights:
                continue
            group = f"layers/{key}{f'_{n}' if n else ''}/vars"
            if group not in f or len(f[group]) != len(layer.weights):
                raise CareError(f"{file}: format-1 weights do not match this network (no {group} for layer "
                                f"{layer.name})")
            values = [np.asarray(f[group][str(i)]) for i in range(len(layer.weights))]
            for v, w in zip(values, layer.weights):
                if tuple(v.shape) != tuple(w.shape):
                    raise CareError(f"{file}: format-1 weights do not match this network ({group}: shape "
                                    f"{v.shape}, layer {layer.name} expects {tuple(w.shape)})")
            layer.set_weights(values)


def load_model(path, *, weights="best"):
    """Load a model folder (any kind), an ensemble folder (``ensemble.json``), or a list of model
    folders (opened together as an ensemble).

    The one loader used by the command line, the app, the QC report and the notebooks; see
    :func:`load_model_folder` and :meth:`~carecore.uncertainty.Ensemble.load`.

    Examples
    --------
    >>> model = load_model("models/denoise3d")          # doctest: +SKIP
    >>> ensemble = load_model(["models/m1", "models/m2"])  # doctest: +SKIP
    """
    if not isinstance(path, (str, Path)):
        folders = [Path(p) for p in path]
        if len(folders) != 1:
            from ..uncertainty import Ensemble

            if not folders:
                raise CareError("no model folder given")
            return Ensemble.from_folders(folders)
        path = folders[0]
    if (Path(path) / "ensemble.json").exists():
        from ..uncertainty import Ensemble

        return Ensemble.load(path)
    return load_model_folder(path, weights=weights)

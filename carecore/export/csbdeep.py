"""Import a CSBDeep CARE model folder (``config.json`` + ``weights_best.h5``) as a carecore model.

CSBDeep's CARE network (``csbdeep.internals.nets.common_unet``) is carecore's U-Net: two
convolutions per level, filters doubled per level, the last convolution of the middle and of each
up level halved, nearest upsampling concatenated *before* the skip connection, a 1×1 head,
residual sum, and for probabilistic models a softplus scale head + 1e-3. Its weights are read from
the HDF5 file CSBDeep writes (the legacy Keras layout: attribute ``layer_names``, one group per
layer with ``weight_names``, under Keras 2 and 3 alike) and placed into carecore's layers by name:

=========================  ===============================
CSBDeep layer              carecore layer
=========================  ===============================
``down_level_{l}_no_{j}``  ``down{l}_conv{j}`` (+ ``_bias``)
``middle_{j}``             ``middle_conv{j}`` (the last one is CSBDeep's ``middle_2``)
``up_level_{l}_no_{j}``    ``up{l}_conv{j}`` (the last one is CSBDeep's ``up_level_{l}_no_2``)
first unnamed 1×1 conv     ``head_mean``
second unnamed 1×1 conv    ``head_scale`` (probabilistic)
=========================  ===============================

Supported: 2D and 3D, any depth, kernel and width, residual or not, probabilistic or not, with the
last activation ``linear`` (CSBDeep's default). Refused with a message: other last activations,
axes with time or samples, and Keras-3-native ``.weights.h5`` files (no layer names to map).
CSBDeep normalizes inputs at prediction with percentiles (2, 99.8) by default and maps the output
back the same way, as carecore does; the imported model uses those percentiles.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CareError

_WEIGHT_FILES = {"best": "weights_best.h5", "last": "weights_last.h5"}


def _config_from_csbdeep(d, where):
    """A carecore configuration equivalent to CSBDeep's ``config.json`` dict."""
    from ..models.config import care_config

    missing = [k for k in ("n_dim", "axes", "n_channel_in", "n_channel_out", "unet_n_depth", "unet_kern_size",
                           "unet_n_first", "unet_residual") if k not in d]
    if missing:
        raise CareError(f"{where}: not a CSBDeep CARE config.json (missing {missing})")
    spatial = "".join(a for a in str(d["axes"]).upper() if a != "C")
    if spatial not in ("YX", "ZYX") or len(spatial) != d["n_dim"]:
        raise CareError(f"{where}: axes {d['axes']!r} (n_dim {d['n_dim']}); carecore imports CSBDeep models with "
                        "axes YXC (2D) or ZYXC (3D)")
    last = d.get("unet_last_activation", "linear")
    if last != "linear":
        raise CareError(f"{where}: unet_last_activation {last!r}; carecore's network ends linearly, so only "
                        "CSBDeep models with unet_last_activation='linear' (the default) can be imported")
    prob = bool(d.get("probabilistic", False))
    loss = "laplace" if prob else (d.get("train_loss") if d.get("train_loss") in ("mae", "mse") else "mae")
    depth = int(d["unet_n_depth"])
    div = 2**depth
    base = care_config(spatial, precision="float32").patch_size   # (no timing of the machine for a size)
    patch = tuple(max(div, -(-p // div) * div) for p in base)
    reduce = d.get("train_reduce_lr") or {}
    try:
        return care_config(
            spatial, n_channel_in=int(d["n_channel_in"]), n_channel_out=int(d["n_channel_out"]),
            unet_depth=depth, unet_filters=int(d["unet_n_first"]), unet_kernel=int(d["unet_kern_size"]),
            unet_n_conv=2, residual=bool(d["unet_residual"]), probabilistic=prob, loss=loss,
            precision="float32", patch_size=patch, optimizer="adam", lr_schedule="plateau",
            learning_rate=float(d.get("train_learning_rate", 4e-4)), batch_size=int(d.get("train_batch_size", 16)),
            lr_patience=int(reduce.get("patience", 10)), input_normalization="image",   # CSBDeep's way
            augment=False)   # CSBDeep's CARE.train does not flip or rotate: predict(tta=True) is refused
    except CareError as e:
        raise CareError(f"{where}: this CSBDeep configuration has no carecore equivalent ({e})") from None


def _read_h5(path, names_by_csbdeep):
    """``{carecore name: (kernel, bias)}`` from CSBDeep's legacy-layout HDF5 weights."""
    import h5py

    with h5py.File(path, "r") as f:
        if "layer_names" not in f.attrs:
            raise CareError(f"{path}: not a CSBDeep weights file (no layer_names; a Keras-3-native .weights.h5 has "
                            "no layer names to map: load the model in CSBDeep and save_weights('weights_best.h5'))")
        out, heads = {}, []
        for raw in f.attrs["layer_names"]:
            lname = raw.decode() if isinstance(raw, bytes) else str(raw)
            g = f[lname]
            wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in g.attrs.get("weight_names", [])]
            if not wnames:
                continue
            if len(wnames) != 2:
                raise CareError(f"{path}: layer {lname!r} has weights {wnames}; expected a kernel and a bias "
                                "(batch normalization is not supported)")
            values = {("kernel" if "kernel" in w.rsplit("/", 1)[-1] else "bias"): np.asarray(g[w], np.float32)
                      for w in wnames}
            if set(values) != {"kernel", "bias"}:
                raise CareError(f"{path}: layer {lname!r} has weights {wnames}; expected a kernel and a bias")
            pair = (values["kernel"], values["bias"])
            if lname in names_by_csbdeep:
                out[names_by_csbdeep[lname]] = pair
            else:
                heads.append((lname, pair))
    if len(heads) not in (1, 2):
        raise CareError(f"{path}: expected the 1x1 head convolution(s) besides the U-Net's layers, found "
                        f"{[h[0] for h in heads]}")
    out["head_mean"] = heads[0][1]
    if len(heads) == 2:
        out["head_scale"] = heads[1][1]
    return out


def _csbdeep_names(config):
    """CSBDeep layer name -> carecore convolution name."""
    n, depth = config.unet_n_conv, config.unet_depth
    last = lambda j: n if j == n - 1 else j  # noqa: E731  (CSBDeep numbers the last convolution n)
    names = {f"down_level_{lv}_no_{j}": f"down{lv}_conv{j}" for lv in range(depth) for j in range(n)}
    names.update({f"middle_{last(j)}": f"middle_conv{j}" for j in range(n)})
    names.update({f"up_level_{lv}_no_{last(j)}": f"up{lv}_conv{j}" for lv in range(depth) for j in range(n)})
    return names


def import_csbdeep(csbdeep_dir, model_dir, *, weights="best"):
    """Turn a CSBDeep CARE model folder into a carecore model folder with the same network and weights.

    Parameters
    ----------
    csbdeep_dir : str or Path
        CSBDeep's model folder (``config.json`` and ``weights_best.h5`` / ``weights_last.h5``).
    model_dir : str or Path
        The carecore model folder to write (float32, percentiles (2, 99.8) as CSBDeep's default
        ``PercentileNormalizer``); it must not exist yet.
    weights : {"best", "last"}

    Returns
    -------
    CARE
        The imported model (saved in ``model_dir``).

    Examples
    --------
    >>> model = import_csbdeep("models/my_csbdeep_model", "models/imported")   # doctest: +SKIP
    >>> restored = model.predict(image, axes="ZYX")                            # doctest: +SKIP
    """
    from ..models.kinds import create_model

    src, dst = Path(csbdeep_dir), Path(model_dir)
    cfg_path = src / "config.json"
    if not cfg_path.exists():
        raise CareError(f"{src}: no config.json; give the folder CSBDeep wrote for the model (basedir/name)")
    if weights not in _WEIGHT_FILES:
        raise CareError(f"weights must be 'best' or 'last', got {weights!r}")
    wpath = src / _WEIGHT_FILES[weights]
    if not wpath.exists():
        other = sorted(p.name for p in src.glob("*.h5"))
        raise CareError(f"{src}: no {wpath.name} (weight files there: {other or 'none'})")
    if dst.exists() and any(dst.iterdir()):
        raise CareError(f"{dst}: already exists; import into a new folder")
    try:
        d = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CareError(f"{cfg_path}: unreadable ({e})") from None
    config = _config_from_csbdeep(d, cfg_path)
    conv = _read_h5(wpath, _csbdeep_names(config))
    if config.probabilistic != ("head_scale" in conv):
        raise CareError(f"{wpath}: config.json says probabilistic={config.probabilistic} but the weights have "
                        f"{'two heads' if 'head_scale' in conv else 'one head'}")
    model = create_model(config, dst)
    from .plain import set_care_conv_weights

    set_care_conv_weights(model, conv)
    model._best_weights = [w.copy() for w in model.keras_model.get_weights()]
    model.run_card = {"imported_from": {"csbdeep_folder": str(src.resolve()), "weights": wpath.name,
                                        "config": d}, "status": "imported", "epochs_done": 0}
    model.save(dst)
    return model

"""A network's start from another's weights: a fine-tune (``init_weights`` in a configuration).

``init_weights`` names a model folder; before its first step, a fresh training copies every layer of
that folder's network whose name matches this one's (:func:`copy_matching_weights`): an earlier model
trained on similar data, or a network pretrained on simulations by ``scripts/pretrain.py``. No network
is shipped in the package yet: the one the script made did not help reliably
(benchmarks/quality-per-minute.md, "A pretrained start, tried").
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CareError


def resolve_init_weights(source):
    """The model folder ``init_weights`` names; raises :class:`CareError` when it is none."""
    path = Path(source).expanduser()
    if not (path / "config.json").exists():
        raise CareError(f"init_weights: {source} is not a model folder (no config.json in {path}); give the folder "
                        "of a trained model of the same network, or nothing to start from random weights")
    return path


#: the configuration's fields that size a network's layers (with its axes; the channels aside)
SIZE_FIELDS = ("unet_depth", "unet_filters", "unet_kernel", "unet_n_conv")


def source_config(source):
    """The configuration of the network in the model folder ``source`` (a :class:`CareConfig`); raises
    :class:`CareError` when it is no model folder or its ``config.json`` cannot be read."""
    import json

    from .config import CareConfig

    folder = resolve_init_weights(source)
    try:
        return CareConfig.from_dict(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError, TypeError, CareError) as e:
        raise CareError(f"init_weights: {folder / 'config.json'} is not a readable configuration ({e})") from None


def source_network_size(source):
    """The :data:`SIZE_FIELDS` of the network in the model folder ``source``, which a fine-tune from it
    takes unless given (:func:`~carecore.care_config`); ``{}`` when ``source`` is no readable model folder
    (:func:`check_init_weights` and the copy say so)."""
    try:
        theirs = source_config(source)
    except CareError:
        return {}
    return {k: getattr(theirs, k) for k in SIZE_FIELDS}


def with_source_size(overrides):
    """``overrides`` (a configuration's keyword arguments) with, for a fine-tune (``init_weights``), the
    source network's :data:`SIZE_FIELDS` that they do not give: what :func:`~carecore.care_config` and
    the kinds' ``default_config`` build on, before their recipes' sizes."""
    source = overrides.get("init_weights")
    if not source or not isinstance(source, (str, os.PathLike)):   # another type is refused by the config
        return overrides
    return {**source_network_size(source), **overrides}


def _size(config):
    return {"dimensions": config.ndim, "unet_depth": config.unet_depth, "unet_filters": config.unet_filters,
            "unet_kernel": config.kernel, "unet_n_conv": config.unet_n_conv}


def check_init_weights(config):
    """The model folder ``config.init_weights`` names, checked against ``config`` before a network is built:
    raises :class:`CareError` when it is none, or when its network is of another size (the spatial
    dimensions, ``unet_depth``, ``unet_filters``, the kernel, ``unet_n_conv``), naming both. The channels,
    which the patches decide, and the layers themselves are checked when the weights are copied
    (:func:`copy_matching_weights`). The CLI calls it before it makes the patches.
    """
    folder = resolve_init_weights(config.init_weights)
    theirs, ours = _size(source_config(folder)), _size(config)
    differ = [f"{name} {ours[name]} here, {theirs[name]} there" for name in ours if ours[name] != theirs[name]]
    if differ:
        raise CareError(f"init_weights: {folder} holds another size of network ({'; '.join(differ)}); start from a "
                        "network of the same kind and size")
    return folder


def copy_matching_weights(keras_model, source):
    """Copy into ``keras_model`` the weights of every layer of ``source``'s network (``init_weights``)
    with the same name; returns ``{"source", "copied", "layers", "new", "data_sources"}`` (the images the
    source learned from, :func:`learned_from`).

    Layers the source does not have keep their initial weights (``new``: a probabilistic network's
    scale head started from a plain network, say). Raises :class:`CareError` when a layer of both has
    other shapes (another size of network) or no layer matches (another kind), naming the sizes.
    """
    from .folder import load_model_folder

    folder = resolve_init_weights(source)
    source_model = load_model_folder(folder)
    src = source_model.keras_model
    have = {layer.name: layer for layer in src.layers if layer.weights}
    pairs, new, other = [], [], []
    for layer in keras_model.layers:
        if not layer.weights:
            continue
        if layer.name not in have:
            new.append(layer.name)
            continue
        theirs = [tuple(w.shape) for w in have[layer.name].weights]
        ours = [tuple(w.shape) for w in layer.weights]
        (pairs if theirs == ours else other).append((layer, have[layer.name], ours, theirs))
    what = (f"this network: {keras_model.count_params()} parameters; {folder}: {src.count_params()}; "
            "start from a network of the same kind and size (unet_filters, unet_depth, unet_kernel, channels)")
    if other:
        layer, _, ours, theirs = other[0]
        raise CareError(f"init_weights: {len(other)} layer(s) differ in shape, {layer.name} first "
                        f"({ours} here, {theirs} there); {what}")
    if not pairs:
        raise CareError(f"init_weights: no layer of {folder} is in this network; {what}")
    for layer, theirs, _, _ in pairs:
        layer.set_weights([np.asarray(w) for w in theirs.get_weights()])
    # the images the source network learned from (and its own source's): a fine-tune's scores on them flatter it
    return {"source": str(source), "copied": len(pairs), "layers": len(pairs) + len(new), "new": new,
            "data_sources": learned_from(source_model.run_card)}


def learned_from(run_card):
    """The training images a model's network learned from, as its run card records them (``data_sources``),
    with those of the network it was fine-tuned from (``init_weights.data_sources``, recorded since
    2026-12-07), and so on back."""
    run_card = run_card or {}
    return list(run_card.get("data_sources") or []) + list((run_card.get("init_weights") or {}).get("data_sources") or [])

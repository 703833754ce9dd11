"""A carecore model as a bioimage.io model package (a zip that bioimageio.core, deepImageJ, KNIME
and napari open) — model description format 0.5.

What carecore does around its network is written as the package's processing steps:

- **preprocessing** ``scale_range`` per channel with the model's percentiles: exactly carecore's
  percentile normalization (``eps`` 1e-6 is added to ``hi - lo``); for a model that scales its
  inputs by its training inputs' percentiles (``input_normalization="training"``, the default), a
  fixed ``scale_linear`` with those values;
- **postprocessing**: carecore maps a restoration back with the *input's* per-image percentiles
  ``lo, hi`` (``y * (hi - lo) + lo``). The format has no step that reads statistics of the input and
  applies their inverse, so the package does one of (``postprocessing=``):

  ``"scale_linear"`` (default when channels in == out, except probabilistic models scaled per image)
      ``y * gain + offset`` with fixed ``gain = hi - lo`` and ``offset = lo`` of the test input (the
      whole image given, not its crop, the test tensor): exactly carecore's output for the test
      input and for images whose percentiles equal it (same microscope settings and sample); for
      other images the output is in the test image's units rather than the image's own. With
      ``input_normalization="training"`` these are the training inputs' values, and the package
      equals carecore on every image; a probabilistic model's Laplace scale channels get the gain
      alone (one gain and offset per channel: ``[hi - lo, hi - lo]``, ``[lo, 0]``).
  ``"scale_mean_variance"``
      the output's mean and standard deviation set to the input's: follows each image, but the
      contrast of a denoised output is stretched by ``std(noisy input) / std(restoration)``.
  ``"none"``
      the network's output in normalized units (0 ≈ the input's low, 1 ≈ its high percentile);
      carecore's output is ``output * (hi - lo) + lo``. Probabilistic models (mean and Laplace scale
      as channels ``mean``/``scale``) that scale each image by its own percentiles, and models whose
      channel count changes, use this.

The network is exported as standard Keras layers (:mod:`carecore.export.plain`) in the formats of
:mod:`carecore.export.weights`; the export checks every written format against carecore's own
prediction (float32) on the test input before the package is written.
"""
from __future__ import annotations

import json
import shutil
import string
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import CareError

FORMAT_VERSION = "0.5.4"
CARE_CITATION = {"text": "Weigert et al., Content-aware image restoration: pushing the limits of fluorescence "
                         "microscopy, Nature Methods 15, 1090-1097 (2018)", "doi": "10.1038/s41592-018-0216-7"}
POSTPROCESSING = ("scale_linear", "scale_mean_variance", "none")
#: The largest test input kept (centre crop), per spatial axis: (Z, Y, X) or (Y, X).
TEST_INPUT_MAX = {3: (64, 128, 128), 2: (256, 256)}
#: Largest accepted difference between a written weight format and carecore (relative to the output's range).
FORMAT_TOLERANCE = 1e-4
SPACE_IDS = {"Z": "z", "Y": "y", "X": "x"}
KIND_TAGS = {"care": ["denoising"], "subdiffraction": ["deconvolution", "super-resolution"]}

#: The characters bioimage.io takes in a model's name (format 0.5), and how many of them
NAME_CHARACTERS = string.ascii_letters + string.digits + "_+- ()"
NAME_LENGTH = (5, 128)


def _fit_name(text):
    """``text`` made a valid package name: other characters as spaces, at most 64 characters (the format's
    advice), " (CARE)" added where shorter than 5 ("mito" -> "mito (CARE)")."""
    fitted = " ".join("".join(ch if ch in NAME_CHARACTERS else " " for ch in str(text)).split())[:64].strip()
    if len(fitted) < NAME_LENGTH[0]:
        fitted = f"{fitted} (CARE)" if fitted else "CARE model"
    return fitted


def package_name(name, folder):
    """The package's name: ``name`` as given, refused (with a valid one to use) where bioimage.io would
    refuse it (:data:`NAME_CHARACTERS`, :data:`NAME_LENGTH`: the package would fail validation in
    bioimageio.core, deepImageJ and the model zoo), or, when None, the model folder's name made valid
    (``models/care`` -> "care (CARE)"); a folder named ``model`` or ``ensemble`` (the app's trainings,
    ``models/<task>_<time>/model``) is named by the folder above it (a user trial's package was called "model")."""
    if name is None:
        folder = Path(folder).resolve()
        named = folder.parent if folder.name in ("model", "ensemble") and folder.parent.name else folder
        return _fit_name(named.name)
    bad = sorted({ch for ch in str(name) if ch not in NAME_CHARACTERS})
    lo, hi = NAME_LENGTH
    if bad or not lo <= len(str(name)) <= hi:
        what = [f"{len(str(name))} characters"] + ([f"the characters {' '.join(repr(b) for b in bad)}"] if bad else [])
        raise CareError(f"name {name!r}: a bioimage.io package name takes {lo} to {hi} letters, digits, spaces or "
                        f"_+-() (it has {' and '.join(what)}), else the package fails validation in bioimageio.core, "
                        f"deepImageJ and the model zoo; for example {_fit_name(name)!r}")
    return str(name)


def _check_license_and_description(license, description):
    """bioimage.io takes an SPDX license identifier ("CC-BY-4.0", "MIT": no spaces) and a description of at
    most 1024 characters; others fail its validation."""
    import re

    if not isinstance(license, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]*", license):
        raise CareError(f"license {license!r}: give an SPDX identifier, e.g. 'CC-BY-4.0', 'CC0-1.0', 'MIT' or "
                        "'BSD-3-Clause' (https://spdx.org/licenses/); bioimage.io refuses other names")
    if description is not None and len(str(description)) > 1024:
        raise CareError(f"description: {len(str(description))} characters, but bioimage.io takes at most 1024; "
                        "shorten it (the package's README.md holds the details)")


def _check_authors(authors):
    """bioimage.io refuses an author's name with a slash (a list of names in one, say)."""
    for a in authors or []:
        who = a.get("name", "") if isinstance(a, dict) else str(a)
        if "/" in who or "\\" in who:
            raise CareError(f"authors: {who!r} has a slash, which bioimage.io refuses in an author's name; give each "
                            "author on their own (on the command line --author \"A. Name\" --author \"B. Name\")")


#: Model kinds whose prediction is the network alone on the input's grid: what the format expresses.
EXPORTABLE_KINDS = ("care", "subdiffraction")
#: Why the other kinds are refused, and what to do instead.
REFUSED_KINDS = {
    "upsampling": "it interpolates every stack along Z by its axial factor before the network runs, and the "
                  "bioimage.io format has no resampling step (a consumer would feed the coarse stack to the network "
                  "as it is)",
    "isotropic": "it interpolates the stack along Z by its axial factor, runs its 2D network on every XZ and every "
                 "YZ slice and averages the two results; the bioimage.io format can express neither the resampling "
                 "nor the slicing and averaging",
    "projection": "its network projects the stack along Z with carecore's own softmax-weighted sum over slices, which "
                  "the package's standard-layer network does not have yet",
}


def _load_exportable(model_dir, weights):
    from ..models.folder import load_model

    from ..uncertainty.ensemble import Ensemble

    model = load_model(model_dir, weights=weights)
    if isinstance(model, Ensemble) or not hasattr(model, "config"):
        members = [str(m.path) for m in getattr(model, "members", []) if getattr(m, "path", None) is not None]
        example = members[0] if members else "MEMBER_FOLDER"
        raise CareError(f"{model_dir}: an ensemble folder ({len(members) or 'several'} members); a bioimage.io package "
                        "holds one network, and the format cannot express the ensemble's mixture of its members' "
                        "predictions (nor its disagreement). Export one member's model folder instead (`carecore "
                        f"export --model {example} --out member.zip`), or restore with the ensemble in carecore "
                        f"(`carecore predict --model {model_dir} ...`); the members' folders: "
                        + (", ".join(members) if members else "listed in its ensemble.json"))
    kind = model.config.kind
    if kind not in EXPORTABLE_KINDS:
        why = REFUSED_KINDS.get(kind, "it needs processing around its network that the package format cannot express")
        raise CareError(f"{model_dir}: a model of kind {kind!r} cannot be exported as a bioimage.io package: {why}. "
                        f"Restore with carecore instead (`carecore predict --model {model_dir} --in stack.tif --out "
                        "restored.tif`) and open the result, an OME-TIFF, in Fiji, KNIME or napari; exportable "
                        f"kinds: {', '.join(EXPORTABLE_KINDS)}")
    return model


def _float32_twin(model):
    """The same network computing in float32 (the exported network's arithmetic)."""
    from ..models.kinds import create_model
    from .plain import care_conv_weights, set_care_conv_weights

    if model.config.precision == "float32":
        return model
    twin = create_model(model.config.replace(precision="float32"))
    set_care_conv_weights(twin, care_conv_weights(model))
    return twin


def _min_size(divisor, halo):
    """Smallest valid side: a multiple of the divisor larger than twice the halo."""
    return divisor * (2 * halo // divisor + 1)


def _test_image(model, test_input, test_axes, min_size):
    """``(x, whole)``: the test input as (spatial..., C) float32, centre-cropped to a valid size (axes
    shorter than the package's minimum mirrored at both ends up to it, as often as needed), and
    the whole image as given, (spatial..., C) float32 (a view where possible)."""
    from ..axes import spatial_axes

    c = model.config
    if test_input is None and hasattr(type(model), "simulate_pairs"):
        # a model trained on simulations (sub-diffraction): an image simulated as its training inputs were (a user
        # trial's export failed on "the model's training data (simulated tubules 0 ...) cannot be read")
        rec = (model.run_card or {}).get("subdiffraction") or {}   # (the training's simulation settings)
        kw = {k: rec[k] for k in ("background_level", "read_noise", "target_sigma", "density") if rec.get(k) is not None}
        if rec.get("structures"):
            kw["structures"] = ",".join(rec["structures"]) if isinstance(rec["structures"], list) else rec["structures"]
        if rec.get("peak_photons") is not None:
            kw["peak_photons"] = tuple(rec["peak_photons"]) if isinstance(rec["peak_photons"], list) else rec["peak_photons"]
        pairs, _ = type(model).simulate_pairs(c, n_images=1, seed=(c.seed or 0) + 7919, **kw)
        test_input, test_axes = pairs[0][0], c.axes
    if test_input is None:
        sources = model.run_card.get("data_sources") or []
        low = Path(sources[0]["low"]) if sources else None
        if low is None or not low.exists():
            imported = " (an imported model: its training data is not known)" \
                if (model.run_card or {}).get("imported_from") else ""
            raise CareError("test input: none given and the model's training data "
                            f"({low or 'not recorded in its run card'}) cannot be read{imported}; pass an image "
                            f"acquired like the ones the model restores: on the command line `--test-input low.tif` "
                            f"(with `--axes {c.axes}` if the file does not record its axes), in Python "
                            f"`export_bioimageio(..., test_input=read_image('low.tif').data, test_axes='{c.axes}')`")
        from ..io import read_image

        img = read_image(low)
        test_input, test_axes = img.data, img.axes
    test_axes = model._check_input(np.asarray(test_input), test_axes or c.axes, "test_input")
    sp = spatial_axes(test_axes)
    order = [test_axes.index(a) for a in sp] + ([test_axes.index("C")] if "C" in test_axes else [])
    x = np.transpose(np.asarray(test_input, np.float32), order)
    if "C" not in test_axes:
        x = x[..., None]
    whole = x
    crop, pad = [], []
    for a, s, cap in zip(c.axes, x.shape[:-1], TEST_INPUT_MAX[c.ndim]):
        if s < min_size:   # a shallow stack (the demo's 32 slices under a minimum of 52): mirrored up to it, as often
            crop.append(slice(0, s))
            pad.append(((min_size - s) // 2, min_size - s - (min_size - s) // 2))
            continue
        n = min_size + (min(s, max(cap, min_size)) - min_size) // c.divisor * c.divisor
        start = (s - n) // 2
        crop.append(slice(start, start + n))
        pad.append((0, 0))
    x = x[tuple(crop)]
    if any(p != (0, 0) for p in pad):
        x = np.pad(x, pad + [(0, 0)], mode="symmetric")
    return np.ascontiguousarray(x), whole


def shareable_card(card):
    """A run card with no path of the user's disk in it (a package is published; a user trial found the training
    images' folders in it): the paths of the training images relative to the folder they share
    (``low/a.tif``, ``high/a.tif``), any other absolute path by its name only."""
    import os

    def paths(o):
        if isinstance(o, dict):
            for v in o.values():
                yield from paths(v)
        elif isinstance(o, list):
            for v in o:
                yield from paths(v)
        elif isinstance(o, str) and os.path.isabs(o):
            yield o

    sources = [p for p in paths([card.get("data_sources"), (card.get("normalization_seen") or {}).get("sources")])]
    try:
        common = os.path.commonpath([os.path.dirname(p) for p in sources]) if sources else None
    except ValueError:
        common = None

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items()}
        if isinstance(o, list):
            return [strip(v) for v in o]
        if isinstance(o, str) and os.path.isabs(o):
            if common and common != os.sep and o.startswith(common + os.sep):
                return os.path.relpath(o, common)
            return os.path.basename(o.rstrip(os.sep)) or o
        return o

    return strip(card or {})


def _scale_linear(gain, offset):
    """A ``scale_linear`` step, ``x * gain + offset`` per channel (scalars for one channel)."""
    gain, offset = [float(v) for v in gain], [float(v) for v in offset]
    kw = {"gain": gain[0], "offset": offset[0]} if len(gain) == 1 else {"axis": "channel", "gain": gain, "offset": offset}
    return {"id": "scale_linear", "kwargs": kw}


def _training_scaling(norm):
    """The preprocessing of a model that scales every input by its training inputs' percentiles
    (``input_normalization="training"``): a fixed ``scale_linear``, ``(x - lo) / (hi - lo)``."""
    lo, hi = np.asarray(norm.lo, np.float64), np.asarray(norm.hi, np.float64)
    return _scale_linear(1 / (hi - lo), -lo / (hi - lo))


def _postprocessing(kind, config, norm, out_norm, x):
    """(description entries, test output) for postprocessing ``kind``; ``norm`` is the mapping back's
    percentiles, ``out_norm`` the network's output (spatial..., C_out; probabilistic: the means, then
    the scales), ``x`` the test input (spatial..., C_in).

    ``scale_linear`` maps a probabilistic model's means back as carecore does (``y * (hi - lo) + lo``)
    and its Laplace scales, widths, by the gain alone: one gain and offset per output channel."""
    spatial = tuple(range(config.ndim))
    if kind == "none":
        return [], out_norm
    lo, hi = np.asarray(norm.lo, np.float32), np.asarray(norm.hi, np.float32)
    if kind == "scale_linear":
        gain, offset = hi - lo, lo
        if config.probabilistic:
            gain, offset = np.concatenate([gain, gain]), np.concatenate([offset, np.zeros_like(offset)])
        return [_scale_linear(gain, offset)], (out_norm * gain + offset).astype(np.float32)
    eps = 1e-6
    mean, std = out_norm.mean(spatial), out_norm.std(spatial)
    ref_mean, ref_std = x.mean(spatial), x.std(spatial)
    axes = [SPACE_IDS[a] for a in config.axes]
    step = {"id": "scale_mean_variance", "kwargs": {"reference_tensor": "input", "axes": axes, "eps": eps}}
    return [step], ((out_norm - mean) / (std + eps) * (ref_std + eps) + ref_mean).astype(np.float32)


def _axes(config, halo, min_size, channel_names, *, output):
    axes = [{"type": "batch"}]
    for a in config.axes:
        aid = SPACE_IDS[a]
        if output:
            ax = {"type": "space", "id": aid, "size": {"tensor_id": "input", "axis_id": aid}}
            if halo:
                ax["halo"] = int(halo)
        else:
            ax = {"type": "space", "id": aid, "size": {"min": int(min_size), "step": int(config.divisor)}}
        axes.append(ax)
    axes.append({"type": "channel", "channel_names": list(channel_names)})
    return axes


def _check_format(fmt, path, x_norm, expected):
    """Run the written weights on the normalized test input; refuse a format that disagrees."""
    batch = x_norm[None]
    if fmt == "keras_v3":
        import keras

        got = keras.models.load_model(path).predict_on_batch(batch)
    elif fmt == "tensorflow_saved_model_bundle":
        import keras

        with tempfile.TemporaryDirectory() as d:
            with zipfile.ZipFile(path) as z:
                z.extractall(d)
            got = keras.layers.TFSMLayer(d, call_endpoint="serve")(batch)["output"]
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: batch})[0]
    got = np.asarray(got, np.float32)
    if got.shape != (1,) + tuple(np.shape(expected)):   # a difference would broadcast below
        raise CareError(f"weight format {fmt}: its output has shape {got.shape} for an input of shape {batch.shape}, "
                        f"carecore's {(1,) + tuple(np.shape(expected))}; leave it out with weight_formats=")
    got = got[0]
    scale = max(float(np.ptp(expected)), 1e-6)
    err = float(np.abs(got - expected).max()) / scale
    if not np.isfinite(err) or err > FORMAT_TOLERANCE:
        raise CareError(f"weight format {fmt}: its output differs from carecore's by {err:.2g} of the output range "
                        f"(tolerance {FORMAT_TOLERANCE}); leave it out with weight_formats=")
    return err


def export_bioimageio(model_dir, out_zip, *, name=None, description=None, authors=None, license="CC-BY-4.0",
                      test_input=None, test_axes=None, postprocessing=None, weight_formats="auto", halo=None,
                      tags=None, cite=None, weights="best"):
    """Write a carecore model folder as a bioimage.io model package (zip, format 0.5).

    Parameters
    ----------
    model_dir : str or Path
        A carecore model folder of kind ``care`` or ``subdiffraction`` (2D or 3D; probabilistic models
        export mean and scale as the output channels ``mean*`` and ``scale*``). The other kinds are
        refused (:data:`REFUSED_KINDS` says why), and so are ensemble folders (export one member's folder).
    out_zip : str or Path
        The package to write.
    name, description : str, optional
        Default: from the folder's name (made a name bioimage.io takes: :func:`package_name`) and the
        configuration. A ``name`` bioimage.io refuses (5 to 128 letters, digits, spaces or ``_+-()``) is
        refused here, with a valid one to use.
    authors : list of str or dict, optional
        Names, or dicts with ``name``, ``affiliation``, ``orcid``... (default: "CARE Lab user").
    license : str
        An SPDX identifier.
    test_input : array_like, optional
        An image to test the package with (default: the first training input of the run card),
        centre-cropped to at most :data:`TEST_INPUT_MAX`, and mirrored up to the package's minimum
        size along axes shorter than it; ``test_axes`` are its axes (default
        the model's, optionally with ``C``). Its percentiles (of the whole image) are those of a
        ``scale_linear`` postprocessing of a model that scales each image by its own percentiles.
        Required (on the command line ``--test-input FILE``) when the training data cannot be read.
    postprocessing : {"scale_linear", "scale_mean_variance", "none"}, optional
        How the output is brought back to intensities (see the module's description); default
        ``scale_linear`` when channels in == out and the model is not probabilistic or scales its inputs
        by its training inputs' percentiles (then exact on every image, mean and scale), else ``none``.
    weight_formats : "auto" or sequence of str
        Among ``keras_v3``, ``tensorflow_saved_model_bundle``, ``onnx`` ("auto": all whose converter
        is installed).
    halo : int, optional
        Output halo per side for tiled prediction (default: the network's receptive-field radius),
        rounded up to a multiple of the divisor (consumers pad the input by it: another padding would
        move the U-Net's pooling grid, and change the restoration everywhere); the smallest
        input side is a multiple of the divisor above twice the halo.
    tags, cite : list, optional
        Extra tags; extra citations (``{"text": ..., "doi": ...}``) after the CARE paper.
    weights : {"best", "last"}

    Returns
    -------
    Path
        ``out_zip``.

    Examples
    --------
    >>> export_bioimageio("models/denoise3d", "denoise3d.zip", authors=["Ada Lovelace"],  # doctest: +SKIP
    ...                   test_input=read_image("low/a.tif").data, test_axes="ZYX")
    """
    from . import docs
    from .plain import build_plain_unet, care_conv_weights
    from .weights import resolve_formats, write_weights

    model_dir, out_zip = Path(model_dir), Path(out_zip)
    if out_zip.suffix != ".zip":
        raise CareError(f"{out_zip}: a bioimage.io package is a .zip file; give an output name ending in .zip "
                        "(`carecore export --out NAME.zip`)")
    name = package_name(name, model_dir)   # (before the work: a name bioimage.io refuses fails fast)
    _check_authors(authors)
    _check_license_and_description(license, description)
    model = _load_exportable(model_dir, weights)
    c = model.config
    if not 1 < c.percentiles[1] <= 100:
        raise CareError(f"percentiles {c.percentiles}: the package format needs a high percentile above 1")
    by_training = model.scales_by_training
    # a probabilistic model's mean and scale map back by a fixed scale_linear (one gain and offset per channel);
    # exact for every image when the inputs are scaled by the training inputs' percentiles
    mapped = c.n_channel_in == c.n_channel_out and (not c.probabilistic or by_training)
    if postprocessing is None:
        postprocessing = "scale_linear" if mapped else "none"
    if postprocessing not in POSTPROCESSING:
        raise CareError(f"postprocessing: choose from {POSTPROCESSING}, got {postprocessing!r}")
    if c.n_channel_in != c.n_channel_out and postprocessing != "none":
        raise CareError(f"postprocessing={postprocessing!r}: the model changes the channel count ({c.n_channel_in} "
                        f"-> {c.n_channel_out}); carecore does not map its output back either: use "
                        "postprocessing='none'")
    if c.probabilistic and postprocessing == "scale_mean_variance":
        raise CareError("postprocessing='scale_mean_variance': the model is probabilistic, and that step would shift "
                        "and stretch its Laplace scale channels like intensities; use postprocessing="
                        + ("'scale_linear' (the default: exact) or 'none'" if by_training else "'none'"))
    if c.probabilistic and postprocessing == "scale_linear" and not by_training:
        raise CareError("postprocessing='scale_linear': the model is probabilistic and scales each image by its own "
                        "percentiles (input_normalization='image'), so a fixed mapping back would be right for the "
                        "test image only; use postprocessing='none' (normalized units: carecore maps them back with "
                        "each image's percentiles when it runs the package)")
    formats = resolve_formats(weight_formats)
    halo = model._halo() if halo is None else int(halo)
    if halo < 0:
        raise CareError(f"halo: must be >= 0, got {halo}")
    # consumers pad the input by the halo: a multiple of the divisor keeps the U-Net's pooling grid where carecore
    # has it (half of it kept sizes divisible, but a padding of 46 px on a divisor of 4 shifted the grid by 2 px and
    # the whole restoration by up to 3 % of its range in bioimageio.core: a user trial)
    halo = -(-halo // c.divisor) * c.divisor
    min_size = _min_size(c.divisor, halo)

    x, whole = _test_image(model, test_input, test_axes, min_size)
    axes_c = c.axes + "C"
    norm = model.input_normalization(x, axes=axes_c, name="test_input")
    # the mapping back: the training inputs' percentiles, or those of the whole test image as given (not of its
    # crop, the test tensor), so that the package restores the image it was given exactly as carecore does
    post_norm = norm if by_training else model.input_normalization(whole, axes=axes_c, name="test_input")
    del whole
    twin = _float32_twin(model)
    pred = twin.predict(x, axes=axes_c, normalization=norm, n_tiles=(1,) * c.ndim)
    pred = np.concatenate(pred, axis=-1) if c.probabilistic else pred
    lo, hi = np.asarray(norm.lo, np.float32), np.asarray(norm.hi, np.float32)
    x_norm = ((x - lo) / (hi - lo)).astype(np.float32)
    if c.n_channel_in == c.n_channel_out:  # carecore mapped it back: the network's own output
        k = c.n_channel_out
        out_norm = pred.copy()
        out_norm[..., :k] = (pred[..., :k] - lo) / (hi - lo)
        if c.probabilistic:
            out_norm[..., k:] = pred[..., k:] / (hi - lo)
    else:
        out_norm = pred
    post, test_output = _postprocessing(postprocessing, c, post_norm, out_norm.astype(np.float32), x)
    bf16 = None
    if twin is not model:  # what carecore's default (bfloat16) arithmetic changes, for the documentation
        p16 = model.predict(x, axes=axes_c, normalization=norm, n_tiles=(1,) * c.ndim)
        p16 = np.concatenate(p16, axis=-1) if c.probabilistic else p16
        bf16 = float(np.abs(p16 - pred).max() / max(float(np.ptp(pred)), 1e-6))

    plain = build_plain_unet(c, care_conv_weights(model))
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="carecore-export-") as tmp:
        tmp = Path(tmp)
        files = tmp / "package"
        files.mkdir()
        weights_entries, errors = {}, {}
        for fmt in formats:
            fname, extra = write_weights(plain, fmt, tmp, n_spatial=c.ndim, n_channel_in=c.n_channel_in)
            shutil.move(str(tmp / fname), files / fname)
            errors[fmt] = _check_format(fmt, files / fname, x_norm, out_norm)
            entry = {"source": fname, **extra, "comment": f"carecore {__version__}: the network as standard "
                     f"Keras layers; max difference to carecore's float32 prediction on the test input: "
                     f"{errors[fmt]:.1e} of the output range"}
            if fmt != formats[0]:
                entry["parent"] = formats[0]
            weights_entries[fmt] = entry
        np.save(files / "test_input.npy", x[None])   # raw intensities, a batch of 1
        np.save(files / "test_output.npy", test_output[None].astype(np.float32))
        (files / "cover.png").write_bytes(docs.cover_png(x, pred, c))
        (files / "carecore_config.json").write_text(json.dumps(c.to_dict(), indent=1))
        model.run_card = shareable_card(model.run_card)   # (this loaded copy only: the folder keeps its own)
        (files / "run_card.json").write_text(json.dumps(model.run_card, indent=1, default=str))
        facts = {"halo": halo, "min_size": min_size, "postprocessing": postprocessing, "formats": errors,
                 "bfloat16_difference": bf16, "test_shape": x.shape, "norm": post_norm,
                 "by_training": by_training}
        (files / "README.md").write_text(docs.readme(name, model, facts))

        out_channels = [f"channel{i}" for i in range(c.n_channel_out)]
        if c.probabilistic:
            out_channels = [f"mean{i}" for i in range(c.n_channel_out)] + \
                [f"scale{i}" for i in range(c.n_channel_out)]
            if c.n_channel_out == 1:
                out_channels = ["mean", "scale"]
        space = [SPACE_IDS[a] for a in c.axes]
        rdf = {
            "type": "model", "format_version": FORMAT_VERSION, "name": name,
            "description": description or docs.summary(c),
            "authors": [a if isinstance(a, dict) else {"name": str(a)} for a in (authors or ["CARE Lab user"])],
            "cite": [CARE_CITATION] + list(cite or []),
            "license": license,
            "tags": ["care", "carecore", *KIND_TAGS[c.kind], "restoration", "fluorescence-light-microscopy",
                     f"{c.ndim}d", "unet"] + (["probabilistic"] if c.probabilistic else []) + list(tags or []),
            "documentation": "README.md",
            "covers": ["cover.png"],
            "attachments": [{"source": "carecore_config.json"}, {"source": "run_card.json"}],
            "version": "0.1.0",
            "inputs": [{
                "id": "input", "description": ("raw image; scaled per channel by the training inputs' percentiles "
                                               "(a fixed scale_linear)" if by_training else "raw image; "
                                               "percentile-normalized per channel by the preprocessing"),
                "axes": _axes(c, halo, min_size, [f"channel{i}" for i in range(c.n_channel_in)], output=False),
                "test_tensor": {"source": "test_input.npy"}, "data": {"type": "float32"},
                "preprocessing": [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                                  _training_scaling(norm) if by_training else {"id": "scale_range", "kwargs": {
                                      "axes": space, "min_percentile": float(c.percentiles[0]),
                                      "max_percentile": float(c.percentiles[1]), "eps": 1e-6}}],
            }],
            "outputs": [{
                "id": "output", "description": docs.output_description(c, postprocessing, by_training=by_training),
                "axes": _axes(c, halo, min_size, out_channels, output=True),
                "test_tensor": {"source": "test_output.npy"}, "data": {"type": "float32"},
                "postprocessing": post,
            }],
            "weights": weights_entries,
            "config": {"carecore": {"version": __version__, "kind": c.kind, "postprocessing": postprocessing,
                                    "percentiles": list(c.percentiles), "probabilistic": bool(c.probabilistic),
                                    "input_normalization": "training" if by_training else "image"}},
        }
        # JSON is YAML: the description is written as plain JSON into rdf.yaml
        (files / "rdf.yaml").write_text(json.dumps(rdf, indent=1))
        part = out_zip.with_name(out_zip.name + ".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(files.iterdir()):
                z.write(p, p.name)
        part.replace(out_zip)
    return out_zip

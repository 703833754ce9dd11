"""Run a bioimage.io model package (a zip, or its unpacked folder) without bioimageio.core.

:func:`load_bioimageio` reads the package's description (``rdf.yaml``, format 0.5), checks every field
it relies on (a :class:`~carecore.CareError` names the file and the field otherwise) and loads the
package's own weights; :meth:`BioimageioModel.predict` restores an image the way carecore's models do:

- **weights**: ``onnx`` through onnxruntime when it is installed, else ``keras_v3`` (or
  ``keras_hdf5``) through Keras (safe mode: nothing deserialized as code), else
  ``tensorflow_saved_model_bundle`` through ``keras.layers.TFSMLayer``; ``weight_format=`` picks one.
  A file whose SHA-256 is given in the description is checked against it.
- **tiling**: :mod:`carecore.prediction.tiling`, as :meth:`carecore.CARE.predict` tiles: tiles on
  the grid of the input's size ``step``, overlapping by the output's ``halo``, each output pixel taken
  from one tile, so tiled equals untiled when the halo covers the network's receptive field. Images
  smaller than the input's ``min`` size are padded (reflected) to it and cropped back, except in
  carecore's own packages, whose ``min`` only keeps tiles larger than twice the halo (the network takes
  any multiple of the step: such images run whole, as carecore runs them). Input axes that the output
  does not have (a projection) are taken whole.
- **preprocessing** and **postprocessing** as the description writes them: ``ensure_dtype``,
  ``scale_linear``, ``scale_range``, ``zero_mean_unit_variance``, ``fixed_zero_mean_unit_variance``,
  ``clip``, ``sigmoid``, ``binarize`` and (postprocessing) ``scale_mean_variance``. Statistics
  (percentiles, mean, standard deviation) are those of the whole unprocessed tensor, as bioimageio.core
  computes them, over all spatial axes, per channel unless ``channel`` is among the step's ``axes``.
- **carecore's packages** (``config.carecore`` in the description) that leave the network's output in
  normalized units (``postprocessing: none``, e.g. probabilistic ones) are mapped back by the inverse of
  their input's normalization: the input's own percentiles (``scale_range``), or the fixed training
  inputs' percentiles (``scale_linear``), as carecore maps its own predictions back; a probabilistic
  package's scale channels by the range alone (``map_back=False``: as written).

The description is parsed as JSON (carecore writes it so) or, when PyYAML is installed, as YAML.

Examples
--------
>>> model = load_bioimageio("denoise3d.zip")                          # doctest: +SKIP
>>> restored = model.predict(read_image("low.tif").data, axes="ZYX")   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import posixpath
import re
import shutil
import tempfile
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CareError
from ..prediction.frames import frame_by_frame

#: The description format carecore reads (its 0.5.x versions).
FORMAT = "0.5"
#: Weight formats carecore runs, in the order ``weight_format="auto"`` tries them.
WEIGHT_FORMATS = ("onnx", "keras_v3", "keras_hdf5", "tensorflow_saved_model_bundle")
PREPROCESSING = ("ensure_dtype", "scale_linear", "scale_range", "zero_mean_unit_variance",
                 "fixed_zero_mean_unit_variance", "clip", "sigmoid", "binarize")
POSTPROCESSING = PREPROCESSING + ("scale_mean_variance",)
#: Keyword arguments each step accepts (anything else is refused rather than ignored).
STEP_KWARGS = {
    "ensure_dtype": {"dtype"},
    "scale_linear": {"gain", "offset", "axis"},
    "scale_range": {"axes", "min_percentile", "max_percentile", "eps", "reference_tensor"},
    "zero_mean_unit_variance": {"axes", "eps"},
    "fixed_zero_mean_unit_variance": {"mean", "std", "axis", "eps"},
    "clip": {"min", "max"},
    "sigmoid": set(),
    "binarize": {"threshold", "axis"},
    "scale_mean_variance": {"reference_tensor", "axes", "eps"},
}
DTYPES = ("float32", "float64", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "bool")
SPACE = {"z": "Z", "y": "Y", "x": "X"}
#: Working memory per tile voxel assumed for a network carecore did not write (a float32 U-Net with 64
#: first-level filters, by carecore's own estimate of 7 feature maps per voxel).
DEFAULT_BYTES_PER_VOXEL = 7 * 64 * 4 + 32


def is_bioimageio_package(path):
    """Whether ``path`` names a bioimage.io package: a ``.zip`` file, or a folder with ``rdf.yaml``
    (or ``*.bioimageio.yaml``). A carecore model folder is not one."""
    p = Path(path)
    if p.suffix.lower() == ".zip":
        return True
    return p.is_dir() and any(q.is_file() and _is_rdf_name(q.name) for q in p.iterdir())


def _is_rdf_name(name):
    return name == "rdf.yaml" or name == "bioimageio.yaml" or name.endswith(".bioimageio.yaml")


class _Files:
    """Read access to the files of a package, zipped or unpacked; names are relative POSIX paths."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise CareError(f"{path}: not found; give a bioimage.io package (.zip) or its unpacked folder")
        if self.path.is_dir():
            self.zipped = False
            self.names = {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}
        else:
            self.zipped = True
            if not zipfile.is_zipfile(self.path):
                raise CareError(f"{path}: not a zip file; a bioimage.io package is a .zip (or the folder it unpacks "
                                "to, with rdf.yaml)")
            try:
                with zipfile.ZipFile(self.path) as z:
                    self.names = set(z.namelist())
            except (zipfile.BadZipFile, OSError) as e:
                raise CareError(f"{path}: a damaged zip file ({e})") from None
        rdfs = sorted(n for n in self.names if "/" not in n and _is_rdf_name(n))
        if not rdfs:
            nested = sorted(n for n in self.names if _is_rdf_name(posixpath.basename(n)))
            hint = f" (found {nested[0]}: zip the package's files themselves, not their folder)" if nested else ""
            raise CareError(f"{path}: no rdf.yaml at the top of the package{hint}; is this a bioimage.io model "
                            "package?")
        if len(rdfs) > 1 and "rdf.yaml" not in rdfs:
            raise CareError(f"{path}: several descriptions {rdfs}; a package has one rdf.yaml")
        self.rdf_name = "rdf.yaml" if "rdf.yaml" in rdfs else rdfs[0]

    def read(self, source, field):
        """The bytes of file ``source`` (a relative path in the package; ``field`` names where it was given)."""
        if not isinstance(source, str) or not source:
            raise CareError(f"{self.path}: {self.rdf_name} field {field}: expected a file name, got {source!r}")
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source):
            raise CareError(f"{self.path}: {self.rdf_name} field {field}: {source} is a URL; carecore reads packages "
                            "offline: download the package with its files (a zip holding them) and open that")
        name = posixpath.normpath(source.replace("\\", "/"))
        if name.startswith("/") or name == ".." or name.startswith("../"):
            raise CareError(f"{self.path}: {self.rdf_name} field {field}: {source!r} points outside the package")
        if name not in self.names:
            raise CareError(f"{self.path}: {self.rdf_name} field {field}: the package has no file {source!r}")
        try:
            if self.zipped:
                with zipfile.ZipFile(self.path) as z:
                    return z.read(name)
            return (self.path / name).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CareError(f"{self.path}: cannot read {name} ({e}); the package is damaged") from None


@dataclass(frozen=True)
class _Axis:
    type: str             # batch, channel, space
    id: str
    size: object = None   # batch: None or int; space input: (min, step); space output: the input axis' id
    halo: int = 0
    scale: float = 1.0
    n: int = 1            # channel: number of channels


@dataclass(frozen=True)
class _Step:
    id: str
    kwargs: dict
    field: str


class _Rdf:
    """Field access with errors that name the file and the field."""

    def __init__(self, files, data):
        self.files, self.data = files, data

    def error(self, field, message):
        return CareError(f"{self.files.path}: {self.files.rdf_name} field {field}: {message}")

    def get(self, node, key, field, types, default=...):
        if not isinstance(node, dict):
            raise self.error(field, f"expected a mapping, got {type(node).__name__}")
        if key not in node:
            if default is ...:
                raise self.error(f"{field}.{key}" if field else key, "missing")
            return default
        value = node[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
            names = "/".join(t.__name__ for t in _as_tuple(types))
            raise self.error(f"{field}.{key}" if field else key, f"expected {names}, got {value!r}")
        return value


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _parse_text(files, text):
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:
        raise CareError(f"{files.path}: {files.rdf_name} is YAML, which needs PyYAML (`pip install pyyaml`); "
                        "carecore writes its own packages' descriptions as JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CareError(f"{files.path}: {files.rdf_name} is neither JSON nor valid YAML ({e})") from None


def _parse_axes(rdf, tensor, field, *, output, input_ids=None, input_id=None):
    axes = rdf.get(tensor, "axes", field, list)
    out, seen = [], set()
    for i, ax in enumerate(axes):
        f = f"{field}.axes[{i}]"
        kind = rdf.get(ax, "type", f, str)
        if kind not in ("batch", "channel", "space"):
            raise rdf.error(f + ".type", f"axis type {kind!r} is not supported; carecore runs batch, channel and "
                                         "space (z, y, x) axes")
        aid = rdf.get(ax, "id", f, str, {"batch": "batch", "channel": "channel", "space": "x"}[kind])
        if aid in seen:
            raise rdf.error(f + ".id", f"axis {aid!r} appears twice")
        seen.add(aid)
        if kind == "batch":
            size = rdf.get(ax, "size", f, (int, type(None)), None)
            if size not in (None, 1):
                raise rdf.error(f + ".size", f"a fixed batch of {size}; carecore runs batches of any size or of 1")
            out.append(_Axis("batch", aid, size))
        elif kind == "channel":
            names = rdf.get(ax, "channel_names", f, list)
            if not names:
                raise rdf.error(f + ".channel_names", "empty")
            out.append(_Axis("channel", aid, n=len(names)))
        else:
            if aid not in SPACE:
                raise rdf.error(f + ".id", f"space axis {aid!r}; carecore knows z, y and x")
            scale = float(rdf.get(ax, "scale", f, (int, float), 1.0))
            size = rdf.get(ax, "size", f, (int, dict))
            if output:
                ref = size if isinstance(size, dict) else {}
                if ref.get("tensor_id") != input_id or ref.get("axis_id") != aid or ref.get("offset", 0) != 0:
                    raise rdf.error(f + ".size", f"{size!r}; carecore runs outputs whose space axes have the input's "
                                                 f"size ({{tensor_id: {input_id}, axis_id: {aid}}})")
                if aid not in input_ids:
                    raise rdf.error(f + ".id", f"output axis {aid!r} is not an input axis ({sorted(input_ids)})")
                halo = rdf.get(ax, "halo", f, int, 0)
                if halo < 0:
                    raise rdf.error(f + ".halo", f"must be >= 0, got {halo}")
                out.append(_Axis("space", aid, aid, halo=halo, scale=scale))
            else:
                if not isinstance(size, dict) or "tensor_id" in size:
                    raise rdf.error(f + ".size", f"{size!r}; carecore tiles images and needs a size "
                                                 "{min: ..., step: ...} on every space axis of the input")
                lo = rdf.get(size, "min", f + ".size", int)
                step = rdf.get(size, "step", f + ".size", int)
                if lo < 1 or step < 1:
                    raise rdf.error(f + ".size", f"min {lo} and step {step} must be >= 1")
                if lo % step:
                    raise rdf.error(f + ".size", f"min {lo} is not a multiple of step {step}; carecore's tiles lie on "
                                                 "one grid of the step")
                out.append(_Axis("space", aid, (lo, step), scale=scale))
    if not any(a.type == "space" for a in out):
        raise rdf.error(field + ".axes", "no space axis")
    return out


def _parse_steps(rdf, tensor, key, field, allowed):
    steps = rdf.get(tensor, key, field, list, [])
    out = []
    for i, st in enumerate(steps):
        f = f"{field}.{key}[{i}]"
        sid = rdf.get(st, "id", f, str)
        if sid not in allowed:
            raise rdf.error(f + ".id", f"{key} step {sid!r} is not supported; carecore runs {', '.join(allowed)}")
        kwargs = rdf.get(st, "kwargs", f, dict, {})
        unknown = sorted(set(kwargs) - STEP_KWARGS[sid])
        if unknown:
            raise rdf.error(f + ".kwargs", f"{sid} with {unknown} is not supported (carecore knows "
                                           f"{sorted(STEP_KWARGS[sid])})")
        out.append(_Step(sid, kwargs, f))
    return out


def _onnxruntime_available():
    try:
        import onnxruntime  # noqa: F401
    except Exception:
        return False
    return True


class BioimageioModel:
    """A bioimage.io model package opened by :func:`load_bioimageio`; :meth:`predict` restores images.

    Attributes
    ----------
    path : Path
    name : str
    weight_format : str
        The weights it runs (``onnx``, ``keras_v3``, ``keras_hdf5`` or ``tensorflow_saved_model_bundle``).
    axes : str
        The input's spatial axes in carecore's letters (``"YX"``, ``"ZYX"``).
    n_channel_in, n_channel_out : int
        Input channels; output channels (probabilistic packages: of the mean).
    probabilistic : bool
        A carecore package whose output channels are a Laplace mean and scale.
    halo : dict
        Tile overlap per output axis (carecore letters), from the output's ``halo``.
    description : dict
        The parsed ``rdf.yaml``.
    """

    def __init__(self, path, *, weight_format="auto"):
        files = _Files(path)
        field = files.rdf_name
        text = files.read(files.rdf_name, "(the description)")
        data = _parse_text(files, text)
        rdf = _Rdf(files, data)
        if not isinstance(data, dict):
            raise CareError(f"{files.path}: {field} is not a mapping of fields")
        self.path, self.description, self._files, self._rdf = files.path, data, files, rdf
        kind = rdf.get(data, "type", "", str)
        if kind != "model":
            raise rdf.error("type", f"{kind!r}; carecore runs model packages ('model')")
        version = rdf.get(data, "format_version", "", str)
        if not (version == FORMAT or version.startswith(FORMAT + ".")):
            raise rdf.error("format_version", f"{version!r}; carecore runs descriptions of format {FORMAT}.x "
                                              "(bioimageio.spec converts older ones)")
        self.name = str(data.get("name") or self.path.stem)
        for key in ("inputs", "outputs"):
            n = len(rdf.get(data, key, "", list))
            if n != 1:
                raise rdf.error(key, f"{n} tensors; carecore runs packages with one input and one output tensor")
        inp, outp = data["inputs"][0], data["outputs"][0]
        self._input_id = rdf.get(inp, "id", "inputs[0]", str, "input")
        self._in_axes = _parse_axes(rdf, inp, "inputs[0]", output=False)
        in_ids = [a.id for a in self._in_axes if a.type == "space"]
        self._out_axes = _parse_axes(rdf, outp, "outputs[0]", output=True, input_ids=set(in_ids),
                                     input_id=self._input_id)
        out_space = {a.id: a for a in self._out_axes if a.type == "space"}
        for a in self._in_axes:
            if a.id in out_space and out_space[a.id].scale != a.scale:
                raise rdf.error("outputs[0].axes", f"axis {a.id} has scale {out_space[a.id].scale} but the input's "
                                                   f"{a.scale}; carecore runs outputs on the input's grid")
        self._in_ids = in_ids
        self._out_ids = [i for i in in_ids if i in out_space]          # in the input's order
        self._whole_ids = [i for i in in_ids if i not in out_space]    # taken whole (a projection)
        self._space = {a.id: a for a in self._in_axes if a.type == "space"}
        self.axes = "".join(SPACE[i] for i in in_ids)
        self.halo = {SPACE[i]: out_space[i].halo for i in self._out_ids}
        self._in_dtype = self._data_type(inp, "inputs[0]")
        self._pre = _parse_steps(rdf, inp, "preprocessing", "inputs[0]", PREPROCESSING)
        self._post = _parse_steps(rdf, outp, "postprocessing", "outputs[0]", POSTPROCESSING)
        self.n_channel_in = next((a.n for a in self._in_axes if a.type == "channel"), 1)
        n_out = next((a.n for a in self._out_axes if a.type == "channel"), 1)
        names = next((rdf.get(outp["axes"][i], "channel_names", "", list) for i, a in enumerate(self._out_axes)
                      if a.type == "channel"), ["output"])
        self.channel_names = [str(n) for n in names]
        carecore = (data.get("config") or {}).get("carecore") if isinstance(data.get("config"), dict) else None
        self._carecore = carecore if isinstance(carecore, dict) else None
        cc_config = self._carecore_config()
        k = n_out // 2
        laplace = n_out % 2 == 0 and k > 0 and (
            self.channel_names == ["mean", "scale"]
            or self.channel_names == [f"mean{i}" for i in range(k)] + [f"scale{i}" for i in range(k)])
        self.probabilistic = bool(laplace and (cc_config.get("probabilistic", self._carecore is not None)
                                               or "probabilistic" in (data.get("tags") or [])))
        self.n_channel_out = k if self.probabilistic else n_out
        filters = cc_config.get("unet_filters")
        self._bytes_per_voxel = (7 * int(filters) * 4 + 32) if isinstance(filters, int) else DEFAULT_BYTES_PER_VOXEL
        self._batch = next((a for a in self._in_axes if a.type == "batch"), None)
        self.weight_format, self._net = self._load_weights(weight_format)

    # -- description -------------------------------------------------------------------------
    def _data_type(self, tensor, field):
        data = tensor.get("data", {}) if isinstance(tensor, dict) else {}
        if isinstance(data, list):
            data = data[0] if data else {}
        dtype = data.get("type", "float32") if isinstance(data, dict) else "float32"
        if dtype not in DTYPES:
            raise self._rdf.error(field + ".data.type", f"{dtype!r}; carecore feeds one of {DTYPES}")
        return dtype

    def _carecore_config(self):
        """carecore's configuration shipped with a carecore package (``carecore_config.json``), or {}."""
        if self._carecore is None or "carecore_config.json" not in self._files.names:
            return {}
        try:
            cfg = json.loads(self._files.read("carecore_config.json", "attachments"))
        except ValueError:
            return {}
        return cfg if isinstance(cfg, dict) else {}

    def _load_weights(self, weight_format):
        rdf = self._rdf
        weights = rdf.get(self.description, "weights", "", dict)
        present = [f for f in WEIGHT_FORMATS if f in weights]
        if weight_format in (None, "auto"):
            usable = [f for f in present if f != "onnx" or _onnxruntime_available()]
            if not usable:
                why = " (onnx needs onnxruntime: `pip install onnxruntime`)" if present == ["onnx"] else ""
                raise rdf.error("weights", f"formats {sorted(weights)}; carecore runs {', '.join(WEIGHT_FORMATS)}{why}")
            fmt = usable[0]
        else:
            if weight_format not in WEIGHT_FORMATS:
                raise CareError(f"weight_format: choose from {WEIGHT_FORMATS} or 'auto', got {weight_format!r}")
            if weight_format not in weights:
                raise rdf.error("weights", f"no {weight_format} weights (the package has {sorted(weights)})")
            if weight_format == "onnx" and not _onnxruntime_available():
                raise CareError("weight_format 'onnx' needs onnxruntime, which is not installed: "
                                "`pip install onnxruntime`, or leave weight_format 'auto'")
            fmt = weight_format
        field = f"weights.{fmt}"
        entry = weights[fmt]
        source = rdf.get(entry, "source", field, str)
        data = self._files.read(source, field + ".source")
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if sha and hashlib.sha256(data).hexdigest() != str(sha).lower():
            raise rdf.error(field + ".sha256", f"{source} does not have this SHA-256: the file was changed or damaged")
        try:
            net = getattr(self, "_load_" + fmt)(data, source)
        except CareError:
            raise
        except Exception as e:   # a file the runtime cannot read: name it
            raise rdf.error(field, f"{source} could not be loaded ({type(e).__name__}: {e})") from None
        return fmt, net

    @staticmethod
    def _load_onnx(data, source):
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available
        sess = ort.InferenceSession(data, providers=providers)
        name = sess.get_inputs()[0].name
        return lambda batch: sess.run(None, {name: batch})[0]

    @staticmethod
    def _load_keras(data, suffix):
        import keras

        with tempfile.TemporaryDirectory(prefix="carecore-package-") as d:
            p = Path(d) / f"weights{suffix}"
            p.write_bytes(data)
            model = keras.models.load_model(p, compile=False)   # safe mode: no code deserialized

        def run(batch):
            out = model.predict_on_batch(batch)
            if isinstance(out, dict):
                out = next(iter(out.values()))
            elif isinstance(out, (list, tuple)):
                out = out[0]
            return out
        return run

    def _load_keras_v3(self, data, source):
        return self._load_keras(data, ".keras")

    def _load_keras_hdf5(self, data, source):
        return self._load_keras(data, ".h5")

    def _load_tensorflow_saved_model_bundle(self, data, source):
        import keras

        folder = Path(tempfile.mkdtemp(prefix="carecore-savedmodel-"))
        weakref.finalize(self, shutil.rmtree, str(folder), True)
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for member in z.namelist():
                    name = posixpath.normpath(member)
                    if name.startswith("/") or name == ".." or name.startswith("../"):
                        raise self._rdf.error("weights.tensorflow_saved_model_bundle",
                                              f"{source} holds {member!r}, a path outside its folder")
                z.extractall(folder)
        else:
            raise self._rdf.error("weights.tensorflow_saved_model_bundle",
                                  f"{source} is not a zipped SavedModel folder")
        last = None
        for endpoint in ("serve", "serving_default"):
            try:
                layer = keras.layers.TFSMLayer(str(folder), call_endpoint=endpoint)
                break
            except ValueError as e:
                last = e
        else:
            raise self._rdf.error("weights.tensorflow_saved_model_bundle",
                                  f"{source} has neither a 'serve' nor a 'serving_default' endpoint ({last})")
        out_id = self.description["outputs"][0].get("id", "output")

        def run(batch):
            out = layer(batch)
            if isinstance(out, dict):
                out = out[out_id] if out_id in out else next(iter(out.values()))
            return np.asarray(out)
        return run

    # -- grids -------------------------------------------------------------------------------
    def output_axes(self, axes):
        """Axes of the output for an input with ``axes``: without the axes the package reduces, with ``C``
        added when the output has several channels (per readout) and the input has none."""
        out = "".join(a for a in axes if a not in {SPACE[i] for i in self._whole_ids})
        if "C" not in out and self.n_channel_out > 1:
            out += "C"
        return out

    def check_spacing(self, spacing, *, name="image"):
        """None: a package takes any voxel size (isotropic models, whose factor is the stack's Z/X ratio,
        are not exported; :meth:`carecore.CARE.check_spacing`)."""
        return None

    def output_spacing(self, spacing):
        """The input's voxel size without the axes the package reduces."""
        whole = {SPACE[i] for i in self._whole_ids}
        return {a: v for a, v in dict(spacing or {}).items() if a not in whole}

    def _check_input(self, x, axes, name):
        from ..axes import check_axes, spatial_axes

        axes = check_axes(axes, np.ndim(x), name=name, shape=np.shape(x))
        sp = spatial_axes(axes)
        extra = set(axes) - set(sp) - {"C"}
        if extra:
            raise CareError(f"{name}: axes {axes!r} have {''.join(sorted(extra))}; predict one image at a time "
                            "(axes made of C and the package's spatial axes)")
        if sorted(sp) != sorted(self.axes):
            raise CareError(f"{name}: the package takes images with spatial axes {self.axes} but the image has "
                            f"{sp!r} (shape {tuple(np.shape(x))}, axes {axes})")
        nc = np.shape(x)[axes.index("C")] if "C" in axes else 1
        if nc != self.n_channel_in:
            raise CareError(f"{name}: the package takes {self.n_channel_in} channel(s) but the image has {nc} "
                            f"(shape {tuple(np.shape(x))}, axes {axes})")
        return axes

    def tile_plan(self, shape, n_tiles="auto", *, memory_budget=None):
        """How :meth:`predict` cuts an image of spatial ``shape`` (in the order of :attr:`axes`).

        ``n_tiles``: ``"auto"`` (the least work within ``memory_budget`` bytes) or one count per tiled axis
        (the output's space axes; axes taken whole may be given as 1). Returns a
        :class:`~carecore.prediction.tiling.TilePlan` over the tiled axes, of the image padded to the
        input's minimum size.
        """
        from ..models.care import DEFAULT_PREDICT_BUDGET
        from ..prediction.tiling import auto_tiles, plan_tiles

        shape = tuple(int(s) for s in shape)
        if len(shape) != len(self._in_ids):
            raise CareError(f"tile_plan: give the image's spatial shape along {self.axes}, got {shape}")
        sizes = dict(zip(self._in_ids, shape))
        for i in self._whole_ids:   # taken whole: the size itself must be valid
            lo, step = self._space[i].size
            if sizes[i] < lo or (sizes[i] - lo) % step:
                raise CareError(f"the image has {sizes[i]} pixels along {SPACE[i]}, which the package takes whole; "
                                f"it needs {lo} + a multiple of {step}")
        # carecore's own networks take any multiple of the step: its packages' minimum (a tile that keeps a core
        # after the halo) binds tiles only, and an image below it runs whole, exactly as carecore runs it
        pad = self._carecore is None
        tiled = [max(sizes[i], self._space[i].size[0]) if pad else sizes[i] for i in self._out_ids]
        mins = [self._space[i].size[0] for i in self._out_ids]
        divisor = math.lcm(*[self._space[i].size[1] for i in self._out_ids])
        halo = tuple(self.halo[SPACE[i]] for i in self._out_ids)
        kw = dict(halo=halo, divisor=divisor)
        budget = DEFAULT_PREDICT_BUDGET if memory_budget is None else int(memory_budget)
        if isinstance(n_tiles, str):
            if n_tiles != "auto":
                raise CareError(f"n_tiles must be 'auto' or a tuple of ints, got {n_tiles!r}")
            per_voxel = self._bytes_per_voxel * math.prod(sizes[i] for i in self._whole_ids)
            n = list(auto_tiles(tuple(tiled), halo=max(halo), divisor=divisor, bytes_per_voxel=per_voxel,
                                budget=budget))
        else:
            n = [int(v) for v in n_tiles]
            if len(n) == len(self._in_ids) and self._whole_ids:
                if any(n[self._in_ids.index(i)] != 1 for i in self._whole_ids):
                    raise CareError(f"tiles {tuple(n)}: the package takes {''.join(SPACE[i] for i in self._whole_ids)} "
                                    "whole; give 1 tile there (or counts for the other axes only)")
                n = [n[self._in_ids.index(i)] for i in self._out_ids]
            if len(n) != len(self._out_ids):
                raise CareError(f"tiles {tuple(n_tiles)}: give one count per axis of "
                                f"{''.join(SPACE[i] for i in self._out_ids)}")
        while True:   # tiles below the input's minimum size: fewer tiles along that axis
            plan = plan_tiles(tuple(tiled), tuple(n), **kw)
            small = [j for j, (s, m) in enumerate(zip(plan.tile_shape, mins)) if s < m and n[j] > 1]
            if not small:
                return plan
            n[small[0]] -= 1

    # -- processing --------------------------------------------------------------------------
    def _reduce(self, step, ids):
        """'channel' (statistics per channel) or 'all', from a step's ``axes``; all spatial axes must be reduced."""
        axes = step.kwargs.get("axes")
        if axes is None:
            return "all"
        if not isinstance(axes, list) or not all(isinstance(a, str) for a in axes):
            raise self._rdf.error(step.field + ".kwargs.axes", f"expected a list of axis ids, got {axes!r}")
        reduced = set(axes) - {"batch"}
        unknown = sorted(reduced - set(ids) - {"channel"})
        if unknown:
            raise self._rdf.error(step.field + ".kwargs.axes", f"{unknown} are not axes of the tensor ({ids})")
        kept = sorted(set(ids) - reduced)
        if kept:
            raise self._rdf.error(step.field + ".kwargs.axes", f"statistics per {kept} (axes {axes}); carecore "
                                                               "computes them over all space axes")
        return "all" if "channel" in reduced else "channel"

    def _vector(self, step, key, n, default=None):
        """A float, or a per-channel vector (``axis: channel``) of ``n`` values, from a step's kwargs."""
        value = step.kwargs.get(key, default)
        axis = step.kwargs.get("axis")
        f = f"{step.field}.kwargs.{key}"
        if isinstance(value, list):
            if axis != "channel":
                raise self._rdf.error(step.field + ".kwargs.axis", f"{axis!r}; carecore applies lists of values "
                                                                   "along the channel axis only")
            if len(value) not in (1, n) or not all(isinstance(v, (int, float)) for v in value):
                raise self._rdf.error(f, f"{value!r}: expected {n} number(s), one per channel")
            return np.asarray(value, np.float32)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self._rdf.error(f, f"expected a number, got {value!r}")
        return np.float32(value)

    @staticmethod
    def _percentiles(t, p_lo, p_hi, kind, letters, name):
        from ..normalize import compute_percentiles

        norm = compute_percentiles(t, p_lo, p_hi, axes=letters + ("C" if kind == "channel" else "S"), name=name)
        return np.asarray(norm.lo, np.float32), np.asarray(norm.hi, np.float32)

    @staticmethod
    def _moments(t, kind):
        axis = tuple(range(t.ndim - 1)) if kind == "channel" else None
        return (np.asarray(np.mean(t, axis=axis, dtype=np.float64), np.float32),
                np.asarray(np.std(t, axis=axis, dtype=np.float64), np.float32))

    def _functions(self, steps, tensor, ids, raw_input, name):
        """Elementwise functions for ``steps`` with their statistics: of ``tensor`` (spatial..., C; axis ids
        ``ids``), or of the unprocessed input ``raw_input`` for a ``reference_tensor`` naming it."""
        letters = "".join(SPACE[i] for i in ids)
        in_letters = "".join(SPACE[i] for i in self._in_ids)
        n = tensor.shape[-1]
        funcs, ranges = [], []
        for st in steps:
            kw = st.kwargs
            eps = kw.get("eps", 1e-6)
            if not isinstance(eps, (int, float)) or not 0 < eps <= 0.1:
                raise self._rdf.error(st.field + ".kwargs.eps", f"expected a number in (0, 0.1], got {eps!r}")
            eps = np.float32(eps)
            ref = kw.get("reference_tensor")
            if st.id in ("scale_range", "scale_mean_variance"):
                if st.id == "scale_mean_variance" and ref is None:
                    raise self._rdf.error(st.field + ".kwargs.reference_tensor", "missing")
                if ref is not None and ref != self._input_id:
                    raise self._rdf.error(st.field + ".kwargs.reference_tensor",
                                          f"{ref!r} is not the input tensor ({self._input_id!r})")
            if ref is not None and tensor is not raw_input:
                src, src_ids, src_letters = raw_input, self._in_ids, in_letters
            else:
                src, src_ids, src_letters = tensor, ids, letters
            if st.id == "ensure_dtype":
                dtype = kw.get("dtype")
                if dtype not in DTYPES:
                    raise self._rdf.error(st.field + ".kwargs.dtype", f"{dtype!r}; expected one of {DTYPES}")
                funcs.append(lambda t, d=dtype: t.astype(d))
            elif st.id == "scale_linear":
                gain, offset = self._vector(st, "gain", n, 1.0), self._vector(st, "offset", n, 0.0)
                funcs.append(lambda t, g=gain, o=offset: t * g + o)
                if np.all(gain != 0):   # its inverse, y / g - o / g: carecore's mapping back of a fixed scaling
                    ranges.append((st, "channel", np.float32(1) / gain, -offset / gain))
                else:
                    ranges.append((st, "constant", None, None))
            elif st.id == "fixed_zero_mean_unit_variance":
                mean, std = self._vector(st, "mean", n), self._vector(st, "std", n)
                funcs.append(lambda t, m=mean, s=std, e=eps: (t - m) / (s + e))
            elif st.id == "scale_range":
                p_lo, p_hi = kw.get("min_percentile", 0.0), kw.get("max_percentile", 100.0)
                if not all(isinstance(p, (int, float)) for p in (p_lo, p_hi)) or not 0 <= p_lo < p_hi <= 100:
                    raise self._rdf.error(st.field + ".kwargs", f"percentiles ({p_lo}, {p_hi}): expected "
                                                                "0 <= min_percentile < max_percentile <= 100")
                kind = self._reduce(st, src_ids)
                lo, hi = self._percentiles(src, p_lo, p_hi, kind, src_letters, name)
                self._check_channels(st, lo, n)
                ranges.append((st, kind, hi - lo + eps, lo))
                funcs.append(lambda t, lo=lo, hi=hi, e=eps: (t - lo) / (hi - lo + e))
            elif st.id == "zero_mean_unit_variance":
                mean, std = self._moments(tensor, self._reduce(st, ids))
                funcs.append(lambda t, m=mean, s=std, e=eps: (t - m) / (s + e))
            elif st.id == "scale_mean_variance":
                kind = self._reduce(st, ids)
                mean, std = self._moments(tensor, kind)
                ref_mean, ref_std = self._moments(src, self._reduce(st, src_ids))
                self._check_channels(st, ref_mean, n)
                funcs.append(lambda t, m=mean, s=std, rm=ref_mean, rs=ref_std, e=eps:
                             (t - m) / (s + e) * (rs + e) + rm)
            elif st.id == "clip":
                lo, hi = kw.get("min"), kw.get("max")
                bad = any(v is not None and not isinstance(v, (int, float)) for v in (lo, hi))
                if bad or lo is None and hi is None:
                    raise self._rdf.error(st.field + ".kwargs", f"clip needs numbers min and/or max, got {kw!r}")
                funcs.append(lambda t, a=lo, b=hi: np.clip(t, a, b))
            elif st.id == "sigmoid":
                funcs.append(lambda t: 1.0 / (1.0 + np.exp(-t)))
            elif st.id == "binarize":
                thr = self._vector(st, "threshold", n)
                funcs.append(lambda t, v=thr: (t > v).astype(np.float32))
        return funcs, ranges

    def _check_channels(self, step, values, n):
        if np.ndim(values) and len(values) not in (1, n):
            raise self._rdf.error(step.field, f"statistics of {len(values)} reference channel(s) for a tensor of {n}")

    # -- prediction --------------------------------------------------------------------------
    def _run(self, batch):
        """(B, in spatial..., C_in) float32 -> (B, out spatial..., C_out) float32 through the network."""
        internal_in = ["batch"] + self._in_ids + ["channel"]
        ids = [a.id if a.type == "space" else a.type for a in self._in_axes]
        x = batch
        for k in reversed([k for k, i in enumerate(internal_in) if i not in ids]):   # axes the input lacks
            x = x[(slice(None),) * k + (0,)]
        present = [i for i in internal_in if i in ids]
        x = np.ascontiguousarray(np.transpose(x, [present.index(i) for i in ids]), dtype=self._in_dtype)
        y = np.asarray(self._net(x), np.float32)
        internal_out = ["batch"] + self._out_ids + ["channel"]
        ids = [a.id if a.type == "space" else a.type for a in self._out_axes]
        if y.ndim != len(ids):
            raise CareError(f"{self.path}: the network returned an array of shape {y.shape} but the output is "
                            f"described with axes {ids}")
        y = np.transpose(y, [ids.index(i) for i in internal_out if i in ids])
        for i in (internal_out.index(m) for m in internal_out if m not in ids):
            y = np.expand_dims(y, i)
        return y

    @frame_by_frame
    def predict(self, image, *, axes, n_tiles="auto", memory_budget=None, batch_size=None, map_back=True,
                progress=None, stop=None, name="image"):
        """Restore ``image`` with the package; probabilistic packages return ``(mean, scale)``.

        Parameters
        ----------
        image : array_like (may be a memory map)
        axes : str
            Axes of ``image``: the package's spatial axes (any order), optionally with ``C``; with ``T``
            or ``S`` each frame is restored on its own (:func:`~carecore.prediction.frames.frame_by_frame`).
        n_tiles : "auto" or tuple of int
            Tiles per output axis (see :meth:`tile_plan`).
        memory_budget : int, optional
            Bytes of working memory for the network at once (default: carecore's prediction default).
        batch_size : int, optional
            Tiles per network call (default: as many as fit the budget, at most 8).
        map_back : bool
            carecore packages with output in normalized units: map it back with the input's percentiles
            as carecore does (see the module's description); no effect on other packages.
        progress, stop : callables, optional
            ``progress(done, total, "tiles")`` after every batch of tiles; ``stop()`` polled likewise.
        name : str
            The image's name in error messages.

        Returns
        -------
        numpy.ndarray (float32) with axes :meth:`output_axes` of ``axes``, or ``(mean, scale)``.
        """
        from ..models.care import DEFAULT_PREDICT_BUDGET, finite_tile
        from ..prediction.tiling import read_window
        from ..progress import check_stop, report

        budget = DEFAULT_PREDICT_BUDGET if memory_budget is None else int(memory_budget)
        axes = self._check_input(image, axes, name)
        order = [axes.index(SPACE[i]) for i in self._in_ids] + ([axes.index("C")] if "C" in axes else [])
        x = np.transpose(image, order)   # (spatial in the package's order..., C): a view
        x = x if "C" in axes else x[..., None]
        shape = dict(zip(self._in_ids, x.shape[:-1]))
        pre, ranges = self._functions(self._pre, x, self._in_ids, x, name)
        self._warn_if_unlike_training(x, ranges, name)
        plan = self.tile_plan(x.shape[:-1], n_tiles, memory_budget=budget)
        whole = {i: slice(0, shape[i]) for i in self._whole_ids}

        in_letters = [SPACE[i] for i in self._in_ids]

        def prepared(tile):
            window = iter(tile.window)
            at = tuple(whole[i] if i in whole else next(window) for i in self._in_ids)
            w = finite_tile(read_window(x, at), name, in_letters, at, x.shape[:-1])   # (NaN: an error, as carecore's)
            for f in pre:
                w = f(w)
            return w

        n_out = self.n_channel_out * (2 if self.probabilistic else 1)
        res = np.empty(tuple(plan.shape) + (n_out,), np.float32)
        tile_bytes = int(np.prod(plan.tile_shape)) * self._bytes_per_voxel * math.prod(
            shape[i] for i in self._whole_ids)
        one = self._batch is None or self._batch.size == 1   # the network takes one tile at a time
        bs = 1 if one else batch_size or int(max(1, min(8, budget // max(tile_bytes, 1))))
        tiles = plan.tiles
        report(progress, 0, len(tiles), "tiles")
        for start in range(0, len(tiles), bs):
            check_stop(stop)
            group = tiles[start:start + bs]
            pred = self._run(np.stack([prepared(t) for t in group]))
            want = tuple(plan.tile_shape) + (n_out,)
            if tuple(pred.shape[1:]) != want:
                raise CareError(f"{self.path}: the network returned tiles of shape {tuple(pred.shape[1:])} for input "
                                f"tiles of {tuple(plan.tile_shape)}; expected {want} as the description says")
            for t, p in zip(group, pred):
                res[t.core] = p[t.inner]
            report(progress, start + len(group), len(tiles), "tiles")
        res = res[tuple(slice(0, shape[i]) for i in self._out_ids)]   # the image's own size
        post, _ = self._functions(self._post, res, self._out_ids, x, name)
        for f in post:
            res = f(res)
        res = np.asarray(res, np.float32)
        if map_back and self._maps_back(ranges):
            _, _, gain, offset = ranges[0]   # the inverse of the input's normalization
            k = self.n_channel_out
            res[..., :k] = res[..., :k] * gain + offset
            if self.probabilistic:
                res[..., k:] *= gain
        out_axes = self.output_axes(axes)
        letters = [SPACE[i] for i in self._out_ids] + ["C"]

        def back(r):
            if "C" not in out_axes:
                r, have = r[..., 0], letters[:-1]
            else:
                have = letters
            return np.transpose(r, [have.index(a) for a in out_axes])

        if self.probabilistic:
            k = self.n_channel_out
            return back(res[..., :k]), back(res[..., k:])
        return back(res)

    def _warn_if_unlike_training(self, x, ranges, name):
        """A carecore package that scales every image by its training inputs' percentiles (a fixed
        ``scale_linear``) warns as the model folder does when ``x`` (spatial..., C) lies far from them
        (:func:`~carecore.models.care.warn_if_unlike_training`): acquired with another gain or bit depth."""
        from ..models.care import warn_if_unlike_training
        from ..normalize import Normalization

        cc = self._carecore or {}
        percentiles = cc.get("percentiles")
        if (cc.get("input_normalization") != "training" or len(ranges) != 1 or ranges[0][0].id != "scale_linear"
                or ranges[0][1] != "channel" or not isinstance(percentiles, list) or len(percentiles) != 2):
            return
        _, _, width, lo = ranges[0]
        lo = np.broadcast_to(np.asarray(lo, np.float64), (x.shape[-1],))
        hi = lo + np.broadcast_to(np.asarray(width, np.float64), (x.shape[-1],))
        norm = Normalization(tuple(float(v) for v in lo), tuple(float(v) for v in hi), tuple(float(p) for p in percentiles))
        warn_if_unlike_training(x, norm, axes="".join(SPACE[i] for i in self._in_ids) + "C", name=name,
                                advice="the package scales every image by them (a fixed scale_linear): restore it "
                                       "with the model folder scaled by its own percentiles (`carecore predict --model "
                                       "FOLDER --normalization image`), or bring it to the training images' range first")

    def _maps_back(self, ranges):
        """Whether carecore maps this package's output back: a carecore package without postprocessing
        whose input is normalized per channel by one ``scale_range`` (the image's percentiles) or one
        ``scale_linear`` (the training inputs' percentiles: packages of probabilistic models written
        before carecore exported their mapping back) and whose channels in == out."""
        return (self._carecore is not None and self._carecore.get("postprocessing") == "none" and not self._post
                and len(ranges) == 1 and ranges[0][1] == "channel" and ranges[0][0].kwargs.get("reference_tensor")
                in (None, self._input_id) and self.n_channel_in == self.n_channel_out)

    def __repr__(self):
        return (f"BioimageioModel({str(self.path)!r}, axes={self.axes!r}, weight_format={self.weight_format!r}, "
                f"channels {self.n_channel_in}->{self.n_channel_out}{', probabilistic' if self.probabilistic else ''})")


def load_bioimageio(path, *, weight_format="auto"):
    """Open a bioimage.io model package to predict with it, without bioimageio.core.

    Parameters
    ----------
    path : str or Path
        The package: a ``.zip``, or the folder it unpacks to (with ``rdf.yaml``).
    weight_format : str
        ``"auto"`` (ONNX through onnxruntime when installed, else Keras, else the TensorFlow SavedModel),
        or one of :data:`WEIGHT_FORMATS`.

    Returns
    -------
    BioimageioModel

    Examples
    --------
    >>> model = load_bioimageio("care2d.zip")                     # doctest: +SKIP
    >>> restored = model.predict(noisy, axes="YX", n_tiles=(2, 2))  # doctest: +SKIP
    """
    return BioimageioModel(path, weight_format=weight_format)

"""The exported network written in the weight formats of a bioimage.io package.

Each writer saves the standard-layer network (:func:`~carecore.export.plain.build_plain_unet`), so
no format needs carecore to run:

- ``keras_v3``: a ``.keras`` file (``keras.models.load_model``; Keras 3 with any backend);
- ``tensorflow_saved_model_bundle``: a zipped TensorFlow SavedModel with the endpoint ``serve``
  (KNIME's TensorFlow 2 reader, deepImageJ's TF2 engine, ``keras.layers.TFSMLayer``);
- ``onnx``: the same layers written as an ONNX graph by :mod:`carecore.export.onnx_graph`
  (onnxruntime, deepImageJ/JDLL, napari).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import CareError
from .onnx_graph import ONNX_OPSET, onnx_available, write_onnx

WEIGHT_FORMATS = ("keras_v3", "tensorflow_saved_model_bundle", "onnx")
FILE_NAMES = {"keras_v3": "weights.keras", "tensorflow_saved_model_bundle": "weights_tf_saved_model.zip",
              "onnx": "weights.onnx"}


def resolve_formats(weight_formats):
    """The weight formats to write: ``"auto"`` is every format whose converter is installed."""
    if weight_formats in (None, "auto"):
        return tuple(f for f in WEIGHT_FORMATS if f != "onnx" or onnx_available())
    if isinstance(weight_formats, str):
        weight_formats = (weight_formats,)
    formats = tuple(dict.fromkeys(weight_formats))
    bad = [f for f in formats if f not in WEIGHT_FORMATS]
    if bad or not formats:
        raise CareError(f"weight_formats: {bad or 'none given'}; choose from {WEIGHT_FORMATS} or 'auto'")
    if "onnx" in formats and not onnx_available():
        raise CareError("weight_formats: 'onnx' needs onnx (to write it) and onnxruntime (to check it against "
                        "carecore), and one is not installed; `pip install onnx onnxruntime` or leave 'onnx' out")
    return formats


def write_weights(plain, fmt, folder, *, n_spatial, n_channel_in):
    """Write ``plain`` (a standard-layer Keras model) in format ``fmt`` into ``folder``; returns
    ``(file name, extra fields of the weights entry)``."""
    import keras
    import tensorflow as tf

    folder = Path(folder)
    name = FILE_NAMES[fmt]
    if fmt == "keras_v3":
        plain.save(folder / name)
        return name, {"keras_version": keras.__version__, "backend": [keras.backend.backend(), tf.__version__]}
    if fmt == "tensorflow_saved_model_bundle":
        sm = folder / "tf_saved_model"
        # the endpoint returns {"output": tensor} (named outputs: what TFSMLayer-based readers expect)
        archive = keras.export.ExportArchive()
        archive.track(plain)
        spec = tf.TensorSpec((None,) * (n_spatial + 1) + (n_channel_in,), tf.float32, name="input")
        archive.add_endpoint("serve", tf.function(lambda x: {"output": plain(x, training=False)}, input_signature=[spec]))
        archive.write_out(str(sm), verbose=False)
        with zipfile.ZipFile(folder / name, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(sm.rglob("*")):
                if p.is_file():
                    z.write(p, p.relative_to(sm).as_posix())
        return name, {"tensorflow_version": tf.__version__}
    if fmt == "onnx":
        write_onnx(plain, folder / name, n_spatial=n_spatial, n_channel_in=n_channel_in)
        return name, {"opset_version": ONNX_OPSET}
    raise CareError(f"weight format {fmt!r}: choose from {WEIGHT_FORMATS}")

"""The exported network written as an ONNX graph, layer by layer, without a converter.

The standard-layer network (:func:`~carecore.export.plain.build_plain_unet`) uses seven kinds of
Keras layer; each becomes its ONNX operator(s) with the same weights:

===================================  =====================================================
Keras layer                          ONNX
===================================  =====================================================
``Conv2D``/``Conv3D`` (stride 1)     ``Conv`` (``"same"``: TensorFlow's padding, the odd
                                     pixel after), then ``Relu``/``Softplus``
``MaxPooling2D``/``3D`` (valid)      ``MaxPool``
``UpSampling2D``/``3D`` (nearest)    ``Resize`` (nearest, asymmetric, floor: each pixel
                                     repeated)
``Concatenate`` (last axis)          ``Concat`` on the channel axis
``Add``                              ``Sum``
``Multiply`` (two tensors)           ``Mul``
``Rescaling``                        ``Mul`` and ``Add``
===================================  =====================================================

The graph computes channels first (ONNX's convolution layout) between one ``Transpose`` after its
input and one before its output, so its input and output have the package's axes: (batch,
spatial..., channel), spatial sizes free; the file declares the lowest IR version its opset allows
(8 for opset 17), which older onnxruntime builds (deepImageJ/JDLL, KNIME) read. A layer of another kind
or setting is refused with its name. Writing the graph directly (rather than converting a traced TensorFlow function with
``tf2onnx``) makes the file a function of the weights alone: the same network gives the same bytes,
and no converter can silently add an axis (``tf2onnx`` did, now and then, in a long-running process).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CareError

ONNX_OPSET = 17
SPATIAL_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}


def onnx_available():
    """Whether ``onnx`` (to write ONNX weights) and ``onnxruntime`` (to check them against carecore
    before the package is written) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except Exception:
        return False
    return True


def write_onnx(plain, path, *, n_spatial, n_channel_in, opset=ONNX_OPSET):
    """Write the Keras functional model ``plain`` as an ONNX file.

    Parameters
    ----------
    plain : keras.Model
        A functional model of the layers in the module's table, one input (batch, spatial...,
        ``n_channel_in``) and one output with the same spatial sizes.
    path : str or Path
        The ``.onnx`` file to write.
    n_spatial : {2, 3}
    n_channel_in : int
    opset : int

    Returns
    -------
    Path
        ``path``.
    """
    import keras
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    L = keras.layers
    if n_spatial not in SPATIAL_NAMES:
        raise CareError(f"ONNX export: 2 or 3 spatial axes, got {n_spatial}")
    if len(plain.inputs) != 1 or len(plain.outputs) != 1:
        raise CareError(f"ONNX export: the network must have one input and one output, "
                        f"got {len(plain.inputs)} and {len(plain.outputs)}")
    nd = n_spatial
    nodes, weights, value_of = [], [], {}

    def const(name, array):
        weights.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    nodes.append(helper.make_node("Transpose", ["input"], ["input_channels_first"],
                                  perm=[0, nd + 1, *range(1, nd + 1)]))
    value_of[id(plain.inputs[0])] = "input_channels_first"
    for layer in plain.operations:
        kind = type(layer).__name__
        if isinstance(layer, L.InputLayer):
            continue
        # the tensors of the layer's first call; a layer called again would feed tensors of later calls,
        # which are not in value_of: refused below
        try:
            inputs = [value_of[id(t)] for t in keras.tree.flatten(layer.input)]
        except KeyError:
            raise CareError(f"ONNX export: layer {layer.name!r} takes a tensor of a layer called more than once; "
                            "only layers called once are written") from None
        outputs = keras.tree.flatten(layer.output)
        out = layer.name
        cfg = layer.get_config()
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise CareError(f"ONNX export: layer {layer.name!r} is {cfg['data_format']}; only channels_last is written")
        if isinstance(layer, (L.Conv2D, L.Conv3D)):
            nodes += _conv(layer, cfg, inputs[0], out, nd, const, helper)
        elif isinstance(layer, (L.MaxPooling2D, L.MaxPooling3D)):
            if cfg["padding"] != "valid":
                raise CareError(f"ONNX export: pooling {layer.name!r} has padding {cfg['padding']!r}; only 'valid'")
            nodes.append(helper.make_node("MaxPool", inputs, [out], kernel_shape=list(cfg["pool_size"]),
                                          strides=list(cfg["strides"])))
        elif isinstance(layer, (L.UpSampling2D, L.UpSampling3D)):
            if cfg.get("interpolation", "nearest") != "nearest":
                raise CareError(f"ONNX export: upsampling {layer.name!r} is {cfg['interpolation']!r}; only 'nearest'")
            scales = const(f"{out}_scales", np.array([1.0, 1.0, *cfg["size"]], np.float32))
            nodes.append(helper.make_node("Resize", [inputs[0], "", scales], [out], mode="nearest",
                                          coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
        elif isinstance(layer, L.Concatenate):
            if cfg["axis"] not in (-1, nd + 1):
                raise CareError(f"ONNX export: {layer.name!r} concatenates along axis {cfg['axis']}; "
                                "only the channel axis is written")
            nodes.append(helper.make_node("Concat", inputs, [out], axis=1))
        elif isinstance(layer, L.Add):
            nodes.append(helper.make_node("Sum", inputs, [out]))
        elif isinstance(layer, L.Multiply):
            if len(inputs) != 2:
                raise CareError(f"ONNX export: {layer.name!r} multiplies {len(inputs)} tensors; only two are written")
            nodes.append(helper.make_node("Mul", inputs, [out]))
        elif isinstance(layer, L.Rescaling):
            scale, offset = (np.asarray(v, np.float32) for v in (layer.scale, layer.offset))
            if scale.ndim or offset.ndim:
                raise CareError(f"ONNX export: rescaling {layer.name!r} has per-channel values; only scalars are written")
            scaled = f"{out}_scaled"
            nodes.append(helper.make_node("Mul", [inputs[0], const(f"{out}_scale", scale)], [scaled]))
            nodes.append(helper.make_node("Add", [scaled, const(f"{out}_offset", offset)], [out]))
        else:
            raise CareError(f"ONNX export: layer {layer.name!r} of type {kind} has no ONNX writer "
                            "(Conv, MaxPooling, UpSampling, Concatenate, Add, Multiply and Rescaling have)")
        if len(outputs) != 1:
            raise CareError(f"ONNX export: layer {layer.name!r} has {len(outputs)} outputs")
        value_of[id(outputs[0])] = out
    nodes.append(helper.make_node("Transpose", [value_of[id(plain.outputs[0])]], ["output"],
                                  perm=[0, *range(2, nd + 2), 1]))

    spatial = list(SPATIAL_NAMES[nd])
    n_out = int(plain.outputs[0].shape[-1])
    graph = helper.make_graph(
        nodes, plain.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *spatial, int(n_channel_in)])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", *spatial, n_out])],
        initializer=weights)
    model = helper.make_model(graph, producer_name="carecore", opset_imports=[helper.make_opsetid("", int(opset))])
    model.ir_version = helper.find_min_ir_version_for(model.opset_import)   # not this onnx's newest: older readers
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def _conv(layer, cfg, x, out, nd, const, helper):
    """The ONNX nodes of a Keras convolution (stride 1, no dilation, one group)."""
    for key in ("strides", "dilation_rate"):
        if tuple(cfg[key]) != (1,) * nd:
            raise CareError(f"ONNX export: convolution {layer.name!r} has {key} {tuple(cfg[key])}; only 1 is written")
    if cfg.get("groups", 1) != 1:
        raise CareError(f"ONNX export: convolution {layer.name!r} has {cfg['groups']} groups; only 1 is written")
    act = cfg["activation"]
    ops = {"linear": None, "relu": "Relu", "softplus": "Softplus"}
    if not isinstance(act, str) or act not in ops:
        raise CareError(f"ONNX export: convolution {layer.name!r} has activation {act!r}; "
                        f"only {sorted(ops)} are written")
    kernel, *bias = [np.asarray(w, np.float32) for w in layer.get_weights()]
    size = kernel.shape[:nd]
    if cfg["padding"] == "same":   # TensorFlow pads (k - 1) // 2 before and the rest after
        pads = [(k - 1) // 2 for k in size] + [k - 1 - (k - 1) // 2 for k in size]
    elif cfg["padding"] == "valid":
        pads = [0] * (2 * nd)
    else:
        raise CareError(f"ONNX export: convolution {layer.name!r} has padding {cfg['padding']!r}")
    inputs = [x, const(f"{out}_kernel", np.transpose(kernel, (nd + 1, nd, *range(nd))))]  # (out, in, spatial...)
    if bias:
        inputs.append(const(f"{out}_bias", bias[0]))
    conv_out = out if ops[act] is None else f"{out}_linear"
    nodes = [helper.make_node("Conv", inputs, [conv_out], kernel_shape=list(size), pads=pads,
                              strides=[1] * nd, dilations=[1] * nd)]
    if ops[act] is not None:
        nodes.append(helper.make_node(ops[act], [conv_out], [out]))
    return nodes

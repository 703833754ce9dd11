"""carecore's U-Net rebuilt from standard Keras layers only, with its weights.

A carecore network uses two layers of its own (:class:`~carecore.models.unet.Bias`, a bias kept
apart from its convolution, and :class:`~carecore.models.unet.UpsampleConcatConv`, the up path's
upsample + concatenate + convolution computed on the coarse grid). Outside carecore (a bioimage.io
package opened in Fiji, KNIME or ``keras.models.load_model``) those classes are unknown, so the
exported network is the same function written with ``ConvND(use_bias=True)``, ``UpSamplingND``,
``Concatenate``, ``Add`` and ``Rescaling``: every variable is the same array, so both networks
compute the same output up to float32 rounding. This is also CSBDeep's layout (its U-Net is the
same network), which :mod:`carecore.export.csbdeep` relies on.

The convolutions of both networks are addressed by carecore's layer names (:func:`conv_names`).
"""
from __future__ import annotations

import numpy as np

from ..errors import CareError


def conv_names(config):
    """The network's convolutions in build order: ``down{l}_conv{j}``, ``middle_conv{j}``,
    ``up{l}_conv{j}`` (deepest level first), ``head_mean`` and, if probabilistic, ``head_scale``."""
    n, depth = config.unet_n_conv, config.unet_depth
    names = [f"down{lv}_conv{j}" for lv in range(depth) for j in range(n)]
    names += [f"middle_conv{j}" for j in range(n)]
    names += [f"up{lv}_conv{j}" for lv in reversed(range(depth)) for j in range(n)]
    names.append("head_mean")
    if config.probabilistic:
        names.append("head_scale")
    return names


def care_conv_weights(model):
    """``{name: (kernel, bias)}`` of a carecore model's convolutions (float32 arrays)."""
    km = model.keras_model
    out = {}
    for name in conv_names(model.config):
        layer = km.get_layer(name)
        if name.startswith("head_"):
            kernel, bias = layer.get_weights()
        else:
            (kernel,), (bias,) = layer.get_weights(), km.get_layer(f"{name}_bias").get_weights()
        out[name] = (np.asarray(kernel, np.float32), np.asarray(bias, np.float32))
    return out


def set_care_conv_weights(model, weights):
    """Put ``{name: (kernel, bias)}`` into a carecore model, checking every name and shape."""
    km = model.keras_model
    for name in conv_names(model.config):
        if name not in weights:
            raise CareError(f"no weights for convolution {name!r} (got {sorted(weights)})")
        kernel, bias = weights[name]
        layer = km.get_layer(name)
        targets = layer.weights if name.startswith("head_") else layer.weights + km.get_layer(f"{name}_bias").weights
        for value, var in zip((kernel, bias), targets):
            if tuple(np.shape(value)) != tuple(var.shape):
                raise CareError(f"convolution {name!r}: weights of shape {tuple(np.shape(value))} do not fit the "
                                f"network's {var.path} of shape {tuple(var.shape)}")
        if name.startswith("head_"):
            layer.set_weights([kernel, bias])
        else:
            layer.set_weights([kernel])
            km.get_layer(f"{name}_bias").set_weights([bias])


def build_plain_unet(config, weights=None, *, name="care_unet_plain"):
    """The network of ``config`` from standard Keras layers (float32), optionally with ``weights``.

    Parameters
    ----------
    config : CareConfig
        A plain CARE configuration (any precision: the plain network computes in float32).
    weights : dict, optional
        ``{conv name: (kernel, bias)}`` as :func:`care_conv_weights` returns.

    Returns
    -------
    keras.Model
        (batch, *spatial, C_in) -> (batch, *spatial, C_out [mean, then scale if probabilistic]).

    Examples
    --------
    >>> plain = build_plain_unet(model.config, care_conv_weights(model))   # doctest: +SKIP
    """
    import keras
    from keras import layers

    nd = config.ndim
    Conv = layers.Conv2D if nd == 2 else layers.Conv3D
    Pool = layers.MaxPooling2D if nd == 2 else layers.MaxPooling3D
    Up = layers.UpSampling2D if nd == 2 else layers.UpSampling3D
    f, depth, n_conv, k = config.unet_filters, config.unet_depth, config.unet_n_conv, config.kernel
    conv = lambda n, nm: Conv(n, k, padding="same", activation="relu", name=nm)  # noqa: E731

    inp = keras.Input((None,) * nd + (config.n_channel_in,), name="input")
    x, skips = inp, []
    for level in range(depth):
        for j in range(n_conv):
            x = conv(f * 2**level, f"down{level}_conv{j}")(x)
        skips.append(x)
        x = Pool(2, name=f"down{level}_pool")(x)
    for j in range(n_conv):
        x = conv(f * 2 ** (depth if j < n_conv - 1 else max(0, depth - 1)), f"middle_conv{j}")(x)
    for level in reversed(range(depth)):
        x = layers.Concatenate(name=f"up{level}_concat")([Up(2, name=f"up{level}_upsample")(x), skips[level]])
        for j in range(n_conv):
            x = conv(f * 2 ** (max(0, level - 1) if j == n_conv - 1 else level), f"up{level}_conv{j}")(x)
    mu = Conv(config.n_channel_out, 1, name="head_mean")(x)
    if config.residual:
        mu = layers.Add(name="residual")([mu, _smoothed(config, inp, Conv)])
    mu = _smoothed_output(config, mu, Conv)
    out = mu
    if config.probabilistic:
        b = Conv(config.n_channel_out, 1, activation="softplus", name="head_scale")(x)
        b = layers.Rescaling(1.0, offset=1e-3, name="scale")(b)  # the Laplace scale softplus(.) + 1e-3
        out = layers.Concatenate(name="mean_scale")([mu, b])
    model = keras.Model(inp, out, name=name)
    if weights is not None:
        for nm in conv_names(config):
            if nm not in weights:
                raise CareError(f"no weights for convolution {nm!r} (got {sorted(weights)})")
            layer = model.get_layer(nm)
            for value, var in zip(weights[nm], layer.weights):
                if tuple(np.shape(value)) != tuple(var.shape):
                    raise CareError(f"convolution {nm!r}: weights of shape {tuple(np.shape(value))} do not fit "
                                    f"{var.path} of shape {tuple(var.shape)}")
            layer.set_weights(list(weights[nm]))
    return model


def _diagonal_conv(Conv, c, size, taps, name):
    """A fixed convolution of kernel ``size`` applying ``taps`` to each of ``c`` channels on its own."""
    layer = Conv(c, size, padding="same", use_bias=False, trainable=False, name=name)
    kernel = np.zeros(size + (c, c), np.float32)
    for ch in range(c):
        kernel[..., ch, ch] = taps.reshape(size)
    return layer, kernel


def _smoothed_output(config, mu, Conv):
    """The mean smoothed by ``output_sigma`` as :func:`carecore.prediction.smoothing.smooth` does it: along
    each axis, the zero-padded Gaussian plus the mean times one minus the Gaussian of ones (the taps
    beyond the border give their weight to the centre pixel). Fixed layers; ``mu`` unchanged without it."""
    from keras import layers

    from ..models.unet import gaussian_taps
    from ..prediction.smoothing import output_radius

    sigma = config.output_sigma
    if not output_radius(sigma):
        return mu
    nd, c = config.ndim, config.n_channel_out
    taps = gaussian_taps(float(sigma))
    ones = Conv(c, 1, trainable=False, name="out_ones")
    one = ones(mu)
    ones.set_weights([np.zeros((1,) * nd + (c, c), np.float32), np.ones(c, np.float32)])
    x = mu
    for axis in range(nd):
        size = tuple(len(taps) if a == axis else 1 for a in range(nd))
        smooth, kernel = _diagonal_conv(Conv, c, size, taps, f"out_smooth{axis}")
        inside, _ = _diagonal_conv(Conv, c, size, taps, f"out_inside{axis}")
        smoothed, weight = smooth(x), inside(one)
        smooth.set_weights([kernel])
        inside.set_weights([kernel])
        keep = layers.Rescaling(-1.0, offset=1.0, name=f"out_keep{axis}")(weight)
        x = layers.Add(name=f"out_smoothed{axis}")([smoothed, layers.Multiply(name=f"out_kept{axis}")([keep, x])])
    return x


def _smoothed(config, inp, Conv):
    """The residual base: the input, or its Gaussian smoothing (``residual_sigma``) as fixed, separable
    convolutions (one per axis, channel by channel, zeros beyond the borders as carecore's layer), then
    the gain and offset of ``residual_affine`` as a fixed 1×1 convolution."""
    from ..models.unet import gaussian_taps, smoothing_radius

    nd, c = config.ndim, config.n_channel_in
    x = inp
    if smoothing_radius(config):
        taps = gaussian_taps(config.residual_sigma)
        for axis in range(nd):
            size = tuple(len(taps) if a == axis else 1 for a in range(nd))
            layer, kernel = _diagonal_conv(Conv, c, size, taps, f"smooth{axis}")
            x = layer(x)
            layer.set_weights([kernel])
    if config.residual_affine:
        layer = Conv(c, 1, trainable=False, name="base_affine")
        x = layer(x)
        kernel = np.zeros((1,) * nd + (c, c), np.float32)
        for ch, (gain, _) in enumerate(config.residual_affine):
            kernel[..., ch, ch] = gain
        layer.set_weights([kernel, np.array([o for _, o in config.residual_affine], np.float32)])
    return x

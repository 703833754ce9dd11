"""The residual U-Net of CARE in 2D and 3D (CSBDeep's defaults, CARE-NOTES §2), Keras 3 only.

2D and 3D differ only in the layer classes picked from the number of dimensions. With the default
configuration the 2D network has 922,977 parameters (kernel 5) and the 3D network 996,769 (kernel 3),
as CSBDeep's. The probabilistic head adds a 1×1 convolution for the Laplace scale
``b = softplus(.) + 1e-3``; the output then holds ``[mu..., b...]`` along the channel axis.
"""
from __future__ import annotations

import itertools

import keras
import numpy as np
from keras import layers, ops

from .config import CareConfig


def _layers(ndim):
    if ndim == 2:
        return layers.Conv2D, layers.MaxPooling2D
    return layers.Conv3D, layers.MaxPooling3D


def _phase_taps(k):
    """How a 'same' convolution of odd size ``k`` after nearest 2× upsampling reads the coarse grid.

    Fine output ``2i + p`` (phase ``p``) sees fine inputs ``2i + p + t - r`` (``r = k // 2``), i.e.
    coarse inputs ``i + (p + t - r) // 2``. Returns ``M`` of shape (2, L, k) summing the ``k`` fine
    taps into ``L`` coarse taps per phase, and each phase's first coarse offset ``lo[p]``.
    """
    r = k // 2
    offsets = [[(p + t - r) // 2 for t in range(k)] for p in (0, 1)]
    lo = [min(o) for o in offsets]
    L = max(max(o) - min(o) + 1 for o in offsets)
    M = np.zeros((2, L, k), np.float32)
    for p in (0, 1):
        for t in range(k):
            M[p, offsets[p][t] - lo[p], t] = 1
    return M, lo


def _zero_pad(x, pad):
    """Zeros around every spatial axis of (batch, *spatial, C), ``pad = (before, after)``.

    By concatenation rather than ``ops.pad``: TensorFlow's graph optimizer folds a ``Pad`` into the
    convolution that follows it and then fails on the gradient graph that still reads the pad
    ("remapper failed: fanout ... exist for missing node"), which silently drops every other
    fusion of the training step (measured: all convolutions lose their fused bias and ReLU).
    """
    for axis in range(1, len(x.shape) - 1):
        before = [ops.zeros(_with(ops.shape(x), axis, pad[0]), x.dtype)] if pad[0] else []
        after = [ops.zeros(_with(ops.shape(x), axis, pad[1]), x.dtype)] if pad[1] else []
        x = ops.concatenate(before + [x] + after, axis=axis)
    return x


def _with(shape, axis, n):
    shape = list(shape)
    shape[axis] = n
    return tuple(shape)


class UpsampleConcatConv(layers.Layer):
    """``conv(concat([upsample2(a), skip]))`` of the U-Net's up path without the upsampled tensor.

    Same kernel, same result as nearest 2× upsampling of ``a``, concatenation with ``skip`` and a
    'same' convolution without bias, but the part of the kernel that reads the upsampled channels
    is applied on the coarse grid (polyphase): each of the ``2^d`` output phases of a size-``k``
    convolution on an upsampled image is a size-``L`` convolution of the coarse image with summed
    taps (``L = 2`` for ``k = 3``, 3 for ``k = 5``). All phases come from one 'valid' convolution of
    the padded coarse input with ``2^d · filters`` output channels, interleaved by a reshape and a
    transpose. For the default 3D network this computes 8 instead of 27 taps per voxel for half of
    the level's input channels, and the upsampled and concatenated tensors never exist.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        a_shape, s_shape = input_shape
        nd = len(a_shape) - 2
        self.ndim, self.n_up = nd, int(a_shape[-1])
        k = self.kernel_size
        # not autocast: the phase kernels are sums of taps, formed in float32 before the cast
        self.kernel = self.add_weight(shape=(k,) * nd + (self.n_up + int(s_shape[-1]), self.filters),
                                      initializer="glorot_uniform", name="kernel", autocast=False)
        M, lo = _phase_taps(k)
        L = M.shape[1]
        # Coarse output j of the 'valid' convolution reads coarse inputs j - pad_left + (0..L-1), so
        # phase p at coarse i is output j = i + lo[p] - min(lo). Order the phases along the new axis
        # (q) so that 2 j + q = fine index + shift, with one shift for both phases.
        self._pad = (-min(lo), max(lo) + L - 1)
        q = next(q for q in ((0, 1), (1, 0)) if len({2 * (lo[p] - min(lo)) + q[p] - p for p in (0, 1)}) == 1)
        self._shift = 2 * (lo[0] - min(lo)) + q[0]
        T = np.zeros((2,) * nd + (L,) * nd + (k,) * nd, np.float32)
        for phases in itertools.product((0, 1), repeat=nd):
            t = M[phases[0]]
            for p in phases[1:]:
                t = np.multiply.outer(t, M[p])  # axes (L, k, L, k, ...)
            T[tuple(q[p] for p in phases)] = t.transpose([2 * i for i in range(nd)] + [2 * i + 1 for i in range(nd)])
        self._phase_matrix = T.reshape(2**nd * L**nd, k**nd)
        self._L = L

    def call(self, inputs):
        a, skip = inputs
        nd, k, L, co, ca = self.ndim, self.kernel_size, self._L, self.filters, self.n_up
        w_up, w_skip = ops.split(ops.cast(self.kernel, "float32"), [ca], axis=-2)
        w_up = ops.reshape(w_up, (k**nd, ca * co))
        # (phases·L^d, k^d) @ (k^d, ca·co) -> kernel (L..., ca, phases·co)
        kp = ops.matmul(ops.convert_to_tensor(self._phase_matrix, "float32"), w_up)
        kp = ops.reshape(kp, (2**nd, L**nd, ca, co))
        kp = ops.reshape(ops.transpose(kp, (1, 2, 0, 3)), (L,) * nd + (ca, 2**nd * co))
        kp, w_skip = ops.cast(kp, self.compute_dtype), ops.cast(w_skip, self.compute_dtype)
        p = ops.conv(_zero_pad(a, self._pad), kp, padding="valid")
        n = ops.shape(p)
        m = [n[1 + i] for i in range(nd)]
        p = ops.reshape(p, (n[0], *m) + (2,) * nd + (co,))
        p = ops.transpose(p, [0] + [j for i in range(nd) for j in (1 + i, 1 + nd + i)] + [1 + 2 * nd])
        p = ops.reshape(p, (n[0], *[2 * mi for mi in m], co))
        # crop to the skip's grid (a plain slice: its gradient is a pad, a strided slice's a scatter)
        size = ops.shape(skip)
        p = ops.slice(p, (0,) + (self._shift,) * nd + (0,), (n[0], *size[1:-1], co))
        return p + ops.conv(skip, w_skip, padding="same")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1][:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}


class Bias(layers.Layer):
    """Adds a per-channel bias (a float32 variable).

    Separate from the convolution on purpose: TensorFlow's CPU kernel for a convolution's bias
    gradient (``BiasAddGrad``) sums in bfloat16 when the layer computes in bfloat16, which swamps a
    sum over ~10^5 pixels (measured: 0.008 instead of 0.98) and stalls training. Broadcasting the
    bias here makes its gradient an ordinary reduction, which accumulates in float32.
    """

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, x):
        return x + ops.cast(self.bias, x.dtype)


def smoothing_radius(config: CareConfig):
    """Half-width (pixels) of the Gaussian kernel of ``config.residual_sigma`` (0 without smoothing)."""
    sigma = config.residual_sigma
    if not sigma or sigma == "auto":
        return 0
    return int(np.ceil(3 * sigma))


def gaussian_taps(sigma):
    """The normalized 1D Gaussian kernel of ``sigma`` pixels, truncated at 3 sigma (float32)."""
    r = int(np.ceil(3 * sigma))
    t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (t / t.sum()).astype(np.float32)


class GaussianSmooth(layers.Layer):
    """A fixed Gaussian filter along every spatial axis of (batch, *spatial, C), channel by channel.

    Separable (one 1D convolution per axis), zeros beyond the borders (as the network's own
    convolutions), float32. The base a residual network with ``residual_sigma`` adds its correction to.
    """

    def __init__(self, sigma, **kwargs):
        super().__init__(**kwargs)
        self.sigma = float(sigma)

    def call(self, x):
        x = ops.cast(x, "float32")
        taps = gaussian_taps(self.sigma)
        shape = ops.shape(x)
        nd = len(x.shape) - 2
        # channels into the batch: one single-channel convolution per axis
        y = ops.reshape(ops.moveaxis(x, -1, 1), (-1, *shape[1:-1], 1))
        for axis in range(nd):
            k = taps.reshape([len(taps) if a == axis else 1 for a in range(nd)] + [1, 1])
            y = ops.conv(y, ops.convert_to_tensor(k), padding="same")
        return ops.moveaxis(ops.reshape(y, (shape[0], shape[-1], *shape[1:-1])), 1, -1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}


class BaseAffine(layers.Layer):
    """A fixed gain and offset per channel of (batch, *spatial, C), float32: puts a residual network's base
    in its targets' units (``residual_affine``)."""

    def __init__(self, affine, **kwargs):
        super().__init__(**kwargs)
        self.affine = [[float(g), float(o)] for g, o in affine]

    def call(self, x):
        a = np.asarray(self.affine, np.float32)
        return ops.cast(x, "float32") * ops.convert_to_tensor(a[:, 0]) + ops.convert_to_tensor(a[:, 1])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "affine": self.affine}


class _Layers:
    """Hands out the network's layers by name: new ones while building the network, the model's own
    (same weights) when a part of it is wired again as a prediction stage."""

    def __init__(self, model=None):
        self.model = model

    def __call__(self, name, make):
        return make(name) if self.model is None else self.model.get_layer(name)


def _conv(L, config, n, x, name, dtype=None, skip=None):
    """Convolution (or upsample + concatenate ``skip`` + convolution), bias, ReLU."""
    Conv, _ = _layers(config.ndim)
    dtype = dtype or config.precision
    k = config.kernel
    if skip is None:
        x = L(name, lambda nm: Conv(n, k, padding="same", use_bias=False, dtype=dtype, name=nm))(x)
    else:
        x = L(name, lambda nm: UpsampleConcatConv(n, k, dtype=dtype, name=nm))([x, skip])
    x = L(f"{name}_bias", lambda nm: Bias(dtype=dtype, name=nm))(x)
    return L(f"{name}_relu", lambda nm: layers.Activation("relu", dtype=dtype, name=nm))(x)


def _encode0(L, config, x):
    """Level 0 of the down path: input -> (skip0, p0 = pool(skip0))."""
    _, Pool = _layers(config.ndim)
    for j in range(config.unet_n_conv):
        x = _conv(L, config, config.unet_filters, x, f"down0_conv{j}")
    return x, L("down0_pool", lambda nm: Pool(2, dtype=config.precision, name=nm))(x)


def _deep(L, config, x):
    """Everything below level 0: p0 -> u1, the input of level 0's up path (half resolution)."""
    _, Pool = _layers(config.ndim)
    f, depth, n_conv = config.unet_filters, config.unet_depth, config.unet_n_conv
    skips = [None]
    for level in range(1, depth):
        for j in range(n_conv):
            x = _conv(L, config, f * 2**level, x, f"down{level}_conv{j}")
        skips.append(x)
        x = L(f"down{level}_pool", lambda nm: Pool(2, dtype=config.precision, name=nm))(x)
    # TensorFlow's bfloat16 3D kernel-gradient returns inf where a side is 2 voxels (measured on
    # CPU), which the bottom level of small training patches reaches: the bottom then runs in float32.
    bottom = config.precision
    if config.ndim == 3 and bottom != "float32" and min(config.patch_size) // 2**depth < 3:
        bottom = "float32"
    for j in range(n_conv - 1):
        x = _conv(L, config, f * 2**depth, x, f"middle_conv{j}", bottom)
    x = _conv(L, config, f * 2 ** max(0, depth - 1), x, f"middle_conv{n_conv - 1}", bottom)
    for level in reversed(range(1, depth)):
        x = _up_level(L, config, level, x, skips[level])
    return x


def _up_level(L, config, level, x, skip):
    for j in range(config.unet_n_conv):
        last = j == config.unet_n_conv - 1
        n = config.unet_filters * 2 ** (max(0, level - 1) if last else level)
        x = _conv(L, config, n, x, f"up{level}_conv{j}", skip=skip)
        skip = None
    return x


def _decode0(L, config, u1, skip0, inp):
    """Level 0 of the up path and the heads: (u1, skip0, input) -> output."""
    Conv, _ = _layers(config.ndim)
    policy = config.precision
    x = _up_level(L, config, 0, u1, skip0)
    # The 1×1 heads compute in the network's precision (casting 32 feature channels to float32
    # would cost a full-resolution copy); their few output channels, the residual sum and the
    # Laplace scale are float32.
    smooth = smoothing_radius(config) > 0
    # on a smoothed (or fitted) base the correction starts at zero: the untrained network answers with
    # the filter, in the targets' units
    init = "zeros" if smooth or config.residual_affine else "glorot_uniform"
    mu = L("head_mean", lambda nm: Conv(config.n_channel_out, 1, activation="linear", dtype=policy,
                                        kernel_initializer=init, name=nm))(x)
    mu = L("head_mean_float32", lambda nm: layers.Activation("linear", dtype="float32", name=nm))(mu)
    if config.residual:
        base = ops.cast(inp, "float32")
        if smooth:
            base = L("smooth", lambda nm: GaussianSmooth(config.residual_sigma, dtype="float32", name=nm))(inp)
        if config.residual_affine:
            base = L("base_affine", lambda nm: BaseAffine(config.residual_affine, dtype="float32", name=nm))(base)
        mu = L("residual", lambda nm: layers.Add(dtype="float32", name=nm))([mu, base])
    if not config.probabilistic:
        return mu
    # the scale's head reads the features held fixed: its loss (the NLL) trains the head alone, and
    # the features and the mean learn as a plain network's (losses.laplace_split)
    b = L("head_scale", lambda nm: Conv(config.n_channel_out, 1, activation="linear", dtype=policy, name=nm))(
        ops.stop_gradient(x))
    b = L("scale", lambda nm: layers.Activation(lambda t: ops.softplus(ops.cast(t, "float32")) + 1e-3,
                                                dtype="float32", name=nm))(b)
    return L("mean_scale", lambda nm: layers.Concatenate(dtype="float32", name=nm))([mu, b])


def build_unet(config: CareConfig, *, name="care_unet"):
    """A Keras model mapping (batch, *spatial, C_in) to (batch, *spatial, C_out [× 2 if probabilistic])."""
    L = _Layers()
    inp = keras.Input((None,) * config.ndim + (config.n_channel_in,), name="input")
    skip0, x = _encode0(L, config, inp)
    return keras.Model(inp, _decode0(L, config, _deep(L, config, x), skip0, inp), name=name)


def unet_stages(model, config: CareConfig):
    """The network of ``model`` as three prediction stages sharing its layers (and weights).

    See :mod:`carecore.prediction.staged`: ``encode0`` (input -> skip0, p0), ``deep`` (p0 -> u1) and
    ``decode0`` (u1, skip0, input -> output). Halos: the level-0 convolutions of either side see
    ``n_conv · (k // 2)`` voxels; the deep part sees the rest of the receptive field.
    """
    from ..prediction.staged import Stage

    L = _Layers(model)
    nd, f = config.ndim, config.unet_filters
    dtype = "float32" if config.precision == "float32" else "bfloat16"
    item = 4 if dtype == "float32" else 2
    grid = (None,) * nd
    n_out = config.n_channel_out * (2 if config.probabilistic else 1)
    level0 = config.unet_n_conv * (config.kernel // 2)

    inp = keras.Input(grid + (config.n_channel_in,), name="input")
    skip0, p0 = _encode0(L, config, inp)
    encode = keras.Model(inp, [skip0, p0], name="encode0")
    p_in = keras.Input(grid + (f,), dtype=dtype, name="p0")
    deep = keras.Model(p_in, _deep(L, config, p_in), name="deep")
    u_in = keras.Input(grid + (f,), dtype=dtype, name="u1")
    s_in = keras.Input(grid + (f,), dtype=dtype, name="skip0")
    x_in = keras.Input(grid + (config.n_channel_in,), name="input")
    decode = keras.Model([u_in, s_in, x_in], _decode0(L, config, u_in, s_in, x_in), name="decode0")
    # Working memory per voxel of a tile, in level-0 feature maps (f values each): measured as the
    # resident-set rise of one tile on CPU with TensorFlow, default 3D network (bfloat16, float32 for
    # decode0), tiles of 1-2 M voxels: encode0 3.2-3.4 maps, deep 1.2-1.6, decode0 6.5-6.6 (its
    # polyphase up-convolution, interleave, skip convolution and sum are alive together).
    fs = f * item
    return (
        Stage("encode0", encode, (("input", 0),), (("skip0", 0, f, item), ("p0", 1, f, item)),
              halo=level0, divisor=2, bytes_per_voxel=4 * fs + 4 * config.n_channel_in),
        Stage("deep", deep, (("p0", 1),), (("u1", 1, f, item),),
              halo=receptive_radius(config) - 2 * level0 - 1, divisor=config.divisor, bytes_per_voxel=2 * fs),
        Stage("decode0", decode, (("u1", 1), ("skip0", 0), ("input", 0)), (("output", 0, n_out, 4),),
              halo=max(level0, smoothing_radius(config)), divisor=2, bytes_per_voxel=7 * fs + 8 * n_out),
    )


def receptive_radius(config: CareConfig):
    """Theoretical half-width (pixels) of the receptive field: how far a pixel's output can look."""
    r = (config.kernel - 1) // 2
    total = 0
    for level in range(config.unet_depth):
        total += 2 * config.unet_n_conv * r * 2**level  # down and up convolutions of this level
        total += 2**level  # pooling / upsampling offset
    total += config.unet_n_conv * r * 2**config.unet_depth
    return total

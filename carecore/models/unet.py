"""The residual U-Net of CARE in 2D and 3D (CSBDeep's defaults, CARE-NOTES §2), Keras 3 only.

2D and 3D differ only in the layer classes picked from the number of dimensions. With the default
configuration the 2D network has 922,977 parameters (kernel 5) and the 3D network 996,769 (kernel 3),
as CSBDeep's. The probabilistic head adds a 1×1 convolution for the Laplace scale
``b = softplus(.) + 1e-3``; the output then holds ``[mu..., b...]`` along the channel axis.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .config import CareConfig


def _layers(ndim):
    if ndim == 2:
        return layers.Conv2D, layers.MaxPooling2D, layers.UpSampling2D
    return layers.Conv3D, layers.MaxPooling3D, layers.UpSampling3D


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


def build_unet(config: CareConfig, *, name="care_unet"):
    """A Keras model mapping (batch, *spatial, C_in) to (batch, *spatial, C_out [× 2 if probabilistic])."""
    Conv, Pool, Up = _layers(config.ndim)
    policy = config.precision
    k = config.kernel

    def conv(n, x, nm, dtype=policy):
        x = Conv(n, k, padding="same", use_bias=False, dtype=dtype, name=nm)(x)
        x = Bias(dtype=dtype, name=f"{nm}_bias")(x)
        return layers.Activation("relu", dtype=dtype, name=f"{nm}_relu")(x)
    inp = keras.Input((None,) * config.ndim + (config.n_channel_in,), name="input")
    x = inp
    skips = []
    for level in range(config.unet_depth):
        for j in range(config.unet_n_conv):
            x = conv(config.unet_filters * 2**level, x, f"down{level}_conv{j}")
        skips.append(x)
        x = Pool(2, dtype=policy, name=f"down{level}_pool")(x)
    # TensorFlow's bfloat16 3D kernel-gradient returns inf where a side is 2 voxels (measured on
    # CPU), which the bottom level of small training patches reaches: the bottom then runs in float32.
    bottom = policy
    if config.ndim == 3 and policy != "float32" and min(config.patch_size) // 2**config.unet_depth < 3:
        bottom = "float32"
    for j in range(config.unet_n_conv - 1):
        x = conv(config.unet_filters * 2**config.unet_depth, x, f"middle_conv{j}", bottom)
    x = conv(config.unet_filters * 2 ** max(0, config.unet_depth - 1), x, f"middle_conv{config.unet_n_conv - 1}",
             bottom)
    for level in reversed(range(config.unet_depth)):
        x = Up(2, dtype=policy, name=f"up{level}_upsample")(x)
        x = layers.Concatenate(dtype=policy, name=f"up{level}_concat")([x, skips[level]])
        for j in range(config.unet_n_conv - 1):
            x = conv(config.unet_filters * 2**level, x, f"up{level}_conv{j}")
        x = conv(config.unet_filters * 2 ** max(0, level - 1), x, f"up{level}_conv{config.unet_n_conv - 1}")
    # The 1×1 heads compute in the network's precision (casting 32 feature channels to float32
    # would cost a full-resolution copy); their few output channels, the residual sum and the
    # Laplace scale are float32.
    mu = Conv(config.n_channel_out, 1, activation="linear", dtype=policy, name="head_mean")(x)
    mu = layers.Activation("linear", dtype="float32", name="head_mean_float32")(mu)
    if config.residual:
        mu = layers.Add(dtype="float32", name="residual")([mu, ops.cast(inp, "float32")])
    if config.probabilistic:
        b = Conv(config.n_channel_out, 1, activation="linear", dtype=policy, name="head_scale")(x)
        b = layers.Activation(lambda t: ops.softplus(ops.cast(t, "float32")) + 1e-3, dtype="float32", name="scale")(b)
        out = layers.Concatenate(dtype="float32", name="mean_scale")([mu, b])
    else:
        out = mu
    return keras.Model(inp, out, name=name)


def receptive_radius(config: CareConfig):
    """Theoretical half-width (pixels) of the receptive field: how far a pixel's output can look."""
    r = (config.kernel - 1) // 2
    total = 0
    for level in range(config.unet_depth):
        total += 2 * config.unet_n_conv * r * 2**level  # down and up convolutions of this level
        total += 2**level  # pooling / upsampling offset
    total += config.unet_n_conv * r * 2**config.unet_depth
    return total

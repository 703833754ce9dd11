"""A network that stopped learning, found after an epoch and started again from new weights.

A step at a high learning rate can push every unit of a ReLU layer below zero for every input. No gradient
reaches the layers below it again, and the network answers every image with its residual base plus a
constant: a smoothed-input model becomes the Gaussian filter it started from (times its gain plus
offset, ``residual_affine``), without any error. Measured
with the 3-minute recipe on the BPAE nuclei at 5 photons (2 cores): in 2 of 28 full runs, and in 1 of 16
first epochs, the last feature layer (``up0_conv1``) was inactive on every validation pixel after the
first epoch, and stayed so. A random (not zero) mean head, or leaky ReLUs, did not prevent it in first-epoch
trials (the leaky network's loss blew up instead); clipping the gradient's norm showed no death in 10 first
epochs, too few runs to tell it from chance.

So training looks, after every epoch, at the features the mean head reads on a few validation patches
(:meth:`Revival.dead`). When each channel is one number at every pixel, the network no longer depends on
its input, and it starts again (:meth:`Revival.restart`) from new weights (another seed) and a fresh
optimizer, with the learning-rate schedule (its warm-up included) started again over the time or steps
left, at most :data:`MAX_RESTARTS` times and while at least :data:`MIN_LEFT` of the whole training is
left; otherwise the run's message says so, once. The best weights are still chosen by validation loss over
the whole run, the dead epochs included, and the message says when they are from before a restart.
"""
from __future__ import annotations

import numpy as np

#: Restarts of one training at most.
MAX_RESTARTS = 2
#: The share of the training (steps or budget) that must be left for a restart.
MIN_LEFT = 0.25
#: Validation patches the check runs on.
PROBE_PATCHES = 16


def _feature_chain(model):
    """Models that, run one after another, map ``model``'s input to the features its mean head reads
    (the head's input); the head may sit in a nested model (a projection's ``unet2d``). None without a
    mean head."""
    import keras

    try:
        head = model.get_layer("head_mean")
    except ValueError:
        head = None
    if head is not None:
        return [keras.Model(model.input, head.input)]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = _feature_chain(layer)
            # the tensor the nested model is called on in this model (its own ``input`` is its inside's)
            nodes = getattr(layer, "_inbound_nodes", None) or []
            if inner and nodes and len(nodes[0].input_tensors) == 1:
                return [keras.Model(model.input, nodes[0].input_tensors[0])] + inner
    return None


class Revival:
    """The dead-network check and restart of one training of ``care`` (a :class:`~carecore.CARE`)."""

    def __init__(self, care, X_val, seed):
        self.care = care
        self.seed = int(seed)
        self.X = np.asarray(X_val[:PROBE_PATCHES], np.float32)
        self.chain = _feature_chain(care.keras_model)

    def dead(self):
        """True when every feature channel the mean head reads is one number at every pixel of the probe
        patches: the output then depends on the input only through the residual base. (Exact: a dead
        ReLU layer gives zeros, and what follows it a constant; a live one, even untrained, varies.)"""
        if not self.chain or len(self.X) == 0:
            return False
        x = self.X
        for m in self.chain:
            x = m.predict_on_batch(x)
        f = np.asarray(x, np.float32)
        return bool(np.all(np.ptp(f.reshape(-1, f.shape[-1]), axis=0) == 0))

    def restart(self, k):
        """New weights (seed ``seed + 1000 k``) and a fresh optimizer state; returns the new seed."""
        import keras

        seed = self.seed + 1000 * int(k)
        keras.utils.set_random_seed(seed)
        km = self.care.keras_model
        km.set_weights(self.care._build().get_weights())
        opt = km.optimizer
        lr = float(keras.ops.convert_to_numpy(opt.learning_rate))
        for v in opt.variables:   # Adam's moments and step count (its bias correction starts again)
            v.assign(np.zeros(tuple(v.shape), keras.backend.standardize_dtype(v.dtype)))
        opt.learning_rate.assign(lr)
        return seed

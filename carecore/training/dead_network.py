"""A network that stopped learning, found after an epoch and started again from new weights.

A step at a high learning rate can push every unit of a ReLU layer below zero for every input. No gradient
reaches the layers below it again, and the network answers every image with its residual base plus a
constant: a smoothed-input model becomes the Gaussian filter it started from, without any error. Measured
with the 3-minute recipe on the BPAE nuclei at 5 photons (2 cores): in 2 of 28 full runs, and in 1 of 16
first epochs, the last feature layer (``up0_conv1``) was inactive on every validation pixel after the
first epoch, and stayed so. A random (not zero) mean head, or leaky ReLUs, did not prevent it in first-epoch
trials (the leaky network's loss blew up instead); clipping the gradient's norm showed no death in 10 first
epochs, too few runs to tell it from chance.

So training looks, after every epoch, at the mean head's output on a few validation patches
(:meth:`Revival.dead`). When it is one number at every pixel, the network no longer depends on its input,
and it starts again (:meth:`Revival.restart`) from new weights (another seed) and a fresh optimizer, with
the time or steps left and a new warm-up, at most :data:`MAX_RESTARTS` times and while at least
:data:`MIN_LEFT` of the training is left. Otherwise the run's message says so. The best weights are still
chosen by validation loss over the whole run, the dead epochs included.
"""
from __future__ import annotations

import numpy as np

#: Restarts of one training at most.
MAX_RESTARTS = 2
#: The share of the training (steps or budget) that must be left for a restart.
MIN_LEFT = 0.25
#: Validation patches the check runs on.
PROBE_PATCHES = 16


class Revival:
    """The dead-network check and restart of one training of ``care`` (a :class:`~carecore.CARE`)."""

    def __init__(self, care, X_val, seed):
        import keras

        self.care = care
        self.seed = int(seed)
        self.X = np.asarray(X_val[:PROBE_PATCHES], np.float32)
        km = care.keras_model
        try:
            head = km.get_layer("head_mean")
        except ValueError:   # a network without a top-level mean head (e.g. a nested one): not checked
            self.probe = None
        else:
            self.probe = keras.Model(km.input, head.output)

    def dead(self):
        """True when the mean head gives one number per channel at every pixel of the probe patches."""
        if self.probe is None or len(self.X) == 0:
            return False
        out = np.asarray(self.probe.predict_on_batch(self.X), np.float32)
        spread = np.ptp(out.reshape(-1, out.shape[-1]), axis=0)
        return bool(np.all(spread <= 1e-6))

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

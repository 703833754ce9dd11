"""The training input pipeline: patches streamed from (memory-mapped) arrays, augmented, prefetched.

Batches are drawn by index from ``X``/``Y`` (which may be ``np.memmap``), so the patch set never has
to fit in RAM; a background thread (``tf.data`` prefetch) prepares the next batches while the
network trains. Augmentation: random flips of Y and X and random 90° rotations in the YX plane
(rotations only for square patches), the same for input and target.
"""
from __future__ import annotations

import numpy as np


def augment_batch(x, y, rng):
    """Flip/rotate each patch pair of a batch (channels-last, spatial axes ..., Y, X)."""
    x = x.copy()
    y = y.copy()
    square = x.shape[-3] == x.shape[-2]
    for i in range(len(x)):
        k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        fy, fx = rng.integers(2, size=2)
        xi, yi = x[i], y[i]
        if k:
            xi, yi = np.rot90(xi, k, axes=(-3, -2)), np.rot90(yi, k, axes=(-3, -2))
        if fy:
            xi, yi = xi[..., ::-1, :, :], yi[..., ::-1, :, :]
        if fx:
            xi, yi = xi[..., :, ::-1, :], yi[..., :, ::-1, :]
        x[i], y[i] = xi, yi
    return x, y


def batches(X, Y, batch_size, *, seed, augment):
    """An endless generator of (x, y) float32 batches in a seeded random order (epoch after epoch)."""
    rng = np.random.default_rng(seed)
    n = len(X)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = np.sort(order[start:start + batch_size])  # sorted: sequential reads from a memmap
            if len(idx) < batch_size:  # fewer patches than one batch: sample with replacement
                idx = np.sort(rng.integers(0, n, batch_size))
            x = np.asarray(X[idx], dtype=np.float32)
            y = np.asarray(Y[idx], dtype=np.float32)
            if augment:
                x, y = augment_batch(x, y, rng)
            yield x, y


def make_dataset(X, Y, batch_size, *, seed, augment, prefetch=4):
    """A prefetching ``tf.data.Dataset`` over :func:`batches` (endless; one generator, shared by its
    iterators), with tf.data's autotuning off (:func:`without_autotune`).

    Each element is one ``next()`` of the generator through ``tf.numpy_function`` (no
    ``Dataset.from_generator`` and its iterator finalizer). Autotuning is off because with it the
    end of ``fit`` intermittently stalled for 10-35 s after the last epoch, while the iterators were
    destroyed (issue 16: runs of a 180 s budget returned after 208-225 s; in 30-60 s runs of the 2D
    demo 2 of 9 stalled with autotuning, also without prefetching; 0 of 13 without autotuning).
    """
    import threading

    import tensorflow as tf

    source = batches(X, Y, batch_size, seed=seed, augment=augment)
    lock = threading.Lock()
    x_shape = (batch_size,) + tuple(X.shape[1:])
    y_shape = (batch_size,) + tuple(Y.shape[1:])

    def next_batch(_):
        with lock:
            return next(source)

    def load(i):
        x, y = tf.numpy_function(next_batch, [i], (tf.float32, tf.float32), stateful=True)
        x.set_shape(x_shape)
        y.set_shape(y_shape)
        return x, y

    ds = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat().map(load)  # sequential: in order
    return without_autotune(ds.prefetch(prefetch))


def without_autotune(ds):
    """``ds`` with tf.data's autotuning off (the buffer sizes given are used as they are)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)

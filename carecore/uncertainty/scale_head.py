"""The Laplace scale's head fitted to a trained network's features, its mean held fixed (CARE-NOTES §5).

A probabilistic network's mean learns as a plain network's, by MAE, and its scale's 1×1 head reads the
features held fixed (:func:`carecore.models.losses.laplace_split`). Trained that way alongside the mean,
the head moves a learning rate's step at a time and, in a few hundred steps, stays far from the errors'
size (measured on simulated nuclei, 200 steps: every interval too wide, ECE 0.48). After training the
head is a small problem of its own: ``C × (F + 1)`` numbers (``F`` feature channels, ``C`` output
channels) that minimize the Laplace negative log-likelihood of the *training* patches' errors, with the
features and the mean as the trained network gives them. :func:`fit_scale_head` solves it to the end.
"""
from __future__ import annotations

import numpy as np

#: at most this many training patches are read, and this many voxels of them used, for the fit
FIT_PATCHES = 64
FIT_VOXELS = 200_000


def _nll_and_grad(theta, F, err):
    """Mean ``|e| / b + log(2 b)``, ``b = softplus(F w + c) + 1e-3``, and its gradient in ``(w, c)``."""
    z = F @ theta[:-1] + theta[-1]
    b = np.logaddexp(0.0, z) + 1e-3
    nll = float(np.mean(err / b + np.log(2.0 * b)))
    dz = (1.0 / b - err / b**2) * (0.5 * (1.0 + np.tanh(0.5 * z))) / len(z)   # sigmoid(z) = d softplus / dz
    return nll, np.concatenate([F.T @ dz, [dz.sum()]])


def _probe(keras_model):
    """``(head, probe)``: the layer ``head_scale`` and ``probe(x) -> (its input, the network's output)``,
    also where the U-Net is a network nested last in ``keras_model`` (the projection network)."""
    import keras

    names = [layer.name for layer in keras_model.layers]
    if "head_scale" in names:
        head = keras_model.get_layer("head_scale")
        net = keras.Model(keras_model.inputs, [head.input, keras_model.outputs[0]])
        return head, net.predict_on_batch
    inner = keras_model.layers[-1]
    if not isinstance(inner, keras.Model):
        raise ValueError(f"{keras_model.name}: no layer 'head_scale' to fit (layers: {', '.join(names)})")
    head, probe = _probe(inner)
    pre = keras.Model(keras_model.inputs, inner._inbound_nodes[0].input_tensors)
    return head, lambda x: probe(pre.predict_on_batch(x))


def fit_scale_head(keras_model, X, Y, *, batch_size=8, seed=0):
    """Fit the weights of ``keras_model``'s layer ``head_scale`` to the patches ``X``, ``Y``.

    Parameters
    ----------
    keras_model : keras.Model
        A probabilistic network whose output holds ``[mean..., scale...]`` along its last axis and
        whose layer ``head_scale`` is a 1×1 convolution followed by ``softplus + 1e-3``.
    X, Y : ndarray
        Training patches (samples, *spatial, channels), normalized as for training.
    batch_size : int
        Patches per forward pass.
    seed : int
        The draw of the voxels used (at most :data:`FIT_VOXELS`).

    Returns
    -------
    dict
        ``{"nll_before", "nll_after"}`` on the voxels used (summed over channels); the layer's weights
        are changed in place only where the fit lowered the NLL.
    """
    from scipy.optimize import minimize

    head, probe = _probe(keras_model)
    n = Y.shape[-1]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(X))[:FIT_PATCHES]
    per_patch = max(1, FIT_VOXELS // len(pick))
    feats, errs = [], []
    for i in range(0, len(pick), batch_size):
        idx = np.sort(pick[i:i + batch_size])
        f, out = (np.asarray(a, np.float32) for a in probe(X[idx]))
        f = f.reshape(len(idx), -1, f.shape[-1])
        e = np.abs(Y[idx].reshape(len(idx), -1, n) - out[..., :n].reshape(len(idx), -1, n))
        for j in range(len(idx)):
            v = rng.choice(f.shape[1], min(per_patch, f.shape[1]), replace=False)
            feats.append(f[j, v])
            errs.append(e[j, v])
    F = np.concatenate(feats).astype(np.float64)
    E = np.concatenate(errs).astype(np.float64)
    kernel = np.asarray(head.kernel, np.float32)          # (1, [1,] 1, F, C)
    bias = np.asarray(head.bias, np.float32)
    k2 = kernel.reshape(-1, n).copy()
    before = after = 0.0
    for c in range(n):
        theta0 = np.concatenate([k2[:, c], [bias[c]]]).astype(np.float64)
        nll0 = _nll_and_grad(theta0, F, E[:, c])[0]
        res = minimize(_nll_and_grad, theta0, args=(F, E[:, c]), jac=True, method="L-BFGS-B",
                       options={"maxiter": 200})
        before += nll0
        if np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and res.fun < nll0:
            k2[:, c], bias[c] = res.x[:-1], res.x[-1]
            after += float(res.fun)
        else:
            after += nll0
    head.kernel.assign(k2.reshape(kernel.shape).astype(np.float32))
    head.bias.assign(bias.astype(np.float32))
    return {"nll_before": float(before), "nll_after": float(after)}

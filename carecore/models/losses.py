"""Losses in ``keras.ops`` only: MAE, MSE and the Laplace negative log-likelihood (CARE-NOTES §5)."""
from keras import ops


def mae(y_true, y_pred):
    return ops.mean(ops.abs(y_pred - y_true))


def mse(y_true, y_pred):
    return ops.mean(ops.square(y_pred - y_true))


def laplace_nll(y_true, y_pred):
    """``|y - mu| / b + log(2 b)`` averaged; ``y_pred`` holds ``[mu..., b...]`` along the last axis."""
    n = ops.shape(y_pred)[-1] // 2
    mu, b = y_pred[..., :n], y_pred[..., n:]
    return ops.mean(ops.abs(y_true - mu) / b + ops.log(2.0 * b))


def laplace_mae(y_true, y_pred):
    """MAE of the Laplace mean (a readable metric for probabilistic models)."""
    n = ops.shape(y_pred)[-1] // 2
    return ops.mean(ops.abs(y_true - y_pred[..., :n]))


def laplace_split(y_true, y_pred):
    """A probabilistic network's training loss: ``MAE(mu) + NLL(b | mu held fixed)``.

    The mean learns by MAE alone (the Laplace likelihood's estimate of the mean is the median, MAE's
    too), exactly as a plain network does; the scale learns by the NLL with the mean held fixed, and its
    1×1 head reads the features held fixed too (:func:`carecore.models.unet.build_unet`), so the scale
    never slows the mean. Measured on the 3D demo (3 minutes, 2 CPU cores): the NLL trained jointly,
    after an MAE warm-up, gave the mean SSIM 0.508 / NRMSE 0.0654 (the tuned TV filter 0.585 / 0.0482);
    this loss 0.658 / 0.0472, near the plain network's 0.679 / 0.0447 (one run each; a later run with
    the best weights chosen by the mean's validation MAE stalled at 0.506 / 0.0575:
    benchmarks/quality-per-minute.md, "Where 3 minutes on that CPU were not enough").
    """
    n = ops.shape(y_pred)[-1] // 2
    mu, b = y_pred[..., :n], y_pred[..., n:]
    return ops.mean(ops.abs(y_true - mu)) + laplace_nll(y_true, ops.concatenate([ops.stop_gradient(mu), b], axis=-1))


LOSSES = {"mae": mae, "mse": mse, "laplace": laplace_split}

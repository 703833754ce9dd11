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


LOSSES = {"mae": mae, "mse": mse, "laplace": laplace_nll}

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


class WarmLaplace:
    """The Laplace NLL, preceded by the MAE of its mean: ``(1 - w) MAE(mu) + w NLL``.

    A probabilistic network converges more slowly when the scale is learned from the first step;
    with ``w`` at 0 the mean first learns as fast as a plain MAE network, then ``w`` rises to 1
    (:meth:`weight_at`) and the scale learns. ``w`` is a Keras variable set by the training loop.
    """

    __name__ = "laplace"

    def __init__(self, mae_share=0.3, ramp=0.2, warm=True):
        import keras

        self.w = keras.Variable(0.0 if warm else 1.0, trainable=False, name="laplace_weight")
        self.mae_share, self.ramp = mae_share, ramp
        self.warm = warm   # False: the NLL alone (a resumed network), until a restart from new weights sets it

    def weight_at(self, fraction):
        """The NLL's weight at a fraction of the training: 0 first, then a linear ramp to 1 (always 1
        when not ``warm``)."""
        if not self.warm:
            return 1.0
        return float(min(1.0, max(0.0, (fraction - self.mae_share) / max(self.ramp, 1e-9))))

    def __call__(self, y_true, y_pred):
        w = ops.cast(self.w, y_pred.dtype)
        return (1.0 - w) * laplace_mae(y_true, y_pred) + w * laplace_nll(y_true, y_pred)

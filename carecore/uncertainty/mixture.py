"""Mixtures of per-pixel Laplace distributions (ensembles), their disagreement D, and calibration (§6–§7).

An ensemble of M members (trained with different seeds) predicts the mixture
``p_ens = (1/M) Σ p_m``. Its disagreement ``D = (1/M) Σ_m KL(p_m || p_ens) / log M`` lies in [0, 1]:
0 when the members agree, 1 when their distributions do not overlap. The KL divergence to a
Laplace mixture has no closed form; it is integrated numerically, piecewise between the members'
means, with Gauss–Legendre quadrature in the member's own cumulative probability.

Calibration: for confidence levels c, accuracy(c) is the fraction of ground-truth pixels inside the
predicted central c-interval (via the probability integral transform, so it works for single models
and mixtures alike); ECE is the mean of ``|accuracy(c) - c|`` over the levels (equal weights).
"""
from __future__ import annotations

import numpy as np

from ..errors import CareError
from ..progress import check_stop, report
from .laplace import _check, laplace_cdf, laplace_entropy, laplace_quantile, laplace_samples, laplace_variance

DEFAULT_CONFIDENCES = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))


# -- mixtures and disagreement -----------------------------------------------------------------
def _log_mixture(z, mus, bs):
    """log p_ens(z) for z of shape (K, P) and members (M, P): returns (K, P)."""
    lp = -np.abs(z[None] - mus[:, None]) / bs[:, None] - np.log(2 * bs[:, None])  # (M, K, P)
    mx = lp.max(0)
    return mx + np.log(np.exp(lp - mx).mean(0))


def _kl_to_mixture(mu, b, nodes):
    """Mean over members of KL(p_m || p_ens), per pixel, for members (M, P).

    The real line is cut at the members' means (where log p_ens has kinks). On each piece p_m is an
    exponential decaying away from the piece end nearest to mu_m, so with ``z = anchor ± b_m t`` and
    ``s = 1 - exp(-t)`` the piece's integral becomes ``0.5 exp(-|anchor - mu_m| / b_m) ∫_0^S g ds``
    with a smooth ``g = log p_m - log p_ens``: Gauss–Legendre in ``s`` then converges fast, for
    narrow and wide, near and far members alike.
    """
    M, P = mu.shape
    x, w = np.polynomial.legendre.leggauss(nodes)
    bps = np.sort(mu, axis=0)
    lo = np.vstack([np.full((1, P), -np.inf), bps])   # (M+1, P) piece starts
    hi = np.vstack([bps, np.full((1, P), np.inf)])    # piece ends
    total = np.zeros(P)
    for m in range(M):
        right = lo >= mu[m][None]                     # pieces right of mu_m decay from their start
        anchor = np.where(right, lo, hi)
        far_end = np.where(right, hi, lo)
        T = np.abs(far_end - anchor) / b[m][None]     # may be inf (the two tails)
        S = -np.expm1(-T)                             # 1 - exp(-T), in [0, 1]
        amp = 0.5 * np.exp(-np.abs(anchor - mu[m][None]) / b[m][None])
        sgn = np.where(right, 1.0, -1.0)
        acc = np.zeros_like(S)
        for xi, wi in zip(x, w):
            sv = S * (xi + 1) / 2
            t = -np.log1p(-np.minimum(sv, 1 - 1e-16))
            z = anchor + sgn * b[m][None] * t
            g = -np.abs(z - mu[m][None]) / b[m][None] - np.log(2 * b[m][None]) - _log_mixture(z, mu, b)
            acc += wi * S / 2 * g
        total += (amp * acc).sum(0)
    return total / M


def disagreement(means, scales, *, nodes=16, chunk=16384, progress=None, stop=None):
    """Per-pixel disagreement ``D`` in [0, 1] of M Laplace members.

    Parameters
    ----------
    means, scales : array_like, shape (M, ...)
        The members' Laplace means and scales.
    nodes : int
        Gauss–Legendre nodes per piece of the integral (see :func:`_kl_to_mixture`).

    Returns
    -------
    numpy.ndarray (float32), shape ``...``
    """
    means = np.asarray(means, np.float64)
    scales = np.asarray(scales, np.float64)
    if means.shape != scales.shape or means.ndim < 2:
        raise CareError(f"means and scales must share a shape (M, ...), got {means.shape} and {scales.shape}")
    M = means.shape[0]
    if M < 2:
        raise CareError("disagreement needs at least 2 members")
    if not (scales > 0).all():
        raise CareError("scales must be positive")
    shape = means.shape[1:]
    mus = means.reshape(M, -1)
    bs = scales.reshape(M, -1)
    P = mus.shape[1]
    out = np.empty(P, np.float64)
    for start in range(0, P, chunk):
        check_stop(stop)
        sl = slice(start, start + chunk)
        out[sl] = _kl_to_mixture(mus[:, sl], bs[:, sl], nodes) / np.log(M)
        report(progress, min(start + chunk, P), P, "disagreement")
    return np.clip(out, 0.0, 1.0).reshape(shape).astype(np.float32)


def mixture_mean_variance(means, scales):
    """Mean and variance of the equal-weight Laplace mixture."""
    means = np.asarray(means, np.float64)
    scales = np.asarray(scales, np.float64)
    mean = means.mean(0)
    second = (2 * scales**2 + means**2).mean(0)
    return mean.astype(np.float32), np.maximum(second - mean**2, 0).astype(np.float32)


def mixture_cdf(z, means, scales):
    """CDF of the equal-weight Laplace mixture with members ``means``/``scales`` (M, ...) at ``z`` (...)."""
    means = np.asarray(means, np.float64)
    scales = np.asarray(scales, np.float64)
    return np.mean([laplace_cdf(z, m, b) for m, b in zip(means, scales)], axis=0)


def mixture_quantile(means, scales, q, *, tol=1e-6, max_iter=60):
    """The ``q``-quantile of the Laplace mixture per pixel (bisection on its CDF; members (M, ...)).

    The quantile lies between the smallest and the largest member quantile, so the bracket is exact.
    """
    if not 0 < q < 1:
        raise CareError(f"quantile must be in (0, 1), got {q}")
    means, scales = np.asarray(means, np.float64), np.asarray(scales, np.float64)
    if means.shape != scales.shape or means.ndim < 1:
        raise CareError(f"means and scales must share a shape (M, ...), got {means.shape} and {scales.shape}")
    member_q = np.stack([laplace_quantile(m, b, q) for m, b in zip(means, scales)]).astype(np.float64)
    lo, hi = member_q.min(0), member_q.max(0)
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        below = mixture_cdf(mid, means, scales) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        if np.max(hi - lo, initial=0.0) <= tol * max(1.0, float(np.abs(hi).max(initial=0.0))):
            break
    return (0.5 * (lo + hi)).astype(np.float32)


def mixture_samples(means, scales, n, *, seed=None):
    """``n`` samples per pixel from the mixture: a member drawn at random per pixel and frame, then its Laplace."""
    means, scales = np.asarray(means, np.float32), np.asarray(scales, np.float32)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, means.shape[0], size=(int(n),) + means.shape[1:])
    mu = np.take_along_axis(means[None].repeat(int(n), 0), pick[:, None], 1)[:, 0]
    b = np.take_along_axis(scales[None].repeat(int(n), 0), pick[:, None], 1)[:, 0]
    return (mu + b * rng.laplace(size=mu.shape)).astype(np.float32)


def predictive_readouts(means, scales, *, members=False, confidence=0.9, n_samples=0, seed=0):
    """Mean, central interval and samples of a prediction, each from the distribution it predicts:
    one Laplace per pixel, or with ``members=True`` (``means``/``scales`` of shape (M, ...)) the
    equal-weight mixture of an ensemble (never a single Laplace fitted to the mixture's variance).

    Returns
    -------
    dict
        ``mean``, ``variance``, ``lower``, ``upper``, ``width`` (upper - lower), ``confidence``, and
        ``samples`` (frames on a new first axis) when ``n_samples`` > 0.
    """
    if not 0 < confidence < 1:
        raise CareError(f"confidence must be in (0, 1), got {confidence}")
    means, scales = np.asarray(means, np.float32), np.asarray(scales, np.float32)
    if means.shape != scales.shape:
        raise CareError(f"means have shape {means.shape} but scales {scales.shape}")
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    if members:
        mean, var = mixture_mean_variance(means, scales)
        lo, hi = mixture_quantile(means, scales, lo_q), mixture_quantile(means, scales, hi_q)
        sample = mixture_samples
    else:
        mean, var = means, laplace_variance(scales)
        lo, hi = laplace_quantile(means, scales, lo_q), laplace_quantile(means, scales, hi_q)
        sample = laplace_samples
    out = {"mean": mean, "variance": var, "lower": lo, "upper": hi, "width": hi - lo, "confidence": confidence}
    if n_samples:
        out["samples"] = sample(means, scales, n_samples, seed=seed)
    return out


# -- calibration -------------------------------------------------------------------------------
def pit(gt, means, scales):
    """Probability integral transform ``F(gt)`` under a Laplace (means (...)) or a mixture (means (M, ...))."""
    gt = np.asarray(gt, np.float64)
    means = np.asarray(means, np.float64)
    scales = np.asarray(scales, np.float64)
    if means.shape == gt.shape:
        return laplace_cdf(gt, means, scales)
    if means.shape[1:] == gt.shape:
        return np.mean([laplace_cdf(gt, m, s) for m, s in zip(means, scales)], axis=0)
    raise CareError(f"ground truth of shape {gt.shape} does not match predictions of shape {means.shape}")


def calibration_curve(gt, means, scales, *, confidences=DEFAULT_CONFIDENCES):
    """Accuracy against confidence and the expected calibration error.

    Returns
    -------
    dict
        ``{"confidence": [...], "accuracy": [...], "ece": float}``.

    Examples
    --------
    >>> curve = calibration_curve(truth, mean, scale)   # doctest: +SKIP
    >>> curve["ece"] < 0.05                             # doctest: +SKIP
    """
    return _curve(pit(gt, means, scales), confidences)


def _curve(u, confidences):
    """:func:`calibration_curve` from the PIT values ``u``."""
    c = np.asarray(confidences, np.float64)
    if not ((c > 0) & (c < 1)).all():
        raise CareError("confidence levels must be in (0, 1)")
    dev = np.abs(np.ravel(u) - 0.5)
    acc = np.array([(dev <= ci / 2).mean() for ci in c])
    return {"confidence": c.tolist(), "accuracy": acc.tolist(), "ece": float(np.mean(np.abs(acc - c)))}


def measure_calibration(truth, means, scales, *, image, axes, percentiles, mapped_back=True,
                        confidences=DEFAULT_CONFIDENCES, output_axes=None, normalization=None,
                        truth_normalization=None):
    """Calibration where the network makes its promise, with no fit to the ground truth (CARE-NOTES §7).

    Most callers want :meth:`carecore.CARE.calibration` (``model.calibration(truth, mean, scale,
    image=low, axes=...)``), which fills in the model's scalings; this is the function under it, and its
    defaults (each image scaled by its own percentiles) are right only for a model configured with
    ``input_normalization="image"``.

    The network predicts distributions of the *normalized target*: the ground truth normalized as
    training targets were (its own percentiles; the training targets' where the input is scaled by the
    training inputs'). :meth:`~carecore.CARE.predict` maps its output back with the input's scaling, so
    here the prediction is mapped into the network's units again with ``normalization`` (default: the
    input's own percentiles), and the ground truth with ``truth_normalization`` (default: its own);
    nothing is fitted, so a biased mean shows as miscalibration.

    Parameters
    ----------
    truth : array_like
        The ground truth, in its own intensity units, with ``axes``.
    means, scales : array_like
        As returned by ``predict`` for ``image`` (axes ``axes``), or stacked members (M, ...) of an
        ensemble (the mixture is then evaluated).
    image : array_like
        The input the prediction was made from (only its percentiles are used, to map the prediction
        back: it may lie on another grid, e.g. the coarse stack of an upsampling model).
    axes : str
        Axes of ``image`` (and of ``truth``, ``means`` and ``scales`` unless ``output_axes`` is given).
    output_axes : str, optional
        Axes of ``truth``, ``means`` and ``scales`` where the output's grid drops an axis of the
        input (a projection's YX from a ZYX stack).
    percentiles : (float, float)
        The model's normalization percentiles (``model.config.percentiles``).
    normalization : Normalization, optional
        How ``predict`` scaled ``image`` (``model.input_normalization(image, axes=axes)``: the training
        inputs' percentiles for a model with ``input_normalization="training"``); default: the
        image's own percentiles.
    mapped_back : bool
        Whether ``predict`` mapped the output back with the input's range (it does when the model
        has as many output as input channels); otherwise the prediction is in the network's units.
    truth_normalization : Normalization, optional
        How the ground truth is scaled into the network's units (``model.truth_normalization(normalization)``:
        the training targets' percentiles for an input scaled by the training inputs'); default: the
        truth's own percentiles. With an input scaled by the training inputs', the truth's own would
        put it in other units than the network's wherever the image is brighter or dimmer than the
        training images (a held-out region half as bright measured ECE 0.315 so, 0.048 in the
        training targets' units).

    Returns
    -------
    dict
        ``{"confidence", "accuracy", "ece", "space": "normalized target (no fit)"}``.
    """
    from ..normalize import _broadcast, compute_percentiles

    truth = np.asarray(truth, np.float32)
    means = np.asarray(means, np.float32)
    scales = np.asarray(scales, np.float32)

    n_in = normalization or compute_percentiles(image, *percentiles, axes=axes, name="input")
    oa = output_axes or axes
    n_gt = truth_normalization or compute_percentiles(truth, *percentiles, axes=oa, name="ground truth")
    # per-channel values shaped for the output's axes; they broadcast over the members' leading axis as well
    lo, hi = (_broadcast(n_in.lo, None, oa), _broadcast(n_in.hi, None, oa)) if mapped_back else (0.0, 1.0)
    glo, ghi = _broadcast(n_gt.lo, None, oa), _broadcast(n_gt.hi, None, oa)
    g = (truth - glo) / (ghi - glo)
    u = pit(g, (means - lo) / (hi - lo), scales / (hi - lo))   # (once: the curve and the coverage share it)
    curve = _curve(u, confidences)
    curve["space"] = "normalized target (no fit)"
    curve["by_brightness"] = _coverage(u, g)
    return curve


#: Bins of :func:`coverage_by_brightness`: percentile ranges of the ground truth.
BRIGHTNESS_BINS = ((0, 50), (50, 90), (90, 99), (99, 100))


def coverage_by_brightness(gt, means, scales, *, confidence=0.9, bins=BRIGHTNESS_BINS):
    """How often the central ``confidence`` interval holds the ground truth, by the truth's brightness: one
    share per percentile range of ``gt`` (``bins``), each ideally ``confidence``. A calibration curve over all
    pixels is mostly background: intervals far too wide on the brightest structures (a user's trial: 1 % of
    the pixels, every one covered, widths up to 13 times the restoration's range) leave its ECE small.

    Returns
    -------
    list of dict
        ``{"percentiles": (lo, hi), "coverage": share, "pixels": count}`` per bin (bins without pixels left out).
    """
    return _coverage(pit(gt, means, scales), gt, confidence=confidence, bins=bins)


def _coverage(u, gt, *, confidence=0.9, bins=BRIGHTNESS_BINS):
    """:func:`coverage_by_brightness` from the PIT values ``u`` of the ground truth ``gt``."""
    gt = np.asarray(gt, np.float64)
    inside = np.abs(u - 0.5) <= confidence / 2
    edges = np.percentile(gt, [b for pair in bins for b in pair])
    out, taken = [], np.zeros(gt.shape, bool)
    for (p_lo, p_hi), (lo, hi) in zip(bins, edges.reshape(-1, 2)):
        # a range whose two ends are one value (more than half the truth exactly 0: a simulation's background) holds
        # the pixels of that value: its row was left out, and the next range's held the background unsaid (a trial)
        sel = ((gt == lo) if lo == hi else (gt >= lo) & ((gt <= hi) if p_hi == 100 else (gt < hi))) & ~taken
        taken |= sel
        if sel.any():
            out.append({"percentiles": (p_lo, p_hi), "coverage": float(inside[sel].mean()), "pixels": int(sel.sum())})
    return out


def interval_spread(mean, lower, upper, *, brightest=0.01):
    """How wide the intervals are where the restoration is brightest (its structures; a calibration curve and
    the coverage say how often they hold the truth, not how much they tell): over the brightest ``brightest``
    share of ``mean``'s pixels, each interval's width (``upper - lower``) relative to the structures' height
    above the background (the median of those pixels' means less the median of all: an intensity scale's 0
    need not be the background's), and the share of their lower bounds at or below the background, where
    the interval cannot tell a structure from none. A user trial found 90 % intervals of a median 0.95 times
    the intensity on an embryo's brightest structures, a third reaching below 0, with nothing on the page to
    say so. None where nothing rises above the background.

    >>> import numpy as np
    >>> mean = np.array([1.0, 1.0, 1.0, 11.0])
    >>> s = interval_spread(mean, mean - 6, mean + 4, brightest=0.25)
    >>> s["median"], s["below_background"], s["pixels"]
    (1.0, 0.0, 1)

    Returns
    -------
    dict or None
        ``{"brightest": share, "median": width / height, "p90": its 90th percentile, "below_background":
        share, "pixels": count, "height": height, "background": level}``.
    """
    m = np.asarray(mean, np.float64)
    lo, hi = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    if not 0 < brightest <= 1:
        raise CareError(f"brightest must be in (0, 1], got {brightest}")
    if m.shape != lo.shape or m.shape != hi.shape:
        raise CareError(f"mean, lower and upper have shapes {m.shape}, {lo.shape}, {hi.shape}: give one shape")
    ok = np.flatnonzero(np.isfinite(m) & np.isfinite(lo) & np.isfinite(hi))   # (a NaN is no pixel's intensity)
    if not ok.size:
        return None
    m, lo, hi = m.ravel()[ok], lo.ravel()[ok], hi.ravel()[ok]
    n = max(1, int(np.ceil(brightest * m.size)))   # (the brightest n exactly: ties at the top are not all taken)
    top = np.argpartition(m, m.size - n)[m.size - n:]
    background = float(np.median(m))
    height = float(np.median(m[top])) - background
    if not height > 0:
        return None
    rel = (hi[top] - lo[top]) / height
    return {"brightest": brightest, "median": float(np.median(rel)), "p90": float(np.quantile(rel, 0.9)),
            "below_background": float(np.mean(lo[top] <= background)), "pixels": int(n), "height": height,
            "background": background}


# -- one model's read-outs (a mixture of one) ------------------------------------------------
def probabilistic_readouts(mean, scale, *, confidence=0.9):
    """Mean, scale, variance, entropy and the central interval, as a dict of arrays."""
    mean, scale = _check(mean, scale)
    out = predictive_readouts(mean, scale, confidence=confidence)
    del out["width"]
    return {**out, "scale": scale, "entropy": laplace_entropy(scale)}

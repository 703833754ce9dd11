"""Percentile normalization and its inverse (CARE-NOTES §3).

``N(x, p_lo, p_hi) = (x - P_lo(x)) / (P_hi(x) - P_lo(x))``, per channel over all other axes.

One default for everything, :data:`DEFAULT_PERCENTILES` = (2, 99.8): used for training inputs and
targets (each with its own percentiles) and for prediction inputs, and stored with every model, so
a model always sees its inputs the way it was trained. A (near-)constant image or one with NaN or
infinite values raises :class:`~carecore.CareError` instead of producing huge values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .axes import check_axes
from .errors import CareError

DEFAULT_PERCENTILES = (2.0, 99.8)
#: Arrays with more elements than this get their percentiles from a regular sub-sample, so that
#: normalizing a memory-mapped volume larger than RAM never loads it whole.
SUBSAMPLE_ABOVE = 2**25


@dataclass(frozen=True)
class Normalization:
    """The values that mapped an image to its normalized range, per channel."""

    lo: tuple
    hi: tuple
    percentiles: tuple = DEFAULT_PERCENTILES

    def to_dict(self):
        return {"lo": list(self.lo), "hi": list(self.hi), "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, d):
        return cls(tuple(d["lo"]), tuple(d["hi"]), tuple(d["percentiles"]))


def _check_percentiles(p_lo, p_hi):
    if not (0 <= p_lo < p_hi <= 100):
        raise CareError(f"percentiles must satisfy 0 <= p_lo < p_hi <= 100, got ({p_lo}, {p_hi})")


def _channel_views(x, axes):
    """One view per channel (slicing, not ``np.take``: a memory map stays unread)."""
    if "C" in axes:
        c = axes.index("C")
        return [x[(slice(None),) * c + (i,)] for i in range(x.shape[c])]
    return [x]


def _sample(v, max_samples):
    """Every k-th plane along the first axis, so that about ``max_samples`` values remain (at least one plane)."""
    if v.size <= max_samples:
        return v
    per_plane = v.size // v.shape[0]
    step = int(np.ceil(v.shape[0] / max(1, max_samples // max(1, per_plane))))
    return v[::step]


def compute_percentiles(x, p_lo=DEFAULT_PERCENTILES[0], p_hi=DEFAULT_PERCENTILES[1], *, axes, name="image",
                        max_samples=SUBSAMPLE_ABOVE):
    """The (lo, hi) values per channel; errors out on NaN, infinity or a constant image.

    Channels with more than ``max_samples`` values are sampled plane by plane (a memory-mapped image
    is then read only in part).

    Examples
    --------
    >>> import numpy as np
    >>> compute_percentiles(np.arange(100.0).reshape(10, 10), 0, 100, axes="YX")
    Normalization(lo=(0.0,), hi=(99.0,), percentiles=(0, 100))
    """
    _check_percentiles(p_lo, p_hi)
    axes = check_axes(axes, np.ndim(x), name=name, shape=np.shape(x))
    los, his = [], []
    for ci, v in enumerate(_channel_views(x, axes)):
        v = np.asarray(_sample(v, max_samples), dtype=np.float32)
        ch = f" (channel {ci})" if "C" in axes else ""
        if not np.isfinite(v).all():
            nbad = int((~np.isfinite(v)).sum())
            raise CareError(f"{name}{ch}: contains {nbad} NaN or infinite value(s); fix or mask them first")
        lo, hi = np.percentile(v, [p_lo, p_hi])
        lo, hi = float(lo), float(hi)
        scale = max(abs(lo), abs(hi), 1e-30)
        if hi - lo <= 1e-6 * scale or hi - lo <= 1e-20:
            vmin, vmax = float(v.min()), float(v.max())
            if vmax - vmin <= 1e-6 * max(abs(vmin), abs(vmax), 1e-30):
                raise CareError(
                    f"{name}{ch}: the image is constant (all values {vmin:g}); "
                    "percentile normalization needs contrast"
                )
            raise CareError(
                f"{name}{ch}: percentiles {p_lo} and {p_hi} are equal ({lo:g}); the image is nearly "
                f"constant (range {vmin:g}..{vmax:g}); choose wider percentiles"
            )
        los.append(lo)
        his.append(hi)
    return Normalization(tuple(los), tuple(his), (p_lo, p_hi))


def _broadcast(values, x, axes):
    v = np.asarray(values, dtype=np.float32)
    if "C" not in axes:
        return v[0]
    shape = [1] * len(axes)
    shape[axes.index("C")] = len(v)
    return v.reshape(shape)


def percentile_normalize(x, p_lo=DEFAULT_PERCENTILES[0], p_hi=DEFAULT_PERCENTILES[1], *, axes,
                         clip=False, norm=None, name="image"):
    """Normalize ``x`` per channel so that percentile ``p_lo`` maps to 0 and ``p_hi`` to 1.

    Parameters
    ----------
    x : array_like
    p_lo, p_hi : float
        Percentiles in [0, 100].
    axes : str
        Axes of ``x``; with a ``C`` axis each channel is normalized on its own.
    clip : bool
        Clip the result to [0, 1].
    norm : Normalization, optional
        Use these (lo, hi) values instead of computing them.

    Returns
    -------
    y : numpy.ndarray (float32)
    norm : Normalization
        What was applied, for :func:`denormalize`.

    Examples
    --------
    >>> import numpy as np
    >>> y, norm = percentile_normalize(np.arange(101.0), 0, 100, axes="X")  # doctest: +SKIP
    """
    if norm is None:
        norm = compute_percentiles(x, p_lo, p_hi, axes=axes, name=name)
    lo = _broadcast(norm.lo, x, axes)
    hi = _broadcast(norm.hi, x, axes)
    y = (np.asarray(x, dtype=np.float32) - lo) / (hi - lo)
    if clip:
        np.clip(y, 0, 1, out=y)
    return y, norm


def denormalize(y, norm, *, axes):
    """Invert :func:`percentile_normalize`: ``y * (hi - lo) + lo`` per channel."""
    axes = check_axes(axes, np.ndim(y), shape=np.shape(y))
    lo = _broadcast(norm.lo, y, axes)
    hi = _broadcast(norm.hi, y, axes)
    return np.asarray(y, dtype=np.float32) * (hi - lo) + lo

"""Axes strings: every array carries one (``YX``, ``ZYX``, ``CZYX``, ``TZCYX`` ...).

Letters: ``T`` time, ``C`` channel, ``Z``, ``Y``, ``X`` space, ``S`` sample (a stack of
independent images). Each letter at most once; ``Y`` and ``X`` always present.
"""
from __future__ import annotations

import numpy as np

from .errors import CareError

KNOWN_AXES = "STCZYX"
SPATIAL = "ZYX"


def check_axes(axes, ndim=None, *, name="image", shape=None):
    """Validate an axes string and return it upper-cased.

    Parameters
    ----------
    axes : str
        Such as ``"ZYX"`` or ``"CYX"``.
    ndim : int, optional
        The number of dimensions of the array it describes.
    name : str
        What the array is (a file name), used in error messages.
    shape : tuple, optional
        The array's shape, quoted in error messages.

    Examples
    --------
    >>> check_axes("zyx", 3)
    'ZYX'
    """
    if not isinstance(axes, str) or not axes:
        raise CareError(f"{name}: axes must be a non-empty string such as 'ZYX', got {axes!r}")
    axes = axes.upper()
    unknown = sorted(set(axes) - set(KNOWN_AXES))
    if unknown:
        raise CareError(
            f"{name}: axes {axes!r} contain unknown letter(s) {''.join(unknown)!r}; "
            f"use letters from {KNOWN_AXES!r} (S sample, T time, C channel, Z, Y, X)"
        )
    dup = sorted({a for a in axes if axes.count(a) > 1})
    if dup:
        raise CareError(f"{name}: axes {axes!r} repeat {''.join(dup)!r}; each letter at most once")
    if "Y" not in axes or "X" not in axes:
        raise CareError(f"{name}: axes {axes!r} must contain both 'Y' and 'X'")
    if ndim == 0:   # (a user trial's carecore.Image was told "cannot guess axes for an array with 0 dimensions")
        raise CareError(f"{name}: not an image array (0 dimensions): give a NumPy array (for a carecore.Image, its "
                        ".data, with axes=its .axes)")
    if ndim is not None and len(axes) != ndim:
        shp = f" of shape {tuple(shape)}" if shape is not None else ""
        raise CareError(
            f"{name}: axes {axes!r} have {len(axes)} letters but the image{shp} has {ndim} "
            f"dimensions; give one letter per dimension (e.g. {guess_axes(ndim)!r})"
        )
    return axes


def guess_axes(ndim):
    """The conventional axes for an array without metadata: YX, ZYX, CZYX, TCZYX."""
    table = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}
    if ndim not in table:
        raise CareError(f"cannot guess axes for an array with {ndim} dimensions; give axes explicitly")
    return table[ndim]


def move_axes(x, axes_from, axes_to, *, name="image"):
    """Transpose ``x`` from ``axes_from`` to ``axes_to``.

    Axes in ``axes_to`` that are missing in ``axes_from`` are added with size 1; axes of size 1 in
    ``axes_from`` that are missing in ``axes_to`` are dropped; dropping an axis of size > 1 is an error.

    Examples
    --------
    >>> import numpy as np
    >>> move_axes(np.zeros((5, 4, 3)), "ZYX", "YXZ").shape
    (4, 3, 5)
    >>> move_axes(np.zeros((4, 3)), "YX", "CYX").shape
    (1, 4, 3)
    """
    axes_from = check_axes(axes_from, np.ndim(x), name=name, shape=np.shape(x))
    axes_to = check_axes(axes_to, name=name)
    x = np.asarray(x)
    for a in axes_from:
        if a not in axes_to:
            if x.shape[axes_from.index(a)] != 1:
                raise CareError(
                    f"{name}: cannot drop axis {a!r} of size {x.shape[axes_from.index(a)]} "
                    f"when moving axes {axes_from!r} -> {axes_to!r}"
                )
    keep = "".join(a for a in axes_from if a in axes_to)
    x = x.reshape([s for a, s in zip(axes_from, x.shape) if a in axes_to])
    for a in axes_to:
        if a not in keep:
            x = x[..., None]
            keep += a
    return np.transpose(x, [keep.index(a) for a in axes_to])


def spatial_axes(axes):
    """The spatial letters of ``axes`` in order (``'CZYX'`` -> ``'ZYX'``)."""
    return "".join(a for a in axes if a in SPATIAL)


def spatial_in_order(axes):
    """``axes`` with its spatial letters in a model's order (Z, Y, X), each other letter where it is:
    ``'XY'`` -> ``'YX'``, ``'XCYZ'`` -> ``'ZCYX'`` (images saved transposed are trained and restored in it).

    Examples
    --------
    >>> spatial_in_order("TXY")
    'TYX'
    """
    spatial = iter(a for a in "ZYX" if a in axes)
    return "".join(next(spatial) if a in "ZYX" else a for a in axes)


def n_channels(shape, axes):
    """Number of channels (1 when there is no ``C`` axis)."""
    return shape[axes.index("C")] if "C" in axes else 1


def with_channel_of(x, axes, out_axes):
    """A one-channel image saved without ``C`` given the ``C`` axis of ``out_axes``, at its place there.

    For a ground truth compared with a restoration of axes ``out_axes`` that has one channel: the image is
    brought into the restoration's order of its axes, and ``C`` put where it stands among them (axes of
    ``out_axes`` the image lacks, a time-lapse's ``T`` for instance, are not counted).
    An image that has ``C``, an ``out_axes`` without it, or an image with axes that ``out_axes`` lacks
    is returned as it is, for the caller to compare its shape with the restoration's. A Dask array stays
    lazy and a memory map a view.

    Returns
    -------
    (x, axes) : the array and its axes string.

    Examples
    --------
    >>> x, axes = with_channel_of(np.zeros((4, 8, 8)), "ZYX", "TCZYX")
    >>> x.shape, axes
    ((1, 4, 8, 8), 'CZYX')
    >>> with_channel_of(np.zeros((8, 6)), "XY", "CYX")[0].shape
    (1, 6, 8)
    """
    axes = check_axes(axes, np.ndim(x), shape=np.shape(x))
    if "C" in axes or "C" not in out_axes or not set(axes) <= set(out_axes):
        return x, axes
    order = "".join(a for a in out_axes if a in axes or a == "C")
    # (NumPy functions that a Dask array takes as its own: a lazy truth stays lazy, a memory map a view)
    x = np.transpose(x, [axes.index(a) for a in order if a != "C"])
    return np.expand_dims(x, order.index("C")), order

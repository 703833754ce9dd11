"""Images for people: a 2D slice to PNG bytes (for the app, notebooks and reports)."""
from __future__ import annotations

import io

import numpy as np


def display_range(image, p_lo=1.0, p_hi=99.8):
    """Contrast limits (percentiles) for showing ``image``; never an empty range."""
    lo, hi = np.percentile(np.asarray(image, np.float32), [p_lo, p_hi])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def profile_row(plane, sigma=2.0):
    """The row of a 2D ``plane`` through its brightest structure: a line profile's default.

    The plane is smoothed by a Gaussian of ``sigma`` pixels first, so that one bright noisy pixel does
    not pick the row. A flat plane gives its middle row (a middle row of a sparse sample often crosses
    only background, where a profile or an interval shows nothing).

    Parameters
    ----------
    plane : array_like, shape (Y, X)
    sigma : float
        Smoothing, in pixels.

    Returns
    -------
    int
        The row index (Y).

    Examples
    --------
    >>> plane = np.zeros((64, 64), np.float32)
    >>> plane[40:45, 10:20] = 5.0
    >>> profile_row(plane)
    42
    """
    from scipy.ndimage import gaussian_filter

    a = np.asarray(plane, np.float32)
    if a.ndim != 2:
        raise ValueError(f"profile_row takes a 2D plane (YX), got shape {a.shape}")
    a = np.nan_to_num(a)
    s = gaussian_filter(a, sigma, mode="nearest") if sigma > 0 else a
    if not np.ptp(s) > 0:
        return a.shape[0] // 2
    return int(np.unravel_index(int(np.argmax(s)), s.shape)[0])


def to_png(image2d, lo=None, hi=None, *, cmap="gray", size=None):
    """PNG bytes of a 2D array mapped from ``[lo, hi]`` through a matplotlib colormap.

    ``size`` (height, width) resizes with nearest-neighbour sampling, e.g. to stretch a thin XZ slice.
    """
    from matplotlib import colormaps
    from PIL import Image as PILImage

    a = np.asarray(image2d, np.float32)
    if a.ndim != 2:
        raise ValueError(f"to_png takes a 2D array, got shape {a.shape}")
    if lo is None or hi is None:
        lo, hi = display_range(a)
    t = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = (colormaps[cmap](t)[..., :3] * 255).astype(np.uint8)
    im = PILImage.fromarray(rgb)
    if size is not None:
        im = im.resize((int(size[1]), int(size[0])), PILImage.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def colorbar_png(cmap="gray", *, size=(12, 256)):
    """PNG bytes of a horizontal colour bar (height, width ``size``): ``cmap`` from its low end, left, to
    its high end, right, as :func:`to_png` maps ``lo`` to ``hi``.

    Examples
    --------
    >>> colorbar_png("inferno")[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, int(size[1]), dtype=np.float32), (int(size[0]), int(size[1])))
    return to_png(ramp, 0.0, 1.0, cmap=cmap)

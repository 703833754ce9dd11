"""Classical restoration baselines, callable by name (the paper's comparisons, CARE-NOTES §4).

Each baseline takes the (percentile-normalized) input and returns an image of the same shape;
channels are processed one at a time. Their outputs go through the same metric protocol as CARE.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .axes import check_axes, spatial_axes
from .errors import CareError
from .normalize import percentile_normalize


def _gaussian(x, sigma=1.0):
    return ndi.gaussian_filter(x, sigma)


def _median(x, size=3):
    return ndi.median_filter(x, size=size)


def _nlm(x, h=None, patch_size=5, patch_distance=6):
    from skimage.restoration import denoise_nl_means

    # noise level from the median absolute difference of neighbours (robust to structure)
    s = float(np.median(np.abs(np.diff(x, axis=-1)))) / (0.6745 * np.sqrt(2))
    return denoise_nl_means(x, h=0.8 * s if h is None else h, sigma=s, patch_size=patch_size,
                            patch_distance=patch_distance, fast_mode=True)


def _tv(x, weight=0.1):
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(x, weight=weight)


def _bilateral(x, sigma_color=None, sigma_spatial=1.0):
    from skimage.restoration import denoise_bilateral

    def one(s):
        lo = s.min()
        return denoise_bilateral(s - lo, sigma_color=sigma_color, sigma_spatial=sigma_spatial) + lo

    if x.ndim == 2:
        return one(x)
    return np.stack([one(s) for s in x.reshape(-1, *x.shape[-2:])]).reshape(x.shape)


#: name -> (function, what it is). Bilateral filtering works slice by slice (2D) on volumes.
BASELINES = {
    "gaussian": (_gaussian, "Gaussian low-pass, sigma in pixels"),
    "median": (_median, "median filter, window size in pixels"),
    "nlm": (_nlm, "non-local means (scikit-image), h from the estimated noise level"),
    "tv": (_tv, "total-variation denoising (Chambolle)"),
    "bilateral": (_bilateral, "bilateral filter, slice by slice"),
}


def baseline(name, image, *, axes, normalize=True, **params):
    """Apply the classical baseline ``name`` to ``image``.

    Parameters
    ----------
    name : str
        One of :data:`BASELINES` (``gaussian``, ``median``, ``nlm``, ``tv``, ``bilateral``).
    image : array_like
    axes : str
    normalize : bool
        Percentile-normalize the input first (default), as CARE does.
    **params
        Passed to the filter (e.g. ``sigma=2`` for ``gaussian``).

    Examples
    --------
    >>> smooth = baseline("gaussian", noisy, axes="ZYX", sigma=1.5)  # doctest: +SKIP
    """
    if name not in BASELINES:
        raise CareError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    x = np.asarray(image)
    axes = check_axes(axes, x.ndim, shape=x.shape)
    if normalize:
        x, _ = percentile_normalize(x, axes=axes)
    x = x.astype(np.float32)
    fn = BASELINES[name][0]
    sp = spatial_axes(axes)
    order = [axes.index(a) for a in axes if a not in sp] + [axes.index(a) for a in sp]
    xt = np.transpose(x, order)
    lead = xt.shape[: xt.ndim - len(sp)]
    flat = xt.reshape((-1,) + xt.shape[len(lead):])
    try:
        out = np.stack([np.asarray(fn(v, **params), dtype=np.float32) for v in flat])
    except TypeError as e:
        raise CareError(f"baseline {name!r}: bad parameter ({e})") from None
    out = out.reshape(xt.shape)
    return np.transpose(out, np.argsort(order))

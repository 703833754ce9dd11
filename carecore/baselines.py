"""Classical restoration baselines, callable by name (the paper's comparisons, CARE-NOTES §4).

Each baseline takes the (percentile-normalized) input and returns an image of the same shape;
channels are processed one at a time. Their outputs go through the same metric protocol as CARE.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .axes import check_axes, spatial_axes
from .errors import CareError
from .normalize import percentile_normalize


def _gaussian(x, sigma=1.0):
    return ndi.gaussian_filter(x, sigma)


def _median(x, size=3):
    return ndi.median_filter(x, size=size)


def noise_sigma(x):
    """Robust noise level of an image: the median absolute second difference along X (rescaled so
    that white Gaussian noise of standard deviation s gives s); smooth structure hardly contributes."""
    x = np.asarray(x, np.float64)
    d = x[..., 2:] - 2 * x[..., 1:-1] + x[..., :-2]
    return float(np.median(np.abs(d)) / 0.6745 / np.sqrt(6.0))


def _nlm(x, h=None, h_factor=0.8, patch_size=None, patch_distance=None):
    """Non-local means; volumes get smaller patches and search windows (3^3 and 7^3 voxels: the 2D
    sizes in 3D cost ~30× more time for little gain)."""
    from skimage.restoration import denoise_nl_means

    patch_size = patch_size or (5 if x.ndim == 2 else 3)
    patch_distance = patch_distance or (6 if x.ndim == 2 else 3)
    s = noise_sigma(x)
    return denoise_nl_means(x, h=h_factor * s if h is None else h, sigma=s, patch_size=patch_size,
                            patch_distance=patch_distance, fast_mode=True)


def _tv(x, weight=0.1):
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(x, weight=weight)


def _bilateral(x, sigma_color=0.1, sigma_spatial=1.0):
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
    "nlm": (_nlm, "non-local means (scikit-image), h = h_factor × the estimated noise level"),
    "tv": (_tv, "total-variation denoising (Chambolle)"),
    "bilateral": (_bilateral, "bilateral filter, slice by slice"),
}


def _bm3d(x, sigma_factor=1.0):
    import bm3d  # optional: pip install bm3d

    return bm3d.bm3d(x, sigma_psd=sigma_factor * noise_sigma(x))


def _bm4d(x, sigma_factor=1.0):
    import bm4d  # optional: pip install bm4d

    return bm4d.bm4d(x, sigma_psd=sigma_factor * noise_sigma(x))


#: Baselines used only when their package is installed (``pip install bm3d bm4d``).
OPTIONAL_BASELINES = {
    "bm3d": (_bm3d, "BM3D, sigma = sigma_factor × the estimated noise level (2D; optional package bm3d)", "bm3d", 2),
    "bm4d": (_bm4d, "BM4D, sigma = sigma_factor × the estimated noise level (3D; optional package bm4d)", "bm4d", 3),
}


def available_baselines(ndim=None):
    """Names of the baselines that can run here: the built-in ones, and BM3D/BM4D when installed."""
    import importlib.util

    names = list(BASELINES)
    for name, (_, _, module, dims) in OPTIONAL_BASELINES.items():
        if importlib.util.find_spec(module) is not None and (ndim is None or ndim == dims):
            names.append(name)
    return names


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
    if name in OPTIONAL_BASELINES and name in available_baselines():
        fn = OPTIONAL_BASELINES[name][0]
    elif name in BASELINES:
        fn = BASELINES[name][0]
    else:
        raise CareError(f"unknown baseline {name!r}; choose one of {', '.join(available_baselines())} "
                        f"(bm3d/bm4d need their optional packages)")
    x = np.asarray(image)
    axes = check_axes(axes, x.ndim, shape=x.shape)
    if normalize:
        x, _ = percentile_normalize(x, axes=axes)
    x = x.astype(np.float32)
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


#: The grids each baseline is tuned over (CARE-NOTES §4: an untuned filter is a straw man). Values are
#: for images normalized with the default percentiles; NLM's ``h`` is a factor on the noise level
#: estimated from the image itself.
TUNING_GRIDS = {
    "gaussian": [{"sigma": s} for s in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)],
    "median": [{"size": s} for s in (3, 5, 7)],
    "tv": [{"weight": w} for w in (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)],
    "nlm": [{"h_factor": h} for h in (0.3, 0.5, 0.7, 1.0, 1.4, 2.0)]
           + [{"h_factor": h, "patch_size": 5, "patch_distance": 6} for h in (0.5, 0.7, 1.0)],
    "bm3d": [{"sigma_factor": f} for f in (0.5, 1.0, 1.5)],
    "bm4d": [{"sigma_factor": f} for f in (0.5, 1.0, 1.5)],
    "bilateral": [{"sigma_spatial": s, "sigma_color": c} for s in (1.0, 2.0, 3.0) for c in (0.1, 0.3, 1.0)],
}
#: The grids of the validation line drawn during training (seconds, not minutes): without the
#: large NLM windows, which in 3D cost ~30× the small ones.
FAST_GRIDS = {**TUNING_GRIDS, "nlm": [g for g in TUNING_GRIDS["nlm"] if "patch_distance" not in g]}
#: Tuning looks at most this many voxels per image (a centred crop), so that it takes seconds.
TUNING_MAX_VOXELS = 2**20


@dataclass
class TunedBaseline:
    """A classical baseline tuned on images with ground truth.

    ``params`` maximizes the mean SSIM (paper protocol) over the grid; ``params_nrmse`` minimizes
    the mean NRMSE (the two can differ: each metric is compared with the filter at its own best).
    """

    name: str
    params: dict
    ssim: float
    params_nrmse: dict
    nrmse: float
    grid: list = field(default_factory=list)   # every grid point with its scores

    def apply(self, image, *, axes, for_metric="ssim"):
        """The filter with its tuned parameters (``for_metric="nrmse"``: the NRMSE-best ones)."""
        return baseline(self.name, image, axes=axes, **(self.params if for_metric == "ssim" else self.params_nrmse))

    def to_dict(self):
        return {"name": self.name, "params": self.params, "ssim": self.ssim, "params_nrmse": self.params_nrmse,
                "nrmse": self.nrmse, "grid": self.grid}

    def label(self):
        return f"{self.name} ({', '.join(f'{k}={v:g}' for k, v in self.params.items())})"


def _centre_crop(x, gt, axes, max_voxels):
    """The same centred crop of ``x`` and ``gt``: the longest spatial side shrinks until ``max_voxels`` fit."""
    sp = [axes.index(a) for a in spatial_axes(axes)]
    size = list(x.shape)
    while int(np.prod(size)) > max_voxels and max(size[i] for i in sp) > 32:
        i = max(sp, key=lambda j: size[j])
        size[i] = max(32, int(size[i] * 0.8))
    sl = tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(x.shape, size))
    return x[sl], gt[sl]


def tune_baselines(pairs, *, axes, names=None, grids=None, max_voxels=TUNING_MAX_VOXELS, progress=None, stop=None):
    """Tune each classical baseline over a small grid on images with ground truth.

    Parameters
    ----------
    pairs : list of (input, ground_truth) arrays
        Low-quality images and their ground truth, with ``axes``.
    axes : str
    names : list of str, optional
        Baselines to tune (default: all of :data:`BASELINES`, BM3D/BM4D too when installed).
    grids : dict, optional
        ``{name: [params, ...]}`` replacing :data:`TUNING_GRIDS` entries.
    max_voxels : int
        Each image is reduced to a centred crop of at most this many voxels for tuning.

    Returns
    -------
    dict
        ``{name: TunedBaseline}``, best first (by SSIM).

    Examples
    --------
    >>> tuned = tune_baselines([(noisy, truth)], axes="ZYX")        # doctest: +SKIP
    >>> best = next(iter(tuned.values())); best.label()              # doctest: +SKIP
    'tv (weight=0.2)'
    """
    from .metrics import evaluate
    from .progress import check_stop, report

    pairs = [(np.asarray(x, np.float32), np.asarray(g, np.float32)) for x, g in pairs]
    if not pairs:
        raise CareError("tune_baselines needs at least one (input, ground truth) pair")
    for x, g in pairs:
        if x.shape != g.shape:
            raise CareError(f"tune_baselines: input of shape {x.shape} and ground truth {g.shape} differ "
                            f"(axes {axes}); the baselines are tuned on pairs on the same grid")
    names = list(names or available_baselines(len(spatial_axes(axes))))
    grids = {**TUNING_GRIDS, **(grids or {})}
    crops = [_centre_crop(x, g, axes, max_voxels) for x, g in pairs]
    total = sum(len(grids.get(n, [{}])) for n in names)
    done = 0
    tuned = {}
    for name in names:
        rows = []
        for params in grids.get(name, [{}]):
            check_stop(stop)
            scores = [evaluate(baseline(name, x, axes=axes, **params), g, axes=axes, name=f"{name} baseline")
                      for x, g in crops]
            rows.append({"params": params, "ssim": float(np.mean([s["ssim"] for s in scores])),
                         "nrmse": float(np.mean([s["nrmse"] for s in scores]))})
            done += 1
            report(progress, done, total, name)
        bs = max(rows, key=lambda r: r["ssim"])
        bn = min(rows, key=lambda r: r["nrmse"])
        tuned[name] = TunedBaseline(name, bs["params"], bs["ssim"], bn["params"], bn["nrmse"], rows)
    return dict(sorted(tuned.items(), key=lambda kv: -kv[1].ssim))


def best_baseline(tuned):
    """``(ssim_best, nrmse_best)``: the tuned baselines that reach the best SSIM and the best NRMSE."""
    vals = list(tuned.values())
    return max(vals, key=lambda t: t.ssim), min(vals, key=lambda t: t.nrmse)

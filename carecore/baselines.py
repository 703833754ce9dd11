"""Classical restoration baselines, callable by name (the paper's comparisons, CARE-NOTES §4).

Each baseline takes the (percentile-normalized) input and returns an image of the same shape;
channels are processed one at a time. Their outputs go through the same metric protocol as CARE.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .axes import check_axes, spatial_axes
from .errors import CareError
from .normalize import compute_percentiles, percentile_normalize


def _gaussian(x, sigma=1.0):
    return ndi.gaussian_filter(x, sigma)


def _median(x, size=3):
    return ndi.median_filter(x, size=size)


def noise_sigma(x):
    """Robust noise level of an image: the median absolute second difference along X (rescaled so
    that white Gaussian noise of standard deviation s gives s); smooth structure hardly contributes.

    Where most second differences are exactly 0 (a photon-counting image of few photons: a background
    of zeros, the noise only where there is signal), the median of the others: the noise where it is,
    not 0 (which would leave a filter scaled by it doing nothing)."""
    x = np.asarray(x, np.float64)
    d = np.abs(x[..., 2:] - 2 * x[..., 1:-1] + x[..., :-2])
    m = np.median(d)
    if m == 0:
        d = d[d > 0]
        m = np.median(d) if d.size else 0.0
    return float(m / 0.6745 / np.sqrt(6.0))


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
        # borders reflected (scikit-image pads with cval=0 by default: the slice's minimum here, which darkened
        # a border as wide as the window, and more the wider the window: SSIM 0.087 at sigma_spatial 8 on the
        # 3D demo, below the noisy input's 0.099; a user trial, 2026-12-06)
        return denoise_bilateral(s - lo, sigma_color=sigma_color, sigma_spatial=sigma_spatial, mode="reflect") + lo

    if x.ndim == 2:
        return one(x)
    return np.stack([one(s) for s in x.reshape(-1, *x.shape[-2:])]).reshape(x.shape)


#: name -> (function, what it is). Bilateral filtering works slice by slice (2D) on volumes.
BASELINES = {
    "gaussian": (_gaussian, "Gaussian low-pass, sigma: its width in pixels"),
    "median": (_median, "median filter, size: its window in pixels"),
    "nlm": (_nlm, "non-local means (scikit-image): averages pixels whose neighbourhoods look alike, "
                  "h = h_factor × the estimated noise level (the larger, the smoother), patch_size and "
                  "patch_distance: the neighbourhood's size and how far alike ones are sought, in pixels"),
    "tv": (_tv, "total-variation denoising (Chambolle): flattens noise and keeps edges, the more the larger "
                "its weight"),
    "bilateral": (_bilateral, "bilateral filter, slice by slice: averages pixels near (sigma_spatial, in "
                              "pixels) and alike in intensity (sigma_color, in normalized intensity)"),
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


def filter_glossary(names):
    """What each classical filter named is, for a table that shows the short names: ``"tv: total-variation
    denoising (Chambolle): ..."``, each name once, in the order given (unknown names are left out).

    Examples
    --------
    >>> filter_glossary(["median", "median", "gaussian"])
    'median: median filter, size: its window in pixels; gaussian: Gaussian low-pass, sigma: its width in pixels'
    """
    known = {**{k: v[1] for k, v in BASELINES.items()}, **{k: v[1] for k, v in OPTIONAL_BASELINES.items()}}
    return "; ".join(f"{n}: {known[n]}" for n in dict.fromkeys(names) if n in known)


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
#: estimated from the image itself. The Gaussian and TV grids reach far past where the demo data peak:
#: on a real image at 5 photons (BPAE, ``benchmarks/bench_quality.py``) the best Gaussian sigma was
#: 24 px, beyond an earlier grid's end at 12, and a best value at a grid's end is not a tuned one.
TUNING_GRIDS = {
    "gaussian": [{"sigma": s} for s in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)],
    "median": [{"size": s} for s in (3, 5, 7)],
    "tv": [{"weight": w} for w in (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)],
    "nlm": [{"h_factor": h} for h in (0.3, 0.5, 0.7, 1.0, 1.4, 2.0)]
           + [{"h_factor": h, "patch_size": 5, "patch_distance": 6} for h in (0.5, 0.7, 1.0)],
    "bm3d": [{"sigma_factor": f} for f in (0.5, 1.0, 1.5)],
    "bm4d": [{"sigma_factor": f} for f in (0.5, 1.0, 1.5)],
    "bilateral": [{"sigma_spatial": s, "sigma_color": c} for s in (1.0, 2.0, 3.0) for c in (0.1, 0.3, 1.0)],
}
#: Where a filter's best value lies at the top of its grid (and it is within reach of the best filter,
#: :data:`EDGE_REACH`), tuning goes on past it: the next value of that
#: parameter (``step``), up to ``limit`` (3D: ``limit3d``), while it improves, at most
#: :data:`EDGE_EXTENSIONS` more values per filter and metric (at 5 photons on the BPAE nuclei NLM was best at
#: the grid's top, h_factor 2, and better at 4: NRMSE 0.0209 -> 0.0188; bilateral at sigma_spatial 3 ->
#: 8: SSIM 0.794 -> 0.837, with the zero-padded borders it had before 2026-12-06; median at size 7 -> 11:
#: SSIM 0.725 -> 0.745)
EDGE_STEPS = {
    "gaussian": {"sigma": (lambda v: v * 1.5, 96.0, 96.0)},
    "tv": {"weight": (lambda v: v * 2, 51.2, 51.2)},
    "nlm": {"h_factor": (lambda v: round(v * 1.4, 3), 8.0, 8.0)},
    "median": {"size": (lambda v: v + 2, 11, 9)},
    "bilateral": {"sigma_spatial": (lambda v: v + 2, 11.0, 7.0), "sigma_color": (lambda v: v * 3, 9.0, 9.0)},
}
#: And below a grid's bottom (at high light a filter is best light): the next value down, to a floor.
EDGE_STEPS_DOWN = {
    "gaussian": {"sigma": (lambda v: round(v / 1.5, 4), 0.2)},
    "tv": {"weight": (lambda v: v / 2, 0.002)},
    "nlm": {"h_factor": (lambda v: round(v / 1.4, 3), 0.1)},
    "bilateral": {"sigma_color": (lambda v: round(v / 3, 4), 0.01)},
}
EDGE_EXTENSIONS = 4
#: A filter is tuned past its grid's top (or below its bottom) for SSIM when its best SSIM on the grid is within
#: 0.05 of the best filter's, for NRMSE when its best NRMSE is within 10 % of the best filter's
EDGE_REACH = (0.05, 1.10)

#: The grids of the validation line drawn during training (seconds, not minutes): without the
#: large NLM windows, which in 3D cost ~30× the small ones.
FAST_GRIDS = {**TUNING_GRIDS, "nlm": [g for g in TUNING_GRIDS["nlm"] if "patch_distance" not in g]}
#: Tuning looks at most this many voxels per image (a centred crop), so that it takes seconds.
TUNING_MAX_VOXELS = 2**20
#: Grid points tuned at once (threads, at most the CPUs this process may use).
TUNING_THREADS = 4


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

    def scores(self, image, truth, *, axes, name="image"):
        """The filter's scores against ``truth`` as tuning reports them: each metric at its own best
        parameters (SSIM at ``params``; NRMSE and PSNR at ``params_nrmse``)."""
        return _each_at_its_best(self, image, truth, axes=axes, truth_axes=axes, name=name)

    def to_dict(self):
        return {"name": self.name, "params": self.params, "ssim": self.ssim, "params_nrmse": self.params_nrmse,
                "nrmse": self.nrmse, "grid": self.grid}

    def label(self):
        return f"{self.name} ({', '.join(f'{k}={v:g}' for k, v in self.params.items())})"


def _each_at_its_best(t, image, truth, *, axes, truth_axes, name):
    """``{"ssim", "nrmse", "psnr"}`` of a tuned filter ``t``: SSIM at its SSIM-best parameters, NRMSE and PSNR
    at its NRMSE-best ones (applied once where they are the same). A table that scores both metrics at the
    SSIM-best parameters shows the filter's NRMSE up to 12 % worse than tuned (a workshop notebook did)."""
    from .metrics import evaluate

    by_ssim = evaluate(t.apply(image, axes=axes), truth, axes=truth_axes, name=name)
    same = (getattr(t, "start_nrmse", ""), t.params_nrmse) == (getattr(t, "start", ""), t.params)
    by_nrmse = by_ssim if same else evaluate(t.apply(image, axes=axes, for_metric="nrmse"), truth, axes=truth_axes,
                                             name=name)
    return {"ssim": by_ssim["ssim"], "nrmse": by_nrmse["nrmse"], "psnr": by_nrmse["psnr"]}


def _centre_crop(x, gt, axes, max_voxels):
    """The same centred crop of ``x`` and ``gt``: the longest spatial side shrinks until ``max_voxels`` fit."""
    sp = [axes.index(a) for a in spatial_axes(axes)]
    size = list(x.shape)
    while int(np.prod(size)) > max_voxels and max(size[i] for i in sp) > 32:
        i = max(sp, key=lambda j: size[j])
        size[i] = max(32, int(size[i] * 0.8))
    sl = tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(x.shape, size))
    return x[sl], gt[sl]


def _centre_crop_yx(x, axes, g, out_axes, max_voxels):
    """The same centred crop in Y and X of an input ``x`` and its ground truth ``g`` (on the output's grid;
    their Y and X are the same), their other axes whole, ``g`` of at most about ``max_voxels``."""
    if g.size <= max_voxels or not all(a in axes and a in out_axes for a in "YX"):
        return x, g
    f = float(np.sqrt(max_voxels / g.size))
    size = {a: max(min(32, g.shape[out_axes.index(a)]), int(g.shape[out_axes.index(a)] * f)) for a in "YX"}

    def crop(arr, ax):
        return arr[tuple(slice((n - size[a]) // 2, (n - size[a]) // 2 + size[a]) if a in size else slice(None)
                         for a, n in zip(ax, arr.shape))]

    return crop(x, axes), crop(g, out_axes)


def tune_baselines(pairs, *, axes, names=None, grids=None, max_voxels=TUNING_MAX_VOXELS, progress=None, stop=None,
                   norms=None):
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
        Each image is reduced to a centred crop of at most this many voxels for tuning, scaled by the
        whole image's percentiles as :meth:`TunedBaseline.apply` scales the whole image (filters such as
        TV and bilateral depend on the scale: a crop of a sample amid background has higher percentiles).
    norms : list of Normalization, optional
        The scaling of each input (default: its own percentiles, of the whole image).

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
    from .progress import Stopped, check_stop, report

    pairs = [(np.asarray(x, np.float32), np.asarray(g, np.float32)) for x, g in pairs]
    if not pairs:
        raise CareError("tune_baselines needs at least one (input, ground truth) pair")
    for x, g in pairs:
        if x.shape != g.shape:
            raise CareError(f"tune_baselines: input of shape {x.shape} and ground truth {g.shape} differ "
                            f"(axes {axes}); the baselines are tuned on pairs on the same grid")
    names = list(names or available_baselines(len(spatial_axes(axes))))
    grids = {**TUNING_GRIDS, **(grids or {})}
    norms = list(norms or [None] * len(pairs))
    crops = []
    for (x, g), norm in zip(pairs, norms):   # (the crop scaled as the whole image: as apply() scales it)
        norm = norm or compute_percentiles(x, axes=axes, name="tuning input")
        xc, gc = _centre_crop(x, g, axes, max_voxels)
        crops.append((percentile_normalize(xc, axes=axes, norm=norm)[0], gc))
    points = [(name, params) for name in names for params in grids.get(name, [{}])]

    def score(name, params):
        if stop is not None and stop():
            return None
        scores = [evaluate(baseline(name, x, axes=axes, normalize=False, **params), g, axes=axes,
                           name=f"{name} baseline") for x, g in crops]
        return {"params": params, "ssim": float(np.mean([s["ssim"] for s in scores])),
                "nrmse": float(np.mean([s["nrmse"] for s in scores]))}

    # the grid's points in parallel threads: the filters and the metrics' filtering release the GIL (on 2
    # cores about half the wall time); the scores do not depend on the order, the progress is reported here
    rows = [None] * len(points)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, min(TUNING_THREADS, cpus))) as pool:
        futures = {pool.submit(score, *point): i for i, point in enumerate(points)}
        try:
            for done, future in enumerate(as_completed(futures), 1):
                rows[futures[future]] = row = future.result()
                if row is None:   # a point asked to stop before it began
                    raise Stopped()
                check_stop(stop)
                report(progress, done, len(points), points[futures[future]][0])
        finally:   # a stop or an error: the points not begun are not computed
            for future in futures:
                future.cancel()
    tuned = {}
    top = (max(r["ssim"] for r in rows), min(r["nrmse"] for r in rows))   # the best filter's, on the grids
    for name in names:
        mine = [r for (n, _), r in zip(points, rows) if n == name]
        past_the_edge(name, mine, score, three_d=len(spatial_axes(axes)) == 3, top=top)
        bs = max(mine, key=lambda r: r["ssim"])
        bn = min(mine, key=lambda r: r["nrmse"])
        tuned[name] = TunedBaseline(name, bs["params"], bs["ssim"], bn["params"], bn["nrmse"], mine)
    return dict(sorted(tuned.items(), key=lambda kv: -kv[1].ssim))


def past_the_edge(name, rows, score, *, three_d, top, metrics=("ssim", "nrmse")):
    """Extend ``rows`` (a filter's scored grid points) past the top of its grid while the best point by
    SSIM or by NRMSE lies there (:data:`EDGE_STEPS`), and below its bottom likewise
    (:data:`EDGE_STEPS_DOWN`): a filter best at the edge of its grid was not tuned.
    Only where the filter is within reach of the best filter on the grids (``top``: its score in each of
    ``metrics``): :data:`EDGE_REACH` (CARE is compared with the best filter; a far weaker one's extension
    cost time, twice the tuning on the 3D demo, and changed no best filter of the benchmark)."""
    from .progress import Stopped

    reach = {"ssim": (max, lambda v, t: v >= t - EDGE_REACH[0]), "nrmse": (min, lambda v, t: v <= t * EDGE_REACH[1])}
    added = 0
    while added < EDGE_EXTENSIONS * len(metrics):
        tried = [r["params"] for r in rows]
        todo = []
        bests = [(reach[m][0](rows, key=lambda r, m=m: r[m]), m, t) for m, t in zip(metrics, top)]
        for best in (b for b, m, t in bests if reach[m][1](b[m], t)):
            todo.extend(nxt for _, nxt in edge_moves(name, tried, best["params"], three_d=three_d) if nxt not in todo)
        if not todo:
            return
        for params in todo:
            row = score(name, params)
            if row is None:
                raise Stopped()
            rows.append(row)
            added += 1


def edge_moves(name, tried, params, *, three_d):
    """``[(parameter, next params)]``: the points past the edges of filter ``name``'s grid (``tried``: the
    parameter dicts scored) that ``params`` lies on, one step up (:data:`EDGE_STEPS`) or down
    (:data:`EDGE_STEPS_DOWN`) within their limits, not tried yet. Empty where ``params`` lies inside its grid
    or at a limit: tuned. Where it is not, :func:`past_the_edge` scores them, and the QC report says of a filter
    left there that its grid's edge was not passed."""
    moves = []
    for key, step, within, at_edge in (
            [(k, st, lambda v, lim=(l3 if three_d else l): v <= lim, max) for k, (st, l, l3) in EDGE_STEPS.get(name, {}).items()]
            + [(k, st, lambda v, f=floor: v >= f, min) for k, (st, floor) in EDGE_STEPS_DOWN.get(name, {}).items()]):
        if key not in params:
            continue
        same = [q[key] for q in tried if key in q and
                all(q.get(o) == params.get(o) for o in set(params) | set(q) if o != key)]
        nxt = {**params, key: step(params[key])}
        if same and params[key] == at_edge(same) and within(nxt[key]) and nxt not in tried:
            moves.append((key, nxt))
    return moves


def best_baseline(tuned):
    """``(ssim_best, nrmse_best)``: the tuned baselines that reach the best SSIM and the best NRMSE."""
    vals = list(tuned.values())
    return max(vals, key=lambda t: t.ssim), min(vals, key=lambda t: t.nrmse)


@dataclass
class OutputBaseline:
    """A classical restoration of what a model makes: a classical start onto the output's grid (the input
    itself, an interpolation along Z, a projection: the model's :meth:`~carecore.CARE.grid_starts`)
    followed by a tuned filter; each metric at its own best start and parameters."""

    name: str
    start: str          # the start of the SSIM-best (label; "" for the input itself)
    params: dict
    ssim: float
    start_nrmse: str    # the start of the NRMSE-best
    params_nrmse: dict
    nrmse: float
    grid: list = field(default_factory=list)   # every (start, parameters) point with its scores
    starts: dict = field(default_factory=dict, repr=False)   # label -> function(image, *, axes)
    output_axes: object = field(default=None, repr=False)    # function: input axes -> output axes
    cache: dict = field(default_factory=dict, repr=False)    # the last two starts of one image, shared by one tuning's filters

    def apply(self, image, *, axes, for_metric="ssim"):
        """The start, then the filter with its tuned parameters, on ``image`` (the model's input, ``axes``)."""
        start, params = (self.start, self.params) if for_metric == "ssim" else (self.start_nrmse, self.params_nrmse)
        key = (id(image), axes, start)   # (the image is kept with it: its id names no other array meanwhile)
        if key in self.cache:
            self.cache[key] = self.cache.pop(key)   # (the most recently used last: the other is dropped first)
        else:
            # two starts of one image kept (the SSIM- and the NRMSE-best: the filters that start from them
            # share them), the least recently used dropped
            kept = [k for k in self.cache if k[:2] == key[:2]][-1:]
            for old in [k for k in self.cache if k not in kept]:
                del self.cache[old]
            self.cache[key] = (image, self.starts[start](image, axes=axes))
        return baseline(self.name, self.cache[key][1], axes=self.output_axes(axes), **params)

    def scores(self, image, truth, *, axes, name="image"):
        """The scores against ``truth`` (on the output's grid) of ``image`` (the model's input, ``axes``) as
        tuning reports them: each metric at its own best start and parameters."""
        return _each_at_its_best(self, image, truth, axes=axes, truth_axes=self.output_axes(axes), name=name)

    def label(self, for_metric="ssim"):
        start, params = (self.start, self.params) if for_metric == "ssim" else (self.start_nrmse, self.params_nrmse)
        text = f"{self.name} ({', '.join(f'{k}={v:g}' for k, v in params.items())})"
        return f"{text} on {start}" if start else text

    def to_dict(self):
        return {"name": self.name, "start": self.start, "params": self.params, "ssim": self.ssim,
                "start_nrmse": self.start_nrmse, "params_nrmse": self.params_nrmse, "nrmse": self.nrmse,
                "grid": self.grid}


#: At most this many of a model's classical starts are tuned with every filter (the others are screened
#: out by a tuned Gaussian filter's SSIM on them: a projection has 17).
SCREENED_STARTS = 3


def tune_output_baselines(model, pairs, *, axes, names=None, grids=None, max_voxels=TUNING_MAX_VOXELS,
                          progress=None, stop=None):
    """Tune classical restorations of what ``model`` makes, on images with ground truth: each filter on
    each of the model's classical starts onto the output's grid (:meth:`~carecore.CARE.grid_starts`: the
    input itself for denoising; nearest, linear and cubic interpolation along Z for upsampling and
    isotropic models, and the cubic one deconvolved along Z where the model knows its axial PSF; the
    input, its top-hat background subtraction and its deconvolutions (after no, a smooth or a top-hat
    background subtraction) for sub-diffraction; the maximum and surface-following projections for a
    projection model), so that CARE is compared with the best classical pipeline, not with a filter on
    the model's own start. Where a model has more than :data:`SCREENED_STARTS` starts, the ones a
    tuned Gaussian filter scores best are kept for the other filters.

    Parameters
    ----------
    model : CARE
        The model (of any kind) whose restorations are compared.
    pairs : list of (input, ground_truth) arrays
        Inputs as the model takes them (``axes``) and ground truths on the output's grid.
    axes : str
        The inputs' axes.
    names, grids, max_voxels, stop
        As for :func:`tune_baselines`.
    progress : callable, optional
        ``progress(done, total, what)`` after each grid point, counted over every start tuned (``what``:
        the filter, and its start where there are several: ``"tv on cubic interpolation"``). Where the
        starts are screened first, after each screened start too, counted over the starts (``what``:
        ``"choosing 3 of 7 starts: gaussian on linear interpolation"``).

    Returns
    -------
    dict
        ``{filter name: OutputBaseline}``, best first (by SSIM).

    Examples
    --------
    >>> tuned = tune_output_baselines(model, [(coarse, truth)], axes="ZYX")   # doctest: +SKIP
    >>> next(iter(tuned.values())).label()                                     # doctest: +SKIP
    'tv (weight=0.2) on cubic interpolation'
    """
    from .progress import check_stop

    starts = model.grid_starts()
    out_axes = model.output_axes(axes)
    # the starts are computed on a centred crop in Y and X (their other axes whole) of at most max_voxels on
    # the output's grid: tuning looks no further (a projection's 17 starts of a large stack cost seconds);
    # a cropped start is scaled by the percentiles of the start of a crop 4 times as large (closer to the whole
    # image's, which apply() scales by; a start that acts in Y and X, a deconvolution or a surface's smoothing,
    # cannot be computed on a thinned image)
    wide = [_centre_crop_yx(np.asarray(x, np.float32), axes, np.asarray(g, np.float32), out_axes, 4 * max_voxels)
            for x, g in pairs]
    pairs = [_centre_crop_yx(x, axes, g, out_axes, max_voxels) for x, g in wide]
    known = {}

    def norms(fn):
        if id(fn) not in known:   # (the screening and the tuning ask for the same start's)
            known[id(fn)] = [None if x.shape == w.shape else   # (not cropped: its own percentiles)
                             compute_percentiles(fn(w, axes=axes), axes=out_axes, name="tuning input")
                             for (w, _), (x, _) in zip(wide, pairs)]
        return known[id(fn)]

    cropped = {}

    def on_grid(label):   # (each start of the crops computed once: the screening and the tuning share it)
        if label not in cropped:
            cropped[label] = [(starts[label](x, axes=axes), g) for x, g in pairs]
        return cropped[label]

    kept = list(starts)
    if len(kept) > SCREENED_STARTS:   # screened by a tuned Gaussian filter
        score = {}
        for j, label in enumerate(kept):
            check_stop(stop)
            score[label] = next(iter(tune_baselines(on_grid(label), axes=out_axes, names=["gaussian"],
                                                    max_voxels=max_voxels, stop=stop,
                                                    norms=norms(starts[label])).values())).ssim
            if progress is not None:   # (the screening said nothing: a user saw no count for its first seconds)
                progress(j + 1, len(kept), f"choosing {SCREENED_STARTS} of {len(kept)} starts: gaussian on "
                                           f"{label or 'the input itself'}")
            leading = sorted(score, key=lambda k: -score[k])[:SCREENED_STARTS]
            cropped = {k: v for k, v in cropped.items() if k in leading}   # (only the leaders' crops kept)
        kept = sorted(kept, key=lambda k: -score[k])[:SCREENED_STARTS]
    def counted(i, label):   # one count over every start's grid (it started again at each start: 40/40, then 1/40)
        if progress is None:
            return None
        return lambda done, total, what: progress(i * total + done, len(kept) * total,
                                                  f"{what} on {label or 'the input itself'}" if len(kept) > 1 else what)

    tuned = {label: tune_baselines(on_grid(label), axes=out_axes, names=names, grids=grids,
                                   max_voxels=max_voxels, progress=counted(i, label), stop=stop,
                                   norms=norms(starts[label]))
             for i, label in enumerate(kept)}
    out, cache = {}, {}   # cache: the last two starts of one image computed (the filters share them)
    for name in next(iter(tuned.values())):
        rows = [{"start": label, **row} for label in kept for row in tuned[label][name].grid]
        bs = max(rows, key=lambda r: r["ssim"])
        bn = min(rows, key=lambda r: r["nrmse"])
        out[name] = OutputBaseline(name, bs["start"], bs["params"], bs["ssim"], bn["start"], bn["params"], bn["nrmse"],
                                   rows, starts, model.output_axes, cache)
    return dict(sorted(out.items(), key=lambda kv: -kv[1].ssim))


#: Iteration counts :func:`richardson_lucy_tuned` tries by default.
RL_ITERATIONS = (1, 2, 3, 5, 8, 12, 20, 30, 50, 80)


def richardson_lucy_tuned(image, truth, psf, *, axes, iterations=RL_ITERATIONS, metric="ssim"):
    """Richardson–Lucy deconvolution with the microscope's PSF, the number of iterations tuned on the
    ground truth (the classical baseline of sub-diffraction restoration).

    The image is shifted so that its 0.1th percentile is 0 (negative values, from read noise or a
    camera offset, are clipped to a small positive floor), scaled to a maximum of about 1, and
    deconvolved as :func:`deconvolve` does (started from the image itself, no clipping of the result;
    one run to the largest count in ``iterations``, kept at each); every result is scored against ``truth`` with :func:`~carecore.evaluate`
    (paper protocol), and the best one by ``metric`` is returned. Iterations act as the
    regularization: too few leave the blur, too many amplify the noise.

    Parameters
    ----------
    image : array_like
        The blurred, noisy image (spatial axes only).
    truth : array_like
        Its ground truth, same shape.
    psf : float, tuple of float or array_like
        Gaussian sigma(s) in pixels, or a PSF image with the image's number of axes (normalized to sum
        1 and centred on its centroid, see :func:`~carecore.simulate.structures.prepare_psf`; convolved
        with reflected borders).
    axes : str
        ``YX`` or ``ZYX``.
    iterations : sequence of int
        Iteration counts tried.
    metric : {"ssim", "nrmse"}
        Which score picks the best count (SSIM: highest; NRMSE: lowest).

    Returns
    -------
    restored : numpy.ndarray (float32)
        The best deconvolution.
    n_iter : int
        Its number of iterations.
    info : dict
        ``ssim``, ``nrmse`` of the best, ``metric``, and ``grid``: every count with its scores (so the
        best of the other metric is there too).

    Examples
    --------
    >>> restored, n, info = richardson_lucy_tuned(low, truth, 2.0, axes="YX")   # doctest: +SKIP
    """
    from .metrics import evaluate
    from .simulate.structures import _convolve, prepare_psf

    x = np.asarray(image, np.float32)
    g = np.asarray(truth, np.float32)
    axes = check_axes(axes, x.ndim, shape=x.shape)
    if axes != spatial_axes(axes):
        raise CareError(f"richardson_lucy_tuned: axes {axes!r}; give one channel with spatial axes only (YX or ZYX)")
    if x.shape != g.shape:
        raise CareError(f"richardson_lucy_tuned: image of shape {x.shape} and ground truth {g.shape} differ (axes {axes})")
    if metric not in ("ssim", "nrmse"):
        raise CareError(f"richardson_lucy_tuned: metric must be 'ssim' or 'nrmse', got {metric!r}")
    its = _iteration_counts(iterations, "richardson_lucy_tuned")
    kernel, sig = prepare_psf(psf, x.ndim)
    if kernel is None:   # (a Gaussian: as deconvolve blurs)
        sig_c = [float(v) for v in sig]
        blur = mirror = lambda w: ndi.gaussian_filter(w, sig_c, mode="reflect")  # noqa: E731
    else:   # (a PSF image: convolved with it, and with its mirror image for the correction)
        flipped = kernel[tuple(slice(None, None, -1) for _ in kernel.shape)]
        blur, mirror = (lambda w: _convolve(w, kernel)), (lambda w: _convolve(w, flipped))
    rows, best = [], None
    for n, r in _richardson_lucy(x, blur, mirror, its):   # (each count scored as it comes: one kept besides the best)
        m = evaluate(r, g, axes=axes, name=f"Richardson-Lucy ({n} iterations)")
        rows.append({"iterations": n, "ssim": m["ssim"], "nrmse": m["nrmse"]})
        better = best is None or (m["ssim"] > best[1]["ssim"] if metric == "ssim" else m["nrmse"] < best[1]["nrmse"])
        if better:
            best = (r, rows[-1])
    r, row = best
    return r, row["iterations"], {"ssim": row["ssim"], "nrmse": row["nrmse"], "metric": metric, "grid": rows}


#: Iteration counts of the Richardson-Lucy starts of the kinds that remove a known blur (the axial kinds,
#: sub-diffraction): each a start the tuned filters are also applied to (:meth:`carecore.CARE.grid_starts`).
RL_START_ITERATIONS = (5, 10, 20, 40)


def _richardson_lucy(v, blur, mirror, counts):
    """``(n, estimate)`` for each count in ``counts``, one at a time (a generator: one estimate is kept): one run
    of Richardson-Lucy iterations of one channel ``v`` (float32) to the largest count, in ``v``'s units (shifted
    so that its 0.1th percentile is 0, values below clipped to a small floor, scaled to about 1, started from
    the image itself and mapped back)."""
    lo = float(np.percentile(v, 0.1))
    scale = max(float(np.percentile(v, 99.99)) - lo, 1e-12)
    y = np.maximum((v - np.float32(lo)) / np.float32(scale), np.float32(1e-6))
    est = y.copy()
    for n in range(1, max(counts) + 1):
        est *= mirror(y / np.maximum(blur(est), np.float32(1e-12)))
        if n in counts:
            yield n, (est * scale + lo).astype(np.float32)


def _iteration_counts(iterations, name):
    counts = [iterations] if np.ndim(iterations) == 0 else list(iterations)
    try:
        counts = sorted({int(n) for n in counts})
    except (TypeError, ValueError):
        counts = []
    if not counts or counts[0] < 1:
        raise CareError(f"{name}: iterations must be positive integers, got {iterations!r}")
    return counts


def _opened_background(v, sizes):
    """A local background of ``v``: the grey opening (its structures narrower than ``sizes`` pixels per axis
    removed) of ``v`` smoothed by a Gaussian of 1 pixel (so that its noise does not pull the opening down)."""
    return ndi.grey_opening(ndi.gaussian_filter(v, [1.0 if n > 1 else 0.0 for n in sizes], mode="reflect"),
                            size=tuple(sizes), mode="reflect")


def subtract_background(image, *, axes, opening):
    """``image`` less its local background: a top-hat filter, the grey opening of width ``opening`` pixels
    (in Y and X, and Z where present) of the image smoothed by 1 pixel subtracted (a widefield image's
    out-of-focus haze and autofluorescence around structures narrower than ``opening``), per channel,
    time point and sample."""
    x = np.asarray(image, np.float32)
    axes = check_axes(axes, x.ndim, shape=x.shape)
    if not opening >= 2:
        raise CareError(f"subtract_background: opening must be at least 2 pixels wide, got {opening!r}")
    sizes = [int(round(opening)) if a in spatial_axes(axes) else 1 for a in axes]
    return x - _opened_background(x, sizes)


def deconvolve(image, sigmas, *, axes, iterations, background_sigma=0.0, background_opening=0.0):
    """Richardson-Lucy deconvolution with a Gaussian PSF, in the image's own intensity units.

    Each channel is shifted so that its 0.1th percentile is 0 (values below it clipped to a small floor),
    scaled to about 1, deconvolved for ``iterations`` and mapped back; with ``background_sigma`` a smooth
    background (a Gaussian filter of that sigma, in pixels of every spatial axis) is subtracted first, as a
    widefield image's autofluorescence is before deconvolution.

    Parameters
    ----------
    image : array_like
    sigmas : dict
        The PSF's Gaussian sigma in pixels per spatial axis (``{"Z": 2.0}``: along Z only); axes not named
        are not blurred.
    axes : str
    iterations : int or sequence of int
        A sequence gives ``{count: deconvolution}`` from one run to the largest count (each the same as
        a run of its own count).
    background_sigma : float
    background_opening : float
        Instead, a local background is subtracted first (:func:`subtract_background`, a top-hat of this
        width in pixels): around thin structures it follows the haze closer than a Gaussian's.

    Examples
    --------
    >>> sharp = deconvolve(stack, {"Z": 2.0}, axes="ZYX", iterations=10)   # doctest: +SKIP
    >>> runs = deconvolve(stack, {"Z": 2.0}, axes="ZYX", iterations=(5, 10, 20))   # doctest: +SKIP
    """
    x = np.asarray(image, np.float32)
    axes = check_axes(axes, x.ndim, shape=x.shape)
    sp = spatial_axes(axes)
    sig = [float(sigmas.get(a, 0.0)) if a in sp else 0.0 for a in axes]
    bg_sig = [float(background_sigma) if a in sp else 0.0 for a in axes]
    if not any(v > 0 for v in sig):
        raise CareError(f"deconvolve: give a PSF sigma > 0 along a spatial axis, got {sigmas!r} (axes {axes})")
    if 0 < background_opening < 2:
        raise CareError(f"deconvolve: background_opening must be at least 2 pixels wide (or 0: none), got "
                        f"{background_opening!r}")
    counts = _iteration_counts(iterations, "deconvolve")
    out = {n: np.empty_like(x) for n in counts}
    for c in range(x.shape[axes.index("C")] if "C" in axes else 1):
        index = tuple(c if a == "C" else slice(None) for a in axes)
        v = np.array(x[index] if "C" in axes else x, np.float32)   # (float32: a start of a large image stays small)
        s_c = [v_ for v_, a in zip(sig, axes) if a != "C"]
        b_c = [v_ for v_, a in zip(bg_sig, axes) if a != "C"]
        blur = lambda w, s_c=s_c: ndi.gaussian_filter(w, s_c, mode="reflect")  # noqa: E731 (symmetric: its own mirror)
        if background_opening > 0:
            v = v - _opened_background(v, [int(round(background_opening)) if a in sp else 1 for a in axes if a != "C"])
        elif background_sigma > 0:
            v = v - ndi.gaussian_filter(v, b_c, mode="reflect")
        for n, est in _richardson_lucy(v, blur, blur, counts):
            out[n][index] = est
    return out[counts[0]] if np.ndim(iterations) == 0 else out


# -- surface projection (3D stack -> 2D image) ---------------------------------------------------
#: Parameters :func:`projection_baselines` tries for the surface-following projection: the lateral
#: sigma of the smoothing that finds the surface (the axial one is 1 slice) and the half-width in
#: slices of the band averaged around it.
SURFACE_GRID = [{"sigma": s, "half_width": w} for s in (1.0, 2.0, 4.0, 8.0) for w in (0, 1, 2, 3)]


def _z_first(stack, axes):
    """``stack`` as (Z, ..., Y, X) float32 with the output axes (``axes`` without Z)."""
    x = np.asarray(stack, np.float32)
    axes = check_axes(axes, x.ndim, shape=x.shape, name="stack")
    if "Z" not in axes or spatial_axes(axes) != "ZYX":
        raise CareError(f"a surface projection needs a ZYX stack (optionally with C), got axes {axes!r} "
                        f"(shape {x.shape})")
    return np.moveaxis(x, axes.index("Z"), 0), axes.replace("Z", "")


def max_projection(stack, *, axes="ZYX"):
    """Maximum-intensity projection along Z.

    Parameters
    ----------
    stack : array_like
        A ZYX stack (optionally with C).
    axes : str

    Returns
    -------
    numpy.ndarray (float32) with ``axes`` without Z.
    """
    x, _ = _z_first(stack, axes)
    return x.max(axis=0)


def surface_projection(stack, *, axes="ZYX", sigma=2.0, sigma_z=1.0, half_width=1, return_height=False):
    """Surface-following projection: the stack's values around the brightest Z of each pixel.

    The surface height is the per-pixel argmax over Z of the stack smoothed with a Gaussian
    (``sigma_z`` slices along Z, ``sigma`` pixels in Y and X, channel by channel); the projection is
    the mean of the (unsmoothed) stack over the ``2 half_width + 1`` slices centred on that height
    (clipped at the stack's ends).

    Parameters
    ----------
    stack : array_like
        A ZYX stack (optionally with C).
    axes : str
    sigma, sigma_z : float
        Smoothing used to find the surface (lateral, axial; pixels).
    half_width : int
        Slices averaged on either side of the surface.
    return_height : bool
        Also return the height map (Z index per pixel, axes as the projection).

    Returns
    -------
    projection : numpy.ndarray (float32), ``axes`` without Z
    height : numpy.ndarray (int), only with ``return_height``

    Examples
    --------
    >>> proj = surface_projection(stack, axes="ZYX", sigma=2, half_width=1)   # doctest: +SKIP
    """
    x, out_axes = _z_first(stack, axes)
    if half_width < 0 or int(half_width) != half_width:
        raise CareError(f"surface_projection: half_width must be an integer >= 0, got {half_width!r}")
    c = out_axes.index("C") + 1 if "C" in out_axes else None
    sig = [sigma_z] + [0.0 if i == c else sigma for i in range(1, x.ndim)]
    height = np.argmax(ndi.gaussian_filter(x, sig), axis=0)
    nz = x.shape[0]
    acc = np.zeros(height.shape, np.float32)
    for d in range(-int(half_width), int(half_width) + 1):
        z = np.clip(height + d, 0, nz - 1)
        acc += np.take_along_axis(x, z[None], axis=0)[0]
    proj = acc / (2 * int(half_width) + 1)
    return (proj, height) if return_height else proj


#: The projections :func:`projection_baselines` knows: name -> (function, parameter grid).
PROJECTIONS = {"mip": (max_projection, [{}]), "surface": (surface_projection, SURFACE_GRID)}


@dataclass
class ProjectionBaseline:
    """A classical projection (``mip`` or ``surface``) followed by a tuned classical denoiser."""

    projection: str
    projection_params: dict
    denoiser: TunedBaseline
    tuned: dict = field(default_factory=dict)   # every denoiser tuned on this projection: {name: TunedBaseline}

    @property
    def ssim(self):
        return self.denoiser.ssim

    def project(self, stack, *, axes="ZYX"):
        """The projection alone (no denoising), with ``axes`` without Z."""
        return PROJECTIONS[self.projection][0](stack, axes=axes, **self.projection_params)

    def apply(self, stack, *, axes="ZYX", for_metric="ssim"):
        """Project ``stack`` and denoise with the tuned filter; returns ``axes`` without Z."""
        return self.denoiser.apply(self.project(stack, axes=axes), axes=axes.replace("Z", ""), for_metric=for_metric)

    def label(self):
        p = ", ".join(f"{k}={v:g}" for k, v in self.projection_params.items())
        return f"{self.projection}{f' ({p})' if p else ''} + {self.denoiser.label()}"

    def to_dict(self):
        return {"projection": self.projection, "projection_params": self.projection_params,
                "denoiser": self.denoiser.to_dict(), "label": self.label()}


def projection_baselines(pairs, *, axes="ZYX", projections=("mip", "surface"), names=None, grids=None,
                         progress=None, stop=None):
    """Classical surface projection + denoising, tuned on stacks with ground-truth projections.

    For each projection method (:data:`PROJECTIONS`: maximum-intensity ``mip``, surface-following
    ``surface``), its parameters (:data:`SURFACE_GRID`) are chosen first, by the mean SSIM (paper
    protocol) of the projection after a Gaussian filter tuned over its grid; then every classical
    denoiser is tuned on that projection with :func:`tune_baselines` and the best by SSIM is kept.

    Parameters
    ----------
    pairs : list of (stack, projection) arrays
        Low-quality stacks (``axes``) and their ground-truth projections (``axes`` without Z).
    axes : str
        Axes of the stacks (ZYX, optionally with C).
    projections : tuple of str
    names, grids
        Denoisers and grids, as for :func:`tune_baselines`.

    Returns
    -------
    dict
        ``{projection: ProjectionBaseline}``.

    Examples
    --------
    >>> tuned = projection_baselines([(stack, truth)], axes="ZYX")        # doctest: +SKIP
    >>> tuned["surface"].label()                                           # doctest: +SKIP
    'surface (sigma=2, half_width=1) + nlm (h_factor=0.7)'
    """
    from .progress import check_stop, report

    out_axes = axes.replace("Z", "")
    pairs = [(np.asarray(s, np.float32), np.asarray(g, np.float32)) for s, g in pairs]
    if not pairs:
        raise CareError("projection_baselines needs at least one (stack, projection) pair")
    for s, g in pairs:
        _, oa = _z_first(s, axes)
        want = np.moveaxis(s, axes.index("Z"), 0).shape[1:]
        if g.shape != want:
            raise CareError(f"projection_baselines: stack of shape {s.shape} ({axes}) projects to {want} "
                            f"({oa}) but the ground truth has shape {g.shape}")
    unknown = [p for p in projections if p not in PROJECTIONS]
    if unknown:
        raise CareError(f"projection_baselines: unknown projection(s) {unknown}; choose from {list(PROJECTIONS)}")
    result = {}
    for i, method in enumerate(projections):
        check_stop(stop)
        fn, grid = PROJECTIONS[method]
        best = None
        for params in grid:
            projected = [(fn(s, axes=axes, **params), g) for s, g in pairs]
            score = next(iter(tune_baselines(projected, axes=out_axes, names=["gaussian"], stop=stop).values())).ssim
            if best is None or score > best[0]:
                best = (score, params, projected)
        _, params, projected = best
        tuned = tune_baselines(projected, axes=out_axes, names=names, grids=grids, stop=stop)
        result[method] = ProjectionBaseline(method, dict(params), next(iter(tuned.values())), tuned)
        report(progress, i + 1, len(projections), method)
    return result

"""Foreground-biased random patches from training pairs, in RAM or streamed to disk (§8).

A pixel is eligible as a patch centre when the max-filtered ground truth (window: half the patch)
exceeds ``fg_threshold`` × its 99.9th percentile; centres are drawn uniformly among eligible pixels.
Images are read memory-mapped and scanned in slabs sized from ``memory_budget``, and with ``out=``
the patches are written straight into ``.npy`` memory maps, so neither the images nor the patches
have to fit in RAM.

Patches are stored normalized (each image with its own percentiles, :data:`DEFAULT_PERCENTILES`),
channels last, with their axes: ``SZYXC`` (3D) or ``SYXC`` (2D); ``S`` indexes patches.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._atomic import fresh_tmp, swap_in
from ..axes import check_axes, spatial_axes
from ..errors import CareError
from ..io import Image
from ..normalize import DEFAULT_PERCENTILES, compute_percentiles
from ..progress import check_stop, report
from .pairs import Pair, PairListing, check_pair_shapes, load_pair

FORMAT_VERSION = 1


@dataclass
class PatchSet:
    """Patch pairs ``X`` (input) and ``Y`` (target), the first ``n_train`` for training, the rest for validation."""

    X: np.ndarray
    Y: np.ndarray
    axes: str
    axes_y: str
    n_val: int
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_train(self):
        return len(self.X) - self.n_val

    @property
    def train(self):
        return self.X[: self.n_train], self.Y[: self.n_train]

    @property
    def val(self):
        return self.X[self.n_train:], self.Y[self.n_train:]

    def save(self, folder):
        """Write ``X.npy``, ``Y.npy`` and ``patches.json`` into ``folder`` (atomically)."""
        folder = Path(folder)
        tmp = fresh_tmp(folder)
        np.save(tmp / "X.npy", np.asarray(self.X))
        np.save(tmp / "Y.npy", np.asarray(self.Y))
        (tmp / "patches.json").write_text(json.dumps(self._meta_json(), indent=1))
        swap_in(tmp, folder)
        self.path = folder
        return folder

    def _meta_json(self):
        return {"format_version": FORMAT_VERSION, "axes": self.axes, "axes_y": self.axes_y,
                "n_patches": int(len(self.X)), "n_val": int(self.n_val), **self.meta}


def load_patches(folder, *, mmap=True):
    """Load a :class:`PatchSet` written by :func:`create_patches` or :meth:`PatchSet.save`."""
    folder = Path(folder)
    meta_path = folder / "patches.json"
    if not meta_path.exists():
        raise CareError(f"{folder}: not a patch folder (no patches.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise CareError(f"{folder}: patch format version {meta.get('format_version')} is not {FORMAT_VERSION}")
    mode = "r" if mmap else None
    X = np.load(folder / "X.npy", mmap_mode=mode)
    Y = np.load(folder / "Y.npy", mmap_mode=mode)
    if len(X) != meta["n_patches"] or len(Y) != meta["n_patches"]:
        raise CareError(f"{folder}: X.npy/Y.npy hold {len(X)}/{len(Y)} patches, patches.json says {meta['n_patches']}")
    rest = {k: v for k, v in meta.items() if k not in ("format_version", "axes", "axes_y", "n_patches", "n_val")}
    return PatchSet(X, Y, meta["axes"], meta["axes_y"], meta["n_val"], rest, folder)


def _resolve(source, axes, axes_high):
    if isinstance(source, Pair):
        return load_pair(source, axes=axes, axes_high=axes_high, mmap=True)
    try:
        low, high = source
    except (TypeError, ValueError):
        raise CareError(f"a patch source must be a Pair or a (low, high) tuple, got {type(source).__name__}") from None
    if not isinstance(low, Image):
        if axes is None:
            raise CareError("give axes= when passing arrays instead of Image objects")
        low = Image(np.asarray(low), check_axes(axes, np.ndim(low), shape=np.shape(low)))
    if not isinstance(high, Image):
        ah = axes_high or axes
        high = Image(np.asarray(high), check_axes(ah, np.ndim(high), name="ground truth", shape=np.shape(high)))
    check_pair_shapes(low, high)
    return low, high


def _to_layout(block, axes, spatial):
    """(spatial..., C) float32 from a block with ``axes``."""
    if "C" not in axes:
        block = block[..., None]
        axes = axes + "C"
    return np.transpose(block, [axes.index(a) for a in spatial + "C"])


def _normalize_block(block, norm, axes):
    b = np.asarray(block, dtype=np.float32)
    lo = np.asarray(norm.lo, np.float32)
    hi = np.asarray(norm.hi, np.float32)
    if "C" in axes:
        shape = [1] * b.ndim
        shape[axes.index("C")] = -1
        lo, hi = lo.reshape(shape), hi.reshape(shape)
    else:
        lo, hi = lo[0], hi[0]
    return (b - lo) / (hi - lo)


def _eligible_centres(high, norm_high, patch_high, fg_threshold, budget_bytes, rng, n, name):
    """Sample ``n`` patch starts (in high's spatial axes) uniformly among eligible centres, slab by slab."""
    sp = spatial_axes(high.axes)
    shape = tuple(high.shape[high.axes.index(a)] for a in sp)
    p = tuple(patch_high)
    valid = tuple(s - q + 1 for s, q in zip(shape, p))
    k = tuple(max(q // 2, 1) for q in p)
    # threshold: fg_threshold × P99.9 of the (normalized, channel-max) target, from a sub-sample
    step = max(1, int(np.ceil(high.data.size / max(budget_bytes // 64, 1024))))
    sample = np.asarray(np.asarray(high.data).reshape(-1)[::step], np.float32)
    lo = min(norm_high.lo) if len(norm_high.lo) > 1 else norm_high.lo[0]
    hi = max(norm_high.hi) if len(norm_high.hi) > 1 else norm_high.hi[0]
    thr = fg_threshold * float(np.percentile((sample - lo) / (hi - lo), 99.9))
    plane = int(np.prod(shape[1:]))
    # a slab's float32 block, its filtered copy, mask and indices stay within the budget
    rows_per_slab = max(1, int(budget_bytes // 48 // max(plane * (1 + (high.data.shape[high.axes.index('C')] if 'C' in high.axes else 0)), 1)))
    counts, cands = [], []
    h0 = k[0] // 2
    for r0 in range(0, valid[0], rows_per_slab):
        r1 = min(r0 + rows_per_slab, valid[0])
        c0, c1 = r0 + p[0] // 2, r1 + p[0] // 2  # centres of starts r0..r1
        a0, a1 = max(c0 - h0, 0), min(c1 + k[0] - h0, shape[0])
        sl = [slice(None)] * high.data.ndim
        sl[high.axes.index(sp[0])] = slice(a0, a1)
        block = _normalize_block(high.data[tuple(sl)], norm_high, high.axes)
        if "C" in high.axes:
            block = block.max(axis=high.axes.index("C"))
        block = np.transpose(block, [high.axes.replace("C", "").index(a) for a in sp])
        mx = ndi.maximum_filter(block, size=k, mode="nearest")
        mx = mx[c0 - a0: c1 - a0]
        inner = (slice(None),) + tuple(slice(q // 2, q // 2 + v) for q, v in zip(p[1:], valid[1:]))
        mask = mx[inner] > thr
        idx = np.flatnonzero(mask)
        counts.append(idx.size)
        if idx.size:
            pick = idx[rng.integers(0, idx.size, size=n)]
            starts = np.stack(np.unravel_index(pick, mask.shape), 1)
            starts[:, 0] += r0
            cands.append(starts)
        else:
            cands.append(None)
    total = sum(counts)
    if total == 0:
        starts = np.stack([rng.integers(0, v, size=n) for v in valid], 1)
        return starts, 0.0
    alloc = rng.multinomial(n, np.asarray(counts) / total)
    chosen = [c[rng.permutation(n)[:a]] for c, a in zip(cands, alloc) if a]
    return np.concatenate(chosen), total / float(np.prod(valid))


def create_patches(sources, patch_size, *, axes=None, axes_high=None, n_patches_per_image=64,
                   fg_threshold=0.4, validation_fraction=0.1, percentiles=DEFAULT_PERCENTILES,
                   out=None, memory_budget=2**30, seed=0, progress=None, stop=None):
    """Sample foreground-biased patch pairs from training pairs.

    Parameters
    ----------
    sources : PairListing, list of Pair, or list of (low, high)
        Pairs of files (read memory-mapped) or of :class:`~carecore.Image` / arrays.
    patch_size : tuple of int
        Patch size along the spatial axes of the low-quality images (e.g. ``(16, 64, 64)`` for ZYX).
    axes, axes_high : str, optional
        Axes of the low-quality images and of the ground truth (default: from the files).
    n_patches_per_image : int
    fg_threshold : float
        Foreground bias: 0 samples uniformly.
    validation_fraction : float
        Share of patches held out for validation (the last ``n_val`` of the set).
    percentiles : (float, float)
        Normalization percentiles, applied per image and channel.
    out : str or Path, optional
        Stream the patches into ``X.npy``/``Y.npy`` memory maps in this folder (written atomically).
    memory_budget : int
        Bytes of working memory for scanning an image (slabs are sized from it).
    seed : int
    progress, stop : callables, optional
        See :mod:`carecore.progress`.

    Returns
    -------
    PatchSet

    Examples
    --------
    >>> patches = create_patches(find_pairs("low", "high"), (16, 64, 64), axes="ZYX")  # doctest: +SKIP
    """
    if isinstance(sources, PairListing):
        sources = sources.pairs
    sources = list(sources)
    if not sources:
        raise CareError("no training pairs given")
    if not 0 <= validation_fraction < 1:
        raise CareError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if n_patches_per_image < 1:
        raise CareError(f"n_patches_per_image must be >= 1, got {n_patches_per_image}")
    rng = np.random.default_rng(seed)
    N = n_patches_per_image * len(sources)
    n_val = int(round(N * validation_fraction))
    if validation_fraction > 0 and N > 1:
        n_val = min(max(n_val, 1), N - 1)
    dest = rng.permutation(N)
    X = Y = None
    tmp = None
    info = {"patch_size": list(patch_size), "percentiles": list(percentiles), "seed": seed,
            "fg_threshold": fg_threshold, "sources": []}
    try:
        for i, source in enumerate(sources):
            check_stop(stop)
            low, high = _resolve(source, axes, axes_high)
            sp, sp_h = spatial_axes(low.axes), spatial_axes(high.axes)
            if len(patch_size) != len(sp):
                raise CareError(f"patch size {tuple(patch_size)} has {len(patch_size)} values but the images have "
                                f"{len(sp)} spatial axes ({sp})")
            p = dict(zip(sp, (int(q) for q in patch_size)))
            for a in sp:
                n_a = low.shape[low.axes.index(a)]
                if n_a < p[a]:
                    raise CareError(f"{low.name}: image of shape {tuple(low.shape)} ({low.axes}) is smaller than the "
                                    f"patch size {tuple(patch_size)} along {a} ({n_a} < {p[a]})")
            cl = low.shape[low.axes.index("C")] if "C" in low.axes else 1
            ch = high.shape[high.axes.index("C")] if "C" in high.axes else 1
            if X is None:
                shape_x = (N,) + tuple(p[a] for a in sp) + (cl,)
                shape_y = (N,) + tuple(p[a] for a in sp_h) + (ch,)
                if out is None:
                    X, Y = np.empty(shape_x, np.float32), np.empty(shape_y, np.float32)
                else:
                    tmp = fresh_tmp(Path(out))
                    X = np.lib.format.open_memmap(tmp / "X.npy", mode="w+", dtype=np.float32, shape=shape_x)
                    Y = np.lib.format.open_memmap(tmp / "Y.npy", mode="w+", dtype=np.float32, shape=shape_y)
                axes_x, axes_y, first = "S" + sp + "C", "S" + sp_h + "C", (low.name, sp, sp_h, cl, ch)
            elif (sp, sp_h, cl, ch) != first[1:]:
                raise CareError(f"{low.name}: axes {sp}->{sp_h} with {cl}->{ch} channels differ from {first[0]} "
                                f"({first[1]}->{first[2]} with {first[3]}->{first[4]} channels)")
            max_samples = max(memory_budget // 64, 4096)
            nl = compute_percentiles(low.data, *percentiles, axes=low.axes, name=low.name, max_samples=max_samples)
            nh = compute_percentiles(high.data, *percentiles, axes=high.axes, name=high.name, max_samples=max_samples)
            starts_h, fg = _eligible_centres(high, nh, [p[a] for a in sp_h], fg_threshold, memory_budget, rng,
                                             n_patches_per_image, high.name)
            starts = {a: starts_h[:, j] for j, a in enumerate(sp_h)}
            for a in sp:
                if a not in starts:  # axes only the input has (projection): uniform
                    starts[a] = rng.integers(0, low.shape[low.axes.index(a)] - p[a] + 1, size=n_patches_per_image)
            for j in range(n_patches_per_image):
                d = dest[i * n_patches_per_image + j]
                sl_l = tuple(slice(starts[a][j], starts[a][j] + p[a]) if a in sp else slice(None) for a in low.axes)
                sl_h = tuple(slice(starts[a][j], starts[a][j] + p[a]) if a in sp else slice(None) for a in high.axes)
                X[d] = _to_layout(_normalize_block(low.data[sl_l], nl, low.axes), low.axes, sp)
                Y[d] = _to_layout(_normalize_block(high.data[sl_h], nh, high.axes), high.axes, sp_h)
            info["sources"].append({"low": str(low.path or f"array {i}"), "high": str(high.path or f"array {i}"),
                                    "norm_low": nl.to_dict(), "norm_high": nh.to_dict(),
                                    "foreground_fraction": round(fg, 4)})
            report(progress, i + 1, len(sources), low.name)
        ps = PatchSet(X, Y, axes_x, axes_y, n_val, info)
        if out is not None:
            X.flush()
            Y.flush()
            (tmp / "patches.json").write_text(json.dumps(ps._meta_json(), indent=1))
            del X, Y, ps
            swap_in(tmp, Path(out))
            tmp = None
            return load_patches(out)
        return ps
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

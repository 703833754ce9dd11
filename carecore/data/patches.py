"""Random patches from training pairs, half of them foreground-biased, in RAM or streamed to disk (§8).

A pixel is eligible as a biased patch's centre when the max-filtered ground truth (window: half the
patch) exceeds ``fg_threshold`` × its 99.9th percentile; centres are drawn uniformly among eligible
pixels. ``fg_fraction`` of each image's training patches are biased (default one half), the rest are
drawn uniformly from its training region: with every patch biased (CSBDeep's rule), a network never
saw a patch without bright structure and restored such regions with blotches (the BPAE nuclei at 5
photons: test SSIM 0.56-0.62 with every patch biased, 0.65 with half; README "Half the training
patches are uniform").
Validation patches are the held-out boxes, placed without regard to content (no foreground bias), so
that the validation read-outs score the image as a user sees it, background included.
Images are read memory-mapped and scanned in slabs sized from ``memory_budget``, and with ``out=``
the patches are written straight into ``.npy`` memory maps, so neither the images nor the patches
have to fit in RAM.

Validation never overlaps training (CARE-NOTES §7): each validation patch is a held-out, patch-sized
box that no training patch touches. Boxes lie on the image's grid of patch-sized cells, drawn at
random and spread out, so that validation sees the image's bright and dim parts as the data has
them (one slab at the end of an image, the rule before, was dimmer and smoother than the rest and
scored blur well: benchmarks/quality-per-minute.md, "Validation boxes spread through the
image"). Boxes are taken from the last images first until they hold about ``validation_fraction`` of all voxels, so with several
images most stay whole for training; an image too small to give boxes and training room is held
out whole. Pairs of one field of view are held out together (``fields``): pairs that share a ground
truth (one sample acquired under several conditions), and the time points of a time-lapse (a pair per
frame), get the same boxes, so that no training patch
of one holds what another's validation box shows; sources of one field that are not the same pixels
(the isotropic kind's slice and its transpose) are held out whole or not at all; fields whose content
continues into one another (``neighbours``: a stack's adjacent slices) are held out in runs, and the
neighbours of a run give no patch (guards). Where every patch
came from is kept in ``positions`` (source pair, a frame of a file with ``T`` or ``S`` axes, and start per
spatial axis; ``meta["sources"]`` lists the pairs, with their frames).

Patches are stored normalized (each image with its own percentiles, :data:`DEFAULT_PERCENTILES`),
channels last, with their axes: ``SZYXC`` (3D) or ``SYXC`` (2D); ``S`` indexes patches.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._atomic import PATCH_FOLDER, check_replaceable, fresh_tmp, recover, swap_in
from ..axes import check_axes, spatial_axes, spatial_in_order
from ..errors import CareError
from ..fingerprint import crop_sketches, fingerprint
from ..io import Image
from ..memory import require_memory
from ..normalize import DEFAULT_PERCENTILES, compute_percentiles
from ..progress import check_stop, report
from .pairs import Pair, PairListing, check_pair_shapes, load_pair

FORMAT_VERSION = 2  # 2: validation from held-out blocks (an end slab, since stop 41 boxes), positions.npy


#: Fewer validation patches than this make the validation scores (and the classical filters' line drawn
#: on them) noisy: said where the number is shown (:func:`few_validation_note`).
FEW_VALIDATION_PATCHES = 8


def few_validation_note(n_val):
    """A sentence for the user where ``n_val`` validation patches are few (0 < n_val <
    :data:`FEW_VALIDATION_PATCHES`), else "".

    Examples
    --------
    >>> few_validation_note(3)[:26]
    'only 3 validation patches:'
    >>> few_validation_note(40)
    ''
    """
    if not 0 < int(n_val) < FEW_VALIDATION_PATCHES:
        return ""
    return (f"only {n_val} validation patch{'es' * (n_val != 1)}: the validation scores and the classical filters' line "
            "rest on them and can mislead; more or larger images (or a smaller patch size) give more")


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
    # (N, 1 + ndim): source pair (after frames are split), start per spatial axis (input's axes)
    positions: np.ndarray | None = None

    def __repr__(self):   # (the dataclass's printed every patch: a user trial's screen of numbers)
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return (f"PatchSet({self.n_train} training + {self.n_val} validation patch pairs, X {self.axes} "
                f"{tuple(self.X.shape)} {self.X.dtype}, Y {self.axes_y} {tuple(self.Y.shape)} {self.Y.dtype}{where})")

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
        check_replaceable(folder, PATCH_FOLDER)
        tmp = fresh_tmp(folder)
        np.save(tmp / "X.npy", np.asarray(self.X))
        np.save(tmp / "Y.npy", np.asarray(self.Y))
        if self.positions is not None:
            np.save(tmp / "positions.npy", np.asarray(self.positions))
        (tmp / "patches.json").write_text(json.dumps(self._meta_json(), indent=1))
        swap_in(tmp, folder, PATCH_FOLDER)
        self.path = folder
        return folder

    def _meta_json(self):
        return {"format_version": FORMAT_VERSION, "axes": self.axes, "axes_y": self.axes_y,
                "n_patches": int(len(self.X)), "n_val": int(self.n_val), **self.meta}


def load_patches(folder, *, mmap=True):
    """Load a :class:`PatchSet` written by :func:`create_patches` or :meth:`PatchSet.save`."""
    folder = Path(folder)
    recover(folder)
    meta_path = folder / "patches.json"
    if not meta_path.exists():
        raise CareError(f"{folder}: not a patch folder (no patches.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") == 1:
        raise CareError(f"{folder}: patches of format 1 drew validation patches from the training regions (they "
                        "overlapped); create the patches again")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CareError(f"{folder}: patch format version {meta.get('format_version')} is not {FORMAT_VERSION}")
    sources = meta.get("sources", [])
    if meta.get("n_val") and sources and "field" not in sources[0] and len({s["high"] for s in sources}) < len(sources):
        raise CareError(f"{folder}: these patches were made before pairs that share a ground truth (several "
                        "conditions of one sample) shared their validation boxes: the other conditions trained "
                        "on them; create the patches again")
    if meta.get("n_val") and "guard_slices" not in meta.get("isotropic", {"guard_slices": 0}):
        raise CareError(f"{folder}: these isotropic patches were made before the slices next to held-out ones were "
                        "kept out of training (they trained on much of what validation scores); create the patches "
                        "again")
    mode = "r" if mmap else None
    X = np.load(folder / "X.npy", mmap_mode=mode)
    Y = np.load(folder / "Y.npy", mmap_mode=mode)
    if len(X) != meta["n_patches"] or len(Y) != meta["n_patches"]:
        raise CareError(f"{folder}: X.npy/Y.npy hold {len(X)}/{len(Y)} patches, patches.json says {meta['n_patches']}")
    rest = {k: v for k, v in meta.items() if k not in ("format_version", "axes", "axes_y", "n_patches", "n_val")}
    pos = folder / "positions.npy"
    return PatchSet(X, Y, meta["axes"], meta["axes_y"], meta["n_val"], rest, folder,
                    np.load(pos) if pos.exists() else None)


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


def _in_model_order(img):
    """``img`` with its spatial axes in a model's order (:func:`~carecore.axes.spatial_in_order`): a transposed
    view (a memory map or a dask array stays unread), or ``img`` itself."""
    import dataclasses

    ordered = spatial_in_order(img.axes)
    if ordered == img.axes:
        return img
    return dataclasses.replace(img, data=np.transpose(img.data, [img.axes.index(a) for a in ordered]), axes=ordered)


def _to_layout(block, axes, spatial):
    """(spatial..., C) float32 from a block with ``axes``."""
    if "C" not in axes:
        block = block[..., None]
        axes = axes + "C"
    return np.transpose(block, [axes.index(a) for a in spatial + "C"])


@dataclass(frozen=True)
class Frame(Image):
    """One frame of a source image with frame axes: a time point (``T``) or a sample (``S``), e.g.
    ``{"T": 3}``; its name says which."""

    frame: dict = field(default_factory=dict)

    @property
    def name(self):
        at = ", ".join(f"{a}={i}" for a, i in self.frame.items())
        return f"{Image.name.fget(self)} [{at}]" if at else Image.name.fget(self)


def split_frames(resolved, keys, labels=None):
    """Pairs with frame axes (``T`` time points, ``S`` samples) as one pair per frame, views of the data
    (memory maps and dask arrays stay unread).

    A ground truth without a frame axis of the input serves every frame along it (repeated acquisitions
    of one fixed sample). The frames' ground-truth keys (:func:`ground_truth_keys`, one per pair in
    ``keys``): the time points of one time-lapse keep one key, so that they validate on the same held-out
    boxes (a place in the sample changes little from one time point to the next: a box trained on at one
    time point and validated on at the next would leak); samples of an ``S`` stack are independent
    images, a key each. ``labels`` (field labels, one per pair, or None) are repeated for the frames
    (with the sample's index for samples with their own ground truth, so that a label does not join them).

    Returns
    -------
    (list of (low, high), list of keys, list of labels or None)
    """
    out, out_keys, out_labels = [], [], []
    for n, ((low, high), key) in enumerate(zip(resolved, keys)):
        f_low = [a for a in low.axes if a in "ST"]
        f_high = [a for a in high.axes if a in "ST"]
        size_low = {a: low.shape[low.axes.index(a)] for a in f_low}
        size_high = {a: high.shape[high.axes.index(a)] for a in f_high}
        bad = [a for a in f_high if size_low.get(a) != size_high[a]]
        if bad:
            has = ", ".join(f"{a}={size_low[a]}" if a in size_low else f"no {a}" for a in bad)
            raise CareError(f"{low.path or 'the input'} has shape {tuple(low.shape)} ({low.axes}) but its ground truth "
                            f"{high.path or ''} has {tuple(high.shape)} ({high.axes}): the ground truth has "
                            f"{', '.join(f'{a}={size_high[a]}' for a in bad)}, the input {has}; a ground truth has the "
                            "input's time points (T) and samples (S), as many of each, or none of the axis (one for all)")
        if not f_low:
            out.append((low, high))
            out_keys.append(key)
            out_labels.append(None if labels is None else labels[n])
            continue
        for index in np.ndindex(*size_low.values()):
            at = dict(zip(f_low, index))

            def frame(img):
                sl = tuple(at[a] if a in at else slice(None) for a in img.axes)
                return Frame(img.data[sl], "".join(a for a in img.axes if a not in at), img.spacing, img.path,
                             img.axes_guessed, frame={a: int(i) for a, i in at.items() if a in img.axes})

            out.append((frame(low), frame(high)))
            own = "S" in f_high   # a sample with its own ground truth: its own key and label
            out_keys.append((key, at["S"]) if own else key)
            out_labels.append(None if labels is None else (labels[n], n, at["S"]) if own else labels[n])
    return out, out_keys, (None if labels is None else out_labels)


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


def _eligible_centres(high, norm_high, patch_high, fg_threshold, budget_bytes, rng, n, name, boxes=()):
    """Sample ``n`` patch starts (in high's spatial axes) uniformly among eligible centres, slab by slab;
    no patch meets any of ``boxes`` (``[(start, stop) per spatial axis], ...``)."""
    sp = spatial_axes(high.axes)
    shape = tuple(high.shape[high.axes.index(a)] for a in sp)
    p = tuple(patch_high)
    valid = tuple(s - q + 1 for s, q in zip(shape, p))
    if fg_threshold == -np.inf:  # uniform draws: every start beside the boxes is eligible, nothing needs reading
        return _uniform_starts(valid, n, rng, boxes, p), 1.0
    k = tuple(max(q // 2, 1) for q in p)
    # threshold per channel: fg_threshold × P99.9 of that (normalized) channel, from a sub-sample; each
    # channel is divided by its own P99.9 so that one threshold fg_threshold applies to the channel maximum
    step = max(1, int(np.ceil(high.data.size / max(budget_bytes // 64, 1024))))
    c_ax = high.axes.index("C") if "C" in high.axes else None
    s_ax = max(1, int(round(step ** (1 / len(sp)))))  # a strided sub-grid: a (cropped) memory map stays unread
    sample = _normalize_block(high.data[tuple(slice(None) if a == "C" else slice(None, None, s_ax) for a in high.axes)],
                              norm_high, high.axes)
    if c_ax is not None:
        p999 = np.percentile(np.moveaxis(sample, c_ax, 0).reshape(sample.shape[c_ax], -1), 99.9, axis=1)
    else:
        p999 = [np.percentile(sample, 99.9)]
    p999 = np.maximum(np.asarray(p999, np.float32), 1e-6)
    thr = fg_threshold
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
        if c_ax is not None:
            block = (block / p999.reshape([-1 if i == c_ax else 1 for i in range(block.ndim)])).max(axis=c_ax)
        else:
            block = block / p999[0]
        block = np.transpose(block, [high.axes.replace("C", "").index(a) for a in sp])
        mx = ndi.maximum_filter(block, size=k, mode="nearest")
        mx = mx[c0 - a0: c1 - a0]
        inner = (slice(None),) + tuple(slice(q // 2, q // 2 + v) for q, v in zip(p[1:], valid[1:]))
        mask = mx[inner] > thr
        for box in boxes:   # starts whose patch would meet a box
            sl = [slice(max(lo - q + 1 - (r0 if j == 0 else 0), 0), max(min(hi, v) - (r0 if j == 0 else 0), 0))
                  for j, ((lo, hi), q, v) in enumerate(zip(box, p, (r1,) + valid[1:]))]
            mask[tuple(sl)] = False
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
        return _uniform_starts(valid, n, rng, boxes, p), 0.0
    if n == 0:  # only the eligible share was asked for
        return np.zeros((0, len(valid)), np.int64), total / float(np.prod(valid))
    alloc = rng.multinomial(n, np.asarray(counts) / total)
    chosen = [c[rng.permutation(n)[:a]] for c, a in zip(cands, alloc) if a]
    return np.concatenate(chosen), total / float(np.prod(valid))


#: Fewest validation boxes an image gives where it has room for them and for training: on the tiny demo
#: (two 16x64x64 volumes, patches 16x32x32) 10 % of the voxels is one box, a validation read-out of one
#: patch, which the filters' line beat by chance in the workshop notebook.
MIN_VALIDATION_BOXES = 3


#: Most fields held out whole in a row where ``neighbours`` says which lie next to each other (the
#: isotropic kind's slices): a run of slices needs two guards, single slices two each, and runs of at
#: most four still let validation see several depths of a deep stack.
HELD_OUT_RUN = 4


class NoRoomForTraining(CareError):
    """Validation (with the guards next to it) would hold out every image: nothing is left to train on."""


def validation_blocks(shapes, patch, fraction, seed=0, fields=None, whole_only=(), neighbours=None):
    """Where each image's held-out validation boxes lie: ``None`` (all training), ``{"whole": True}``
    (the image is held out whole), ``{"whole": False, "boxes": [{axis: [start, stop], ...}, ...]}``
    or ``{"guard": True}`` (no patch: it lies next to an image held out whole, see ``neighbours``).

    Held-out voxels are taken from the last image backwards until they hold ``fraction`` of all
    voxels. Within an image they are patch-sized boxes on the image's grid of patch-sized cells,
    drawn at random (``seed``) and spread out (no two boxes side by side while there is room), so that
    validation sees the whole image, its bright and its dim parts, not one end of it. An image gives
    at least :data:`MIN_VALIDATION_BOXES` where it has room; one that would need all its cells is
    held out whole. Images of one field of view (``fields``) are held out together: the same boxes in
    each, or each whole.

    Parameters
    ----------
    shapes : list of dict
        Spatial sizes per image, ``{"Z": 32, "Y": 128, "X": 128}``.
    patch : dict
        Patch size per axis.
    fraction : float
    seed : int
    fields : list, optional
        A label per image, the field of view it shows: images with the same label (one ground truth
        acquired under several conditions) get the same boxes, so that no training patch of one sees
        what another's validation box holds. Default: every image a field of its own.
    whole_only : collection, optional
        Labels of fields whose images are not pixel for pixel the same view (rotated copies, other
        shapes): such a field is held out whole or not at all.
    neighbours : dict, optional
        The fields next to each field (label to labels), whose content continues its own: the slices
        above and below a slice of a stack. Such fields are held out whole, in runs of neighbours (at
        most :data:`HELD_OUT_RUN`, apart from one another), and a neighbour of one held out that is
        not held out itself is a guard, ``{"guard": True}``: it gives no patch, so that no validation
        image has a trained neighbour. Labels must be among ``fields``.
    """
    blocks = [None] * len(shapes)
    if fraction <= 0:
        return blocks
    fields = list(range(len(shapes))) if fields is None else list(fields)
    if len(fields) != len(shapes):
        raise CareError(f"fields: one label per image, got {len(fields)} for {len(shapes)} images")
    members = {}
    for j, f in enumerate(fields):
        members.setdefault(f, []).append(j)
    neighbours = {} if neighbours is None else neighbours
    unknown = [f for f in neighbours if f not in members] + [g for gs in neighbours.values() for g in gs if g not in members]
    if unknown:
        raise CareError(f"neighbours: {unknown[:3]} are not among the fields' labels")
    # a field with neighbours validates whole, so that its guards can be whole too
    whole_only = set(whole_only) | set(neighbours) | {g for gs in neighbours.values() for g in gs}
    order = list(dict.fromkeys(fields[i] for i in reversed(range(len(shapes)))))   # the last image's field first
    spots = [n for n, f in enumerate(order) if f in whole_only]
    if len(spots) > 1:   # fields held out whole: in a seeded order through the data, not its last ones (one end)
        shuffled = [order[spots[k]] for k in np.random.default_rng([seed, 1]).permutation(len(spots))]
        for n, f in zip(spots, shuffled):
            order[n] = f
    voxels = [int(np.prod(list(s.values()))) for s in shapes]
    patch_voxels = int(np.prod([patch[a] for a in shapes[0]]))
    target = fraction * sum(voxels)
    held = 0.0
    rng = np.random.default_rng(seed)
    # run: the fields held out whole in a row, each a neighbour of the one before; blocked: the neighbours of
    # the runs before (their guards), where no run starts or goes on, so that runs stay apart and short
    taken, run, blocked = set(), [], set()
    pending = iter(order)
    while held < target:
        nxt = [g for g in neighbours.get(run[-1], ()) if g not in taken and g not in blocked] if run else []
        if nxt and len(run) < HELD_OUT_RUN:   # the run goes on into the last one's first free neighbour
            f = nxt[0]
        else:
            for h in run:
                blocked.update(neighbours.get(h, ()))
            run = []
            f = next((g for g in pending if g not in taken and g not in blocked), None)
            if f is None:
                break
        taken.add(f)
        js = members[f]
        shape = shapes[js[-1]]
        if f not in whole_only and any(shapes[j] != shape for j in js):
            raise CareError(f"images {js} are one field of view but differ in shape "
                            f"({[tuple(shapes[j].values()) for j in js]}); give the field in whole_only")
        cells = {a: shape[a] // patch[a] for a in shape}
        n_cells = int(np.prod(list(cells.values())))
        # at least MIN_VALIDATION_BOXES where the image has room: one or two patches are too few to read
        k = max(int(np.ceil((target - held) / (patch_voxels * len(js)))), min(MIN_VALIDATION_BOXES, n_cells - 1), 1)
        if k >= n_cells or f in whole_only:
            for j in js:
                blocks[j] = {"whole": True}
                held += voxels[j]
            run.append(f)
            continue
        run = []
        offset = {a: (shape[a] - cells[a] * patch[a]) // 2 for a in shape}   # the grid centred in the image
        grid = np.stack(np.unravel_index(rng.permutation(n_cells), tuple(cells.values())), 1)
        chosen, rest = [], []
        for c in grid:   # spread: no two boxes touch while there is room, then the rest in random order
            (rest if any(np.abs(c - o).max() < 2 for o in chosen) else chosen).append(c)
            if len(chosen) == k:
                break
        chosen = (chosen + rest)[:k]
        for j in js:   # spread ones first (create_patches may keep fewer)
            blocks[j] = {"whole": False, "boxes": [{a: [int(offset[a] + c[d] * patch[a]), int(offset[a] + (c[d] + 1) * patch[a])]
                                                    for d, a in enumerate(shape)} for c in chosen]}
            held += k * patch_voxels
    for f in taken:   # guards: the free neighbours of the fields held out whole
        if blocks[members[f][0]]["whole"]:
            for g in neighbours.get(f, ()):
                if g not in taken:
                    for j in members[g]:
                        blocks[j] = {"guard": True}
    if not any(b is None or not (b.get("whole") or b.get("guard")) for b in blocks):
        together = ("; images of one field of view (pairs of one ground truth, the time points of a time-lapse, a "
                    "slice and its transpose, or images joined by fields= or --same-field) are held out together: "
                    "more fields of view help" if len(members) < len(shapes) else "")
        if any(b.get("guard") for b in blocks):
            n_guard = sum(bool(b.get("guard")) for b in blocks)
            together += (f"; the {n_guard} image(s) next to the held-out ones (the slices next to held-out slices) are not "
                         "trained on: more slices help")
        raise NoRoomForTraining(f"no room for training patches: holding out validation_fraction={fraction} of images of "
                                f"shape(s) {[tuple(s.values()) for s in shapes]} with patch {tuple(patch.values())} leaves "
                                f"no training region; use more or larger images, a smaller patch, or "
                                f"validation_fraction=0{together}")
    return blocks


def ground_truth_keys(resolved):
    """A key per (low, high) pair: pairs with the same key share their ground truth, i.e. show one
    field of view, e.g. acquired under several conditions (``find_pairs(["low_c1", "low_c2"], "gt")``).

    The same file (and shape), the same Dask array, or ground truths with equal pixels (copies of one
    ground truth in two folders, under other names or in other formats: TIFF, OME-Zarr, arrays) share a
    key. Pixels are compared in full (a slab at a time) only where the shapes and the fingerprints
    (:func:`~carecore.fingerprint.fingerprint`, a few small blocks) agree: other images are barely read.
    """
    keys, by_path, seen = [], {}, {}   # seen: (shape, fingerprint) -> [(key, array)] of the ground truths so far
    for _, high in resolved:
        data = high.data
        where = (os.path.realpath(high.path), tuple(high.shape)) if high.path else None
        lazy = None if isinstance(data, np.ndarray) else ("dask", getattr(data, "name", None))
        if where in by_path:
            keys.append(by_path[where])
        elif lazy in by_path:   # (the same Dask array)
            keys.append(by_path[lazy])
        else:
            # (a time-lapse's or a stack of samples' first frame: the full comparison decides)
            first = tuple(0 if a in "TS" else slice(None) for a in high.axes)
            content = (tuple(high.shape), fingerprint(data[first], "".join(a for a in high.axes if a not in "TS")))
            for key, other in seen.get(content, []):
                if other is data or _same_pixels(other, data):
                    keys.append(key)
                    break
            else:
                keys.append(("field", len(keys)))
                seen.setdefault(content, []).append((keys[-1], data))
        for known in (where, lazy):
            if known is not None and known[-1] is not None:
                by_path.setdefault(known, keys[-1])
    return keys


def _same_pixels(a, b, slab=2**24):
    """Whether two arrays of one shape (in memory, memory-mapped or lazy) hold equal values, compared a slab
    at a time (as float32: a copy in another type of the same values is the same)."""
    step = max(1, slab // max(1, int(np.prod(a.shape[1:]))))
    return all(np.array_equal(np.asarray(a[i:i + step], np.float32), np.asarray(b[i:i + step], np.float32))
               for i in range(0, len(a), step))


def _join_fields(labels, keys):
    """A field per source: the given labels, joined wherever sources share a ground truth (``keys``),
    so that no label can split one ground truth into fields. Returns (field per source, the fields
    whose sources do not all share one ground truth)."""
    parent = list(range(len(labels)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = {}
    for i, tags in enumerate(zip(labels, keys)):
        for tag in enumerate(tags):   # (0, label) and (1, key): either joins i to the first source with it
            if tag in first:
                parent[root(i)] = root(first[tag])
            else:
                first[tag] = i
    fields = [root(i) for i in range(len(labels))]
    keys_of = {}
    for k, f in zip(keys, fields):
        keys_of.setdefault(f, set()).add(k)
    whole_only = {f for f, ks in keys_of.items() if len(ks) > 1}
    return fields, whole_only


def _touching(starts, boxes, patch):
    """Whether each patch (rows of ``starts`` along the boxes' axes, size ``patch``) meets any box."""
    hit = np.zeros(len(starts), bool)
    for box in boxes:
        inside = np.ones(len(starts), bool)
        for j, (lo, hi) in enumerate(box):
            inside &= (starts[:, j] < hi) & (starts[:, j] + patch[j] > lo)
        hit |= inside
    return hit


def _uniform_starts(valid, n, rng, boxes, patch):
    """``n`` starts drawn uniformly among those whose patch meets no box."""
    if n == 0:
        return np.zeros((0, len(valid)), np.int64)
    out, got = [], 0
    for _ in range(64):
        s = np.stack([rng.integers(0, v, size=max(4 * n, 256)) for v in valid], 1)
        s = s[~_touching(s, boxes, patch)] if boxes else s
        out.append(s[: n - got])
        got += len(out[-1])
        if got == n:
            return np.concatenate(out)
    # boxes leave very few starts: the starts of the grid's free cells (some exist: a box never takes them all)
    origin = [box[0] % q for box, q in zip(boxes[0], patch)] if boxes else [0] * len(valid)
    grid = np.stack(np.meshgrid(*[np.arange(o, v, q) for o, v, q in zip(origin, valid, patch)], indexing="ij"), -1)
    grid = grid.reshape(-1, len(valid))
    free = grid[~_touching(grid, boxes, patch)]
    if not len(free):
        raise CareError(f"no training patch of size {tuple(patch)} fits beside the validation boxes {boxes}")
    out.append(free[rng.integers(0, len(free), size=n - got)])
    return np.concatenate(out)


def warn_if_misaligned(low, high, *, max_shift=1.0, max_side=256):
    """Warn (:class:`~carecore.CareWarning`) when a training pair is shifted by more than ``max_shift``
    pixels in Y or X, or in Z where both have the same Z of 8 slices or more (the measurement of
    :func:`~carecore.check_alignment` on the central box of at most ``max_side`` pixels in Y and X: its
    YX and ZX maximum projections, read plane by plane, each plane once: little memory): a network trained
    on misaligned pairs learns to blur."""
    from ..errors import warn
    from .pairs import _compare, _lateral_and_axial_projections, check_alignment

    size = lambda img, a: img.shape[img.axes.index(a)] if a in img.axes else 0  # noqa: E731
    if size(low, "Z") >= 8 and size(low, "Z") == size(high, "Z") and all(size(low, a) == size(high, a) for a in "YX"):
        (yx_l, zx_l), (yx_h, zx_h) = (_lateral_and_axial_projections(img, max_side) for img in (low, high))
        lateral, axial = _compare(yx_l, yx_h, "YX", max_shift), _compare(zx_l, zx_h, "ZX", max_shift, judge="Z")
        shift = {**({"Z": axial["shift"]["Z"]} if axial["shift"] else {}), **lateral["shift"]}
        said = [lateral["aligned"], axial["aligned"]]
        aligned = False if False in said else None if None in said else True
    else:
        al = check_alignment(low, high, max_shift=max_shift, axes="YX", max_side=max_side)
        shift, aligned = al["shift"], al["aligned"]
    text = ", ".join(f"{ax} {v:+.1f}" for ax, v in shift.items())
    if aligned is False:
        warn(f"{low.name}: the low-quality image is shifted from its ground truth ({high.name}) by {text} pixels "
             "(cross-correlation of their maximum projections); a network trained on misaligned pairs learns to "
             "blur: register them first", stacklevel=3)
    elif aligned is None:
        warn(f"{low.name}: no clear match with its ground truth ({high.name}): their smoothed maximum projections "
             f"correlate nowhere well (the best place is {text} pixels off); check that the two show the same field, "
             "in the same orientation", stacklevel=3)


def _check_not_identical(pairs):
    """Refuse pairs whose input is its own ground truth (the same pixels: ``--high`` given the inputs'
    folder); warn where some are. A network learns nothing from them, and its validation loss of 0 would
    win as the best weights over any real training resumed later."""
    from ..errors import warn

    same = [low.name for low, high in pairs
            if tuple(low.shape) == tuple(high.shape) and low.axes == high.axes
            and (fp := fingerprint(low.data, low.axes)) is not None and fp == fingerprint(high.data, high.axes)]
    if not same:
        return
    names = ", ".join(same[:3]) + (" ..." if len(same) > 3 else "")
    if len(same) == len(pairs):
        raise CareError(f"every training input is the same image as its ground truth ({names}): give the "
                        "low-quality images as the inputs (--low; in Python, each pair's first image) and the high-quality "
                        "ones as their ground truth (--high; each pair's second)")
    warn(f"{len(same)} of {len(pairs)} training inputs are the same image as their ground truth ({names}): "
         "a network learns nothing from those pairs; check the folders", stacklevel=3)


def create_patches(sources, patch_size, *, axes=None, axes_high=None, n_patches_per_image=64,
                   fg_threshold=0.4, fg_fraction=0.5, validation_fraction=0.1, percentiles=DEFAULT_PERCENTILES,
                   out=None, memory_budget=2**30, seed=0, progress=None, stop=None, meta=None, fields=None,
                   shared_boxes=False, neighbours=None, check_pairs=True):
    """Sample patch pairs from training pairs, a share of them foreground-biased.

    Parameters
    ----------
    sources : PairListing, list of Pair, or list of (low, high)
        Pairs of files (read memory-mapped) or of :class:`~carecore.Image` / arrays. Images with time
        points (``T``) or samples (``S``) give a pair per frame (:func:`split_frames`; the time points of
        one time-lapse are one field of view).
    patch_size : tuple of int
        Patch size along the spatial axes of the low-quality images (e.g. ``(16, 64, 64)`` for ZYX).
    axes, axes_high : str, optional
        Axes of the low-quality images and of the ground truth (default: from the files).
    n_patches_per_image : int
        Patches per image (per frame of an image with ``T`` or ``S``).
    fg_threshold : float
        Foreground bias of the training patches: 0 samples uniformly. Validation patches are the
        held-out boxes, placed without regard to content.
    fg_fraction : float
        Share of each image's training patches drawn with the foreground bias; the rest are drawn
        uniformly from the training region (1: all biased).
    validation_fraction : float
        Share of the image voxels held out for validation, as patch-sized boxes spread through the
        image that no training patch touches (see :func:`validation_blocks`); one validation patch per
        box (at most the image's share of ``n_patches_per_image``: boxes beyond it are not held out),
        the last ``n_val`` of the set. Pairs that share a ground truth (the same file or equal pixels:
        one field of view acquired under several conditions), and the time points of a time-lapse,
        share their boxes, so that no training patch of one holds what another's validation patch shows.
    percentiles : (float, float)
        Normalization percentiles, applied per image and channel.
    out : str or Path, optional
        Stream the patches into ``X.npy``/``Y.npy`` memory maps in this folder (written atomically).
    memory_budget : int
        Bytes of working memory for scanning an image (slabs are sized from it).
    seed : int
    progress, stop : callables, optional
        See :mod:`carecore.progress`.
    meta : dict, optional
        More to record in the patch set's metadata (e.g. how a model kind made its pairs).
    fields : list, optional
        A hashable label per source, the field of view it shows; sources of one field are held out
        together. A label applies to all the time points of a source (the samples of an ``S`` stack
        with their own ground truths stay apart, each its own field). Sources that share a ground truth
        (:func:`ground_truth_keys`) are always one field, whatever their labels; labels join more (e.g. a
        slice and its transpose). A field whose sources do not all share one ground truth is held out
        whole or not at all, such fields in a seeded order through the data rather than its last ones
        (see ``shared_boxes``). Default: one field per ground truth.
    shared_boxes : bool
        The sources that ``fields`` joins are views of one place on one grid (time points or repeats of
        one position saved as separate files): they get the same boxes, like the pairs of one ground
        truth, and must have one shape. Never for views on other grids (a slice and its transpose, a
        stack and its rotation): their boxes would lie on other content, and validation would leak.
        Boxes are in pixels: a sample that drifts between time points moves under them. Default False:
        each held out whole or not at all.
    neighbours : dict, optional
        For ``fields``' labels, the labels of the fields whose content lies next to theirs (a stack's
        slices above and below): fields held out whole come in runs, and their neighbours that are not
        held out give no patch (see :func:`validation_blocks`), so that validation has no trained
        neighbour. The isotropic kind gives it for its slices.
    check_pairs : bool
        Refuse pairs whose input is its own ground truth and warn about misaligned ones (default); False
        for pairs a model kind made from its own images (the isotropic kind's degraded slices: its noise
        given back made the alignment check see shifts that cannot be there).

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
    if not 0 <= fg_fraction <= 1:
        raise CareError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
    rng = np.random.default_rng(seed)
    if out is not None:
        check_replaceable(out, PATCH_FOLDER)   # before the work: never a folder of the user's
    resolved = [_resolve(source, axes, axes_high) for source in sources]  # memory maps: headers only
    # images saved transposed (XY, XYZ) seen in a model's order, as the patch size counts it (views: nothing read;
    # a stack saved as XYZ had been cut 8 along X and 32 along Z, and laid out X first: a review)
    resolved = [(_in_model_order(low), _in_model_order(high)) for low, high in resolved]
    if check_pairs:   # (not for pairs a kind made from its own images: they cannot be misaligned)
        _check_not_identical(resolved)
        for low, high in resolved:
            warn_if_misaligned(low, high)
    keys = ground_truth_keys(resolved) if validation_fraction > 0 else list(range(len(resolved)))
    if fields is not None:
        fields = list(fields)
        if len(fields) != len(resolved):
            raise CareError(f"fields: one label per source, got {len(fields)} for {len(resolved)} sources")
        try:
            set(fields)
        except TypeError:
            raise CareError(f"fields: labels must be hashable (str, int, tuple), got {fields!r}") from None
    resolved, keys, fields = split_frames(resolved, keys, fields)
    first = None
    for low, high in resolved:
        sp, sp_h = spatial_axes(low.axes), spatial_axes(high.axes)
        cl = low.shape[low.axes.index("C")] if "C" in low.axes else 1
        ch = high.shape[high.axes.index("C")] if "C" in high.axes else 1
        if first is None:
            first = (low.name, sp, sp_h, cl, ch)
            if len(patch_size) != len(sp):
                raise CareError(f"patch size {tuple(patch_size)} has {len(patch_size)} values but the images have "
                                f"{len(sp)} spatial axes ({sp})")
        elif (sp, sp_h, cl, ch) != first[1:]:
            raise CareError(f"{low.name}: axes {sp}->{sp_h} with {cl}->{ch} channels differ from {first[0]} "
                            f"({first[1]}->{first[2]} with {first[3]}->{first[4]} channels)")
        for a, q in zip(sp, patch_size):
            n_a = low.shape[low.axes.index(a)]
            if n_a < q:
                # (a 2D image read as a stack by --axes ZYX was told of the patch size: a user trial)
                single = (" — a single plane: for a 2D image, train a 2D model (axes YX, `--axes YX`)"
                          if a == "Z" and n_a == 1 else "")
                raise CareError(f"{low.path or low.name}: image of shape {tuple(low.shape)} ({low.axes}) is smaller "
                                f"than the patch size {tuple(patch_size)} along {a} ({n_a} < {q}){single}")
    _, sp, sp_h, cl, ch = first
    p = dict(zip(sp, (int(q) for q in patch_size)))
    labels = fields
    fields, whole_only = _join_fields(keys if fields is None else fields, keys)
    if neighbours:   # in the joined fields' names
        if labels is None:
            raise CareError("neighbours: give the fields (labels) they name")
        joined = dict(zip(labels, fields))
        unknown = [x for label, others in neighbours.items() for x in (label, *others) if x not in joined]
        if unknown:   # a typo, or the samples of an S stack (labelled (label, source, sample))
            raise CareError(f"neighbours: {unknown[:3]} are not among the fields' labels")
        near = {}
        for label, others in neighbours.items():
            near.setdefault(joined[label], []).extend(joined[o] for o in others if joined[o] != joined[label])
        neighbours = near
    if shared_boxes:
        whole_only = set()
        by_field = {}
        for (lo, _), f in zip(resolved, fields):
            by_field.setdefault(f, []).append(lo)
        for members in by_field.values() if validation_fraction > 0 else ():
            shapes = {tuple(lo.shape[lo.axes.index(a)] for a in sp_h) for lo in members}
            if len(shapes) > 1:
                names = [str(lo.path or "array") for lo in members]
                names = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                raise CareError(f"{names}: one field of view (shared validation boxes) but their shapes {sorted(shapes)} "
                                f"along {sp_h} differ; only images on one grid share boxes")
    blocks = validation_blocks([{a: lo.shape[lo.axes.index(a)] for a in sp_h} for lo, _ in resolved],
                               {a: p[a] for a in sp_h}, validation_fraction, seed=seed, fields=fields,
                               whole_only=whole_only, neighbours=neighbours)
    field_index = {f: n for n, f in enumerate(dict.fromkeys(fields))}
    counts = []  # (n_train, n_val) per image
    for blk, (low, _) in zip(blocks, resolved):
        if blk is None:
            counts.append((n_patches_per_image, 0))
        elif blk.get("guard"):   # next to a slice held out whole: no patch
            counts.append((0, 0))
        elif blk["whole"]:
            counts.append((0, n_patches_per_image))
        else:   # one validation patch per box: as many as the image's share of patches, boxes beyond it freed
            share = len(blk["boxes"]) * np.prod([p[a] for a in sp_h]) / np.prod([low.shape[low.axes.index(a)] for a in sp_h])
            nv = max(1, int(round(n_patches_per_image * share)))
            nv = min(nv, n_patches_per_image - 1, len(blk["boxes"])) if n_patches_per_image > 1 else 1
            blk["boxes"] = blk["boxes"][:nv]
            counts.append((n_patches_per_image - nv, nv))
    n_train = sum(c[0] for c in counts)
    n_val = sum(c[1] for c in counts)
    if n_train == 0:
        raise CareError(f"no training patches left: with n_patches_per_image={n_patches_per_image} and "
                        f"validation_fraction={validation_fraction} every patch would be for validation")
    N = n_train + n_val
    dest_train = iter(rng.permutation(n_train))
    dest_val = iter(range(n_train, N))
    shape_x = (N,) + tuple(p[a] for a in sp) + (cl,)
    shape_y = (N,) + tuple(p[a] for a in sp_h) + (ch,)
    positions = np.zeros((N, 1 + len(sp)), np.int64)
    tmp = None
    if out is None:
        need = 4 * (int(np.prod(shape_x)) + int(np.prod(shape_y)))
        # e.g. 64 patches for each of a long time-lapse's frames
        require_memory(need, f"{N} patch pairs of {tuple(shape_x[1:])} -> {tuple(shape_y[1:])}",
                       "write them to disk (out=; `carecore patches --out DIR`, then `carecore train --patches DIR`) or "
                       "take fewer per image (n_patches_per_image, --n-per-image; each time point or sample of a T or S "
                       "pair is an image)")
        X, Y = np.empty(shape_x, np.float32), np.empty(shape_y, np.float32)
    else:
        tmp = fresh_tmp(Path(out))
        X = np.lib.format.open_memmap(tmp / "X.npy", mode="w+", dtype=np.float32, shape=shape_x)
        Y = np.lib.format.open_memmap(tmp / "Y.npy", mode="w+", dtype=np.float32, shape=shape_y)
    info = {"patch_size": list(patch_size), "percentiles": list(percentiles), "seed": seed,
            "fg_threshold": fg_threshold, "fg_fraction": fg_fraction,
            "validation": "held-out patch-sized boxes spread through the image, that no training patch touches",
            "sources": [], **(meta or {})}
    try:
        for i, ((low, high), blk, (nt, nv)) in enumerate(zip(resolved, blocks, counts)):
            check_stop(stop)
            max_samples = max(memory_budget // 64, 4096)
            nl = compute_percentiles(low.data, *percentiles, axes=low.axes, name=low.name, max_samples=max_samples)
            nh = compute_percentiles(high.data, *percentiles, axes=high.axes, name=high.name, max_samples=max_samples)
            fgs = []
            boxes = [[tuple(b[a]) for a in sp_h] for b in blk.get("boxes", ())] if blk is not None else []
            for n, region, dests in ((nt, "train", dest_train), (nv, "val", dest_val)):
                if n == 0:
                    continue
                if region == "train":  # a share fg-biased, the rest uniform, none meeting a box
                    n_fg = int(fg_fraction * n)
                    if fg_fraction * n - n_fg > 0:  # the fractional patch by chance: one patch can be biased
                        n_fg += int(rng.random() < fg_fraction * n - n_fg)
                    starts_h, fg = _eligible_centres(high, nh, [p[a] for a in sp_h], fg_threshold, memory_budget,
                                                     rng, n_fg, high.name, boxes)
                    fgs.append(fg)
                    if n_fg < n:
                        uni, _ = _eligible_centres(high, nh, [p[a] for a in sp_h], -np.inf, memory_budget, rng,
                                                   n - n_fg, high.name, boxes)
                        starts_h = np.concatenate([starts_h, uni])
                elif boxes:  # validation: one patch per box
                    starts_h = np.array([[lo for lo, _ in box] for box in boxes], np.int64)
                else:  # validation: a whole image, uniform
                    starts_h, _ = _eligible_centres(high, nh, [p[a] for a in sp_h], -np.inf, memory_budget, rng,
                                                    n, high.name)
                starts = {a: starts_h[:, j] for j, a in enumerate(sp_h)}
                for a in sp:
                    if a not in starts:  # axes only the input has (projection): uniform
                        starts[a] = rng.integers(0, low.shape[low.axes.index(a)] - p[a] + 1, size=n)
                for j in range(n):
                    d = next(dests)
                    sl_l = tuple(slice(starts[a][j], starts[a][j] + p[a]) if a in sp else slice(None) for a in low.axes)
                    sl_h = tuple(slice(starts[a][j], starts[a][j] + p[a]) if a in sp else slice(None) for a in high.axes)
                    X[d] = _to_layout(_normalize_block(low.data[sl_l], nl, low.axes), low.axes, sp)
                    Y[d] = _to_layout(_normalize_block(high.data[sl_h], nh, high.axes), high.axes, sp_h)
                    positions[d] = [i] + [int(starts[a][j]) for a in sp]
            (sketch, rare), (sketch_high, rare_high) = crop_sketches(low.data, low.axes), crop_sketches(high.data, high.axes)
            info["sources"].append({"low": str(low.path or f"array {i}"), "high": str(high.path or f"array {i}"),
                                    "fingerprint": fingerprint(low.data, low.axes),   # (a copy's too)
                                    "sketch": sketch, "sketch_rare": rare,             # (a crop's too)
                                    "sketch_high": sketch_high, "sketch_high_rare": rare_high,   # (a new noise draw of it)
                                    "shape": [int(n) for n in low.shape],
                                    "norm_low": nl.to_dict(), "norm_high": nh.to_dict(),
                                    "foreground_fraction": round(float(fgs[0]), 4) if fgs else None,
                                    **({"frame": low.frame} if isinstance(low, Frame) else {}),
                                    "field": field_index[fields[i]], "validation_block": blk,
                                    "n_train": nt, "n_val": nv})
            report(progress, i + 1, len(resolved), low.name)
        axes_x, axes_y = "S" + sp + "C", "S" + sp_h + "C"
        ps = PatchSet(X, Y, axes_x, axes_y, n_val, info, positions=positions)
        if out is not None:
            X.flush()
            Y.flush()
            np.save(tmp / "positions.npy", positions)
            (tmp / "patches.json").write_text(json.dumps(ps._meta_json(), indent=1))
            del X, Y, ps
            swap_in(tmp, Path(out), PATCH_FOLDER)
            tmp = None
            return load_patches(out)
        return ps
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

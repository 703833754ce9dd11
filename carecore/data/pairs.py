"""Training pairs from folders (CARE-NOTES §8).

Files with the same name in one or several low-quality folders and a ground-truth folder form
pairs; files without a partner are reported, not dropped silently. Each pair's shapes are checked,
and its translation is measured by cross-correlation so that a misaligned pair is reported with
its shift.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..axes import spatial_axes
from ..errors import CareError
from ..prediction.frames import FRAME_AXES
from ..io import TIFF_SUFFIXES, Image, list_images, peek_axes, read_image  # noqa: F401 (TIFF_SUFFIXES: kept importable)


@dataclass(frozen=True)
class Pair:
    """A low-quality file and its ground truth."""

    low: Path
    high: Path

    @property
    def name(self):
        return self.low.name


@dataclass
class PairListing:
    """What :func:`find_pairs` found: the pairs and the files without a partner."""

    pairs: list = field(default_factory=list)
    unmatched_low: list = field(default_factory=list)
    unmatched_high: list = field(default_factory=list)

    def __len__(self):
        return len(self.pairs)

    def __iter__(self):
        return iter(self.pairs)

    def report(self):
        """A short human-readable summary."""
        lines = [f"{len(self.pairs)} pair(s)"]
        if self.unmatched_low:
            lines.append("low-quality files without ground truth: " + ", ".join(str(p) for p in self.unmatched_low))
        if self.unmatched_high:
            lines.append("ground-truth files without low-quality partner: " + ", ".join(str(p) for p in self.unmatched_high))
        return "\n".join(lines)


def _images(folder):
    """{name: path} of the TIFF files and OME-Zarr images (``*.ome.zarr`` folders) in ``folder``."""
    return {p.name: p for p in list_images(folder)}


def find_pairs(low_dirs, high_dir):
    """Pair images by name between one or several low-quality folders and a ground-truth folder.

    Images are TIFF files and OME-Zarr folders (``a.ome.zarr`` pairs with ``a.ome.zarr``).

    Parameters
    ----------
    low_dirs : str, Path or list of them
        Each low-quality folder (e.g. one per acquisition condition) pairs with ``high_dir``.
    high_dir : str or Path

    Returns
    -------
    PairListing

    Examples
    --------
    >>> listing = find_pairs(["low_c1", "low_c2"], "gt")  # doctest: +SKIP
    >>> print(listing.report())                          # doctest: +SKIP
    """
    if isinstance(low_dirs, (str, Path)):
        low_dirs = [low_dirs]
    high = _images(high_dir)
    listing = PairListing()
    used = set()
    for d in low_dirs:
        for name, path in _images(d).items():
            if name in high:
                listing.pairs.append(Pair(path, high[name]))
                used.add(name)
            else:
                listing.unmatched_low.append(path)
    listing.unmatched_high = [p for n, p in high.items() if n not in used]
    if not listing.pairs:
        # (a user trial's empty folder was told that its images had no namesakes)
        empty = ([str(d) for d in low_dirs] if not listing.unmatched_low else []) + ([str(high_dir)] if not high else [])
        if empty:
            empty = list(dict.fromkeys(empty))
            raise CareError(f"no pairs: {' and '.join(empty)} hold{'s' if len(empty) == 1 else ''} no images (TIFF files "
                            "or OME-Zarr folders)")
        raise CareError(
            f"no pairs: none of the images (TIFF or OME-Zarr) in {', '.join(map(str, low_dirs))} has a namesake in {high_dir}"
        )
    return listing


def check_pair_shapes(low, high):
    """Check that ``high`` (axes subset of ``low``'s, channels aside) matches ``low`` on every shared axis."""
    if not set(spatial_axes(high.axes)) <= set(spatial_axes(low.axes)):
        raise CareError(
            f"the ground truth {high.path or high.name} has axes {high.axes!r} but its input (low) "
            f"{low.path or low.name} has {low.axes!r}: the ground truth may drop axes of the input (projection), "
            "not add new ones"
            + ("; its Z has 1 slice: were 3D axes (ZYX) given for 2D images?"
               if "Z" in high.axes and high.shape[high.axes.index("Z")] == 1 else "")
        )
    for a in spatial_axes(high.axes):
        n_low, n_high = low.shape[low.axes.index(a)], high.shape[high.axes.index(a)]
        if n_low != n_high:
            hint = ""
            if a == "Z" and n_high >= 1.5 * n_low:   # a coarse stack and its fine ground truth (upsampling)
                hint = (f"; a coarse stack and its fine ground truth ({n_high / n_low:.3g}× its slices)? Upsampling "
                        "trains on the coarse stacks interpolated onto the fine grid: interpolate them first "
                        "(carecore.models.upsampling.interpolate_z(stack, factor, axis), as the demo's "
                        "upsampling/train/low are made); the model then restores the coarse stacks themselves")
            raise CareError(
                f"{low.path} has shape {tuple(low.shape)} ({low.axes}) but {high.path} has "
                f"{tuple(high.shape)} ({high.axes}): sizes along {a} differ{hint}"
            )


def load_pair(pair, *, axes=None, axes_high=None, mmap=False, check_shapes=True):
    """Read a :class:`Pair` and check its shapes; returns ``(low, high)`` :class:`~carecore.Image`.

    ``axes`` applies to the low-quality file, ``axes_high`` to the ground truth (default: the same
    as ``axes`` when the dimensions agree, else what the file says). ``check_shapes=False`` leaves the
    grid comparison to the caller (a coarse stack and its fine ground truth, for upsampling).
    """
    low = read_image(pair.low, axes=axes, mmap=mmap)
    if axes_high is None and axes is not None:
        same = len(peek_axes(pair.high)[1]) == len(axes)   # (not a projection's YX given a Z of size 1)
        try:
            high = read_image(pair.high, axes=axes if same else None, mmap=mmap)
        except CareError:
            high = read_image(pair.high, mmap=mmap)
    else:
        high = read_image(pair.high, axes=axes_high, mmap=mmap)
    if check_shapes:
        check_pair_shapes(low, high)
    return low, high


def _central_box(img, crop, max_side):
    """The first frame (T, S) of ``img``, cropped to its central ``max_side`` pixels along the axes ``crop``
    (None: whole), as a view, with its axes."""
    def middle(n):
        start = max(0, (n - max_side) // 2) if max_side else 0
        return slice(start, start + max_side) if max_side else slice(None)

    box = tuple(0 if a in FRAME_AXES else middle(n) if a in crop else slice(None) for a, n in zip(img.axes, img.shape))
    return img.data[box], "".join(a for a in img.axes if a not in FRAME_AXES)


def _central_projection(img, keep, max_side=None):
    """The first frame (T, S) of the central box (``max_side`` per kept axis; None: whole), its maximum
    over the other axes (Z, C) but ``keep``, in float32, read a block at a time."""
    data, axes = _central_box(img, keep, max_side)
    view = np.transpose(data, [i for i, a in enumerate(axes) if a not in keep] + [axes.index(a) for a in keep])
    out = None
    for idx in np.ndindex(*view.shape[:view.ndim - len(keep)]):
        block = np.asarray(view[idx], np.float32)   # (a memory map or a Dask array read in part)
        out = block.copy() if out is None else np.maximum(out, block, out=out)
    return out


#: Gaussian sigma (pixels) the projections compared by :func:`check_alignment` are smoothed with: a low-light
#: input's noise otherwise hides its match with the ground truth.
ALIGNMENT_SIGMA = 1.5
#: And the sigma (pixels) of the broad background removed first (an uneven illumination two fields share).
ALIGNMENT_BACKGROUND = 16.0
#: How much better a shift must match than no shift to be one: what no shift leaves unmatched (1 - the
#: correlation) is this many times what the shift leaves. On aligned 64-96 px nuclei at 1-2 photons noise put
#: the peak 1-2 px off, where it matched about as well (2 of 20 pairs were called misaligned without it; none
#: of 120 at 1, 2 and 8 photons with it); a 2 px shift is found in 0-8 of 20 pairs at 1-2 photons, in every one
#: at 8 (a real BPAE nuclei image at 100 photons: 1.9).
ALIGNMENT_MARGIN = 1.15


def _shift(a, b):
    """How far ``a`` must move to match ``b`` (phase correlation, to a quarter pixel), through a window:
    the circular correlation of a crop's cut edges would pull the peak towards no shift."""
    from skimage.registration import phase_cross_correlation

    window = np.ones(())
    for n in a.shape:   # (a Hann window along each axis of 8 or more pixels)
        window = window[..., None] * (np.hanning(n) if n >= 8 else np.ones(n))
    return np.asarray(phase_cross_correlation(b * window, a * window, upsample_factor=4, normalization=None)[0], float)


def check_alignment(low, high, *, max_shift=1.0, axes=None, max_side=None):
    """Measure the translation between a pair by cross-correlation.

    Parameters
    ----------
    low, high : Image
        Along the spatial axes where their sizes differ (a finer Z, a projection's Z), and along the
        channels, their maximum projections are compared; of a time-lapse, its first frame.
    max_shift : float
        A pair is called misaligned when its shift exceeds this many pixels along any axis, a half of the
        images (along their longest axis) gives it too, within a pixel, and the match correlates (above
        0.3, the projections smoothed by :data:`ALIGNMENT_SIGMA` and their broad background, wider than
        :data:`ALIGNMENT_BACKGROUND`, removed first) clearly better than no shift (what is left unmatched
        shrinks by :data:`ALIGNMENT_MARGIN`). Where the images match as they are about as well, the peak
        was noise's: the pair is aligned and the shift said is 0. Where the shift exceeds it but nothing
        correlates that well (unrelated images, or noise), the pair is neither: ``aligned`` is None.
    axes : str, optional
        The axes to measure along (default: the spatial axes both have at one size).
    max_side : int, optional
        Compare the central box of at most this many pixels per axis (default: the whole images).

    Returns
    -------
    dict
        ``{"shift": {axis: pixels}, "aligned": bool or None, "clear": bool, "name": file name}``. The shift
        is how far the low-quality image must be moved to match the ground truth; ``aligned`` None and
        ``clear`` False: no clear match anywhere (check that the two show the same field).
    """
    size = lambda img, ax: img.shape[img.axes.index(ax)] if ax in img.axes else None  # noqa: E731
    keep = "".join(ax for ax in (axes or spatial_axes(high.axes)) if size(low, ax) is not None
                   and size(low, ax) == size(high, ax))
    a, b = (_central_projection(img, keep, max_side) for img in (low, high)) if keep else (None, None)
    return {"name": low.name, **_compare(a, b, keep, max_shift)}


def _band(v):
    """``v`` smoothed by :data:`ALIGNMENT_SIGMA` less its broad background (:data:`ALIGNMENT_BACKGROUND`, along
    axes 4 times as long), standardized: what a match is judged on."""
    s = ndi.gaussian_filter(v, [ALIGNMENT_SIGMA if n >= 8 else 0 for n in v.shape])
    broad = [ALIGNMENT_BACKGROUND if n >= 4 * ALIGNMENT_BACKGROUND else 0 for n in v.shape]
    if any(broad):
        s = s - ndi.gaussian_filter(v, broad)
    return (s - s.mean()) / max(float(s.std()), 1e-12)


def _compare(a, b, keep, max_shift, judge=None):
    """``{"shift": {axis: pixels}, "aligned": bool or None, "clear": bool}`` of two projections along ``keep``
    (see :func:`check_alignment`), misaligned by a shift along the axes ``judge`` (default: all of ``keep``;
    the ZX projections judge Z alone: their X is the YX projections')."""
    if a is None or a.size < 64 or not (np.isfinite(a).all() and np.isfinite(b).all()) or a.std() == 0 or b.std() == 0:
        return {"shift": {}, "aligned": True, "clear": True}   # (nothing to correlate: other checks speak)
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    shift = _shift(a, b)
    aligned, clear = max(abs(float(shift[keep.index(ax)])) for ax in (judge or keep)) <= max_shift, True
    if not aligned:
        k = tuple(int(round(float(v))) for v in shift)
        roll = lambda v: np.roll(v, k, axis=tuple(range(v.ndim)))  # noqa: E731
        # a match is judged on the images smoothed, their broad background removed (_band): a low-light input's
        # noise kept its plain correlation with the truth at the true shift below the 0.3 of a clear match (0.29
        # for a 2D demo pair, 0.74 smoothed), and a shifted pair passed as aligned; a shared uneven illumination
        # must not match two fields. The shift is measured unsmoothed (smoothing biased it by a quarter pixel), and
        # must match clearly better than no shift at all: at 1-2 photons noise puts the peak 1-2 px
        # off, where the smoothed images correlate about as well as at 0 (aligned pairs were called misaligned)
        sa, sb = _band(a), _band(b)
        there, here = float(np.mean(roll(sa) * sb)), float(np.mean(sa * sb))
        better = (1.0 - here) > ALIGNMENT_MARGIN * (1.0 - there)   # (what is left unmatched shrinks by a margin)
        long = int(np.argmax(a.shape))
        half = a.shape[long] // 2
        halves = [tuple(part if i == long else slice(None) for i in range(a.ndim))
                  for part in (slice(0, half), slice(half, None))]
        # a half may hold little structure (sparse nuclei); a spurious peak is found by neither
        if there >= 0.3 and better and half >= 8 and any(np.abs(_shift(a[h], b[h]) - shift).max() <= 1 for h in halves):
            aligned = False
        else:
            # no clear match there: where they match as they are, the peak was noise's, and they are aligned (the
            # shift said is 0); else no clear match anywhere: unrelated images, or too little in them to tell
            aligned = clear = here >= 0.3
            if aligned:
                shift = np.zeros_like(shift)
            aligned = aligned or None
    return {"shift": {ax: float(v) for ax, v in zip(keep, shift)}, "aligned": None if aligned is None else bool(aligned),
            "clear": clear}


def _lateral_and_axial_projections(img, max_side=None):
    """The central box's (``max_side`` in Y and X; Z whole) maximum projections of a ZYX image (with C, or
    a frame), its YX (over Z and C) and its ZX (over Y and C), in one pass over its planes (a memory map
    or a Dask array is read a plane at a time, each once)."""
    data, axes = _central_box(img, "YX", max_side)
    rest = [i for i, a in enumerate(axes) if a not in "ZYX"]   # (C)
    view = np.transpose(data, [axes.index("Z")] + rest + [axes.index("Y"), axes.index("X")])
    yx, zx = None, []
    for z in range(view.shape[0]):
        plane = None
        for idx in np.ndindex(*view.shape[1:-2]):
            block = np.asarray(view[(z,) + idx], np.float32)
            plane = block.copy() if plane is None else np.maximum(plane, block, out=plane)
        yx = plane.copy() if yx is None else np.maximum(yx, plane, out=yx)
        zx.append(plane.max(axis=0))
    return yx, np.stack(zx)

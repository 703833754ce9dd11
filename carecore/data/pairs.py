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

from ..axes import spatial_axes
from ..errors import CareError
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
        raise CareError(
            f"no pairs: none of the images (TIFF or OME-Zarr) in {', '.join(map(str, low_dirs))} has a namesake in {high_dir}"
        )
    return listing


def check_pair_shapes(low, high):
    """Check that ``high`` (axes subset of ``low``'s, channels aside) matches ``low`` on every shared axis."""
    if not set(spatial_axes(high.axes)) <= set(spatial_axes(low.axes)):
        raise CareError(
            f"{high.name} has axes {high.axes!r} but {low.name} has {low.axes!r}: the ground truth may drop "
            "axes of the input (projection), not add new ones"
        )
    for a in spatial_axes(high.axes):
        if low.shape[low.axes.index(a)] != high.shape[high.axes.index(a)]:
            raise CareError(
                f"{low.path} has shape {tuple(low.shape)} ({low.axes}) but {high.path} has "
                f"{tuple(high.shape)} ({high.axes}): sizes along {a} differ"
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


def _as_spatial(img: Image, keep):
    x = np.asarray(img.data, dtype=np.float32)
    if "C" in img.axes:
        x = x.mean(axis=img.axes.index("C"))
        axes = img.axes.replace("C", "")
    else:
        axes = img.axes
    for a in [a for a in axes if a not in keep]:
        x = x.max(axis=axes.index(a))  # projection: compare the max projection
        axes = axes.replace(a, "")
    x = np.transpose(x, [axes.index(a) for a in keep])
    return (x - x.mean()) / max(float(x.std()), 1e-12)


def check_alignment(low, high, *, max_shift=1.0):
    """Measure the translation between a pair by cross-correlation.

    Parameters
    ----------
    low, high : Image
        Along the spatial axes where their sizes differ (a finer Z, a projection's Z), their maximum
        projections are compared.
    max_shift : float
        A pair is called misaligned when its shift exceeds this many pixels along any axis.

    Returns
    -------
    dict
        ``{"shift": {axis: pixels}, "aligned": bool, "name": file name}``. The shift is how far the
        low-quality image must be moved to match the ground truth.
    """
    from skimage.registration import phase_cross_correlation

    size = lambda img, ax: img.shape[img.axes.index(ax)] if ax in img.axes else None  # noqa: E731
    keep = "".join(ax for ax in spatial_axes(high.axes) if size(low, ax) == size(high, ax))
    if not keep:
        return {"name": low.name, "shift": {}, "aligned": True}
    a = _as_spatial(low, keep)
    b = _as_spatial(high, keep)
    shift, _, _ = phase_cross_correlation(b, a, upsample_factor=4, normalization=None)
    shift = {ax: float(s) for ax, s in zip(keep, shift)}
    return {"name": low.name, "shift": shift, "aligned": bool(max(abs(s) for s in shift.values()) <= max_shift)}

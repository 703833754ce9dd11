"""Tile plans for exact tiled prediction (CARE-NOTES §9).

The image is (virtually) padded at its end to a multiple of the network's divisor ``2**depth``.
All tiles of an axis have one size (they can be batched) and start on the pooling grid (multiples of
the divisor). A tile's output is exact where the halo (the receptive field, rounded up to the
divisor) fits inside the tile on both sides, or reaches past the image border as in the untiled
network: the first and last tiles sit flush with the image borders and need the halo on their inner
side only, so ``n`` tiles of size ``S`` cover ``n S - 2 h (n - 1)`` voxels. Each output pixel is
taken from exactly one tile (the boundaries lie in the middle of the overlaps): tiled prediction
equals untiled prediction up to float rounding.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import CareError


def _up(v, d):
    return int(math.ceil(v / d) * d)


@dataclass(frozen=True)
class Tile:
    window: tuple   # slices into the padded image (what the network sees)
    core: tuple     # slices into the output image (what this tile writes)
    inner: tuple    # slices into the tile's output that land on ``core``


@dataclass(frozen=True)
class TilePlan:
    shape: tuple          # image shape (spatial)
    padded: tuple         # padded to the divisor
    n_tiles: tuple
    tile_shape: tuple
    halo: tuple
    tiles: tuple
    #: None: each tile runs through the whole network; else the tile counts of each stage of
    #: staged prediction (:mod:`carecore.prediction.staged`) within every tile
    stage_tiles: tuple = None

    def __len__(self):
        return len(self.tiles)

    @property
    def voxels(self):
        """Voxels the network processes in all (halo overhead included)."""
        return len(self.tiles) * int(np.prod(self.tile_shape))


def _tile_layout(padded, n, halo, div):
    """(size, halo, starts) of at most ``n`` equal tiles along an axis of ``padded`` voxels."""
    n = max(1, min(n, padded // div))
    h = _up(halo, div)
    size = _up(math.ceil((padded + 2 * h * (n - 1)) / n), div) if n > 1 else padded
    if size >= padded:  # cutting gains nothing
        return padded, 0, [0]
    # here padded > size > 2h, all on the divisor grid: middle tiles keep a core of at least one divisor
    while True:
        starts = sorted({div * round(i * (padded - size) / (div * (n - 1))) for i in range(n)})
        if all(b - a <= size - 2 * h for a, b in zip(starts[:-1], starts[1:])):
            return size, h, starts
        size += div  # rounding the starts to the grid opened a gap: grow the tiles


def _axis(length, padded, n, halo, div):
    size, h, starts = _tile_layout(padded, n, halo, div)
    if len(starts) == 1:
        return [(slice(0, padded), slice(0, length), slice(0, length))], size, 0
    # tile i is exact on [starts[i] + h, starts[i] + size - h), and up to the image border at either end
    # boundaries in the middle of the overlaps, on the divisor grid (so that they fall on whole voxels
    # of every pooled level): the overlap [b + h, a + size - h] starts and ends on that grid
    bounds = [0] + [div * ((a + size + b) // (2 * div)) for a, b in zip(starts[:-1], starts[1:])] + [padded]
    out = []
    for s, c0, c1 in zip(starts, bounds[:-1], bounds[1:]):
        e0, e1 = c0, min(c1, length)
        if e1 > e0:
            out.append((slice(s, s + size), slice(e0, e1), slice(e0 - s, e1 - s)))
    return out, size, h


def plan_tiles(shape, n_tiles, *, halo, divisor, stage_tiles=None):
    """A :class:`TilePlan` cutting ``shape`` into ``n_tiles`` (one count per axis)."""
    shape = tuple(int(s) for s in shape)
    n_tiles = tuple(int(n) for n in n_tiles)
    halo = tuple(halo) if np.ndim(halo) else (int(halo),) * len(shape)
    if len(n_tiles) != len(shape):
        raise CareError(f"tiles {n_tiles} give {len(n_tiles)} counts for an image with {len(shape)} spatial axes {shape}")
    if any(n < 1 for n in n_tiles):
        raise CareError(f"tile counts must be >= 1, got {n_tiles}")
    padded = tuple(_up(s, divisor) for s in shape)
    per_axis = [_axis(s, p, n, h, divisor) for s, p, n, h in zip(shape, padded, n_tiles, halo)]
    tiles = tuple(Tile(tuple(t[0] for t in combo), tuple(t[1] for t in combo), tuple(t[2] for t in combo))
                  for combo in itertools.product(*[a[0] for a in per_axis]))
    return TilePlan(shape, padded, tuple(len(a[0]) for a in per_axis), tuple(a[1] for a in per_axis),
                    tuple(a[2] for a in per_axis), tiles, stage_tiles)


def auto_tiles(shape, *, halo, divisor, bytes_per_voxel, budget, batch=1, max_per_axis=16):
    """The tile counts with the least total compute whose batch of tiles fits ``budget`` bytes.

    Ties go to fewer tiles, then to cuts along earlier axes (tiles made of whole rows are
    contiguous in memory). When nothing fits, the smallest tiles.
    """
    shape = tuple(shape)
    # each axis' layout depends on its own count only: (count, tile size, tiles along the axis)
    axes = []
    for s in shape:
        padded = _up(s, divisor)
        options = []
        for n in range(1, min(max_per_axis, max(1, padded // divisor)) + 1):
            size, _, starts = _tile_layout(padded, n, halo, divisor)
            options.append((n, size, len(starts)))
        axes.append(options)
    best = None
    for combo in itertools.product(*axes):
        n = tuple(o[0] for o in combo)
        voxels = math.prod(o[1] for o in combo)
        fits = voxels * bytes_per_voxel * batch <= budget
        cost = math.prod(o[2] for o in combo) * voxels
        key = (not fits, cost if fits else voxels, math.prod(n), n[::-1])
        if best is None or key < best[0]:
            best = (key, n)
    return best[1]


def read_window(x, window):
    """``x[window]`` for a window on the padded grid: indices past the end are reflected back."""
    index = []
    simple = True
    for sl, n in zip(window, x.shape):
        if sl.stop <= n:
            index.append(sl)
        else:
            idx = np.arange(sl.start, sl.stop)
            idx = np.where(idx < n, idx, 2 * (n - 1) - idx) if n > 1 else np.zeros_like(idx)
            index.append(np.clip(np.abs(idx), 0, n - 1))
            simple = False
    if simple:
        return x[tuple(index)]
    out = x[tuple(slice(None) if isinstance(i, np.ndarray) else i for i in index)]
    for ax, i in enumerate(index):
        if isinstance(i, np.ndarray):
            out = np.take(out, i, axis=ax)
    return out

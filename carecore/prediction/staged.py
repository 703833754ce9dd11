"""Staged prediction: a network run part by part, each part in its own small tiles (CARE-NOTES §9).

Cutting a whole U-Net into tiles costs its receptive field at every cut (23 voxels each side for the
default 3D network), because each tile recomputes its neighbours' context through every level.
Most of the work and memory sit at full resolution, where the context needed is small: the
level-0 convolutions of the down path and of the up path see ``n_conv · k // 2`` voxels (2 in 3D).
So the network runs in three :class:`Stage` s over a block (the whole image, or large outer tiles):

1. ``encode0``: input -> ``skip0`` (level-0 features) and ``p0`` (``skip0`` pooled);
2. ``deep``: ``p0`` -> ``u1``, everything below level 0, at half resolution and less;
3. ``decode0``: ``u1``, ``skip0`` and the input -> the output (level-0 up path and heads).

Each stage reads whole arrays and writes whole arrays; it is tiled with its own halo (the
context of that stage alone), and each output voxel is taken from exactly one tile, so the result
equals the untiled network's. Only the intermediate arrays (``skip0`` at full resolution, ``p0``
and ``u1`` at an eighth of the voxels in 3D) are kept for the block.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..progress import check_stop
from .tiling import auto_tiles, plan_tiles


@dataclass(frozen=True)
class Stage:
    """One part of a network, run on its own.

    ``inputs`` and ``outputs`` name arrays with their level: an array of level ``l`` has
    ``2**l`` times fewer voxels along every axis than the block. ``halo`` is the context one output
    voxel needs (full-resolution voxels) and ``divisor`` the grid that tile windows start on.
    """

    name: str
    model: object
    inputs: tuple                # ((array name, level), ...)
    outputs: tuple               # ((array name, level, channels, bytes per value), ...)
    halo: int
    divisor: int
    bytes_per_voxel: int         # working memory per full-resolution voxel of a tile (estimate)


def stored_bytes_per_voxel(stages, *, n_channel_in, ndim):
    """Bytes per block voxel of the arrays staged prediction keeps: the normalized input and every
    stage's outputs (as if all were alive at once)."""
    total = 4 * n_channel_in
    for st in stages:
        for _, level, channels, itemsize in st.outputs:
            total += channels * itemsize / 2 ** (level * ndim)
    return int(np.ceil(total))


#: Staged prediction's cost beyond the network's work (moving the intermediate arrays between
#: stages and in and out of the framework), as a factor: measured 1.19-1.27x the untiled time for
#: the default 3D network on 64×256×256 with stages cut into 1-3 tiles (CPU, TensorFlow).
STAGING_OVERHEAD = 1.25


def staged_voxels(stages, block_shape, stage_tiles):
    """Work of one block in staged prediction, as voxels through the whole network: the block's
    voxels times the largest halo overhead among the stages (a conservative estimate)."""
    return max(p.voxels for p in stage_plans(stages, block_shape, stage_tiles))


def auto_stage_tiles(stages, shape, budget):
    """Tile counts for each stage over a block of ``shape`` (the least work within ``budget`` bytes)."""
    return tuple(auto_tiles(shape, halo=st.halo, divisor=st.divisor, bytes_per_voxel=st.bytes_per_voxel,
                            budget=budget) for st in stages)


def stage_plans(stages, shape, stage_tiles):
    """The :class:`~carecore.prediction.tiling.TilePlan` of each stage over a block of ``shape``."""
    return [plan_tiles(shape, n, halo=st.halo, divisor=st.divisor) for st, n in zip(stages, stage_tiles)]


def _at(slices, level):
    return tuple(slice(s.start >> level, s.stop >> level) for s in slices)


def run_stages(stages, x, stage_tiles, *, on_tile=None, stop=None):
    """Run ``stages`` over the block ``x`` (spatial..., C), each stage in ``stage_tiles`` tiles.

    ``x`` is the normalized network input whose sides are multiples of every stage's divisor.
    Returns the last stage's first output. ``on_tile()`` is called after every tile, ``stop()``
    polled before every tile.
    """
    shape = x.shape[:-1]
    arrays = {"input": x}
    last_use = {}
    for i, st in enumerate(stages):
        for name, _ in st.inputs:
            last_use[name] = i
    for i, (st, plan) in enumerate(zip(stages, stage_plans(stages, shape, stage_tiles))):
        outs = {}
        for tile in plan.tiles:
            check_stop(stop)
            ins = [arrays[name][_at(tile.window, level)][None] for name, level in st.inputs]
            res = st.model.predict_on_batch(ins if len(ins) > 1 else ins[0])
            res = res if isinstance(res, (list, tuple)) else [res]
            for (name, level, *_), r in zip(st.outputs, res):
                r = np.asarray(r)[0]
                if len(plan) == 1:  # the whole array: no copy
                    outs[name] = r
                    continue
                if name not in outs:
                    outs[name] = np.empty(tuple(s >> level for s in shape) + r.shape[-1:], r.dtype)
                outs[name][_at(tile.core, level)] = r[_at(tile.inner, level)]
            if on_tile is not None:
                on_tile()
        arrays.update(outs)
        for name in [n for n, last in last_use.items() if last == i]:
            del arrays[name]  # not needed by any later stage
    return arrays[stages[-1].outputs[0][0]]

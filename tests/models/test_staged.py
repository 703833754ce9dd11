"""Staged prediction: the U-Net run stage by stage, each stage in its own tiles, equals the whole network."""
import numpy as np
import pytest

import carecore as cc
from carecore import CareError, care_config
from carecore.prediction.staged import STAGING_OVERHEAD, stage_plans, staged_voxels, stored_bytes_per_voxel


def _jittered(model, seed=0):
    """Random weights and biases around the initial ones, so that every part of the network matters."""
    rng = np.random.default_rng(seed)
    km = model.keras_model
    km.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32) for w in km.get_weights()])
    return model


CASES = [  # axes, config, image shape, stage tile counts (all stages, or one tuple per stage), outer tiles
    ("ZYX", {}, (20, 70, 52), [(2, 3, 2), ((1, 2, 2), (1, 1, 1), (3, 1, 2))], [(1, 1, 1), (1, 2, 2)]),
    ("YX", {}, (150, 123), [(3, 2), ((5, 4), (2, 1), (1, 3))], [(1, 1), (2, 1)]),
    ("ZYX", {"unet_depth": 1, "unet_n_conv": 3}, (12, 22, 26), [(2, 3, 2)], [(1, 2, 1)]),
    ("YX", {"unet_depth": 3, "probabilistic": True, "n_channel_in": 2, "n_channel_out": 2}, (70, 52), [(3, 3)],
     [(1, 1), (2, 1)]),
    ("ZYX", {"unet_kernel": 5, "unet_n_conv": 1, "residual": False, "n_channel_out": 2}, (16, 36, 24), [(2, 2, 2)],
     [(1, 1, 1)]),
]


@pytest.mark.parametrize("axes,kw,shape,stage_tiles,outer", CASES)
def test_staged_prediction_equals_untiled(axes, kw, shape, stage_tiles, outer):
    model = _jittered(cc.CARE(care_config(axes, quick=True, precision="float32", **kw)))
    x = np.random.default_rng(1).random((kw.get("n_channel_in", 1),) + shape).astype(np.float32) * 100
    ax = "C" + axes
    full = model.predict(x, axes=ax, n_tiles=(1,) * len(axes))
    full = full if isinstance(full, tuple) else (full,)
    for st in stage_tiles:
        for n in outer:
            seen = []
            got = model.predict(x, axes=ax, n_tiles=n, stage_tiles=st, progress=lambda d, t, w: seen.append((d, t)))
            got = got if isinstance(got, tuple) else (got,)
            for g, f in zip(got, full):
                np.testing.assert_allclose(g, f, atol=1e-5 * float(np.abs(f).max()), err_msg=f"stages {st}, tiles {n}")
            plan = model.tile_plan(shape, n, stage_tiles=st)
            per_block = sum(len(p) for p in stage_plans(model._stages(), plan.tile_shape, plan.stage_tiles))
            assert seen[-1] == (len(plan) * per_block,) * 2 and len(seen) == seen[-1][0] + 1


def test_staged_bfloat16_close_to_untiled():
    model = cc.CARE(care_config("ZYX", quick=True, precision="mixed_bfloat16"))
    x = np.random.default_rng(2).random((16, 40, 44)).astype(np.float32)
    full = model.predict(x, axes="ZYX", n_tiles=(1, 1, 1))
    staged = model.predict(x, axes="ZYX", stage_tiles=(1, 2, 2))
    assert np.abs(staged - full).max() < 0.01 * np.abs(full).max()


def _reach(stage, ndim, size=48, seed=0):
    """For an impulse in every input of a stage, the farthest output voxel it changes (full-resolution
    voxels between the input voxel's and the output voxel's footprints)."""
    rng = np.random.default_rng(seed)
    arrays = {name: rng.random((1,) + (size >> level,) * ndim + (stage.model.inputs[i].shape[-1],)).astype(np.float32)
              for i, (name, level) in enumerate(stage.inputs)}

    def outputs():
        ins = [arrays[n] for n, _ in stage.inputs]
        out = stage.model.predict_on_batch(ins if len(ins) > 1 else ins[0])
        return [np.asarray(o, np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]

    base = outputs()
    reach = 0
    for name, level in stage.inputs:
        c = (size >> level) // 2
        arrays[name][(0,) + (c,) * ndim + (0,)] += 10.0
        for (_, out_level, *_), b, o in zip(stage.outputs, base, outputs()):
            for idx in np.argwhere(np.abs(o[0] - b[0]).max(-1) > 1e-6):
                # footprints [j·2^l, (j+1)·2^l) of input voxel c and output voxel j, in full-resolution voxels
                gaps = [max(c * 2**level - (j + 1) * 2**out_level + 1, j * 2**out_level - (c + 1) * 2**level + 1, 0)
                        for j in idx]
                reach = max(reach, max(gaps))
        arrays[name][(0,) + (c,) * ndim + (0,)] -= 10.0
    return reach


@pytest.mark.parametrize("axes", ["YX", "ZYX"])
def test_stage_halos_cover_measured_receptive_fields(axes):
    """Every voxel a stage's output depends on lies within its halo, and the halo is not loose."""
    model = _jittered(cc.CARE(care_config(axes, unet_filters=4, precision="float32",
                                          patch_size=(16,) * len(axes))))
    size = 96 if axes == "YX" else 48
    for stage in model._stages():
        reach = _reach(stage, len(axes), size)
        assert reach <= stage.halo, (stage.name, reach, stage.halo)
        assert reach >= stage.halo - 2, (stage.name, reach, stage.halo)


def test_auto_plan_keeps_a_volume_whole_within_the_budget():
    """The default 3D network (in bfloat16) on 64×256×256 with 1 GiB: the whole network does not fit, plain tiles
    would compute 1.41× the voxels; the plan is one staged block whose every stage's tiles fit the
    budget next to the kept arrays, with less estimated work than those plain tiles."""
    from carecore.prediction.tiling import auto_tiles, plan_tiles

    model = cc.CARE(care_config("ZYX", precision="mixed_bfloat16"))
    shape = (64, 256, 256)
    budget = 2**30
    assert np.prod(shape) * model._bytes_per_voxel() > budget
    plain = plan_tiles(shape, auto_tiles(shape, halo=model._halo(), divisor=4, bytes_per_voxel=model._bytes_per_voxel(),
                                         budget=budget), halo=model._halo(), divisor=4)
    assert plain.voxels / np.prod(shape) > 1.4
    plan = model.tile_plan(shape, memory_budget=budget)
    assert plan.n_tiles == (1, 1, 1) and plan.stage_tiles is not None
    stages = model._stages()
    stored = stored_bytes_per_voxel(stages, n_channel_in=1, ndim=3) * int(np.prod(shape))
    for stage, p in zip(stages, stage_plans(stages, plan.tile_shape, plan.stage_tiles)):
        assert stored + int(np.prod(p.tile_shape)) * stage.bytes_per_voxel <= budget, stage.name
    assert staged_voxels(stages, plan.tile_shape, plan.stage_tiles) * STAGING_OVERHEAD < plain.voxels
    # small images run whole, through the plain network
    assert model.tile_plan((32, 128, 128), memory_budget=budget).stage_tiles is None


def test_stage_tiles_are_checked():
    model = cc.CARE(care_config("ZYX", quick=True))
    with pytest.raises(CareError, match="stage_tiles .*one count per axis"):
        model.tile_plan((16, 32, 32), stage_tiles=(1, 2))
    with pytest.raises(CareError, match="n_tiles must be 'auto'"):
        model.tile_plan((16, 32, 32), n_tiles="many")


def test_a_network_of_its_own_gets_plain_tiles():
    class OwnNetwork(cc.CARE):
        def _build(self):
            from carecore.models.unet import build_unet

            return build_unet(self.config, name="own")

    model = OwnNetwork(care_config("ZYX"))
    assert model._stages() is None
    assert model.tile_plan((64, 256, 256)).stage_tiles is None
    with pytest.raises(CareError, match="cannot predict in stages"):
        model.tile_plan((16, 32, 32), stage_tiles=(1, 1, 1))


def test_saved_after_staged_prediction_loads_the_same(tmp_path):
    """The stage models share the network's layers; saving and loading are unaffected."""
    model = _jittered(cc.CARE(care_config("ZYX", quick=True, precision="float32")))
    x = np.random.default_rng(3).random((16, 40, 36)).astype(np.float32)
    staged = model.predict(x, axes="ZYX", stage_tiles=(1, 2, 2))
    model.save(tmp_path / "m")
    loaded = cc.load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(x, axes="ZYX", n_tiles=(1, 1, 1)), staged, atol=1e-5 * np.abs(staged).max())

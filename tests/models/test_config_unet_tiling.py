import json

import numpy as np
import pytest

from carecore import CareError
from carecore.models.config import CareConfig, care_config
from carecore.prediction.tiling import auto_tiles, plan_tiles, read_window


def test_config_validation_names_the_field():
    with pytest.raises(CareError, match="unknown configuration field.*'depth'"):
        CareConfig.from_dict({"axes": "YX", "patch_size": [32, 32], "depth": 3})
    with pytest.raises(CareError, match="^batch_size: must be an integer >= 1"):
        care_config("YX", batch_size=0)
    with pytest.raises(CareError, match="probabilistic and loss"):
        care_config("YX", probabilistic=True, loss="mae")
    with pytest.raises(CareError, match="residual and n_channel_in/n_channel_out"):
        CareConfig(axes="YX", patch_size=(32, 32), n_channel_in=1, n_channel_out=2)
    with pytest.raises(CareError, match="patch_size and unet_depth.*divisible by 2\\*\\*unet_depth = 4"):
        care_config("YX", patch_size=(30, 32))
    with pytest.raises(CareError, match="axes: must be 'YX'"):
        care_config("CYX")
    with pytest.raises(CareError, match="newer carecore"):
        CareConfig.from_dict({"axes": "YX", "patch_size": [32, 32], "version": 99})
    with pytest.raises(CareError, match="learning_rate"):
        care_config("ZYX", learning_rate=5)


def test_config_round_trip_and_immutable():
    c = care_config("ZYX", probabilistic=True, epochs=3)
    assert CareConfig.from_dict(c.to_dict()) == c
    c2 = c.replace(epochs=5)
    assert c.epochs == 3 and c2.epochs == 5
    with pytest.raises(Exception):
        c.epochs = 4
    assert care_config("YX", n_channel_in=3, n_channel_out=1).residual is False
    assert set(CareConfig.describe()) >= {"axes", "unet_depth", "loss"}


@pytest.mark.parametrize("axes,count", [("YX", 922_977), ("ZYX", 996_769)])
def test_default_parameter_counts_match_csbdeep(axes, count):
    from carecore.models.unet import build_unet

    assert build_unet(care_config(axes)).count_params() == count
    assert build_unet(care_config(axes, probabilistic=True)).count_params() == count + 33


@pytest.mark.parametrize("ndim, kernel", [(2, 3), (2, 5), (3, 3), (3, 5)])
def test_upsample_concat_conv_equals_upsample_concat_conv(ndim, kernel):
    """The polyphase layer gives what nearest upsampling, concatenation and a 'same' convolution give."""
    import keras
    from keras import ops

    from carecore.models.unet import UpsampleConcatConv

    rng = np.random.default_rng(kernel)
    coarse = (3, 5, 6)[3 - ndim:]
    a = rng.normal(size=(2, *coarse, 4)).astype(np.float32)
    skip = rng.normal(size=(2, *(2 * c for c in coarse), 3)).astype(np.float32)
    layer = UpsampleConcatConv(5, kernel, dtype="float32")
    got = np.asarray(layer([a, skip]))
    Up = keras.layers.UpSampling2D if ndim == 2 else keras.layers.UpSampling3D
    ref = ops.conv(ops.concatenate([Up(2)(a), skip], axis=-1), layer.kernel, padding="same")
    assert got.shape == skip.shape[:-1] + (5,)
    np.testing.assert_allclose(got, np.asarray(ref), atol=1e-5)


@pytest.mark.parametrize("axes", ["YX", "ZYX"])
def test_halo_covers_measured_receptive_field(axes):
    """Perturb one input pixel; every changed output pixel lies within the halo."""
    from carecore import CARE

    cfg = care_config(axes, unet_filters=4, precision="float32", patch_size=(16,) * len(axes))
    model = CARE(cfg)
    size = 2 * model._halo() + 16 + (8 if axes == "YX" else 0)
    size -= size % 4
    shape = (size,) * len(axes)
    x = np.random.default_rng(0).random((1,) + shape + (1,)).astype(np.float32)
    c = tuple(s // 2 for s in shape)
    x2 = x.copy()
    x2[(0,) + c + (0,)] += 10.0
    f = lambda v: np.asarray(model.keras_model.predict_on_batch(v))[0, ..., 0]  # noqa: E731
    diff = np.abs(f(x2) - f(x)) > 1e-6
    reach = max(np.abs(np.array(np.nonzero(diff)) - np.array(c)[:, None]).max(1))
    assert reach <= model._halo()
    assert reach >= model._halo() - 4  # the bound is tight, not a wild over-estimate


@pytest.mark.parametrize("shape,n", [((37,), (3,)), ((64, 50), (2, 3)), ((20, 33, 41), (1, 2, 3)), ((8, 8), (4, 4))])
def test_tile_plan_covers_each_pixel_once(shape, n):
    plan = plan_tiles(shape, n, halo=10, divisor=4)
    count = np.zeros(shape, int)
    for t in plan.tiles:
        count[t.core] += 1
        assert all(w.stop - w.start == s for w, s in zip(t.window, plan.tile_shape))
        assert all(w.start % 4 == 0 for w in t.window)
        assert all(core.start % 4 == 0 for core in t.core)  # boundaries fall on whole voxels of pooled levels
        for w, core, inner, padded in zip(t.window, t.core, t.inner, plan.padded):
            assert inner.start == core.start - w.start and inner.stop - inner.start == core.stop - core.start
            # the core keeps the halo from the window edge, except at the image border
            assert core.start - w.start >= 10 or w.start == 0 or plan.n_tiles == 1
            assert w.stop - core.stop >= 10 or w.stop == padded
    assert (count == 1).all()


def test_border_tiles_carry_the_halo_on_their_inner_side_only():
    # 256 voxels, halo 23 -> 24 on the grid of 4: two tiles of 128 + 24, four of (256 + 3·48) / 4 = 100
    assert plan_tiles((256,), (2,), halo=23, divisor=4).tile_shape == (152,)
    assert plan_tiles((256,), (4,), halo=23, divisor=4).tile_shape == (100,)
    # the default 3D network's volume in 1×2×2 tiles computes 1.41× the voxels, not 1.89× (2·24 per cut)
    plan = plan_tiles((64, 256, 256), (1, 2, 2), halo=23, divisor=4)
    assert plan.voxels / (64 * 256 * 256) < 1.42


def test_auto_tiles_respects_budget():
    shape = (64, 256, 256)
    n = auto_tiles(shape, halo=23, divisor=4, bytes_per_voxel=700, budget=2**30)
    plan = plan_tiles(shape, n, halo=23, divisor=4)
    assert int(np.prod(plan.tile_shape)) * 700 <= 2**30
    assert auto_tiles(shape, halo=23, divisor=4, bytes_per_voxel=700, budget=2**40) == (1, 1, 1)


def test_read_window_reflects_past_the_end():
    x = np.arange(10.0)[:, None]
    np.testing.assert_array_equal(read_window(x, (slice(6, 12),))[:, 0], [6, 7, 8, 9, 8, 7])


def test_bfloat16_is_chosen_by_a_timed_step_kept_per_machine(monkeypatch, tmp_path):
    """Where the CPU has bfloat16 instructions, a training step is timed in both precisions once and the
    answer kept in the user's cache folder: bfloat16 only where it is clearly faster."""
    from carecore.models import precision

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    timings = []

    def timed(seconds):
        def timing(**kwargs):
            timings.append(seconds)
            return dict(seconds)
        return timing

    monkeypatch.setattr(precision, "bfloat16_timing", timed({"mixed_bfloat16": 0.229, "float32": 0.177}))
    # (the app says so before a timing: on a CPU with the instructions, none kept yet)
    monkeypatch.setattr(precision, "bfloat16_hardware", lambda: True)
    monkeypatch.setattr(precision, "gpu_has_bfloat16", lambda: False)
    precision.native_bfloat16.cache_clear()
    assert precision.needs_timing() and not timings
    assert precision.bfloat16_faster() is False and len(timings) == 1
    assert not precision.needs_timing()
    (kept,) = (tmp_path / "carecore").glob("bfloat16-*.json")
    assert json.loads(kept.read_text())["seconds_per_step"] == {"mixed_bfloat16": 0.229, "float32": 0.177}
    # kept: not timed again, whatever a new timing would say
    monkeypatch.setattr(precision, "bfloat16_timing", timed({"mixed_bfloat16": 0.1, "float32": 0.2}))
    assert precision.bfloat16_faster() is False and len(timings) == 1
    # another machine or software (another key): timed again; about as fast is not fast enough
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "key": "another machine"}))
    assert precision.bfloat16_faster() is True and len(timings) == 2
    kept.unlink()
    monkeypatch.setattr(precision, "bfloat16_timing", timed({"mixed_bfloat16": 0.1, "float32": 0.105}))
    assert precision.bfloat16_faster() is False and len(timings) == 3
    # a kept file that is not one of these: timed again; a timing that fails: float32, nothing kept
    kept.write_text("[1]")
    assert precision.bfloat16_faster() is False and len(timings) == 4
    kept.unlink()

    def fails(**kwargs):
        raise MemoryError("no room for the timed network")

    monkeypatch.setattr(precision, "bfloat16_timing", fails)
    assert precision.bfloat16_faster() is False and not kept.exists()
    # native_bfloat16: no timing without the instructions; a GPU that computes in bfloat16 needs none
    monkeypatch.setattr(precision, "bfloat16_timing", timed({"mixed_bfloat16": 0.1, "float32": 0.2}))
    for hardware, gpu, expected, timed_now in ((False, False, False, 0), (True, True, True, 0),
                                               (True, False, True, 1)):
        precision.native_bfloat16.cache_clear()
        monkeypatch.setattr(precision, "bfloat16_hardware", lambda: hardware)
        monkeypatch.setattr(precision, "gpu_has_bfloat16", lambda: gpu)
        n = len(timings)
        assert precision.native_bfloat16() is expected and len(timings) == n + timed_now, (hardware, gpu)
    precision.native_bfloat16.cache_clear()   # (this machine's own answer again for the tests after)
    # a cache folder that cannot be written: timed, answered, nothing kept
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert precision.bfloat16_faster() is True and len(timings) == 6
    # the timing itself trains both networks (a small one here: the real one takes seconds)
    monkeypatch.undo()
    monkeypatch.setattr(precision, "TIMED_STEP", {"unet_filters": 4, "unet_depth": 1, "batch_size": 1,
                                                  "patch_size": (8, 16, 16)})
    seconds = precision.bfloat16_timing(repeats=1)
    assert set(seconds) == {"mixed_bfloat16", "float32"} and all(0 < s < 60 for s in seconds.values()), seconds


def test_precision_is_chosen_for_the_machine(monkeypatch):
    """bfloat16 only where a training step is faster in it (where the hardware emulates it a step took 7x
    longer), and only for 3D networks (2D restored better in float32); an explicit precision always wins."""
    from carecore.models import precision

    assert precision.cpu_has_bfloat16("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert precision.cpu_has_bfloat16("processor\t: 0\nFeatures\t: fp asimd sve bf16\n")
    assert not precision.cpu_has_bfloat16("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f\n")
    assert not precision.cpu_has_bfloat16("model name\t: bf16 in the name only\n")
    # (hardware, native): a CPU with bfloat16 instructions that a timed step found no faster in bfloat16
    # (an Intel Xeon without AMX) trains 3D in float32 and keeps the 2D batches of a fast CPU
    for hardware, native, expected in ((True, True, "mixed_bfloat16"), (False, False, "float32"),
                                       (True, False, "float32")):
        monkeypatch.setattr(precision, "native_bfloat16", lambda: native)
        monkeypatch.setattr(precision, "bfloat16_hardware", lambda: hardware)
        assert care_config("ZYX").precision == expected
        assert care_config("ZYX", time_limit=180).precision == expected
        assert care_config("YX").precision == care_config("YX", time_limit=180).precision == "float32"
        assert care_config("ZYX", precision="mixed_bfloat16").precision == "mixed_bfloat16"
        assert care_config("YX", precision="mixed_bfloat16").precision == "mixed_bfloat16"
        assert care_config("ZYX", precision="float32").precision == "float32"
        # patches too thin for a 3D bfloat16 network (sides of at least 2**(depth+1)): float32, no error
        assert care_config("ZYX", patch_size=(4, 32, 32)).precision == "float32"
        # the fast 3D denoising recipe in float32 takes batches of 2 (what the CPU's caches hold) and, up to
        # 5 minutes, 8 filters; in bfloat16 the recipe it was measured with; given sizes win; other kinds
        # keep theirs
        c = care_config("ZYX", time_limit=180)
        assert (c.patch_size, c.batch_size, c.unet_filters) == \
            (((16, 32, 32), 8, 16) if native else ((16, 32, 32), 2, 8))
        c = care_config("ZYX", time_limit=180, precision="float32")
        assert (c.patch_size, c.batch_size, c.unet_filters) == ((16, 32, 32), 2, 8)
        assert care_config("ZYX", time_limit=600, precision="float32").unet_filters == 16
        c = care_config("ZYX", time_limit=180, precision="float32", patch_size=(16, 32, 32), batch_size=8)
        assert (c.patch_size, c.batch_size) == ((16, 32, 32), 8)
        assert care_config("ZYX", time_limit=180, kind="subdiffraction", psf_sigma=2.0).patch_size == (16, 32, 32)
        assert care_config("YX", time_limit=180).patch_size == (64, 64)
        # 2D denoising budgets (float32 everywhere): batches of 4 where the machine has no bfloat16 hardware
        assert care_config("YX", time_limit=180).batch_size == (8 if hardware else 4)
        assert care_config("YX", time_limit=180, batch_size=8).batch_size == 8
        assert care_config("YX", time_limit=180, kind="subdiffraction", psf_sigma=2.0).batch_size == 8
        assert care_config("ZYX").patch_size == (16, 64, 64)
        # a deeper network whose poolings the thin patches cannot take keeps the 16x32x32 patches (in
        # float32 where bfloat16 would need sides of 32); precision=None is "chosen for the machine"
        c = care_config("ZYX", time_limit=180, unet_depth=4)
        assert (c.patch_size, c.precision) == ((16, 32, 32), "float32")
        assert care_config("ZYX", time_limit=180, precision=None) == care_config("ZYX", time_limit=180)
        # an ensemble's budget: the recipe is one member's share's (5 members of an hour train the fast
        # recipe of 12 minutes, not CSBDeep's network), the budget stays the whole
        for limit, members in ((3600, 5), (900, 5), (600, 2)):
            shared = care_config("ZYX", time_limit=limit, members=members, probabilistic=True)
            assert shared == care_config("ZYX", time_limit=limit / members, probabilistic=True).replace(
                time_limit=float(limit)), (limit, members)
        assert care_config("ZYX", time_limit=3600).unet_filters == 32   # one network of an hour: CSBDeep's
        assert care_config("ZYX", time_limit=3600, members=5).unet_filters == 16
    assert CareConfig(axes="ZYX").precision == "float32"
    for bad in (0, 1.5, True):
        with pytest.raises(CareError, match="members"):
            care_config("ZYX", time_limit=180, members=bad)


def test_import_turns_onednn_on_unless_told_otherwise():
    """``import carecore`` asks TensorFlow for its oneDNN kernels, which it uses by default only on CPUs with
    AVX512-VNNI/BF16 or AMX (without them a 3D step of the budget recipe was 3.7 times slower on 2 AVX2
    cores); a value the user set wins, and :func:`onednn_enabled` reports what TensorFlow does."""
    import os
    import platform
    import subprocess
    import sys

    code = ("import os, carecore; from carecore.models.precision import onednn_enabled; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], onednn_enabled())")
    x86 = platform.machine().lower() in ("x86_64", "amd64")   # elsewhere TensorFlow's own rules apply
    for given, expected in ((None, ["1", "True"]), ("0", ["0", "False"])):
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        if given is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = given
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        variable, enabled = out.stdout.split()[-2:]
        assert variable == expected[0] and (enabled == expected[1] or not x86), (given, out.stdout)

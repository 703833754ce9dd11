"""Isotropic restoration: pairs from the stack itself, shapes and voxel sizes, the CLI, and the real
Arabidopsis embryo subsampled along Z (beats linear and cubic interpolation)."""
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

import carecore as cc
from carecore.baselines import RL_START_ITERATIONS
from carecore.models.kinds import model_class

EMBRYO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "morpholibj_arabidopsis_embryo_106x112x109.tif"


def _iso():
    return model_class("isotropic")


def _stack(shape=(8, 48, 48), seed=0):
    rng = np.random.default_rng(seed)
    v = ndi.gaussian_filter(rng.random(shape).astype(np.float32), (0.5, 2, 2))
    return (v - v.min()) / (v.max() - v.min())


def test_pairs_from_the_stack_degraded_along_the_first_axis():
    cls = _iso()
    config = cls.default_config("ZYX", kind="isotropic", upsampling_factor=3.0, psf_sigma=1.5, quick=True,
                                patch_size=(32, 32))
    assert config.axes == "YX" and config.augment is False
    stack = _stack()
    ps = cls.make_patches(config, [stack], axes="ZYX", n_patches_per_image=2)
    # 8 slices, 2 pairs each, 2 patches a pair; the two slices next to the one held out give none (guards)
    assert ps.X.shape == ((8 - 2) * 2 * 2, 32, 32, 1) and ps.meta["isotropic"]["factor"] == 3.0
    X, Y = np.asarray(ps.X), np.asarray(ps.Y)
    # the input lost detail along the first axis (the one Z becomes), not along the second
    d0 = lambda a: np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
    d1 = lambda a: np.abs(np.diff(a, axis=2)).mean()  # noqa: E731
    assert d0(X) / d0(Y) < 0.85 and d1(X) / d1(Y) > 0.95
    again = cls.make_patches(config, [stack], axes="ZYX", n_patches_per_image=2)
    np.testing.assert_array_equal(X, again.X)
    # a measured PSF file with the same Gaussian profile makes nearly the same pairs
    z = np.arange(-8, 9, dtype=np.float32)
    psf = np.exp(-z**2 / (2 * 1.5**2))[:, None, None] * np.ones((1, 3, 3), np.float32)
    measured = cls.make_patches(config.replace(psf_sigma=0.0), [stack], axes="ZYX", n_patches_per_image=2, psf=psf)
    np.testing.assert_allclose(measured.X, X, atol=0.02)
    with pytest.raises(cc.CareError, match="axial PSF"):
        cls.make_patches(config.replace(psf_sigma=0.0), [stack], axes="ZYX")
    with pytest.raises(cc.CareError, match="ZYX stacks"):
        cls.make_patches(config, [stack[0]], axes="YX")
    with pytest.raises(cc.CareError, match="got axes 'TZYX' .* save each time point or sample as a stack of its own"):
        cls.make_patches(config, [np.stack([stack, stack])], axes="TZYX")


def test_the_training_inputs_are_as_noisy_as_the_stack():
    """The axial blur of a lateral slice also smooths its noise, which the stack's acquired slices keep in
    full: the stack's noise (``noise_model``: shot and read noise) is given back before subsampling. Without
    it a noisy embryo (100 photons) was restored at SSIM 0.589, below its cubic interpolation's 0.727."""
    from carecore.models.isotropic import noise_model

    rng = np.random.default_rng(1)
    signal = 40 * _stack((8, 64, 64), seed=2) + 5
    photons = rng.poisson(signal).astype(np.float32) + rng.normal(0, 1.0, signal.shape).astype(np.float32)
    a, b = noise_model(photons[..., None])
    for level in (15, 35):                                           # variance = photons + read noise (1)
        assert 0.75 < (a * level + b) / (level + 1) < 1.25, (a, b)
    a0, b0 = noise_model(signal[..., None])
    assert a0 * 45 + b0 < 0.01 * (a * 45 + b), (a0, b0)              # the same stack without noise: next to none
    cls = _iso()
    config = cls.default_config("ZYX", kind="isotropic", upsampling_factor=4.0, psf_sigma=2.0, quick=True,
                                patch_size=(32, 32))
    ps = cls.make_patches(config, [photons], axes="ZYX", n_patches_per_image=4)
    X, Y = np.asarray(ps.X)[..., 0], np.asarray(ps.Y)[..., 0]
    # the acquired rows of an input (every 4th along the degraded axis) are as rough along the other axis as
    # the targets: their noise is the stack's, not the blur's fraction of it (0.38 of it without)
    rough = lambda v: np.std(np.diff(v, axis=2))  # noqa: E731
    assert 0.8 < rough(X[:, ::4]) / rough(Y) < 1.2, rough(X[:, ::4]) / rough(Y)
    assert ps.meta["isotropic"]["noise"][0]["variance_per_level"] == pytest.approx(a)
    # channels: each is given its own channel's noise back (they were given none before 2026-12-06)
    two = cls.make_patches(config, [np.stack([photons, signal])], axes="CZYX", n_patches_per_image=4)
    X2, Y2 = np.asarray(two.X), np.asarray(two.Y)
    fitted = two.meta["isotropic"]["noise"][0]
    assert fitted["variance_per_level"][0] == pytest.approx(a) and fitted["variance_per_level"][1] < 0.1 * a, fitted
    assert 0.8 < rough(X2[:, ::4, :, 0]) / rough(Y2[..., 0]) < 1.2, rough(X2[:, ::4, :, 0]) / rough(Y2[..., 0])


def test_a_slice_and_its_transpose_validate_together():
    # each slice gives two pairs, the second its transpose: a box held out in one would be trained on in
    # the other, so a slice is held out whole, both ways, or not at all
    cls = _iso()
    config = cls.default_config("ZYX", kind="isotropic", upsampling_factor=3.0, psf_sigma=1.5, quick=True,
                                patch_size=(16, 16))
    ps = cls.make_patches(config, [_stack((8, 48, 48))], axes="ZYX", n_patches_per_image=8)
    blocks = [s["validation_block"] for s in ps.meta["sources"]]
    assert len(blocks) == 16 and ps.n_val > 0
    for z in range(8):
        assert blocks[2 * z] == blocks[2 * z + 1] in (None, {"whole": True}, {"guard": True})
    held = {int(i) for i in ps.positions[ps.n_train:, 0]}
    assert held and not held & {int(i) for i in ps.positions[:ps.n_train, 0]}
    # the slices held out lie through the stack, not at its end (a seeded choice)
    ps = cls.make_patches(config, [_stack((24, 48, 48))], axes="ZYX", n_patches_per_image=8)
    held = sorted({int(i) // 2 for i in ps.positions[ps.n_train:, 0]})
    assert len(held) >= 2 and held[0] < 20 and ps.n_val <= 0.2 * len(ps.X)
    again = cls.make_patches(config, [_stack((24, 48, 48))], axes="ZYX", n_patches_per_image=8)
    np.testing.assert_array_equal(ps.positions, again.positions)


def _slices(ps):
    """The slices held out, trained on and given no patch (guards), from a patch set's sources."""
    blocks = [s["validation_block"] for s in ps.meta["sources"]][::2]   # a slice's two pairs share theirs
    kind = lambda b: "train" if b is None else "guard" if b.get("guard") else "val"  # noqa: E731
    return {k: [z for z, b in enumerate(blocks) if kind(b) == k] for k in ("val", "train", "guard")}


def test_held_out_slices_have_no_trained_neighbour(tmp_path):
    """A slice held out for validation would score its trained neighbours' content (an anisotropic
    stack's next slice shows much of it): held-out slices come in runs with untrained guards on either
    side, as many as the axial PSF's two sigmas reach (at least one)."""
    cls = _iso()
    config = cls.default_config("ZYX", kind="isotropic", upsampling_factor=3.0, psf_sigma=1.5, quick=True,
                                patch_size=(16, 16))
    for nz, sigma, reach in ((24, 1.5, 1), (60, 1.5, 1), (60, 4.0, 3)):   # 2 sigma / 3 pixels a slice, rounded
        ps = cls.make_patches(config.replace(psf_sigma=sigma), [_stack((nz, 48, 48))], axes="ZYX",
                              n_patches_per_image=8)
        s = _slices(ps)
        assert ps.meta["isotropic"]["guard_slices"] == reach
        assert s["val"] and not set(s["val"]) & set(s["train"])
        near = {z + d for z in s["val"] for d in range(-reach, reach + 1)}
        assert not near & set(s["train"]), (nz, sigma, s)
        assert set(s["guard"]) <= near   # guards only where needed
        # trained positions: only the training slices' pairs
        trained = {int(i) // 2 for i in ps.positions[:ps.n_train, 0]}
        assert trained == set(s["train"])
        # runs: fewer guards than two per held-out slice would take
        assert len(s["guard"]) < 2 * reach * len(s["val"]), s
        assert abs(len(s["val"]) - 0.1 * nz) <= 2, s
    # a measured PSF: the guard from its half-maximum width, not widened by a background
    z = np.arange(-16, 17, dtype=np.float32)
    psf = np.exp(-z**2 / (2 * 4.0**2))[:, None, None] + 0.05
    ps = cls.make_patches(config.replace(psf_sigma=0.0), [_stack((30, 48, 48))], axes="ZYX",
                          n_patches_per_image=4, psf=psf * np.ones((1, 3, 3), np.float32))
    assert ps.meta["isotropic"]["guard_slices"] == 3
    s = _slices(ps)
    assert not {z + d for z in s["val"] for d in range(-3, 4)} & set(s["train"])
    # a measured Gaussian PSF gives the guard its sigma gives (half-maximum ends between samples: 2 here,
    # where counting whole samples above half gave 1)
    g = np.exp(-z**2 / (2 * 1.5**2))[:, None, None] * np.ones((1, 3, 3), np.float32)
    near = config.replace(upsampling_factor=1.9)
    by_sigma = cls.make_patches(near.replace(psf_sigma=1.5), [_stack((30, 48, 48))], axes="ZYX", n_patches_per_image=2)
    by_psf = cls.make_patches(near.replace(psf_sigma=0.0), [_stack((30, 48, 48))], axes="ZYX", n_patches_per_image=2,
                              psf=g)
    assert by_psf.meta["isotropic"]["guard_slices"] == by_sigma.meta["isotropic"]["guard_slices"] == 2
    # patch folders made before the guards are refused
    import json

    folder = tmp_path / "iso_patches"
    cls.make_patches(config, [_stack((24, 48, 48))], axes="ZYX", n_patches_per_image=4, out=folder)
    assert len(cc.load_patches(folder).X) > 0
    meta = json.loads((folder / "patches.json").read_text())
    del meta["isotropic"]["guard_slices"]
    (folder / "patches.json").write_text(json.dumps(meta))
    with pytest.raises(cc.CareError, match="made before the slices next to held-out ones"):
        cc.load_patches(folder)
    # too few slices for a held-out one, its guards and training
    # single-slice stacks: one held out, the others train (no guard crosses stacks)
    ones = cls.make_patches(config, [_stack((1, 48, 48), seed=k) for k in range(3)], axes="ZYX", n_patches_per_image=2)
    assert ones.n_val == 4 and ones.n_train == 8
    with pytest.raises(cc.CareError, match=r"3 slice\(s\) in 1 stack\(s\) leave none to train on: .* the 3 slice\(s\) on "
                                           r"either side of each are not trained on \(within two axial PSF sigmas, 8 px"):
        cls.make_patches(config.replace(psf_sigma=4.0), [_stack((3, 48, 48))], axes="ZYX", n_patches_per_image=4)


def test_the_validation_line_starts_from_every_interpolation():
    """The chart's dashed line (the best filter on the validation patches) starts, like the QC report's
    filters, from nearest, linear and cubic interpolation, not only from the patches' own (linear):
    the patches' coarse rows are found and interpolated the other ways. The line rises (here linear
    interpolation alone made it lower), so CARE is not seen to overtake the filters too early."""
    from carecore.training.validation import ValidationSet

    rng = np.random.default_rng(0)
    clean, _ = cc.nuclei_volume((8, 128, 128), seed=0)
    img = clean[4][..., None]
    for own in ("linear", "cubic", "nearest"):
        model = cc.create_model(_iso().default_config("ZYX", upsampling_factor=4, psf_sigma=2.0, quick=True,
                                                      interpolation=own))
        lows = {how: cc.simulate_anisotropic(img, 4, axes="YXC", axis="Y", psf_sigma=2.0, interpolation=how, seed=1,
                                             peak_photons=50)[0] for how in ("nearest", "linear", "cubic")}
        offsets = [(int(rng.integers(0, 96)), int(rng.integers(0, 96))) for _ in range(6)]
        X = np.stack([lows[own][a:a + 32, b:b + 32] for a, b in offsets])
        starts = model.patch_grid_starts(X)
        assert list(starts) == ["nearest interpolation", "linear interpolation", "cubic interpolation"] + [
            f"Richardson-Lucy along Z ({n} iterations) on cubic interpolation" for n in RL_START_ITERATIONS]
        assert starts[f"{own} interpolation"] is X
        for how, start in list(starts.items())[:3]:
            ref = np.stack([lows[how.split()[0]][a:a + 32, b:b + 32] for a, b in offsets])
            for p, r, (a, _) in zip(start, ref, offsets):
                rows = [k for k in range(4, 28) if (a + k) % 4 != 2]   # inside; nearest's ties may go either way
                if how.startswith("cubic"):   # a spline through the patch's coarse rows only: its middle
                    middle = [k for k in rows if 8 <= k < 24]
                    assert np.abs(p[middle] - r[middle]).mean() < 0.01 * np.ptp(lows["cubic"])
                else:
                    np.testing.assert_allclose(p[rows], r[rows], atol=1e-4 * r.max())
    cfg = _iso().default_config("ZYX", upsampling_factor=4, psf_sigma=2.0, quick=True, patch_size=(32, 32))
    stacks = [cc.simulate_anisotropic(cc.nuclei_volume((32, 64, 64), seed=k)[0], 4, axes="ZYX", axis="Z", psf_sigma=2.0,
                                      peak_photons=100, seed=k, upsample_back=False)[0] for k in range(2)]
    ps = _iso().make_patches(cfg, stacks, axes="ZYX", n_patches_per_image=8)
    model = cc.create_model(cfg)
    line = ValidationSet(ps.X[ps.n_train:], ps.Y[ps.n_train:], model).baseline(names=["gaussian", "median"])
    model.patch_grid_starts = lambda X: {"linear interpolation": X}   # as before: the patches' own only
    before = ValidationSet(ps.X[ps.n_train:], ps.Y[ps.n_train:], model).baseline(names=["gaussian", "median"])
    assert line["start"] != "linear interpolation" and line["val_ssim"] > before["val_ssim"] + 0.01, (line, before)


def test_a_measured_psf_is_compared_with_deconvolution(tmp_path, monkeypatch):
    """A model trained with a measured axial PSF and no ``psf_sigma`` is compared with the cubic interpolation
    deconvolved along Z too (the paper's competitor), with the Gaussian of that PSF's half-maximum width: in
    the validation line of its first training and in every comparison after it, also once loaded. Before,
    such a model had only the interpolations to beat."""
    cls = _iso()
    z = np.arange(-8, 9, dtype=np.float32)
    psf = np.exp(-z**2 / (2 * 1.5**2))[:, None, None] * np.ones((1, 3, 3), np.float32) + 0.01   # (a background)
    config = cls.default_config("ZYX", upsampling_factor=3.0, psf_sigma=0.0, quick=True, patch_size=(16, 16),
                                batch_size=2)
    ps = cls.make_patches(config, [_stack((24, 48, 48))], axes="ZYX", n_patches_per_image=4, psf=psf)
    assert ps.meta["isotropic"]["psf_sigma_equivalent"] == pytest.approx(1.5, abs=0.05)
    model = cc.create_model(config, tmp_path / "m")
    assert model.axial_psf_sigma() == 0.0   # (nothing known before its training)
    seen = []
    starts = model.patch_grid_starts
    monkeypatch.setattr(model, "patch_grid_starts", lambda X: seen.append(list(starts(X))) or starts(X))
    model.train(ps, epochs=1, steps_per_epoch=1)
    deconvolutions = [f"Richardson-Lucy along Z ({n} iterations) on cubic interpolation" for n in RL_START_ITERATIONS]
    assert seen and seen[0][3:] == deconvolutions   # the validation line's starts
    assert model.baseline_val["tuned"]
    loaded = cc.load_model(tmp_path / "m")
    assert loaded.axial_psf_sigma() == pytest.approx(1.5, abs=0.05)
    assert list(loaded.grid_starts())[3:] == deconvolutions   # the QC report's and the app's
    assert loaded.run_card["isotropic"]["psf"] == "array"
    # the measured PSF's, which blurred its training pairs, also where a sigma was given; a sigma alone where none
    loaded.config = loaded.config.replace(psf_sigma=2.0)
    assert loaded.axial_psf_sigma() == pytest.approx(1.5, abs=0.05)
    assert cc.create_model(config.replace(psf_sigma=2.0)).axial_psf_sigma() == 2.0


def test_a_resume_goes_on_with_its_own_stacks(tmp_path):
    """The patches' sources are the stacks' slices (arrays), which the generic check let through: resumed with
    one more stack, a model chose its best weights on other held-out slices, some of which it had trained on."""
    cls = _iso()
    config = cls.default_config("ZYX", upsampling_factor=3.0, psf_sigma=1.5, quick=True, patch_size=(16, 16),
                                batch_size=2, time_limit=0)
    a, b = _stack((12, 48, 48), seed=0), _stack((12, 48, 48), seed=1)
    model = cc.create_model(config, tmp_path / "m")
    model.train(cls.make_patches(config, [a], axes="ZYX", n_patches_per_image=4), epochs=1, steps_per_epoch=1)
    for stacks in ([a, b], [b]):
        with pytest.raises(cc.CareError, match=r"this isotropic model .* was trained on other stacks .*--init-weights"):
            model.train(cls.make_patches(config, stacks, axes="ZYX", n_patches_per_image=4), epochs=1,
                        steps_per_epoch=1)
    model.train(cls.make_patches(config, [a], axes="ZYX", n_patches_per_image=4), epochs=1, steps_per_epoch=1)
    assert len(model.history) == 2   # its own stack: resumed
    # a fine-tune on its stack is told where its slices validate where the source trained, or next to them
    tuned = cc.create_model(config.replace(init_weights=str(tmp_path / "m")))
    trained = model.run_card["data_sources"][0]["trained_slices"]
    assert 0 < len(trained) < 12 - 1
    patches = cls.make_patches(config, [b, a], axes="ZYX", n_patches_per_image=4)
    assert tuned._slices_by_block(patches.meta)[1]["validated"] & set(trained)   # (a validates here, last)
    with pytest.warns(cc.CareWarning, match=r"fine-tuning on 1 image\(s\) that .* learned from \(array\)"):
        tuned.train(patches, epochs=1, steps_per_epoch=1)
    # a crop of its stack (another grid: its slices are not compared), found by its sketch, is told too
    crop = cls.make_patches(config, [np.ascontiguousarray(a[1:, 2:])], axes="ZYX", n_patches_per_image=4)
    assert tuned._validated_where_learned(crop.meta, model.run_card["data_sources"]) == {"array"}
    # ... but not where it holds no slice out (b takes them all here), nor where they are the slices the
    # source held out (its stack cut again alike)
    first = cls.make_patches(config, [a, b], axes="ZYX", n_patches_per_image=4)
    assert not tuned._slices_by_block(first.meta)[0]["validated"]
    assert tuned._validated_where_learned(first.meta, model.run_card["data_sources"]) == set()
    again = cc.create_model(config.replace(init_weights=str(tmp_path / "m")))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "fine-tuning on")
        again.train(cls.make_patches(config, [a], axes="ZYX", n_patches_per_image=4), epochs=1, steps_per_epoch=1)
    assert "validation_on_learned" not in again.run_card["init_weights"]


def test_the_upsampling_validation_line_starts_from_every_interpolation():
    """The upsampling kind's validation patches (interpolated along Z by the model) are brought onto their
    grid three ways too, as its QC report's and Restore step's filters start from nearest, linear or cubic
    interpolation (it had the patches' own alone)."""
    from carecore.models.upsampling import interpolate_z

    model = cc.create_model(cc.care_config("ZYX", kind="upsampling", upsampling_factor=4.0, quick=True))
    assert model.config.interpolation == "linear"
    rng = np.random.default_rng(2)
    coarse = [rng.random((6, 16, 16, 1)).astype(np.float32) for _ in range(3)]
    fine = {how: [interpolate_z(c, 4, 0, how) for c in coarse] for how in ("nearest", "linear", "cubic")}
    offsets = [1, 2, 3]   # (the patches begin at any phase of the coarse rows)
    X = np.stack([f[o:o + 16] for f, o in zip(fine["linear"], offsets)])
    starts = model.patch_grid_starts(X)
    assert list(starts) == ["nearest interpolation", "linear interpolation", "cubic interpolation"]   # (no axial PSF)
    assert starts["linear interpolation"] is X
    for how in ("nearest", "cubic"):
        ref = np.stack([f[o:o + 16] for f, o in zip(fine[how], offsets)])
        for p, r, o in zip(starts[f"{how} interpolation"], ref, offsets):
            first = (-o) % 4   # the patch's first coarse row
            rows = [k for k in range(first + 4, first + 9) if (o + k) % 4 != 2] if how == "cubic" else \
                   [k for k in range(first, first + 9) if (o + k) % 4 != 2]   # (nearest's ties go either way)
            tol = 0.25 if how == "cubic" else 1e-6   # (a spline through the patch's coarse rows only)
            assert np.abs(p[rows] - r[rows]).mean() < tol, (how, o)
    # a factor that is not an integer: the patches alone
    odd = cc.create_model(cc.care_config("ZYX", kind="upsampling", upsampling_factor=2.5, quick=True))
    assert list(odd.patch_grid_starts(X)) == ["linear interpolation"]


def test_a_stack_in_another_axes_order_comes_back_in_it():
    """A YXZ stack (a file written Z last) is restored as its ZYX transpose is, and comes back YXZ on the
    fine Z grid (it was refused: "takes a ZYX stack")."""
    cfg = _iso().default_config("ZYX", upsampling_factor=2, psf_sigma=1.0, quick=True, patch_size=(16, 16))
    model = cc.create_model(cfg)
    stack = cc.nuclei_volume((8, 16, 20), seed=4)[0]
    zyx = model.predict(stack, axes="ZYX")
    yxz = model.predict(np.transpose(stack, (1, 2, 0)), axes="YXZ")
    assert yxz.shape == (16, 20, 16)
    np.testing.assert_allclose(yxz, np.transpose(zyx, (1, 2, 0)), atol=1e-5)
    with pytest.raises(cc.CareError, match="Z, Y and X"):
        model.predict(stack[0], axes="YX")


def test_config_checks():
    cls = _iso()
    with pytest.raises(cc.CareError, match="2D networks"):
        cc.care_config("ZYX", kind="isotropic", upsampling_factor=2.0)
    with pytest.raises(cc.CareError, match="must be > 1"):
        cls.default_config("ZYX", kind="isotropic")
    with pytest.raises(cc.CareError, match="probabilistic"):
        cls.default_config("ZYX", kind="isotropic", upsampling_factor=2.0, probabilistic=True)


def test_the_generic_route_trains_without_rotations_and_refuses_tta():
    """care_config(kind="isotropic") defaults to augment=False as IsotropicCARE.default_config and the CLI
    do (rotations would move the degraded axis); augment=True given still wins. Without augmentation tta
    is refused, whichever route made the configuration."""
    generic = cc.care_config("YX", kind="isotropic", upsampling_factor=4, psf_sigma=2, quick=True)
    assert generic.augment is False and _iso().default_config("ZYX", upsampling_factor=4).augment is False
    assert cc.care_config("YX", kind="isotropic", upsampling_factor=4, augment=True).augment is True
    assert cc.care_config("YX").augment is True   # other kinds unchanged
    model = cc.create_model(generic)
    with pytest.raises(cc.CareError, match="trained without augmentation"):
        model.predict(np.zeros((4, 32, 32), np.float32), axes="ZYX", tta=True)


def test_a_voxel_size_that_is_not_the_factor_is_told():
    import warnings

    from carecore.models.upsampling import spacing_mismatch

    model = cc.create_model(cc.care_config("YX", kind="isotropic", upsampling_factor=4, psf_sigma=2, quick=True))
    with pytest.warns(cc.CareWarning, match=r"s.tif: its voxel size \(Z 2, Y 1, X 1 µm\) gives a Z/X ratio of 2, "
                                            r"but the model's axial factor \(upsampling_factor\) is 4; the output's "
                                            r"Z voxel size will be 2 / 4 = 0.5 µm"):
        model.check_spacing({"Z": 2.0, "Y": 1.0, "X": 1.0}, name="s.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error", cc.CareWarning)
        assert model.check_spacing({"Z": 1.9, "Y": 0.5, "X": 0.5}) is None   # within 10 %
        assert model.check_spacing({}) is None and model.check_spacing({"Z": 2.0}) is None   # nothing recorded
    assert "Z/Y ratio of 3" in spacing_mismatch({"Z": 3.0, "Y": 1.0}, 4)
    # an upsampling model's fine grid need not be isotropic: its factor is not checked against the ratio
    up = cc.create_model(cc.care_config("ZYX", kind="upsampling", upsampling_factor=2, quick=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cc.CareWarning)
        assert up.check_spacing({"Z": 10.0, "Y": 1.0, "X": 1.0}) is None


def test_shapes_voxel_size_channels_and_round_trip(tmp_path):
    cls = _iso()
    config = cls.default_config("ZYX", kind="isotropic", upsampling_factor=2.5, psf_sigma=1.0, quick=True,
                                precision="float32")
    model = cc.create_model(config, tmp_path / "iso")
    stack = _stack((6, 40, 36))
    out = model.predict(stack, axes="ZYX")
    assert out.shape == (15, 40, 36) and out.dtype == np.float32   # round(6 * 2.5) slices
    assert model.output_spacing({"Z": 2.5, "Y": 1.0, "X": 1.0}) == {"Z": 1.0, "Y": 1.0, "X": 1.0}
    assert model.on_output_grid(stack, axes="ZYX").shape == out.shape
    # each XZ and YZ slice is restored by the 2D network; the mean of both directions
    fine = model.on_output_grid(stack, axes="ZYX")
    norm = cc.compute_percentiles(stack, *config.percentiles, axes="ZYX")
    k = 7
    xz = cc.CARE.predict(model, fine[:, k], axes="YX", normalization=norm)
    yz = cc.CARE.predict(model, fine[:, :, k], axes="YX", normalization=norm)
    np.testing.assert_allclose(out[:, k, k], 0.5 * (xz[:, k] + yz[:, k]), rtol=1e-5, atol=1e-6)
    geo = model.predict(stack, axes="ZYX", combine="geometric")
    np.testing.assert_allclose(geo[:, k, k], np.sqrt(np.maximum(xz[:, k], 0) * np.maximum(yz[:, k], 0)),
                               rtol=1e-4, atol=1e-6)
    # channels: a two-channel model restores CZYX stacks
    two = cc.create_model(config.replace(n_channel_in=2, n_channel_out=2))
    assert two.predict(np.stack([stack, stack[::-1]]), axes="CZYX").shape == (2, 15, 40, 36)
    with pytest.raises(cc.CareError, match="2 channel"):
        two.predict(stack, axes="ZYX")
    with pytest.raises(cc.CareError, match="a stack with Z, Y and X"):
        model.predict(stack[0], axes="YX")
    model.save()
    again = cc.load_model(tmp_path / "iso")
    assert type(again).__name__ == "IsotropicCARE"
    np.testing.assert_allclose(again.predict(stack, axes="ZYX"), out, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_train_and_predict_writes_the_fine_grid(tmp_path, capsys):
    low = tmp_path / "stacks"
    low.mkdir()
    cc.write_image(low / "a.tif", (_stack((10, 64, 64)) * 1000).astype(np.uint16), axes="ZYX",
                   spacing={"Z": 2.0, "Y": 0.5, "X": 0.5})
    model_dir = tmp_path / "m"
    r = subprocess.run([sys.executable, "-m", "carecore.cli", "train", "--task", "isotropic", "--low", low, "--axes", "ZYX",
                        "--factor", "4", "--psf-sigma", "2", "--model-dir", model_dir, "--epochs", "1", "--steps", "3",
                        "--patch", "32,32", "--n-per-image", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "iso.tif"
    r = subprocess.run([sys.executable, "-m", "carecore.cli", "predict", "--model", model_dir, "--in", low / "a.tif",
                        "--out", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    img = cc.read_image(out)
    assert img.data.shape == (40, 64, 64) and img.spacing["Z"] == pytest.approx(0.5)
    from carecore.cli import main   # (the refusals in this process: the commands above ran as a user runs them)

    args = ["predict", "--model", str(model_dir), "--in", str(low / "a.tif"), "--out"]
    assert main(args + [str(tmp_path / "no.tif"), "--output-sigma", "1"]) == 2
    assert "--output-sigma: isotropic models do not smooth their output" in capsys.readouterr().err
    # --output-sigma 0 (no smoothing) is accepted and changes nothing
    assert main(args + [str(tmp_path / "plain.tif")]) == 0
    assert main(args + [str(tmp_path / "zero.tif"), "--output-sigma", "0"]) == 0
    np.testing.assert_array_equal(cc.read_image(tmp_path / "zero.tif").data, cc.read_image(tmp_path / "plain.tif").data)
    with pytest.raises(cc.CareError, match="output_sigma: isotropic models do not smooth"):
        cc.load_model(model_dir).predict(cc.read_image(low / "a.tif").data, axes="ZYX", output_sigma=1.0)
    assert main(["train", "--task", "isotropic", "--low", str(low), "--axes", "ZYX", "--factor", "4", "--model-dir",
                 str(tmp_path / "m2"), "--epochs", "1", "--steps", "1"]) == 2
    assert "axial PSF" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not EMBRYO.exists(), reason="the shared real images are not here")
def test_real_embryo_beats_interpolation(step_clock):
    """The embryo subsampled along Z by 4 after an axial blur; trained on its own lateral slices for a 60 s
    budget counted in steps of 0.12 s (about 490 steps: a 2-core AVX2 CPU makes 214 in 60 s of its wall
    clock, too few to beat cubic interpolation there; quality per minute is the benchmark's)."""
    clean = cc.read_image(EMBRYO).data.astype(np.float32)
    f, s = 4.0, 2.0
    coarse, _ = cc.simulate_anisotropic(clean, f, axes="ZYX", axis="Z", psf_sigma=s, upsample_back=False)
    cls = _iso()
    config = cls.default_config("ZYX", kind="isotropic", upsampling_factor=f, psf_sigma=s, time_limit=60)
    model = cc.create_model(config)
    step_clock(0.12)
    # (no noise given back: the simulation blurred the embryo's own noise along Z with its structure, as an
    # acquisition would not; with it this stack restored at 0.939 against cubic's 0.943: the record)
    model.train(cls.make_patches(config, [coarse], axes="ZYX", n_patches_per_image=16, match_noise=False))
    last = int((coarse.shape[0] - 1) * f) + 1   # slices between the first and the last coarse sample
    truth = clean[:last]
    care = model.predict(coarse, axes="ZYX")[:last]
    m = cc.evaluate(care, truth, axes="ZYX")
    # Φ over the band the sub-sampling lost (frequencies >= 1 / (2 × factor) cycles per voxel): there
    # the interpolations keep a quarter (linear) or a fifteenth (cubic) of the truth's Φ, and a
    # restoration recovers most of it (0.75-1.4 times the truth's in five 40-60 s trainings at the
    # first fast recipe), so the test compares how many times each is off. Φ over all frequencies is
    # dominated by the low ones that the axial blur barely touches: it spans ~0.02 for all of them
    # (0.610-0.628), which two 60 s trainings can cross.
    spacing = {"Z": 1.0, "Y": 1.0, "X": 1.0}
    phi = lambda v: cc.isotropy_ratio(v, spacing=spacing, min_frequency=0.5 / f)  # noqa: E731
    gap = abs(np.log(phi(care) / phi(truth)))
    for interp in ("linear", "cubic"):
        x = model.on_output_grid(coarse, axes="ZYX", interpolation=interp)[:last]
        b = cc.evaluate(x, truth, axes="ZYX")
        assert m["ssim"] > b["ssim"] + 0.005 and m["nrmse"] < b["nrmse"], (interp, m, b)
        assert gap < 0.5 * abs(np.log(phi(x) / phi(truth))), (interp, phi(care), phi(x), phi(truth))


@pytest.mark.slow
def test_demo_data_trains_and_qc_compares_on_the_fine_grid(demo_root, tmp_path):
    import json

    d = demo_root / "isotropic"
    info = json.loads((d / "dataset.json").read_text())
    cls = _iso()
    config = cls.default_config("ZYX", kind="isotropic", upsampling_factor=info["factor"],
                                psf_sigma=info["psf_sigma"], quick=True, epochs=1, steps_per_epoch=5)
    model = cc.create_model(config, tmp_path / "iso")
    model.train(cls.make_patches(config, d / "train" / "low", axes="ZYX", n_patches_per_image=4))
    from carecore.qc import quality_report

    rep = quality_report(tmp_path / "iso", d / "test" / "low", d / "test" / "high", tmp_path / "qc",
                               baselines=["gaussian"])
    assert rep["kind"] == "isotropic" and set(rep["overall"]) >= {"input", "CARE", "gaussian"}
    # its training data recorded per stack: a training stack is known by its path and its pixels, a test one is not
    trained = sorted((d / "train" / "low").glob("*.tif"))
    assert [s["low"] for s in model.run_card["data_sources"]] == [str(f) for f in trained]
    assert model.trained_on(trained[0]) is True and [e["trained_on"] for e in rep["images"]] == [False]
    assert model.trained_on(cc.read_image(trained[-1]).data, axes="ZYX") is True
    low, high = cc.read_image(d / "test" / "low" / "sample00.tif"), cc.read_image(d / "test" / "high" / "sample00.tif")
    assert model.predict(low.data, axes="ZYX").shape == high.data.shape
    assert low.spacing["Z"] == 4.0 and model.output_spacing(low.spacing)["Z"] == 1.0

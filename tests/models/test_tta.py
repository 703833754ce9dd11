"""Test-time augmentation: predict(tta=True) is the mean of the restorations of the image's flips and
rotations, tile by tile and stage by stage as for the whole image."""
import numpy as np
import pytest

import carecore as cc
from carecore import CareError, care_config
from carecore.prediction.tta import fit_scale_factor, forward, inverse, views


def _jittered(model, seed=0):
    """Random weights around the initial ones: a network far from any symmetry of its own."""
    rng = np.random.default_rng(seed)
    km = model.keras_model
    km.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32) for w in km.get_weights()])
    return model


def test_views_turn_the_yx_plane_of_every_layout():
    a = np.random.default_rng(0).random((3, 5, 7, 2))            # (Z, Y, X, C), Y != X
    np.testing.assert_array_equal(forward(a, 1, False), np.rot90(a, 1, axes=(1, 2)))
    np.testing.assert_array_equal(forward(a, 0, True), a[:, :, ::-1])
    np.testing.assert_array_equal(forward(a[0], 3, True), np.rot90(a[0], 3, axes=(0, 1))[:, ::-1])  # (Y, X, C)
    b = np.random.default_rng(1).random((4, 5, 7, 1))             # (B, Y, X, C)
    np.testing.assert_array_equal(forward(b, 2, False), b[:, ::-1, ::-1])


def test_views_undo_and_cover_the_symmetries():
    a = np.arange(2 * 4 * 4 * 1).reshape(2, 4, 4, 1)
    seen = set()
    for k, flip in views():
        v = forward(a, k, flip)
        np.testing.assert_array_equal(inverse(v, k, flip), a)
        seen.add(v.tobytes())
    assert len(seen) == 8                                    # the square's 8 symmetries, each once
    rect = np.arange(3 * 4 * 1).reshape(3, 4, 1)
    assert len(views(square=False)) == 4
    assert {forward(rect, k, f).shape for k, f in views(square=False)} == {rect.shape}


@pytest.mark.parametrize("axes,kw,shape", [
    ("YX", {}, (68, 52)),
    ("ZYX", {"probabilistic": True}, (12, 36, 28)),
    ("YX", {"patch_size": (32, 16)}, (40, 44)),                 # rectangular patches: 4 views
])
def test_tta_is_the_mean_over_views_tiled_and_staged(axes, kw, shape):
    # sides divisible by the network's divisor: no padding, whose side would turn with the view
    model = _jittered(cc.CARE(care_config(axes, quick=True, precision="float32", **kw)))
    x = np.random.default_rng(1).random(shape).astype(np.float32) * 100
    one = (1,) * len(axes)

    def as_tuple(r):
        return r if isinstance(r, tuple) else (r,)

    # by hand: the whole image in each view, restored, turned back, averaged (probabilistic: the
    # views' mixture as one Laplace, mean and variance matched)
    square = model.config.patch_size[-1] == model.config.patch_size[-2]
    outs = []
    for k, flip in views(square):
        xv = np.ascontiguousarray(forward(x[..., None], k, flip)[..., 0])
        outs.append([inverse(p[..., None], k, flip)[..., 0]
                     for p in as_tuple(model.predict(xv, axes=axes, n_tiles=one))])
    mus = np.stack([o[0] for o in outs])
    by_hand = [mus.mean(0)]
    if len(outs[0]) == 2:
        bs = np.stack([o[1] for o in outs])
        by_hand.append(np.sqrt((bs ** 2).mean(0) + mus.var(0) / 2))
    plain = as_tuple(model.predict(x, axes=axes, n_tiles=one))
    tol = 1e-5 * float(np.abs(plain[0]).max())
    for n, st in [(one, None), ((1,) * (len(axes) - 2) + (2, 2), None), (one, one[:-2] + (2, 3))]:
        seen, polls = [], []
        got = as_tuple(model.predict(x, axes=axes, n_tiles=n, stage_tiles=st, tta=True,
                                     progress=lambda d, t, w: seen.append((d, t, w)), stop=lambda: polls.append(1)))
        assert len(got) == len(by_hand)
        for g, h in zip(got, by_hand):
            np.testing.assert_allclose(g, h, atol=tol, err_msg=f"tiles {n}, stages {st}")
        # progress counts every view of every tile; a stop request is heard between views
        n_views = len(views(square))
        assert {w for *_, w in seen} == {"tile views"}
        assert seen[0][:2] == (0, seen[-1][1]) and seen[-1][0] == seen[-1][1] and seen[-1][1] % n_views == 0
        assert len(seen) - 1 >= n_views and len(polls) >= n_views
    # and it is not the plain prediction: the jittered network is not symmetric
    assert np.abs(got[0] - plain[0]).max() > 100 * tol


def test_tta_needs_an_augmented_model():
    model = cc.CARE(care_config("YX", quick=True, augment=False))
    with pytest.raises(CareError, match="augment=False"):
        model.predict(np.zeros((32, 32), np.float32), axes="YX", tta=True)


def test_tta_uses_the_views_of_the_patches_the_model_was_trained_on(tmp_path):
    """The run card records the symmetries training showed the network (8 on square patches, 4 on
    rectangular ones, whatever the configured patch_size); tta uses exactly those, also after saving."""
    rng = np.random.default_rng(0)

    def pairs(shape):
        X = rng.random((12, *shape, 1)).astype(np.float32)
        return X[:10], X[:10], X[10:], X[10:]

    def n_views(model):
        seen = []
        model.predict(rng.random((32, 32)).astype(np.float32), axes="YX", n_tiles=(1, 1), tta=True,
                      progress=lambda d, t, w: seen.append(t))
        return seen[-1]

    model = cc.CARE(care_config("YX", quick=True, epochs=1, steps_per_epoch=2), tmp_path / "m")
    assert model.config.patch_size == (32, 32)
    model.train(pairs((32, 32)))
    assert model.run_card["trained_views"] == 8 and n_views(model) == 8
    model.train(pairs((32, 16)))        # resumed on rectangular patches: the quarter turns are not all learned
    assert model.run_card["trained_views"] == 4 and n_views(model) == 4
    assert n_views(cc.load_model(tmp_path / "m")) == 4
    flat = cc.CARE(care_config("YX", quick=True, epochs=1, steps_per_epoch=2, augment=False))
    flat.train(pairs((32, 32)))
    assert flat.run_card["trained_views"] == 1
    with pytest.raises(CareError, match="augment=False"):
        n_views(flat)


@pytest.mark.parametrize("true_factor", [0.5, 1.5])
def test_fit_scale_factor_finds_the_factor_that_calibrates(true_factor):
    """Views that answer the input with scale b, against targets that lie true_factor * b away
    (Laplace): the fitted factor is the true one, whichever side of 1 it lies."""
    rng = np.random.default_rng(1)
    X = rng.random((16, 24, 24, 1)).astype(np.float32)
    b = 0.05
    Y = X + rng.laplace(0, true_factor * b, X.shape).astype(np.float32)
    run = lambda v, k: np.concatenate([v, np.full_like(v, b)], -1)   # noqa: E731
    assert fit_scale_factor(run, X, Y) == pytest.approx(true_factor, abs=0.06)


def test_a_probabilistic_model_calibrates_its_tta_intervals_on_validation_patches():
    """Training ends by measuring the factor on held-out patches; predict(tta=True) applies it to the
    views' mixture-matched scale, and leaves the mean alone."""
    rng = np.random.default_rng(3)
    clean = rng.random((12, 32, 32, 1)).astype(np.float32)
    noisy = clean + rng.normal(0, 0.2, clean.shape).astype(np.float32)
    model = cc.CARE(care_config("YX", quick=True, probabilistic=True, epochs=1, steps_per_epoch=4))
    model.train((noisy[:10], clean[:10], noisy[10:], clean[10:]))
    factor = model.tta_scale_factor
    assert model.run_card["tta_scale_factor"] == factor and 0.1 <= factor <= 2.0
    assert model.run_card["tta_scale_patches"] == 2   # (how many it was fitted on: said in the run card)
    x = rng.random((40, 40)).astype(np.float32)
    mean, scale = model.predict(x, axes="YX", tta=True)
    model.run_card["tta_scale_factor"] = 1.0
    mean1, scale1 = model.predict(x, axes="YX", tta=True)
    np.testing.assert_allclose(mean, mean1)
    np.testing.assert_allclose(scale, factor * scale1, rtol=1e-5)


def test_tta_of_a_projection_turns_the_stack_and_its_plane():
    from carecore.models.projection import ProjectionCARE

    model = _jittered(ProjectionCARE(ProjectionCARE.default_config("ZYX", precision="float32", unet_filters=8)))
    x = np.random.default_rng(2).random((6, 32, 40)).astype(np.float32) * 100
    by_hand = np.mean([inverse(model.predict(np.ascontiguousarray(forward(x[..., None], k, f)[..., 0]),
                                             axes="ZYX")[..., None], k, f)[..., 0] for k, f in views()], axis=0)
    seen = []
    got = model.predict(x, axes="ZYX", tta=True, n_tiles=(2, 1), progress=lambda d, t, w: seen.append((d, t, w)))
    n = len(model.tile_plan(x.shape, (2, 1)))
    assert seen[-1] == (n * 8, n * 8, "tile views") and len(seen) == n * 8 + 1   # every view of every tile
    plain = model.predict(x, axes="ZYX")
    tol = 1e-5 * float(np.abs(plain).max())
    np.testing.assert_allclose(got, by_hand, atol=tol)
    assert np.abs(got - plain).max() > 100 * tol


def test_chunked_tta_of_a_model_without_augmentation_fails_before_any_worker(tmp_path):
    folder = tmp_path / "noaug"
    cc.CARE(care_config("ZYX", quick=True, augment=False), folder).save()
    src = cc.write_image(tmp_path / "in.tif", np.zeros((8, 32, 32), np.float32), axes="ZYX")
    with pytest.raises(CareError, match="augment=False"):
        cc.predict_chunked(folder, src, tmp_path / "out.ome.zarr", tta=True, scheduler="tcp://127.0.0.1:1")
    assert not list(tmp_path.glob("*.ome.zarr")) and not list(tmp_path.glob(".*"))

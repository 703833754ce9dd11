"""Time-lapses (T) and stacks of samples (S) restored in memory, frame by frame, by every kind."""
import numpy as np
import pytest

import carecore as cc
from carecore.models.kinds import model_class
from carecore.uncertainty import Ensemble
from carecore.progress import Stopped


@pytest.fixture(scope="module")
def model2d():
    return cc.create_model(cc.care_config("YX", quick=True, probabilistic=True, patch_size=(32, 32), seed=3))


def test_a_time_lapse_is_its_frames_restored_one_by_one(model2d):
    rng = np.random.default_rng(0)
    movie = rng.random((3, 64, 48)).astype(np.float32) * np.array([1, 5, 20], np.float32)[:, None, None]
    calls = []
    mean, scale = model2d.predict(movie, axes="TYX", normalization="image",
                                  progress=lambda d, t, w: calls.append((d, t, w)))
    assert mean.shape == scale.shape == movie.shape
    for t in range(3):   # each frame as an image of its own, scaled by its own percentiles
        a, b = model2d.predict(movie[t], axes="YX", normalization="image")
        np.testing.assert_allclose(mean[t], a, atol=1e-5 * np.abs(a).max())
        np.testing.assert_allclose(scale[t], b, atol=1e-5 * np.abs(b).max())
    assert np.ptp(mean[2]) > 5 * np.ptp(mean[0])   # a frame's intensity range is its own
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and calls[-1][:2] == (3, 3) and {t for _, t, _ in calls} == {3}
    # T anywhere, S and T together, channels
    a2, _ = model2d.predict(np.transpose(movie, (1, 0, 2)), axes="ytx", normalization="image")
    np.testing.assert_allclose(np.transpose(a2, (1, 0, 2)), mean, atol=1e-5 * np.abs(mean).max())
    st = rng.random((2, 3, 32, 32, 1)).astype(np.float32)
    r, _ = model2d.predict(st, axes="STYXC")
    assert r.shape == st.shape
    np.testing.assert_allclose(r[1, 2], model2d.predict(st[1, 2], axes="YXC")[0], atol=1e-5)
    # a stop between frames; out= takes one image
    seen = []
    with pytest.raises(Stopped):
        model2d.predict(movie, axes="TYX", progress=lambda d, t, w: seen.append(d), stop=lambda: len(seen) > 1)
    with pytest.raises(cc.CareError, match="out= takes one image, not the frames of axes 'TYX'.*predict_chunked"):
        model2d.predict(movie, axes="TYX", out=np.empty((64, 48, 2), np.float32))
    with pytest.raises(cc.CareError, match=r"image \[T=0\]: the model is 2D"):
        model2d.predict(rng.random((2, 4, 32, 32)).astype(np.float32), axes="TZYX")
    with pytest.raises(cc.CareError, match=r"axes 'TYX' with shape \(0, 32, 32\) hold no frame"):
        model2d.predict(np.zeros((0, 32, 32), np.float32), axes="TYX")


def test_spatial_axes_in_another_order_are_restored_as_the_model_s_and_given_back(model2d):
    """An image saved transposed (axes XY, or a stack XYZ) is restored as the model's YX (ZYX) and given back
    in its own order (a user trial's `carecore predict --axes XY` was refused: "the model is 2D (YX) but the
    image has spatial axes 'XY'"); n_tiles counts along the image's own axes."""
    rng = np.random.default_rng(5)
    img = rng.random((64, 40)).astype(np.float32)
    mean, scale = model2d.predict(img, axes="YX")
    plans = []
    plan = model2d.tile_plan
    model2d.tile_plan = lambda shape, n_tiles, **k: plans.append((shape, n_tiles)) or plan(shape, n_tiles, **k)
    try:
        m2, s2 = model2d.predict(img.T, axes="XY", n_tiles=(1, 2))   # (two tiles along the image's Y: its 2nd axis)
    finally:
        del model2d.tile_plan
    assert plans == [((64, 40), (2, 1))], plans   # (in the model's order, Y first)
    assert m2.shape == s2.shape == img.T.shape
    np.testing.assert_allclose(m2.T, mean, atol=1e-5 * np.abs(mean).max())
    np.testing.assert_allclose(s2.T, scale, atol=1e-5 * np.abs(scale).max())
    frames = rng.random((2, 40, 64)).astype(np.float32)   # frames and channels where they are
    r, _ = model2d.predict(frames[..., None], axes="TXYC")
    assert r.shape == (2, 40, 64, 1)
    np.testing.assert_allclose(r[1, ..., 0].T, model2d.predict(frames[1].T, axes="YX")[0], atol=1e-5)
    proj = model_class("projection")
    pm = cc.create_model(proj.default_config("ZYX", quick=True, patch_size=(4, 32, 32)))
    stack = rng.random((4, 32, 48)).astype(np.float32)
    p = pm.predict(np.transpose(stack, (2, 1, 0)), axes="XYZ")   # a projection drops Z: XY back
    np.testing.assert_allclose(p, pm.predict(stack, axes="ZYX").T, atol=1e-5)
    # a refusal names the image as given, not only its transposed view
    with pytest.raises(cc.CareError, match=r"the model is 2D .* \(the image as given: axes XYZ, shape \(48, 32, 4\), "
                                           r"seen in the order ZYX\)"):
        model2d.predict(np.transpose(stack, (2, 1, 0)), axes="XYZ")


def test_a_time_lapse_too_large_for_memory_is_refused_after_one_frame(model2d, monkeypatch):
    import carecore.memory as memory

    movie = np.random.default_rng(2).random((50, 64, 64)).astype(np.float32)
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)   # 1 MiB; the mean and scale take 1.6 MiB
    seen = []
    with pytest.raises(cc.CareError, match=r"its 50 frames .* would take 1.6 MiB of memory, more than 80 % of the "
                                           r"1.0 MiB available: restore it chunk by chunk .*predict_chunked"):
        model2d.predict(movie, axes="TYX", progress=lambda d, t, w: seen.append(d))
    assert max(seen) == 1   # the first frame told the size
    monkeypatch.setattr(memory, "available_memory", lambda: 2**21)
    assert model2d.predict(movie, axes="TYX")[0].shape == movie.shape
    # an ensemble's members and mixture: (2 M + 3) results of 0.8 MiB, refused after the first member
    other = cc.create_model(cc.care_config("YX", quick=True, probabilistic=True, patch_size=(32, 32), seed=5))
    seen.clear()
    with pytest.raises(cc.CareError, match=r"the 2 members' restorations of shape \(50, 64, 64\) and their mixture would "
                                           r"take 5.5 MiB of memory, more than 80 % of the 2.0 MiB available"):
        Ensemble([model2d, other]).predict(movie, axes="TYX", progress=lambda d, t, w: seen.append(w))
    assert set(seen) == {"member 1/2"}


def test_ensembles_projections_and_isotropic_models_take_frames(model2d, tmp_path):
    rng = np.random.default_rng(1)
    movie = rng.random((2, 32, 32)).astype(np.float32)
    other = cc.create_model(cc.care_config("YX", quick=True, probabilistic=True, patch_size=(32, 32), seed=4))
    ens = Ensemble([model2d, other])
    got = ens.predict(movie, axes="TYX")
    assert got["mean"].shape == movie.shape and got["member_means"].shape == (2,) + movie.shape
    np.testing.assert_allclose(got["mean"][1], ens.predict(movie[1], axes="YX")["mean"], atol=1e-5)
    # a projection drops Z of every time point
    proj = model_class("projection")
    pm = cc.create_model(proj.default_config("ZYX", quick=True, patch_size=(4, 32, 32)))
    stacks = rng.random((2, 4, 32, 32)).astype(np.float32)
    p = pm.predict(stacks, axes="TZYX")
    assert p.shape == (2, 32, 32)
    np.testing.assert_allclose(p[1], pm.predict(stacks[1], axes="ZYX"), atol=1e-5)
    # isotropic restoration interpolates Z of every time point
    iso = model_class("isotropic")
    im = cc.create_model(iso.default_config("ZYX", upsampling_factor=2.0, psf_sigma=1.0, quick=True,
                                            patch_size=(32, 32)))
    stacks = rng.random((2, 4, 32, 32)).astype(np.float32)
    r = im.predict(stacks, axes="TZYX")
    assert r.shape == (2, 8, 32, 32)
    np.testing.assert_allclose(r[0], im.predict(stacks[0], axes="ZYX"), atol=1e-5)


def test_the_quality_report_refuses_time_lapses_before_restoring(model2d, tmp_path, monkeypatch):
    from carecore.qc import quality_report

    model2d.save(tmp_path / "model")
    movie = np.random.default_rng(3).random((2, 32, 32)).astype(np.float32)
    for sub in ("low", "gt"):
        (tmp_path / sub).mkdir()
        cc.write_image(tmp_path / sub / "tl.tif", movie, axes="TYX")
    with pytest.raises(cc.CareError, match=r"tl.tif: axes TYX \(shape \(2, 32, 32\)\) have T; .* save each time point"):
        quality_report(tmp_path / "model", tmp_path / "low", tmp_path / "gt", tmp_path / "qc")
    # a stack for a 2D model: refused before the filters are tuned (a minute and more), not after
    for sub in ("low", "gt"):
        (tmp_path / sub / "tl.tif").unlink()
        cc.write_image(tmp_path / sub / "st.tif", np.random.default_rng(4).random((6, 96, 96)), axes="ZYX")
    import carecore.baselines

    def tuned(*a, **k):
        raise AssertionError("the filters were tuned before the axes were checked")
    monkeypatch.setattr(carecore.baselines, "tune_output_baselines", tuned)
    with pytest.raises(cc.CareError, match=r"st.tif: axes ZYX \(shape \(6, 96, 96\)\), but the model restores YX images; "
                                           r"the quality report scores single images: save each Z slice as a file"):
        quality_report(tmp_path / "model", tmp_path / "low", tmp_path / "gt", tmp_path / "qc")
    # a 2D image read as a stack (axes="ZYX" given for it): the axes are the remedy, not the files
    for sub in ("low", "gt"):
        cc.write_image(tmp_path / sub / "st.tif", np.random.default_rng(4).random((96, 96)), axes="YX")
    with pytest.raises(cc.CareError, match=r"st.tif: axes ZYX \(shape \(1, 96, 96\)\), but the model restores YX images; "
                                           r"this is a single plane: leave out --axes ZYX \(axes= in Python\), or give YX"):
        quality_report(tmp_path / "model", tmp_path / "low", tmp_path / "gt", tmp_path / "qc", axes="ZYX")
    # images taken with another gain: the report can scale them by their own percentiles, as predict can
    monkeypatch.undo()
    from carecore.cli import main

    for sub in ("low", "gt"):
        (tmp_path / sub / "st.tif").unlink()
        cc.write_image(tmp_path / sub / "im.tif", np.random.default_rng(5).random((64, 64)) * 40 + 100, axes="YX")
    assert main(["qc", "--model", str(tmp_path / "model"), "--low", str(tmp_path / "low"), "--gt", str(tmp_path / "gt"),
                 "--out", str(tmp_path / "qc"), "--normalization", "image"]) == 0
    assert "Inputs scaled by their own percentiles" in (tmp_path / "qc" / "index.html").read_text()
    # the calibration is said to be of one view (the app restores the mean over views by default: a user trial)
    assert "Of one view: each image as it is" in (tmp_path / "qc" / "index.html").read_text()
    # a model with no intervals: the report says why it has no calibration (it left it out unsaid)
    cc.create_model(cc.care_config("YX", quick=True, probabilistic=False, patch_size=(32, 32))).save(tmp_path / "plain")
    assert main(["qc", "--model", str(tmp_path / "plain"), "--low", str(tmp_path / "low"), "--gt", str(tmp_path / "gt"),
                 "--out", str(tmp_path / "qc2"), "--normalization", "image", "--baselines", "gaussian"]) == 0
    assert "Not measured: the model is not probabilistic" in (tmp_path / "qc2" / "index.html").read_text()

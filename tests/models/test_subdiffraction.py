"""Sub-diffraction restoration: a CARE model trained only on simulated structures (CARE-NOTES §1, §8)."""
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

import carecore as cc
from carecore.baselines import richardson_lucy_tuned
from carecore.errors import CareError
from carecore.metrics import decorrelation_resolution, evaluate, profile_fwhm, tubule_fwhm
from carecore.models.kinds import model_class
from carecore.models.subdiffraction import SubdiffractionCARE
from carecore.simulate.structures import psf_sigma_equivalent, simulate_subdiffraction


def test_registered_and_config_checks():
    assert model_class("subdiffraction") is SubdiffractionCARE and not SubdiffractionCARE.needs_pairs
    c = SubdiffractionCARE.default_config("YX", psf_sigma=2.0)
    assert c.kind == "subdiffraction" and c.time_limit > 0 and c.patch_size == (64, 64)
    with pytest.raises(CareError, match="psf_sigma"):
        c.replace(psf_sigma=-1.0)
    # psf_sigma 0 is allowed (a measured PSF comes later), but then make_patches needs one
    with pytest.raises(CareError, match="--psf-sigma S or --psf"):
        SubdiffractionCARE.make_patches(c.replace(psf_sigma=0.0))
    with pytest.raises(CareError, match="simulated structures only"):
        SubdiffractionCARE.make_patches(c, [(np.zeros((64, 64)), np.zeros((64, 64)))])
    with pytest.raises(CareError, match="structures"):
        SubdiffractionCARE.make_patches(c, structures="tubules,stars")
    with pytest.raises(CareError, match="configured for YX"):
        SubdiffractionCARE.make_patches(c, axes="ZYX")


def test_make_patches_deterministic_2d_and_3d():
    c = SubdiffractionCARE.default_config("YX", psf_sigma=2.0)
    a = SubdiffractionCARE.make_patches(c, n_patches_per_image=8, n_images=4, image_shape=(128, 128))
    b = SubdiffractionCARE.make_patches(c, n_patches_per_image=8, n_images=4, image_shape=(128, 128))
    assert a.axes == "SYXC" and a.X.shape == (32, 64, 64, 1) == a.Y.shape and 0 < a.n_val < 32
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Y, b.Y)
    other = SubdiffractionCARE.make_patches(c.replace(seed=1), n_patches_per_image=8, n_images=4,
                                            image_shape=(128, 128))
    assert not np.array_equal(a.X, other.X)
    rec = a.meta["subdiffraction"]
    assert rec["psf_sigma"] == [2.0, 2.0] and rec["target_sigma"] == 0.5 and rec["structures"] == ["tubules", "granules"]
    # the inputs are blurred, the targets sharp: more high-frequency energy in the targets
    lap = lambda v: float(np.abs(ndi.laplace(v[..., 0].astype(np.float64))).mean() / (np.abs(v).mean() + 1e-9))  # noqa: E731
    assert lap(a.Y) > 2 * lap(a.X)

    c3 = SubdiffractionCARE.default_config("ZYX", psf_sigma=1.5)
    p3 = SubdiffractionCARE.make_patches(c3, n_patches_per_image=4, n_images=2, psf_sigma_z=3.0,
                                         structures="granules")
    q3 = SubdiffractionCARE.make_patches(c3, n_patches_per_image=4, n_images=2, psf_sigma_z=3.0,
                                         structures="granules")
    assert p3.axes == "SZYXC" and p3.X.shape == (8,) + c3.patch_size + (1,)
    np.testing.assert_array_equal(p3.X, q3.X)
    assert p3.meta["subdiffraction"]["psf_sigma"] == [3.0, 1.5, 1.5]


def test_simulator_3d_and_measured_psf():
    low, t, p = simulate_subdiffraction((12, 40, 40), kind="tubules", seed=3, psf=[2.0, 1.0, 1.0], target_sigma=0.3)
    assert low.shape == t.shape == (12, 40, 40) and t.max() == pytest.approx(1)
    delta = np.zeros((25, 25))
    delta[12, 12] = 1
    psf = ndi.gaussian_filter(delta, 2.0)
    assert psf_sigma_equivalent(psf) == pytest.approx([2.0, 2.0], abs=0.02)
    # a measured PSF gives the same pair as the Gaussian it samples (up to truncation)
    a = simulate_subdiffraction((64, 64), kind="granules", seed=5, psf=psf * 7.0, peak_photons=1e6, read_noise=0)[0]
    g = simulate_subdiffraction((64, 64), kind="granules", seed=5, psf=2.0, peak_photons=1e6, read_noise=0)[0]
    assert np.corrcoef(a.ravel(), g.ravel())[0, 1] > 0.999
    with pytest.raises(CareError, match="2D"):
        simulate_subdiffraction((8, 64, 64), kind="granules", seed=5, psf=psf)


def test_resolution_readouts():
    line = np.exp(-0.5 * ((np.arange(41) - 20) / 2.0) ** 2)[None].repeat(9, 0)
    assert profile_fwhm(line, (4, 0), (4, 40)) == pytest.approx(2.355 * 2.0, rel=0.03)
    assert np.isnan(profile_fwhm(line, (4, 0), (4, 18)))     # the peak is not crossed on both sides
    _, t, _ = simulate_subdiffraction((192, 192), kind="tubules", seed=2, psf=1.0, target_sigma=0.5)
    widths = [tubule_fwhm(ndi.gaussian_filter(t, s), t) for s in (1.0, 2.0, 3.0)]
    assert widths[0] < widths[1] < widths[2] and widths[1] == pytest.approx(2.355 * np.sqrt(4 + 0.25), rel=0.15)
    noisy = [cc.simulate_photon_noise(ndi.gaussian_filter(t, s), 300, read_noise=1, seed=1)[0] for s in (1.0, 3.0)]
    r1, r3 = (decorrelation_resolution(v) for v in noisy)
    assert 2 <= r1 < r3 < 12


@pytest.fixture(scope="module")
def trained():
    """A small 2D model trained on synthetic tubules and granules (PSF sigma 2 px) for 1000 fixed
    steps (about 40 s on 2 cores; fixed steps, not a time limit, so that a loaded machine gets the
    same model)."""
    config = SubdiffractionCARE.default_config("YX", psf_sigma=2.0, time_limit=40)
    model = SubdiffractionCARE(config)
    result = model.train(SubdiffractionCARE.make_patches(config), epochs=4, steps_per_epoch=250, time_limit=0)
    return model, result


def test_beats_tuned_richardson_lucy_on_held_out_images(trained):
    model, result = trained
    pairs, _ = SubdiffractionCARE.simulate_pairs(model.config, n_images=4, image_shape=(128, 128), seed=1234)
    rows = []
    for low, truth in pairs:
        care = model.predict(low, axes="YX")
        rl, n_iter, info = richardson_lucy_tuned(low, truth, 2.0, axes="YX")
        m_in, m_care = evaluate(low, truth, axes="YX"), evaluate(care, truth, axes="YX")
        rows.append({"ssim": (m_in["ssim"], info["ssim"], m_care["ssim"]),
                     "nrmse": (m_in["nrmse"], min(g["nrmse"] for g in info["grid"]), m_care["nrmse"]),
                     "fwhm": tuple(tubule_fwhm(v, truth) for v in (low, rl, care)),
                     "dcorr": tuple(decorrelation_resolution(v) for v in (low, rl, care))})
    mean = {k: np.nanmean([r[k] for r in rows], axis=0).round(3).tolist() for k in rows[0]}
    print("subdiffraction input / Richardson-Lucy (tuned) / CARE:", json.dumps(mean), result.status, result.epochs)
    ssim_in, ssim_rl, ssim_care = mean["ssim"]
    nrmse_in, nrmse_rl, nrmse_care = mean["nrmse"]
    assert ssim_care > ssim_rl > ssim_in and nrmse_care < nrmse_rl
    # resolution: thin tubules come out narrower than in the input (FWHM in pixels)
    assert mean["fwhm"][2] < 0.85 * mean["fwhm"][0]
    assert mean["dcorr"][2] < mean["dcorr"][0]
    # trained on synthetic images, whose units no microscope image shares: each image is scaled by its own
    # percentiles, whatever the configuration's input_normalization (the training inputs' would be wrong)
    low = pairs[0][0] * 37.0 + 500.0                 # a camera's offset and gain
    assert model.training_normalization is None
    expected = model.predict(pairs[0][0], axes="YX") * 37.0 + 500.0
    np.testing.assert_allclose(model.predict(low, axes="YX"), expected, atol=2e-3 * np.ptp(expected))


def test_cli_train_with_measured_psf_and_predict(tmp_path, capsys, step_clock):
    from carecore.cli import main

    step_clock(0.1)   # (the 5 s budget long enough to train in on every machine: a shorter one exits with 1)

    delta = np.zeros((21, 21), np.float32)
    delta[10, 10] = 1
    cc.write_image(tmp_path / "psf.tif", ndi.gaussian_filter(delta, 1.5) * 1000, axes="YX")
    model_dir = tmp_path / "m"
    rc = main(["train", "--task", "subdiffraction", "--structures", "tubules,granules", "--psf", str(tmp_path / "psf.tif"),
               "--axes", "YX", "--model-dir", str(model_dir), "--time-limit", "5s", "--n-per-image", "4",
               "--patch", "32,32"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    model = cc.load_model(model_dir)
    assert model.config.kind == "subdiffraction" and isinstance(model, SubdiffractionCARE)
    card = model.run_card["subdiffraction"]
    assert card["psf"].endswith("psf.tif") and card["psf_sigma_equivalent"] == pytest.approx([1.5, 1.5], abs=0.05)
    low, _, _ = simulate_subdiffraction((96, 80), kind="tubules", seed=9, psf=1.5)
    cc.write_image(tmp_path / "wf.tif", low, axes="YX")
    rc = main(["predict", "--model", str(model_dir), "--in", str(tmp_path / "wf.tif"), "--out", str(tmp_path / "out.tif")])
    said = capsys.readouterr()
    assert rc == 0, said.err[-2000:]
    assert "trained on simulated tubules and granules only" in said.out and "pixels of" not in said.err
    # an image whose pixels make the model's PSF another one in micrometres: said (a user trial: 0.3 µm pixels
    # restored into polygons without a word)
    cc.write_image(tmp_path / "wf_coarse.tif", low, axes="YX", spacing={"Y": 0.3, "X": 0.3})
    rc = main(["predict", "--model", str(model_dir), "--in", str(tmp_path / "wf_coarse.tif"), "--out",
               str(tmp_path / "out2.tif")])
    said = capsys.readouterr()
    assert rc == 0 and "pixels of 0.3 µm, but this model's structures were simulated at" in said.err, said.err[-2000:]
    out = cc.read_image(tmp_path / "out.tif").data
    assert out.shape == (96, 80) and np.isfinite(out).all()
    np.testing.assert_allclose(out, model.predict(low, axes="YX"), atol=1e-3 * np.abs(out).max())
    # without a PSF the CLI says what to give
    rc = main(["train", "--task", "subdiffraction", "--axes", "YX", "--model-dir", str(tmp_path / "m2")])
    assert rc == 2 and "--psf-sigma S or --psf" in capsys.readouterr().err


def test_a_measured_psf_is_deconvolved_in_the_first_validation_line(monkeypatch, tmp_path):
    """A model trained with a measured PSF and no ``psf_sigma``: its first training's validation line, and an
    ensemble's (tuned before its first member trains), start from the deconvolutions too (with the PSF's
    equivalent sigmas, recorded before the line is tuned), not from the input alone, as they did before."""
    delta = np.zeros((21, 21), np.float32)
    delta[10, 10] = 1
    c = SubdiffractionCARE.default_config("YX", psf_sigma=0.0, quick=True, patch_size=(32, 32), batch_size=2)
    ps = SubdiffractionCARE.make_patches(c, n_patches_per_image=4, n_images=4, image_shape=(64, 64),
                                         psf=ndi.gaussian_filter(delta, 1.5))
    model = cc.create_model(c)
    assert model.psf_sigmas() is None   # (nothing known before its training)
    seen = []

    class Seen(Exception):
        pass

    def seen_then_stop(self, X, own=SubdiffractionCARE.patch_grid_starts):   # the line's starts seen, then the
        seen.append(list(own(self, X)))                                      # training ends (its tuning: minutes)
        raise Seen

    monkeypatch.setattr(model, "patch_grid_starts", lambda X: seen_then_stop(model, X))
    with pytest.raises(Seen):
        model.train(ps, epochs=1, steps_per_epoch=1)
    assert seen and any(label.startswith("Richardson-Lucy") for label in seen[0]), seen
    assert any(label.startswith("a top-hat background subtraction") for label in seen[0])
    assert model.psf_sigmas() == pytest.approx({"Y": 1.5, "X": 1.5}, abs=0.05)   # (the record, before the line)
    # an ensemble tunes the line for its members before the first one trains: with the PSF's starts too
    from carecore.uncertainty.ensemble import train_ensemble

    seen.clear()
    monkeypatch.setattr(SubdiffractionCARE, "patch_grid_starts", seen_then_stop)
    with pytest.raises(Seen):
        train_ensemble(ps, c, tmp_path / "ens", n_members=2, time_limit=60)
    assert seen and any(label.startswith("Richardson-Lucy") for label in seen[0]), seen


def test_cli_3d_axial_sigma_and_steps_without_a_budget(tmp_path, capsys):
    """--psf-sigma-z reaches the simulator; --epochs/--steps mean no time budget (the kind's default
    3-minute budget would otherwise keep training)."""
    from carecore.cli import main

    model_dir = tmp_path / "m"
    rc = main(["train", "--task", "subdiffraction", "--structures", "granules", "--psf-sigma", "1.5",
               "--psf-sigma-z", "3", "--axes", "ZYX", "--model-dir", str(model_dir), "--epochs", "1", "--steps", "2",
               "--n-per-image", "4", "--patch", "16,32,32", "--batch", "2"])   # (the full recipe's batches of 16
    # patches of 16×64×64: 110 s of the suite for two steps)
    assert rc == 0, capsys.readouterr().err[-2000:]
    model = cc.load_model(model_dir)
    assert model.config.time_limit == 0 and model.run_card["status"] == "completed" and len(model.history) == 1
    assert model.run_card["subdiffraction"]["psf_sigma"] == [3.0, 1.5, 1.5]
    rc = main(["train", "--task", "subdiffraction", "--psf-sigma", "1.5", "--psf-sigma-z", "3", "--axes", "YX",
               "--model-dir", str(tmp_path / "m2"), "--epochs", "1", "--steps", "1"])
    assert rc == 2 and "only 3D (ZYX) models have a Z axis" in capsys.readouterr().err

"""What a user had is never lost, and what the work would get wrong is said: outputs never replace a
folder of the user's or an input, NaNs are an error, misaligned pairs and images unlike the training's
are warned about."""
import shutil
import warnings

import numpy as np
import pytest

import carecore as cc
from carecore import CareError, CareWarning
from carecore._atomic import MODEL_FOLDER, PATCH_FOLDER, check_replaceable
from carecore.cli import main
from carecore.data.patches import create_patches, warn_if_misaligned
from carecore.models.care import warn_if_unlike_training
from carecore.ngff import write_ngff
from carecore.normalize import Normalization


def _users_folder(path):
    path.mkdir()
    (path / "important.tif").write_bytes(b"raw data")
    (path / "notes.txt").write_text("notes")
    return path


def _intact(path):
    return (path / "important.tif").read_bytes() == b"raw data" and (path / "notes.txt").read_text() == "notes"


def _pair(shift=(0, 0), seed=0):
    clean = cc.nuclei_volume((4, 96, 96), seed=seed)[0].max(axis=0)
    low = np.roll(clean, shift, axis=(0, 1)) + np.float32(0.05) * np.random.default_rng(seed).standard_normal(clean.shape, np.float32)
    return low.astype(np.float32), clean


@pytest.fixture
def model_2d(tmp_path):
    model = cc.CARE(cc.care_config("YX", quick=True, seed=0), tmp_path / "m2d")
    model.save()
    return model


def test_a_folder_of_the_users_is_never_replaced(tmp_path, model_2d):
    users = _users_folder(tmp_path / "project")
    with pytest.raises(CareError, match=r"project: exists and is not a model folder \(no manifest.json in it\).*delete everything"):
        model_2d.save(users)
    low, high = _pair()
    with pytest.raises(CareError, match="is not a patch folder"):
        create_patches([(low, high)], (16, 16), axes="YX", n_patches_per_image=4, out=users)
    with pytest.raises(CareError, match="is not a Zarr store"):
        write_ngff(users, low, axes="YX")
    assert _intact(users) and sorted(p.name for p in tmp_path.iterdir()) == ["m2d", "project"]   # no leftovers
    # the CLI: train, patches and qc refuse before any work
    pairs = tmp_path / "pairs"
    for sub in ("low", "high"):
        (pairs / sub).mkdir(parents=True)
    cc.write_image(pairs / "low" / "a.tif", low, axes="YX")
    cc.write_image(pairs / "high" / "a.tif", high, axes="YX")
    for args in (["train", "--low", pairs / "low", "--high", pairs / "high", "--axes", "YX", "--model-dir", users],
                 ["patches", "--low", pairs / "low", "--high", pairs / "high", "--axes", "YX", "--patch", "16,16",
                  "--out", users],
                 ["qc", "--model", model_2d.path, "--low", pairs / "low", "--gt", pairs / "high", "--out", users]):
        assert main([str(a) for a in args]) == 2
        assert _intact(users)
    # an ensemble's folder is not replaced by a single model (its members would go)
    ens = tmp_path / "ens"
    (ens / "member_0").mkdir(parents=True)
    (ens / "ensemble.json").write_text('{"members": ["member_0"]}')
    with pytest.raises(CareError, match="not a model folder"):
        model_2d.save(ens)
    assert main([str(a) for a in ["train", "--low", pairs / "low", "--high", pairs / "high", "--axes", "YX",
                                  "--model-dir", ens]]) == 2
    assert (ens / "member_0").is_dir()
    # missing, empty and carecore's own folders are written (again)
    check_replaceable(tmp_path / "new", MODEL_FOLDER)
    (tmp_path / "empty").mkdir()
    model_2d.save(tmp_path / "empty")
    model_2d.save(tmp_path / "empty")
    assert (tmp_path / "empty" / "manifest.json").exists()
    ps = create_patches([(low, high)], (16, 16), axes="YX", n_patches_per_image=4, out=tmp_path / "p")
    create_patches([(low, high)], (16, 16), axes="YX", n_patches_per_image=4, out=ps.path)
    with pytest.raises(CareError, match="is a file"):
        check_replaceable(users / "notes.txt", PATCH_FOLDER)


def test_no_output_where_an_input_is(tmp_path, model_2d, capsys):
    low, _ = _pair()
    raw = cc.write_image(tmp_path / "raw.tif", low, axes="YX")
    before = raw.read_bytes()
    cases = [["predict", "--model", model_2d.path, "--in", raw, "--out", raw],
             ["predict", "--model", model_2d.path, "--in", raw, "--out", tmp_path / "r.tif", "--scale-out", raw],
             ["predict", "--model", model_2d.path, "--in", raw, "--out", tmp_path / "r.tif",
              "--scale-out", tmp_path / "." / "r.tif"],
             ["convert", raw, tmp_path / "sub" / ".." / "raw.tif"],
             ["degrade", "noise", "--in", raw, "--out", raw, "--photons", "5"]]
    for args in cases:
        assert main([str(a) for a in args]) == 2
        assert raw.read_bytes() == before
    err = capsys.readouterr().err
    assert "--out" in err and "writing there would overwrite it" in err and "give each output its own path" in err
    assert not (tmp_path / "r.tif").exists()


def test_nan_in_the_input_is_an_error_whatever_scales_it(model_2d):
    low, _ = _pair()
    low[40, 50] = np.nan
    norm = Normalization((0.0,), (1.0,), (1.0, 99.8))   # as training's percentiles are: no look at the image
    with pytest.raises(CareError, match=r"image: contains NaN or infinite values \(1 pixel in the tile Y \d+-\d+ X \d+-\d+, "
                                        r"the first at Y 40 X 50\)"):
        model_2d.predict(low, axes="YX", normalization=norm)
    with pytest.raises(CareError, match="NaN or infinite"):
        model_2d.predict(low, axes="YX", normalization="image")
    edge = np.pad(np.nan_to_num(low), ((0, 1), (0, 1)), mode="edge")   # 97 x 97: a window past the image's end reads it reflected
    edge[96, 95] = np.nan                                 # (the pixel counted once)
    with pytest.raises(CareError, match=r"\(1 pixel in the tile .*, the first at Y 96 X 95\)"):
        model_2d.predict(edge, axes="YX", normalization=norm)
    from carecore.models.kinds import create_model, model_class

    projection = create_model(model_class("projection").default_config("ZYX", quick=True))
    stack = np.stack([_pair(seed=k)[0][:64, :64] for k in range(4)])
    stack[2, 10, 20] = np.inf
    with pytest.raises(CareError, match=r"stack.tif: contains NaN or infinite values \(1 pixel in the tile Z 0-3 Y .*, the "
                                        r"first at Z 2 Y 10 X 20\)"):
        projection.predict(stack, axes="ZYX", normalization=Normalization((0.0,), (1.0,), (1.0, 99.8)),
                           name="stack.tif")


def test_an_image_unlike_the_training_images_is_warned_about():
    low, _ = _pair()
    norm = cc.compute_percentiles(low, 1, 99.8, axes="YX")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unlike_training(low, norm, axes="YX")                      # itself
        warn_if_unlike_training(low * 0.2, norm, axes="YX")                # a dim field
        warn_if_unlike_training(low * 3 + 0.5, norm, axes="YX")            # brighter cells
    with pytest.warns(CareWarning, match=r"raw.tif: its 1-99.8 percentiles .* far from the training inputs'.*'image'"):
        warn_if_unlike_training(low * 100 + 500, norm, axes="YX", name="raw.tif")   # another gain and offset
    with pytest.warns(CareWarning, match="far from the training"):
        warn_if_unlike_training(low * 50, norm, axes="YX")                 # another bit depth
    with pytest.warns(CareWarning, match="far from the training"):        # an 8-bit copy, contrast stretched
        warn_if_unlike_training(np.round(low / np.percentile(low, 99.9) * 255).clip(0, 255).astype(np.uint8) * 1.0,
                                cc.compute_percentiles(low / np.percentile(low, 99.9) * 25, 1, 99.8, axes="YX"), axes="YX")


def test_an_image_smaller_than_the_training_patches_is_warned_about(model_2d):
    """A 5 x 5 image or a single row (a user's trial: restored without a word, worse than within a larger
    image): warned, naming the axes; an image of half a patch or more is not."""
    side = model_2d.config.patch_size[0]
    x = np.random.default_rng(0).random((side, side), np.float32)
    with pytest.warns(CareWarning, match=r"tiny: smaller than half the training patches along Y 5 \(the training "
                                         rf"patches' {side}\), X 5"):
        model_2d.predict(x[:5, :5], axes="YX", name="tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_2d.predict(x[: side // 2, : side // 2], axes="YX")


def test_misaligned_training_pairs_are_warned_about(tmp_path, capsys):
    low, high = _pair(shift=(6, 5))
    a, b = (cc.read_image(cc.write_image(tmp_path / n, x, axes="YX")) for n, x in (("low.tif", low), ("high.tif", high)))
    with pytest.warns(CareWarning, match=r"low.tif: the low-quality image is shifted from its ground truth \(high.tif\) "
                                         r"by Y -6.0, X -5.0 pixels"):
        warn_if_misaligned(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_misaligned(*(cc.read_image(cc.write_image(tmp_path / n, x, axes="YX"))   # aligned
                             for n, x in (("l2.tif", _pair()[0]), ("h2.tif", high))))
        volume = cc.nuclei_volume((8, 64, 64), seed=2)[0]
        warn_if_misaligned(cc.Image(np.stack([volume, volume[:, ::-1]]), "TZYX"), cc.Image(volume, "ZYX"))
    rng = np.random.default_rng(1)
    unrelated = [cc.Image(rng.random((64, 64), np.float32), "YX", path=f"{n}.tif") for n in ("u1", "u2")]
    with pytest.warns(CareWarning, match=r"u1.tif: no clear match with its ground truth \(u2.tif\)"):
        warn_if_misaligned(*unrelated)      # unrelated images (noise here): no clear match anywhere, said so
    # the CLI says it in one line
    for sub, x in (("low", low), ("high", high)):
        (tmp_path / sub).mkdir()
        cc.write_image(tmp_path / sub / "a.tif", x, axes="YX")
    assert main(["patches", "--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--axes", "YX",
                 "--patch", "16,16", "--n-per-image", "4", "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "carecore: warning: " in err and "a.tif: the low-quality image is shifted" in err


def test_a_training_resumes_on_its_own_images_only(tmp_path):
    """Resumed on other images, a model would choose its best weights by losses on other validation sets
    and forget what it learned from: refused (fine-tune into a new folder instead); its own images resume."""
    from carecore.data.pairs import find_pairs

    for folder, names in (("a", ("s0.tif", "s1.tif")), ("b", ("t0.tif",))):
        for sub in ("low", "high"):
            (tmp_path / folder / sub).mkdir(parents=True)
        for i, n in enumerate(names):
            low, high = _pair(seed=i + (5 if folder == "b" else 0))
            cc.write_image(tmp_path / folder / "low" / n, low, axes="YX")
            cc.write_image(tmp_path / folder / "high" / n, high, axes="YX")
    cut = lambda f: create_patches(find_pairs(tmp_path / f / "low", tmp_path / f / "high"), (32, 32),  # noqa: E731
                                   axes="YX", n_patches_per_image=8)
    model = cc.CARE(cc.care_config("YX", quick=True, seed=0, time_limit=0), tmp_path / "m")
    model.train(cut("a"), epochs=1, steps_per_epoch=1)
    card, weights = dict(model.run_card), [w.copy() for w in model.keras_model.get_weights()]
    with pytest.raises(CareError, match=r"trained on other images \(s0.tif, s1.tif; now also or instead t0.tif\).*"
                                        r"--init-weights FOLDER"):
        model.train(cut("b"), epochs=1, steps_per_epoch=1)
    assert model.run_card == card and all(np.array_equal(a, b) for a, b in zip(model.keras_model.get_weights(), weights))
    model.train(cut("a"), epochs=1, steps_per_epoch=1)   # its own images: resumed
    assert len(model.history) == 2
    # its own images cut at another patch size or with another seed (the app's Resume after another budget
    # cut them again): other validation boxes, some on regions its first run trained on: refused
    pairs = find_pairs(tmp_path / "a" / "low", tmp_path / "a" / "high")
    for other in (dict(patch_size=(48, 48)), dict(seed=7), dict(n_patches_per_image=4)):
        with pytest.raises(CareError, match=r"began training on patches whose validation boxes lie elsewhere: .*"
                                            r"resume on the patches it began with"):
            model.train(create_patches(pairs, **{"patch_size": (32, 32), "axes": "YX", "n_patches_per_image": 8,
                                                 **other}), epochs=1, steps_per_epoch=1)
    assert len(model.history) == 2 and model.run_card["validation_layout"] == card["validation_layout"]
    # the same file names with other pixels (a user's trial: first the ground truths given as their own inputs,
    # then the right folder; the 1-step weights of the mistake won as "best" at loss 0): refused
    (tmp_path / "c").mkdir()
    shutil.copytree(tmp_path / "a" / "high", tmp_path / "c" / "low")   # (the pairs swapped)
    shutil.copytree(tmp_path / "a" / "low", tmp_path / "c" / "high")
    with pytest.raises(CareError, match=r"other pixels under the same file names \(s0.tif / s0.tif, s1.tif / s1.tif"):
        model.train(cut("c"), epochs=1, steps_per_epoch=1)
    assert len(model.history) == 2


def test_outputs_are_checked_before_the_work(tmp_path, model_2d, capsys):
    """A missing folder, a suffix that cannot be written or a folder of the user's as a Zarr store is
    told before anything is restored (no interval written, then the output refused); 2D and 3D images
    compared are named with their axes."""
    from carecore.qc import _html

    low, _ = _pair()
    raw = cc.write_image(tmp_path / "raw.tif", low, axes="YX")
    base = ["predict", "--model", str(model_2d.path), "--in", str(raw)]
    for extra, said in ((["--out", str(tmp_path / "nodir" / "r.tif"), "--scale-out", str(tmp_path / "s.tif")], "nodir"),
                        (["--out", str(tmp_path / "r.png")], "r.png"),
                        (["--out", str(_users_folder(tmp_path / "project.ome.zarr"))], "not a Zarr store")):
        assert main(base + extra) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "s.tif").exists() and _intact(tmp_path / "project.ome.zarr")
    vol = cc.write_image(tmp_path / "vol.tif", np.stack([low] * 4), axes="ZYX")
    assert main(["evaluate", "--pred", str(raw), "--gt", str(vol)]) == 2
    err = capsys.readouterr().err
    assert "raw.tif (YX, shape (96, 96)) and" in err and "vol.tif (ZYX, shape (4, 96, 96)) differ" in err
    page = _html({"models": ["m"], "kind": "care", "probabilistic": False, "ensemble": False, "baselines": {},
                  "overall": {}, "warnings": [],
                  "images": [{"name": "a#1.tif", "metrics": {}, "figures": {"images": "a#1_images.png",
                                                                             "maps": "a#1_maps.png"}}]})
    assert "src='a%231_images.png'" in page


@pytest.mark.parametrize("name", ["bian_BPAE_nuclei_680x1100.tif", "bian_BPAE_mito_680x1100.tif"])
def test_a_real_pair_shifted_by_two_pixels_is_warned_about(shared_data, name):
    """Real images at 100 photons: smooth nuclei correlate well even unmoved, so the match is judged by
    its halves agreeing, not by how much better it correlates; unmoved, nothing is said."""
    clean = cc.read_image(shared_data / name).data.astype(np.float32)
    low, _ = cc.simulate_photon_noise(clean, 100, background=1.0, read_noise=1.0, seed=1)
    with pytest.warns(CareWarning, match=r"shifted from its ground truth \(truth.tif\) by Y \+0.0, X -2.0 pixels"):
        warn_if_misaligned(cc.Image(np.roll(low, 2, axis=1), "YX", path="low.tif"), cc.Image(clean, "YX", path="truth.tif"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_misaligned(cc.Image(low, "YX"), cc.Image(clean, "YX"))


def test_a_real_stack_shifted_in_z_is_warned_about(shared_data):
    """The embryo at 100 photons, its low-quality stack two slices off its ground truth (stacks acquired
    one after the other, the focus drive moved): the YX projections agree, Z says it; unmoved, nothing."""
    clean = cc.read_image(shared_data / "morpholibj_arabidopsis_embryo_106x112x109.tif").data.astype(np.float32)
    low, _ = cc.simulate_photon_noise(clean / clean.max(), 100, background=1.0, read_noise=1.0, seed=1)
    with pytest.warns(CareWarning, match=r"shifted from its ground truth \(truth.tif\) by Z \+2.0, Y \+0.0, X \+0.0"):
        warn_if_misaligned(cc.Image(low[2:], "ZYX", path="low.tif"), cc.Image(clean[:-2], "ZYX", path="truth.tif"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_misaligned(cc.Image(low, "ZYX"), cc.Image(clean, "ZYX"))
        warn_if_misaligned(cc.Image(low[:4], "ZYX"), cc.Image(clean[2:6], "ZYX"))   # (4 slices: Z not measured)


def test_the_demo_pairs_are_not_called_misaligned(tmp_path):
    """Every pair of the embedded demo data (tiny and small), in Y, X and Z: nothing said (the ZX
    projections once called a tiny 3D pair misaligned by their X, printed as Z +0.0)."""
    from carecore.data.pairs import find_pairs

    for size in ("tiny", "small"):
        cc.write_demo_data(tmp_path / size, size=size)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CareWarning)
            for low in sorted((tmp_path / size).glob("*/*/low")):
                for pair in find_pairs(low, low.parent / "high").pairs:
                    warn_if_misaligned(cc.read_image(pair.low, mmap=True), cc.read_image(pair.high, mmap=True))


def test_a_time_lapse_unlike_the_training_images_is_warned_about_once(model_2d):
    """Every frame of a time-lapse taken with another offset would warn: said once, with how many more."""
    low, _ = _pair()
    norm = cc.compute_percentiles(low, *model_2d.config.percentiles, axes="YX").to_dict()
    model_2d.run_card["normalization_seen"] = {"percentiles": norm["percentiles"],
                                               "sources": [{"low": "a.tif", "norm_low": norm}]}
    assert model_2d.scales_by_training
    movie = np.stack([low * 50 + 500 + k for k in range(4)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_2d.predict(movie, axes="TYX", name="movie.tif")
    said = [str(w.message) for w in caught if issubclass(w.category, CareWarning)]
    assert len(said) == 1 and said[0].startswith("movie.tif [T=0]: its") and "(and 3 more frames likewise)" in said[0]
    with cc.errors.collect_warnings() as collected:   # in a collector (the app): the same, not shown
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model_2d.predict(movie, axes="TYX", name="movie.tif")
    assert len(collected) == 1 and "(and 3 more frames likewise)" in collected[0]

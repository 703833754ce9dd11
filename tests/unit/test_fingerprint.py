"""Whether a model was trained on an image is known by its path and by its pixels: a copy under another
name or in another format is one of its training images too (its scores there would flatter it)."""
import shutil

import numpy as np
import pytest

import carecore as cc
from carecore import CareError
from carecore.data.pairs import find_pairs
from carecore.data.patches import create_patches
from carecore.fingerprint import SKETCH, crop_sketch, crop_sketches, fingerprint, overlaps, sketches_overlap
from carecore.ngff import write_ngff
from carecore.simulate.photon import simulate_photon_noise
from carecore.uncertainty import Ensemble


def _volume(seed):
    return (cc.nuclei_volume((8, 64, 64), seed=seed)[0] * 1000 + 100).astype(np.uint16)


def test_a_fingerprint_is_of_the_pixels_not_their_array_type_or_axes_order():
    x = _volume(0)
    fp = fingerprint(x, "ZYX")
    assert fp is not None and len(fp) == 24
    assert fingerprint(x.astype(np.float32), "ZYX") == fp                      # another type, the same values
    assert fingerprint(np.moveaxis(x, 0, -1), "YXZ") == fp                      # another axes order
    assert fingerprint(x[None], "CZYX") != fp                                   # (another grid: one channel more)
    assert fingerprint(_volume(1), "ZYX") != fp                                 # another image
    y = x.copy()
    y[4, 32, 32] += 1                                                            # one value in the central block
    assert fingerprint(y, "ZYX") != fp
    assert fingerprint(x[:, :32], "ZYX") != fp                                  # a crop
    assert fingerprint(np.zeros((8, 64, 64), np.uint16), "ZYX") is None        # blank: would not tell images apart
    assert fingerprint(x[0], "YX") != fingerprint(x[1], "YX")
    lapse = np.stack([x, _volume(1)])                                          # a time-lapse: all its frames
    assert fingerprint(lapse, "TZYX") not in (None, fp, fingerprint(lapse[:1], "TZYX"))
    assert fingerprint(np.moveaxis(lapse, 0, -1), "ZYXT") == fingerprint(lapse, "TZYX")
    with pytest.raises(CareError, match="axes 'QYX' do not fit"):
        fingerprint(x, "QYX")
    with pytest.raises(CareError, match="axes 'YX' do not fit"):
        fingerprint(x, "YX")


def test_a_model_knows_its_training_images_by_path_and_by_pixels(tmp_path):
    """Its run card records the training images' fingerprints: a renamed copy, an OME-Zarr copy and a
    time-lapse with the image as a time point are recognised; a test image is not; a card without sources
    does not know."""
    for sub in ("train/low", "train/high", "test/low", "copies"):
        (tmp_path / sub).mkdir(parents=True)
    vols = {n: _volume(i) for i, n in enumerate(("a", "b", "test"))}
    for n in ("a", "b"):
        cc.write_image(tmp_path / "train/low" / f"{n}.tif", vols[n], axes="ZYX")
        cc.write_image(tmp_path / "train/high" / f"{n}.tif", vols[n] + 1, axes="ZYX")   # (not the input itself)
    cc.write_image(tmp_path / "test/low/test.tif", vols["test"], axes="ZYX")
    patches = create_patches(find_pairs(tmp_path / "train/low", tmp_path / "train/high"), (8, 16, 16), axes="ZYX",
                             n_patches_per_image=4)
    assert all(s["fingerprint"] for s in patches.meta["sources"])
    model = cc.CARE(cc.care_config("ZYX", quick=True, seed=0, time_limit=0, probabilistic=True), tmp_path / "m")
    model.train(patches, epochs=1, steps_per_epoch=1)
    model = cc.load_model(tmp_path / "m")                                        # (read back from its folder)
    assert [bool(s.get("fingerprint")) for s in model.run_card["data_sources"]] == [True, True]

    assert model.trained_on(tmp_path / "train/low/a.tif") is True               # by path
    moved = tmp_path / "moved" / "train" / "low" / "a.tif"                      # a data root moved: by its pixels,
    assert model.trained_on(vols["a"], axes="ZYX", path=moved) is True
    assert model.trained_on(vols["test"], axes="ZYX", path=moved) is False      # not its name (another experiment's a.tif)
    # a recorded path with other pixels (another experiment's train/low/a.tif, a file written again): not
    assert model.trained_on(vols["test"], axes="ZYX", path=tmp_path / "train/low/a.tif") is False
    assert model.trained_on(vols["a"][2:6, :32, 8:40], axes="ZYX") is True      # a crop (sketched windows)
    assert model.trained_on(vols["a"][3], axes="YX") is True                     # a slice of it
    shutil.copy(tmp_path / "train/low/b.tif", tmp_path / "copies/renamed.tif")
    assert model.trained_on(tmp_path / "copies/renamed.tif") is True            # a renamed copy
    write_ngff(tmp_path / "copies/b.ome.zarr", vols["b"].astype(np.float32), axes="ZYX")
    assert model.trained_on(tmp_path / "copies/b.ome.zarr") is True             # another format and type
    lapse = np.stack([vols["test"], vols["a"]])
    cc.write_image(tmp_path / "copies/lapse.tif", lapse, axes="TZYX")
    assert model.trained_on(tmp_path / "copies/lapse.tif") is True              # a time point of a time-lapse
    assert model.trained_on(lapse, axes="TZYX") is True                         # an array
    assert model.trained_on(tmp_path / "test/low/test.tif") is False            # never seen
    assert model.trained_on(vols["test"], axes="ZYX") is False
    with pytest.raises(CareError, match="give the axes"):
        model.trained_on(vols["test"])

    # an ensemble: any member's
    ens = Ensemble([model, model])
    assert ens.trained_on(tmp_path / "copies/renamed.tif") is True and ens.trained_on(vols["test"], axes="ZYX") is False
    # a card of a model saved before fingerprints were recorded: by path only; a card without sources: not known
    sources = model.run_card["data_sources"]
    model.run_card["data_sources"] = [{k: v for k, v in d.items() if k != "fingerprint"} for d in sources]
    assert model.trained_on(tmp_path / "copies/renamed.tif") is True   # sketched, no fingerprint (blank blocks): by pixels
    model.run_card["data_sources"] = [{k: v for k, v in d.items() if k not in ("fingerprint", "sketch")}
                                      for d in sources]
    assert model.trained_on(tmp_path / "train/low/a.tif") is True and model.trained_on(tmp_path / "copies/renamed.tif") is False
    assert model.trained_on(vols["test"], axes="ZYX", path=moved) is False      # (its file is there: not by last parts)
    for d in model.run_card["data_sources"]:                                     # a data root moved: by its last parts
        d["low"] = d["low"].replace(str(tmp_path), "/gone/root")
    assert model.trained_on(vols["test"], axes="ZYX", path=moved) is True
    model.run_card.pop("data_sources")
    assert model.trained_on(tmp_path / "copies/renamed.tif") is None


def _sketched(pieces, axes):
    """A run card's sources as training records them, for the pieces given."""
    return [{"low": f"piece{i}.tif", "high": f"piece{i}.tif", "fingerprint": fingerprint(p, axes),
             "shape": list(p.shape), **dict(zip(("sketch", "sketch_rare"), crop_sketches(p, axes)))}
            for i, p in enumerate(pieces)]


@pytest.mark.parametrize("photons", [1, 5, 50])
def test_a_crop_of_a_training_image_is_known_a_held_out_part_is_not(photons, shared_data):
    """Trained on the left part of a real image degraded to a photon budget: crops of it (any offset, saved as
    another type), the whole image it was cut from and a part that overlaps it are known as training images; the
    held-out right part, the same field with other noise and other channels are not (low photon counts included:
    windows of a few photons among zeros recur by chance, and are not sketched)."""
    channels = [cc.read_image(shared_data / f"bian_BPAE_{c}_680x1100.tif").data for c in ("nuclei", "mito", "actin")]
    low = [simulate_photon_noise(c / c.max(), photons, seed=k)[0].round() for k, c in enumerate(channels)]
    model = cc.CARE(cc.care_config("YX", quick=True), None)
    model.run_card = {"data_sources": _sketched([x[:, :550] for x in low], "YX")}
    train, test = low[0][:, :550], low[0][:, 550:]
    for seen in (train[100:300, 37:237], train[333:650, 200:511].astype(np.float64), low[0], low[1][:, 300:800],
                 low[2][:300, :550]):
        assert model.trained_on(seen, axes="YX") is True, seen.shape
    for unseen in (test, test[100:300, 37:237], low[1][:, 550:],
                   simulate_photon_noise(channels[0] / channels[0].max(), photons, seed=9)[0].round()[:, :550]):
        assert model.trained_on(unseen, axes="YX") is False, unseen.shape
    assert overlaps([crop_sketch(train, "YX")], low[0][:, 450:1000], "YX")      # a sixth of it shared: known
    # another noise draw of the field trained on: its input is new, its ground truth a training target
    assert model.truth_seen(channels[0], axes="YX") is None                     # (no targets sketched)
    for source, clean in zip(model.run_card["data_sources"], channels):
        source["sketch_high"] = crop_sketch(clean[:, :550], "YX")
    assert model.truth_seen(channels[0][100:400, 200:500], axes="YX") is True
    assert model.truth_seen(channels[0][:, 550:], axes="YX") is False           # (the held-out part's truth)


def test_a_sketch_is_of_the_windows_not_their_grid_or_type():
    x = _volume(3)
    sketch = crop_sketch(x, "ZYX")
    assert sketch == crop_sketch(x.astype(np.float32), "ZYX") == crop_sketch(np.moveaxis(x, 0, -1), "YXZ")
    assert len(np.frombuffer(__import__("base64").b64decode(sketch), "<u8")) == SKETCH
    assert overlaps([sketch], x[:, 5:40, 9:50].T, "XYZ")                         # a crop in another axes order
    assert crop_sketch(np.zeros((4, 32, 32)), "ZYX") is None                     # blank: no window to tell
    assert crop_sketch(np.ones((4, 6, 6)), "ZYX") is None                        # (smaller than a window)
    assert not overlaps([None], x, "ZYX")
    tiny = x[2, 20:34, 20:34]                                                    # fewer windows than a sketch holds:
    small = crop_sketch(tiny, "YX")                                             # all of them, and an image holding
    assert len(np.frombuffer(__import__("base64").b64decode(small), "<u8")) < SKETCH   # it is known, plane by plane
    assert overlaps([small], x, "ZYX") and not overlaps([small], _volume(4), "ZYX")


def test_a_large_dim_stack_is_not_taken_for_another_by_windows_that_recur_by_chance():
    """Two unrelated stacks of 96 x 1024 x 1024 at 0.04 photons a pixel (0 or 1): most of their windows of 10 changes are a
    few photons among zeros, which recur in both by chance (a run card of before 2026-12-07, with the first part
    of the sketch alone, takes one for the other). With the rare part, they are told apart by sketches and by
    pixels (and a small dim image from the large one), and a crop and a block of planes of the stack trained on are
    still known."""
    rng = np.random.default_rng(1)
    trained, other = ((rng.random((96, 1024, 1024), dtype=np.float32) < 0.04).astype(np.uint8) for _ in range(2))
    sketch, sketch_other = crop_sketches(trained, "ZYX"), crop_sketches(other, "ZYX")
    assert sketch[0] == crop_sketch(trained, "ZYX")                              # (the first part: as before)
    assert sketches_overlap(sketch[0], sketch_other[0])                          # (of chance)
    assert not sketches_overlap(sketch, sketch_other) and not overlaps([sketch], other, "ZYX")
    small = (rng.random((256, 256), dtype=np.float32) < 0.04).astype(np.uint8)   # a small dim training image: its
    assert overlaps([crop_sketches(small, "YX")[0]], other, "ZYX")                # windows recur in the large one
    assert not overlaps([crop_sketches(small, "YX")], other, "ZYX")               # by chance
    for seen in (trained[10:30, 100:700, 200:900], trained[40:52]):              # (a twelfth and an eighth of it)
        assert overlaps([sketch], seen, "ZYX"), seen.shape
        assert sketches_overlap(crop_sketches(seen, "ZYX"), sketch), seen.shape
    # an image of continuous values: every window is rare, and the second part is recorded as the first
    assert crop_sketches(rng.random((64, 64)), "YX")[1] == "="
    assert crop_sketches(np.zeros((4, 32, 32)), "ZYX") == (None, None)

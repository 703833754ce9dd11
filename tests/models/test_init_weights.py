"""A fine-tune: training that starts from another network's weights (``init_weights``: a model folder)."""
import json

import numpy as np
import pytest

import carecore as cc
from carecore.models.config import CareConfig, care_config
from carecore.models.init_weights import check_init_weights, copy_matching_weights


def _weights(model):
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.keras_model.layers if layer.weights}


def test_a_fine_tune_starts_from_its_source_after_the_network_is_rebuilt(smooth_pairs, tmp_path):
    """The copy comes after ``train()`` rebuilds the network for its chosen smoothing (``residual_sigma``
    "auto"), so the fine-tune's weights are the source's moved by its own few small steps; a layer the
    source lacks (a probabilistic network's scale head, from a plain one) keeps its own start; the run card
    says where it started."""
    data = smooth_pairs(12, 4)
    quick = dict(quick=True, precision="float32", epochs=1)
    src = cc.CARE(care_config("YX", **quick, steps_per_epoch=30, residual_sigma=1.0, seed=1), tmp_path / "src")
    src.train(data)
    config = care_config("YX", **quick, steps_per_epoch=2, learning_rate=1e-6, seed=2, probabilistic=True,
                         residual_sigma="auto", init_weights=tmp_path / "src")
    assert config.init_weights == str(tmp_path / "src")
    assert CareConfig.from_dict(config.to_dict()).init_weights == config.init_weights
    tuned = cc.CARE(config)
    tuned.train(data)
    card = tuned.run_card["init_weights"]
    assert card["new"] == ["head_scale"] and card["copied"] == card["layers"] - 1 > 10, card
    theirs, ours = _weights(src), _weights(tuned)
    for name in theirs:
        for a, b in zip(theirs[name], ours[name]):
            np.testing.assert_allclose(b, a, atol=1e-4, err_msg=name)   # two Adam steps of 1e-6
    # a network from its own random start is far from it (the test would catch a copy that did not happen)
    scratch = cc.CARE(config.replace(init_weights=""))
    scratch.train(data)
    assert max(np.abs(a - b).max() for n in theirs for a, b in zip(theirs[n], _weights(scratch)[n])) > 0.05
    assert "init_weights" not in scratch.run_card and "init_weights" not in scratch.config.to_dict()


def test_a_source_of_another_size_or_name_is_refused_with_its_sizes(smooth_pairs, tmp_path):
    data = smooth_pairs(8, 4)
    src = cc.CARE(care_config("YX", quick=True, unet_filters=8, epochs=1, steps_per_epoch=1, residual_sigma=1.0),
                  tmp_path / "src")
    src.train(data)
    other = cc.CARE(care_config("YX", quick=True, unet_filters=16, residual_sigma=1.0))
    before = _weights(other)
    with pytest.raises(cc.CareError, match=r"differ in shape, down0_conv0 first .*parameters"):
        copy_matching_weights(other.keras_model, tmp_path / "src")
    with pytest.raises(cc.CareError, match="nowhere is not a model folder"):
        copy_matching_weights(other.keras_model, tmp_path / "nowhere")
    with pytest.raises(cc.CareError, match="init_weights: must be"):
        care_config("YX", init_weights=3)
    # a refused copy changed nothing
    assert all(np.array_equal(a, b) for n in before for a, b in zip(before[n], _weights(other)[n]))


def test_a_fine_tune_takes_its_sources_network_size_unless_given(tmp_path):
    # a model trained without a budget (32 filters, depth 2) fine-tuned under one, whose recipe would pick
    # 16 filters: the source's size is taken, so its weights fit; a size given explicitly wins, and is
    # refused with both sizes before anything is built
    (tmp_path / "src").mkdir()
    source = care_config("ZYX", unet_filters=32, unet_depth=3, unet_kernel=5, unet_n_conv=3)
    (tmp_path / "src" / "config.json").write_text(json.dumps(source.to_dict()))
    recipe = care_config("ZYX", time_limit=180)
    assert recipe.unet_filters != 32
    tuned = care_config("ZYX", time_limit=180, init_weights=tmp_path / "src")
    assert (tuned.unet_filters, tuned.unet_depth, tuned.unet_kernel, tuned.unet_n_conv, tuned.batch_size) \
        == (32, 3, 5, 3, recipe.batch_size)
    assert check_init_weights(tuned) == tmp_path / "src"
    # so do the kinds whose recipes set a size of their own (projection: 16 filters, 3×3×3 kernels)
    from carecore.models.kinds import model_class

    projection = model_class("projection").default_config("ZYX", init_weights=str(tmp_path / "src"))
    assert (projection.unet_filters, projection.unet_depth, projection.kind) == (32, 3, "projection")
    assert model_class("projection").default_config("ZYX").unet_filters == 16
    subdiffraction = model_class("subdiffraction").default_config("ZYX", init_weights=tmp_path / "src")
    assert (subdiffraction.unet_kernel, subdiffraction.unet_filters) == (5, 32)   # its recipe: 3×3×3 kernels
    mine = care_config("ZYX", time_limit=180, init_weights=tmp_path / "src", unet_filters=16)
    with pytest.raises(cc.CareError, match=r"another size of network \(unet_filters 16 here, 32 there\)"):
        check_init_weights(mine)
    # no model folder: nothing taken, and the check says so
    assert care_config("ZYX", init_weights=tmp_path / "nowhere").unet_filters == care_config("ZYX").unet_filters
    with pytest.raises(cc.CareError, match="nowhere is not a model folder"):
        check_init_weights(care_config("ZYX", init_weights=tmp_path / "nowhere"))


def test_a_fine_tune_knows_the_images_its_source_learned_from(tmp_path):
    """A fine-tune on images its source network trained on (the same input, another noise draw of a ground
    truth, a crop of either) is told where its validation boxes there lie where that network trained (its
    scores flatter it), not where they lie inside the boxes it held out (the same images cut again alike: it
    was told every time); where a record does not say, and on a crop, it is told; and it counts them as
    learned from (``trained_on``: the QC report and the app flag them), as it did not before."""
    import warnings

    from carecore.data.patches import create_patches

    def pair(seed):
        clean = cc.nuclei_volume((4, 96, 96), seed=seed)[0].max(axis=0)
        noisy = clean + np.float32(0.1) * np.random.default_rng(seed).standard_normal(clean.shape, np.float32)
        return noisy.astype(np.float32), clean

    p0, p1, p2 = pair(0), pair(1), pair(2)
    quick = dict(quick=True, epochs=1, steps_per_epoch=1, time_limit=0, residual_sigma=1.0)
    src = cc.CARE(care_config("YX", **quick), tmp_path / "src")
    src.train(create_patches([p0, p1], (32, 32), axes="YX", n_patches_per_image=8))
    tuned = cc.CARE(care_config("YX", **quick, init_weights=tmp_path / "src"))
    assert not tuned.trained_on(p1[0], axes="YX")   # (nothing learned yet)
    # p0 last: its boxes now (the last image's, the first held out) lie where src trained (all of p0)
    with pytest.warns(cc.CareWarning, match=r"fine-tuning on 1 image\(s\) that .*src learned from \(array 1\).*flatter"):
        tuned.train(create_patches([p2, p0], (32, 32), axes="YX", n_patches_per_image=8))
    assert tuned.run_card["init_weights"]["validation_on_learned"] == ["array 1"]
    assert tuned.trained_on(p1[0], axes="YX") and tuned.trained_on(p2[0], axes="YX")   # its source's, and its own

    def fine_tune(source, pairs=(p0, p1), patch=(32, 32)):
        model = cc.CARE(care_config("YX", **quick, init_weights=source))
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            model.train(create_patches(list(pairs), patch, axes="YX", n_patches_per_image=8))
        return model, [str(w.message) for w in said if "fine-tuning on" in str(w.message)]

    # src's own images cut again alike: its validation boxes, held out again; p1 is still learned from
    same, told = fine_tune(tmp_path / "src")
    assert told == [] and "validation_on_learned" not in same.run_card["init_weights"], told
    assert same.trained_on(p1[0], axes="YX")
    # ... and again from that fine-tune: inside the boxes of both networks
    same.save(tmp_path / "same")
    assert fine_tune(tmp_path / "same")[1] == []
    # another noise draw of p1's field (an input never seen, its ground truth learned): compared by the truth
    redraw = ((p1[1] + np.float32(0.1) * np.random.default_rng(7).standard_normal(p1[1].shape, np.float32)), p1[1])
    assert fine_tune(tmp_path / "src", (p0, redraw))[1] == []   # src's boxes on that field
    _, told = fine_tune(tmp_path / "src", (p0, redraw), patch=(48, 48))   # larger boxes: where src trained
    assert len(told) == 1 and "(array 1)" in told[0], told
    # a crop of p1 (another grid, its boxes not comparable), found by its sketch; a crop of a new image is not told
    crop = tuple(np.ascontiguousarray(a[8:, 4:]) for a in p1)
    _, told = fine_tune(tmp_path / "src", (p0, crop))
    assert len(told) == 1 and "(array 1)" in told[0], told
    assert fine_tune(tmp_path / "src", (p0, tuple(np.ascontiguousarray(a[8:, 4:]) for a in p2)))[1] == []
    # ... but a source whose run card does not say where it held out (before 2026-12-07) is told of
    old = cc.load_model(tmp_path / "src")
    assert {s["low"]: s["validation_block"] for s in old.run_card["data_sources"]}["array 0"] is None   # (all trained)
    for s in old.run_card["data_sources"]:
        del s["validation_block"]
    old.save(tmp_path / "old")
    _, told = fine_tune(tmp_path / "old")
    assert len(told) == 1 and "(array 1)" in told[0], told   # (p0 holds no box: nothing to flatter there)
    assert tuned.truth_seen(p1[1], axes="YX")
    # a fine-tune of the fine-tune knows them all
    tuned.save(tmp_path / "tuned")
    again = cc.CARE(care_config("YX", **quick, init_weights=tmp_path / "tuned"), tmp_path / "again")
    fresh = pair(3)
    again.train(create_patches([fresh], (32, 32), axes="YX", n_patches_per_image=8))
    assert all(again.trained_on(p[0], axes="YX") for p in (p0, p1, p2, fresh))
    assert not again.trained_on(pair(4)[0], axes="YX")

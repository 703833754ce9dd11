"""The wizard's state without a browser: every step through the same calls the buttons make."""
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from carecore import CareError

pytestmark = pytest.mark.slow


def _wait_for_job(state, limit=240):
    t = time.time()
    while state.job_state in ("starting", "running") and time.time() - t < limit:
        time.sleep(0.5)
        state.poll_job()


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    from carecore import write_demo_data
    from carelab import LabState

    root = tmp_path_factory.mktemp("lab")
    write_demo_data(root, size="tiny", tasks=["denoising3d"])
    return LabState(root, quick=True)


def test_paths_are_confined_to_the_data_root(state):
    with pytest.raises(CareError, match="outside the data root"):
        state.resolve("../../etc/passwd")
    with pytest.raises(CareError, match="outside the data root"):
        state.resolve("/etc")
    assert state.resolve("denoising3d").is_dir()


def test_axes_guessed_from_the_chosen_folder(state, tmp_path):
    import carecore as cc

    folder = state.resolve(".") / "two_d"
    folder.mkdir()
    cc.write_image(folder / "a.tif", np.zeros((2, 16, 16), np.float32), axes="CYX")
    state.low_dir = "two_d"
    assert state.axes == "CYX"
    state.set_task_defaults()
    assert state.axes == "ZYX"


def test_axes_validated_live(state):
    state.axes = "ZYQ"
    assert "unknown letter" in state.axes_error
    state.axes = "zyx"
    assert state.axes == "ZYX" and state.axes_error == ""


def test_bad_folder_is_a_clear_error_and_state_stays_usable(state):
    state.low_dir = "nope"
    with pytest.raises(CareError, match="does not exist"):
        state.scan_pairs()
    state.set_task_defaults()
    assert state.low_dir.endswith("train/low")


def test_pairs_of_other_axes_or_channels_than_the_task_takes_are_refused_at_the_scan(state):
    """A 2D task given ZYX (a Z of 1: the patches were refused only later, under the old "patches ready" note), a
    2D image with a ground truth of 3 planes (read as 3 channels: a 1-in, 3-out model, with no word): refused when
    the pairs are checked, naming the file, its axes and shape."""
    import carecore as cc

    root = state.resolve(".")
    for sub, low, high in (("flat", (1, 32, 40), (1, 32, 40)), ("three", (32, 40), (3, 32, 40))):
        for q, shape in (("low", low), ("high", high)):
            (root / sub / q).mkdir(parents=True)
            cc.write_image(root / sub / q / "a.tif", np.random.default_rng(0).random(shape, dtype=np.float32),
                           axes="YX" if len(shape) == 2 else "ZYX" if shape[0] == 1 else "CYX")
    state.task = "denoising2d"
    state.set_task_defaults()
    state.low_dir, state.high_dir = "flat/low", "flat/high"
    state.axes = "ZYX"
    with pytest.raises(CareError, match=r"flat/low/a.tif: axes ZYX \(shape 1×32×40\); Denoising 2D takes YX images: "
                                        "its Z of 1 is no axis of theirs"):
        state.scan_pairs()
    assert state.pairs == []
    state.axes = "YX"   # (what the user gives then: the file's Z of 1 dropped)
    assert len(state.scan_pairs()) == 1
    state.low_dir, state.high_dir = "three/low", "three/high"
    state.axes = "YX"
    with pytest.raises(CareError, match=r"three/high/a.tif: 3 channels \(axes CYX, shape 3×32×40\) but its input "
                                        r"three/low/a.tif has one \(axes YX, shape 32×40\)"):
        state.scan_pairs()
    with pytest.raises(CareError, match="3 channels"):   # (and the patches, which scan first)
        state.make_patches()
    state.task = "denoising3d"   # (the module's state, as the other tests have it)
    state.set_task_defaults()
    assert len(state.scan_pairs()) == 2


def test_budget_maps_to_config(tmp_path):
    """A budget lets carecore's fast recipe size the network; custom passes every field as typed."""
    from carelab import LabState
    from carelab.state import BUDGETS

    s = LabState(tmp_path, quick=False)
    assert s.time_limit == 180 and (s.time_limit in dict((v, k) for k, v in s.budget_options()))
    c = s.config()
    # the fast 3D recipe: 16 filters, batches of 8 of 16×32×32 where 3D trains in bfloat16; 8 filters,
    # batches of 2 of 16×32×32 in float32
    filters, fast = {"mixed_bfloat16": (16, (8, (16, 32, 32))), "float32": (8, (2, (16, 32, 32)))}[c.precision]
    assert (c.time_limit, c.unet_filters, (c.batch_size, c.patch_size), c.learning_rate, c.warmup, c.epochs) == \
        (180, filters, fast, 1e-3, 0.15, 10)
    s.filters, s.batch_size, s.learning_rate = 64, 2, 1e-4    # custom fields do not override a budget
    assert s.config().unet_filters == filters and s.config().batch_size == fast[0]
    s.time_limit = 1200                                        # Standard: the narrower float32 network is for short budgets
    assert (s.config().unet_filters, s.config().batch_size) == (16, fast[0])
    s.time_limit = 3600                                        # beyond the fast recipe: CSBDeep's sizes
    assert s.config().time_limit == 3600 and s.config().patch_size == (16, 64, 64)
    s.ensemble = 5                                             # five members share the hour: the 12-minute recipe
    assert s.config().time_limit == 3600 and (s.config().patch_size, s.config().unet_filters) == ((16, 32, 32), 16)
    s.ensemble = 0
    s.time_limit = 0                                           # custom: epochs × steps as typed
    c = s.config()
    assert (c.time_limit, c.epochs, c.steps_per_epoch, c.unet_filters, c.batch_size, c.learning_rate) == \
        (0, s.epochs, s.steps, 64, 2, 1e-4)
    assert [v for _, v in BUDGETS] == [180, 1200, 3600, 0]
    q = LabState(tmp_path, quick=True)                         # tests: a short budget and tiny sizes
    c = q.config()
    assert 0 < c.time_limit <= 30 and c.unet_filters == 8 and c.batch_size == 4 and c.patch_size == (8, 32, 32)
    assert c.probabilistic and q.patch_size == c.patch_size


def test_two_channel_pairs_train_a_two_channel_network(tmp_path, monkeypatch):
    """The Data step takes two-channel pairs (CYX); the Train step's network takes their channels (the
    configuration follows the patches), not the task's one channel."""
    import carecore as cc
    from carelab import LabState

    rng = np.random.default_rng(0)
    for sub in ("two/low", "two/high"):
        (tmp_path / sub).mkdir(parents=True)
    for i in range(2):
        clean = np.stack([cc.nuclei_volume((4, 64, 64), seed=i + k)[0].max(axis=0) for k in (0, 5)])
        cc.write_image(tmp_path / "two/low" / f"s{i}.tif", clean + rng.normal(0, 0.1, clean.shape).astype(np.float32),
                       axes="CYX")
        cc.write_image(tmp_path / "two/high" / f"s{i}.tif", clean, axes="CYX")
    s = LabState(tmp_path, quick=True)
    s.task, s.low_dir, s.high_dir, s.axes = "denoising2d", "two/low", "two/high", "CYX"
    assert s.scan()[0]["low"] == "2×64×64"
    assert s.low.shape == s.high.shape == (64, 64)   # the previews show a channel, not the channels as slices
    s.make_patches()
    p = s.run_preflight()
    assert p["parameters"] > 0
    ps = s.ensure_patches()
    assert ps.X.shape[-1] == 2 and cc.with_channels_of(s.config(), ps).n_channel_in == 2
    s.task = "denoising3d"   # another task and back: the folders, the scan and the patches are still there
    assert s.low_dir != "two/low" and s.pairs == [] and not s.patches_dir
    s.task = "denoising2d"
    assert (s.low_dir, s.high_dir, s.axes, len(s.pairs)) == ("two/low", "two/high", "CYX", 2)
    assert s.ensure_patches().X.shape == ps.X.shape
    from carelab.wizard import DataStep   # the Data step shows what was kept: its table and the patches' note

    data = DataStep(s)
    s.task = "denoising3d"
    assert "care-pairs" not in data.table.value and data.patch_note.value == ""
    s.task = "denoising2d"
    assert "s0.tif" in data.table.value and f"{len(ps.X)} patch pairs ready" in data.patch_note.value
    # few validation patches said there too (or nothing said of them)
    assert ("care-patches-few" in data.patch_note.value) == (0 < ps.n_val < 8), (ps.n_val, data.patch_note.value)
    # other axes typed and Extract pressed: checked again, refused, and the last patches' note taken down (it said
    # "ready ... Next: step 2" under the error: a user trial)
    s.axes = "ZYX"
    data.on_patches()
    for _ in range(200):
        if "care-error" in data.msg.value:
            break
        time.sleep(0.05)
    assert "Denoising 2D takes YX images" in data.msg.value and data.patch_note.value == "", data.msg.value
    assert "no training patches:" in data.msg.value   # (the Check's error word for word looked like an ignored click)
    assert s.patches_dir == "" and s.n_patches == 0   # (the other axes' patches forgotten: not "ready" on a return)
    s.axes = "CYX"
    s.scan()
    s.make_patches()
    started = []   # the job is given the two-channel configuration (not started here)
    monkeypatch.setattr("carecore.training.jobs.start_job", lambda job, patches, config, **kw: started.append(config))
    monkeypatch.setattr(s, "watch_job", lambda: None)
    s.start_training()
    assert (started[0].n_channel_in, started[0].n_channel_out) == (2, 2)


def test_the_restore_step_offers_a_model_of_the_task_first(tmp_path):
    """A fresh page attaches the newest job (any task); with another task chosen, the Restore step offers
    that task's newest model first, not a model that cannot take its images."""
    import carecore as cc
    from carelab import LabState

    for job, axes in (("denoising2d_20261205_100000", "YX"), ("denoising3d_20261205_110000", "ZYX")):
        cc.CARE(cc.care_config(axes, quick=True), tmp_path / "models" / job / "model").save()
    s = LabState(tmp_path, quick=True)
    s.model_dir = "models/denoising3d_20261205_110000/model"
    s.task = "denoising3d"
    assert s.model_for_task() == "models/denoising3d_20261205_110000/model"
    s.task = "denoising2d"
    assert s.model_for_task() == "models/denoising2d_20261205_100000/model"
    s.task = "isotropic"   # no model of its own: the chosen one stays
    assert s.model_for_task() == "models/denoising3d_20261205_110000/model"
    # a newer job of the task still training (or dead while training): its checkpoint is not offered first
    m = cc.CARE(cc.care_config("YX", quick=True), tmp_path / "models" / "denoising2d_20261205_120000" / "model")
    m.run_card["status"] = "running"
    m.save()
    s.task = "denoising2d"
    assert s.model_for_task() == "models/denoising2d_20261205_100000/model"
    # the Restore step: a model of another task, chosen, is kept (a user trial: it snapped back to the task's
    # own within a second); a change of task offers that task's own again
    from carelab.wizard import RestoreStep

    step = RestoreStep(s)
    assert step.model.value == "models/denoising2d_20261205_100000/model"
    step.model.value = "models/denoising3d_20261205_110000/model"
    assert step.model.value == s.model_dir == "models/denoising3d_20261205_110000/model"
    s.task = "denoising3d"
    s.task = "denoising2d"
    assert step.model.value == "models/denoising2d_20261205_100000/model"


def test_the_restore_lists_reach_the_page_with_their_final_choice(tmp_path):
    """When the Restore step fills its lists again (a model chosen names its training images in the image list;
    a refresh finds a new model), the page gets each list with the choice kept in one message, and the state
    never sees the list's first entry that new options select on the way. (The page was sent the first entry
    and then the chosen one: an image a user picked in between was dropped, and a browser test restored
    another image than the one it had chosen.)"""
    import carecore as cc
    from carelab import LabState
    from carelab.wizard import RestoreStep

    for sub in ("low", "high"):
        (tmp_path / sub).mkdir()
        for name in ("a.tif", "b.tif"):
            cc.write_image(tmp_path / sub / name, np.ones((4, 16, 16), np.float32), axes="ZYX")
    trained = cc.CARE(cc.care_config("ZYX", quick=True), tmp_path / "models" / "trained" / "model")
    trained.run_card["data_sources"] = [{"low": str(tmp_path / "low" / "b.tif"), "high": str(tmp_path / "high" / "b.tif")}]
    trained.save()
    cc.CARE(cc.care_config("ZYX", quick=True), tmp_path / "models" / "untrained" / "model").save()
    s = LabState(tmp_path, quick=True)
    s.model_dir, s.input_path = "models/untrained/model", "low/b.tif"
    step = RestoreStep(s)
    assert (step.model.value, step.image.value) == ("models/untrained/model", "low/b.tif")
    sent, told = {"model": [], "image": []}, []
    for name in sent:
        getattr(step, name)._send = lambda msg, buffers=None, name=name: sent[name].append(msg["state"])
    s.observe(lambda c: told.append((c["name"], c["new"])), ["model_dir", "input_path"])

    # the page picks the other model (an index in its list): its training image is named, a new image list
    step.model.set_state({"index": list(step.model.options).index("models/trained/model")})
    assert ("b.tif · trained on" in step.image.options[1][0] and step.image.value == s.input_path == "low/b.tif")
    assert [m for m in sent["image"] if "index" in m] == [{"_options_labels": tuple(x for x, _ in step.image.options),
                                                             "index": 1}], sent["image"]
    assert told == [("model_dir", "models/trained/model")], told

    sent["model"].clear(), sent["image"].clear(), told.clear()
    cc.CARE(cc.care_config("ZYX", quick=True), tmp_path / "models" / "aardvark" / "model").save()
    step.fill()   # Refresh: the new model listed (last: the places shown are kept), the chosen one kept
    assert step.model.options[-1] == "models/aardvark/model" and step.model.value == "models/trained/model"
    assert [m for m in sent["model"] if "index" in m] == [{"_options_labels": tuple(step.model.options), "index": 0}], \
        sent["model"]
    assert told == [] and sent["image"] == []
    # a job's watcher sets the model it trained by its absolute path: listed, and the state told the list's form
    s.model_dir = str(tmp_path / "models" / "aardvark" / "model")
    assert step.model.value == s.model_dir == "models/aardvark/model" and step.image.value == s.input_path == "low/b.tif"


def test_a_watchers_model_is_listed_on_the_pages_thread_after_a_pick(tmp_path, monkeypatch):
    """A training job's watcher sets the model it trained from its own thread. The Restore step fills its
    lists for it on the page's thread (the kernel's event loop, where the page's messages arrive), not on
    the watcher's: an image picked at that moment is taken whole, before or after the fill, and kept.
    (Both threads changed the image list at once, and the pick could lose to the watcher's fill.)"""
    import asyncio
    import concurrent.futures
    import threading

    import carecore as cc
    from carelab import LabState, wizard
    from carelab.wizard import RestoreStep

    for sub in ("low", "high"):
        (tmp_path / sub).mkdir()
        for name in ("a.tif", "b.tif"):
            cc.write_image(tmp_path / sub / name, np.ones((4, 16, 16), np.float32), axes="ZYX")
    for name in ("first", "trained"):
        cc.CARE(cc.care_config("ZYX", quick=True), tmp_path / "models" / name / "model").save()
    s = LabState(tmp_path, quick=True)
    s.model_dir, s.input_path = "models/first/model", "low/a.tif"

    async def page():
        # built on the loop's thread, as the kernel builds the page (the loop stands for the kernel's)
        with monkeypatch.context() as m:
            m.setattr(wizard, "kernel_loop", asyncio.get_running_loop)
            step = RestoreStep(s)
        fills = []
        fill = step.fill
        step.fill = lambda **kw: (fills.append(threading.get_ident()), fill(**kw))
        watcher = threading.Thread(target=lambda: setattr(s, "model_dir", str(tmp_path / "models" / "trained" / "model")))
        watcher.start()
        watcher.join()
        assert fills == [] and step.model.value == "models/first/model"   # queued for the page's thread
        # the user's pick reaches the kernel before the queued fill runs
        step.image.set_state({"index": [p for _, p in step.image.options].index("low/b.tif")})
        assert s.input_path == "low/b.tif"
        await asyncio.sleep(0.05)
        assert fills and set(fills) == {threading.get_ident()}   # on this thread (again, nested, for the list's form)
        assert step.model.value == s.model_dir == "models/trained/model"
        assert step.image.value == s.input_path == "low/b.tif"
        # a call on the page's own thread still fills at once (Refresh, a new task)
        n = len(fills)
        s.model_dir = "models/first/model"
        assert len(fills) == n + 1 and step.model.value == "models/first/model"

    # (a loop of its own, in a thread of its own: a browser test's Playwright leaves one running in this one)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, page()).result()
    # outside a kernel, a call from another thread runs where it is made
    assert wizard.PageThread()._loop is None


def test_a_model_picked_as_a_training_ends_keeps_its_place(tmp_path):
    """The page sends a pick as a place in the list it has. The Restore step lists models in the order
    trained (folders named by hand first, then the lab's trainings by their start, whatever their task),
    keeps the places it has shown, and lists new folders last (a training's that ended, one made by hand),
    so a model picked in that instant is the one the user saw in that place. (Listed newest first, the new
    model moved every other one down, and the pick landed on its neighbour.) The task's newest model is
    still the one chosen."""
    import carecore as cc
    from carelab import LabState
    from carelab.wizard import RestoreStep

    (tmp_path / "low").mkdir()
    cc.write_image(tmp_path / "low" / "a.tif", np.ones((4, 16, 16), np.float32), axes="ZYX")
    older, newer, ended = (f"models/denoising3d_20261207_{t}/model" for t in ("095959", "110000", "120000"))
    first = "models/isotropic_20261201_090000/model"   # (another task's, older: its name sorts after theirs)
    for folder in (older, newer, first, "models/mine/model"):
        cc.CARE(cc.care_config("ZYX", quick=True), tmp_path / folder).save()
    s = LabState(tmp_path, quick=True)
    s.task = "denoising3d"
    step = RestoreStep(s)
    seen = list(step.model.options)
    assert seen == ["models/mine/model", first, older, newer], seen
    assert step.model.value == s.model_dir == newer   # the task's newest
    # a training ends: its watcher sets the model it trained (queued to the page's thread, as PageThread does);
    # a folder put there by hand meanwhile, which sorts first, is listed last too
    for folder in (ended, "models/aaa/model"):
        cc.CARE(cc.care_config("ZYX", quick=True), tmp_path / folder).save()
    s.model_dir = str(tmp_path / ended)
    assert step.model.value == s.model_dir == ended
    assert list(step.model.options) == seen + ["models/aaa/model", ended], step.model.options
    # the user's pick, made in the list the page had before the fill reached it: the older training
    step.model.set_state({"index": seen.index(older)})
    assert step.model.value == s.model_dir == older
    # a Refresh, or a new task, offers the task's newest (in a list whose places are kept)
    s.model_dir = ""
    step.fill()
    assert step.model.value == s.model_dir == ended and list(step.model.options) == seen + ["models/aaa/model", ended]


def test_a_model_that_makes_other_channels_is_scored_alone(tmp_path):
    """The Restore step scores a model that makes other channels than it takes (two stains in, one out) alone,
    against a one-channel ground truth saved without C, and the note says why: its input, and a filter on it,
    are not on the truth's channels. (It said "not scored": shapes (64, 64) and (1, 64, 64).)"""
    import carecore as cc
    from carelab import LabState
    from carelab.wizard import RestoreStep

    rng = np.random.default_rng(0)
    truth = cc.nuclei_volume((4, 64, 64), seed=0)[0].max(axis=0).astype(np.float32)
    for sub in ("two/low", "two/high"):
        (tmp_path / sub).mkdir(parents=True)
    cc.write_image(tmp_path / "two/low/a.tif", np.stack([truth, truth]) + rng.normal(0, 0.1, (2, 64, 64)).astype(np.float32),
                   axes="CYX")
    cc.write_image(tmp_path / "two/high/a.tif", truth, axes="YX")
    cc.CARE(cc.care_config("YX", quick=True, n_channel_in=2, residual=False), tmp_path / "models" / "two" / "model").save()
    s = LabState(tmp_path, quick=True)
    s.task, s.tta = "denoising2d", False
    step = RestoreStep(s)
    s.model_dir, s.input_path = "models/two/model", "two/low/a.tif"
    s.restore()
    assert s.restored.shape == (1, 64, 64) and set(s.metrics) == {"CARE"}, (s.metrics, s.metrics_note)
    assert np.isfinite(s.metrics["CARE"]["ssim"])
    assert s.metrics_note.startswith("the model takes 2 channels and makes 1: there is no input or classical filter")
    step._render()
    assert "takes 2 channels and makes 1" in step.metrics.value and ">CARE<" in step.metrics.value


def test_the_restore_count_says_the_tiles_done_beside_the_filters_count(tmp_path):
    """While the filters are tuned after a restoration, the label beside the bar says the tiles are done and
    counts the filters' grid points (it said "tile view 24/24" under a bar named "filters", as if tiles were
    still being restored); once they are tuned it says the tiles' count alone."""
    from carelab import LabState
    from carelab.wizard import RestoreStep

    step = RestoreStep(LabState(tmp_path, quick=True))
    label = lambda: re.sub(r"<[^>]+>", "", step.progress.value)  # noqa: E731
    step._progress(24, 24, "tile views")
    assert label() == "tile view 24/24" and step.bar.description == "tiles"
    step._progress(3, 7, "starts")   # the screening of a model's classical starts, before the filters' grids
    assert label() == "tile view 24/24 done · starts 3/7" and step.bar.description == "starts"
    step._progress(3, 90, "filters")
    assert label() == "tile view 24/24 done · filters 3/90" and step.bar.description == "filters"
    assert (step.bar.value, step.bar.max) == (3, 90)
    step._show_count()   # (the restoration shown, or a frame chosen: the filters tuned or stopped)
    assert label() == "tile view 24/24" and step.bar.description == "tiles" and (step.bar.value, step.bar.max) == (24, 24)
    step._progress(5, 24, "tiles")   # a restoration stopped after 5 tiles: its count is not said done
    step._progress(3, 90, "filters")
    assert label() == "tile 5/24 · filters 3/90"
    step._progress(128, 128, "slices")   # an isotropic model's slices: the bar says so (it said "tiles")
    assert label() == "slices: 128/128" and step.bar.description == "slices"


def test_the_train_step_says_it_times_the_machine(tmp_path, monkeypatch):
    """Where the first 3D configuration times a training step in both precisions (about 10 s, once per
    machine), the Train step says so while it does, not a page that hangs; not where the precision is given."""
    from carecore.models import precision
    from carelab import LabState
    from carelab.wizard import TrainStep

    s = LabState(tmp_path, quick=True)
    s.task = "denoising3d"
    step = TrainStep(s)
    monkeypatch.setattr(precision, "needs_timing", lambda: True)
    seen, config = [], s.config
    monkeypatch.setattr(s, "config", lambda: seen.append(step.recipe.value) or config())
    step._recipe()
    assert "Timing a training step in bfloat16 and in float32" in seen[-1], seen
    assert "filters" in step.recipe.value and "Timing" not in step.recipe.value
    s.precision = "float32"   # (observed: the recipe is said again)
    assert "Timing" not in seen[-1] and "float32" in step.recipe.value, seen


def test_one_training_at_a_time(tmp_path):
    """A Start while a training runs (started here or from another page) is refused: two jobs would
    share the CPU, one unseen and unstoppable from the page; the Train step keeps Start and Resume off
    while its job runs. A job record whose process never started does not block the lab for good."""
    import json
    import os

    from carelab import LabState
    from carelab.wizard import TrainStep

    s = LabState(tmp_path, quick=True)
    step = TrainStep(s)
    job = tmp_path / "models" / "denoising3d_20261205_100000"
    job.mkdir(parents=True)
    (job / "job.json").write_text("{}")
    (job / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))   # a live process
    with pytest.raises(CareError, match=r"a training is running \(models/denoising3d_20261205_100000\): stop it"):
        s.start_training()
    # nor an estimate beside it (its timed steps would share the CPU with the training: both slowed, the estimate off)
    with pytest.raises(CareError, match=r"a training is running \(models/denoising3d_20261205_100000\): an estimate"):
        s.run_preflight()
    for state in ("starting", "running"):
        s.job_state = state
        assert step.start.disabled and step.resume.disabled and step.pre_btn.disabled
    step.on_start()   # (the page's Start, on its thread: refused, and said so)
    for _ in range(100):
        if "care-error" in step.msg.value:
            break
        time.sleep(0.05)
    assert "a training is running (models/denoising3d_20261205_100000)" in step.msg.value
    s.job_dir = str(job)
    step.stop.click()
    assert "stopping models/denoising3d_20261205_100000 after its running step" in step.msg.value
    s.job_state = "completed"
    assert not step.start.disabled and not step.resume.disabled and not step.pre_btn.disabled
    assert step.msg.value == ""   # (a user trial found the refusal still there after the training had ended)
    step.msg.error("a training is running (models/x): stop it (Stop), or wait for it to end")
    s.job_state = "stopped"
    assert step.msg.value == ""
    (job / "status.json").write_text(json.dumps({"state": "completed"}))
    step.stop.click()
    assert "no training is running: nothing to stop" in step.msg.value   # (a Stop said nothing)
    (job / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    # a record left "starting" without a process (its start failed, the kernel died): taken as died
    (job / "status.json").write_text(json.dumps({"state": "starting"}))
    old = os.path.getmtime(job / "status.json") - 120
    os.utime(job / "status.json", (old, old))
    with pytest.raises(CareError, match="make training patches first"):   # (past the one-at-a-time check)
        s.start_training()
    from carecore.training.jobs import job_status

    assert job_status(job)["state"] == "died" and "never started" in job_status(job)["message"]


def test_the_train_step_shows_the_chosen_task_s_last_training(tmp_path):
    """A change of task shows that task's last training in the Train step, or none (a user trial chose projection
    and saw an isotropic job's charts and filter as "last training"); Resume continues it. A running job stays
    shown whatever the task."""
    import json
    import os

    from carelab import LabState

    def job(name, **status):
        d = tmp_path / "models" / name
        d.mkdir(parents=True)
        (d / "job.json").write_text("{}")
        (d / "status.json").write_text(json.dumps(status))
        return d

    iso = job("isotropic_20261207_100000", state="completed", history=[{"epoch": 1, "val_loss": 0.1, "val_ssim": 0.7}],
              losses=[[1, 0.2]], baseline={"name": "nlm", "val_ssim": 0.66}, message="the isotropic one")
    time.sleep(0.05)
    proj = job("projection_20261207_110000", state="completed", history=[{"epoch": 1, "val_loss": 0.3, "val_ssim": 0.5}],
               message="the projection one")
    s = LabState(tmp_path, quick=True)
    s.attach_latest_job()
    assert s.job_dir == str(proj)   # (no training of its task: the newest one, named as another's)
    page = LabState(tmp_path, quick=True, task="isotropic")   # a new page on a task with a training of its own
    page.attach_latest_job()
    assert page.job_dir == str(iso) and page.task == "isotropic"
    s.model_dir = "mine/model"   # a model chosen for Restore stays chosen (the Restore step offers the task's own)
    s.task = "isotropic"
    assert s.job_dir == str(iso) and s.job_message == "the isotropic one" and s.baseline["name"] == "nlm" \
        and len(s.history) == 1 and s.losses == [[1, 0.2]]
    s.task = "denoising2d"   # none of its own: nothing shown
    assert (s.job_dir, s.job_state, s.history, s.losses, s.baseline, s.job_message) == ("", "none", [], [], {}, "")
    s.task = "projection"
    assert s.job_dir == str(proj) and s.history[0]["val_ssim"] == 0.5 and s.model_dir == "mine/model"
    # a running job stays shown (its folder names its task)
    (proj / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    s.poll_job()
    from carelab.wizard import TrainStep

    step = TrainStep(s)
    s.task = "isotropic"
    assert s.job_dir == str(proj) and s.job_state == "running"
    # the status line names the other task's training (it named none: a user trial switched task mid-run)
    assert "Surface projection (3D stack → 2D image), models/projection_20261207_110000: training" \
        in step.status.value, step.status.value
    s.task = "projection"
    assert "models/projection_20261207_110000" not in step.status.value, step.status.value
    # a task whose last training runs (started from another page): attached and followed as it runs
    (proj / "status.json").write_text(json.dumps({"state": "completed"}))
    s.poll_job()
    time.sleep(0.05)
    live = job("denoising2d_20261207_120000", state="running", pid=os.getpid())
    s.task = "denoising2d"
    assert s.job_dir == str(live) and s.job_state == "running" and s._poller is not None
    (live / "status.json").write_text(json.dumps({"state": "completed"}))
    for _ in range(100):
        if s._poller is None:
            break
        time.sleep(0.05)
    assert s._poller is None and s.job_state == "completed"


def test_a_model_that_scales_by_the_image_s_own_percentiles_has_no_box_to_untick(tmp_path):
    """A sub-diffraction model (trained on simulations) scales every image by its own percentiles: the Restore step
    shows that in place of the box (a user trial found it unticked, and the summary saying "input scaled by its own
    percentiles"); a CARE model's box is back when it is chosen."""
    import json

    from carelab import LabState
    from carelab.wizard import RestoreStep

    seen = {"normalization_seen": {"sources": [{"low": "a.tif", "norm_low": [0.1, 9.0]}]}}
    for name, config, card in (
            ("subdiffraction_20261207_100000", {"kind": "subdiffraction", "input_normalization": "image"}, {}),
            ("denoising2d_20261207_100000", {"kind": "care", "input_normalization": "training"}, seen),
            ("denoising2d_20261207_110000", {"kind": "care", "input_normalization": "training"}, {}),   # bare arrays
            ("old", {"kind": "care"}, seen)):   # (saved before the choice: each image by its own)
        (tmp_path / "models" / name / "model").mkdir(parents=True)
        (tmp_path / "models" / name / "model" / "config.json").write_text(json.dumps(config))
        (tmp_path / "models" / name / "model" / "run_card.json").write_text(json.dumps(card))
    s = LabState(tmp_path, quick=True)
    step = RestoreStep(s)
    for name, why in (("subdiffraction_20261207_100000", "trained on simulated images"),
                      ("denoising2d_20261207_100000", ""),
                      ("denoising2d_20261207_110000", "trained on arrays with no record of their scaling"),
                      ("old", "its configuration scales each image by its own percentiles")):
        s.model_dir = f"models/{name}/model"
        if why:
            assert step.own.layout.display == "none" and "scales every image by its own percentiles" in \
                step.own_note.value and why in step.own_note.value, (name, step.own_note.value)
        else:
            assert step.own.layout.display is None and step.own_note.value == "", name


def test_the_restore_step_exports_the_chosen_model_for_fiji(tmp_path):
    """The Restore step writes the chosen model as a bioimage.io package (a user trial found export on the command
    line only): ``exports/<job>.zip``, with the author given, that carecore runs as the model folder restores, its
    test image named; an ensemble gives its first member; a kind the format cannot express is refused with the
    reason, and the step stays usable."""
    import json
    import zipfile

    import carecore as cc
    from carelab import LabState
    from carelab.wizard import RestoreStep

    (tmp_path / "low").mkdir()
    img = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    cc.write_image(tmp_path / "low" / "a.tif", img, axes="YX")
    job, ens = "denoising2d_20261208_100000", "denoising2d_20261208_110000"
    model = cc.CARE(cc.care_config("YX", quick=True), tmp_path / "models" / job / "model")
    model.run_card["data_sources"] = [{"low": str(tmp_path / "low" / "a.tif"), "high": str(tmp_path / "low" / "a.tif")}]
    model.save()
    for i in (0, 1):
        member = cc.CARE(cc.care_config("YX", quick=True, probabilistic=True),
                         tmp_path / "models" / ens / "ensemble" / f"member_{i}")
        member.run_card["data_sources"] = model.run_card["data_sources"]
        member.save()
    (tmp_path / "models" / ens / "ensemble" / "ensemble.json").write_text(json.dumps({"members": ["member_0", "member_1"]}))
    s = LabState(tmp_path, quick=True)
    step = RestoreStep(s)

    def export():
        step.on_export()
        for _ in range(2400):
            if not step.export.disabled and ("care-export-done" in step.export_msg.value
                                             or "care-error" in step.export_msg.value):
                break
            time.sleep(0.05)
        return step.export_msg.value

    s.model_dir = f"models/{job}/model"
    step.author.value = "Ada Lovelace / Charles Babbage"   # (the command line's advice did not fit the app)
    said = export()
    assert "care-error" in said and "separate several authors with &#x27;;&#x27;" in said, said
    step.author.value = "Ada Lovelace; Charles Babbage"
    said = export()
    pkg = tmp_path / "exports" / f"{job}.zip"
    assert "care-export-done" in said and str(pkg) in said and "crop of <code>low/a.tif</code>" in said, said
    with zipfile.ZipFile(pkg) as z:
        rdf = z.read("rdf.yaml").decode()
        shared = {n: z.read(n).decode() for n in ("run_card.json", "README.md")}
    assert "Ada Lovelace" in rdf and "Charles Babbage" in rdf and job in rdf and "replacing" not in said
    # no path of the user's disk in what is published (a user trial found the training folders there)
    assert all(str(tmp_path) not in t for t in [rdf, *shared.values()]) and "a.tif" in shared["run_card.json"], shared
    np.testing.assert_allclose(cc.load_bioimageio(pkg).predict(img, axes="YX"), model.predict(img, axes="YX"),
                               atol=1e-4 * float(np.ptp(model.predict(img, axes="YX"))))
    s.model_dir = f"models/{ens}/ensemble"
    step.author.value = ""
    said = export()
    assert "first member" in said and f"models/{ens}/ensemble/member_0" in said, said
    assert 'Its author is "CARE Lab user"' in said and "two channels" in said, said
    said = export()
    assert "replacing the earlier export" in said, said
    assert (tmp_path / "exports" / f"{ens}.zip").exists()
    cfg = json.loads((tmp_path / "models" / job / "model" / "config.json").read_text())
    (tmp_path / "models" / "isotropic_20261208_100000" / "model").mkdir(parents=True)
    (tmp_path / "models" / "isotropic_20261208_100000" / "model" / "config.json").write_text(
        json.dumps({**cfg, "kind": "isotropic"}))
    s.model_dir = "models/isotropic_20261208_100000/model"
    said = export()
    assert "care-error" in said and "kind &#x27;isotropic&#x27; cannot be exported" in said and "Restore with it here" in said, said
    assert not step.export.disabled and not (tmp_path / "exports" / "isotropic_20261208_100000.zip").exists()


def test_a_preparing_job_says_so(tmp_path):
    """Before a network's first step (the filters' line and the network: a minute on a 3D stack) the Train step
    says the job prepares, naming an ensemble's member (it said "training: epoch 0"); the first step ends it."""
    import json
    import os

    from carelab import LabState
    from carelab.wizard import TrainStep

    s = LabState(tmp_path, quick=True)
    step = TrainStep(s)
    job = tmp_path / "models" / "denoising3d_20261205_100000"
    job.mkdir(parents=True)
    (job / "job.json").write_text("{}")
    from carecore.training.events import preparing_event

    s.job_dir = str(job)
    for member, tuning, said in ((1, True, "tuning the classical filters on the validation patches, the line to beat, "
                                           "and building the network"),
                                 (2, False, "building the network")):   # (the line reused by the next members)
        prep = {**preparing_event(tuning=tuning), "member": member, "members": 3}
        (job / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "event": prep}))
        s.poll_job()
        text = re.sub(r"<[^>]+>", "", step.status.value)
        assert text.startswith(f"training member {member} of 3: preparing ({said}) ..."), text
    batch = {"kind": "batch", "epoch": 1, "epochs": 4, "step": 1, "steps": 10, "loss": 0.1, "lr": 1e-4,
             "elapsed": 1.0, "eta": 9.0, "member": 2, "members": 3}
    (job / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "event": batch}))
    s.poll_job()
    text = re.sub(r"<[^>]+>", "", step.status.value)
    assert s.job_preparing == {} and text.startswith("training member 2 of 3: epoch 1 of 4"), text


def test_resume_continues_only_the_last_training_of_the_same_kind(tmp_path):
    """A user trial: Resume after a change of task wrote the new task's job into the last one's folder (its
    job.json, a status with no history: its curves gone), and Resume with no training before started a new
    one without a word. Both are refused before anything is written."""
    import json

    from carelab import LabState

    s = LabState(tmp_path, quick=True)
    with pytest.raises(CareError, match="nothing to resume: no training has run in this lab yet; press Start"):
        s.start_training(resume=True)
    job = tmp_path / "models" / "isotropic_20261205_100000"
    job.mkdir(parents=True)
    record = json.dumps({"config": {"kind": "isotropic", "axes": "YX"}, "patches": "p"})
    (job / "job.json").write_text(record)
    (job / "status.json").write_text(json.dumps({"state": "completed", "history": [{"epoch": 1}], "losses": []}))
    s.job_dir = str(job)
    s.task = "projection"   # (the Train step then shows projection's last training: none)
    with pytest.raises(CareError, match=r"nothing to resume for Surface projection .*: no training of this task has "
                                        r"run in this lab yet \(the last one, models/isotropic_20261205_100000, is "
                                        r"another task's: choose that task to resume it\)"):
        s.start_training(resume=True)
    s.job_dir = str(job)   # (a job of another kind attached all the same)
    with pytest.raises(CareError, match=r"Resume continues the last training, models/isotropic_20261205_100000: a "
                                        r"model of kind 'isotropic' on YX images; the task chosen now makes one of "
                                        r"kind 'projection'"):
        s.start_training(resume=True)
    assert (job / "job.json").read_text() == record and json.loads((job / "status.json").read_text())["history"]


def test_patches_follow_the_config_patch_size(tmp_path):
    from carecore import write_demo_data
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=["denoising3d"])
    s = LabState(tmp_path, quick=True)
    ps = s.make_patches()
    assert tuple(ps.meta["patch_size"]) == s.config().patch_size
    # another budget, another patch size (the bfloat16 recipe's, whatever this machine's default): extracted again
    s.quick, s.time_limit, s.precision = False, 180, "mixed_bfloat16"
    notes = []
    ps = s.ensure_patches(notes.append)
    assert tuple(ps.meta["patch_size"]) == s.config().patch_size == (16, 32, 32) and notes


def test_a_resumed_training_keeps_its_patch_size_and_seed(tmp_path, monkeypatch):
    """Resume after another budget or seed was chosen: the app cut the patches at the new budget's size (or
    with the new seed), whose validation boxes lie elsewhere, some on regions the first run trained on
    (training now refuses them). They are cut at the resumed training's own size and seed, on the same boxes,
    and its job keeps both for the next Resume."""
    import json

    import carecore.training.jobs as jobs
    from carecore import load_patches, write_demo_data
    from carecore.models.care import validation_layout
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=["denoising3d"])
    s = LabState(tmp_path, quick=False)
    s.time_limit = 180
    cfg = s.config()
    first = s.make_patches()
    job = tmp_path / "models" / "denoising3d_20261207_100000"
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"config": cfg.to_dict(), "patches": s.patches_dir}))
    s.job_dir = str(job)
    s.time_limit, s.seed = 3600, 5   # another budget (another patch size) and another seed
    assert s.config().patch_size != cfg.patch_size and s.config().seed != cfg.seed
    started, notes = [], []
    monkeypatch.setattr(jobs, "start_job", lambda job_dir, patches, config, **kw: started.append((job_dir, config)))
    monkeypatch.setattr(s, "watch_job", lambda: None)
    s.start_training(resume=True, note=notes.append)
    assert started and started[0][0] == str(job)
    assert (tuple(started[0][1].patch_size), started[0][1].seed) == (tuple(cfg.patch_size), cfg.seed)
    assert started[0][1].time_limit == 3600   # (the budget chosen now)
    again = load_patches(s.patches_dir)
    assert validation_layout(again.meta) == validation_layout(first.meta) is not None   # the boxes it began with


def test_training_curves_in_epochs_from_the_batch_events(tmp_path):
    """x = step / steps-per-epoch of the job's last batch event (a budget plans them); NaN left out."""
    from carelab import LabState

    s = LabState(tmp_path, quick=True)
    s.steps = 7                                   # the typed value must not be used
    s.last_event = {"kind": "batch", "steps": 50}
    s.losses = [[25, -0.5], [50, -0.75], [75, float("nan")], [100, -1.0]]
    s.history = [{"epoch": 1, "val_loss": -0.7, "val_ssim": 0.6}, {"epoch": 2, "val_loss": float("nan"), "val_ssim": 0.7}]
    s.baseline = {"name": "tv", "params": {"weight": 0.2}, "val_ssim": 0.65}
    cv = s.curves()
    assert cv["training"] == ([0.5, 1.0, 2.0], [-0.5, -0.75, -1.0])
    assert cv["validation"] == ([1.0], [-0.7]) and cv["ssim"] == ([1.0, 2.0], [0.6, 0.7])
    assert cv["baseline"] == ([0.0, 2.0], [0.65, 0.65])
    assert s.baseline_label() == "best filter: tv (weight=0.2)"
    # at the end the Train step says on which side of the line CARE ended (it said "Next: step 3" either way)
    from carelab.wizard import TrainStep

    step = TrainStep(s)
    s.job_state = "completed"
    step.update()
    assert "CARE passed the best classical filter on the validation patches (best validation SSIM 0.700 against " \
           "tv (weight=0.2)'s 0.650)." in step.status.value.replace("&#x27;", "'"), step.status.value
    s.baseline = {"name": "tv", "params": {"weight": 0.2}, "val_ssim": 0.75}
    assert s.line_verdict().startswith("CARE stayed below the best classical filter on the validation patches (best "
                                       "validation SSIM 0.700 against tv (weight=0.2)'s 0.750): that filter")
    step.pre_note.value = "231,106 parameters"   # an estimate is of the settings it was made for
    s.task = "denoising2d"
    assert step.pre_note.value == ""
    # (no training of that task here: none shown, not the other task's curves and verdict)
    assert s.history == [] and s.line_verdict() == "" and s.curves()["ssim"] == ([], [])


def test_the_training_charts_span_the_planned_epochs_from_the_first_step(tmp_path):
    """From the first step the charts' x axes span the epochs the job plans (this run's, an ensemble's
    members one after the other; a budget that trains past its plan extends them), and the validation
    SSIM's y axis has a height with the filters' line alone (a mid-run screenshot showed the loss chart's x
    axis as "0 0.005 0.01 ..." in one run-together label and the SSIM axis with no height)."""
    from carelab import LabState

    s = LabState(tmp_path, quick=True)
    s.job_state = "running"
    s.baseline = {"name": "tv", "params": {"weight": 0.2}, "val_ssim": 0.9}
    s.last_event = {"kind": "batch", "epoch": 1, "epochs": 3, "step": 2, "steps": 50}
    s.losses, s.history = [[1, 0.5], [2, 0.4]], []
    cv = s.curves()
    assert s.epochs_planned() == 3 and cv["baseline"] == ([0.0, 3.0], [0.9, 0.9])
    lo, hi = s.ssim_range(cv)
    assert lo < 0.9 < hi and hi - lo == pytest.approx(0.02)
    s.history = [{"epoch": 1, "val_ssim": 0.5}, {"epoch": 2, "val_ssim": 0.95}]
    lo, hi = s.ssim_range(s.curves())
    assert lo < 0.5 and 0.95 < hi < 1.0
    # a model resumed after 4 epochs for 3 more: epochs 5-7 of 7, two of them done, and the last one
    # validated too (its row written, its last batch event still the job's last)
    s.history = [{"epoch": 5, "val_ssim": 0.5}, {"epoch": 6, "val_ssim": 0.6}]
    s.last_event = {"kind": "batch", "epoch": 7, "epochs": 7, "step": 1, "steps": 50}
    assert s.epochs_planned() == 3
    s.history.append({"epoch": 7, "val_ssim": 0.7})
    assert s.epochs_planned() == 3
    # ... with its 4 epochs before in the record (a job keeps them since 2026-12-06): the charts run from epoch 1,
    # this run's training loss after the 4 (a user trial saw the resumed epochs drawn from 1)
    s.history = [{"epoch": e, "val_ssim": 0.5} for e in range(1, 7)]
    s.earlier_epochs, s.losses = 4, [[50, 0.3]]
    assert s.epochs_planned() == 7 and s.curves()["training"] == ([5.0], [0.3])
    assert s.curves()["ssim"][0] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    s.earlier_losses = [(2.0, 0.5), (4.0, 0.4)]   # ... and their training loss, drawn before this run's
    assert s.curves()["training"] == ([2.0, 4.0, 5.0], [0.5, 0.4, 0.3])
    s.earlier_epochs, s.earlier_losses = 0, ()
    # member 2 of an ensemble of 3: the first trained 4 epochs, the second plans 5 (its share is
    # planned on its own), the third is counted at the second's plan
    s.history = [{"epoch": e, "val_ssim": 0.5, "member": m} for m, e in ((1, 1), (1, 2), (1, 3), (1, 4), (2, 1))]
    s.last_event = {"kind": "batch", "epoch": 2, "epochs": 5, "member": 2, "members": 3, "step": 1, "steps": 50}
    assert s.epochs_planned() == 4 + 5 * 2
    s.job_state = "time_limit"   # ended (say the budget was used up after member 2): the charts end with the data
    assert s.epochs_planned() == 0
    s.job_state = "running"
    s.last_event, s.history, s.baseline = {}, [], {}
    assert s.epochs_planned() == 0 and s.ssim_range(s.curves()) is None


def test_all_steps(state):
    from carecore.training.jobs import STATES_DONE
    from carecore.uncertainty import predictive_readouts

    rows = state.scan_pairs()
    assert len(rows) == 2 and all(r["aligned"] for r in rows)
    state.light_dose = 5
    low, high = state.simulate()
    assert low.shape == high.shape and "simulated" in state.low_dir
    ps = state.make_patches()
    assert state.n_patches == len(ps.X) > 0
    pre = state.run_preflight()
    assert pre["seconds_per_step"] > 0 and pre["parameters"] > 0
    assert pre["members"] == 1 and pre["steps_in_budget"] > 0
    # the preparation was done and timed: the filters' line is in it, with the graphs' building and more
    assert pre["seconds_preparation"] > pre["seconds_filters_line"] > 0
    room = (state.time_limit - pre["seconds_preparation"] - pre["seconds_after_training"]) / pre["seconds_per_step"]
    assert 0 < pre["steps_in_budget"] <= room + 1    # the validations between the steps take some of the room
    state.ensemble = 3                               # each member trains a third of the budget
    shared = state.run_preflight()
    assert shared["members"] == 3
    # the share (the filters' line, tuned once before the budget is shared, taken out first) less what
    # training plans around its steps: its preparation, the validations and the work after the last step
    # (a probabilistic model's fits, the output smoothing's choice: more than the last validation alone)
    step, s_val = shared["seconds_per_step"], shared["seconds_per_validation"]
    assert shared["seconds_after_training"] > s_val > 0 and shared["validations"] >= 1
    assert shared["seconds_preparation"] > 0 and shared["seconds_filters_line"] > 0
    share = (state.time_limit - shared["seconds_filters_line"]) / 3
    assert shared["steps_in_budget"] <= max(share - shared["seconds_preparation"] - shared["seconds_after_training"]
                                            - (shared["validations"] - 1) * s_val, 0.0) / step + 1
    assert shared["steps_in_budget"] < int(state.time_limit / 3 / step)   # the share's steps, less what was taken out
    state.ensemble = 0
    assert state.time_limit > 0                      # the default: a time budget
    state.start_training()
    _wait_for_job(state)
    assert state.job_state in STATES_DONE, state.job_message
    assert state.history and len(state.losses) > 2
    assert state.last_event.get("steps") and state.baseline.get("name")
    xs = state.curves()["training"][0]
    assert 0 < xs[0] <= xs[-1] <= len(state.history) + 1
    assert state.model_dir.endswith("model")
    # the ended job's model was offered once; a later poll (the watcher's last) keeps the user's choice
    trained = state.model_dir
    state.model_dir = "models/picked_meanwhile"
    state.poll_job()
    assert state.model_dir == "models/picked_meanwhile"
    state.model_dir = trained
    # a new page (new state) re-attaches to the finished job
    from carelab import LabState

    other = LabState(state.data_root, quick=True)
    seen = []     # whoever sees the job done (the page's observer, a waiting thread) sees its model
    other.observe(lambda ch: seen.append((ch["new"], other.model_dir)), names="job_state")
    assert other.attach_latest_job() == state.job_dir and len(other.history) == len(state.history)
    assert seen and seen[-1][0] in STATES_DONE and seen[-1][1] == trained, seen
    state.input_path = state.default_input()
    restored = state.restore()
    assert restored.shape == state.input_image.shape
    assert state.restored_path == f"restored/{Path(state.job_dir).name}/{state.input_path}"
    keys = set(state.metrics)
    assert {"input", "CARE"} <= keys and any(k.startswith("best filter by SSIM") for k in keys)
    assert all(np.isfinite(m["ssim"]) for m in state.metrics.values())
    # the filters depend on the pair alone: restoring it again (one view now) reuses them, CARE's row is new;
    # another pair is tuned again
    import carecore as cc
    import carecore.baselines as baselines_module

    first, note, tune = dict(state.metrics), state.metrics_note, baselines_module.tune_baselines
    calls = []
    try:
        baselines_module.tune_baselines = lambda *a, **kw: calls.append(1) or tune(*a, **kw)
        state.tta = False
        state.restore()
        assert not calls and state.metrics_note == note
        assert {k: v for k, v in state.metrics.items() if k != "CARE"} == {k: v for k, v in first.items() if k != "CARE"}
        assert state.metrics["CARE"] != first["CARE"]
        gt = state.truth_for(state.input_path)    # the ground truth changed on disk: tuned again
        original = gt.read_bytes()
        truth = cc.read_image(gt)
        try:
            cc.write_image(gt, truth.data * 1.5, axes=truth.axes)
            state.restore()
        finally:
            gt.write_bytes(original)
        assert len(calls) == 1 and set(state.metrics) == set(first)
        # Stop while the filters are tuned: the restoration (done, saved) is shown without them; nothing kept
        done = state.restore_done
        baselines_module.tune_baselines = lambda *a, **kw: state.stop_restore() or tune(*a, **kw)
        kept = dict(state._filter_rows)
        state._filter_rows.clear()   # the last pairs' filters are kept: tuned afresh here
        state.restore()
        assert set(state.metrics) == {"input", "CARE"} and "tuning was stopped" in state.metrics_note
        assert state.restore_done == done + 1 and state.restored is not None and not state._filter_rows
        state._filter_rows.update(kept)   # (not tuned a fourth time for the read-outs below)
    finally:
        baselines_module.tune_baselines, state.tta = tune, True
    state.restore()
    r = state.compute_reliability()
    assert r["samples"].shape[1:] == restored.shape and "calibration" in r
    m = r["mean"].ravel()   # (how wide the intervals are on the brightest 1 % of the restoration, to its structures'
    top = np.argsort(m)[-int(np.ceil(0.01 * m.size)):]   # height above the background)
    height = np.median(m[top]) - np.median(m)
    assert r["spread"]["median"] == pytest.approx(float(np.median((r["upper"] - r["lower"]).ravel()[top] / height)))
    ref = predictive_readouts(state.restored, state.scale, confidence=0.9)
    np.testing.assert_allclose(r["lower"], ref["lower"])
    np.testing.assert_allclose(r["upper"], ref["upper"])
    assert r["calibration"]["space"].startswith("normalized target") and "rescaled" in r["truth_label"]


def test_restore_keeps_spacing_and_names_the_model(state):
    """Outputs keep axes and voxel size and go to restored/<model>/<the image's folders>/ (two models, or two
    images of one name in two folders, never overwrite one another)."""
    import carecore as cc

    src = state.resolve(state.default_input())
    folder = state.resolve(".") / "spaced" / "low"
    folder.mkdir(parents=True)
    img = cc.read_image(src)
    cc.write_image(folder / "sample00.tif", img.data, axes=img.axes, spacing={"Z": 2.0, "Y": 0.25, "X": 0.25})
    state.input_path = "spaced/low/sample00.tif"
    state.restore()
    assert state.truth is None and state.metrics == {}            # no spaced/high/sample00.tif
    out = cc.read_image(state.resolve(state.restored_path))
    assert out.axes == img.axes and out.spacing == {"Z": 2.0, "Y": 0.25, "X": 0.25}
    assert Path(state.restored_path) == Path("restored") / Path(state.job_dir).name / "spaced/low/sample00.tif"
    assert state.output_path("models/other_job/model", "spaced/low/sample00.tif") != state.resolve(state.restored_path)
    (state.resolve(".") / "flipped" / "low").mkdir(parents=True)  # another sample00.tif: saved beside it
    cc.write_image(state.resolve(".") / "flipped/low/sample00.tif", img.data[:, ::-1], axes=img.axes)
    state.input_path = "flipped/low/sample00.tif"
    state.restore()
    assert state.restored_path == f"restored/{Path(state.job_dir).name}/flipped/low/sample00.tif"
    assert cc.read_image(state.resolve(state.restored_path)).spacing != out.spacing   # (the first one kept)
    assert cc.read_image(state.resolve(f"restored/{Path(state.job_dir).name}/spaced/low/sample00.tif")).spacing == \
        out.spacing
    state.input_path = "spaced/low/sample00.tif"
    state.restore()
    # by default the mean over the image's flips and rotations (predict(tta=True)); one view when unticked
    model = cc.load_model(state.resolve(state.model_dir))
    mean = lambda r: r[0] if isinstance(r, tuple) else r   # noqa: E731 (probabilistic: the mean)
    tta = mean(model.predict(img.data, axes=img.axes, tta=True))
    np.testing.assert_allclose(state.restored, tta, atol=1e-3 * np.abs(tta).max())
    assert state.tta and "flips and 90° rotations" in state.restore_summary
    state.tta = False
    try:
        state.restore()
    finally:
        state.tta = True
    one = mean(model.predict(img.data, axes=img.axes))
    np.testing.assert_allclose(state.restored, one, atol=1e-3 * np.abs(one).max())
    assert "flips" not in state.restore_summary and np.abs(one - tta).max() > 1e-2 * np.abs(tta).max()
    # the app's default budget chose the output smoothing when training ended; the summary says what it chose
    assert model.run_card["output_smoothing"]["auto"], model.run_card.get("output_smoothing")
    assert model.output_sigma == model.config.output_sigma != "auto"
    assert ("Gaussian of sigma" in state.restore_summary) == (model.output_sigma > 0), state.restore_summary
    # a model that smooths its output (sigma 2 px): smoothed by default, the network's output when unticked
    smoothing = cc.load_model(state.resolve(state.model_dir))
    smoothing.config = smoothing.config.replace(output_sigma=2.0)
    (state.resolve(".") / "models" / "smoothing").mkdir(parents=True)
    smoothing.save(state.resolve("models/smoothing") / "model")
    kept = state.model_dir
    state.model_dir, state.tta = "models/smoothing/model", False
    try:
        state.restore()
        smoothed = mean(smoothing.predict(img.data, axes=img.axes))
        np.testing.assert_allclose(state.restored, smoothed, atol=1e-3 * np.abs(smoothed).max())
        assert "smoothed by a Gaussian of sigma 2 px" in state.restore_summary, state.restore_summary
        state.smooth = False
        state.restore()
    finally:
        state.model_dir, state.tta, state.smooth = kept, True, True
    raw = mean(smoothing.predict(img.data, axes=img.axes, output_sigma=0))
    np.testing.assert_allclose(state.restored, raw, atol=1e-3 * np.abs(raw).max())
    assert np.abs(raw - smoothed).max() > 1e-2 * np.abs(raw).max()
    assert "the network's output as it is (the model's smoothing, sigma 2 px, left off)" in state.restore_summary
    assert "Gaussian" not in state.restore_summary


def test_a_time_lapse_is_restored_whole_and_shown_at_its_middle_time_point(state, two_filters):
    """A TZYX time-lapse restored in this process: every time point saved, the views, the scores and the
    reliability read-outs on the middle one (the views show one volume)."""
    import carecore as cc

    src = cc.read_image(state.resolve(state.default_input()))
    truth = cc.read_image(state.resolve(state.truth_for(state.default_input())))
    for sub in ("movie/low", "movie/high"):
        (state.resolve(".") / sub).mkdir(parents=True)
    movie = np.stack([src.data, src.data[:, ::-1], src.data[:, :, ::-1]])   # 3 time points
    truths = np.stack([truth.data, truth.data[:, ::-1], truth.data[:, :, ::-1]])
    cc.write_image(state.resolve("movie/low/tl.tif", must_exist=False), movie, axes="TZYX")
    cc.write_image(state.resolve("movie/high/tl.tif", must_exist=False), truths, axes="TZYX")
    kept = state.input_path
    state.input_path = "movie/low/tl.tif"
    try:
        state.restore()
    finally:
        state.input_path = kept
    out = cc.read_image(state.resolve(state.restored_path))
    assert out.axes == "TZYX" and out.shape == movie.shape
    model = cc.load_model(state.resolve(state.model_dir))
    mean = lambda r: r[0] if isinstance(r, tuple) else r   # noqa: E731
    middle = mean(model.predict(movie[1], axes="ZYX", tta=True))
    np.testing.assert_allclose(out.data[1], middle, atol=1e-3 * np.abs(middle).max())
    np.testing.assert_allclose(state.restored, middle, atol=1e-3 * np.abs(middle).max())
    assert state.image_axes == "ZYX" and state.input_image.shape == src.data.shape
    np.testing.assert_array_equal(state.input_image, movie[1])
    assert ("all 3 time points restored and saved; shown and scored here: time point 2 of 3 (T=1, counted from 0)"
            in state.restore_summary)
    scored = cc.evaluate(middle, truth.data[:, ::-1], axes="ZYX")
    assert abs(state.metrics["CARE"]["ssim"] - scored["ssim"]) < 1e-3, state.metrics
    state.compute_reliability()
    assert state.reliability_ready and state.frame_count == 3 and state.frame_index == 1
    # another time point shown and scored: its input, restoration, filters and summary
    state.show_frame(0)
    first = mean(model.predict(movie[0], axes="ZYX", tta=True))
    np.testing.assert_allclose(state.restored, first, atol=1e-3 * np.abs(first).max())
    np.testing.assert_array_equal(state.input_image, movie[0])
    assert abs(state.metrics["CARE"]["ssim"] - cc.evaluate(first, truth.data, axes="ZYX")["ssim"]) < 1e-3
    assert "shown and scored here: time point 1 of 3 (T=0, counted from 0)" in state.restore_summary
    assert state.restore_summary.count("time point") == 2 and not state.reliability_ready
    with pytest.raises(CareError, match=r"frame 3: the restoration has 3 \(0 to 2\)"):
        state.show_frame(3)
    assert state.frame_index == 0 and state.restored is not None   # still usable
    # a failure while a frame is scored leaves the frame shown as it was, whole
    shown = state.restored.copy()
    kept_metrics = state._metrics

    def broken(*args, **kwargs):
        raise CareError("scoring failed")

    state._metrics = broken
    try:
        with pytest.raises(CareError, match="scoring failed"):
            state.show_frame(2)
    finally:
        state._metrics = kept_metrics
    assert state.frame_index == 0 and "T=0" in state.restore_summary
    np.testing.assert_array_equal(state.restored, shown)
    np.testing.assert_array_equal(state.input_image, movie[0])
    # a stop left over from an earlier restoration does not cut the next frame's filters short
    state.stop_restore()
    state.choose_frame(2)
    assert state.frame_index == 2 and any(k.startswith("best filter") for k in state.metrics), state.metrics
    # a frame chosen in the app is shown before its filters are tuned (their rows follow)
    state._filter_rows.clear()
    early = []
    state.choose_frame(0, shown=lambda: early.append((state.frame_index, state.scores_pending, set(state.metrics))))
    assert early == [(0, True, {"input", "CARE"})], early
    assert state.frame_index == 0 and not state.scores_pending and any(k.startswith("best filter") for k in state.metrics)
    # one ground truth for every time point (a fixed sample imaged again and again): scored against it
    cc.write_image(state.resolve("movie/high/tl.tif"), truth.data, axes="ZYX")
    state.input_path = "movie/low/tl.tif"
    try:
        state.restore()
    finally:
        state.input_path = kept
    assert abs(state.metrics["CARE"]["ssim"] - cc.evaluate(middle, truth.data, axes="ZYX")["ssim"]) < 1e-3
    state.input_path = kept
    state.restore()
    assert state.frame_count == 1 and state.frame_index == 0 and "time point" not in state.restore_summary


def test_the_restoration_is_shown_before_the_filters_are_tuned(state, monkeypatch, two_filters):
    """A restoration is shown (views, summary, the input's and CARE's scores) once it is saved, and the
    tuned classical filters' rows follow (a user trial waited 5.5 min, seeing nothing, while they were tuned
    on an isotropic stack); the reliability read-outs need not wait for them; filters tuned on the same pair
    before come at once; a Stop skips them; a failure of their tuning leaves the restoration shown and says so."""
    import carecore.baselines as baselines_module

    seen = []

    def shown():
        seen.append({"pending": state.scores_pending, "rows": set(state.metrics), "path": state.restored_path,
                     "restored": state.restored is not None, "verdict": list(state.metrics_verdict),
                     "note": state.metrics_note, "done": state.restore_done})
        if len(seen) == 1:   # step 5 meanwhile, from another thread: not held up by the tuning
            worker = threading.Thread(target=lambda: seen[0].update(readouts=sorted(state.compute_reliability())))
            worker.start()
            worker.join(120)
            assert not worker.is_alive(), "the reliability read-outs waited for the filters"

    monkeypatch.setattr(state, "input_path", state.default_input())   # (a test image with its ground truth)
    state._filter_rows.clear()
    done = state.restore_done
    state.restore(shown=shown)
    assert len(seen) == 1, seen
    early = seen[0]
    assert early["pending"] and early["rows"] == {"input", "CARE"} and early["restored"] and early["path"]
    assert early["verdict"] == [] and "their rows follow" in early["note"] and "CARE never saw it" in early["note"]
    assert early["done"] == done + 1 and state.restore_done == done + 1 and "calibration" in early["readouts"]
    assert not state.scores_pending and "their rows follow" not in state.metrics_note
    assert any(k.startswith("best filter by") for k in state.metrics) and state.metrics_verdict
    rows = set(state.metrics)
    state.restore(shown=shown)   # the same pair: its filters' rows at once, no early view
    assert len(seen) == 1 and set(state.metrics) == rows and not state.scores_pending
    # Stop while they are tuned: the restoration shown without them, and a verdict on what it has
    state._filter_rows.clear()
    state.restore(shown=lambda: seen.append("stop") or state.stop_restore())
    assert seen[-1] == "stop" and set(state.metrics) == {"input", "CARE"} and not state.scores_pending
    assert "tuning was stopped" in state.metrics_note and state.restored is not None
    # a failure: the restoration stays shown, and the note says why there are no filter rows

    def fail(*a, **kw):
        raise MemoryError("no memory left for the filters")

    with monkeypatch.context() as m:
        m.setattr(baselines_module, "tune_baselines", fail)
        with pytest.raises(MemoryError):
            state.restore(shown=shown)
    assert len(seen) == 3 and seen[2]["pending"] and state.restored is not None and not state.scores_pending
    assert set(state.metrics) == {"input", "CARE"}
    assert state.metrics_note.startswith("the classical filters could not be tuned on it (no memory left for the "
                                         "filters): no filter rows; CARE never saw it"), state.metrics_note
    state.restore()   # (without ``shown``: all at once, as before)
    assert set(state.metrics) == rows and len(seen) == 3


# the charts and volumes are made in this process here (elsewhere only in the browser's kernel): bqplot's
# scales and axes and ipyvolume's volumes pass constructor arguments that traitlets deprecates
@pytest.mark.filterwarnings("ignore:Passing unrecognized arguments to super:DeprecationWarning",
                            "ignore:metadata .* was set from the constructor:DeprecationWarning")
def test_views_and_read_outs_follow_the_frame_shown(state, two_filters):
    """Steps 4 and 5 name what they show; another frame (or restoration) refreshes the views and takes
    the reliability read-outs of the one before down (no figure left standing for another frame)."""
    import carecore as cc
    from carelab import LabState
    from carelab.wizard import ReliabilityStep, ViewStep

    src = cc.read_image(state.resolve(state.default_input()))
    (state.resolve(".") / "movie2" / "low").mkdir(parents=True)
    cc.write_image(state.resolve("movie2/low/tl.tif", must_exist=False),
                   np.stack([src.data, src.data[:, ::-1]]), axes="TZYX")
    lab = LabState(state.data_root, quick=True)   # its own observers (the module's state keeps none)
    lab.model_dir, lab.input_path, lab.tta = state.model_dir, "movie2/low/tl.tif", False
    view, rel = ViewStep(lab), ReliabilityStep(lab)
    rel.activate()   # (the tab opened: its charts made, shown with the first read-outs)
    assert rel.band_box.children == () and rel.calib_box.children == ()
    lab.restore()
    view.on_show()
    assert "time point 2 of 2 (T=1, counted from 0)" in view.caption.value and "tl.tif" in view.caption.value
    np.testing.assert_array_equal(view.ortho_out.data, lab.restored)
    rel.show(lab.compute_reliability())
    assert "of restored/" in rel.caption.value and "time point 2 of 2" in rel.caption.value and rel.movie.value
    assert rel.movie.layout.display == ""
    shown = view.ortho_out.data.copy()
    lab.show_frame(0)
    assert lab.readouts == {} and not lab.reliability_ready
    assert "taken down" in rel.caption.value and "time point 1 of 2 (T=0" in rel.caption.value
    assert rel.movie.value == b"" and len(rel.band.mean.x) == 0 and len(rel.calib.lines["model"].x) == 0
    assert rel.movie.layout.display == "none"   # (an empty image would show a broken-image icon)
    rel.z.value = 0   # the sliders with nothing to show: no error
    view.activate()   # the tab opened again: the views follow the frame shown
    assert "time point 1 of 2 (T=0" in view.caption.value
    np.testing.assert_array_equal(view.ortho_out.data, lab.restored)
    assert not np.array_equal(view.ortho_out.data, shown)
    # read-outs computed before a change arrive after it: not shown
    r = lab.compute_reliability()
    lab.show_frame(1)
    rel.show(r)
    assert "taken down" in rel.caption.value and rel.movie.value == b""
    # a single image: no frame in the captions
    lab.input_path = state.default_input()
    lab.restore()
    rel.show(lab.compute_reliability())
    view.activate()
    assert "time point" not in view.caption.value and "time point" not in rel.caption.value
    assert "sample00.tif" in view.caption.value
    # the scores' note says whether CARE saw the image: a test image it never saw, a training image it did
    assert lab.metrics_note.endswith("; CARE never saw it"), lab.metrics_note
    assert "ECE" in rel.ece.value and "care-rel-trained" not in rel.ece.value
    assert "expected calibration error" in rel.ece.value   # (the abbreviation said in words, a trial)
    # an ensemble's disagreement map comes with its colour bar (0 agree, left, to 1 disjoint, right), and goes
    # with it
    from carecore.render import colorbar_png

    assert rel.dbar.layout.display == "none"
    r = lab.compute_reliability()
    r["disagreement"] = np.linspace(0, 1, r["mean"].size).reshape(r["mean"].shape)
    rel.show(r)
    assert rel.dmap.layout.display is None and rel.dbar.layout.display is None
    assert rel.dbar_image.value == colorbar_png("inferno") and "mean D = 0.500" in rel.dnote.value
    lab.restore()   # (restored again: the read-outs taken down)
    assert rel.dmap.layout.display == "none" and rel.dbar.layout.display == "none"
    lab.input_path = state.rel(cc.load_model(state.resolve(state.model_dir)).run_card["data_sources"][0]["low"])
    lab.restore()
    assert "CARE was trained on this image or a part of it" in lab.metrics_note, lab.metrics_note
    assert not any("each tuned on the ground truth" in v for v in lab.metrics_verdict), lab.metrics_verdict   # (no win
    # said in bold for a training image: a user trial)
    rel.show(lab.compute_reliability())   # its calibration too
    assert "CARE was trained on this image or a part of it: its calibration here flatters it" in rel.ece.value, rel.ece.value
    # a copy of it under another name, its ground truth beside it: known by its pixels
    (state.resolve(".") / "copy" / "low").mkdir(parents=True)
    (state.resolve(".") / "copy" / "high").mkdir()
    shutil.copy(state.resolve(lab.input_path), state.resolve(".") / "copy" / "low" / "renamed.tif")
    shutil.copy(state.resolve(lab.truth_for(lab.input_path)), state.resolve(".") / "copy" / "high" / "renamed.tif")
    lab.input_path = "copy/low/renamed.tif"
    lab.restore()
    assert "CARE was trained on this image or a part of it" in lab.metrics_note, lab.metrics_note
    # the Restore step's list: images to restore first, ground truths last; the model's training images and
    # ground truths named
    seen = state.rel(cc.load_model(state.resolve(state.model_dir)).run_card["data_sources"][0]["low"])
    truth = state.rel(lab.truth_for(seen))
    order = [path for _, path in lab.image_choices()]
    labels = dict((path, label) for label, path in lab.image_choices())
    assert labels[state.default_input()] == state.default_input() and labels["copy/low/renamed.tif"] == "copy/low/renamed.tif"
    assert labels[seen] == f"{seen} · trained on (scores flatter CARE)" and labels[truth] == f"{truth} · a ground truth"
    assert order.index(state.default_input()) < order.index(seen) < order.index(truth)
    recorded = {state.rel(d["low"]) for d in cc.load_model(state.resolve(state.model_dir)).run_card["data_sources"]}
    others = [p for p in labels if "/train/low/" in p and p not in recorded]   # (another task's train/low/sample00.tif)
    assert others and all(labels[p] == p for p in others), others
    assert {p for p, label in labels.items() if "trained on" in label} == recorded
    # its order does not depend on the model (a dropdown sends a position): with none chosen, the same order
    kept, lab.model_dir = lab.model_dir, ""
    try:
        assert [path for _, path in lab.image_choices()] == order
        assert not any("trained on" in label for label, _ in lab.image_choices())
    finally:
        lab.model_dir = kept


def test_a_move_of_the_frame_slider_while_a_frame_is_shown_is_taken(state, two_filters):
    """The user moves the time-point slider again while the frame chosen before is being shown (its views and
    slider set from the state, on the scoring thread): the later move is shown when that one ends. (The
    slider's own changes were told from the user's by a flag for all threads: a move arriving then was
    dropped, and a browser walk saw the slider at 2 with time point 1 shown.)"""
    import carecore as cc
    from carelab import LabState
    from carelab.wizard import RestoreStep

    src = cc.read_image(state.resolve(state.default_input()))
    (state.resolve(".") / "movie3" / "low").mkdir(parents=True)
    cc.write_image(state.resolve("movie3/low/tl.tif", must_exist=False),
                   np.stack([src.data, src.data[:, ::-1], src.data[:, :, ::-1]]), axes="TZYX")
    lab = LabState(state.data_root, quick=True)
    lab.model_dir, lab.input_path, lab.tta = state.model_dir, "movie3/low/tl.tif", False
    step = RestoreStep(lab)
    lab.restore()
    step._render()
    assert step.frame.value == lab.frame_index == 1 and step.frame.max == 2
    scorer, moved = [], []

    def user_moves_meanwhile(change):   # the scoring thread sets the slider to frame 2: the user moves it
        if scorer and threading.get_ident() == scorer[0] and change["new"] == 2 and not moved:   # to 0 meanwhile
            moved.append(change["new"])
            user = threading.Thread(target=lambda: setattr(step.frame, "value", 0))
            user.start()
            user.join(30)

    choose = lab.choose_frame

    def choose_frame(*args, **kwargs):
        scorer.append(threading.get_ident())
        return choose(*args, **kwargs)

    lab.choose_frame = choose_frame
    step.frame.observe(user_moves_meanwhile, "value")
    step.frame.value = 2   # the user's first move
    t = time.time()
    while (step._frame_busy or lab.frame_index != 0) and time.time() - t < 60:
        time.sleep(0.1)
    assert moved and lab.frame_index == 0 and step.frame.value == 0, (moved, lab.frame_index, step.frame.value)
    assert "T=0" in lab.restore_summary and not step.go.disabled


def test_an_image_of_another_gain_is_warned_about_and_restored_by_its_own_percentiles(state):
    """The warning of an image unlike the training images reaches the Restore step apart from the summary,
    with what to do there: the own-percentiles box, which restores as predict(normalization="image") does."""
    import carecore as cc
    from carecore.errors import collect_warnings

    src = cc.read_image(state.resolve(state.default_input()))
    (state.resolve(".") / "gain" / "low").mkdir(parents=True)
    other = (src.data * 40 + 900).astype(np.float32)
    cc.write_image(state.resolve("gain/low/g.tif", must_exist=False), other, axes=src.axes)
    kept, state.input_path = state.input_path, "gain/low/g.tif"
    try:
        state.restore()
        assert len(state.restore_warnings) == 1 and "far from the training inputs'" in state.restore_warnings[0]
        assert "own-percentiles box" in state.restore_warnings[0] and "warning" not in state.restore_summary
        assert "scaled by the training images' percentiles" in state.restore_summary
        state.own_percentiles = True
        state.restore()
        assert state.restore_warnings == [] and "input scaled by its own percentiles" in state.restore_summary
        model = cc.load_model(state.resolve(state.model_dir))
        with collect_warnings():
            own = model.predict(other, axes=src.axes, tta=True, normalization="image")
        own = own[0] if isinstance(own, tuple) else own
        np.testing.assert_allclose(state.restored, own, atol=1e-3 * np.abs(own).max())
        assert state.input_norm == cc.compute_percentiles(other, *model.config.percentiles, axes=src.axes)
    finally:
        state.input_path, state.own_percentiles = kept, False


def test_restore_summary_names_the_output_smoothing():
    """The summary clause states each model's sigma and whether training chose it or the configuration set it."""
    from types import SimpleNamespace

    from carelab.state import smoothing_note

    def model(sigma, auto=None):
        card = {"output_smoothing": {"auto": True, "sigma": sigma}} if auto else {}
        return SimpleNamespace(output_sigma=sigma, run_card=card)

    assert smoothing_note([model(0.0, auto=True)]) == "" and smoothing_note([model(0.0)]) == ""
    assert smoothing_note([model(1.5)]) == "; the restored mean smoothed by a Gaussian of sigma 1.5 px (set in its configuration)"
    assert smoothing_note([model(0.5, auto=True), model(1, auto=True)]) == (
        "; the restored mean smoothed by a Gaussian of sigma 0.5, 1 px (chosen when training ended, on the "
        "validation patches)")
    assert smoothing_note([model(1.5)], off=True) == (
        "; the network's output as it is (the model's smoothing, sigma 1.5 px, left off)")
    assert smoothing_note([model(0.0)], off=True) == ""


def test_ground_truth_found_next_to_low_only_inside_the_root(state, tmp_path):
    root = state.resolve(".")
    assert state.truth_for("denoising3d/test/low/sample00.tif") == root / "denoising3d/test/high/sample00.tif"
    assert state.truth_for("denoising3d/test/sample00.tif") is None          # not in a "low" folder
    (root / "lowdir" / "low").mkdir(parents=True)
    outside = tmp_path / "high"
    outside.mkdir()
    (outside / "a.tif").write_bytes(b"")
    (root / "lowdir" / "high").symlink_to(outside)                        # a link out of the root
    assert state.truth_for("lowdir/low/a.tif") is None


def test_stop_request_ends_the_job(state):
    state.time_limit = 0     # custom: epochs × steps
    state.epochs, state.steps = 50, 50
    state.start_training()
    t = time.time()
    while state.job_state != "running" and time.time() - t < 120:
        time.sleep(0.3)
        state.poll_job()
    while not state.losses and time.time() - t < 120:
        time.sleep(0.3)
        state.poll_job()
    assert state.stop_training().startswith("stopping models/")
    while state.job_state == "running" and time.time() - t < 180:
        time.sleep(0.3)
        state.poll_job()
    assert state.job_state == "stopped"
    assert state.stop_training() == "no training is running: nothing to stop"   # (a Stop said nothing)
    assert len(state.losses) < 50 * 50
    state.epochs, state.steps = 2, 6


def test_symlinked_tif_outside_the_root_is_left_out(state, tmp_path):
    """A link out of the data root is not listed, and the Restore step still renders."""
    import carecore as cc
    from carelab.wizard import RestoreStep

    cc.write_image(tmp_path / "secret.tif", np.ones((4, 8, 8), np.float32), axes="ZYX")
    link = state.resolve(".") / "leak.tif"
    link.symlink_to(tmp_path / "secret.tif")
    (state.resolve(".") / "loop.tif").symlink_to(state.resolve(".") / "loop.tif")
    files = state.tif_files()
    assert "leak.tif" not in files and "loop.tif" not in files and files
    step = RestoreStep(state)
    assert "leak.tif" not in [path for _, path in step.image.options] and step.image.options
    assert "care-error" not in step.msg.value
    model_dir = state.model_dir
    state.input_path, state.model_dir = "leak.tif", model_dir or "models/none/model"
    with pytest.raises(CareError, match="outside the data root"):
        state.restore()
    state.input_path, state.model_dir = state.default_input(), model_dir


@pytest.mark.parametrize("member", ["../../outside", "/etc", "link_out"])
def test_ensemble_members_outside_the_root_are_refused(state, tmp_path, member):
    """Members listed with '..' or as absolute paths are never followed, nor links out of the root."""
    import json

    name = {"../../outside": "dots", "/etc": "absolute", "link_out": "link"}[member]
    ens = state.resolve(".") / "models" / f"evil_{name}" / "ensemble"
    ens.mkdir(parents=True)
    (ens / "link_out").symlink_to(tmp_path)
    (ens / "ensemble.json").write_text(json.dumps({"members": [member]}))
    bad = state.rel(ens)
    assert bad not in state.models_available()
    assert any(bad in p for p in state.model_problems)
    model_dir = state.model_dir
    state.model_dir = bad
    with pytest.raises(CareError, match="refused|outside the data root"):
        state.restore()
    state.model_dir = model_dir


def test_unreadable_job_files_do_not_break_the_page(tmp_path):
    import json

    from carelab import CareLab, LabState

    job = tmp_path / "models" / "broken_job"
    job.mkdir(parents=True)
    (job / "job.json").write_text("{not json")
    (job / "status.json").mkdir()                           # reading it fails
    s = LabState(tmp_path, quick=True)
    s.attach_latest_job()
    lab = CareLab(LabState(tmp_path, quick=True))
    assert lab.state.job_dir.endswith("broken_job")
    (job / "status.json").rmdir()
    (job / "status.json").write_text(json.dumps({"state": "completed"}))   # done, but job.json is garbage
    lab = CareLab(LabState(tmp_path, quick=True))
    assert lab.state.job_state == "unreadable" and "broken_job" in lab.state.job_message
    assert "care-error" in lab.steps[1].msg.value
    (job / "status.json").write_text("[1, 2]")              # valid JSON, not a status
    s = LabState(tmp_path, quick=True)
    s.attach_latest_job()
    assert s.job_state in ("unknown", "unreadable")


def test_ensemble_reliability_uses_the_mixture(tmp_path):
    """Two members that disagree: the interval, mean and samples are the mixture's, not one Laplace's."""
    from carecore.uncertainty import laplace_quantile, mixture_mean_variance, predictive_readouts
    from carelab import LabState

    s = LabState(tmp_path, quick=True)
    shape = (4, 16, 16)
    mus = np.stack([np.zeros(shape, np.float32), np.full(shape, 10.0, np.float32)])
    bs = np.stack([np.full(shape, 0.5, np.float32), np.full(shape, 1.0, np.float32)])
    s.members, s.scale = (mus, bs), None
    s.restored, s.input_image, s.truth = mixture_mean_variance(mus, bs)[0], np.zeros(shape, np.float32), None
    r = s.compute_reliability()
    ref = predictive_readouts(mus, bs, members=True, confidence=0.9, n_samples=8)
    for k in ("mean", "lower", "upper"):
        np.testing.assert_allclose(r[k], ref[k], rtol=1e-5, atol=1e-5)
    assert r["samples"].shape == (8,) + shape and "disagreement" in r
    # the old collapse to one Laplace with the mixture's variance gives another interval
    mean, var = mixture_mean_variance(mus, bs)
    collapsed = laplace_quantile(mean, np.sqrt(var / 2), 0.05)
    assert np.abs(r["lower"] - collapsed).min() > 0.5


@pytest.mark.parametrize("task", ["denoising2d", "upsampling"])
def test_other_tasks_train_and_restore(task, tmp_path, two_filters):
    from carecore import write_demo_data
    from carecore.baselines import BASELINES
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=[task])
    s = LabState(tmp_path, quick=True)
    s.task = task
    s.time_limit, s.epochs, s.steps = 0, 1, 3
    assert len(s.scan_pairs()) == 2
    s.make_patches()
    s.start_training()
    _wait_for_job(s)
    assert s.job_state == "completed", s.job_message
    s.input_path = s.default_input()
    restored = s.restore()
    low = s.input_image
    # under the scores, said as the quality report says it: a filter that beats CARE (3 steps of training), or CARE
    # worse than its input (the input's row, named by kind, is no filter)
    from carecore.qc import beaten_by, worse_than_input

    named = {k.split(": ", 1)[1] if k.startswith("best filter by ") else k: m for k, m in s.metrics.items()}
    beaten = beaten_by(named, input_name=s.input_label)
    assert beaten and not any(x.split(" (")[0].endswith(s.input_label) for x in beaten), beaten
    said = " ".join(s.metrics_verdict)
    assert f"CARE is beaten here on {'; '.join(beaten)}" in said and "by best filter" not in said, s.metrics_verdict
    assert ("worse than" in said) == bool(worse_than_input(s.metrics, input_name=s.input_label)), s.metrics_verdict
    # the filter rows' short names said in words ("tv: total-variation denoising (Chambolle)")
    names = {k.split(": ", 1)[1].split(" ")[0] for k in s.metrics if k.startswith("best filter by")}
    assert names and all(f"{n}: {BASELINES[n][1]}" in s.metrics_note for n in names), (names, s.metrics_note)
    if task == "upsampling":  # a coarse stack comes back on the ground truth's grid: round(Z × factor) slices
        assert restored.shape == (round(low.shape[0] * s.axial_factor),) + low.shape[1:]
        # compared on the output's grid: the input interpolated along Z (the model's on_output_grid)
        assert list(s.metrics)[:2] == ["input interpolated along Z", "CARE"]
        deconvolved = "; or 4 Richardson-Lucy deconvolutions with the model's PSF" if s.model_config.psf_sigma > 0 else ""
        assert "compared on the output's grid (the input row: input interpolated along Z; each filter starts from the best of " \
            f"nearest interpolation, linear interpolation, cubic interpolation{deconvolved})" in s.metrics_note, s.metrics_note
        assert s.input_on_grid.shape == restored.shape
        # its calibration on the output's grid (the ground truth is there: it had no curve, "another grid")
        assert s.model_config.probabilistic
        r = s.compute_reliability()
        assert "calibration_note" not in r and np.isfinite(r["calibration"]["ece"]), r.get("calibration_note")
        assert r["truth_rescaled"].shape == restored.shape
        import carecore as cc

        img = cc.read_image(s.resolve(s.input_path))               # voxel size: Z divided by the factor
        cc.write_image(s.resolve(".") / "coarse.tif", img.data, axes=img.axes, spacing={"Z": 2.0, "Y": 0.5, "X": 0.5})
        s.input_path = "coarse.tif"
        s.restore()
        out = cc.read_image(s.resolve(s.restored_path))
        assert out.spacing["Z"] == pytest.approx(2.0 / s.axial_factor) and out.spacing["X"] == 0.5
        assert not any("interpolated already" in w for w in s.restore_warnings), s.restore_warnings
        s.input_path = "upsampling/train/low/sample00.tif"   # a training input: interpolated on purpose
        s.restore()
        assert any("look interpolated already" in w for w in s.restore_warnings), s.restore_warnings
    else:
        assert restored.shape == low.shape and {"input", "CARE"} <= set(s.metrics)
        assert s.metrics_note.startswith("filters tuned on this image's own ground truth"), s.metrics_note


def test_ensemble_trains_restores_and_reads_the_mixture(tmp_path, two_filters):
    """A real (tiny) ensemble through the app: its members pass the folder check, read-outs are the mixture's."""
    from carecore import write_demo_data
    from carecore.uncertainty import predictive_readouts
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=["denoising3d"])
    s = LabState(tmp_path, quick=True)
    s.time_limit, s.epochs, s.steps, s.ensemble = 0, 1, 2, 2
    s.scan_pairs()
    s.make_patches()
    s.start_training()
    _wait_for_job(s)
    assert s.job_state == "completed", s.job_message
    assert s.model_dir.endswith("ensemble") and s.rel(s.model_dir) in s.models_available()
    s.input_path = s.default_input()
    s.restore()
    mus, bs = s.members
    assert mus.shape == (2,) + s.input_image.shape and s.scale is None
    assert s.tta and "one view (an ensemble's disagreement is measured on one view)" in s.restore_summary
    r = s.compute_reliability()
    ref = predictive_readouts(mus, bs, members=True, confidence=0.9)
    np.testing.assert_allclose(r["lower"], ref["lower"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r["upper"], ref["upper"], rtol=1e-5, atol=1e-5)
    assert "disagreement" in r and 0 <= r["calibration"]["ece"] <= 1


def test_isotropic_config_and_data_step(tmp_path):
    """The isotropic task: its kind's configuration with the demo's factor and PSF; stacks, not pairs."""
    from carecore import write_demo_data
    from carelab import LabState
    from carelab.state import TASKS, needs_pairs

    write_demo_data(tmp_path, size="tiny", tasks=["isotropic"])
    s = LabState(tmp_path, quick=True)
    s.axial_factor, s.psf_sigma = 2.0, 1.0
    s.task = "isotropic"
    assert TASKS["isotropic"]["kind"] == "isotropic" and not needs_pairs("isotropic") and not s.needs_high
    assert (s.axial_factor, s.psf_sigma) == (4.0, 2.0)              # from the demo's dataset.json
    assert s.low_dir == "isotropic/train/low" and s.high_dir == ""  # the high folder is not asked for
    c = s.config()
    assert (c.kind, c.axes, c.upsampling_factor, c.psf_sigma, c.probabilistic) == ("isotropic", "YX", 4.0, 2.0, False)
    assert c.patch_size == (32, 32) and 0 < c.time_limit <= 30
    s.probabilistic, s.ensemble = True, 3                           # never probabilistic, never an ensemble
    assert not s.config().probabilistic
    s.time_limit = 0
    assert s.config().epochs == s.epochs and s.config().kind == "isotropic"
    rows = s.scan()
    assert [r["name"] for r in rows] == ["sample00.tif", "sample01.tif"] and s.pairs == []
    assert rows[0]["shape"] == "8×64×64" and rows[0]["spacing"] == "4 × 1 × 1" and s.unmatched == ""
    s.axial_factor = 3.0
    s.scan()
    assert "Z/X = 4" in s.unmatched                                 # the voxel size disagrees with the factor
    s.axial_factor = 4.0
    s.axes = "CYX"                                                  # not a stack: refused clearly
    with pytest.raises(CareError, match="takes ZYX stacks"):
        s.scan()


def test_isotropic_patches_from_low_stacks_only(tmp_path):
    """Patches come from the low-quality stacks alone: a missing high folder is never read."""
    import shutil

    from carecore import write_demo_data
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=["isotropic"])
    shutil.rmtree(tmp_path / "isotropic" / "train" / "high")
    s = LabState(tmp_path, quick=True)
    s.task = "isotropic"
    ps = s.make_patches()
    meta = ps.meta["isotropic"]
    assert meta["factor"] == 4.0 and meta["psf_sigma"] == 2.0 and len(meta["stacks"]) == 2
    assert ps.axes == "SYXC" and ps.X.shape[1:3] == (32, 32)
    guards = sum(src["validation_block"] == {"guard": True} for src in ps.meta["sources"]) // 2
    assert guards >= 1   # the slices next to held-out ones give no patch
    assert s.n_patches == len(ps.X) == (2 * 8 - guards) * 2 * 4      # stacks × slices × directions × per slice
    assert (Path(s.patches_dir) / "patches.json").exists()
    assert s.ensure_patches() is not None
    s.psf_sigma = 1.5                                                 # new settings: extracted again
    notes = []
    s.ensure_patches(notes.append)
    assert notes and "again" in notes[0]
    assert _patch_meta(s.patches_dir)["isotropic"]["psf_sigma"] == 1.5


def _patch_meta(folder):
    import carecore as cc

    return cc.load_patches(folder).meta


def test_isotropic_simulates_a_coarse_stack(tmp_path):
    import carecore as cc
    from carecore import write_demo_data
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=["isotropic"])
    s = LabState(tmp_path, quick=True)
    s.task = "isotropic"
    low, high = s.simulate()
    assert low.shape == (8, 64, 64) and high.shape == (32, 64, 64)   # subsampled along Z by the factor
    assert s.low_dir == "simulated/isotropic/low" and s.high_dir == ""
    img = cc.read_image(s.resolve(s.low_dir) / "sample00.tif")
    assert img.spacing["Z"] == 4.0 and img.spacing["X"] == 1.0
    assert len(s.scan()) == 2


def test_isotropic_trains_restores_on_the_fine_grid(tmp_path, two_filters):
    """Restore: round(Z × factor) slices, voxel size Z / factor; metrics on that grid vs interpolation."""
    import carecore as cc
    from carecore import write_demo_data
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=["isotropic"])
    s = LabState(tmp_path, quick=True)
    s.task = "isotropic"
    s.time_limit, s.epochs, s.steps = 0, 1, 3
    s.make_patches()
    s.start_training()
    _wait_for_job(s)
    assert s.job_state == "completed", s.job_message
    assert s.model_dir.endswith("model")
    s.input_path = s.default_input()
    assert s.input_path == "isotropic/test/low/sample00.tif"
    restored = s.restore()
    assert s.input_image.shape == (8, 64, 64) and restored.shape == (32, 64, 64)
    assert s.input_on_grid.shape == restored.shape and s.truth.shape == restored.shape
    assert "one view (the model was trained without flips and rotations)" in s.restore_summary
    out = cc.read_image(s.resolve(s.restored_path))
    assert out.data.shape == (32, 64, 64) and out.axes == "ZYX"
    assert out.spacing["Z"] == pytest.approx(1.0) and out.spacing["X"] == 1.0
    assert s.input_spacing["Z"] == 4.0 and s.output_spacing["Z"] == pytest.approx(1.0)
    assert s.restore_warnings == []   # (its voxel size's Z/X ratio is the model's factor)
    label = "input interpolated along Z"
    assert s.input_label == label and list(s.metrics)[:2] == [label, "CARE"]
    assert any(k.startswith("best filter by") for k in s.metrics) and "output's grid" in s.metrics_note
    # each filter starts from the best of three interpolations (cubic or nearest beat linear's filters)
    assert "each filter starts from the best of nearest interpolation, linear interpolation, cubic interpolation" \
        in s.metrics_note, s.metrics_note
    assert all(k.endswith(" interpolation") for k in s.metrics if k.startswith("best filter by")), list(s.metrics)
    ref = cc.evaluate(s.input_on_grid, s.truth, axes="ZYX")
    assert s.metrics[label]["ssim"] == pytest.approx(ref["ssim"])
    assert all(np.isfinite(m["ssim"]) for m in s.metrics.values())
    with pytest.raises(CareError, match=r"this isotropic model gives no confidence intervals: isotropic models predict one value per voxel \(the two slice directions are combined\); the Reliability step"):
        s.compute_reliability()
    # the Reliability step says so up front, its Compute off and no empty read-outs (a user trial: said after a click)
    from carelab.wizard import ReliabilityStep

    step = ReliabilityStep(s)
    assert step.go.disabled and step.readouts.layout.display == "none" and "one value per voxel" in step.kind_note.value
    # a stack whose voxel size records another axial factor: restored, and told
    img = cc.read_image(s.resolve(s.input_path))
    (s.resolve(".") / "iso2" / "low").mkdir(parents=True)
    cc.write_image(s.resolve("iso2/low/half.tif", must_exist=False), img.data, axes=img.axes,
                   spacing={**img.spacing, "Z": img.spacing["Z"] / 2})
    s.input_path = "iso2/low/half.tif"
    s.restore()
    assert any("Z/X ratio of 2" in w and "factor" in w for w in s.restore_warnings), s.restore_warnings


def test_subdiffraction_trains_on_simulations_alone(tmp_path):
    """No folders at all: a preview of generated pairs, patches from the kind's simulator, restore a demo image."""
    import shutil

    from carecore import write_demo_data
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=["subdiffraction"])
    shutil.rmtree(tmp_path / "subdiffraction" / "train")               # never read
    s = LabState(tmp_path, quick=True)
    s.task = "subdiffraction"
    assert not s.needs_high and s.psf_sigma == pytest.approx(1.73)    # the demo's PSF
    s.structures, s.sim_photons = "tubules", 60.0
    pairs = s.preview_pairs()
    assert len(pairs) == 2 and pairs[0][0].shape == pairs[0][1].shape == (96, 96)
    assert s.low is pairs[0][0] and s.high is pairs[0][1]
    c = s.config()
    assert (c.kind, c.axes, c.psf_sigma) == ("subdiffraction", "YX", pytest.approx(1.73))
    ps = s.make_patches()
    rec = ps.meta["subdiffraction"]
    assert rec["structures"] == ["tubules"] and rec["peak_photons"] == [20.0, 180.0] and rec["n_images"] == 4
    s.time_limit, s.epochs, s.steps = 0, 1, 3
    assert s.config().time_limit == 0 and s.config().epochs == 1    # custom: not the kind's default budget
    s.start_training()
    _wait_for_job(s)
    assert s.job_state == "completed", s.job_message
    s.input_path = s.default_input()
    counts = []
    restored = s.restore(progress=lambda *count: counts.append(count))
    assert restored.shape == s.input_image.shape == (96, 96)
    assert list(s.metrics)[:2] == ["input", "CARE"]
    # the screening of its classical starts is counted as starts, then the filters' grid points
    starts = [(d, t) for d, t, w in counts if w == "starts"]
    assert starts and starts[-1][0] == starts[-1][1] > 3, counts
    assert counts.index(next(c for c in counts if c[2] == "starts")) < counts.index(next(c for c in counts
                                                                                      if c[2] == "filters"))


def test_projection_3d_low_2d_high_and_a_yx_output(tmp_path):
    """Projection: pairs of 3D stacks and 2D projections; the restoration is a YX image compared with the MIP."""
    import carecore as cc
    from carecore import write_demo_data
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=["projection"])
    s = LabState(tmp_path, quick=True)
    s.task = "projection"
    assert s.needs_high and s.high_dir == "projection/train/high"
    rows = s.scan()
    assert len(rows) == 2 and rows[0]["low"] == "16×64×64" and rows[0]["high"] == "64×64"
    assert s.low.ndim == 3 and s.high.ndim == 2
    s.high_dir = "projection/train/low"   # stacks given as ground truths: said so (not "axes 'YX' have 2 letters")
    with pytest.raises(CareError, match=r"projection/train/low/sample00.tif: an image of 16×64×64 pixels, but Surface "
                                        r"projection .* takes 2D ground truths \(YX\) in the High folder"):
        s.scan()
    s.high_dir = "projection/train/high"
    from carelab.wizard import ViewStep

    view = ViewStep(s)   # a 2D output: images, not volumes to rotate (a user trial)
    assert view.show3d.description == "Show images" and "rotate" not in view.intro.value
    s.task = "isotropic"
    assert view.show3d.description == "Show volumes" and "drag to rotate" in view.intro.value
    s.task = "projection"
    with pytest.raises(CareError, match="not offered"):
        s.simulate()
    c = s.config()
    assert (c.kind, c.axes) == ("projection", "ZYX")
    s.time_limit, s.epochs, s.steps = 0, 1, 3
    ps = s.make_patches()
    assert ps.X.shape[1] == 16 and ps.Y.ndim == 4                   # Z taken whole, 2D targets
    notes = []
    s.ensure_patches(notes.append)
    assert not notes                                               # Z whole is not another patch size
    s.start_training()
    _wait_for_job(s)
    assert s.job_state == "completed", s.job_message
    s.input_path = s.default_input()
    restored = s.restore()
    assert s.input_image.shape == (16, 64, 64) and restored.shape == (64, 64)
    out = cc.read_image(s.resolve(s.restored_path))
    assert out.axes == "YX" and out.data.shape == (64, 64)
    assert list(s.metrics)[:2] == ["maximum projection of the input", "CARE"]
    # the filters start from the best of the maximum and the surface-following projections (tuned here)
    assert "each filter starts from the best of maximum projection, surface projection (" in s.metrics_note, s.metrics_note
    filters = [k for k in s.metrics if k.startswith("best filter by")]
    assert filters and all(" projection" in k for k in filters), filters


def test_train_step_shows_a_jobs_dead_network_notes(tmp_path):
    """A training that found its network dead says so under the Train step's status, one line per note."""
    import json

    from carelab import CareLab, LabState

    job = tmp_path / "models" / "job1"
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"config": {}, "patches": "", "ensemble": 0}))
    notes = ["after epoch 1 the network had stopped learning (...); it started again from new weights "
             "(seed 1000) with 90% of the training left", "member 2: after epoch 3 ... <b>"]
    (job / "status.json").write_text(json.dumps({"state": "time_limit", "notes": notes, "history": [], "losses": []}))
    lab = CareLab(LabState(tmp_path, quick=True))
    shown = lab.steps[1].status.value
    assert shown.count("care-job-note") == 2 and "with 90% of the training left" in shown
    assert "&lt;b&gt;" in shown and "care-job-time_limit" in shown


def test_a_running_budgeted_job_reads_the_budgets_clock(tmp_path):
    """A job with a time budget says how much of the budget is used and left, counted from the start of the
    call as the deadline is (the filters' line and preparation included), not from the first step: 3 s
    into steps that began 20 s into a 60 s budget, with 37 s to the deadline, 23 s of it are used. A job of
    epochs x steps keeps "elapsed"; a job's status written before the budget was recorded too; the next
    job shows neither before its first step."""
    import json

    from carelab import CareLab, LabState

    job = tmp_path / "models" / "job1"
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"config": {}, "patches": "", "ensemble": 0}))
    ev = {"kind": "batch", "epoch": 2, "step": 5, "epochs": 9, "steps": 10, "loss": 0.1, "elapsed": 3.0, "eta": 37.0}
    status = {"state": "running", "history": [], "losses": [], "event": ev, "time_limit": 60.0,
              "pid": os.getpid()}

    def write(st):   # replaced whole, as a job writes it: the page's watcher never reads half a file
        (job / "status.tmp").write_text(json.dumps(st))
        (job / "status.tmp").replace(job / "status.json")

    write(status)
    lab = CareLab(LabState(tmp_path, quick=True))
    shown = lab.steps[1].status.value
    assert "training: epoch 2 of about 9 · 0:23 of the 1:00 budget used, about 0:37 left" in shown, shown
    # member 2 of 3 started 30 s into the budget with a share of 15 s: 5 s of its share are left
    write({**status, "event": {**ev, "member": 2, "members": 3, "budget_start": 30.0, "budget_share": 15.0,
                                "eta": 5.0}})
    lab.state.poll_job()
    lab.steps[1].update()
    assert "training member 2 of 3: epoch 2 of about 9 · 0:40 of the 1:00 budget used, about 0:20 left" in \
        lab.steps[1].status.value, lab.steps[1].status.value
    for rest in ({"time_limit": 0.0}, {}):
        write({**{k: v for k, v in status.items() if k != "time_limit"}, **rest})
        lab.state.poll_job()
        lab.steps[1].update()
        assert "epoch 2 of 9 · 0:03 elapsed, about 0:37 left" in lab.steps[1].status.value   # (epochs planned: no "about")
    # the next job, before its first step: no clock or plan of the job before
    write({"state": "running", "history": [], "losses": [], "time_limit": 180.0, "pid": os.getpid()})
    lab.state.poll_job()
    lab.steps[1].update()
    assert lab.state.last_event == {} and "budget used" not in lab.steps[1].status.value
    write({"state": "completed", "history": [], "losses": []})   # the page's watcher ends with the job
    t = time.time()
    while lab.state._poller is not None and time.time() - t < 10:
        time.sleep(0.05)
    assert lab.state._poller is None


def test_the_watcher_follows_a_job_to_its_end_and_the_next_job_gets_one(tmp_path):
    """A watcher forgets itself when its job ends (under the poll lock), so that the next job started gets
    a watcher of its own; a job's model is offered when it ends, before its state says so."""
    import json

    from carelab import LabState

    s = LabState(tmp_path, quick=True)
    job = tmp_path / "models" / "job"
    (job / "model").mkdir(parents=True)
    (job / "model" / "manifest.json").write_text("{}")
    (job / "job.json").write_text(json.dumps({"ensemble": 0}))

    def status(state):   # replaced whole, as a job writes it: the watcher never reads half a file
        (job / "status.tmp").write_text(json.dumps({"state": state, "history": [], "losses": []}))
        (job / "status.tmp").replace(job / "status.json")

    def wait(cond, limit=10.0):
        t = time.time()
        while not cond() and time.time() - t < limit:
            time.sleep(0.02)
        return cond()

    seen = []
    s.observe(lambda ch: seen.append((ch["new"], s.model_dir)), names="job_state")
    for run in range(2):                      # the job, then the same job resumed
        status("running")
        s.job_dir = str(job)
        s.watch_job(interval=0.02)
        assert wait(lambda: s.job_state == "running"), s.job_state
        assert s._poller is not None and s._poller.is_alive()
        status("completed")
        assert wait(lambda: s._poller is None), "the watcher did not end with its job"
        assert s.job_state == "completed", (s.job_state, s.job_message)
        assert seen[-1] == ("completed", str(job / "model")), seen
        s.model_dir = ""


@pytest.mark.filterwarnings("ignore:Passing unrecognized arguments to super:DeprecationWarning",
                            "ignore:metadata .* was set from the constructor:DeprecationWarning")   # (the charts: as above)
def test_a_loss_below_zero_is_explained_under_the_chart(tmp_path):
    """A probabilistic network's Laplace loss goes below 0 (a user trial asked what that meant): the loss
    chart's legend says so then, and only then."""
    from carelab import LabState
    from carelab.wizard import TrainStep

    s = LabState(tmp_path, quick=True)
    step = TrainStep(s)
    step.activate()
    s.losses = [[1, 0.3], [2, 0.1]]
    s.history = [{"epoch": 1, "val_loss": 0.2, "val_ssim": 0.5}]
    assert "training (per step)" in step.loss.caption.value and "negative log-likelihood" not in step.loss.caption.value
    s.history = [{"epoch": 1, "val_loss": 0.2, "val_ssim": 0.5}, {"epoch": 2, "val_loss": -0.4, "val_ssim": 0.6}]
    assert "below 0: the loss of a probabilistic network is a negative log-likelihood" in step.loss.caption.value
    assert "validation (per epoch)" in step.loss.caption.value


def test_a_reloaded_page_comes_back_to_the_running_trainings_task(tmp_path, monkeypatch):
    """A page opened (or reloaded) while a training runs shows that training's task, not the first task
    beside it; a finished job leaves the task as it is."""
    import json
    import os

    from carelab import CareLab, LabState
    from carelab.state import LabState as State

    monkeypatch.setattr(State, "watch_job", lambda self: None)   # (no watcher thread on the fake job)
    job = tmp_path / "models" / "isotropic_20261207_100000"
    job.mkdir(parents=True)
    (job / "job.json").write_text("{}")
    (job / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))   # a live process
    lab = CareLab(LabState(tmp_path, quick=True))
    assert lab.state.task == "isotropic" and lab.state.job_dir.endswith("isotropic_20261207_100000")
    assert lab.steps[0].task.value == "isotropic"
    (job / "status.json").write_text(json.dumps({"state": "completed"}))
    assert CareLab(LabState(tmp_path, quick=True)).state.task == "denoising3d"


def test_a_new_page_takes_the_patches_made_of_its_folders(tmp_path):
    """A reloaded page (a new state) takes the task's patches that a page before it made of the same folders and
    settings (it said "make training patches first" with them on disk: a user trial), with their note; made of
    other folders or settings they are not taken."""
    import json

    from carecore import write_demo_data
    from carelab import LabState
    from carelab.wizard import DataStep

    write_demo_data(tmp_path, size="tiny", tasks=["denoising2d"])
    first = LabState(tmp_path, quick=True, task="denoising2d")
    ps = first.make_patches()
    page = LabState(tmp_path, quick=True, task="denoising2d")
    assert (page.patches_dir, page.n_patches) == (first.patches_dir, len(ps.X))
    assert len(page.ensure_patches().X) == len(ps.X)
    assert f"{len(ps.X)} patch pairs ready" in DataStep(page).patch_note.value
    # made with another seed (or folders, axes, settings): not taken, made again when asked
    record = Path(first.patches_dir) / "lab_patches.json"
    made = json.loads(record.read_text())
    made["key"][4] = 99
    record.write_text(json.dumps(made))
    other = LabState(tmp_path, quick=True, task="denoising2d")
    assert other.patches_dir == "" and other.n_patches == 0
    with pytest.raises(CareError, match="make training patches first"):
        other.ensure_patches()

"""The wizard's state without a browser: every step through the same calls the buttons make."""
import time

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


def test_all_steps(state):
    rows = state.scan_pairs()
    assert len(rows) == 2 and all(r["aligned"] for r in rows)
    state.light_dose = 5
    low, high = state.simulate()
    assert low.shape == high.shape and "simulated" in state.low_dir
    ps = state.make_patches()
    assert state.n_patches == len(ps.X) > 0
    pre = state.run_preflight()
    assert pre["seconds_per_step"] > 0 and pre["parameters"] > 0
    state.start_training()
    _wait_for_job(state)
    assert state.job_state == "completed", state.job_message
    assert len(state.history) == state.epochs and len(state.losses) == state.epochs * state.steps
    assert state.model_dir.endswith("model")
    # a new page (new state) re-attaches to the finished job
    from carelab import LabState

    other = LabState(state.data_root, quick=True)
    assert other.attach_latest_job() == state.job_dir and len(other.history) == state.epochs
    state.input_path = state.default_input()
    restored = state.restore()
    assert restored.shape == state.input_image.shape and state.restored_path.startswith("restored/")
    assert set(state.metrics) == {"input", "CARE"}
    r = state.compute_reliability()
    assert (r["lower"] <= r["mean"]).all() and (r["upper"] >= r["mean"]).all()
    assert r["samples"].shape[1:] == restored.shape and "calibration" in r


def test_stop_request_ends_the_job(state):
    state.epochs, state.steps = 50, 50
    state.start_training()
    t = time.time()
    while state.job_state != "running" and time.time() - t < 120:
        time.sleep(0.3)
        state.poll_job()
    while not state.losses and time.time() - t < 120:
        time.sleep(0.3)
        state.poll_job()
    state.stop_training()
    while state.job_state == "running" and time.time() - t < 180:
        time.sleep(0.3)
        state.poll_job()
    assert state.job_state == "stopped"
    assert len(state.losses) < 50 * 50
    state.epochs, state.steps = 2, 6


@pytest.mark.parametrize("task", ["denoising2d", "upsampling"])
def test_other_tasks_train_and_restore(task, tmp_path):
    from carecore import write_demo_data
    from carelab import LabState

    write_demo_data(tmp_path, size="tiny", tasks=[task])
    s = LabState(tmp_path, quick=True)
    s.task = task
    s.epochs, s.steps = 1, 3
    assert len(s.scan_pairs()) == 2
    s.make_patches()
    s.start_training()
    _wait_for_job(s)
    assert s.job_state == "completed", s.job_message
    s.input_path = s.default_input()
    restored = s.restore()
    low = s.input_image
    if task == "upsampling":  # a coarse stack comes back with 4x the slices (minus the last gap)
        assert restored.shape == ((low.shape[0] - 1) * 4 + 1,) + low.shape[1:]
    else:
        assert restored.shape == low.shape and "CARE" in s.metrics

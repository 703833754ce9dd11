import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
SHARED_DATA = REPO.parent / "shared" / "data"

# The heaviest test files run first. `make test` runs the suite in two processes (pytest-xdist,
# ``--dist loadfile``: a file's tests in one process, in their order), each taking the next file as it
# nears the end of its last: a heavy file near the end would leave the other process idle for minutes.
# Their times in one process (2 cores, 2026-12-05): 330, 280, 230, 190, 160, 150, 120, 110, 100 and
# 100 s of the suite's 2,350. Only the order of the files changes; the tests in each keep theirs.
RUN_FIRST = ("notebooks/test_notebooks.py", "app/test_browser.py", "models/test_care.py", "app/test_state.py",
             "models/test_reliability.py", "models/test_quality_per_minute.py", "models/test_isotropic.py",
             "models/test_ensemble_job.py", "models/test_distributed.py", "models/test_subdiffraction.py")


def pytest_configure(config):
    # here, not at collection: with pytest-xdist only its worker processes collect, and an error there
    # reaches the user as "no active workers", without this message
    stale = [name for name in RUN_FIRST if not (TESTS / name).is_file()]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py RUN_FIRST names test files that do not exist: {stale}")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = Path(str(item.path)).resolve()
        name = path.relative_to(TESTS).as_posix() if path.is_relative_to(TESTS) else ""
        return RUN_FIRST.index(name) if name in RUN_FIRST else len(RUN_FIRST)

    items[:] = sorted(items, key=rank)     # stable: each file's tests in their order


@pytest.fixture(autouse=True)
def _environment_restored():
    """What a test or a library changes in ``os.environ`` lasts for that test only: bioimageio.core's
    ``test_model`` sets ``TF_ENABLE_ONEDNN_OPTS=0`` for good, and every notebook kernel and command-line
    subprocess started after it ran TensorFlow's bfloat16 without oneDNN, about ten times slower."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


class StepClock:
    """A clock for carecore's training loop that moves only when the network trains: a time budget then
    buys the same number of steps on a fast and on a slow or loaded machine."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1e-4  # every reading costs a little, as on a real clock
        return self.now

    def __getattr__(self, name):
        import time
        return getattr(time, name)


@pytest.fixture
def step_clock(monkeypatch):
    """``clock = step_clock(0.25)``: carecore's time budgets count training steps, each 0.25 s of the
    budget (those that plan the budget and those of ``fit``); nothing else moves the clock.
    ``step_clock(0.25, fit_step=0.125, fit_startup=3.0)``: ``fit``'s steps take another time than the
    planning measured, and ``fit`` spends seconds before its first step. ``filters_line=2.0``: tuning the
    filters' line on the validation patches takes 2 s of the clock (none where it is reused from the
    patches); it is tuned for real once for the same patches and handed out again after (seconds of real
    work each time, not under test). ``also``: other modules whose ``time`` is this clock (the training job's,
    the ensemble's).

    Quality reached in a time budget depends on the CPU (a 2-core AVX2 CPU trains a 3D network several
    times slower than one with AVX512); tests that assert quality after a budget use this clock so that
    they assert it after the same training on every machine.
    """
    def install(seconds_per_step, *, fit_step=None, fit_startup=0.0, filters_line=None, also=()):
        import keras

        from carecore.models import care as care_module
        from carecore.models.precision import native_bfloat16
        from carecore.training import events as events_module

        native_bfloat16()   # the machine's precision settled first: its timed steps must not move this clock
        clock = StepClock()
        for module in (care_module, events_module, *also):
            monkeypatch.setattr(module, "time", clock)
        if filters_line is not None:
            from carecore.training.validation import ValidationSet

            line, tuned = ValidationSet.baseline, {}

            def timed_line(self, cached=None, names=None):
                clock.now += 0.0 if cached else filters_line
                if cached or names:
                    return line(self, cached=cached, names=names)
                key = (self.X.shape, float(np.sum(self.X, dtype=np.float64)), float(np.sum(self.Y, dtype=np.float64)),
                       type(self.model).__name__)   # the same validation patches, for the same kind of model
                if key not in tuned:
                    tuned[key] = line(self)
                return None if tuned[key] is None else dict(tuned[key])

            monkeypatch.setattr(ValidationSet, "baseline", timed_line)
        train_on_batch, fit = keras.Model.train_on_batch, keras.Model.fit

        def timed_train_on_batch(self, *args, **kwargs):   # the steps that plan the budget
            clock.now += seconds_per_step
            return train_on_batch(self, *args, **kwargs)

        def tick(batch, logs=None):
            clock.now += seconds_per_step if fit_step is None else fit_step

        def timed_fit(self, *args, callbacks=None, **kwargs):   # fit's steps, ahead of carecore's own hooks
            clock.now += fit_startup
            callbacks = [keras.callbacks.LambdaCallback(on_train_batch_begin=tick)] + list(callbacks or [])
            return fit(self, *args, callbacks=callbacks, **kwargs)

        monkeypatch.setattr(keras.Model, "train_on_batch", timed_train_on_batch)
        monkeypatch.setattr(keras.Model, "fit", timed_fit)
        return clock

    return install


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    from carecore import write_demo_data

    root = tmp_path_factory.mktemp("demo")
    write_demo_data(root, size="tiny", seed=0)
    return root


def _noisy_pair(seed, shape=(16, 48, 48), photons=10, background=1):
    """A simulated (noisy, clean) nuclei volume pair."""
    from carecore import nuclei_volume, simulate_photon_noise

    clean, _ = nuclei_volume(shape, seed=seed)
    noisy, _ = simulate_photon_noise(clean, photons, background=background, seed=seed)
    return noisy, clean


@pytest.fixture(scope="session")
def noisy_pair():
    """``noisy_pair(seed, shape=(16, 48, 48))`` -> (noisy, clean) simulated nuclei volumes."""
    return _noisy_pair

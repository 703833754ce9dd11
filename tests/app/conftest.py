"""Serve the app with Voila on a free loopback port; drive it with Playwright in Debian's Chromium."""
import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "test-artifacts" / "screenshots"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium():
    """Debian's chromium, installed by tests/setup_browser.py when missing; None when that failed."""
    global CHROMIUM
    if not os.path.exists(CHROMIUM):
        with open(Path(tempfile.gettempdir()) / "carelab-setup-browser.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # the suite's other process may be installing it: one apt-get
            if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")):
                subprocess.run([sys.executable, str(REPO / "tests" / "setup_browser.py")], check=False)
        CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
    return CHROMIUM if os.path.exists(CHROMIUM) else None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Never skipped silently: without Chromium the browser tests fail, unless CARELAB_SKIP_BROWSER=1."""
    if os.environ.get("CARELAB_SKIP_BROWSER") == "1":
        pytest.skip("CARELAB_SKIP_BROWSER=1: browser tests skipped on request")
    if _chromium() is None:
        pytest.fail("Chromium could not be installed (tests/setup_browser.py needs root and apt-get; install "
                    "Debian's chromium at /usr/bin/chromium), so the browser tests cannot run. Set "
                    "CARELAB_SKIP_BROWSER=1 to skip them explicitly.", pytrace=False)
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]}


@contextlib.contextmanager
def voila(notebook, *, env, cwd, log_path, extra_args=(), cull=None):
    """Voila serving ``notebook`` on a free loopback port (yields its URL); stopped by its own PID.

    The port is free when picked; should another process (the suite's other one) take it before Voila
    does, Voila exits (``--port_retries=0``: it would otherwise serve on another port while this polls
    the one picked) and starts again on another. Served with ``carecore lab``'s options; ``cull`` (a dict)
    overrides the times after which a kernel without a page is ended.
    """
    from carecore.cli import voila_options

    for attempt in range(3):
        log = open(log_path, "w")
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--port_retries=0",
                                 "--Voila.ip=127.0.0.1", *voila_options(**(cull or {})),   # as `carecore lab`
                                 *extra_args, str(notebook)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        url = f"http://127.0.0.1:{port}/"
        t = time.time()
        while time.time() - t < 60:
            if proc.poll() is not None:
                break
            if f"is running at:\n{url}" in Path(log_path).read_text(errors="replace"):   # this Voila, not another
                try:
                    urllib.request.urlopen(url + "api", timeout=2)
                    break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    pass
            time.sleep(0.3)
        else:
            proc.terminate()
            pytest.fail("voila did not start within 60 s")
        if proc.poll() is None:
            break
        log.close()
        text = Path(log_path).read_text()
        if "already in use" not in text or attempt == 2:
            pytest.fail(f"voila exited at start:\n{text[-3000:]}")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def serve_voila():
    """:func:`voila` for test modules that serve a notebook of their own."""
    return voila


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    from carecore import write_demo_data

    root = tmp_path_factory.mktemp("labroot")
    write_demo_data(root, size="tiny", tasks=["denoising3d", "isotropic", "projection", "subdiffraction"])
    env = dict(os.environ, CARELAB_DATA_ROOT=str(root), CARELAB_QUICK="1", TF_CPP_MIN_LOG_LEVEL="2")
    # (kernels without a page ended after 60 idle s, not `carecore lab`'s 10 min: a test sees it happen, and the
    # kernels of the pages closed by the tests before free their memory; a page's kernel not yet connected, on
    # a loaded machine, has a minute)
    with voila(REPO / "app" / "care_lab.ipynb", env=env, cwd=REPO, cull={"cull_idle_timeout": 60, "cull_interval": 10},
               log_path=tmp_path_factory.mktemp("voila") / "voila.log") as url:
        yield {"url": url, "root": root}


@pytest.fixture
def shots():
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def two_filters(monkeypatch):
    """The Restore step's classical filters tuned as Gaussian and TV only, for tests of what the app does with
    their rows (the pending state, the notes, the grids, the frames), not of the filters themselves: the five
    filters' grids over an isotropic model's classical starts (three interpolations onto its grid, Richardson-Lucy
    deconvolutions) took 61 s on the tiny demo stack (2-core AVX2), these two 6 s. The app tunes all five in ``test_all_steps`` and in the browser walks.
    A filter list given explicitly is kept."""
    import functools

    import carecore.baselines as baselines_module

    for name in ("tune_baselines", "tune_output_baselines"):
        tune = getattr(baselines_module, name)

        @functools.wraps(tune)
        def two(*args, _tune=tune, **kwargs):
            if kwargs.get("names") is None:
                kwargs["names"] = ["gaussian", "tv"]
            return _tune(*args, **kwargs)

        monkeypatch.setattr(baselines_module, name, two)

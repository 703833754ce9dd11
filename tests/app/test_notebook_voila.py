"""A workshop notebook opened through Voila in headless Chromium, as a student would see it (issue 13).

Notebook 5 (``05_view_3d``) is the one with the most to look at: an ipyvolume rendering with contrast
sliders, orthogonal slices with a Z slider and a bqplot line profile. Served alone, it trains its own
quick model (it does not need notebooks 3 and 4). Quick mode (``CARELAB_QUICK=1``); everything it
writes goes to a temporary ``CARELAB_NOTEBOOK_OUT``, nothing inside the repository.
"""
import importlib.util
import json
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "05_view_3d.ipynb"

try:  # the app's browser test owns the allow-list of console noise and the console watcher
    from test_browser import _allowed, _assert_drawn_inside, _line_inside_plot, _watch
except ImportError:  # another import mode: load it by path
    _spec = importlib.util.spec_from_file_location("_carelab_test_browser", Path(__file__).with_name("test_browser.py"))
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    _allowed, _assert_drawn_inside, _line_inside_plot, _watch = (
        _mod._allowed, _mod._assert_drawn_inside, _mod._line_inside_plot, _mod._watch)


@pytest.fixture(scope="module")
def notebook_server(tmp_path_factory, serve_voila):
    """Voila serving the notebook on a free loopback port, with the app fixture's flags."""
    out = tmp_path_factory.mktemp("nb_out")
    env = dict(os.environ, CARELAB_QUICK="1", CARELAB_NOTEBOOK_OUT=str(out), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("MPLBACKEND", None)
    log_path = tmp_path_factory.mktemp("voila_nb") / "voila.log"
    with serve_voila(NOTEBOOK, env=env, cwd=NOTEBOOK.parent, log_path=log_path,
                     extra_args=["--show_tracebacks=True"]) as url:   # a failing cell shows its error
        yield {"url": url, "out": out, "log": log_path}


@pytest.fixture
def nb_page(page, shots, request):
    yield page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        page.screenshot(path=str(shots / "nb_failure.png"), full_page=True)


def _wait_rendered(page, css, server, timeout=150):
    """Wait for ``css``; stop early, with the error shown, when a cell failed."""
    t = time.time()
    while time.time() - t < timeout:
        if page.locator(css).count():
            return time.time() - t
        failed = page.get_by_text(re.compile(r"Traceback \(most recent call last\)|There was an error when executing"))
        if failed.count():
            pytest.fail("a notebook cell failed under Voila:\n" + page.locator("body").inner_text()[-3000:])
        time.sleep(0.5)
    pytest.fail(f"{css} did not render within {timeout} s; voila log:\n{server['log'].read_text()[-3000:]}\n"
                f"page text:\n{page.locator('body').inner_text()[-2000:]}")


def _whole_page(page, path):
    """Voila's page scrolls inside a container (a full-page screenshot shows one screen): grow the viewport."""
    size = page.viewport_size
    height = page.evaluate("() => Math.max(...Array.from(document.querySelectorAll('body, body *'))"
                           ".map(e => e.scrollHeight))")
    page.set_viewport_size({"width": size["width"], "height": min(max(height + 40, size["height"]), 8000)})
    time.sleep(1)  # let WebGL redraw at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


def test_notebook_05_view_3d_in_voila(nb_page, notebook_server, shots):
    page = nb_page
    errors = _watch(page)
    t0 = time.time()
    page.goto(notebook_server["url"], wait_until="commit", timeout=60_000)
    # the last cell's output: the line profile, with its three curves drawn
    _wait_rendered(page, ".nb-profile path.line", notebook_server)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('.nb-profile path.line'))
        .filter(p => ((p.getAttribute('d') || '').match(/L/g) || []).length >= 10).length >= 3""", timeout=30_000)
    print(f"notebook rendered through Voila: {time.time() - t0:.1f} s")

    body = page.locator("body").inner_text()
    assert "Looking at volumes in 3D" in body and "Exercises" in body, body[:500]
    assert re.search(r"volume shape \(Z, Y, X\): \(\d+, \d+, \d+\)", body), body[:2000]
    assert "Traceback" not in body and "no 3D rendering here" not in body, body[-2000:]
    # every cell output a student sees: the one printed line and the widgets; no warnings, errors or stray
    # return values (such as the byte count of a write_text at the end of a cell)
    kinds = page.evaluate("""() => Array.from(document.querySelectorAll('.jp-OutputArea-child')).map(c => {
        const o = c.querySelector('.jp-OutputArea-output');
        const kind = (o && o.getAttribute('data-mime-type')) || 'widget';
        return c.classList.contains('jp-OutputArea-executeResult') ? 'result: ' + (o ? o.innerText : '') : kind;
    })""")
    assert not [k for k in kinds if "stderr" in k or "error" in k or k.startswith("result")], kinds
    assert kinds.count("text/plain") == 1 and kinds.count("widget") == 3, kinds
    results = json.loads((notebook_server["out"] / "05_view_3d" / "results.json").read_text())
    assert results["quick"] is True and results["rendering"] == "ipyvolume", results
    assert results["slices"] and results["profile_length"] == results["shape"][-1], results

    # the 3D rendering: two WebGL canvases (input, CARE) with a contrast slider each
    volumes = page.locator(".nb-volumes")
    volumes.locator("canvas").first.wait_for(timeout=30_000)
    assert volumes.locator("canvas").count() >= 2
    assert volumes.locator(".care-view-contrast").count() == 2
    # the orthogonal slices: input, CARE, ground truth, each an XY image, a Z slider, XZ and YZ
    slices = page.locator(".nb-slices")
    assert slices.count() == 3
    for i in range(3):
        slices.nth(i).locator("img[src]").nth(2).wait_for(timeout=30_000)
        assert slices.nth(i).locator(".widget-slider").count() == 1
    assert [slices.nth(i).locator("b").first.inner_text() for i in range(3)] == ["input", "CARE", "ground truth"]
    for img in slices.locator("img").all():   # a data: URL decodes after its src is set: wait, then check
        try:
            page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle(), timeout=15_000)
        except Exception:
            pytest.fail(f"a slice image did not load: {img.get_attribute('src')[:80]!r}")
    _assert_drawn_inside(_line_inside_plot(page, ".nb-profile"), "line profile")
    legend = page.locator(".nb-profile .care-chart-legend").inner_text()
    assert all(name in legend for name in ("input", "CARE", "ground truth")), legend
    time.sleep(2)  # let WebGL draw
    _whole_page(page, shots / "nb_05_view_3d.png")
    volumes.screenshot(path=str(shots / "nb_05_volumes.png"))
    slices.first.locator("..").screenshot(path=str(shots / "nb_05_slices.png"))

    # interact: move the input's Z slider; its readout and its XY image follow
    first = slices.nth(0)
    readout = first.locator(".widget-readout")
    z0 = int(readout.inner_text())
    xy = first.locator("img").first
    src0 = xy.get_attribute("src")
    first.locator(".noUi-handle").first.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("([el, z]) => parseInt(el.textContent) !== z", arg=[readout.element_handle(), z0],
                           timeout=10_000)
    z1 = int(readout.inner_text())
    assert z1 > z0, (z0, z1)
    page.wait_for_function("([img, src]) => img.getAttribute('src') !== src", arg=[xy.element_handle(), src0],
                           timeout=15_000)
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=xy.element_handle(), timeout=15_000)
    first.screenshot(path=str(shots / "nb_05_slices_input_moved.png"))

    # and the input's contrast window: the rendering changes (the notebook's second exercise)
    canvas = volumes.locator("canvas").first
    before = canvas.screenshot()
    window = volumes.locator(".care-view-window").first
    window_before = window.inner_text()
    assert " – " in window_before   # the window's ends, written in full beside the slider
    contrast = volumes.locator(".care-view-contrast").first
    contrast.locator(".noUi-handle").last.focus()   # the upper end of the window
    for _ in range(40):
        page.keyboard.press("ArrowLeft")
    deadline = time.time() + 15
    while canvas.screenshot() == before and time.time() < deadline:
        time.sleep(0.5)
    assert canvas.screenshot() != before, "lowering the input's contrast window did not change its rendering"
    assert window.inner_text() != window_before
    time.sleep(1)
    volumes.screenshot(path=str(shots / "nb_05_volumes_contrast.png"))
    page.locator(".nb-profile").screenshot(path=str(shots / "nb_05_profile.png"))

    bad = [e for e in errors if not _allowed(e)]
    assert not bad, bad

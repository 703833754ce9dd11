"""The Restore step on a Dask cluster through the wizard's state: ``carecore.predict_chunked`` on a local
cluster or a running scheduler equals the in-process restoration; chunks reported; OME-Zarr inputs;
stop and resume; a bad or unreachable scheduler is an error and the state stays usable."""
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from carecore import CareError

pytest.importorskip("distributed")

from carecore.progress import Stopped  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The tiny demo data and an untrained probabilistic quick network (fixed seed) saved as a model folder."""
    import carecore as cc
    from carelab import LabState

    root = tmp_path_factory.mktemp("lab")
    cc.write_demo_data(root, size="tiny", tasks=["denoising3d"])
    cc.CARE(cc.care_config("ZYX", quick=True, seed=1, probabilistic=True), root / "models" / "untrained" / "model").save()
    s = LabState(root, quick=True)
    s.model_dir = "models/untrained/model"
    s.input_path = s.default_input()
    return s


def test_a_2d_model_on_a_stack_says_what_the_step_can_do(lab):
    """A 2D model given a 3D stack: the step says to choose a 2D image or a 3D model, and names the command
    that restores each slice (a user trial was told to give axes this step has no field for); nothing is
    written, and the step's model and image stay."""
    import carecore as cc

    cc.CARE(cc.care_config("YX", quick=True, seed=1), lab.resolve(".") / "models" / "flat" / "model").save()
    was = lab.model_dir
    lab.model_dir, lab.input_path = "models/flat/model", lab.default_input()
    try:
        with pytest.raises(CareError, match=r"denoising3d/test/low/sample00.tif: a stack of \d+ slices \(axes ZYX, "
                                            r"shape .*\), and models/flat/model is a 2D model .*choose a 2D image, or "
                                            r"a 3D model .*--axes SYX"):
            lab.restore()
        assert not (lab.resolve(".") / "restored" / "flat").exists() and lab.model_dir == "models/flat/model"
    finally:
        lab.model_dir = was


@pytest.fixture(scope="module")
def reference(lab):
    """The in-process restoration of the demo's test volume (the app's default path)."""
    lab.restore_where, lab.input_path = "here", lab.default_input()
    restored = lab.restore().copy()
    assert lab.restored_path == "restored/untrained/denoising3d/test/low/sample00.tif" and "in this process" in lab.restore_summary
    return {"restored": restored, "scale": lab.scale.copy(), "metrics": dict(lab.metrics)}


@pytest.fixture(scope="module")
def scheduler():
    """A scheduler with one worker process on loopback, reached by its address like a remote one."""
    from carecore.prediction.distributed import local_cluster

    cluster = local_cluster(1)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _close(a, b):
    np.testing.assert_allclose(a, b, atol=1e-4 * float(np.abs(b).max()))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_cluster_equals_in_process_and_reports_chunks(lab, reference):
    import carecore as cc

    s = lab
    s.restore_where, s.n_workers, s.chunks = "local", 2, "8,32,32"   # 16×64×64: 2×2×2 chunks
    notes, events = [], []
    s.observe(lambda c: notes.append(c["new"]), "restore_note")
    restored = s.restore(lambda d, t, w: events.append((d, t, w)))
    _close(restored, reference["restored"])
    _close(s.scale, reference["scale"])            # the probabilistic extra, read back for step 5
    assert s.restored_path == "restored/untrained/denoising3d/test/low/sample00.ome.zarr"
    stored = cc.read_image(s.resolve(s.restored_path))
    assert stored.axes == "ZYX" and stored.data.shape == restored.shape
    chunks = [(d, t) for d, t, w in events if w == "chunks"]
    assert chunks[0] == (0, 8) and chunks[-1] == (8, 8) and len(chunks) == 9, chunks
    assert any("local Dask cluster of 2 worker(s): chunk 3/8" in n for n in notes), notes
    assert "8 chunk(s)" in s.restore_summary, s.restore_summary
    # metrics against the ground truth as in process, and the views' data
    assert set(s.metrics) == set(reference["metrics"])
    assert abs(s.metrics["CARE"]["ssim"] - reference["metrics"]["CARE"]["ssim"]) < 1e-3
    assert s.input_image.shape == restored.shape and s.truth is not None
    r = s.compute_reliability()
    assert r["lower"].shape == restored.shape and "calibration" in r


def test_ome_zarr_input_on_a_scheduler_stops_and_resumes(lab, reference, scheduler):
    import carecore as cc

    s = lab
    tif = s.resolve(s.default_input())
    cc.write_image(tif.with_name("sample00.ome.zarr"), cc.read_image(tif).data, axes="ZYX")
    listed = s.image_files()
    assert "denoising3d/test/low/sample00.ome.zarr" in listed and "denoising3d/test/low/sample00.tif" in listed
    assert not any("/0/" in f or f.endswith("/0") for f in listed)   # stores are not entered
    assert s.default_input().endswith("sample00.tif")                # TIFF first
    s.input_path = "denoising3d/test/low/sample00.ome.zarr"
    s.restore_where, s.scheduler_address, s.chunks = "scheduler", scheduler, "8,32,32"

    def stop_after_one(done, total, what):
        if what == "chunks" and done >= 1:
            s.stop_restore()

    with pytest.raises(Stopped):
        s.restore(stop_after_one)
    out = s.resolve("restored/untrained/denoising3d/test/low")
    assert (out / ".sample00.ome.zarr.resume.part").is_dir()         # kept for the rerun
    assert not any("resume" in f for f in s.image_files())             # a store being written is not offered
    events = []
    restored = s.restore(lambda d, t, w: events.append((d, t, w)))
    first = next(d for d, t, w in events if w == "chunks")
    assert 1 <= first < 8 and "done before" in s.restore_summary, (events, s.restore_summary)
    _close(restored, reference["restored"])
    assert s.restored_path == "restored/untrained/denoising3d/test/low/sample00.ome.zarr"
    assert "CARE" in s.metrics                                      # the truth high/sample00.tif was found


def test_bad_or_unreachable_scheduler_is_an_error_and_the_state_stays_usable(lab, reference):
    s = lab
    s.input_path = s.default_input()
    s.restore_where, s.chunks = "here", ""
    before = s.restore().copy()
    s.restore_where = "scheduler"
    s.scheduler_address = "my laptop"
    with pytest.raises(CareError, match="not a Dask scheduler address; give one like tcp://127.0.0.1:8786"):
        s.restore()
    s.scheduler_address = f"tcp://127.0.0.1:{_free_port()}"          # nothing listens there
    t = time.time()
    with pytest.raises(CareError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:.* within 10 s"):
        s.restore()
    assert time.time() - t < 30
    s.restore_where, s.chunks = "local", "8,y"
    with pytest.raises(CareError, match="chunks '8,y'"):
        s.restore()
    assert s.restored is not None and np.array_equal(s.restored, before)   # the last result is still shown
    assert s.restore_note == ""
    s.restore_where, s.chunks = "here", ""
    _close(s.restore(), reference["restored"])
    assert s.restored_path.endswith("sample00.tif")


def test_models_that_change_the_grid_are_refused_on_a_cluster(tmp_path, two_filters):
    """predict_chunked runs models on the input's grid; the app shows why and restores in process."""
    import carecore as cc
    from carecore.models.kinds import model_class
    from carelab import LabState

    cc.write_demo_data(tmp_path, size="tiny", tasks=["isotropic"])
    cls = model_class("isotropic")
    folder = tmp_path / "models" / "iso" / "model"
    cls(cls.default_config("ZYX", quick=True, kind="isotropic", upsampling_factor=4.0, psf_sigma=2.0), folder).save()
    s = LabState(tmp_path, quick=True)
    s.task = "isotropic"
    s.model_dir, s.input_path = "models/iso/model", s.default_input()
    s.restore_where, s.n_workers = "local", 1
    with pytest.raises(CareError, match="changes the image's grid"):
        s.restore()
    s.restore_where = "here"
    assert s.restore().shape[0] == 4 * s.input_image.shape[0]


def test_chunk_text_and_parsing():
    from carelab.state import image_stem, parse_chunks, progress_text

    assert progress_text(3, 12, "chunks") == "chunk 3/12" and progress_text(1, 4, "tiles") == "tile 1/4"
    assert parse_chunks("") is None and parse_chunks(" 8, 64,64 ") == (8, 64, 64) and parse_chunks("128x128") == (128, 128)
    with pytest.raises(CareError, match="one positive whole number per spatial axis"):
        parse_chunks("0,64,64")
    assert image_stem("a.ome.zarr") == image_stem("a.tif") == image_stem("a.TIFF") == "a"
    assert Path(image_stem("b.zarr")).name == "b"

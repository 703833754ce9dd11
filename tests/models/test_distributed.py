"""Chunked prediction over Dask (carecore.predict_chunked): equal to in-memory prediction, extras of
probabilistic models and ensembles, resumable, the CLI, and per-worker memory bounded by the chunk size."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import carecore as cc  # noqa: E402
from carecore.cli import main  # noqa: E402
from carecore.prediction.distributed import worker_peak_memory  # noqa: E402
from carecore.progress import Stopped  # noqa: E402
from carecore.uncertainty import disagreement, predictive_readouts  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    from carecore.prediction.distributed import local_cluster

    cluster = local_cluster(2, memory_limit="3GiB")
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_a_local_cluster_takes_no_fixed_port():
    """Dask's HTTP port 8787 held by another process (a notebook's cluster, the suite's other process): a
    local cluster starts on a free loopback port, with no warning."""
    import socket
    import warnings

    from carecore.prediction.distributed import local_cluster

    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 8787))
        held.listen()
    except OSError:
        pass          # another process holds it: the same case
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cluster = local_cluster(1)
        try:
            assert cluster.scheduler.http_server.port != 8787
            assert not [str(w.message) for w in caught if "in use" in str(w.message)], caught
        finally:
            cluster.close()
    finally:
        held.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained quick 3D networks with fixed seeds, saved: a plain one and two probabilistic members, and
    a member whose output is smoothed (as when training chose a sigma)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, kw in (("plain", dict(seed=1)), ("p1", dict(seed=1, probabilistic=True)),
                     ("p2", dict(seed=2, probabilistic=True)),
                     ("p2s", dict(seed=2, probabilistic=True, output_sigma=3.0))):
        m = cc.CARE(cc.care_config("ZYX", quick=True, **kw), root / name)
        m.save()
        out[name] = root / name
    return out


def _volume(tmp_path, shape, axes, seed=0, name="in.ome.zarr"):
    noisy = np.stack([cc.simulate_photon_noise(cc.nuclei_volume(shape[-3:], seed=seed + t)[0], 10, seed=t)[0]
                      for t in range(int(np.prod(shape[:-3])))]).reshape(shape).astype(np.float32)
    path = cc.write_image(tmp_path / name, noisy, axes=axes, spacing={"Z": 2.0, "Y": 0.5, "X": 0.5})
    return noisy, path


def _close(a, b):
    np.testing.assert_allclose(a, b, atol=1e-4 * float(np.abs(b).max()))


@pytest.mark.parametrize("shape,axes,chunks,name", [((20, 70, 52), "ZYX", (8, 32, 32), "in.ome.zarr"),
                                                    ((2, 12, 40, 36), "TZYX", (12, 16, 24), "in.ome.zarr"),
                                                    ((12, 40, 44), "ZYX", (8, 16, 32), "in.tif")])
def test_chunked_equals_in_memory(client, models, tmp_path, shape, axes, chunks, name):
    noisy, src = _volume(tmp_path, shape, axes, name=name)   # OME-Zarr read by chunks, TIFF memory-mapped
    model = cc.load_model(models["plain"])
    frames = noisy if "T" in axes else noisy[None]
    ref = np.stack([model.predict(f, axes="ZYX") for f in frames])   # frame by frame, each its own percentiles
    events = []
    r = cc.predict_chunked(models["plain"], src, tmp_path / "out.ome.zarr", chunks=chunks, scheduler=client,
                           progress=lambda d, t, w: events.append((d, t)))
    out = cc.read_image(tmp_path / "out.ome.zarr")
    assert out.axes == axes and out.spacing == {"Z": 2.0, "Y": 0.5, "X": 0.5} and out.data.dtype == np.float32
    _close(out.data, ref if "T" in axes else ref[0])
    assert r.computed == r.blocks == len(events) - 1 and events[-1] == (r.blocks, r.blocks)
    assert r.blocks == int(np.prod(shape[:-3])) * int(np.prod([-(-s // c) for s, c in zip(shape[-3:], chunks)]))
    ms = json.loads((tmp_path / "out.ome.zarr" / ".zattrs").read_text())["multiscales"][0]
    assert ms["version"] == "0.4" and len(ms["datasets"]) == (2 if shape[-2] == 70 else 1)   # 70x52: a pyramid
    assert not list(tmp_path.glob(".*"))   # the resumable part was swapped in


def test_probabilistic_extras(client, models, tmp_path):
    noisy, src = _volume(tmp_path, (16, 48, 40), "ZYX", seed=3)
    model = cc.load_model(models["p1"])
    mean, scale = model.predict(noisy, axes="ZYX")
    r = predictive_readouts(mean, scale, confidence=0.8)
    res = cc.predict_chunked(models["p1"], src, tmp_path / "p.ome.zarr", chunks=(8, 24, 24), interval=0.8,
                             scheduler=client)
    assert res.outputs == ("image", "scale", "lower", "upper")
    store = tmp_path / "p.ome.zarr"
    _close(cc.read_image(store).data, mean)
    _close(cc.read_image(store / "extras" / "scale").data, scale)
    _close(cc.read_image(store / "extras" / "lower").data, r["lower"])
    _close(cc.read_image(store / "extras" / "upper").data, r["upper"])


def test_ensemble_extras(client, models, tmp_path):
    noisy, src = _volume(tmp_path, (16, 40, 40), "ZYX", seed=5)
    ens = cc.load_model([models["p1"], models["p2"]])
    means, scales = ens.predict_members(noisy, axes="ZYX")
    r = predictive_readouts(means, scales, members=True)
    res = cc.predict_chunked([models["p1"], models["p2"]], src, tmp_path / "e.ome.zarr", chunks=(16, 24, 24),
                             scheduler=client)
    assert res.outputs == ("image", "lower", "upper", "disagreement")
    store = tmp_path / "e.ome.zarr"
    _close(cc.read_image(store).data, r["mean"])
    _close(cc.read_image(store / "extras" / "lower").data, r["lower"])
    _close(cc.read_image(store / "extras" / "upper").data, r["upper"])
    np.testing.assert_allclose(cc.read_image(store / "extras" / "disagreement").data, disagreement(means, scales),
                               atol=1e-3)


def test_members_with_their_own_smoothing_and_a_per_call_sigma(client, models, tmp_path, capsys):
    """Ensemble members that smooth differently: the blocks overlap by the widest member's reach. A
    per-call sigma (``output_sigma``, CLI ``--output-sigma``) replaces the model's own, chunk by chunk as
    in memory, tiles' overlap included."""
    import zarr

    noisy, src = _volume(tmp_path, (16, 112, 96), "ZYX", seed=13)
    chunks = (16, 32, 32)
    members = [models["p1"], models["p2s"]]
    ens = cc.load_model(members)
    r = predictive_readouts(*ens.predict_members(noisy, axes="ZYX"), members=True)
    p1 = ens.members[0]
    halo = max(int(np.max(m._halo())) for m in ens.members)
    assert halo == int(np.max(p1._halo())) + 9   # sigma 3 reaches 9 px past the unsmoothed member's
    div = p1.config.divisor
    wide = [c + 2 * (-(-halo // div) * div) for c in chunks]

    def windows(model, name, **kw):
        """The job's windows, read from its resumable part before any block is computed."""
        with pytest.raises(Stopped):
            cc.predict_chunked(model, src, tmp_path / name, chunks=chunks, scheduler=client, stop=lambda: True, **kw)
        return zarr.open_group(str(tmp_path / f".{name}.resume.part"), mode="r").attrs["carecore"]["job"]["window"]

    assert windows(members, "e.ome.zarr") == wide
    cc.predict_chunked(members, src, tmp_path / "e.ome.zarr", chunks=chunks, scheduler=client)   # resumes
    _close(cc.read_image(tmp_path / "e.ome.zarr").data, r["mean"])
    smoothed = p1.predict(noisy, axes="ZYX", output_sigma=3.0)[0]
    assert windows(models["p1"], "s.ome.zarr", output_sigma=3.0) == wide   # the halo follows the call's sigma
    cc.predict_chunked(models["p1"], src, tmp_path / "s.ome.zarr", chunks=chunks, scheduler=client,
                       output_sigma=3.0)
    _close(cc.read_image(tmp_path / "s.ome.zarr").data, smoothed)
    assert np.abs(smoothed - p1.predict(noisy, axes="ZYX")[0]).max() > 0.05 * float(np.ptp(smoothed))
    raw = cc.load_model(models["p2s"]).predict(noisy, axes="ZYX", output_sigma=0)[0]
    assert main(["predict", "--model", str(models["p2s"]), "--in", str(src), "--out", str(tmp_path / "r.ome.zarr"),
                 "--scheduler", client.scheduler.address, "--chunks", "16,32,32", "--output-sigma", "0"]) == 0
    _close(cc.read_image(tmp_path / "r.ome.zarr").data, raw)
    with pytest.raises(cc.CareError, match="output_sigma: must be a number of pixels"):
        cc.predict_chunked(models["p1"], src, tmp_path / "x.ome.zarr", scheduler=client, output_sigma=-1)


def test_a_client_that_is_not_the_default_and_a_kind_off_the_grid(client, models, tmp_path):
    from distributed import Client

    noisy, src = _volume(tmp_path, (8, 32, 32), "ZYX", seed=11)
    with Client(client.scheduler.address, set_as_default=False) as other:   # as the app connects
        cc.predict_chunked(models["plain"], src, tmp_path / "o.ome.zarr", chunks=(8, 16, 16), scheduler=other)
    _close(cc.read_image(tmp_path / "o.ome.zarr").data, cc.load_model(models["plain"]).predict(noisy, axes="ZYX"))
    from carecore.models.kinds import model_class

    cls = model_class("upsampling")
    cls(cls.default_config("ZYX", quick=True, kind="upsampling", upsampling_factor=2.0), tmp_path / "up").save()
    with pytest.raises(cc.CareError, match="'upsampling' model changes the image's grid"):
        cc.predict_chunked(tmp_path / "up", src, tmp_path / "u.ome.zarr", scheduler=client)
    # a stack saved with its axes in another order (XYZ): restored in memory, where it is moved; refused here
    cc.write_image(tmp_path / "xyz.tif", np.transpose(noisy), axes="XYZ")
    with pytest.raises(cc.CareError, match=r"spatial axes 'XYZ' .* in the model's order only: restore it in memory "
                                           r"\(without --dask\)"):
        cc.predict_chunked(models["plain"], tmp_path / "xyz.tif", tmp_path / "x.ome.zarr", scheduler=client)


def test_resumes_after_a_crash(client, models, tmp_path):
    import zarr

    noisy, src = _volume(tmp_path, (16, 64, 48), "ZYX", seed=7)
    ref = cc.load_model(models["plain"]).predict(noisy, axes="ZYX")
    dst = tmp_path / "r.ome.zarr"
    seen = []
    with pytest.raises(Stopped):   # a crash after 3 blocks: the stop request ends the run there
        cc.predict_chunked(models["plain"], src, dst, chunks=(8, 16, 16), scheduler=client,
                           progress=lambda d, t, w: seen.append(d), stop=lambda: len(seen) > 3)
    part = tmp_path / ".r.ome.zarr.resume.part"
    assert part.is_dir() and not dst.exists()
    done = zarr.open_array(str(part / "_done"), mode="r")[...]
    total = done.size
    assert 3 <= done.sum() < total
    data = zarr.open_array(str(part / "0"), mode="r+")
    blocks = [np.s_[i * 8:(i + 1) * 8, j * 16:(j + 1) * 16, k * 16:(k + 1) * 16] for i, j, k in np.argwhere(done)]
    data[blocks[0]] = 777.0          # a finished block: a rerun must not compute it again
    for i, j, k in np.argwhere(done == 0):   # unfinished blocks: torn or half-written
        data[i * 8:(i + 1) * 8, j * 16:(j + 1) * 16, k * 16:(k + 1) * 16] = -1.0
    r = cc.predict_chunked(models["plain"], src, dst, chunks=(8, 16, 16), scheduler=client)
    assert r.computed == total - done.sum() and r.blocks == total
    out = cc.read_image(dst).data
    assert (out[blocks[0]] == 777.0).all()
    out[blocks[0]] = ref[blocks[0]]
    _close(out, ref)
    assert not part.exists() and not (dst / "_done").exists()
    # another model (or input, or chunks) never resumes a stale part: it starts again
    with pytest.raises(Stopped):
        cc.predict_chunked(models["plain"], src, dst, chunks=(8, 16, 16), scheduler=client, stop=lambda: True)
    r = cc.predict_chunked(models["p1"], src, dst, chunks=(8, 16, 16), scheduler=client)
    assert r.computed == r.blocks == total
    # the input's chunks rewritten in place, its folder's own time kept: the stale part is not resumed (a user
    # trial's resume mixed the old input's blocks with the new, 18 % of the voxels off)
    seen.clear()
    with pytest.raises(Stopped):
        cc.predict_chunked(models["plain"], src, dst, chunks=(8, 16, 16), scheduler=client,
                           progress=lambda d, t, w: seen.append(d), stop=lambda: len(seen) > 3)
    kept = os.stat(src).st_mtime_ns
    flipped = noisy[:, ::-1].copy()
    zarr.open_array(str(Path(src) / "0"), mode="r+")[...] = flipped
    os.utime(src, ns=(kept, kept))
    r = cc.predict_chunked(models["plain"], src, dst, chunks=(8, 16, 16), scheduler=client)
    assert r.computed == r.blocks == total
    _close(cc.read_image(dst).data, cc.load_model(models["plain"]).predict(flipped, axes="ZYX"))
    # a store that is no restoration (raw data) named as the output: refused before any work, kept as it was
    raw = cc.write_image(tmp_path / "raw.ome.zarr", noisy, axes="ZYX")
    with pytest.raises(cc.CareError, match=r"raw.ome.zarr: an OME-Zarr store that is not a restoration carecore wrote"):
        cc.predict_chunked(models["plain"], src, raw, chunks=(8, 16, 16), scheduler=client)
    np.testing.assert_array_equal(cc.read_image(raw).data, noisy)
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(raw)]) == 2
    np.testing.assert_array_equal(cc.read_image(raw).data, noisy)
    # a restoration is replaced (the one in memory too: marked as one)
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(dst)]) == 0
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(dst), "--dask",
                 "--scheduler", client.scheduler.address]) == 0


def test_a_scheduler_with_too_few_workers_is_said_before_anything_is_written(client, models, tmp_path, capsys,
                                                                               monkeypatch):
    """More workers asked of a scheduler than it has: an error naming both counts, before any part folder (a user
    trial waited 2 minutes for "carecore: error: 120 2", and a part folder was left behind); --workers 0 refused; an
    interrupted run says what it kept and how to continue."""
    import argparse

    import carecore.prediction.distributed as dist
    from carecore.cli import _kept_after_interrupt

    noisy, src = _volume(tmp_path, (16, 40, 40), "ZYX", seed=9)
    out = tmp_path / "few.ome.zarr"
    monkeypatch.setattr(dist, "WAIT_FOR_WORKERS", 2)
    address = client.scheduler.address
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(out), "--scheduler",
                 address, "--workers", "9"]) == 2
    err = capsys.readouterr().err
    assert f"the Dask scheduler at {address} has 2 worker(s) after 2 s of waiting for 9 (--workers" in err, err
    assert not out.exists() and not list(tmp_path.glob(".few.ome.zarr*"))
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(out), "--dask",
                 "--workers", "0"]) == 2
    assert "--workers 0: the number of Dask workers, 1 or more" in capsys.readouterr().err
    # a 2D model on a stack: the way that works is said (in memory, --axes SYX), as without --dask
    cc.CARE(cc.care_config("YX", quick=True), tmp_path / "m2d").save()
    with pytest.raises(cc.CareError, match=r"the model is 2D \(YX\) but the image has spatial axes 'ZYX' .*; a 2D model "
                                           r"restores a stack slice by slice in memory: without --dask, with --axes SYX \(predict"):
        cc.predict_chunked(tmp_path / "m2d", src, out, scheduler=client)
    seen = []
    with pytest.raises(Stopped, match=r"stopped: \d+ of 18 chunks done, kept in .*\.few\.ome\.zarr\.resume\.part; the "
                                      "same call again continues from there"):
        cc.predict_chunked(models["plain"], src, out, chunks=(8, 16, 16), scheduler=client,
                           progress=lambda d, t, w: seen.append(d), stop=lambda: len(seen) > 2)
    assert _kept_after_interrupt(argparse.Namespace(command="predict", out=str(out), dask=False)) == ""   # in memory
    said = _kept_after_interrupt(argparse.Namespace(command="predict", out=str(out), dask=True))
    assert re.fullmatch(rf": \d+ of 18 chunks done, kept in {re.escape(str(tmp_path / '.few.ome.zarr.resume.part'))} "
                        r"\(run the same command again to continue; delete that folder to start afresh\)", said), said


def test_cli_predict_dask(client, models, tmp_path, capsys):
    noisy, src = _volume(tmp_path, (16, 40, 40), "ZYX", seed=9)
    out = tmp_path / "cli.ome.zarr"
    assert main(["predict", "--model", str(models["p1"]), "--in", str(src), "--out", str(out), "--dask",
                 "--scheduler", client.scheduler.address, "--chunks", "16,24,24"]) == 0
    assert "extras: scale, lower, upper" in capsys.readouterr().out
    mean, scale = cc.load_model(models["p1"]).predict(noisy, axes="ZYX")
    _close(cc.read_image(out).data, mean)
    _close(cc.read_image(out / "extras" / "scale").data, scale)
    assert main(["predict", "--model", str(models["p1"]), "--in", str(src), "--out", str(out), "--dask",
                 "--scale-out", "s.tif"]) == 2
    assert "written into" in capsys.readouterr().err
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(tmp_path / "x.tif"),
                 "--scheduler", client.scheduler.address]) == 2
    assert "name it *.ome.zarr" in capsys.readouterr().err
    # said before any model is loaded (here none could be)
    assert main(["predict", "--model", str(tmp_path / "no-model"), "--in", str(src), "--out", str(tmp_path / "x.tif"),
                 "--dask"]) == 2
    assert "name it *.ome.zarr" in capsys.readouterr().err
    # without --dask an OME-Zarr input is restored in memory, into a TIFF or an OME-Zarr
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(tmp_path / "m.ome.zarr")]) == 0
    _close(cc.read_image(tmp_path / "m.ome.zarr").data, cc.load_model(models["plain"]).predict(noisy, axes="ZYX"))
    # --tta: the mean over the flips and rotations, chunk by chunk as in memory, and not one view
    tta = cc.load_model(models["plain"]).predict(noisy, axes="ZYX", tta=True)
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(tmp_path / "t.ome.zarr"),
                 "--tta", "--scheduler", client.scheduler.address, "--chunks", "16,24,24"]) == 0
    _close(cc.read_image(tmp_path / "t.ome.zarr").data, tta)
    assert main(["predict", "--model", str(models["plain"]), "--in", str(src), "--out", str(tmp_path / "t.tif"),
                 "--tta"]) == 0
    _close(cc.read_image(tmp_path / "t.tif").data, tta)
    assert np.abs(tta - cc.read_image(tmp_path / "m.ome.zarr").data).max() > 1e-3 * np.abs(tta).max()


def test_nan_in_a_block_is_one_clear_error_naming_where(client, models, tmp_path, capfd):
    """A block's bad data reaches the caller as the error itself, naming where the block was read from
    and its first bad pixel in it; the workers' log of it ("Compute Failed" and a traceback) is not shown."""
    import re

    noisy, _ = _volume(tmp_path, (16, 40, 40), "ZYX", seed=3)
    noisy[3, 30, 31] = np.nan
    src = cc.write_image(tmp_path / "holed.ome.zarr", noisy, axes="ZYX")
    norm = cc.Normalization((0.0,), (100.0,), (1.0, 99.8))   # (the image's percentiles would say it first)
    with pytest.raises(cc.CareError, match=r"holed.ome.zarr block \(0, \d, \d\) \(read from Z \d+ Y \d+ X \d+\): contains "
                                           r"NaN or infinite values \(1 pixel in the tile .*, the first at") as e:
        cc.predict_chunked(cc.load_model(models["plain"]), src, tmp_path / "o.ome.zarr", chunks=(16, 24, 24),
                           scheduler=client, normalization=norm)
    origin = re.search(r"read from Z (\d+) Y (\d+) X (\d+)", str(e.value)).groups()
    first = re.search(r"the first at Z (\d+) Y (\d+) X (\d+)", str(e.value)).groups()
    assert tuple(int(a) + int(b) for a, b in zip(origin, first)) == (3, 30, 31)
    time.sleep(1)   # (a worker's log would arrive by now)
    assert "Compute Failed" not in capfd.readouterr().err


# -- the memory bound, with a real scheduler and two workers started as processes -------------------

def _dask(*args):
    exe = Path(sys.executable).with_name("dask")
    return [str(exe)] + list(args) if exe.exists() else [sys.executable, "-m", "dask"] + list(args)


@pytest.fixture
def external_cluster(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (memory limit 3 GiB each, the
    Nanny's safety net; the test's own budget is asserted below), stopped afterwards."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", DASK_DISTRIBUTED__WORKER__MEMORY__TARGET="False",
               DASK_DISTRIBUTED__WORKER__MEMORY__SPILL="False", DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE="False")
    file = tmp_path / "scheduler.json"
    logs = [open(tmp_path / f"{n}.log", "w") for n in ("scheduler", "w0", "w1")]
    procs = [subprocess.Popen(_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                    "--dashboard-address", "127.0.0.1:0",
                                    "--scheduler-file", str(file)), env=env, stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        deadline = time.time() + 60
        while not file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(file.read_text())["address"]
        for i in (0, 1):
            procs.append(subprocess.Popen(_dask("worker", address, "--nthreads", "1", "--memory-limit", "3GiB",
                                                "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"),
                                          env=env, stdout=logs[i + 1], stderr=subprocess.STDOUT))
        yield address
    finally:
        try:   # scheduler and workers close at once (a terminated worker waits for its Nanny's timeouts)
            from distributed import Client

            with Client(address, timeout=10) as c:
                c.shutdown()
        except Exception:
            pass
        for p in procs[::-1]:
            p.terminate()
        for p in procs[::-1]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()


def test_worker_memory_is_bounded_by_the_chunk_not_the_volume(external_cluster, tmp_path):
    """A time-lapse three times the memory budget: after a warm-up (model loaded, windows predicted), no
    worker's peak resident memory grows by the budget, while holding its share of the volume (half of
    it) would exceed the budget: a worker that read the volume, or kept its results, fails."""
    from distributed import Client

    model_dir = tmp_path / "m2d"
    cc.CARE(cc.care_config("YX", quick=True, unet_filters=4, seed=4), model_dir).save()   # a cheap network
    T, Y, X = 24, 1024, 1024
    volume = np.random.default_rng(0).random((T, Y, X), dtype=np.float32) * 100
    budget = 32 * 2**20   # measured growth: 7-16 MiB (allocator and zarr buffers); reading the volume: 100+ MiB
    assert volume.nbytes >= 3 * budget and volume.nbytes / 2 > budget   # so is each worker's half of it
    src = cc.write_ngff(tmp_path / "big.ome.zarr", volume, axes="TYX", chunks={"Y": 512, "X": 512})
    warm = cc.write_ngff(tmp_path / "warm.ome.zarr", volume[:2], axes="TYX", chunks={"Y": 512, "X": 512})
    client = Client(external_cluster, timeout=60)
    try:
        client.wait_for_workers(2, timeout=120)
        kw = dict(chunks=(512, 512), scheduler=client, memory_budget=64 * 2**20)
        cc.predict_chunked(model_dir, warm, tmp_path / "warm_out.ome.zarr", **kw)
        pids = client.run(os.getpid)
        before = client.run(worker_peak_memory)
        r = cc.predict_chunked(model_dir, src, tmp_path / "out.ome.zarr", **kw)
        after = client.run(worker_peak_memory)
        assert client.run(os.getpid) == pids, "a worker was restarted"
    finally:
        client.close()
    growth = {w: after[w] - before[w] for w in after}
    print(f"peak memory growth per worker (MiB): {[round(g / 2**20, 1) for g in growth.values()]}, "
          f"budget {budget / 2**20} MiB, volume {volume.nbytes / 2**20} MiB, peaks {[a / 2**20 for a in after.values()]}")
    assert len(set(r.workers)) == 2 and r.computed == T * 4
    assert max(growth.values()) < budget, (growth, budget, volume.nbytes)
    model = cc.load_model(model_dir)
    out = cc.read_image(tmp_path / "out.ome.zarr", mmap=True).data
    for t in (0, T // 2, T - 1):
        _close(np.asarray(out[t]), model.predict(volume[t], axes="YX"))

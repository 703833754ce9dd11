"""Chunked prediction over Dask against in-memory prediction, with 1 and 2 workers.

    python benchmarks/bench_scale.py            # (make bench-scale) a 64x512x512 volume, minutes on 2 cores
    python benchmarks/bench_scale.py --quick    # a smoke run (a 16x128x128 volume)

On one volume (a simulated noisy nuclei stack stored as OME-Zarr) and one 3D network (the 16-filter
network of a 3-minute budget where 3D trains in bfloat16, set explicitly so that runs on every CPU
compare; untrained: speed does not depend on the weights), prints

- in-memory ``CARE.predict`` (tiled from its 1 GiB budget): seconds and voxels per second, and the
  process's peak resident memory above its memory before the prediction (model loaded, traced);
- chunked ``carecore.predict_chunked`` on a ``LocalCluster`` of 1 and of 2 worker processes (one thread
  each): the cluster's start and the models' loading (the first, small run) apart from the restoration
  itself; seconds, voxels per second, the speed-up of 2 workers over 1, the overhead against in-memory
  prediction ``(chunked - in-memory) / in-memory``, the halo overhead (voxels the network sees per output
  voxel) and each worker's peak resident memory;
- that the chunked result equals the in-memory one (largest difference, in units of the range).

Throughput grows with workers while each has cores of its own: a worker runs the network with
TensorFlow's own threads, so on a machine with C cores, W workers share them, and the speed-up stops
near C / (cores one worker keeps busy) — on 2 cores near 1x; on a cluster it grows with machines until
the storage (reading windows, writing blocks) or the scheduler (a few ms per task: keep blocks large)
limits it. Machines are noisy: compare the ratios of one run.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _rss():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a small volume: a smoke run")
    p.add_argument("--workers", default="1,2", help="worker counts to time, e.g. 1,2")
    args = p.parse_args(argv)
    import carecore as cc
    from distributed import Client

    shape, chunks = ((16, 128, 128), (16, 64, 64)) if args.quick else ((64, 512, 512), (64, 256, 256))
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        tmp = Path(tmp)
        model_dir = tmp / "model"
        cc.CARE(cc.care_config("ZYX", time_limit=180, seed=0, unet_filters=16), model_dir).save()
        clean, _ = cc.nuclei_volume(shape, seed=0)
        noisy, _ = cc.simulate_photon_noise(clean, 10, seed=0)
        noisy = noisy.astype(np.float32)
        src = cc.write_image(tmp / "in.ome.zarr", noisy, axes="ZYX")
        small = cc.write_image(tmp / "small.ome.zarr", noisy[: chunks[0]], axes="ZYX")   # a slab of blocks
        model = cc.load_model(model_dir)
        model.predict(noisy[: chunks[0], : chunks[1], : chunks[2]], axes="ZYX")   # traced once
        before = _rss()
        t = time.perf_counter()
        ref = model.predict(noisy, axes="ZYX")
        t_mem = time.perf_counter() - t
        mem_growth = _rss() - before
        n = noisy.size
        print(f"volume {shape} ({noisy.nbytes / 2**20:.0f} MiB), blocks {chunks}, network "
              f"{model.count_params()} parameters")
        print(f"in-memory: {t_mem:.2f} s, {n / t_mem / 1e6:.2f} Mvoxel/s, peak memory +{mem_growth / 2**20:.0f} MiB")
        halo = int(np.max(model._halo()))
        from carecore.prediction.distributed import local_cluster, worker_peak_memory

        times = {}
        for w in [int(v) for v in args.workers.split(",")]:
            t = time.perf_counter()
            cluster = local_cluster(w)
            client = Client(cluster)
            try:
                cc.predict_chunked(model_dir, small, tmp / f"warm{w}.ome.zarr", chunks=chunks, scheduler=client)
                t_start = time.perf_counter() - t
                t = time.perf_counter()
                r = cc.predict_chunked(model_dir, src, tmp / f"out{w}.ome.zarr", chunks=chunks, scheduler=client)
                times[w] = time.perf_counter() - t
                peaks = sorted(v / 2**20 for v in client.run(worker_peak_memory).values())
            finally:
                client.close()
                cluster.close()
            out = cc.read_image(tmp / f"out{w}.ome.zarr").data
            diff = float(np.abs(out - ref).max() / np.abs(ref).max())
            print(f"{w} worker(s): start + model load {t_start:.1f} s; {times[w]:.2f} s for {r.blocks} blocks, "
                  f"{n / times[w] / 1e6:.2f} Mvoxel/s; overhead vs in-memory {(times[w] - t_mem) / t_mem:+.2f}; "
                  f"worker peak memory {', '.join(f'{v:.0f}' for v in peaks)} MiB; max |chunked - in-memory| "
                  f"{diff:.1e} of the range")
        vox = np.prod([min(c + 2 * -(-halo // 4) * 4, s) for c, s in zip(chunks, shape)]) / np.prod(chunks)
        print(f"halo overhead: the network sees {vox:.2f} voxels per output voxel (halo {halo})")
        if 1 in times and 2 in times:
            print(f"ratio 2 workers / 1 worker throughput: {times[1] / times[2]:.2f}x")
        print(f"ratio chunked (best) / in-memory time: {min(times.values()) / t_mem:.2f}")


if __name__ == "__main__":
    main()

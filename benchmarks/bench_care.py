"""carecore against CSBDeep, in one run, on the same simulated data and the same network.

    python benchmarks/bench_care.py            # (make bench) about 15 minutes on a 2-core CPU
    python benchmarks/bench_care.py --quick    # a smoke run (minutes)

Prints, for both: seconds per training step (batch 16 of 16×64×64 voxels, default 3D network),
voxels per second in prediction of a 64×256×256 volume untiled and tiled, peak memory of each
prediction (resident set of a fresh process, and its rise above the loaded model), the 2D network on a
1024×1024 image, and SSIM (paper protocol) of each library's trained model on a held-out volume;
then the ratios. Precision: carecore's default is mixed bfloat16; the same trained weights are also
run in float32 and through CSBDeep's weights, so its effect on SSIM is measured on identical weights.

Every measurement that needs its own peak memory runs in a fresh subprocess. Machines are noisy:
compare the ratios of one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
BIG = (64, 256, 256)


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


# ---------------------------------------------------------------- data
def make_data(work, quick):
    import carecore as cc

    work.mkdir(parents=True, exist_ok=True)
    pairs = []
    n = 2 if quick else 4
    for s in range(n):
        clean, _ = cc.nuclei_volume((32, 128, 128), seed=s)
        noisy, _ = cc.simulate_photon_noise(clean, 5, background=2, read_noise=1, seed=100 + s)
        pairs.append((noisy, clean))
    ps = cc.create_patches(pairs, (16, 64, 64), axes="ZYX", n_patches_per_image=64, validation_fraction=0.1, seed=0)
    ps.save(work / "patches")
    clean, _ = cc.nuclei_volume(BIG, seed=99)
    noisy, _ = cc.simulate_photon_noise(clean, 5, background=2, read_noise=1, seed=199)
    np.save(work / "test_low.npy", noisy)
    np.save(work / "test_gt.npy", clean)


# ---------------------------------------------------------------- workers (each in a fresh process)
def worker_train(args):
    import carecore as cc

    ps = cc.load_patches(Path(args.work) / "patches", mmap=False)
    (X, Y), (Xv, Yv) = ps.train, ps.val
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, len(X), 16) for _ in range(args.timing_steps + 2)]
    out = {}
    if args.impl == "carecore":
        cfg = cc.care_config("ZYX", epochs=args.epochs, steps_per_epoch=args.steps, precision=args.precision)
        model = cc.CARE(cfg, Path(args.work) / f"model_carecore_{args.precision}")
        model._compile(cfg.learning_rate)
        km = model.keras_model
    else:
        from csbdeep.models import CARE, Config

        conf = Config("ZYX", n_channel_in=1, n_channel_out=1, train_batch_size=16, train_epochs=args.epochs,
                      train_steps_per_epoch=args.steps, train_tensorboard=False)
        model = CARE(conf, "model_csbdeep", basedir=args.work)
        model.prepare_for_training()
        km = model.keras_model
    times = []
    for i, idx in enumerate(batches):
        t = time.perf_counter()
        km.train_on_batch(X[idx], Y[idx])
        if i >= 2:
            times.append(time.perf_counter() - t)
    out["step_s"] = float(np.median(times))
    # now each library's own training loop, from scratch on the same patches
    t = time.perf_counter()
    if args.impl == "carecore":
        model = cc.CARE(cfg, Path(args.work) / f"model_carecore_{args.precision}")
        model.train(ps)
    else:
        model = CARE(conf, "model_csbdeep", basedir=args.work)
        model.train(np.asarray(X), np.asarray(Y), validation_data=(np.asarray(Xv), np.asarray(Yv)))
    out["train_loop_s"] = time.perf_counter() - t
    out["loop_step_s"] = out["train_loop_s"] / (args.epochs * args.steps)
    print(json.dumps(out))


def worker_predict(args):
    import carecore as cc

    work = Path(args.work)
    low = np.load(work / "test_low.npy")
    gt = np.load(work / "test_gt.npy")
    tiles = None if args.tiles == "auto" else tuple(int(v) for v in args.tiles.split(","))
    if args.impl == "carecore":
        src = work / f"model_carecore_{args.weights_from}"
        if args.weights_from == "csbdeep":
            model = cc.CARE(cc.care_config("ZYX", precision=args.precision))
            from csbdeep.models import CARE

            model.keras_model.set_weights(CARE(None, "model_csbdeep", basedir=str(work)).keras_model.get_weights())
        else:
            model = cc.load_model(src)
            if model.config.precision != args.precision:
                m2 = cc.CARE(model.config.replace(precision=args.precision))
                m2.keras_model.set_weights(model.keras_model.get_weights())
                model = m2
        run = lambda x, n: model.predict(x, axes="ZYX", n_tiles=n or "auto")  # noqa: E731
    else:
        from csbdeep.models import CARE

        model = CARE(None, "model_csbdeep", basedir=str(work))
        run = lambda x, n: model.predict(x, "ZYX", n_tiles=n)  # noqa: E731
    base = current_rss_gib()
    run(low, tiles)  # warm-up on the same shape (graph tracing, kernel set-up): not timed
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        pred = run(low, tiles)
        times.append(time.perf_counter() - t)
    m = cc.evaluate(pred, gt, axes="ZYX")
    out = {"s": float(np.median(times)), "vox_per_s": float(low.size / np.median(times)), "peak_gib": rss_gib(),
           "rise_gib": rss_gib() - base, "ssim": m["ssim"], "nrmse": m["nrmse"]}
    if args.impl == "carecore" and tiles is None:
        out["tiles"] = list(model.tile_plan(low.shape).n_tiles)
    print(json.dumps(out))


def worker_predict2d(args):
    x = np.random.default_rng(0).random((1024, 1024)).astype(np.float32)
    if args.impl == "carecore":
        import carecore as cc

        model = cc.CARE(cc.care_config("YX", precision=args.precision))
        run = lambda: model.predict(x, axes="YX", n_tiles=(1, 1))  # noqa: E731
    else:
        from csbdeep.models import CARE, Config

        model = CARE(Config("YX", n_channel_in=1, n_channel_out=1), "m2d", basedir=args.work)
        run = lambda: model.predict(x, "YX")  # noqa: E731
    run()  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    print(json.dumps({"s": float(np.median(times)), "peak_gib": rss_gib()}))


def call(*argv):
    r = subprocess.run([sys.executable, __file__, *map(str, argv)], capture_output=True, text=True)
    if r.returncode:
        print(r.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"worker {argv[:3]} failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--work", default=str(HERE / "results" / "work"))
    p.add_argument("worker", nargs="?")
    p.add_argument("--impl")
    p.add_argument("--tiles", default="auto")
    p.add_argument("--precision", default="mixed_bfloat16")
    p.add_argument("--weights-from", default="mixed_bfloat16")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--timing-steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    if args.worker:
        {"train": worker_train, "predict": worker_predict, "predict2d": worker_predict2d}[args.worker](args)
        return
    work = Path(args.work)
    ep, st, ts, rep = (2, 5, 3, 1) if args.quick else (args.epochs, args.steps, args.timing_steps, args.repeats)
    print(f"data: {'quick' if args.quick else 'full'} run in {work}", flush=True)
    make_data(work, args.quick)
    R = {}
    common = ["--work", work, "--epochs", ep, "--steps", st, "--timing-steps", ts, "--repeats", rep]
    for impl in ("csbdeep", "carecore"):
        print(f"training {impl} ({ep}×{st} steps) ...", flush=True)
        R[f"train_{impl}"] = call("train", "--impl", impl, *common)
    print("carecore float32 training step ...", flush=True)
    R["train_carecore_f32"] = call("train", "--impl", "carecore", "--precision", "float32", *common[:2],
                                   "--epochs", 1, "--steps", 1, "--timing-steps", ts)
    cases = [("csbdeep", "1,1,1", {}), ("csbdeep", "1,4,4", {}),
             ("carecore", "1,1,1", {}), ("carecore", "auto", {}),
             ("carecore", "1,1,1", {"--precision": "float32"}),
             ("carecore", "1,1,1", {"--weights-from": "csbdeep"})]
    for impl, tiles, extra in cases:
        key = f"predict_{impl}_{tiles}" + "".join(f"_{v}" for v in extra.values())
        print(f"predicting {key} ...", flush=True)
        R[key] = call("predict", "--impl", impl, "--tiles", tiles, *[a for kv in extra.items() for a in kv], *common)
    for impl in ("csbdeep", "carecore"):
        R[f"predict2d_{impl}"] = call("predict2d", "--impl", impl, *common)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bench_care.json").write_text(json.dumps(R, indent=1))
    report(R)


def report(R):
    tc, tr = R["train_csbdeep"], R["train_carecore"]
    vox = 16 * 16 * 64 * 64
    print("\n== training (default 3D network, batch 16 × 16×64×64) ==")
    print(f"{'':28s}{'s/step':>9s}{'Mvox/s':>9s}{'own loop s/step':>17s}")
    f32 = dict(R["train_carecore_f32"], loop_step_s=float("nan"))  # its loop ran one step: set-up only
    for name, r in (("CSBDeep 0.8.2 (float32)", tc), ("carecore (bfloat16)", tr), ("carecore (float32)", f32)):
        print(f"{name:28s}{r['step_s']:9.2f}{vox / r['step_s'] / 1e6:9.2f}{r.get('loop_step_s', float('nan')):17.2f}")
    print(f"speed-up carecore / CSBDeep: {tc['step_s'] / tr['step_s']:.2f}x per step, "
          f"{tc['loop_step_s'] / tr['loop_step_s']:.2f}x in their own training loops")
    print("\n== prediction, 64×256×256 ==")
    print(f"{'':40s}{'s':>7s}{'Mvox/s':>8s}{'peak GiB':>9s}{'rise GiB':>9s}{'SSIM':>8s}")
    for k, r in R.items():
        if k.startswith("predict_"):
            extra = f"  tiles {r['tiles']}" if "tiles" in r else ""
            print(f"{k[8:]:40s}{r['s']:7.2f}{r['vox_per_s'] / 1e6:8.2f}{r['peak_gib']:9.2f}{r['rise_gib']:9.2f}{r['ssim']:8.4f}{extra}")
    pc, pr = R["predict_csbdeep_1,1,1"], R["predict_carecore_1,1,1"]
    print(f"speed-up untiled: {pc['s'] / pr['s']:.2f}x; carecore auto-tiled vs its untiled: "
          f"{R['predict_carecore_auto']['s'] / pr['s']:.2f}x the time; vs CSBDeep 1×4×4: "
          f"{R['predict_csbdeep_1,4,4']['s'] / R['predict_carecore_auto']['s']:.2f}x faster")
    same = R["predict_carecore_1,1,1_csbdeep"]
    print(f"same (CSBDeep-trained) weights: SSIM CSBDeep {pc['ssim']:.4f} vs carecore bf16 {same['ssim']:.4f} "
          f"(diff {same['ssim'] - pc['ssim']:+.4f}); carecore weights bf16 {pr['ssim']:.4f} vs float32 "
          f"{R['predict_carecore_1,1,1_float32']['ssim']:.4f}")
    print(f"trained for the same steps: SSIM CSBDeep {pc['ssim']:.4f}, carecore {pr['ssim']:.4f}")
    a, b = R["predict2d_csbdeep"], R["predict2d_carecore"]
    print(f"\n== 2D network, 1024×1024: CSBDeep {a['s']:.2f} s, carecore {b['s']:.2f} s ({a['s'] / b['s']:.2f}x)")


if __name__ == "__main__":
    main()

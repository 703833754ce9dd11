"""Quality per minute: carecore trained for a wall-clock budget against classical filters tuned on
the ground truth, on simulated and real images, in one run on one machine.

    python benchmarks/bench_quality.py                     # every case, 3-minute budget (~25 min on 2 cores)
    python benchmarks/bench_quality.py --budget 60 --cases demo3d bpae_actin_5
    python benchmarks/bench_quality.py --peers csbdeep     # also CSBDeep (pip install csbdeep==0.8.2) for
                                                           # the same budget and 10x it, on the same patches

Cases (the recipe was tuned on the demo's simulated nuclei; the others were not looked at before):

- ``demo3d``, ``demo2d``, ``upsampling``: the embedded demo data (train folders / test volume);
- ``bpae_<channel>_<photons>``: a real BPAE channel (../shared/data) degraded with the photon-budget
  simulator at that light dose; trained on its top 60 %, tested on its bottom 35 % (no training
  patch touches it);
- ``embryo_<photons>``: the real Arabidopsis embryo, likewise, split along X.

For each case: the input, every classical baseline tuned over its grid on the *test* image with its
ground truth (each metric at the filter's best parameters: an advantage CARE does not get), and
carecore after ``--budget`` seconds of training (``CARE.train(time_limit=...)``, everything in the
budget but building the network and measuring the validation baseline). Printed as a table with
the margins, and the validation-SSIM curves against the training clock are drawn into
``benchmarks/quality_per_minute.png`` with each case's best filter (on the validation patches) as a
dashed line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
ALL_CASES = ["demo3d", "demo2d", "upsampling", "bpae_actin_5", "bpae_mito_20", "bpae_nuclei_5", "embryo_10"]


def _demo(task, root):
    import carecore as cc

    d = root / task
    if not d.exists():
        cc.write_demo_data(root, tasks=[task])
    axes = "YX" if task == "denoising2d" else "ZYX"
    return {"train": cc.find_pairs(d / "train" / "low", d / "train" / "high"), "axes": axes,
            "test": (cc.read_image(d / "test" / "low" / "sample00.tif").data,
                     cc.read_image(d / "test" / "high" / "sample00.tif").data),
            "kind": "upsampling" if task == "upsampling" else "care"}


def _real(name, photons):
    """A real image degraded at ``photons``, split into a training and a test part with a gap."""
    import carecore as cc

    if name == "embryo":
        clean = cc.read_image(SHARED / "morpholibj_arabidopsis_embryo_106x112x109.tif").data.astype(np.float32)
        axes, axis = "ZYX", 2
    else:
        clean = cc.read_image(SHARED / f"bian_BPAE_{name}_680x1100.tif").data.astype(np.float32)
        axes, axis = "YX", 0
    low, _ = cc.simulate_photon_noise(clean, photons, background=1.0, read_noise=1.0, seed=7)
    n = clean.shape[axis]
    cut, start = int(0.6 * n), int(0.65 * n)
    take = lambda a, s: np.take(a, np.arange(s.start, s.stop), axis=axis)  # noqa: E731
    return {"train": [(take(low, slice(0, cut)), take(clean, slice(0, cut)))], "axes": axes,
            "test": (take(low, slice(start, n)), take(clean, slice(start, n))), "kind": "care"}


def load_case(case, root):
    if case == "demo3d":
        return _demo("denoising3d", root)
    if case == "demo2d":
        return _demo("denoising2d", root)
    if case == "upsampling":
        return _demo("upsampling", root)
    name, photons = case.rsplit("_", 1)
    return _real(name.replace("bpae_", ""), float(photons))


def run_case(case, budget, root):
    import carecore as cc
    from carecore.baselines import best_baseline, tune_baselines

    data = load_case(case, root)
    axes = data["axes"]
    extra = {"kind": "upsampling", "upsampling_factor": 4.0} if data["kind"] == "upsampling" else {}
    config = cc.care_config(axes, time_limit=budget, **extra)
    patches = cc.create_patches(data["train"], config.patch_size, axes=axes, n_patches_per_image=256, seed=0)
    model = cc.create_model(config)
    events = []
    t = time.perf_counter()
    result = model.train(patches, callback=lambda e: events.append(e) if e["kind"] != "batch" else None)
    wall = time.perf_counter() - t
    low, truth = data["test"]
    x = model.on_output_grid(low, axes=axes)
    care = cc.evaluate(model.predict(low, axes=axes), truth, axes=axes)
    tuned = tune_baselines([(x, truth)], axes=axes)
    by_ssim, by_nrmse = best_baseline(tuned)
    line = next((e for e in events if e["kind"] == "baseline"), None)
    return {"case": case, "budget": budget, "wall_s": wall, "train_s": result.seconds, "status": result.status,
            "epochs": result.epochs, "input": cc.evaluate(x, truth, axes=axes), "care": care,
            "baselines": {n: {"ssim": b.ssim, "nrmse": b.nrmse, "params": b.params, "params_nrmse": b.params_nrmse}
                          for n, b in tuned.items()},
            "best_ssim": [by_ssim.name, by_ssim.params, by_ssim.ssim],
            "best_nrmse": [by_nrmse.name, by_nrmse.params_nrmse, by_nrmse.nrmse],
            "curve": [(e["elapsed"], e["val_ssim"]) for e in events if e["kind"] == "epoch"],
            "val_baseline": line and [line["name"], line["params"], line["val_ssim"]]}


def run_csbdeep(case, budget, root):
    """CSBDeep 0.8.2's CARE (its defaults, its own training loop) on the same patches for ``budget`` seconds."""
    import carecore as cc
    from csbdeep.models import CARE as CsbCARE, Config

    data = load_case(case, root)
    axes = data["axes"]
    patch = (16, 64, 64) if axes == "ZYX" else (128, 128)
    ps = cc.create_patches(data["train"], patch, axes=axes, n_patches_per_image=256, seed=0)
    (X, Y), (Xv, Yv) = ps.train, ps.val
    import tensorflow as tf

    class Budget(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if time.perf_counter() - self.t0 > budget:
                self.model.stop_training = True

    conf = Config(axes + "C", n_channel_in=1, n_channel_out=1, train_epochs=1000, train_steps_per_epoch=20)
    model = CsbCARE(conf, f"csb_{case}", basedir=str(root / "csbdeep"))
    t = time.perf_counter()
    model.prepare_for_training()
    model.callbacks.append(Budget())
    model.keras_model.fit(np.asarray(X), np.asarray(Y), validation_data=(np.asarray(Xv), np.asarray(Yv)),
                          batch_size=conf.train_batch_size, epochs=1000, steps_per_epoch=20,
                          callbacks=model.callbacks, verbose=0)
    wall = time.perf_counter() - t
    low, truth = data["test"]
    pred = model.predict(low, axes)
    return {"case": case, "budget": budget, "wall_s": wall, "csbdeep": cc.evaluate(pred, truth, axes=axes)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=180.0, help="training budget in seconds (default 180)")
    p.add_argument("--cases", nargs="+", default=ALL_CASES, help=f"cases (default: {' '.join(ALL_CASES)})")
    p.add_argument("--peers", nargs="*", default=[], choices=["csbdeep"], help="peer libraries to run too")
    p.add_argument("--work", default=str(HERE / "work"), help="folder for demo data and peer models")
    p.add_argument("--json", default=str(HERE / "quality_per_minute.json"))
    args = p.parse_args(argv)
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in args.cases:
        if case.startswith(("bpae", "embryo")) and not SHARED.exists():
            print(f"{case}: skipped, {SHARED} is not here", file=sys.stderr)
            continue
        r = run_case(case, args.budget, root)
        for peer in args.peers:
            for factor in (1, 10):
                r[f"{peer}_x{factor}"] = run_csbdeep(case, args.budget * factor, root)
        rows.append(r)
        bs, bn = r["best_ssim"], r["best_nrmse"]
        print(f"{case:15s} input SSIM {r['input']['ssim']:.3f} NRMSE {r['input']['nrmse']:.4f} | best filter "
              f"SSIM {bs[2]:.3f} ({bs[0]} {bs[1]}) NRMSE {bn[2]:.4f} ({bn[0]} {bn[1]}) | CARE {args.budget:.0f} s: SSIM "
              f"{r['care']['ssim']:.3f} NRMSE {r['care']['nrmse']:.4f} | margin SSIM {r['care']['ssim'] - bs[2]:+.3f} "
              f"NRMSE {bn[2] - r['care']['nrmse']:+.4f} | wall {r['wall_s']:.0f} s", flush=True)
        for peer in args.peers:
            for factor in (1, 10):
                q = r[f"{peer}_x{factor}"]
                print(f"{'':15s} {peer} {factor * args.budget:.0f} s: SSIM {q['csbdeep']['ssim']:.3f} NRMSE "
                      f"{q['csbdeep']['nrmse']:.4f}", flush=True)
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    wins = sum(r["care"]["ssim"] > r["best_ssim"][2] and r["care"]["nrmse"] < r["best_nrmse"][2] for r in rows)
    print(f"CARE beats the best tuned filter in both SSIM and NRMSE on {wins} of {len(rows)} cases "
          f"after {args.budget:.0f} s of training")
    _plot(rows, HERE / "quality_per_minute.png")
    return 0


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(rows):
        c = f"C{i}"
        if r["curve"]:
            t, s = zip(*r["curve"])
            ax.plot(t, s, "o-", ms=3, color=c, label=r["case"])
        if r["val_baseline"]:
            ax.axhline(r["val_baseline"][2], color=c, ls="--", lw=1)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation SSIM (held-out blocks)")
    ax.set_title("CARE (solid) against the best tuned filter (dashed) on the same validation patches", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

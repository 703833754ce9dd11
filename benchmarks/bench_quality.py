"""Quality per minute: carecore trained for a wall-clock budget against classical filters tuned on
the ground truth, and against its peers CSBDeep and CAREamics, on simulated and real images, in one
run on one machine.

    python benchmarks/bench_quality.py                     # every case, 3-minute budget (~25 min on 2 cores)
    python benchmarks/bench_quality.py --budget 60 --cases demo3d bpae_actin_5
    python benchmarks/bench_quality.py --seeds 0 1 2        # three trainings per case: the spread (~80 min)
    make bench-peers                                       # also the peers (below), 1x and 10x the budget:
    python benchmarks/bench_quality.py --peers csbdeep careamics   # hours on 2 cores
    python benchmarks/bench_quality.py --cases demo3d --care-factors 1 10 --peers csbdeep careamics
    python benchmarks/bench_quality.py --cases bpae_actin_5 --config unet_depth=3 --patches fg_fraction=0

Cases (the recipe was tuned on the demo's simulated nuclei; the others were not looked at before):

- ``demo3d``, ``demo2d``, ``upsampling``: the embedded demo data (train folders / test volume);
- ``bpae_<channel>_<photons>``: a real BPAE channel (../shared/data) degraded with the photon-budget
  simulator at that light dose; trained on its left 60 % (along X), tested on its right 35 % (a
  5 % gap: no training patch touches it; the bottom part was almost all background);
- ``embryo_<photons>``: the real Arabidopsis embryo, likewise, split along X.

For each case: the input, every classical baseline tuned over its grid on the *test* image with its
ground truth (each metric at the filter's best parameters: an advantage CARE does not get), and
carecore after ``--budget`` seconds of training (``CARE.train(time_limit=...)``: everything in that
call is in the budget, the filters' validation line, the network's rebuild for its chosen input
smoothing and the choice of its output smoothing included; ``cc.create_model`` before it is not). Where
training chose an output smoothing (``output_sigma``), the row also holds the same network's test
figures without it (``care_unsmoothed``, ``care_tta_unsmoothed``).
One training of 3 minutes moves by a few hundredths of SSIM from seed to seed (``--seeds``: the patch
draws and initial weights; the noisy images and so the filters stay the same): with several seeds the
table gives each case's mean, lowest and highest result and in how many seeds CARE beats the filter.
carecore predicts the test image once (one view) and as the mean over its 8 flips and 90°
rotations (``predict(tta=True)``, the app's default; 8x the prediction work, not in the budget).

A change to carecore's recipe is measured on the same data, patches and test part with ``--config
KEY=VALUE ...`` (``care_config`` overrides) and ``--patches KEY=VALUE ...`` (``create_patches``
overrides, for every method); the JSON rows record them, and each run's whole configuration.
``--smoothing-probe`` also measures a Gaussian smoothing of carecore's output on the validation patches
and the test part (a question, not part of carecore). ``--save-predictions DIR`` writes each case's test
truth, input and carecore's predictions (one view, and 8 views when the network learned the flips) as
TIFF files to look at, one set per seed and budget.

``--care-factors 1 10`` also trains carecore for ten times the budget, from the start again (the
recipe plans for its horizon: a longer budget is another schedule, not a continuation) on the same
patches: whether it keeps improving past the budget, and how it compares with the peers at 10x.

Peers (``--peers``), each for ``--peer-factors`` times the budget (default 1 and 10), on *the same*
training and validation patches as carecore (``cc.create_patches`` with carecore's patch size), each
with its own defaults and training loop, and the test input scaled as carecore scales it (by the
training inputs' percentiles, ``input_normalization="training"``):

- ``csbdeep``: CSBDeep 0.8.2's CARE (``pip install csbdeep==0.8.2``, the [bench] extra; runs in this
  environment, Keras 3 / TensorFlow): ``CARE.train`` with its defaults (depth 2, 32 filters, MAE, Adam
  4e-4, ReduceLROnPlateau, batch 16), epochs of 20 steps (so that its per-epoch validation, learning-rate
  plateau and best-weights checkpoint happen often enough in minutes); its best weights predict.
- ``careamics``: CAREamics 0.3.5's CARE (PyTorch on the CPU) in its own environment
  ``benchmarks/.venv-careamics`` (``benchmarks/setup_careamics.sh``), run as a subprocess by
  ``benchmarks/peer_careamics.py``: patches and test input go through an .npz, the prediction comes
  back as .npy and is measured here. Its defaults, but without early stopping (CSBDeep has none, and
  carecore trains for its budget): each method trains for its whole budget.

Every curve is the validation SSIM (carecore's ``patch_ssim``: the first validation patches, the same
for all) against training seconds. carecore's clock includes its own validation; the peers' clocks
include their own per-epoch validation but not the extra forward passes that measure their curve
(taken off the clock; they run every tenth of the budget, then every 3/10 past the budget). Each
curve's "time to beat" is the first point above the best tuned filter's validation SSIM on those
patches (so it is as fine as the curve's points); the time-to-quality ratios divide a peer's time by
carecore's. Printed as a table, saved as JSON (``--json``), and drawn into
``benchmarks/quality_per_minute.png``: one colour per case, line style per method, the filter dashed.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
ALL_CASES = ["demo3d", "demo2d", "upsampling", "bpae_actin_5", "bpae_mito_20", "bpae_nuclei_5", "embryo_10"]
PEERS = ["csbdeep", "careamics"]
CAREAMICS_PYTHON = HERE / ".venv-careamics" / "bin" / "python"
CSBDEEP_STEPS_PER_EPOCH = 20


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
        axes, axis = "YX", 1
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


def run_case(case, budget, root, seed=0, tuned=None, config=None, patches=None, save=None, probe=False):
    """carecore for ``budget`` seconds (``seed``: its patch draws and initial weights), and the tuned
    filters (``tuned``: those of an earlier run on the same case, not tuned again); returns the row and
    what the peers need.

    ``config`` and ``patches`` are overrides (dicts) of ``cc.care_config`` and ``cc.create_patches``: a
    change to the recipe measured on the benchmark's data, patches and test part (``--config``,
    ``--patches``). With ``save`` (a folder) the test part's truth, input and carecore's two predictions
    are written there as TIFF files. With ``probe`` the row holds :func:`smoothing_probe`'s measures
    under ``"smoothing"``."""
    import carecore as cc
    from carecore.baselines import tune_output_baselines

    data = load_case(case, root)
    axes = data["axes"]
    # (the demo's axial PSF, as its dataset.json records it: the model's deconvolution starts use it)
    extra = {"kind": "upsampling", "upsampling_factor": 4.0, "psf_sigma": 2.0} if data["kind"] == "upsampling" else {}
    config_overrides, patch_overrides = dict(config or {}), dict(patches or {})
    config = cc.care_config(axes, **{"time_limit": budget, "seed": seed, **extra, **config_overrides})
    patches = cc.create_patches(data["train"], config.patch_size,
                                **{"axes": axes, "n_patches_per_image": 256, "seed": seed, **patch_overrides})
    model = cc.create_model(config)
    events, steps = [], [0]

    def callback(e):
        if e["kind"] == "batch":
            steps[0] += 1
        else:
            events.append(e)

    t = time.perf_counter()
    result = model.train(patches, callback=callback)
    wall = time.perf_counter() - t
    low, truth = data["test"]
    x = model.on_output_grid(low, axes=axes)
    mean = (lambda p: p[0]) if model.config.probabilistic else (lambda p: p)   # (mean, scale): the mean
    one = mean(model.predict(low, axes=axes))
    care = cc.evaluate(one, truth, axes=axes)
    # the mean over the test image's flips and rotations (predict(tta=True), the app's default)
    tta = mean(model.predict(low, axes=axes, tta=True)) if model.config.augment else None
    care_tta = None if tta is None else cc.evaluate(tta, truth, axes=axes)
    # the same network without its output smoothing (output_sigma chosen when training ended), for comparison
    sigma = model.output_sigma
    one0, tta0 = one, tta
    if sigma:
        one0 = _unsmoothed(model, lambda: mean(model.predict(low, axes=axes)))
        tta0 = None if tta is None else _unsmoothed(model, lambda: mean(model.predict(low, axes=axes, tta=True)))
    if save:
        out = Path(save)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{case}_s{seed}_{budget:g}s"
        for name, image in (("truth", truth), ("input", x), ("care", one), ("care_tta", tta)):
            if image is not None:
                cc.write_image(out / f"{stem}_{name}.tif", np.asarray(image, np.float32), axes=axes)
    # the other input scaling, for comparison: each image by its own percentiles (CSBDeep's way)
    care_own = cc.evaluate(mean(model.predict(low, axes=axes, normalization="image")), truth, axes=axes)
    # each filter on each classical start onto the output's grid (upsampling: nearest, linear, cubic interpolation)
    tuned = tuned or tune_output_baselines(model, [(low, truth)], axes=axes)
    # each filter scored on the whole test part, as CARE is (tuning reads a centred crop of a large image)
    whole = {n: {"ssim": cc.evaluate(b.apply(low, axes=axes), truth, axes=axes)["ssim"],
                 "nrmse": cc.evaluate(b.apply(low, axes=axes, for_metric="nrmse"), truth, axes=axes)["nrmse"]}
             for n, b in tuned.items()}
    by_ssim = tuned[max(whole, key=lambda n: whole[n]["ssim"])]
    by_nrmse = tuned[min(whole, key=lambda n: whole[n]["nrmse"])]
    line = next((e for e in events if e["kind"] == "baseline"), None)
    row = {"case": case, "seed": seed, "budget": budget, "config_overrides": config_overrides,
           "patch_overrides": patch_overrides, "config": model.config.to_dict(),
           "wall_s": wall, "train_s": result.seconds, "status": result.status,
           "epochs": result.epochs, "steps": steps[0], "patch_size": list(config.patch_size), "n_train": int(patches.n_train),
           "n_val": int(patches.n_val), "input": cc.evaluate(x, truth, axes=axes), "care": care, "care_tta": care_tta,
           "output_smoothing": model.run_card.get("output_smoothing"),
           "care_unsmoothed": cc.evaluate(one0, truth, axes=axes) if sigma else None,
           "care_tta_unsmoothed": cc.evaluate(tta0, truth, axes=axes) if sigma and tta0 is not None else None,
           "input_normalization": model.config.input_normalization, "care_own_percentiles": care_own,
           "budget_clock": model.run_card.get("budget_clock"),
           "restarts": model.run_card.get("restarts", []),   # a network found dead and started again
           "baselines": {n: {"ssim": whole[n]["ssim"], "nrmse": whole[n]["nrmse"], "params": b.params,
                             "params_nrmse": b.params_nrmse, "start": b.start, "start_nrmse": b.start_nrmse,
                             "tuning_ssim": b.ssim, "tuning_nrmse": b.nrmse} for n, b in tuned.items()},
           "best_ssim": [by_ssim.name, by_ssim.params, whole[by_ssim.name]["ssim"]],
           "best_nrmse": [by_nrmse.name, by_nrmse.params_nrmse, whole[by_nrmse.name]["nrmse"]],
           "curve": [(e["elapsed"], e["val_ssim"]) for e in events if e["kind"] == "epoch"],
           "val_baseline": line and [line["name"], line["params"], line["val_ssim"]]}
    # the peers' inputs: carecore's patches, and the test input on the output grid, scaled as carecore scales it
    norm = model.input_normalization(low, axes=axes)
    xn = (np.asarray(x, np.float32) - np.float32(norm.lo[0])) / np.float32(norm.hi[0] - norm.lo[0])
    (X, Y), (Xv, Yv) = patches.train, patches.val
    ctx = {"case": case, "axes": axes, "truth": truth, "test": np.asarray(xn, np.float32), "tuned": tuned,
           "X": np.asarray(X, np.float32), "Y": np.asarray(Y, np.float32),
           "Xv": np.asarray(Xv, np.float32), "Yv": np.asarray(Yv, np.float32)}
    if probe:
        row["smoothing"] = smoothing_probe(model, ctx, one0, tta0, axes)
    return row, ctx


def _unsmoothed(model, fn):
    """``fn()`` with ``model``'s output smoothing off (``output_sigma=0``) for its duration."""
    config = model.config
    model.config = config.replace(output_sigma=0.0)
    try:
        return fn()
    finally:
        model.config = config


#: output smoothings (Gaussian sigma, pixels, every spatial axis) that ``--smoothing-probe`` measures
PROBE_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def smoothing_probe(model, ctx, one, tta, axes):
    """Would a Gaussian smoothing of carecore's output, its sigma chosen on the validation patches, help
    on the test part? For each sigma in :data:`PROBE_SIGMAS`: the validation patches' SSIM (``patch_ssim``,
    one view, every validation patch) and RMSE after the same affine fit, and the test part's SSIM and
    NRMSE with one view and with 8 views (``one``, ``tta``: the network's output without carecore's own
    smoothing, ``output_sigma``). The question that led to ``output_sigma="auto"``; scipy's Gaussian here,
    carecore's borders differ."""
    import carecore as cc
    from scipy.ndimage import gaussian_filter

    from carecore.metrics import affine_fit
    from carecore.training.validation import patch_ssim

    Xv, Yv = ctx["Xv"], ctx["Yv"]
    km = model.keras_model
    pv = np.concatenate([np.asarray(km.predict_on_batch(Xv[i:i + 16]), np.float32) for i in range(0, len(Xv), 16)])
    pv = pv[..., : Yv.shape[-1]]
    nd = pv.ndim - 2
    spatial = [i for i, a in enumerate(axes) if a in "ZYX"]
    out = []
    for s in PROBE_SIGMAS:
        sv = pv if s == 0 else gaussian_filter(pv, (0,) + (s,) * nd + (0,), mode="reflect")
        a, b = affine_fit(sv.astype(np.float64), Yv.astype(np.float64))
        rmse = float(np.sqrt(np.mean((a * sv + b - Yv) ** 2)))
        sig = tuple(s if i in spatial else 0 for i in range(len(axes)))
        row = {"sigma": s, "val_ssim": patch_ssim(sv, Yv), "val_rmse": rmse}
        for key, image in (("test", one), ("test_tta", tta)):
            if image is not None:
                im = np.asarray(image, np.float32)
                row[key] = cc.evaluate(im if s == 0 else gaussian_filter(im, sig, mode="reflect"), ctx["truth"], axes=axes)
        out.append(row)
    return out


def _ssim_patches(ctx):
    from carecore.training.validation import MAX_VAL_PATCHES, SSIM_PATCHES

    # carecore's ValidationSet: the first MAX_VAL_PATCHES for the loss, the first SSIM_PATCHES of those for SSIM
    return ctx["Xv"][:MAX_VAL_PATCHES][:SSIM_PATCHES], ctx["Yv"][:MAX_VAL_PATCHES][:SSIM_PATCHES]


def _eval_schedule(budget, base):
    """(every, after): measure every tenth of carecore's budget, every 3/10 of it past that budget."""
    return base / 10.0, (base if budget > base * 1.01 else None)


def run_csbdeep(ctx, budget, base, root, tag):
    """CSBDeep 0.8.2's CARE (its defaults, its ``CARE.train``) on carecore's patches for ``budget`` seconds."""
    import carecore as cc
    import csbdeep
    import tensorflow as tf
    from carecore.training.validation import patch_ssim
    from csbdeep.models import CARE as CsbCARE, Config

    axes = ctx["axes"]
    X, Y, Xv, Yv = ctx["X"], ctx["Y"], ctx["Xv"], ctx["Yv"]
    Xs, Ys = _ssim_patches(ctx)
    every, after = _eval_schedule(budget, base)

    class Clock(tf.keras.callbacks.Callback):
        """Stops after ``budget`` s of training; records validation SSIM, its own time off the clock."""

        def __init__(self):
            super().__init__()
            self.t0, self.paused, self.next, self.curve, self.val_loss = None, 0.0, every, [], []

        def elapsed(self):
            return time.perf_counter() - self.t0 - self.paused

        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs and "val_loss" in logs:
                self.val_loss.append((self.elapsed(), float(logs["val_loss"])))

        def measure(self):
            t = time.perf_counter()
            pred = np.asarray(self.model.predict_on_batch(Xs), np.float32)[..., : Ys.shape[-1]]
            e = self.elapsed()
            self.curve.append((e, patch_ssim(pred, Ys)))
            self.paused += time.perf_counter() - t

        def on_train_batch_end(self, batch, logs=None):
            e = self.elapsed()
            if e >= budget:
                self.measure()
                self.model.stop_training = True
            elif e >= self.next:
                self.measure()
                while self.next <= e:
                    self.next += every * (3 if after and e >= after else 1)

    conf = Config(axes + "C", n_channel_in=1, n_channel_out=1, train_epochs=100000,
                  train_steps_per_epoch=CSBDEEP_STEPS_PER_EPOCH, train_tensorboard=False)
    name = f"csb_{ctx['case']}_{tag}"
    shutil.rmtree(root / "csbdeep" / name, ignore_errors=True)
    warnings.filterwarnings("ignore", message=".*shuffle=True. was passed")   # Keras 3 on CSBDeep's generator
    clock = Clock()
    t = time.perf_counter()
    model = CsbCARE(conf, name, basedir=str(root / "csbdeep"))
    model.prepare_for_training()
    model.callbacks.append(clock)
    log = root / "csbdeep" / f"{name}.log"
    with open(log, "w") as f, contextlib.redirect_stdout(f):   # its progress bar
        model.train(X, Y, validation_data=(Xv, Yv))             # loads its best weights at the end
    wall = time.perf_counter() - t
    t = time.perf_counter()
    pred = model.predict(ctx["test"], axes, normalizer=None)
    predict_s = time.perf_counter() - t
    return {"peer": "csbdeep", "version": csbdeep.__version__, "budget": budget, "wall_s": wall,
            "train_s": clock.elapsed(), "measure_s": clock.paused, "predict_s": predict_s,
            "steps": int(model.keras_model.optimizer.iterations.numpy()),
            "test": cc.evaluate(pred, ctx["truth"], axes=axes), "curve": clock.curve, "val_loss": clock.val_loss}


def run_careamics(ctx, budget, base, root, tag):
    """CAREamics' CARE in its own environment (benchmarks/peer_careamics.py) on carecore's patches."""
    import carecore as cc
    from carecore.training.validation import patch_ssim

    if not CAREAMICS_PYTHON.exists():
        raise RuntimeError(f"{CAREAMICS_PYTHON} is missing: run benchmarks/setup_careamics.sh (make bench-peers)")
    axes = ctx["axes"]
    Xs, Ys = _ssim_patches(ctx)
    every, after = _eval_schedule(budget, base)
    work = root / "careamics" / f"{ctx['case']}_{tag}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    np.savez(work / "in.npz", X=ctx["X"], Y=ctx["Y"], Xv=ctx["Xv"], Yv=ctx["Yv"], Xs=Xs, test=ctx["test"],
             axes=np.str_(axes))
    cmd = [str(CAREAMICS_PYTHON), str(HERE / "peer_careamics.py"), str(work / "in.npz"), str(work),
           "--budget", str(budget), "--eval-every", str(every)] + (["--eval-after", str(after)] if after else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    t = time.perf_counter()
    with open(work / "log.txt", "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=work).returncode
    wall = time.perf_counter() - t
    if rc != 0:
        tail = (work / "log.txt").read_text().splitlines()[-25:]
        raise RuntimeError(f"careamics peer failed (exit {rc}), {work / 'log.txt'}:\n" + "\n".join(tail))
    info = json.loads((work / "curve.json").read_text())
    preds = np.load(work / "val_preds.npy")
    curve = [(e, patch_ssim(preds[i][..., : Ys.shape[-1]], Ys)) for e, _, i in info["curve"]]
    pred = np.load(work / "test_pred.npy")
    (work / "in.npz").unlink()
    return {"peer": "careamics", "version": info["careamics"], "torch": info["torch"], "threads": info["threads"],
            "budget": budget, "wall_s": wall, "train_s": info["train_s"], "measure_s": info["paused_s"],
            "predict_s": info["predict_s"], "steps": info["steps"], "epochs": info["epochs"],
            "test": cc.evaluate(pred, ctx["truth"], axes=axes), "curve": curve,
            "val_loss": [(e, v) for e, v, _ in info["curve"]]}


RUNNERS = {"csbdeep": run_csbdeep, "careamics": run_careamics}


def time_to(curve, level):
    """First training time at which ``curve`` ((t, val SSIM), ...) is above ``level``; None if never."""
    if level is None:
        return None
    return next((t for t, s in curve if s is not None and np.isfinite(s) and s > level), None)


def _fmt_t(t, horizon=None):
    return f"{t:.0f} s" if t is not None else (f"not within {horizon:.0f} s" if horizon else "never")


def _after(t, horizon):
    return f"after {t:.0f} s" if t is not None else f"not within {horizon:.0f} s"


def _runs(plan):
    """(peer, factor) for every planned peer run: ``plan`` is {peer: [factors]}."""
    return [(peer, f) for peer, fs in plan.items() for f in fs]


def summarize(r, plan):
    """Times to beat the filter and to reach carecore's quality, and their ratios, into ``r["summary"]``."""
    level = r["val_baseline"][2] if r["val_baseline"] else None
    care_best = max((s for _, s in r["curve"]), default=None)
    care_t = time_to(r["curve"], level)
    s = {"val_filter_ssim": level, "carecore": {"beat_s": care_t, "best_val_ssim": care_best}}
    for key in [k for k in r if k.startswith("carecore_x")]:
        s[key] = {"beat_s": time_to(r[key]["curve"], level),
                  "best_val_ssim": max((v for _, v in r[key]["curve"]), default=None)}
    for peer, f in _runs(plan):
        q = r.get(f"{peer}_x{f:g}")
        if not q or "error" in q:
            continue
        t_beat = time_to(q["curve"], level)
        # the time to reach the validation SSIM carecore reached in its budget (just under it: >= 99.5 %)
        t_match = time_to(q["curve"], care_best * 0.995 if care_best else None)
        s[f"{peer}_x{f:g}"] = {
            "beat_s": t_beat, "beat_ratio": t_beat / care_t if t_beat and care_t else None,
            "best_val_ssim": max((v for _, v in q["curve"]), default=None),
            "reach_carecore_s": t_match, "reach_carecore_ratio": t_match / r["budget"] if t_match else None,
            "carecore_reach_peer_s": time_to(r["curve"], max((v for _, v in q["curve"]), default=None) * 0.995
                                              if q["curve"] else None)}
    r["summary"] = s
    return s


def _beats(r, key="care"):
    """Whether carecore's test result ``key`` beats the best tuned filter in both SSIM and NRMSE."""
    q = r.get(key)
    return bool(q) and q["ssim"] > r["best_ssim"][2] and q["nrmse"] < r["best_nrmse"][2]


def print_spread(rows, seeds):
    """Per case over the seeds: carecore's mean, lowest and highest test SSIM and NRMSE, and its wins."""
    print(f"\nOver seeds {' '.join(map(str, seeds))} (the filters, tuned on the test image, do not depend on the seed: one value per case):")
    print(f"{'case':15s} {'best filter':>15s} {'CARE, one view: mean (min-max)':>46s} {'wins':>5s} "
          f"{'CARE, 8 views: mean (min-max)':>46s} {'wins':>5s}")
    for case in dict.fromkeys(r["case"] for r in rows):
        rs = [r for r in rows if r["case"] == case]
        cells = []
        for key in ("care", "care_tta"):
            qs = [r[key] for r in rs if r.get(key)]
            if not qs:
                cells += ["-", "-"]
                continue
            ss, ns = [q["ssim"] for q in qs], [q["nrmse"] for q in qs]
            cells += [f"SSIM {np.mean(ss):.3f} ({min(ss):.3f}-{max(ss):.3f}) NRMSE {np.mean(ns):.4f} "
                      f"({min(ns):.4f}-{max(ns):.4f})", f"{sum(_beats(r, key) for r in rs)}/{len(rs)}"]
        f = f"{rs[0]['best_ssim'][2]:.3f} / {rs[0]['best_nrmse'][2]:.4f}"
        print(f"{case:15s} {f:>15s} {cells[0]:>46s} {cells[1]:>5s} {cells[2]:>46s} {cells[3]:>5s}", flush=True)


def print_case(r, plan, seeds=False):
    bs, bn = r["best_ssim"], r["best_nrmse"]
    print(f"{r['case'] + (' s' + str(r['seed']) if seeds else ''):15s} input SSIM {r['input']['ssim']:.3f} NRMSE {r['input']['nrmse']:.4f} | best filter "
          f"SSIM {bs[2]:.3f} ({bs[0]} {bs[1]}) NRMSE {bn[2]:.4f} ({bn[0]} {bn[1]}) | CARE {r['budget']:.0f} s: SSIM "
          f"{r['care']['ssim']:.3f} NRMSE {r['care']['nrmse']:.4f} | margin SSIM {r['care']['ssim'] - bs[2]:+.3f} "
          f"NRMSE {bn[2] - r['care']['nrmse']:+.4f} | wall {r['wall_s']:.0f} s", flush=True)
    s = summarize(r, plan)
    vb = r["val_baseline"]
    if vb:
        print(f"{'':15s} validation SSIM of the best filter ({vb[0]} {vb[1]}): {vb[2]:.3f}")
    c = s["carecore"]
    print(f"{'':15s} {'carecore':9s} {r['budget']:6.0f} s: test SSIM {r['care']['ssim']:.3f} NRMSE "
          f"{r['care']['nrmse']:.4f} | best val SSIM {c['best_val_ssim'] or float('nan'):.3f} | beats the filter: "
          f"{_after(c['beat_s'], r['budget'])}" + (f" | {r['steps']} steps" if r.get("steps") else ""), flush=True)
    clock = r.get("budget_clock")
    if clock and r["train_s"] > r["budget"] + 5:  # where the seconds past the budget went
        print(f"{'':15s} {'':9s} {'':6s}   {r['train_s']:.0f} s for a {r['budget']:.0f} s budget: fit started after "
              f"{clock['fit_started']} s, its last epoch ended at {clock['last_epoch_ended']} s, it returned at "
              f"{clock['fit_returned']} s", flush=True)
    for rs in r.get("restarts") or []:
        print(f"{'':15s} {'':9s} {'':6s}   the network stopped depending on its input after epoch {rs['epoch']} "
              f"and started again from new weights (seed {rs['seed']}) with {rs['left']:.0%} of the budget left",
              flush=True)
    if r.get("care_tta"):
        t = r["care_tta"]
        print(f"{'':15s} {'':9s} {'':6s}   the mean over the test image's flips and rotations (tta=True, the app's "
              f"default): SSIM {t['ssim']:.3f} NRMSE {t['nrmse']:.4f} | margin SSIM {t['ssim'] - bs[2]:+.3f} "
              f"NRMSE {bn[2] - t['nrmse']:+.4f}", flush=True)
    if r.get("care_unsmoothed"):
        u, ut = r["care_unsmoothed"], r.get("care_tta_unsmoothed")
        print(f"{'':15s} {'':9s} {'':6s}   output smoothing σ {r['config']['output_sigma']:g} (chosen on validation); "
              f"without it: SSIM {u['ssim']:.3f} NRMSE {u['nrmse']:.4f}"
              + (f" | 8 views SSIM {ut['ssim']:.3f} NRMSE {ut['nrmse']:.4f}" if ut else ""), flush=True)
    if r.get("smoothing"):
        sm = r["smoothing"]
        by_ssim, by_rmse = max(sm, key=lambda q: q["val_ssim"]), min(sm, key=lambda q: q["val_rmse"])
        print(f"{'':15s} {'':9s} {'':6s}   output smoothing: " + " ".join(
            f"σ{q['sigma']:g} val {q['val_ssim']:.3f}/{q['val_rmse']:.4f} test {q['test']['ssim']:.3f}/"
            f"{q['test']['nrmse']:.4f}" + (f" 8v {q['test_tta']['ssim']:.3f}/{q['test_tta']['nrmse']:.4f}"
                                          if q.get("test_tta") else "") for q in sm)
              + f" | chosen on validation by SSIM σ{by_ssim['sigma']:g}, by RMSE σ{by_rmse['sigma']:g}", flush=True)
    if r.get("care_own_percentiles"):
        o = r["care_own_percentiles"]
        print(f"{'':15s} {'':9s} {'':6s}   input scaled by its own percentiles instead of the training inputs': "
              f"SSIM {o['ssim']:.3f} NRMSE {o['nrmse']:.4f}", flush=True)
    for key in [k for k in r if k.startswith("carecore_x")]:
        q, c = r[key], s[key]
        tta = f" | 8 views SSIM {q['care_tta']['ssim']:.3f} NRMSE {q['care_tta']['nrmse']:.4f}" if q.get("care_tta") else ""
        print(f"{'':15s} {'carecore':9s} {q['budget']:6.0f} s: test SSIM {q['care']['ssim']:.3f} NRMSE "
              f"{q['care']['nrmse']:.4f}{tta} | best val SSIM {c['best_val_ssim'] or float('nan'):.3f} | beats the "
              f"filter: {_after(c['beat_s'], q['budget'])} | {q['epochs']} epochs, {q.get('steps', '?')} steps, {q['status']}, wall "
              f"{q['wall_s']:.0f} s", flush=True)
    for peer, f in _runs(plan):
        q = r.get(f"{peer}_x{f:g}")
        if not q:
            continue
        if "error" in q:
            print(f"{'':15s} {peer:9s} {f * r['budget']:6.0f} s: FAILED {q['error'].splitlines()[0]}")
            continue
        p = s[f"{peer}_x{f:g}"]
        ratio = f" ({p['beat_ratio']:.1f}x carecore)" if p["beat_ratio"] else ""
        reach = (f"{p['reach_carecore_s']:.0f} s = {p['reach_carecore_ratio']:.1f}x carecore's budget"
                 if p["reach_carecore_s"] else f"not within {q['budget']:.0f} s")
        print(f"{'':15s} {peer:9s} {q['budget']:6.0f} s: test SSIM {q['test']['ssim']:.3f} NRMSE "
              f"{q['test']['nrmse']:.4f} | best val SSIM {p['best_val_ssim'] or float('nan'):.3f} | beats the "
              f"filter: {_after(p['beat_s'], q['budget'])}{ratio} | reaches 99.5 % of carecore's val SSIM: {reach} "
              f"| {q['steps']} steps, wall {q['wall_s']:.0f} s", flush=True)


#: what ``--config`` and ``--patches`` may not change: the run's own budget, seed and case
FIXED = {"--config": ("time_limit", "seed", "axes", "kind", "upsampling_factor"),
         "--patches": ("seed", "axes", "axes_high", "out", "progress", "stop")}


def _key_values(parser, flag, items):
    """``["unet_depth=3", "loss=mse"]`` -> ``{"unet_depth": 3, "loss": "mse"}`` (values in JSON, else strings)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"{flag} {item}: expected KEY=VALUE")
        if key in FIXED[flag]:
            parser.error(f"{flag} {item}: {key} is set by the benchmark itself (--budget, --seeds, --cases)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=180.0, help="training budget in seconds (default 180)")
    p.add_argument("--cases", nargs="+", default=ALL_CASES, help=f"cases (default: {' '.join(ALL_CASES)})")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="carecore's seeds (patch draws, initial weights): one training per case and seed, and "
                        "with several, each case's spread and how many seeds beat the filter (default: 0)")
    p.add_argument("--care-factors", nargs="+", type=float, default=[1.0],
                   help="carecore's budgets as multiples of --budget (each a training of its own on the same "
                        "patches; the table's carecore is the one at --budget, 1 is always run); default: 1")
    p.add_argument("--peers", nargs="*", default=[], choices=PEERS, help="peer libraries to run too")
    p.add_argument("--peer-factors", nargs="+", default=["1", "10"],
                   help="peer budgets as multiples of --budget, for every peer (10) or one (csbdeep:10); "
                        "default: 1 10")
    p.add_argument("--config", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="carecore's recipe changed for this run: care_config overrides, values in JSON, else "
                        "strings (unet_depth=3 loss=mse 'patch_size=[128,128]'); the peers train on the same "
                        "patches, so a patch_size reaches them too; not " + ", ".join(FIXED["--config"]))
    p.add_argument("--patches", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="create_patches overrides for every method (fg_fraction=0 n_patches_per_image=512); "
                        "not " + ", ".join(FIXED["--patches"]))
    p.add_argument("--save-predictions", metavar="DIR",
                   help="write each case's test truth, input and carecore's predictions there as TIFF files, "
                        "named by case, seed and budget (one DIR per recipe tried: another run overwrites them)")
    p.add_argument("--smoothing-probe", action="store_true",
                   help="also measure a Gaussian smoothing of carecore's output (sigma 0-4 px) on the validation "
                        "patches and the test part: whether one chosen on validation would help on the test")
    p.add_argument("--work", default=str(HERE / "work"), help="folder for demo data and peer models")
    p.add_argument("--json", default=str(HERE / "quality_per_minute.json"))
    p.add_argument("--png", default=str(HERE / "quality_per_minute.png"))
    args = p.parse_args(argv)
    if "csbdeep" in args.peers and importlib.util.find_spec("csbdeep") is None:
        p.error("--peers csbdeep: CSBDeep is not installed here (pip install -e '.[bench]', or make bench-peers)")
    if "careamics" in args.peers and not CAREAMICS_PYTHON.exists():
        p.error(f"--peers careamics: {CAREAMICS_PYTHON} is missing (bash benchmarks/setup_careamics.sh, "
                "or make bench-peers)")
    overrides = {"config": _key_values(p, "--config", args.config or []),
                 "patches": _key_values(p, "--patches", args.patches or [])}
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    plan = {peer: [] for peer in args.peers}
    for item in args.peer_factors:
        who, _, f = item.rpartition(":")
        if who and who not in plan:
            p.error(f"--peer-factors {item}: {who} is not among --peers")
        for peer in ([who] if who else plan):
            plan[peer].append(float(f))
    rows = []
    print(f"{os.cpu_count()} CPUs, budget {args.budget:.0f} s, peers: "
          + (", ".join(f"{k} at {' '.join(f'{f:g}x' for f in v)}" for k, v in plan.items()) or "none")
          + "".join(f", {k} overrides {v}" for k, v in overrides.items() if v), flush=True)
    for case in args.cases:
        if case.startswith(("bpae", "embryo")) and not SHARED.exists():
            print(f"{case}: skipped, {SHARED} is not here", file=sys.stderr)
            continue
        for seed in args.seeds:
            r, ctx = run_case(case, args.budget, root, seed, save=args.save_predictions,
                              probe=args.smoothing_probe, **overrides)
            for f in sorted(set(args.care_factors) - {1.0}):
                longer, _ = run_case(case, args.budget * f, root, seed, tuned=ctx["tuned"],
                                     save=args.save_predictions, **overrides)
                r[f"carecore_x{f:g}"] = {k: longer[k] for k in ("budget", "wall_s", "train_s", "status", "epochs", "steps",
                                                                  "care", "care_tta", "curve", "restarts", "config")}
            for peer, f in _runs(plan):
                tag = f"x{f:g}" + ("" if len(args.seeds) == 1 else f"_s{seed}")
                try:
                    r[f"{peer}_x{f:g}"] = RUNNERS[peer](ctx, args.budget * f, args.budget, root, tag)
                except (RuntimeError, ImportError) as e:
                    r[f"{peer}_x{f:g}"] = {"peer": peer, "budget": args.budget * f, "error": str(e)}
                    print(f"{case}: {peer} x{f:g} failed: {e}", file=sys.stderr, flush=True)
            rows.append(r)
            print_case(r, plan, seeds=len(args.seeds) > 1)
            Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    if len(args.seeds) > 1:
        print_spread(rows, args.seeds)
    for key, how in (("care", "one view"), ("care_tta", "the mean over flips and rotations")):
        wins = sum(_beats(r, key) for r in rows)
        runs = "cases" if len(args.seeds) == 1 else f"runs ({len(args.seeds)} seeds per case)"
        print(f"CARE ({how}) beats the best tuned filter in both SSIM and NRMSE in {wins} of {len(rows)} {runs} "
              f"after {args.budget:.0f} s of training")
    if args.peers:
        _print_ratios(rows, plan)
    _plot(rows, Path(args.png), plan)
    return 0


def _print_ratios(rows, plan):
    """The time-to-quality table: per case, each run's time to beat the filter / carecore's."""
    cols = [f"{p} x{f:g}" for p, f in _runs(plan)]
    print("\nTime to beat the best tuned filter (validation SSIM), and the ratio to carecore's time:")
    print(f"{'case':15s} {'carecore':>10s} " + " ".join(f"{c:>22s}" for c in cols))
    for r in rows:
        s = r["summary"]
        cells = []
        for peer, f in _runs(plan):
            p = s.get(f"{peer}_x{f:g}")
            if p is None:
                cells.append("failed")
            elif p["beat_s"] is None:
                cells.append(f"not in {f * r['budget']:.0f} s")
            else:
                cells.append(f"{p['beat_s']:.0f} s" + (f" ({p['beat_ratio']:.1f}x)" if p["beat_ratio"] else ""))
        care = s["carecore"]["beat_s"]
        print(f"{r['case']:15s} {_fmt_t(care, r['budget']) if care else 'not in ' + format(r['budget'], '.0f') + ' s':>10s} "
              + " ".join(f"{c:>22s}" for c in cells))
    print("\nTime each peer needs to reach 99.5 % of the validation SSIM carecore reached in its budget "
          "(ratio to that budget):")
    for r in rows:
        s = r["summary"]
        cells = []
        for peer, f in _runs(plan):
            p = s.get(f"{peer}_x{f:g}")
            cells.append("failed" if p is None else (f"{p['reach_carecore_s']:.0f} s ({p['reach_carecore_ratio']:.1f}x)"
                                                     if p["reach_carecore_s"] else f"not in {f * r['budget']:.0f} s"))
        print(f"{r['case']:15s} " + " ".join(f"{c:>22s}" for c in cells))


STYLES = {"carecore": ("-", "o"), "csbdeep": (":", "s"), "careamics": ("-.", "^")}


def _plot(rows, path, plan=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8, 5))
    t_min, t_max = np.inf, 0.0
    cases = list(dict.fromkeys(r["case"] for r in rows))   # one colour per case, whatever its seeds
    for r in rows:
        c = f"C{cases.index(r['case'])}"
        first = r is next(q for q in rows if q["case"] == r["case"])
        runs = [("carecore", r["curve"])] + [("carecore", r[k]["curve"]) for k in r if k.startswith("carecore_x")]
        for peer, fs in (plan or {}).items():   # each peer's longest run (shorter ones repeat its start)
            done = [r[f"{peer}_x{f:g}"] for f in sorted(fs) if "curve" in r.get(f"{peer}_x{f:g}", {})]
            if done:
                runs.append((peer, done[-1]["curve"]))
        for i, (method, curve) in enumerate(runs):
            curve = [(t, s) for t, s in curve if t > 0 and s is not None and np.isfinite(s)]
            if curve:
                t, s = zip(*curve)
                t_min, t_max = min(t_min, min(t)), max(t_max, max(t))
                ls, m = STYLES[method]
                longer = method == "carecore" and i > 0   # carecore at a multiple of the budget: lighter
                ax.plot(t, s, ls=ls, marker=m, ms=3, color=c, alpha=0.5 if longer else 1.0,
                        label=r["case"] if i == 0 and first else None)
        if r["val_baseline"] and first:   # (the first seed's: the validation patches depend on the seed)
            ax.axhline(r["val_baseline"][2], color=c, ls="--", lw=1)
    if t_max > 20 * t_min:
        ax.set_xscale("log")
    handles = ax.get_legend_handles_labels()[0]
    handles += [Line2D([], [], color="k", ls=STYLES[m][0], marker=STYLES[m][1], ms=3, label=m)
                for m in ["carecore", *(plan or {})]]
    if any(k.startswith("carecore_x") for r in rows for k in r):
        handles.insert(len(handles) - len(plan or {}), Line2D([], [], color="k", ls=STYLES["carecore"][0],
                                                              marker=STYLES["carecore"][1], ms=3, alpha=0.5,
                                                              label="carecore, longer budget"))
    handles.append(Line2D([], [], color="k", ls="--", lw=1, label="best tuned filter"))
    ax.legend(handles=handles, fontsize=7)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation SSIM (held-out blocks)")
    ax.set_title("Validation SSIM against training time on the same patches, one machine; "
                 "dashed: the best tuned filter", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

"""The bilateral filter's border: scikit-image's ``denoise_bilateral`` pads with zeros by default, which
(the slice shifted to its minimum) darkened a border as wide as the filter's window. This tunes every
filter on each benchmark case's test part (``bench_quality.load_case``: the same data and split) with the
bilateral filter as it is now (borders reflected) and as it was, and prints both against the best other
filter. One command: ``python benchmarks/bilateral_border.py [cases...]`` (default: every denoising case;
``upsampling``: each filter on each classical start onto the fine grid, as the benchmark tunes them, with
the demo's axial PSF: interpolations and their Richardson-Lucy deconvolutions along Z).
``python benchmarks/bilateral_border.py validation [cases...]``: the validation line (the Train step's dashed
best filter) on each case's validation patches, with the bilateral filter as it is now and as it was.
"""
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_quality as bq  # noqa: E402

DENOISING = ["demo3d", "demo2d", "bpae_actin_5", "bpae_mito_20", "bpae_nuclei_5", "embryo_10"]


def zero_padded_bilateral(x, sigma_color=0.1, sigma_spatial=1.0):
    """The bilateral filter before 2026-12-06: scikit-image's default padding (zeros)."""
    from skimage.restoration import denoise_bilateral

    def one(s):
        lo = s.min()
        return denoise_bilateral(s - lo, sigma_color=sigma_color, sigma_spatial=sigma_spatial) + lo

    return one(x) if x.ndim == 2 else np.stack([one(s) for s in x.reshape(-1, *x.shape[-2:])]).reshape(x.shape)


def main(cases):
    import carecore as cc
    import carecore.baselines as B
    from carecore.baselines import tune_baselines, tune_output_baselines

    root = HERE / "work" / "bilateral_border"
    rows = {}
    for case in cases:
        c = bq.load_case(case, root)
        low, truth = c["test"]
        t = time.time()
        if c["kind"] == "upsampling":   # (an untrained model: its classical starts need no weights)
            model = cc.create_model(cc.care_config(c["axes"], kind="upsampling", upsampling_factor=4.0, psf_sigma=2.0))
            tune = lambda **kw: tune_output_baselines(model, [(low, truth)], axes=c["axes"], **kw)  # noqa: E731
        else:
            tune = lambda **kw: tune_baselines([(low, truth)], axes=c["axes"], **kw)  # noqa: E731
        tuned = tune()
        now = B.BASELINES["bilateral"]
        B.BASELINES["bilateral"] = (zero_padded_bilateral, now[1])
        try:
            before = tune(names=["bilateral"])["bilateral"]
        finally:
            B.BASELINES["bilateral"] = now
        others = {k: v for k, v in tuned.items() if k != "bilateral"}
        best_s = max(others.values(), key=lambda v: v.ssim)
        best_n = min(others.values(), key=lambda v: v.nrmse)
        b = tuned["bilateral"]
        named = lambda v: v.label() if hasattr(v, "start") else v.name  # noqa: E731 - (and its start)
        rows[case] = {"before": [before.ssim, before.nrmse, named(before)], "now": [b.ssim, b.nrmse, named(b)],
                      "best_other": [named(best_s), best_s.ssim, named(best_n), best_n.nrmse], "seconds": time.time() - t}
        print(f"{case:14s} bilateral before {before.ssim:.3f} / {before.nrmse:.4f} ({named(before)})   now {b.ssim:.3f} / "
              f"{b.nrmse:.4f} ({named(b)})   best other: {named(best_s)} {best_s.ssim:.3f} / {named(best_n)} "
              f"{best_n.nrmse:.4f}", flush=True)
    return rows


def validation_lines(cases):
    """The validation line (the Train step's dashed best filter, ``ValidationSet.baseline``) on each case's
    validation patches as ``bench_quality`` makes them (seed 0), with the bilateral filter as it is now and
    as it was: the best filter and its validation SSIM, and the bilateral filter's own."""
    import carecore as cc
    import carecore.baselines as B
    import carecore.training.validation as validation

    root = HERE / "work" / "data"
    root.mkdir(parents=True, exist_ok=True)
    rows = {}
    for case in cases:
        c = bq.load_case(case, root)
        extra = {"kind": "upsampling", "upsampling_factor": 4.0, "psf_sigma": 2.0} if c["kind"] == "upsampling" else {}
        config = cc.care_config(c["axes"], time_limit=180, seed=0, **extra)
        patches = cc.create_patches(c["train"], config.patch_size, axes=c["axes"], n_patches_per_image=256, seed=0)
        val = validation.ValidationSet(*patches.val, cc.create_model(config))
        t = time.perf_counter()
        now = val.baseline()
        kept = B.BASELINES["bilateral"]
        B.BASELINES["bilateral"] = (zero_padded_bilateral, kept[1])
        try:
            before = val.baseline()
        finally:
            B.BASELINES["bilateral"] = kept

        def label(b):
            return f"{b['name']} {b['params']}{' on ' + b['start'] if b['start'] else ''} {b['val_ssim']:.4f}"

        rows[case] = {"before": label(before), "now": label(now), "bilateral_before": before["tuned"]["bilateral"]["val_ssim"],
                      "bilateral_now": now["tuned"]["bilateral"]["val_ssim"], "seconds": time.perf_counter() - t}
        print(f"{case:14s} line before: {label(before)} (bilateral {rows[case]['bilateral_before']:.4f})   now: "
              f"{label(now)} (bilateral {rows[case]['bilateral_now']:.4f})   {rows[case]['seconds']:.0f} s", flush=True)
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["validation"]:   # the validation lines, every case by default
        validation_lines(sys.argv[2:] or bq.ALL_CASES)
    else:
        main(sys.argv[1:] or DENOISING)

"""Isotropic restoration with noise, against the tuned classical pipelines, deconvolution included
(quality-per-minute.md, "Isotropic restoration with noise").

The real Arabidopsis embryo (``../shared/data``, 104 of its 106 slices: a multiple of the factor) is blurred
along Z (Gaussian sigma 2 px), subsampled by 4 (26 slices) and given photon noise (``--photons``, read noise
1, seed 7; 0 photons: none added, the stack as the microscope gave it, its own noise blurred along Z with it).
The isotropic model trains on the coarse stack's Y rows 0-60 % for ``--budget`` seconds (the
kind's recipe, seed 0); the test part is Y 65-100 % (no training slice touches it), scored against the
clean stack with the paper's protocol. The classical competitors are tuned on that test part's ground truth
(``tune_output_baselines``: every filter on the best of nearest, linear and cubic interpolation and the
cubic one deconvolved along Z with the axial PSF, Richardson-Lucy 5-40 iterations). The last 3 of the 104
output slices lie past the last acquired one for both. One run on this machine::

    python benchmarks/isotropic_noise.py [--photons 100 10 0] [--budget 180] [--no-match-noise]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def run(photons, budget, match_noise=True):
    import carecore as cc
    from carecore.baselines import tune_output_baselines
    from carecore.models.kinds import model_class
    from carecore.simulate.anisotropic import simulate_anisotropic

    clean = cc.read_image(SHARED / "morpholibj_arabidopsis_embryo_106x112x109.tif").data.astype(np.float32)[:104]
    coarse = simulate_anisotropic(clean, 4, axes="ZYX", axis="Z", psf_sigma=2.0, peak_photons=photons or None,
                                  read_noise=1.0 if photons else 0.0, upsample_back=False, seed=7)[0]
    n = clean.shape[1]
    cut, start = int(0.6 * n), int(0.65 * n)
    train, test, truth = coarse[:, :cut], coarse[:, start:], clean[:, start:]
    Isotropic = model_class("isotropic")
    config = Isotropic.default_config("ZYX", upsampling_factor=4.0, psf_sigma=2.0, time_limit=budget, seed=0)
    t = time.perf_counter()
    patches = Isotropic.make_patches(config, [train], axes="ZYX", match_noise=match_noise)
    model = cc.create_model(config)
    result = model.train(patches)
    train_s = time.perf_counter() - t
    restored = model.predict(test, axes="ZYX")
    assert restored.shape == truth.shape, (restored.shape, truth.shape)
    row = {"photons": photons, "budget": budget, "match_noise": match_noise, "train_s": round(train_s, 1), "status": result.status,
           "epochs": result.epochs, "care": cc.evaluate(restored, truth, axes="ZYX")}
    for how in ("linear", "cubic"):
        row[how] = cc.evaluate(model.on_output_grid(test, axes="ZYX", interpolation=how), truth, axes="ZYX")
    t = time.perf_counter()
    tuned = tune_output_baselines(model, [(test, truth)], axes="ZYX")
    row["tuning_s"] = round(time.perf_counter() - t, 1)
    row["filters"] = {}
    for name, b in tuned.items():   # (scored on the whole test part, as CARE)
        row["filters"][name] = {"ssim": cc.evaluate(b.apply(test, axes="ZYX"), truth, axes="ZYX")["ssim"],
                                "nrmse": cc.evaluate(b.apply(test, axes="ZYX", for_metric="nrmse"), truth,
                                                     axes="ZYX")["nrmse"],
                                "ssim_label": b.label(), "nrmse_label": b.label("nrmse")}
    best_s = max(row["filters"].values(), key=lambda f: f["ssim"])
    best_n = min(row["filters"].values(), key=lambda f: f["nrmse"])
    print(f"{photons:g} photons, {budget:g} s ({result.status}, {result.epochs} epochs, {train_s:.0f} s with the "
          f"patches): CARE {row['care']['ssim']:.4f} / {row['care']['nrmse']:.4f}; cubic {row['cubic']['ssim']:.4f} / "
          f"{row['cubic']['nrmse']:.4f}; best filter {best_s['ssim']:.4f} ({best_s['ssim_label']}) / "
          f"{best_n['nrmse']:.4f} ({best_n['nrmse_label']}); tuning {row['tuning_s']:.0f} s", flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photons", type=float, nargs="+", default=[10.0, 100.0, 0.0], help="peak photons (0: no noise added)")
    p.add_argument("--budget", type=float, default=180.0, help="seconds of training (default: 180)")
    p.add_argument("--no-match-noise", action="store_true", help="train without the stack's noise given back "
                                                                   "(make_patches(match_noise=False): before 2026-12-06)")
    p.add_argument("--out", default=str(HERE / "work" / "isotropic_noise.json"))
    args = p.parse_args(argv)
    rows = [run(ph, args.budget, not args.no_match_noise) for ph in args.photons]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

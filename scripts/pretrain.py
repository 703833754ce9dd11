"""Pretrain a 3D denoising network on the project's own simulations, to fine-tune from (``init_weights``).

    python scripts/pretrain.py --out models/pretrained3d      # ~25 min on 2 CPU cores with 16 filters
    python benchmarks/bench_quality.py --cases embryo_10 --config init_weights=models/pretrained3d

The training pairs are simulator output only (no real image: the benchmark's real cases stay
unseen): nuclei volumes and cell-wall surface stacks in turn, each at a light dose drawn between 1.4
and 90 photons peak, with the photon-budget simulator's background and read noise. The network is
the one a 3D denoising budget of up to 30 minutes builds where 3D trains in float32
(``care_config("ZYX", time_limit=180, precision="float32")``: 8 filters (16 before 2026-12-02),
depth 2, patches of 8×32×32, batches of 4), trained for a fixed number of steps (the same weights on
any machine, given the seed and the same TensorFlow) with that recipe's schedule. The folder is an
ordinary model folder whose run card says how it was made (its optimizer's state is left out).
Measured: benchmarks/quality-per-minute.md, "A pretrained start, tried" (not reliable enough yet to
ship such a network or start from it by default).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import carecore as cc  # noqa: E402
from carecore.simulate.samples import nuclei_volume, surface_stack  # noqa: E402

DOSES = (2, 4, 8, 16, 32, 64)


def simulated_pairs(n_volumes=12, seed=123):
    """``[(low, high), ...]`` ZYX: nuclei and cell-wall surfaces in turn, each at its own light dose."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n_volumes):
        if i % 2 == 0:
            high, _ = nuclei_volume((32, 128, 128), seed=int(rng.integers(2**31)))
        else:
            high, _, _ = surface_stack((24, 128, 128), cell_size=float(rng.uniform(6, 16)),
                                       thickness=float(rng.uniform(1, 2.5)), seed=int(rng.integers(2**31)))
        high = (high / high.max()).astype(np.float32)
        dose = DOSES[i % len(DOSES)] * float(rng.uniform(0.7, 1.4))
        low, _ = cc.simulate_photon_noise(high, dose, background=1.0, read_noise=1.0, seed=int(rng.integers(2**31)))
        pairs.append((low.astype(np.float32), high))
    return pairs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--steps", type=int, default=4000, help="training steps (default 4000)")
    p.add_argument("--epochs", type=int, default=10, help="validations (default 10)")
    p.add_argument("--volumes", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    pairs = simulated_pairs(args.volumes)
    recipe = cc.care_config("ZYX", time_limit=180, precision="float32")
    config = recipe.replace(time_limit=0, epochs=args.epochs, steps_per_epoch=max(1, args.steps // args.epochs),
                            seed=args.seed)
    patches = cc.create_patches(pairs, config.patch_size, axes="ZYX", n_patches_per_image=400, seed=args.seed)
    work = Path(args.out).with_name(Path(args.out).name + ".training")
    shutil.rmtree(work, ignore_errors=True)
    model = cc.create_model(config, work)

    def progress(e):
        if e["kind"] == "epoch":
            print(f"epoch {e['epoch']}/{e['epochs']}: loss {e['loss']:.4f}, validation SSIM {e['val_ssim']:.3f} "
                  f"({e['elapsed']:.0f} s)", flush=True)

    result = model.train(patches, callback=progress)
    print(result.status, result.message, f"{result.seconds:.0f} s")
    pretrained = cc.load_model(work)        # the best weights, without the optimizer's state
    pretrained.path, pretrained._optimizer_state = None, None
    pretrained.run_card["pretrained"] = {
        "script": "scripts/pretrain.py", "steps": config.epochs * config.steps_per_epoch, "seed": args.seed,
        "data": f"{args.volumes} simulated volumes (nuclei, cell-wall surfaces), {DOSES[0] * 0.7:.1f}-"
                f"{DOSES[-1] * 1.4:.0f} photons peak, background 1, read noise 1",
        "seconds": round(time.perf_counter() - t0)}
    pretrained.save(args.out)
    shutil.rmtree(work, ignore_errors=True)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much do trained neighbours flatter an isotropic model's validation? (quality-per-minute.md,
"Isotropic validation without trained neighbours".)

The real Arabidopsis embryo (``../shared/data``) subsampled along Z by 4 after an axial blur (sigma 2 px),
as in ``tests/models/test_isotropic.py``. Patches are made twice with the same held-out slices: A as
carecore makes them (the slices next to held-out ones give no patch, guards), B with those guard slices
trained on (the rule before 2026-12-05). Each trains for ``--budget`` seconds; both are scored on A's
validation patches (the same patches) and on the axial restoration of the whole stack against the
original (the test). Prints one JSON line per seed; run with nothing else on the machine::

    python benchmarks/isotropic_validation_leak.py --seeds 0 1 2
"""
import argparse
import json
from pathlib import Path

import numpy as np

EMBRYO = Path(__file__).resolve().parents[2] / "shared" / "data" / "morpholibj_arabidopsis_embryo_106x112x109.tif"


def run(seed, budget):
    import carecore as cc
    import carecore.data.patches as patches
    from carecore.models.kinds import model_class

    clean = cc.read_image(EMBRYO).data.astype(np.float32)
    f, sigma = 4.0, 2.0
    coarse, _ = cc.simulate_anisotropic(clean, f, axes="ZYX", axis="Z", psf_sigma=sigma, upsample_back=False)
    cls = model_class("isotropic")
    config = cls.default_config("ZYX", kind="isotropic", upsampling_factor=f, psf_sigma=sigma, time_limit=budget,
                                seed=seed)
    guarded = cls.make_patches(config, [coarse], axes="ZYX", n_patches_per_image=16)
    plan = patches.validation_blocks

    def guards_trained(*args, **kwargs):
        return [None if b is not None and b.get("guard") else b for b in plan(*args, **kwargs)]

    patches.validation_blocks = guards_trained
    try:
        leaky = cls.make_patches(config, [coarse], axes="ZYX", n_patches_per_image=16)
    finally:
        patches.validation_blocks = plan
    held = [sorted({int(i) // 2 for i in ps.positions[ps.n_train:, 0]}) for ps in (guarded, leaky)]
    assert held[0] == held[1], held
    Xv, Yv = np.asarray(guarded.X[guarded.n_train:]), np.asarray(guarded.Y[guarded.n_train:])
    last = int((coarse.shape[0] - 1) * f) + 1
    row = {"seed": seed, "held_out_slices": held[0], "budget_s": budget}
    for name, ps in (("guarded", guarded), ("neighbours_trained", leaky)):
        model = cc.create_model(config)
        model.train(ps)
        pred = np.asarray(model.keras_model.predict(Xv, verbose=0))[..., :1]
        val = np.mean([cc.evaluate(p[..., 0], y[..., 0], axes="YX")["ssim"] for p, y in zip(pred, Yv)])
        test = cc.evaluate(model.predict(coarse, axes="ZYX")[:last], clean[:last], axes="ZYX")
        row[name] = {"n_train": int(ps.n_train), "val_ssim": round(float(val), 4),
                     "test_ssim": round(float(test["ssim"]), 4), "test_nrmse": round(float(test["nrmse"]), 5)}
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=float, default=60.0, help="training seconds of each model")
    args = p.parse_args(argv)
    for seed in args.seeds:
        print(json.dumps(run(seed, args.budget)), flush=True)


if __name__ == "__main__":
    main()

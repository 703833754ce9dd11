"""Quality per minute: a short time-limited training beats every classical filter tuned on the ground truth.

It trains what the app's first run trains: the 3D recipe with its Laplace scale ("Probabilistic" checked),
whose mean learns as the plain network's; its intervals are held to their promise too.

The demo's 3D denoising data (simulated nuclei at 8 photons peak), trained for a three-minute budget on the
training volumes, tested on the held-out test volume against Gaussian, median, bilateral, TV and NLM
each tuned over its grid on that very test volume with its ground truth (an advantage CARE does not
get). The budget is counted in training steps of 0.25 s, so that every machine trains as many steps
of the recipe that ``care_config`` picks for it (float32 batches of 2 patches of 16×32×32 for 8 filters
on the 2-core AVX2 CI machine and where bfloat16 is not faster, bfloat16 batches of 8 of 16×32×32 where it
is: carecore.models.precision).
That was the float32 recipe's pace there with TensorFlow's own kernels (715 steps in 180 s); with oneDNN,
which ``import carecore`` turns on, 180 s hold about 2,700 steps: the test trains a quarter of what
three minutes buy on CI. Quality per minute of the wall clock, on the real images too, is the
benchmark's (benchmarks/bench_quality.py).
"""
import pytest

import carecore as cc
from carecore.baselines import best_baseline, tune_baselines

pytestmark = pytest.mark.slow


def test_a_three_minute_budget_beats_the_tuned_filters(tmp_path, step_clock, monkeypatch):
    root = tmp_path / "demo"
    cc.write_demo_data(root, tasks=["denoising3d"])
    d = root / "denoising3d"
    config = cc.care_config("ZYX", time_limit=180, probabilistic=True)   # what the app's first run trains
    patches = cc.create_patches(cc.find_pairs(d / "train" / "low", d / "train" / "high"), config.patch_size,
                                n_patches_per_image=256, seed=0)
    model = cc.CARE(config, tmp_path / "model")
    step_clock(0.25)
    from carecore.training import events as events_module

    plans, plan_budget = [], events_module.plan_budget
    monkeypatch.setattr(events_module, "plan_budget", lambda *a, **k: plans.append(plan_budget(*a, **k)) or plans[-1])
    events = []
    result = model.train(patches, callback=events.append)
    assert result.status in ("completed", "time_limit")
    steps = sum(e["kind"] == "batch" for e in events)
    # 180 s of 0.25 s steps, less the planning's and the work after training's: at most 30 s of the budget
    # (22 s with the float32 recipe's batches of 2 on an AVX2 CPU, less with bfloat16's of 8: the bounds were
    # 640-720 steps, which only the latter met), and every step the time holds trained (validations take no
    # time on this clock: the plan's room, not fewer)
    (plan,) = plans
    assert plan.deadline >= 150 and plan.trained <= steps <= plan.room, (steps, plan)
    noisy = cc.read_image(d / "test" / "low" / "sample00.tif").data
    truth = cc.read_image(d / "test" / "high" / "sample00.tif").data
    mean, scale = model.predict(noisy, axes="ZYX")
    care = cc.evaluate(mean, truth, axes="ZYX")
    by_ssim, by_nrmse = best_baseline(tune_baselines([(noisy, truth)], axes="ZYX"))
    print(f"CARE SSIM {care['ssim']:.3f} NRMSE {care['nrmse']:.4f}; best filters: {by_ssim.label()} SSIM "
          f"{by_ssim.ssim:.3f}, {by_nrmse.name} {by_nrmse.params_nrmse} NRMSE {by_nrmse.nrmse:.4f}")
    assert care["ssim"] > by_ssim.ssim and care["nrmse"] < by_nrmse.nrmse
    # its intervals, measured without a fit to this ground truth: ECE 0.018 with the 8-filter recipe. With
    # 16 filters 0.115 (its scales halved: 0.29; × 1.4: 0.051; the errors less peaked than a Laplace: the
    # central 50 % interval held 31 %, the 95 % one 94 %; the scale's head fitted to the validation
    # patches instead gave 0.109).
    from carecore.uncertainty import measure_calibration

    ece = measure_calibration(truth, mean, scale, image=noisy, axes="ZYX", percentiles=config.percentiles,
                              normalization=model.input_normalization(noisy, axes="ZYX"))["ece"]
    print(f"ECE {ece:.3f}")
    assert ece < 0.15, ece
    # the validation chart's line: the best filter on the validation patches, measured like CARE
    line = next(e for e in events if e["kind"] == "baseline")
    last = [e for e in events if e["kind"] == "epoch"][-1]
    assert line["name"] in cc.BASELINES and last["val_ssim"] > line["val_ssim"]

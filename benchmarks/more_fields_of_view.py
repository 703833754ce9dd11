"""Does a long training keep improving with more fields of view? (quality-per-minute.md, "More fields of
view for a long training, measured".)

The benchmark's ``demo3d`` case (its recipe, 256 patches per volume, its test volume), trained on the
demo's 3 training volumes plus ``--extra`` more made by the demo's simulator with its settings
(``nuclei_volume`` 32x128x128, seeds 1000 on; 8 photons, background 2, read noise 1), for ``--budget``
seconds; prints one JSON line: test SSIM / NRMSE with one view and the mean over 8 views, steps, and the
validation-SSIM curve. One run per call; compare runs on one machine with nothing else running::

    python benchmarks/more_fields_of_view.py --extra 0 --budget 180
    python benchmarks/more_fields_of_view.py --extra 21 --budget 1800
"""
import argparse
import json
import time
from pathlib import Path

import bench_quality as bq


def main(argv=None):
    import carecore as cc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--extra", type=int, default=21, help="simulated training volumes added to the demo's 3")
    p.add_argument("--budget", type=float, default=180.0, help="training seconds")
    p.add_argument("--work", default=str(bq.HERE / "work"), help="folder for the demo data (as bench_quality.py)")
    args = p.parse_args(argv)
    data = bq.load_case("demo3d", Path(args.work))
    train = [tuple(image.data for image in cc.load_pair(pair)) for pair in data["train"]]
    for k in range(args.extra):
        high, _ = cc.nuclei_volume((32, 128, 128), seed=1000 + k)
        low, _ = cc.simulate_photon_noise(high, 8.0, background=2.0, read_noise=1.0, seed=2000 + k)
        train.append((low, high))
    config = cc.care_config("ZYX", time_limit=args.budget, seed=0)
    patches = cc.create_patches(train, config.patch_size, axes="ZYX", n_patches_per_image=256, seed=0)
    model = cc.create_model(config)
    steps, curve = [0], []

    def callback(e):
        if e["kind"] == "batch":
            steps[0] += 1
        elif e["kind"] == "epoch":
            curve.append((round(e["elapsed"]), e.get("val_ssim")))

    t = time.perf_counter()
    result = model.train(patches, callback=callback)
    wall = time.perf_counter() - t
    low, truth = data["test"]
    mean = (lambda p: p[0]) if model.config.probabilistic else (lambda p: p)  # noqa: E731
    one = cc.evaluate(mean(model.predict(low, axes="ZYX")), truth, axes="ZYX")
    views = cc.evaluate(mean(model.predict(low, axes="ZYX", tta=True)), truth, axes="ZYX")
    print(json.dumps({"volumes": len(train), "budget": args.budget, "n_train": int(patches.n_train),
                      "n_val": int(patches.n_val), "steps": steps[0], "wall_s": wall, "status": result.status,
                      "output_sigma": model.output_sigma, "one_view": one, "views_8": views, "curve": curve},
                     default=float))


if __name__ == "__main__":
    main()

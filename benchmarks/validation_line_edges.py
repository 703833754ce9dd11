"""The validation line (the Train step's dashed best filter) before and after 2026-12-06: tuned past the
grids' tops as the QC report tunes (``EDGE_STEPS``), and the upsampling kind's patches interpolated
nearest, linear and cubic (quality-per-minute.md, "The validation line past the grids' tops").

For each benchmark case (``bench_quality.py``'s data, patches and config, seed 0) it draws the line twice on
the same validation patches, with and without both changes, and prints the best filter and its validation
SSIM with the seconds each took; no training. Run with nothing else on the machine::

    python benchmarks/validation_line_edges.py [CASE ...]
"""
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(cases):
    import bench_quality as bench

    import carecore as cc
    import carecore.training.validation as validation
    from carecore.models.upsampling import UpsamplingCARE

    root = HERE / "work" / "data"
    root.mkdir(parents=True, exist_ok=True)
    for case in cases or bench.ALL_CASES:
        data = bench.load_case(case, root)
        extra = {"kind": "upsampling", "upsampling_factor": 4.0} if data["kind"] == "upsampling" else {}
        config = cc.care_config(data["axes"], time_limit=180, seed=0, **extra)
        patches = cc.create_patches(data["train"], config.patch_size, axes=data["axes"], n_patches_per_image=256,
                                    seed=0)
        val = validation.ValidationSet(*patches.val, cc.create_model(config))
        t = time.perf_counter()
        after = val.baseline()
        t_after = time.perf_counter() - t
        edge, starts = validation.past_the_edge, UpsamplingCARE.patch_grid_starts
        validation.past_the_edge = lambda *a, **k: None                     # the grids only
        UpsamplingCARE.patch_grid_starts = lambda self, X: {"": X}          # the patches' own interpolation only
        try:
            t = time.perf_counter()
            before = val.baseline()
            t_before = time.perf_counter() - t
        finally:
            validation.past_the_edge, UpsamplingCARE.patch_grid_starts = edge, starts

        def label(b):
            return f"{b['name']} {b['params']}{' on ' + b['start'] if b['start'] else ''}: {b['val_ssim']:.4f}"

        print(f"{case}: before {label(before)} ({t_before:.1f} s) · after {label(after)} ({t_after:.1f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

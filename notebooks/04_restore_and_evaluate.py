# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · Restore and evaluate
#
# A trained network restores new images of the same kind. Microscopy volumes are often larger than
# the memory a network may use at once, so CARE Lab cuts the volume into **tiles** that overlap by
# the network's field of view and stitches them so that the result is exactly the same as without
# tiles.
#
# Then the honest question: is it better than what you could have done without deep learning? We
# compare CARE with the input and with every classical filter, each **tuned on this very volume with
# its ground truth** (an advantage CARE never gets), using the paper's metrics, and look at where the
# errors are.
#
# Workshop time: about 2 minutes (plus 1 minute of training if notebook 3 was not run).

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import carecore as cc
from carecore.baselines import best_baseline, tune_baselines

QUICK = os.environ.get("CARELAB_QUICK", "") not in ("", "0")        # the app's quick switch
# Quick mode (for tests, seconds) trains a fixed 8 × 100 steps of a small network, whatever the machine's speed,
# starting from a tuned Gaussian filter's answer (residual_sigma="auto"), in float32 so that every CPU computes
# the same: enough to beat the tuned filters on the tiny demo. Workshop mode uses the budget's own recipe.
QUICK_TRAINING = dict(quick=True, unet_filters=16, batch_size=2, patch_size=(16, 32, 32), epochs=8,
                      steps_per_epoch=100, learning_rate=3e-3, residual_sigma="auto", precision="float32")
OUT = Path(os.environ.get("CARELAB_NOTEBOOK_OUT", "work")).resolve()  # default: notebooks/work/
HERE = OUT / "04_restore_and_evaluate"
HERE.mkdir(parents=True, exist_ok=True)
DEMO = OUT / ("demo-tiny" if QUICK else "demo")
if not (DEMO / "denoising3d").exists():
    cc.write_demo_data(DEMO, tasks=["denoising3d"], size="tiny" if QUICK else "small")
d = DEMO / "denoising3d"
results = {"quick": QUICK}

# %% [markdown]
# ## The model
#
# The model trained in notebook 3, or, if you start here, a short one trained now.

# %%
model_dir = OUT / "03_train" / "model"
if (model_dir / "manifest.json").exists():
    model = cc.load_model(model_dir)
    print("the model of notebook 3:", model_dir)
else:
    model_dir = HERE / "model"
    config = cc.care_config("ZYX", **(QUICK_TRAINING if QUICK else dict(time_limit=60)))
    patches = cc.create_patches(cc.find_pairs(d / "train" / "low", d / "train" / "high"), config.patch_size,
                                n_patches_per_image=128 if QUICK else 256)
    model = cc.create_model(config, model_dir)
    print(model.train(patches).message)
results["model_dir"] = str(model_dir)

# %% [markdown]
# ## Tiled prediction
#
# `predict` chooses tiles from a memory budget (1 GiB by default) for the network's working memory, its
# activations: many times the image itself (the 2 MiB test volume needs far more inside the network). Here
# we pretend to have a small computer: with a budget of a few megabytes the same volume is cut into pieces,
# and the result equals the one computed in a single piece. The pieces are either plain **tiles**, each run
# through the whole network (every cut costs the network's context, its receptive field, on both sides), or
# **staged blocks**: the network run part by part over a block, each part in tiles of its own with a small
# context. `predict` takes whichever needs less work (the progress counts the tiles of all blocks and parts).

# %%
low = cc.read_image(d / "test" / "low" / "sample00.tif")
truth = cc.read_image(d / "test" / "high" / "sample00.tif").data.astype(np.float32)
small_budget = 2**21 if QUICK else 2**24
plan = model.tile_plan(low.data.shape, memory_budget=small_budget)
print(f"{low.data.shape} with {small_budget / 2**20:g} MiB:", len(plan),
      "tiles" if plan.stage_tiles is None else "staged blocks (each run in parts, each part in tiles)")

progress = []
restored = model.predict(low.data, axes=low.axes, memory_budget=small_budget,
                         progress=lambda done, total, what: progress.append((done, total)))
whole = model.predict(low.data, axes=low.axes)
print("tiles done:", progress[-1] if progress else "(one piece)",
      "· largest difference to the untiled result:", float(np.abs(restored - whole).max()))
results["tiles"] = len(plan)
results["tiled_vs_untiled"] = float(np.abs(restored - whole).max())

# %% [markdown]
# The restored volume is written as an OME-TIFF with its axes and voxel size: Fiji opens it.

# %%
restored_path = HERE / "restored" / "sample00.tif"
restored_path.parent.mkdir(parents=True, exist_ok=True)
cc.write_image(restored_path, restored, axes=low.axes, spacing=model.output_spacing(low.spacing) or None)
results.update(restored=str(restored_path), input_shape=list(low.data.shape))
print("written:", restored_path)

# %% [markdown]
# ## Was CARE trained on this volume?
#
# Scores on an image the network was trained on flatter it: it may have learned that very image. A model
# knows its training images (its run card records their paths and a fingerprint of their pixels, so a
# renamed copy is recognised too); score images it never saw, as here.

# %%
train_image = sorted((d / "train" / "low").glob("*.tif"))[0]
results["trained_on"] = {"test": model.trained_on(d / "test" / "low" / "sample00.tif"),
                         "train": model.trained_on(train_image)}
print("trained on the test volume:", results["trained_on"]["test"], "· on", train_image.name, "of the training folder:",
      results["trained_on"]["train"])

# %% [markdown]
# ## CARE against tuned classical filters
#
# Every filter is tried over a small grid of parameters on this volume, scored against its ground
# truth, and reported at its best parameters for each metric: SSIM at the SSIM-best ones (printed),
# NRMSE and PSNR at the NRMSE-best ones (`tuned[name].params_nrmse`).
#
# CARE is scored twice: as restored above (one view), and as the mean of the restorations of the
# volume's 8 flips and 90° rotations in YX (`predict(..., tta=True)`, test-time augmentation; the
# app's default). The network was trained on all 8 views; its errors in them are partly independent,
# so their mean is smoother where the structure is faint, at 8 times the work.

# %%
tuned = tune_baselines([(low.data, truth)], axes=low.axes, names=["gaussian", "median", "tv"] if QUICK else None)
by_ssim, by_nrmse = best_baseline(tuned)
metrics = {"input": cc.evaluate(low.data, truth, axes=low.axes)}
for name, t in tuned.items():   # SSIM at the SSIM-best parameters (printed), NRMSE and PSNR at the NRMSE-best
    metrics[t.label()] = t.scores(low.data, truth, axes=low.axes)
metrics["CARE"] = cc.evaluate(restored, truth, axes=low.axes)
metrics["CARE, mean over 8 views"] = cc.evaluate(model.predict(low.data, axes=low.axes, tta=True), truth,
                                                 axes=low.axes)
width = max(map(len, metrics))   # (NLM's label is long: the columns stay aligned)
for name, m in metrics.items():
    print(f"{name:{width}s}  SSIM {m['ssim']:.3f}   NRMSE {m['nrmse']:.4f}   PSNR {m['psnr']:5.2f} dB")
results.update(input=metrics["input"], care=metrics["CARE"], care_tta=metrics["CARE, mean over 8 views"],
               best_baseline={"name": by_ssim.label(), "ssim": by_ssim.ssim, "nrmse": by_nrmse.nrmse,
                              "nrmse_name": by_nrmse.name})

# %% [markdown]
# ## Where are the errors?
#
# The quality-control report does all of the above for a folder of test images and draws, for each,
# the restoration next to input and ground truth, the **error map** (|CARE − ground truth| after the
# metric's fit) and the **SSIM map** (dark where the structure is wrong). It writes `report.json`, the
# figures and an `index.html` you can open in a browser.

# %%
# (about a minute: the report tunes every filter again on its test images, as it would on a folder of new ones)
from carecore.qc import quality_report

report = quality_report(model_dir, d / "test" / "low", d / "test" / "high", HERE / "qc",
                        baselines=["gaussian", "tv"] if QUICK else None)
for name, m in report["overall"].items():   # the report's table (mean over its test images)
    print(f"{name:10s} SSIM {m['ssim']:.3f}   NRMSE {m['nrmse']:.4f}")
print("the report, to open in a browser:", HERE / "qc" / "index.html")
for fig in report["images"][0]["figures"].values():
    display(Image(filename=str(HERE / "qc" / fig)))
results["qc"] = str(HERE / "qc" / "index.html")
with open(HERE / "results.json", "w") as f:
    json.dump(results, f, indent=1, default=float)

# %% [markdown]
# ## Exercises
#
# 1. **Out of its depth.** Restore a volume simulated at 2 photons instead of 8
#    (`cc.simulate_photon_noise(truth, 2, background=2, read_noise=1)`) with the same model. Does CARE
#    still beat the tuned filters? Look at the error map: where does it fail first?
# 2. **Memory.** Use `model.tile_plan` to find how many tiles a 64×1024×1024 volume needs with the
#    default budget and with 256 MiB.

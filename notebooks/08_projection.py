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
# # 8 · Surface projection
#
# Many tissues are thin curved sheets: the wing of a fly, the epithelium of an embryo. You acquire a
# 3D stack only to flatten it into one 2D image of the sheet. The usual flattening, the
# **maximum-intensity projection (MIP)**, takes the brightest voxel of every column: at low light it
# picks up noise, and it picks up anything bright above or below the sheet.
#
# The CARE projection network does both jobs at once. A small 3D network learns **where the surface
# is** (a weight for every slice of every column, summing to 1), the weighted slices are summed into
# a 2D image, and a 2D network **denoises** it. It trains on pairs of a low-light stack and the
# high-quality projection of the same field.
#
# Workshop time: about 3 minutes.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import carecore as cc
from carecore.baselines import best_baseline, max_projection, tune_output_baselines
from carecore.models.kinds import model_class

QUICK = os.environ.get("CARELAB_QUICK", "") not in ("", "0")        # the app's quick switch
# Quick mode trains a fixed 3 × 100 steps of a tiny network (seconds, whatever the machine's speed).
QUICK_TRAINING = dict(unet_filters=8, batch_size=4, epochs=3, steps_per_epoch=100)
OUT = Path(os.environ.get("CARELAB_NOTEBOOK_OUT", "work")).resolve()  # default: notebooks/work/
HERE = OUT / "08_projection"
HERE.mkdir(parents=True, exist_ok=True)
DEMO = OUT / ("demo-tiny" if QUICK else "demo")
if not (DEMO / "projection").exists():
    cc.write_demo_data(DEMO, tasks=["projection"], size="tiny" if QUICK else "small")
d = DEMO / "projection"
results = {"quick": QUICK}

# %% [markdown]
# ## The data
#
# Each training pair is a noisy stack (`ZYX`) and the clean projection of its surface (`YX`). The
# XZ slice (smoothed by a Gaussian filter for the figure: at 8 photons the raw slice is mostly noise),
# taken along the red line of the two projections, shows the curved sheet as a chain of bright spots (the
# cell walls it crosses) rising and falling across X. A few bright blobs lie away from the sheet, and
# they are what fool a MIP; they are in some slices, not all: change `y` to look for one.
#
# A caveat about this demo: its target is the membrane pattern *before* the microscope's blur (the stack
# is blurred, by 0.6 px laterally, the target is not), as no acquired projection would be. So no
# classical projection can reach it: a noise-free stack's best surface projection scores SSIM 0.79
# against it (the MIP 0.77). Part of CARE's lead below is deblurring, which the classical pipeline has no
# step for.

# %%
listing = cc.find_pairs(d / "train" / "low", d / "train" / "high")
stack, surface = cc.load_pair(listing.pairs[0], check_shapes=False)
print("stack", stack.axes, stack.shape, "→ projection", surface.axes, surface.shape)
smoothed = cc.baseline("gaussian", stack.data, axes=stack.axes, sigma=1.5)   # (the raw slice is mostly noise)
y = stack.shape[1] // 2   # the XZ slice's row
fig = plt.figure(figsize=(11, 6.4))
xz = fig.add_subplot(2, 1, 1)   # (wide: the sheet's rise and fall across X is seen at this aspect)
xz.imshow(smoothed[:, y], cmap="gray", aspect="auto")
xz.set_title(f"XZ slice of the stack at Y={y} (smoothed, Z down)")
xz.set_xlabel("X (pixels)")
xz.set_ylabel("Z (slices)")
for k, (title, img) in enumerate((("maximum projection (MIP)", max_projection(stack.data, axes=stack.axes)),
                                  ("ground-truth projection", surface.data))):
    a = fig.add_subplot(2, 2, 3 + k)
    a.imshow(img, cmap="gray")
    a.axhline(y, color="red", lw=0.8)
    a.set_title(title)
    a.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Train
#
# Patches take Z whole (the network needs every slice of a column to find the surface) and a small
# window in Y and X.

# %%
Projection = model_class("projection")
if QUICK:
    config = Projection.default_config("ZYX", **QUICK_TRAINING)
else:
    config = Projection.default_config("ZYX", time_limit=120)
patches = Projection.make_patches(config, listing, n_patches_per_image=32 if QUICK else 128)
print("patches:", patches.X.shape, "→", patches.Y.shape)   # (patches, Z, Y, X, channels) → (patches, Y, X, channels)


def on_event(e):
    if e["kind"] == "epoch":
        print(f"epoch {e['epoch']}: validation SSIM {e['val_ssim']:.3f}")


model = cc.create_model(config, HERE / "model")
result = model.train(patches, callback=on_event)
print("training:", result.message or result.status)
results["model_dir"] = str(HERE / "model")

# %% [markdown]
# ## Restore and compare
#
# The classical competitors: the MIP, and a **surface-following projection** (find the brightest
# smoothed height per column, average a few slices around it). Each classical filter is then tuned on
# this test image with its ground truth, starting from whichever projection suits it best: one row per
# filter, its projection named.

# %%
low = cc.read_image(d / "test" / "low" / "sample00.tif")
truth = cc.read_image(d / "test" / "high" / "sample00.tif").data.astype(np.float32)
restored = model.predict(low.data, axes=low.axes)
restored_path = HERE / "restored" / "sample00.tif"
restored_path.parent.mkdir(parents=True, exist_ok=True)
cc.write_image(restored_path, restored, axes=model.output_axes(low.axes), spacing=model.output_spacing(low.spacing) or None)
results.update(restored=str(restored_path), truth_shape=list(truth.shape))

# each filter on the best of the model's classical projections (the maximum and surface-following ones),
# SSIM at its SSIM-best start and parameters (printed), NRMSE at its NRMSE-best
tuned = tune_output_baselines(model, [(low.data, truth)], axes=low.axes, names=["gaussian", "tv"] if QUICK else None)
mip = model.on_output_grid(low.data, axes=low.axes)   # the maximum projection
metrics = {"maximum projection (MIP)": cc.evaluate(mip, truth, axes="YX")}
metrics.update({t.label(): t.scores(low.data, truth, axes=low.axes) for t in tuned.values()})
metrics["CARE"] = cc.evaluate(restored, truth, axes="YX")
width = max(map(len, metrics))   # (the filters' labels are long: the columns stay aligned)
for name, m in metrics.items():
    print(f"{name:{width}s}  SSIM {m['ssim']:.3f}   NRMSE {m['nrmse']:.4f}")
by_ssim, by_nrmse = best_baseline(tuned)
results.update(input=metrics["maximum projection (MIP)"], care=metrics["CARE"],   # the best filter for each metric
               best_baseline={"ssim": metrics[by_ssim.label()]["ssim"], "nrmse": metrics[by_nrmse.label()]["nrmse"]})

fig, ax = plt.subplots(1, 3, figsize=(11, 3.6))
for a, (title, img) in zip(ax, [("maximum projection (MIP)", mip), ("CARE", restored),
                                ("ground truth", truth)]):
    a.imshow(img, cmap="gray")
    a.set_title(title)
    a.axis("off")
plt.show()
with open(HERE / "results.json", "w") as f:
    json.dump(results, f, indent=1, default=float)

# %% [markdown]
# Look closely before you trust the crisp picture: where the stack holds too little light, CARE draws a
# clean membrane pattern that can differ from the truth's cells (a plausible guess, not a measurement).
# Compare it with the ground truth here; on your own data, where there is none, notebook 6's read-outs
# flag where the networks disagree.
#
# ## Exercises
#
# 1. Where does the MIP go wrong? Move `y` until the XZ slice shows a bright blob away from the sheet, and
#    look at the same place (X, and the red line's Y) in the projections, CARE's included.
# 2. The network takes Z whole. What happens if you restore only the top half of the test stack
#    (`low.data[: low.shape[0] // 2]`)? Why might a real wing stack need the same depth as the
#    training stacks?

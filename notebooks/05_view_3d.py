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
# # 5 · Looking at volumes in 3D
#
# Numbers are not enough: look at the restoration before you trust it. A 3D volume can be seen in
# three complementary ways:
#
# * a **rendering** of the whole volume (here a maximum-intensity projection you can rotate: each ray
#   shows the brightest voxel it meets),
# * **orthogonal slices** (XY, XZ, YZ through one point): the XZ and YZ slices show what happens along
#   the optical axis, where microscopes are worst,
# * a **line profile**: the intensities along one line, where you can compare input, restoration and
#   ground truth quantitatively (do two nearby nuclei stay separate?).
#
# The viewers are the ones of the CARE Lab app (step 4).
#
# Workshop time: about 1 minute (plus 1 minute of training if notebooks 3 and 4 were not run).

# %%
import json
import os
from pathlib import Path

import ipywidgets as W
import numpy as np
from IPython.display import display

import carecore as cc

QUICK = os.environ.get("CARELAB_QUICK", "") not in ("", "0")        # the app's quick switch
# Quick mode trains a fixed 3 × 100 steps of a tiny network (seconds, whatever the machine's speed).
QUICK_TRAINING = dict(quick=True, unet_filters=8, batch_size=4, epochs=3, steps_per_epoch=100, learning_rate=3e-3)
OUT = Path(os.environ.get("CARELAB_NOTEBOOK_OUT", "work")).resolve()  # default: notebooks/work/
HERE = OUT / "05_view_3d"
HERE.mkdir(parents=True, exist_ok=True)
DEMO = OUT / ("demo-tiny" if QUICK else "demo")
if not (DEMO / "denoising3d").exists():
    cc.write_demo_data(DEMO, tasks=["denoising3d"], size="tiny" if QUICK else "small")
d = DEMO / "denoising3d"
results = {"quick": QUICK}

# %% [markdown]
# ## The volumes
#
# The restoration written by notebook 4; if you start here, a short model is trained and applied now.

# %%
image = cc.read_image(d / "test" / "low" / "sample00.tif")
low = image.data.astype(np.float32)
# the voxel's height over its width, for drawing XZ slices to scale (1 where the file records no voxel size, as the
# demo's: simulated on a grid of 1 pixel in every direction)
z_aspect = image.spacing.get("Z", 1.0) / image.spacing.get("X", 1.0)
truth = cc.read_image(d / "test" / "high" / "sample00.tif").data.astype(np.float32)
restored_file = OUT / "04_restore_and_evaluate" / "restored" / "sample00.tif"
if restored_file.exists():
    restored = cc.read_image(restored_file).data.astype(np.float32)
else:
    config = cc.care_config("ZYX", **(QUICK_TRAINING if QUICK else dict(time_limit=60)))
    patches = cc.create_patches(cc.find_pairs(d / "train" / "low", d / "train" / "high"), config.patch_size,
                                n_patches_per_image=32 if QUICK else 256)
    model = cc.create_model(config, HERE / "model")
    model.train(patches)
    restored = model.predict(low, axes="ZYX")
print("volume shape (Z, Y, X):", low.shape)

# %% [markdown]
# ## 3D rendering
#
# Drag to rotate (the two views share one camera); the contrast slider sets the display window.
# (Needs ipyvolume, installed with the app.)

# %%
try:
    from carelab.viewers import volume_pair

    display(volume_pair(low, restored, titles=("input", "CARE"), css="nb-volumes"))
    results["rendering"] = "ipyvolume"
except ImportError as e:
    print("no 3D rendering here:", e)
    results["rendering"] = None

# %% [markdown]
# ## Orthogonal slices
#
# The slider moves through Z; the two small images are the XZ and YZ slices through the centre
# (stretched along Z so they are readable).

# %%
try:
    from carelab.viewers import SliceView
except ImportError:       # the app is not installed: plain matplotlib slices
    SliceView = None
if SliceView is not None:
    views = [SliceView(title, css="nb-slices") for title in ("input", "CARE", "ground truth")]
    for view, volume in zip(views, (low, restored, truth)):
        view.set_image(volume)
    display(W.HBox(views))
# the middle slices as a plain figure too, with pixel coordinates (the widgets need Jupyter's; this one stays
# in a saved notebook), and the line of the profile below in red
import matplotlib.pyplot as plt

# the profile's line: the middle slice's row that holds the most of the ground truth's signal (the volume's
# middle row can pass between the nuclei: a flat line)
z = low.shape[0] // 2
y = int(np.argmax(truth[z].sum(axis=1)))
fig, ax = plt.subplots(2, 3, figsize=(10, 5))
for j, (title, v) in enumerate((("input", low), ("CARE", restored), ("ground truth", truth))):
    ax[0, j].imshow(v[z], cmap="gray")
    ax[0, j].axhline(y, color="red", lw=0.8)
    ax[0, j].set_title(f"{title} (Z={z})")
    ax[1, j].imshow(v[:, v.shape[1] // 2], cmap="gray", aspect=z_aspect)
    ax[1, j].set_title(f"XZ slice (Y={v.shape[1] // 2})", fontsize=9)
plt.tight_layout()
plt.show()
results["slices"] = True

# %% [markdown]
# ## A line profile
#
# Along X, on the red line above: the middle slice's row with the most of the ground truth's signal (it
# crosses nuclei). Each curve is scaled to its own 0–1 range for display (`cc.percentile_normalize`), since input,
# restoration and ground truth have different intensity units: so the input's background, lifted by its
# noise, sits higher than the others'.

# %%
profiles = {name: cc.percentile_normalize(v, 0.1, 99.9, axes="ZYX")[0][z, y]
            for name, v in (("input", low), ("CARE", restored), ("ground truth", truth))}
try:
    from carelab.viewers import Curves

    colors = {"input": "#1f77b4", "CARE": "#ff7f0e", "ground truth": "#2ca02c"}
    # the legend goes under the chart (bqplot's own box would cover the curves)
    chart = Curves(f"line profile (Z={z}, Y={y})", list(colors), colors=list(colors.values()), legend=None,
                   xlabel="X (pixels)", ylabel="normalized intensity", dashed={"ground truth"}, x_min=0,
                   x_format="d", width="620px", css="nb-profile")
    chart.set_caption([(color, name == "ground truth", name) for name, color in colors.items()])
    for name, p in profiles.items():
        chart.set_curve(name, np.arange(len(p)), p)
    display(chart)
except ImportError:
    pass
plt.figure(figsize=(7, 3))   # (a plain copy, as above)
for name, p in profiles.items():
    plt.plot(p, label=name, ls="--" if name == "ground truth" else "-")
plt.xlabel("X (pixels)")
plt.ylabel("normalized intensity")
plt.title(f"line profile (Z={z}, Y={y})")
plt.legend()
plt.show()
results.update(profile_length=int(len(profiles["CARE"])), shape=list(low.shape),
               profile_truth_range=float(np.ptp(profiles["ground truth"])))
with open(HERE / "results.json", "w") as f:
    json.dump(results, f, indent=1, default=float)

# %% [markdown]
# ## Exercises
#
# 1. Move the profile to a line that crosses two touching nuclei (change `z` and `y`; the figure above
#    gives the pixel coordinates). Does CARE keep
#    them apart as the ground truth does? Does the input?
# 2. In the 3D rendering, lower the contrast window of the input until the nuclei appear. What do you
#    lose at the same time?

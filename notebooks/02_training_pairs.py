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
# # 2 · Training pairs
#
# A CARE network is only as good as its training pairs. There are two ways to get them:
#
# * **Acquired pairs**: image the same fixed sample twice on the microscope, once with the cheap
#   settings (low light, *low*) and once with the good ones (*high*). The two images must show the
#   same thing at the same place: any shift between them teaches the network to blur.
# * **Simulated pairs**: when you have good images but no matching bad ones, degrade the good images
#   with a model of the microscope (fewer photons, coarser Z steps, a blurrier PSF).
#
# Files are paired by name: `low/cell01.tif` goes with `high/cell01.tif`. Every image carries an
# **axes** string that says what its dimensions are: `ZYX` is a 3D stack, `YX` a single plane,
# `CZYX` a stack with colour channels.
#
# Finally the pairs are cut into small **patches**: the network trains on thousands of small cubes,
# mostly where there is something to see, and a held-out part of each image is kept for validation.
#
# Workshop time: about 2 minutes.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import carecore as cc

QUICK = os.environ.get("CARELAB_QUICK", "") not in ("", "0")        # the app's quick switch
OUT = Path(os.environ.get("CARELAB_NOTEBOOK_OUT", "work")).resolve()  # default: notebooks/work/
HERE = OUT / "02_training_pairs"
HERE.mkdir(parents=True, exist_ok=True)
SHARED = Path(os.environ.get("CARELAB_SHARED_DATA", "../../shared/data"))   # real images, when present
DEMO = OUT / ("demo-tiny" if QUICK else "demo")
if not (DEMO / "denoising3d").exists():
    cc.write_demo_data(DEMO, tasks=["denoising3d"], size="tiny" if QUICK else "small")
results = {"quick": QUICK}

# %% [markdown]
# ## Acquired pairs from folders
#
# The demo dataset has the layout you would make for your own data: `train/low`, `train/high` (and
# `test/` for later). `find_pairs` matches the files by name and reports any file without a partner.

# %%
d = DEMO / "denoising3d"
listing = cc.find_pairs(d / "train" / "low", d / "train" / "high")
print(listing.report() if (listing.unmatched_low or listing.unmatched_high) else "every file has a partner")
for pair in listing:
    print(pair.name)

# %% [markdown]
# For each pair: the axes (read from the file, or guessed from the number of dimensions), the shapes,
# and the **alignment check**, which measures the shift between low and high. A pair that is not
# aligned (`aligned: False`) should be registered before training (or left out). `aligned: None` means
# no clear match anywhere: the two may not show the same field (a wrong file paired), or hold too little
# to tell; look at them.

# %%
rows = []
for pair in listing:
    low, high = cc.load_pair(pair)
    alignment = cc.check_alignment(low, high)
    rows.append({"name": pair.name, "axes": low.axes, "shape": list(low.shape), "shift": alignment["shift"],
                 "aligned": alignment["aligned"]})
    print(f"{pair.name}: axes {low.axes}, shape {low.shape}, shift {alignment['shift']}, aligned: {alignment['aligned']}")
results["pairs"] = rows

fig, ax = plt.subplots(1, 2, figsize=(7, 3.4))
for a, (title, img) in zip(ax, [("low", low.data), ("high", high.data)]):
    a.imshow(np.asarray(img)[len(img) // 2], cmap="gray")
    a.set_title(f"{pair.name}: {title}")
    a.axis("off")
plt.show()

# %% [markdown]
# What happens when the two images do not match? Shift the high image by three pixels and check again:

# %%
shifted = cc.Image(np.roll(np.asarray(high.data), 3, axis=2), "ZYX")
check = cc.check_alignment(low, shifted)
print("shift:", check["shift"], "· aligned:", check["aligned"])
results["shifted_pair_aligned"] = check["aligned"]

# %% [markdown]
# ## Simulated pairs
#
# From a clean image, the photon-budget simulator makes the low-light version, and the anisotropic
# simulator makes a stack with coarse Z steps (blur along Z with the axial PSF, then keep every
# *factor*-th slice). Both are deterministic for a given seed and return the parameters they used.

# %%
clean = np.asarray(high.data, np.float32)
noisy, noise_info = cc.simulate_photon_noise(clean, 8, background=2, read_noise=1, seed=1)
coarse, aniso_info = cc.simulate_anisotropic(clean, 4, axes="ZYX", axis="Z", psf_sigma=2.0, upsample_back=False, seed=2)
print("photon budget:", {k: noise_info[k] for k in ("peak_photons", "snr_peak") if k in noise_info})
print("anisotropic: factor", aniso_info["factor"], "· shape", clean.shape, "->", coarse.shape)
fig, ax = plt.subplots(1, 2, figsize=(7, 3))   # an XZ slice: the coarse stack's Z steps, stretched back to scale
for a, (title, img, aspect) in zip(ax, [("clean, XZ slice", clean, 1), ("coarse Z steps, XZ slice", coarse, 4)]):
    a.imshow(img[:, img.shape[1] // 2], cmap="gray", aspect=aspect)
    a.set_title(title)
    a.axis("off")
plt.show()

# %% [markdown]
# The same works on real images. The shared folder holds clean confocal stacks (an Arabidopsis embryo,
# Moukhtar et al. 2019, CC-BY 4.0) and widefield planes (BPAE cells, CC-BY 4.0); degrade them and you
# have training pairs of real biology.

# %%
embryo_file = SHARED / "morpholibj_arabidopsis_embryo_106x112x109.tif"
if embryo_file.exists():
    embryo = cc.read_image(embryo_file, axes="ZYX").data.astype(np.float32)
    if QUICK:
        embryo = embryo[40:56, 24:88, 24:88]
    embryo_low, _ = cc.simulate_photon_noise(embryo / embryo.max(), 8, background=2, read_noise=1, seed=3)
    print("embryo:", embryo.shape, "· input SSIM at 8 photons:", round(cc.evaluate(embryo_low, embryo, axes="ZYX")["ssim"], 3))
    fig, ax = plt.subplots(1, 2, figsize=(7, 3.4))
    for a, (title, img) in zip(ax, [("embryo, 8 photons", embryo_low), ("embryo, clean", embryo)]):
        a.imshow(img[len(img) // 2], cmap="gray")
        a.set_title(title)
        a.axis("off")
    plt.show()
    results["embryo_shape"] = list(embryo.shape)
else:
    print(f"{embryo_file} is not here: skipping the real images")

# %% [markdown]
# ## Patches
#
# `create_patches` cuts the pairs into patches (here 16×32×32 voxels; 8×32×32 in quick mode), half
# of them next to bright structure and half anywhere (`fg_fraction`), normalizes each image by its
# percentiles, and sets aside validation patches from blocks that no training patch touches. Written to a folder, they can
# be reused (`cc.load_patches`, `carecore train --patches`). Notebook 3 cuts its own, of the size its
# time budget picks.

# %%
patch_size = (8, 32, 32) if QUICK else (16, 32, 32)
patches = cc.create_patches(listing, patch_size, n_patches_per_image=32 if QUICK else 128, out=HERE / "patches")
print("training patches:", patches.X.shape, "axes", patches.axes, "· validation patches:", patches.n_val)
# (axes SZYXC: S counts the patches, Z, Y and X are a patch's voxels, C its channels, one here)
results.update(n_patches=int(len(patches.X)), n_val=int(patches.n_val), patches_dir=str(HERE / "patches"))

fig, ax = plt.subplots(2, 6, figsize=(10, 3.6))
for i in range(6):
    ax[0, i].imshow(patches.X[i][patch_size[0] // 2, ..., 0], cmap="gray")
    ax[1, i].imshow(patches.Y[i][patch_size[0] // 2, ..., 0], cmap="gray")
    ax[0, i].axis("off")
    ax[1, i].axis("off")
ax[0, 0].set_title("low", loc="left")
ax[1, 0].set_title("high", loc="left")
plt.show()

with open(HERE / "results.json", "w") as f:
    json.dump(results, f, indent=1, default=float)

# %% [markdown]
# ## Exercises
#
# 1. Rename one file in a copy of `train/high` and run `find_pairs` again: what does the report say?
# 2. Make pairs from the embryo at 2 and at 32 photons. Which light dose would you choose for a
#    time-lapse of a living embryo, and what would you have to acquire to train a network for it?

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
# # 1 · What is CARE?
#
# Every fluorescence microscope forces a trade-off between three things you want: **little light**
# (less bleaching, healthier samples), **speed** (fast processes, many time points) and **resolution**
# (fine axial steps, sharp detail). Buying one costs the others. Content-aware image restoration
# (CARE, Weigert et al., *Nature Methods* 2018) moves the boundary: a neural network learns, from
# examples of the *same kind of sample*, how to turn images taken cheaply (little light, coarse steps)
# into images that look as if they had been taken expensively.
#
# The examples are **training pairs**: the same field of view imaged twice, once with the cheap
# settings (*low*) and once with the expensive ones (*high*). The network never sees the high image of
# a new sample; it has learned what such samples look like.
#
# In this notebook you will
# 1. see what "less light" does to an image (the photon budget),
# 2. learn how restorations are scored (the paper's metric protocol),
# 3. train a first, very short network and look at its restoration.
#
# Workshop time: about 3 minutes on a laptop CPU.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import carecore as cc
from carecore.baselines import best_baseline, tune_baselines
from carecore.qc import verdict

# One switch for the app and the notebooks: CARELAB_QUICK=1 makes everything tiny (seconds, for tests).
QUICK = os.environ.get("CARELAB_QUICK", "") not in ("", "0")
# Quick mode trains a fixed 3 × 100 steps of a tiny network (seconds, whatever the machine's speed), starting from
# a tuned Gaussian filter's answer (residual_sigma="auto"), in float32 so that every CPU computes the same; too
# short to beat the best filter (the table says so). Workshop mode trains for 90 seconds.
QUICK_TRAINING = dict(quick=True, unet_filters=8, batch_size=4, epochs=3, steps_per_epoch=100, learning_rate=3e-3,
                      residual_sigma="auto", precision="float32")
# Everything this notebook writes goes under OUT (default: notebooks/work/, ignored by git).
OUT = Path(os.environ.get("CARELAB_NOTEBOOK_OUT", "work")).resolve()
HERE = OUT / "01_what_is_care"
HERE.mkdir(parents=True, exist_ok=True)
results = {"quick": QUICK}
print("quick mode" if QUICK else "workshop mode", "· writing to", HERE)

# %% [markdown]
# ## The photon budget
#
# A camera counts photons, and photon counts are random (Poisson noise): with a peak of *N* photons in
# the brightest pixel, the noise is about √N, so the **signal-to-noise ratio (SNR)** grows only with the
# square root of the light dose. The simulator below takes a clean volume of nuclei and images it with
# a chosen number of photons, a background and the camera's read noise:
#
# $$\text{noisy} = \text{Poisson}(N \cdot \text{clean} + \text{background}) + \mathcal{N}(0, \text{read noise}^2)$$
#
# The background and the read noise add noise of their own, so the SNR printed is below √N, most at low
# doses: at 8 photons, a background of 2 and a read noise of 1 it is 8 / √(8 + 2 + 1) ≈ 2.4, not √8 ≈ 2.8.
# Move the slider: at a few photons the nuclei drown in noise. (The slider needs a running notebook; the
# figure under the table below shows three doses side by side in any copy.)

# %%
from carecore.simulate import photon_snr

clean, _ = cc.nuclei_volume((16, 64, 64) if QUICK else (32, 128, 128), seed=0)


def show_dose(photons=8):
    noisy, info = cc.simulate_photon_noise(clean, photons, background=2, read_noise=1, seed=1)
    fig, ax = plt.subplots(1, 2, figsize=(7, 3.4))
    ax[0].imshow(noisy[len(noisy) // 2], cmap="gray")
    ax[0].set_title(f"{photons:g} photons at the peak · SNR {info['snr_peak']:.1f}")
    ax[1].imshow(clean[len(clean) // 2], cmap="gray")
    ax[1].set_title("clean (ground truth)")
    for a in ax:
        a.axis("off")
    plt.show()


try:
    from ipywidgets import FloatLogSlider, interact

    interact(show_dose, photons=FloatLogSlider(value=8, base=10, min=0, max=3, step=0.1, description="photons"))
except ImportError:   # without widgets: one picture
    show_dose(8)

# %% [markdown]
# The paper's headline is **60-fold less light**. Because SNR grows with √N, that costs about
# √60 ≈ 7.7-fold in SNR, which is what the network has to make up for.

# %%
print(f"SNR ratio between 600 and 10 photons: {photon_snr(600) / photon_snr(10):.2f}")

# %% [markdown]
# ## How restorations are scored
#
# To compare a restoration *y* with the ground truth *g* fairly, the paper (and CARE Lab, in
# `cc.evaluate`) first normalizes *g* to a unit range, then fits *y* to it with the best scale and
# offset (so a restoration is not penalized for a different brightness), and only then computes
# **NRMSE** (error, lower is better), **SSIM** (structural similarity, 1 is perfect) and **PSNR** (dB,
# higher is better). Here is how the raw noisy volume scores at different light doses:

# %%
rows = []
for photons in (2, 8, 32, 128, 512):
    noisy, info = cc.simulate_photon_noise(clean, photons, background=2, read_noise=1, seed=1)
    m = cc.evaluate(noisy, clean, axes="ZYX")
    rows.append({"photons": photons, "snr": info["snr_peak"], **m})
    print(f"{photons:4d} photons   SNR {info['snr_peak']:5.1f}   SSIM {m['ssim']:.3f}   NRMSE {m['nrmse']:.3f}   PSNR {m['psnr']:.1f} dB")
results["dose_table"] = rows
fig, ax = plt.subplots(1, 3, figsize=(10, 3.4))   # (the slider's pictures, three of them, in any copy)
for a, photons in zip(ax, (2, 32, 512)):
    noisy, _ = cc.simulate_photon_noise(clean, photons, background=2, read_noise=1, seed=1)
    a.imshow(noisy[len(noisy) // 2], cmap="gray")
    a.set_title(f"{photons} photons at the peak")
    a.axis("off")
plt.show()

# %% [markdown]
# From 2 to 8 photons the scores barely move: the noise still swamps the nuclei, and the fit that scores an
# image (its best scale and offset) shrinks so noisy an image towards a flat one, which scores about as
# badly at either dose. SSIM, which compares the structure of small windows, stays near 0.1 until the
# nuclei stand out of the noise, and climbs steeply after that (between 32 and 128 photons here).

# %% [markdown]
# ## A first restoration
#
# Now the real thing, as short as possible: make training pairs at 8 photons from a few simulated
# volumes, cut them into small patches, train a network for a time budget and restore a volume it has
# never seen. (Notebooks 2 to 4 take each step slowly.)

# %%
shape = (16, 64, 64) if QUICK else (32, 128, 128)
pairs = []
for seed in range(3):
    high, _ = cc.nuclei_volume(shape, seed=10 + seed)
    low, _ = cc.simulate_photon_noise(high, 8, background=2, read_noise=1, seed=20 + seed)
    pairs.append((low, high))

config = cc.care_config("ZYX", **(QUICK_TRAINING if QUICK else dict(time_limit=90)))
patches = cc.create_patches(pairs, config.patch_size, axes="ZYX", n_patches_per_image=32 if QUICK else 128)
model = cc.create_model(config, HERE / "model")
result = model.train(patches)
print("training:", result.message or result.status)

# %%
truth, _ = cc.nuclei_volume(shape, seed=99)
noisy, _ = cc.simulate_photon_noise(truth, 8, background=2, read_noise=1, seed=199)
restored = model.predict(noisy, axes="ZYX")
results["input"] = cc.evaluate(noisy, truth, axes="ZYX")
results["care"] = cc.evaluate(restored, truth, axes="ZYX")
# two classical filters for comparison, tuned on this volume's ground truth (notebook 4 compares with them all)
by_ssim, by_nrmse = best_baseline(tune_baselines([(noisy, truth)], axes="ZYX", names=["gaussian", "tv"]))
results["best_baseline"] = {"name": by_ssim.label() if by_ssim.name == by_nrmse.name else f"{by_ssim.name} / {by_nrmse.name}",
                            "ssim": by_ssim.scores(noisy, truth, axes="ZYX")["ssim"],
                            **{k: v for k, v in by_nrmse.scores(noisy, truth, axes="ZYX").items() if k != "ssim"}}
for name, m in (("input", results["input"]), (f"best filter: {results['best_baseline']['name']}", results["best_baseline"]),
                ("CARE", results["care"])):
    print(f"{name:34s} SSIM {m['ssim']:.3f}   NRMSE {m['nrmse']:.3f}   PSNR {m['psnr']:.1f} dB")
for sentence in verdict({"input": results["input"], results["best_baseline"]["name"]: results["best_baseline"],
                         "CARE": results["care"]}):
    print(sentence + ".")

fig, ax = plt.subplots(1, 3, figsize=(10, 3.4))
for a, (title, img) in zip(ax, [("input (8 photons)", noisy), ("CARE", restored), ("ground truth", truth)]):
    a.imshow(img[len(img) // 2], cmap="gray")
    a.set_title(title)
    a.axis("off")
plt.show()

with open(HERE / "results.json", "w") as f:
    json.dump(results, f, indent=1, default=float)

# %% [markdown]
# The filter's row is a ceiling no filter reaches on real data: its settings were chosen on this volume's
# ground truth, and each score at its own best setting (SSIM at the setting best in SSIM, NRMSE and PSNR at
# the one best in NRMSE; where the two are different filters, the row names both). The sentence under the
# table says which one wins. CARE learned from other volumes and never saw this one or its truth.

# %% [markdown]
# ## Exercises
#
# 1. **Halve the light dose.** Train again with pairs at 4 photons instead of 8 (both places). How
#    much does the input's SSIM drop, and how much does CARE's? Which one suffers more?
# 2. **Is the ground truth always needed?** Every metric in the table needs one. On a *real* sample,
#    where you have no ground truth at all, how could you still judge a restoration? (Hints: acquire
#    one field of view at a high light dose too; notebook 6's intervals and disagreement.)

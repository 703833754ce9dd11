"""Writes the teaching notebooks (without outputs). Run: python notebooks/_make.py"""
import json
from pathlib import Path

HERE = Path(__file__).parent
SETUP = """import os
QUICK = os.environ.get("CARE_QUICK", "0") != "0"   # tests run every notebook in quick mode
import numpy as np
import carecore as cc"""


def nb(cells):
    out = []
    for i, (kind, text) in enumerate(cells):
        c = {"cell_type": kind, "id": f"cell-{i:02d}", "metadata": {}, "source": text.strip("\n").splitlines(keepends=True)}
        if kind == "code":
            c.update(outputs=[], execution_count=None)
        out.append(c)
    return {"cells": out, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                       "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


NOTEBOOKS = {
"01_training_pairs.ipynb": [
("markdown", """
# 1 · Training pairs
CARE learns from pairs of low- and high-quality images. Here we make them with the simulators:
a photon budget (less light → more noise) and an anisotropic degradation (coarse axial sampling).
"""),
("code", SETUP),
("code", """
clean, params = cc.nuclei_volume((16, 64, 64) if QUICK else (32, 128, 128), seed=0)
low, noise = cc.simulate_photon_noise(clean, peak_photons=8, background=2, read_noise=1, seed=1)
print("SNR at the brightest pixel:", round(noise["snr_peak"], 2))
print(cc.evaluate(low, clean, axes="ZYX"))
"""),
("markdown", "SNR grows with the square root of the light dose: 60-fold less light is about 7.7-fold lower SNR."),
("code", """
from carecore.simulate import photon_snr
print(photon_snr(600) / photon_snr(10))
"""),
("code", """
aniso, p = cc.simulate_anisotropic(clean, 4, axes="ZYX", axis="Z", psf_sigma=2.0, seed=2)
print("isotropy ratio clean:", round(cc.isotropy_ratio(clean), 3), "degraded:", round(cc.isotropy_ratio(aniso), 3),
      "| factor kept exactly:", p["factor"])
"""),
("code", """
patches = cc.create_patches([(low, clean)], (8, 32, 32), axes="ZYX", n_patches_per_image=32)
print(patches.X.shape, patches.axes, "validation:", patches.n_val)
"""),
],
"02_denoising_3d.ipynb": [
("markdown", """
# 2 · Denoising in 3D
Train a CARE network on simulated nuclei, restore a new volume, and compare with classical filters
using the paper's metric protocol.
"""),
("code", SETUP),
("code", """
shape = (16, 48, 48) if QUICK else (32, 128, 128)
pairs = []
for s in range(3):
    clean, _ = cc.nuclei_volume(shape, seed=s)
    noisy, _ = cc.simulate_photon_noise(clean, 8, background=1, seed=100 + s)
    pairs.append((noisy, clean))
patches = cc.create_patches(pairs, (8, 32, 32) if QUICK else (16, 64, 64), axes="ZYX", n_patches_per_image=48)
"""),
("code", """
# a time budget: the network, the learning-rate schedule and the validations are planned for it
config = cc.care_config("ZYX", time_limit=20 if QUICK else 180, patch_size=(8, 32, 32) if QUICK else (16, 32, 32))
model = cc.create_model(config, "models/denoise3d")
def show(e):
    if e["kind"] == "baseline":
        print(f"best classical filter on the validation patches: {e['name']} {e['params']}, SSIM {e['val_ssim']:.3f}")
    elif e["kind"] == "epoch":
        print(f"epoch {e['epoch']}: val_loss {e['val_loss']:.4f}  val SSIM {e['val_ssim']:.3f}")
result = model.train(patches, callback=show)
result.status
"""),
("code", """
clean, _ = cc.nuclei_volume(shape, seed=42)
noisy, _ = cc.simulate_photon_noise(clean, 8, background=1, seed=142)
restored = model.predict(noisy, axes="ZYX")          # tiled automatically from a memory budget
# every classical filter tuned on this very volume with its ground truth (an advantage CARE does not get)
from carecore.baselines import tune_baselines
tuned = tune_baselines([(noisy, clean)], axes="ZYX")
print(f"{'input':24s} SSIM {cc.evaluate(noisy, clean, axes='ZYX')['ssim']:.3f}")
for t in tuned.values():
    print(f"{t.label():24s} SSIM {t.ssim:.3f}  (best NRMSE {t.nrmse:.3f})")
m = cc.evaluate(restored, clean, axes="ZYX")
print(f"{'CARE':24s} SSIM {m['ssim']:.3f}  NRMSE {m['nrmse']:.3f}")
"""),
("code", """
import matplotlib.pyplot as plt
fig, ax = plt.subplots(1, 3, figsize=(9, 3))
for a, (t, img) in zip(ax, [("input", noisy), ("CARE", restored), ("ground truth", clean)]):
    a.imshow(img[img.shape[0] // 2], cmap="gray"); a.set_title(t); a.axis("off")
"""),
],
"03_reliability.ipynb": [
("markdown", """
# 3 · How far can we trust it?
A probabilistic network predicts a Laplace distribution per pixel; an ensemble adds the disagreement D;
the calibration curve checks that 90 % intervals contain the truth 90 % of the time.
"""),
("code", SETUP),
("code", """
from carecore.uncertainty import train_ensemble, predictive_readouts, measure_calibration
shape = (16, 48, 48) if QUICK else (32, 128, 128)
pairs = [(cc.simulate_photon_noise(c, 8, seed=10 + s)[0], c) for s, c in enumerate(cc.nuclei_volume(shape, seed=s)[0] for s in range(3))]
patches = cc.create_patches(pairs, (8, 32, 32) if QUICK else (16, 64, 64), axes="ZYX", n_patches_per_image=48)
config = cc.care_config("ZYX", quick=QUICK, probabilistic=True, epochs=2 if QUICK else 20, steps_per_epoch=5 if QUICK else 100)
ensemble = train_ensemble(patches, config, "models/ensemble", n_members=2 if QUICK else 5)
"""),
("code", """
clean, _ = cc.nuclei_volume(shape, seed=7)
noisy, _ = cc.simulate_photon_noise(clean, 8, seed=17)
out = ensemble.predict(noisy, axes="ZYX")
print("mean disagreement:", float(out["disagreement"].mean()))
# the ensemble's 90 % interval comes from the mixture of its members
r = predictive_readouts(out["member_means"], out["member_scales"], members=True, confidence=0.9)
print("mean width of the 90 % interval:", float(r["width"].mean()))
"""),
("markdown", """
Calibration is measured where the network makes its promise: the ground truth normalized as the
training targets were, the predicted distributions as they are. Nothing is fitted to the ground
truth first (a fit would hide a biased mean).
"""),
("code", """
curve = measure_calibration(clean, out["member_means"], out["member_scales"], image=noisy, axes="ZYX",
                            percentiles=ensemble.config.percentiles)
print("ECE:", round(curve["ece"], 3))
"""),
],
}

if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        (HERE / name).write_text(json.dumps(nb(cells), indent=1) + "\n")
        print("wrote", name)

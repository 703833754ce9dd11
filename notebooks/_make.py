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
print("isotropy ratio clean vs degraded:", round(cc.isotropy_ratio(clean), 3) if clean.shape[0] == clean.shape[1] else "n/a",
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
config = cc.care_config("ZYX", quick=QUICK, epochs=3 if QUICK else 30, steps_per_epoch=10 if QUICK else 100)
model = cc.CARE(config, "models/denoise3d")
result = model.train(patches, callback=lambda e: print(f"epoch {e['epoch']}: val_loss {e['val_loss']:.4f}") if e["kind"] == "epoch" else None)
result.status
"""),
("code", """
clean, _ = cc.nuclei_volume(shape, seed=42)
noisy, _ = cc.simulate_photon_noise(clean, 8, background=1, seed=142)
restored = model.predict(noisy, axes="ZYX")          # tiled automatically from a memory budget
for name, img in {"input": noisy, "gaussian": cc.baseline("gaussian", noisy, axes="ZYX"), "CARE": restored}.items():
    m = cc.evaluate(img, clean, axes="ZYX")
    print(f"{name:9s} SSIM {m['ssim']:.3f}  NRMSE {m['nrmse']:.3f}")
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
from carecore.uncertainty import train_ensemble, laplace_interval, calibration_curve
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
mean, scale = ensemble.members[0].predict(noisy, axes="ZYX")
lower, upper = laplace_interval(mean, scale, 0.9)
"""),
("code", """
g, _ = cc.percentile_normalize(clean, 0.1, 99.9, axes="ZYX")
a, b = cc.affine_fit(mean, g)
curve = calibration_curve(g, a * mean + b, abs(a) * scale)
print("ECE:", round(curve["ece"], 3))
"""),
],
}

if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        (HERE / name).write_text(json.dumps(nb(cells), indent=1) + "\n")
        print("wrote", name)

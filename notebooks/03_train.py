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
# # 3 · Training a network
#
# Training shows the network a batch of low patches, compares its output with the high patches, and
# nudges its weights to do a little better; thousands of such steps make a restoration network. After
# every *epoch* (a block of steps) it is scored on the **validation patches**, which it never trains on.
#
# On a laptop you cannot train for days, so CARE Lab trains for a **time budget**: it times a few steps,
# plans how many steps fit, raises the learning rate from zero over the first moments (a *warm-up*: full-size
# steps on fresh weights can throw the network off), then lowers it so that it reaches zero when the time is
# up, and keeps the weights of the epoch with the lowest validation loss. Its plan is printed before the first step.
#
# The chart below follows the training live: the training loss (should go down), the validation SSIM
# (should go up) and, as a dashed line, the validation SSIM of the **best classical filter** (Gaussian,
# median, bilateral, total variation, non-local means, each tuned on the same validation patches with
# their ground truth). The moment CARE's curve crosses that line, the network is worth its training.
#
# Workshop time: about 4 minutes (3 of them training).

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt

import carecore as cc

QUICK = os.environ.get("CARELAB_QUICK", "") not in ("", "0")        # the app's quick switch
# Quick mode (for tests, seconds) trains a fixed 8 × 100 steps of a small network, whatever the machine's speed,
# starting from a tuned Gaussian filter's answer (residual_sigma="auto"), in float32 so that every CPU computes
# the same: enough to beat the tuned filters on the tiny demo. Workshop mode uses the budget's own recipe.
QUICK_TRAINING = dict(quick=True, unet_filters=16, batch_size=2, patch_size=(16, 32, 32), epochs=8,
                      steps_per_epoch=100, learning_rate=3e-3, residual_sigma="auto", precision="float32")
OUT = Path(os.environ.get("CARELAB_NOTEBOOK_OUT", "work")).resolve()  # default: notebooks/work/
HERE = OUT / "03_train"
HERE.mkdir(parents=True, exist_ok=True)
DEMO = OUT / ("demo-tiny" if QUICK else "demo")
if not (DEMO / "denoising3d").exists():
    cc.write_demo_data(DEMO, tasks=["denoising3d"], size="tiny" if QUICK else "small")
results = {"quick": QUICK}

# %% [markdown]
# ## Configure
#
# `care_config` builds a validated configuration. With a `time_limit` of up to 30 minutes it picks a
# smaller, faster network that learns more in a short budget. Print it to see every choice. (Quick
# mode trains a fixed 8 × 100 steps instead, so that tests do not depend on the machine's speed.)

# %%
if QUICK:
    config = cc.care_config("ZYX", **QUICK_TRAINING)
else:       # a 3-minute budget
    config = cc.care_config("ZYX", time_limit=180)
for name in ("patch_size", "unet_filters", "unet_depth", "batch_size", "learning_rate", "epochs", "time_limit"):
    print(f"{name:14s} {getattr(config, name)}")

d = DEMO / "denoising3d"
patches = cc.create_patches(cc.find_pairs(d / "train" / "low", d / "train" / "high"), config.patch_size,
                            n_patches_per_image=128 if QUICK else 256)
print("patches:", patches.n_train, "for training,", patches.n_val, "for validation")
# (the demo has few images: its validation patches are few, so the validation SSIM below is an estimate from
# them; notebook 4 scores a whole test volume)

# %% [markdown]
# ## The live chart
#
# The chart comes from the CARE Lab app (`carelab.viewers.Curves`, a bqplot chart) when it is
# installed, else a plain bqplot figure. The training **callback** receives an event after every step
# and every epoch and only updates the chart.

# %%
try:
    from carelab.viewers import Curves
except ImportError:          # the app is not installed: the same chart in a few lines of bqplot
    import bqplot as bq
    import ipywidgets as W

    class Curves(W.VBox):
        def __init__(self, title, names, *, xlabel="", ylabel="", dashed=(), markers=(), **_):
            xs, ys = bq.LinearScale(), bq.LinearScale()
            self.lines = {n: bq.Lines(x=[], y=[], scales={"x": xs, "y": ys}, labels=[n], display_legend=True,
                                      colors=[c], line_style="dashed" if n in dashed else "solid",
                                      **({"marker": "circle"} if n in markers else {}))
                          for n, c in zip(names, ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"])}
            super().__init__([bq.Figure(marks=list(self.lines.values()), title=title,
                                        axes=[bq.Axis(scale=xs, label=xlabel),
                                              bq.Axis(scale=ys, orientation="vertical", label=ylabel)])])

        def set_curve(self, name, x, y, label=None):
            with self.lines[name].hold_sync():
                self.lines[name].x, self.lines[name].y = list(x), list(y)
                if label:
                    self.lines[name].labels = [label]

from IPython.display import display

loss_chart = Curves("loss", ["training", "validation"], xlabel="epoch", ylabel="loss", markers={"validation"})
ssim_chart = Curves("validation SSIM", ["CARE", "best filter"], xlabel="epoch", ylabel="SSIM",
                    markers={"CARE"}, dashed={"best filter"})
display(loss_chart, ssim_chart)

log = {"batch": [], "epoch": [], "baseline": None, "plan": None, "end": None}


def on_event(event):
    """Store the event and redraw the chart: no computation here."""
    kind = event["kind"]
    if kind == "batch":
        log["batch"].append((event["epoch"] - 1 + event["step"] / event["steps"], event["loss"]))
        if event["step"] % 5 == 0 or event["step"] == event["steps"]:
            loss_chart.set_curve("training", *zip(*log["batch"]))
    elif kind == "epoch":
        log["epoch"].append(event)
        x = [e["epoch"] for e in log["epoch"]]
        loss_chart.set_curve("validation", x, [e["val_loss"] for e in log["epoch"]])
        ssim_chart.set_curve("CARE", x, [e["val_ssim"] for e in log["epoch"]])
    elif kind == "baseline":
        log["baseline"] = event
        ssim_chart.set_curve("best filter", [0, config.epochs], [event["val_ssim"]] * 2,
                             label=f"best filter: {event['name']}")
    elif kind == "plan":   # the steps, the validations and the learning rate's schedule, before the first step
        log["plan"] = event["message"]
        print(event["message"])
    elif kind == "end":
        log["end"] = event
    if kind in ("epoch", "baseline") and log["baseline"] and log["epoch"]:   # keep the line under the points
        ssim_chart.set_curve("best filter", [0, max(config.epochs, log["epoch"][-1]["epoch"])],
                             [log["baseline"]["val_ssim"]] * 2)

# %% [markdown]
# ## Train
#
# The model is saved into its folder after every epoch (weights, configuration, normalization, history
# and a run card with versions and seeds), so a crash loses at most one epoch.

# %%
model = cc.create_model(config, HERE / "model")
result = model.train(patches, callback=on_event)
print("training:", result.message or result.status, f"({result.seconds:.0f} s)")
# the weights kept are the epoch's with the lowest validation loss, which need not be the epoch of the highest
# validation SSIM
kept = result.kept or result.history[-1]   # (none kept: not one finite validation loss)
best = max(log["epoch"], key=lambda e: e["val_ssim"])
print(f"weights kept: epoch {kept['epoch']}, the lowest validation loss ({kept['val_loss']:.4f}), validation SSIM "
      f"{kept['val_ssim']:.4f}" + ("" if best["epoch"] == kept["epoch"] else
                                   f" · highest validation SSIM {best['val_ssim']:.4f} (epoch {best['epoch']})")
      + f" · best filter {log['baseline']['name']}: {log['baseline']['val_ssim']:.4f}")
# the same curves as a plain figure (the live chart above needs Jupyter's widgets; this one stays in a saved notebook)
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot([e["epoch"] for e in log["epoch"]], [e["val_ssim"] for e in log["epoch"]], "o-", label="CARE")
ax.axhline(log["baseline"]["val_ssim"], ls="--", color="gray", label=f"best filter: {log['baseline']['name']}")
ax.set_xlabel("epoch")
ax.set_ylabel("validation SSIM")
ax.legend()
plt.show()
results.update(model_dir=str(HERE / "model"), status=result.status, epochs=[
    {k: e[k] for k in ("epoch", "loss", "val_loss", "val_ssim")} for e in log["epoch"]],
    baseline={k: log["baseline"][k] for k in ("name", "val_ssim")}, seconds=result.seconds, plan=log["plan"],
    kept_epoch=kept["epoch"])

# %% [markdown]
# The saved model opens again anywhere (`cc.load_model`), in notebook 4, in the app (step 3) or on the
# command line (`carecore predict --model ...`).

# %%
again = cc.load_model(HERE / "model")
print(type(again).__name__, "·", again.count_params(), "parameters ·", sorted(p.name for p in (HERE / "model").iterdir()))
with open(HERE / "results.json", "w") as f:
    json.dump(results, f, indent=1, default=float)

# %% [markdown]
# ## What over-fitting looks like
#
# With too little data the network memorizes its training patches: the **training** loss keeps falling
# while the **validation** loss stops improving and turns up again. The validation SSIM then stalls or
# drops. Because CARE Lab keeps the weights of the epoch with the lowest validation loss, an over-fitted run still
# returns its best moment, but more data (or a shorter training) would have done better.
#
# ## Exercises
#
# 1. **Over-fit on purpose.** Make patches with `n_patches_per_image=4`, train with the same budget
#    into a new folder and compare the two loss charts. When does validation stop improving? (With so few
#    patches only one or two are set aside for validation: its curve is a rough estimate, and may flatten
#    rather than turn up.)
# 2. **Budget.** Double the budget. Does the validation SSIM keep climbing, and by how much per minute?
#    Where would you stop for a real experiment?

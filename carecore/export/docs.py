"""The human side of a bioimage.io package: cover image, README and descriptions from the run card."""
from __future__ import annotations

import math

import numpy as np


#: What each exportable kind restores, for the descriptions.
KIND_WORDS = {"care": "restoration", "subdiffraction": "sub-diffraction restoration (trained on simulated structures "
                                                        "seen through the microscope's PSF)"}


def summary(config):
    """One-line description of the model."""
    kind = "probabilistic " if config.probabilistic else ""
    what = KIND_WORDS.get(config.kind, "restoration")
    return (f"CARE {kind}{what} network ({config.ndim}D U-Net, depth {config.unet_depth}, "
            f"{config.unet_filters} filters, {config.n_channel_in}->{config.n_channel_out} channel(s)) "
            "trained with CARE Lab (carecore)")


def output_description(config, postprocessing, *, by_training=False):
    """The output's description; ``by_training``: the fixed gain/offset are the training inputs' percentiles
    (every image mapped back as carecore maps it), else the test image's."""
    whose = "the training inputs'" if by_training else "the test image's"
    if config.probabilistic:   # (at most 128 characters: bioimage.io's limit)
        units = f"in {whose} units (fixed gain/offset per channel)" if postprocessing == "scale_linear" \
            else "in normalized units"
        return f"Laplace mean and scale per pixel (channels mean*, scale*) {units}"
    return {"scale_linear": f"restoration in {whose} intensity units (fixed gain/offset)",
            "scale_mean_variance": "restoration with the input's mean and standard deviation",
            "none": "restoration in normalized units (the input's low percentile ~0, high ~1)"}[postprocessing]


def _slice2d(a):
    """(spatial..., C) -> the first channel's middle Z slice (or the image) as 2D."""
    a = np.asarray(a, np.float32)[..., 0]
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def cover_png(x, pred, config):
    """PNG bytes: input | restoration, each with its own display range, 2:1."""
    from ..render import display_range, to_png

    panels = []
    for a in (_slice2d(x), _slice2d(pred[..., : config.n_channel_out])):
        lo, hi = display_range(a)
        panels.append(np.clip((a - lo) / (hi - lo), 0, 1))
    gap = np.ones((panels[0].shape[0], max(2, panels[0].shape[1] // 32)), np.float32)
    row = np.concatenate([panels[0], gap, panels[1]], axis=1)
    h = max(256, row.shape[0])
    return to_png(row, 0.0, 1.0, size=(h, 2 * h))


def _fmt(v, nd=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}g}" if isinstance(v, float) else str(v)


def _status(card):
    """The run card's status in words (a folder saved while training, whose run never ended: said so).

    >>> _status({"status": "running"}), _status({"status": "interrupted"}), _status({})
    ('running when last saved: interrupted, or its process ended', 'interrupted', 'n/a')
    """
    status = card.get("status", "n/a")
    return "running when last saved: interrupted, or its process ended" if status == "running" else status


def _residual_base(c):
    """' (added to ...)': what a residual network's correction is added to, when not the plain input."""
    smoothed = isinstance(c.residual_sigma, (int, float)) and c.residual_sigma
    if not (smoothed or c.residual_affine):
        return ""
    base = "the input" + (f" smoothed by a Gaussian of sigma {c.residual_sigma:g} px" if smoothed else "")
    if c.residual_affine:
        base += ", times a gain plus an offset (" + "; ".join(f"gain {g:.4g}, offset {o:.4g}"
                                                          for g, o in c.residual_affine) + ")"
    return f" (added to {base})"


def _output_smoothing(c, card):
    """The README line on ``output_sigma`` (none without it)."""
    sigma = c.output_sigma
    if not sigma or sigma == "auto":
        return []
    chosen = (card.get("output_smoothing") or {}).get("auto")
    how = " (chosen when training ended: the lowest RMSE on the validation patches)" if chosen else ""
    return [f"- Output smoothing: the mean is smoothed by a Gaussian of sigma {sigma:g} px{how}; the network's "
            "last layers do it (fixed weights), so every weight format restores as carecore does."]


def readme(name, model, facts):
    """The package's documentation (Markdown): intended use, training data, validation, limitations."""
    c, card = model.config, model.run_card
    hist = model.history[-1] if model.history else {}
    ssims = [r.get("val_ssim") for r in model.history if r.get("val_ssim") is not None
             and math.isfinite(r.get("val_ssim"))]
    base = card.get("validation_baseline") or {}
    sources = card.get("data_sources") or []
    versions = card.get("versions") or {}
    post = facts["postprocessing"]
    lo, hi = facts["norm"].lo, facts["norm"].hi
    lines = [
        f"# {name}", "",
        summary(c) + ".", "",
        "## Intended use", "",
        f"Restores {c.ndim}D fluorescence microscopy images ({c.axes}, {c.n_channel_in} channel(s)) like the ones "
        "it was trained on: same microscope, sample type, staining and acquisition settings. A CARE network "
        "predicts what it learned from its training pairs; on other data it can produce plausible but wrong "
        "structures. Check restorations against ground truth or with the reliability tools of CARE Lab.", "",
        "## Processing", "",
        f"- Input: raw intensities; the package normalizes each channel with its {c.percentiles[0]:g} and "
        f"{c.percentiles[1]:g} percentiles (`scale_range`), exactly as carecore does." if not facts.get("by_training") else
        f"- Input: raw intensities; the package scales each channel by the {c.percentiles[0]:g} and "
        f"{c.percentiles[1]:g} percentiles of the training inputs (a fixed `scale_linear`: low "
        f"{_fmt(float(lo[0]))}, high {_fmt(float(hi[0]))} for channel 0), exactly as carecore does: images "
        "acquired like the training images are seen at the noise level the network learned.",
    ]
    if post == "scale_linear" and facts.get("by_training"):
        lines.append("- Output: mapped back with the same values (`scale_linear`), exactly as carecore does, for "
                     "every image" + ("; the Laplace scale channels (widths) are multiplied by `hi - lo` only (one "
                                      "gain and offset per output channel)." if c.probabilistic else "."))
    elif post == "scale_linear":
        lines.append(f"- Output: mapped back with a fixed `scale_linear` (gain {_fmt(float(hi[0] - lo[0]))}, offset "
                     f"{_fmt(float(lo[0]))} for channel 0): the percentile range of the whole test image given "
                     "(the test tensor is its centre crop, the test output the package's output on it). carecore "
                     "maps every image back with its *own* percentiles; the package reproduces that exactly only for "
                     "images with the test image's range and otherwise returns the restoration in the test image's "
                     "units.")
    elif post == "scale_mean_variance":
        lines.append("- Output: `scale_mean_variance` gives it the input's mean and standard deviation. This differs "
                     "from carecore (which maps back with the input's percentiles): the restoration's contrast is "
                     "stretched by the ratio of the noisy input's to the restoration's standard deviation.")
    else:
        lines.append("- Output: in normalized units (no postprocessing). carecore's output is "
                     "`output * (hi - lo) + lo` with the " + ("training inputs' percentile values `lo`, `hi` above"
                                                              if facts.get("by_training") else
                                                              "input's percentile values `lo`, `hi`")
                     + ("; the Laplace scale channels scale by `hi - lo` only." if c.probabilistic else "."))
    lines += [
        f"- Tiling: sides must be {facts['min_size']} + a multiple of {c.divisor}; the halo ({facts['halo']} "
        "pixels per side) is the network's receptive-field radius (or the smoothing filter's, if wider). Within "
        "the halo of the image's edge the result depends on how the consumer pads the image (bioimageio.core "
        "reflects it; carecore's network pads with zeros), so the outermost pixels differ somewhat from "
        "carecore's; further in, the package and carecore agree.",
        "",
        "## Training", "",
        f"- Network: {c.unet_depth} poolings, {c.unet_filters} first-level filters, kernel {c.kernel}, "
        f"{c.unet_n_conv} convolutions per level, residual {c.residual}{_residual_base(c)}, loss {c.loss}, "
        f"{card.get('parameters', model.count_params())} parameters.",
        *_output_smoothing(c, card),
        f"- Epochs: {card.get('epochs_done', len(model.history))} ("
        + (f"{card['steps_done']} steps, " if card.get("steps_done") else "")
        + f"{_fmt(card.get('training_seconds'), 3)} s, "
        f"status {_status(card)}); seed {c.seed}; precision {c.precision}.",
        f"- Training data: {len(sources)} pair(s)" + (": " + ", ".join(f"`{s['low']}` -> `{s['high']}`"
                                                                       for s in sources[:5]) if sources else "")
        + (f" (patches sha256 `{card['data_sha256'][:16]}…`)" if card.get("data_sha256") else "") + ".",
        f"- Software: carecore {versions.get('carecore', 'n/a')}, Keras {versions.get('keras', 'n/a')}, "
        f"TensorFlow {versions.get('tensorflow', 'n/a')}.",
        "",
        "## Validation", "",
        # (a probabilistic model's best is chosen by its mean's validation MAE, which the card holds: not its NLL)
        f"- Best {'validation MAE of the mean' if card.get('best_by') == 'val_laplace_mae' else 'validation loss'}: "
        f"{_fmt(card.get('best_val_loss'))}; validation SSIM at the last epoch: "
        f"{_fmt(hist.get('val_ssim'))} (best {_fmt(max(ssims) if ssims else None)}).",
    ]
    if base:
        lines.append(f"- Best tuned classical filter on the same patches: {base.get('name')} "
                     f"(validation SSIM {_fmt(base.get('val_ssim'))}).")
    lines += [
        f"- The weight formats reproduce carecore's float32 prediction on the test input ({'×'.join(map(str, facts['test_shape'][:-1]))}) "
        "to " + ", ".join(f"{k} {v:.1e}" for k, v in facts["formats"].items()) + " of the output range.",
    ]
    if facts.get("bfloat16_difference") is not None:
        lines.append(f"- The model was trained in {c.precision}; the package computes in float32, which differs from "
                     f"carecore's default prediction by up to {facts['bfloat16_difference']:.1e} of the output range.")
    lines += [
        "",
        "## Limitations", "",
        "- Trained for one kind of data; not a general denoiser. Out-of-distribution inputs are not detected by "
        "the package.",
        ("- Inputs are scaled by the training inputs' percentiles: images taken with another gain, offset or "
         "laser power are scaled wrongly; retrain, or export a model trained to scale each image by its own "
         "percentiles (`care_config(..., input_normalization='image')`)."
         if facts.get("by_training") else
         "- Percentiles are computed per image: very sparse or saturated images normalize differently from the "
         "training images."),
        "",
        "## Open it elsewhere", "",
        "- **Fiji (deepImageJ)**: Plugins > DeepImageJ > DeepImageJ Install Model > *From ZIP file*, choose this "
        "file; then DeepImageJ Run on an open image (ONNX or TensorFlow weights).",
        "- **KNIME**: read the unzipped `weights_tf_saved_model.zip` with the TensorFlow Network Reader node "
        "(serving signature `serve`), or `weights.onnx` with KNIME's ONNX nodes; normalize with the percentiles "
        "above before and map back after.",
        "- **Python**: `bioimageio.core.predict(model='this.zip', inputs=image)`, "
        "`carecore predict --model this.zip --in image.tif --out restored.tif`, or "
        "`keras.models.load_model('weights.keras')` on normalized input (no carecore needed).",
        "",
        "## Citation", "",
        "Weigert et al., Content-aware image restoration: pushing the limits of fluorescence microscopy. "
        "Nature Methods 15, 1090-1097 (2018). doi:10.1038/s41592-018-0216-7", "",
    ]
    return "\n".join(lines)

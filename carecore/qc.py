"""The quality-control report: ``carecore qc`` (CARE-NOTES §4, §5–§7).

For each pair of a low-quality image and its ground truth: NRMSE / SSIM / PSNR with the paper's
protocol for the input, classical baselines and CARE; SSIM and error maps; for probabilistic models
the calibration curve and ECE; for ensembles the disagreement map; an out-of-distribution warning
when the model's uncertainty on an image is far above its level on the validation data. Written as
``report.json``, PNG figures and one ``index.html`` that shows them.
"""
from __future__ import annotations

import html
import json
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ._atomic import REPORT_FOLDER, check_replaceable, fresh_tmp, swap_in
from .axes import with_channel_of
from .errors import CareError, collect_warnings
from .metrics import GT_PERCENTILES, affine_fit, evaluate, z_slices_hint
from .normalize import percentile_normalize
from .prediction.frames import FRAME_AXES
from .progress import check_stop, report
from .uncertainty import Ensemble, disagreement, mixture_mean_variance, ood_check



def _ssim_map(y, g):
    from scipy import ndimage as ndi

    f = lambda v: ndi.gaussian_filter(v, 1.5, truncate=3.5)  # noqa: E731
    mu_y, mu_g = f(y), f(g)
    syy, sgg, syg = f(y * y) - mu_y**2, f(g * g) - mu_g**2, f(y * g) - mu_y * mu_g
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_y * mu_g + c1) * (2 * syg + c2)) / ((mu_y**2 + mu_g**2 + c1) * (syy + sgg + c2))


def rank_correlation(a, b, *, n=200_000, seed=0):
    """Spearman's rank correlation of two maps of one shape (at most ``n`` pixels drawn at random), or None
    where either is constant: how far one (an ensemble's disagreement D) says where the other (CARE's error)
    is large."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if a.size > n:
        at = np.random.default_rng(seed).choice(a.size, n, replace=False)
        a, b = a[at], b[at]
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    rho = float(spearmanr(a, b)[0])
    return rho if np.isfinite(rho) else None


def _plane(a, axes):
    """The YX plane a figure shows of an image with ``axes``: its middle Z slice, its first channel (time
    point, sample)."""
    return a[tuple(n // 2 if ax == "Z" else slice(None) if ax in "YX" else 0 for ax, n in zip(axes, a.shape))]


def _figure(path, panels, title, axes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, plots = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, img, cmap, vmin, vmax) in zip(plots[0], panels):
        im = ax.imshow(_plane(img, axes), cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    shape = panels[0][1].shape
    if "Z" in axes:   # (which slice of how many)
        n = shape[axes.index("Z")]
        title += f" · Z slice {n // 2} of 0-{n - 1}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _calibration_figure(path, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for name, c in curves.items():
        ax.plot(c["confidence"], c["accuracy"], "o-", ms=3, label=f"{name} (ECE {c['ece']:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy (ground truth inside the interval)")
    ax.legend(fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


#: How the quality report's progress names the filters' tuning, its first stage (``progress(done, total,
#: f"{TUNING}: {what}")``, counted over the grid points; then the images are counted).
TUNING = "tuning the filters"


def quality_report(models, low_dir, gt_dir, out_dir, *, axes=None, baselines=None, normalization=None, progress=None,
                   stop=None):
    """Write the QC report for ``models`` (a model folder, an ensemble folder, or several model folders).

    Every classical baseline is tuned on these images with their ground truth
    (:func:`~carecore.baselines.tune_output_baselines`, the full grids, each filter on each of the model's
    classical starts onto the output's grid: nearest, linear and cubic interpolation for upsampling and
    isotropic models, the maximum and surface-following projections for projections) and each metric is reported at the
    filter's best parameters for that metric; the report shows the chosen values. Calibration is
    measured without any fit (:meth:`~carecore.CARE.calibration`).

    Parameters
    ----------
    baselines : list of str, optional
        Baselines to tune and show (default: all available; ``[]`` for none).
    normalization : {"image", "training"}, optional
        How each input is scaled (default: the model's ``input_normalization``); ``"image"`` for images
        taken with another gain or offset than the training images (their own percentiles).
    progress : callable, optional
        ``progress(done, total, what)``: first over the filters' grid points (``what`` begins with
        :data:`TUNING`), then over the images (``what``: the image's name; ``done`` the images finished).
    stop : callable, optional
        Returns True to stop (between grid points, tiles and images).

    Returns the report as a dict (also written to ``out_dir/report.json``).

    Examples
    --------
    >>> quality_report("models/care", "test/low", "test/high", "qc")  # doctest: +SKIP
    """
    from .baselines import TUNING_MAX_VOXELS, edge_moves, tune_output_baselines
    from .data.pairs import find_pairs, load_pair

    from .models.folder import load_model

    model = load_model(models)
    ens = isinstance(model, Ensemble)
    cfg = model.config
    grid_model = model.members[0] if ens else model
    listing = find_pairs(low_dir, gt_dir)
    out_dir = Path(out_dir)
    check_replaceable(out_dir, REPORT_FOLDER)   # before the work: never a folder of the user's
    rep = {"models": [str(m) for m in ([models] if isinstance(models, (str, Path)) else models)],
           "ensemble": ens, "probabilistic": cfg.probabilistic, "kind": cfg.kind, "images": [], "warnings": [],
           "normalization": normalization or ("training" if cfg.input_normalization == "training"
                                              and grid_model.training_normalization is not None else "image")}
    if listing.unmatched_low or listing.unmatched_high:
        rep["warnings"].append(listing.report().replace("\n", "; "))
    ref = (model.info.get("reference") if ens else model.run_card.get("reference")) or {}
    # a model that makes other channels than it takes (two stains in, one out): its input, and any filter on
    # it, has no counterpart of the ground truth's channels to be scored against; CARE is scored alone
    n_in, n_out = cfg.n_channel_in, cfg.n_channel_out
    other_channels = n_in != n_out
    if other_channels:
        rep["warnings"].append(other_channels_note(n_in, n_out))
    pairs = []
    for pair in listing.pairs:
        low, gt = load_pair(pair, axes=axes, check_shapes=False)  # compared on the output's grid below
        frames = "".join(a for a in low.axes if a in FRAME_AXES)
        if frames:   # before anything is restored
            raise CareError(f"{pair.name}: axes {low.axes} (shape {tuple(low.shape)}) have {frames}; the quality report "
                            "scores single images or volumes: save each time point or sample as a file of its own")
        sp = "".join(a for a in low.axes if a in "ZYX")
        if sp != grid_model.input_spatial_axes:   # before the filters are tuned (a minute and more)
            two_d = grid_model.input_spatial_axes == "YX" and sp == "ZYX"
            plane = two_d and low.shape[low.axes.index("Z")] == 1   # (a 2D image read as a stack by axes="ZYX")
            raise CareError(f"{pair.name}: axes {low.axes} (shape {tuple(low.shape)}), but the model restores "
                            f"{grid_model.input_spatial_axes} images"
                            + ("; this is a single plane: leave out --axes ZYX (axes= in Python), or give YX" if plane else
                               "; the quality report scores single images: save each Z slice as a file of its own, "
                               "or give a model for stacks" if two_d else ""))
        x = np.asarray(low.data, np.float32)
        x_grid = grid_model.on_output_grid(x, axes=low.axes)
        shape = x_grid.shape
        if other_channels:   # the restoration's shape: the input's grid with the model's output channels
            oa = grid_model.output_axes(low.axes)
            if n_out == 1:   # (a one-channel truth saved without C)
                data, gt_axes = with_channel_of(np.asarray(gt.data), gt.axes, oa)
                gt = replace(gt, data=data, axes=gt_axes)
            shape, x_grid = tuple(n_out if a == "C" else n for a, n in zip(oa, shape)), None
        if shape != gt.shape:
            oa = grid_model.output_axes(low.axes)
            hint = z_slices_hint(shape, gt.shape, oa, factor=getattr(cfg, "upsampling_factor", None),
                                 n_input=low.shape[low.axes.index("Z")] if "Z" in low.axes else None)
            raise CareError(f"{pair.name}: the restoration will have shape {shape} (axes {oa}) but the "
                            f"ground truth has {tuple(gt.shape)}; they must be on the same grid to be compared"
                            + (f". {hint}" if hint else ""))
        with collect_warnings() as said:   # (an isotropic model: the voxel size against its factor)
            grid_model.check_spacing(low.spacing, name=pair.name)
        rep["warnings"].extend(said)
        pairs.append((pair, low, gt, x, x_grid))
    tuned = {}
    if pairs and (baselines is None or baselines) and not other_channels:
        tuned = tune_output_baselines(grid_model, [(x, g.data) for _, _, g, x, _ in pairs], axes=pairs[0][1].axes,
                                      names=baselines or None, stop=stop, max_voxels=TUNING_MAX_VOXELS,
                                      progress=lambda d, t, w: report(progress, d, t, f"{TUNING}: {w}"))
    three_d = bool(pairs) and "Z" in grid_model.output_axes(pairs[0][1].axes)

    def edge(name, t, params, start):   # the parameters of a best point at its grid's edge, not tuned past it
        tried = [r["params"] for r in t.grid if r.get("start", "") == (start or "")]
        return sorted({key for key, _ in edge_moves(name, tried, params, three_d=three_d)})

    rep["baselines"] = {n: {"params_ssim": t.params, "params_nrmse": t.params_nrmse, "grid": t.grid,
                            "start_ssim": t.start, "start_nrmse": t.start_nrmse,
                            "edge_ssim": edge(n, t, t.params, t.start), "edge_nrmse": edge(n, t, t.params_nrmse, t.start_nrmse)}
                        for n, t in tuned.items()}
    # the grids are searched on a centred crop of a large image (seconds, not minutes): their scores are of the
    # crop, the tables' of the whole image (a trial read the two as numbers that did not add up)
    if tuned and any(int(np.prod(g.shape)) > TUNING_MAX_VOXELS for _, _, g, _, _ in pairs):
        rep["baselines_grid_note"] = (f"each grid was searched on a centred crop of at most {TUNING_MAX_VOXELS:,} voxels "
                                      "of each image, so the grid's scores are of that crop; the tables score the "
                                      "chosen parameters on the whole image")
    tmp = fresh_tmp(out_dir)
    curves = []
    try:
        for i, (pair, low, gt, x, x_grid) in enumerate(pairs):
            check_stop(stop)
            report(progress, i, len(pairs), pair.name)   # (the image being restored, after the filters' count)
            g_raw = np.asarray(gt.data, np.float32)
            oa = grid_model.output_axes(low.axes)   # the grid of restoration and ground truth (a projection: no Z)
            entry = {"name": pair.name, "shape": list(x.shape), "axes": low.axes, "metrics": {}, "figures": {},
                     "trained_on": model.trained_on(x, axes=low.axes, path=pair.low)}
            if entry["trained_on"]:   # (by its path or its pixels: a copy under another name too)
                rep["warnings"].append(f"{pair.name}: CARE was trained on this image (or a part of it: a crop of a training "
                                       "image, or one a training image was cropped from): its scores here flatter it (make "
                                       "the report on images no training patch came from, e.g. a test folder)")
            elif model.truth_seen(g_raw, axes=oa):   # a new noise draw of a field trained on: its target was seen
                entry["trained_on"] = entry["target_seen"] = True
                rep["warnings"].append(f"{pair.name}: its ground truth (or a part of it) was one of CARE's training "
                                       "targets: another exposure of a field CARE trained on, whose scores flatter it (make "
                                       "the report on fields no training patch came from)")
            with collect_warnings() as said:   # (an image unlike the training's: in the report, once)
                norm = grid_model.input_normalization(x, axes=low.axes, name=pair.name,   # as predict scales x
                                                      normalization=normalization)
                if ens:
                    mus, bs = model.predict_members(x, axes=low.axes, stop=stop, name=pair.name, normalization=norm)
                else:
                    out = model.predict(x, axes=low.axes, stop=stop, name=pair.name, normalization=norm)
            rep["warnings"].extend(said)
            span = float(np.mean(np.asarray(norm.hi) - np.asarray(norm.lo)))
            if ens:
                mean, _ = mixture_mean_variance(mus, bs)
                D = disagreement(mus, bs, stop=stop)
                entry["mean_disagreement"] = float(D.mean())
                warn = ood_check(float(D.mean()), ref.get("mean_disagreement"), what="disagreement")
            else:
                if cfg.probabilistic:
                    mean, b = out
                    entry["mean_scale"] = float(b.mean() / span)
                    warn = ood_check(float(b.mean() / span), ref.get("mean_scale"), what="predicted scale")
                else:
                    mean, warn = out, None
                D = None
            if warn:
                entry["warning"] = warn
                rep["warnings"].append(f"{pair.name}: {warn}")
            ev = lambda y: evaluate(y, g_raw, axes=oa, name=pair.name)  # noqa: E731
            if not other_channels:
                entry["metrics"]["input"] = ev(x_grid)
            for name, t in tuned.items():  # each metric at the filter's best parameters for it
                entry["metrics"][name] = t.scores(x, g_raw, axes=low.axes, name=pair.name)
            entry["metrics"]["CARE"] = ev(mean)
            g, _ = percentile_normalize(g_raw, *GT_PERCENTILES, axes=oa)
            a, b0 = affine_fit(mean, g)
            phi = a * mean + b0
            stem = Path(pair.name).stem
            # input and CARE fitted to the normalized ground truth as they are scored: one intensity scale for all
            # (shown up to the ground truth's 99.5th percentile: its normalization's top leaves small structure dim)
            shown = max(float(np.percentile(g, 99.5)), 1e-3)
            panels = [("CARE", phi, "gray", 0, shown), ("ground truth", g, "gray", 0, shown)]
            if not other_channels:
                a_in, b_in = affine_fit(x_grid, g)
                panels.insert(0, ("input", a_in * x_grid + b_in, "gray", 0, shown))
            _figure(tmp / f"{stem}_images.png", panels,
                    f"{pair.name} (fitted to the normalized ground truth, as scored; one scale)", oa)
            err = np.abs(phi - g)
            top = max(float(np.percentile(err, 99.5)), 1e-3)   # (a fixed 0.5 left errors of 0.2 nearly black)
            err_panels = [("|CARE - GT| (fitted; to its 99.5th percentile)", err, "magma", 0, top),
                          ("SSIM map (CARE)", _ssim_map(phi.astype(np.float64), g.astype(np.float64)), "viridis", 0, 1)]
            if D is not None:   # (on a fixed 0 to 1 a trial's D, median 0.018, was a black panel)
                d_top = max(float(np.percentile(D, 99.5)), 1e-3)
                err_panels.append(("disagreement D (to its 99.5th percentile)", D, "inferno", 0, d_top))
                entry["has_disagreement"] = True
                entry["reference_disagreement"] = ref.get("mean_disagreement")
                entry["disagreement_error_rank"] = rank_correlation(D, err)
            _figure(tmp / f"{stem}_maps.png", err_panels, pair.name, oa)
            entry["figures"] = {"images": f"{stem}_images.png", "maps": f"{stem}_maps.png"}
            if cfg.probabilistic:
                pm, ps = (mus, bs) if ens else out
                curve = model.calibration(g_raw, pm, ps, image=x, axes=low.axes, normalization=norm)
                entry["calibration"] = curve
                curves.append((curve, g_raw.size, pair.name, bool(entry["trained_on"])))
            rep["images"].append(entry)
            report(progress, i + 1, len(pairs), pair.name)
        names = list(rep["images"][0]["metrics"]) if rep["images"] else []
        # the overall and the calibration of the images CARE never saw (of all, where it saw them all)
        held = [e for e in rep["images"] if not e["trained_on"]] or rep["images"]
        rep["overall_images"] = [e["name"] for e in held]
        rep["overall_trained_on"] = bool(held) and all(e["trained_on"] for e in held)   # (no image held out)
        rep["overall"] = {n: {k: float(np.mean([e["metrics"][n][k] for e in held])) for k in ("nrmse", "ssim", "psnr")}
                          for n in names}
        used = [c for c in curves if not c[3]] or curves
        if used:
            # the ECE: the images' own, weighted by their pixels (pooled over the pixels of all images, an
            # over-confident image and an under-confident one cancelled: 0.027 where they measured 0.045, 0.234
            # and 0.099); the pooled curve is drawn with theirs
            w = np.asarray([n for _, n, _, _ in used], np.float64)
            acc = np.average([c["accuracy"] for c, _, _, _ in used], axis=0, weights=w)
            conf = np.asarray(used[0][0]["confidence"])
            rep["calibration"] = {"confidence": conf.tolist(), "accuracy": acc.tolist(),
                                  "ece": float(np.average([c["ece"] for c, _, _, _ in used], weights=w)),
                                  "ece_pooled": float(np.mean(np.abs(acc - conf))), "space": used[0][0]["space"],
                                  "images": [name for _, _, name, _ in used],
                                  "by_brightness": _pooled_coverage([c.get("by_brightness") or [] for c, _, _, _ in used])}
            drawn = {name: c for c, _, name, _ in used[:8]} if len(used) > 1 else {}
            drawn["pooled" if drawn else used[0][2]] = {**rep["calibration"], "ece": rep["calibration"]["ece_pooled"]}
            _calibration_figure(tmp / "calibration.png", drawn)
        (tmp / "report.json").write_text(json.dumps(rep, indent=1))
        (tmp / "index.html").write_text(_html(rep))
        swap_in(tmp, out_dir, REPORT_FOLDER)
        tmp = None
    finally:
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return rep


def _pooled_coverage(per_image):
    """The images' :func:`~carecore.uncertainty.coverage_by_brightness` pooled bin by bin (each image's own
    brightness percentiles), weighted by their pixels."""
    pooled = {}
    for rows in per_image:
        for r in rows:
            n, covered = pooled.get(tuple(r["percentiles"]), (0, 0.0))
            pooled[tuple(r["percentiles"])] = (n + r["pixels"], covered + r["coverage"] * r["pixels"])
    return [{"percentiles": list(k), "coverage": covered / n, "pixels": n} for k, (n, covered) in pooled.items() if n]


def _range_name(lo, hi):
    """A brightness range of :func:`coverage_text`'s rows by name: "darkest 50 %", "50-90 %", "brightest 1 %"."""
    return "darkest 50 %" if lo == 0 else ("brightest 1 %" if hi == 100 and lo == 99 else f"{lo:g}-{hi:g} %")


def coverage_text(rows, confidence=0.9):
    """``"darkest 50 %: 0.91 · 50-90 %: 0.89 · ..."``: the share of pixels whose ground truth lies in the central
    ``confidence`` interval, by the truth's brightness; "" without rows."""
    return " · ".join(f"{_range_name(*r['percentiles'])}: {r['coverage']:.2f}" for r in rows)


def spread_text(spread, confidence=0.9):
    """A sentence of how wide the ``confidence`` intervals are on the brightest structures
    (:func:`carecore.uncertainty.interval_spread`), "" for None."""
    if not spread:
        return ""
    text = (f"On the brightest {100 * spread['brightest']:g} % of the restoration, a {100 * confidence:.0f} % interval "
            f"spans {spread['median']:.2f} times the structures' height above the background (median; "
            f"{spread['p90']:.2f} at the 90th percentile)")
    if spread["below_background"] > 0:
        share = 100 * spread["below_background"]
        text += (f"; {'under 1' if share < 0.5 else f'{share:.0f}'} % of them reach down to the background, where "
                 "they cannot tell a structure from none")
    if spread["median"] >= 0.5:   # (its own sentence: after "under 1 % of them reach down ..." a user trial read
        # "the network is unsure of the intensities there" as said of that 1 %)
        text += (". Intervals this wide say that the network is unsure of these structures' intensities: trust the "
                 "structures it restores more than their exact brightness")
    return text


def coverage_verdict(rows, confidence=0.9, *, off=0.1, capital=False):
    """A sentence where the intervals' coverage by brightness (:func:`coverage_text`'s rows) is more than ``off``
    below ``confidence`` in a range (over-confident there: the truth outside more often than promised), else "".
    A user trial: a projection model's ECE of 0.012 read as calibrated, its 90 % intervals holding the truth
    63-67 % of the time on the brightest structures."""
    low = [f"the {_range_name(*r['percentiles'])} ({r['coverage']:.2f})" for r in rows
           if r["coverage"] < confidence - off]
    if not low:
        return ""
    return (f"{'T' if capital else 't'}he {100 * confidence:.0f} % intervals are too narrow on " + " and ".join(low)
            + f": there the truth lies outside them more often than {100 * (1 - confidence):.0f} % of the time; do not "
            "trust them there")


def _filter_rows(metrics, input_name):
    """The classical filters' rows of ``metrics``: neither CARE's nor the input's (``input_name``, or named
    "input ...")."""
    return {n: m for n, m in metrics.items() if n not in ("CARE", input_name) and not n.startswith("input")}


def beaten_by(metrics, *, input_name="input"):
    """Each metric on which a classical filter beats CARE in ``metrics`` ({method: {nrmse, ssim, psnr}}; the
    input's row, ``input_name`` or named "input ...", is no filter), as phrases ("SSIM by gaussian (0.9463
    against CARE's 0.6076)"); an empty list where CARE wins them all."""
    care, filters = metrics.get("CARE"), _filter_rows(metrics, input_name)
    if not care or not filters:
        return []
    said = []
    for k, label, lower in (("ssim", "SSIM", False), ("nrmse", "NRMSE", True), ("psnr", "PSNR", False)):
        best = (min if lower else max)(filters, key=lambda n: filters[n][k])
        v = filters[best][k]
        if (v < care[k]) if lower else (v > care[k]):
            said.append(f"{label} by {best} ({v:.4g} against CARE's {care[k]:.4g})")
    return said


def beats_every_filter(metrics, *, input_name="input"):
    """``"SSIM 0.9455 against tv's 0.585; NRMSE 0.0312 against tv's 0.0543"`` where CARE beats every classical
    filter of ``metrics`` in SSIM and in NRMSE (the best filter for each named), else ""."""
    care, filters = metrics.get("CARE"), _filter_rows(metrics, input_name)
    if not care or not filters:
        return ""
    best_s = max(filters, key=lambda n: filters[n]["ssim"])
    best_n = min(filters, key=lambda n: filters[n]["nrmse"])
    if not (care["ssim"] > filters[best_s]["ssim"] and care["nrmse"] < filters[best_n]["nrmse"]):   # (a tie: no win)
        return ""
    return (f"SSIM {care['ssim']:.4g} against {best_s}'s {filters[best_s]['ssim']:.4g}; NRMSE {care['nrmse']:.4g} "
            f"against {best_n}'s {filters[best_n]['nrmse']:.4g}")


#: A win by less than this SSIM, or this share of the best filter's NRMSE, is said as narrow (:func:`verdict`).
NARROW = (0.01, 0.02)


def _narrow_win(metrics, input_name):
    care, filters = metrics["CARE"], _filter_rows(metrics, input_name)
    best_s = max(f["ssim"] for f in filters.values())
    best_n = min(f["nrmse"] for f in filters.values())
    return care["ssim"] - best_s < NARROW[0] or care["nrmse"] > (1 - NARROW[1]) * best_n


def worse_than_input(metrics, *, input_name="input"):
    """``"SSIM 0.919 against the input's 0.952; NRMSE ..."`` where CARE's restoration scores worse than its input
    itself (the row ``input_name``) in SSIM and in NRMSE, else "" (an image much less noisy than the training
    images, or unlike them)."""
    care, inp = metrics.get("CARE"), metrics.get(input_name)
    if not care or not inp or not (care["ssim"] < inp["ssim"] and care["nrmse"] > inp["nrmse"]):
        return ""
    return (f"SSIM {care['ssim']:.4g} against the input's {inp['ssim']:.4g}, NRMSE {care['nrmse']:.4g} against "
            f"{inp['nrmse']:.4g}")


#: Said where a denoising model restores worse than its input (:func:`worse_than_input`).
WORSE_THAN_INPUT = ("CARE made the image worse than it was ({}): the input may be much less noisy than the training "
                    "images (more light), or unlike them; a model trained on such images, or the input itself, serves "
                    "better")
#: Said where a model of another kind restores worse than its input brought onto the output's grid.
WORSE_THAN_START = "CARE scored worse than the {} ({}): the image may be unlike the training images"


def other_channels_note(n_in, n_out):
    """Why a model that makes other channels than it takes (``n_in`` in, ``n_out`` out: two stains in, one out)
    is scored alone: its input, and a classical filter on it, are not on the ground truth's channels."""
    return (f"the model takes {n_in} channel{'s' * (n_in != 1)} and makes {n_out}: there is no input or classical "
            "filter on the ground truth's channels to compare it with, so CARE is scored alone")


def verdict(metrics, *, input_name="input", kind="care", seen=False):
    """The sentences said under a table of ``metrics``: where a classical filter beats CARE
    (:func:`beaten_by`) and where CARE scored worse than its input (:func:`worse_than_input`; for a denoising
    model, ``kind`` "care", with the likely cause); the report, ``carecore qc`` and the app's Restore step say
    the same. ``seen``: the scores are of images CARE learned (a training image, or its ground truth a training
    target): a win is said as what flatters CARE, not as a win (a user trial found it said in bold, the
    caveat in grey)."""
    out = []
    said = beaten_by(metrics, input_name=input_name)
    if said:
        out.append("CARE is beaten here on " + "; ".join(said))
    else:   # (said too: a user trial found the app silent where CARE won, and only ever speaking of losses)
        won = beats_every_filter(metrics, input_name=input_name)
        if won and seen:
            out.append("CARE beats every classical filter here, but on what it was trained on: these scores flatter "
                       "it and prove nothing; compare it on images it never saw")
        elif won and _narrow_win(metrics, input_name):   # (a trial read "beats" for 0.8911 against 0.8901 SSIM)
            out.append(f"CARE beats every classical filter in this table, but narrowly (by less than {NARROW[0]:g} "
                       f"SSIM or {NARROW[1]:.0%} NRMSE: call it level), each tuned on the ground truth: " + won)
        elif won:
            out.append("CARE beats every classical filter in this table, each tuned on the ground truth: " + won)
    worse = worse_than_input(metrics, input_name=input_name)
    if worse:
        out.append(WORSE_THAN_INPUT.format(worse) if kind == "care" else WORSE_THAN_START.format(input_name, worse))
    return out


def _beaten_note(metrics, kind="care", seen=False):
    """:func:`verdict` as HTML, or "" (the tables alone left it to the reader)."""
    return "".join(f"<p class='verdict'><b>{html.escape(x, quote=False)}.</b></p>"
                   for x in verdict(metrics, kind=kind, seen=seen))


def _disagreement_note(img):
    """The ensemble's disagreement on one image as read-outs: its mean against the mean on the validation
    patches, and its rank correlation with CARE's error (whether D points at the errors here)."""
    ref, rho = img.get("reference_disagreement"), img.get("disagreement_error_rank")
    said = f"Mean D on this image {img['mean_disagreement']:.3g}" + (
        f" ({img['mean_disagreement'] / ref:.1f}× its {ref:.3g} on the validation patches; above 3× it, and more "
        "than 0.001 above it, the report warns that the image may be unlike the training images)" if ref else
        f" (its level on the validation patches: {ref:.3g})" if ref is not None else " (no reference level recorded)")
    if rho is not None:
        how = ("D points at the errors here" if rho >= 0.5 else "D points at the errors here only loosely"
               if rho >= 0.2 else "D does not say where the errors are here: a low D is no sign of a right pixel")
        said += f". Rank correlation of D with CARE's error: {rho:.2f} ({how})"
    return f"<p class='disagreement-note'>{html.escape(said)}.</p>"


def _html(rep):
    e = html.escape
    rows = []
    for name, m in rep.get("overall", {}).items():
        style = ' style="font-weight:bold"' if name == "CARE" else ""
        start = (rep.get("baselines") or {}).get(name, {}).get("start_ssim")   # (deconvolution: said in the row)
        shown = f"{name} (SSIM: on the {start})" if start and "Richardson-Lucy" in start else name
        rows.append(f"<tr{style}><td>{e(shown)}</td><td>{m['nrmse']:.4f}</td><td>{m['ssim']:.4f}</td><td>{m['psnr']:.2f}</td></tr>")
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>CARE quality control</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child{text-align:left}"
             ".warn{background:#fff3cd;border:1px solid #e0b000;padding:8px;margin:8px 0}img{max-width:100%}</style>",
             "</head><body><h1>CARE quality control</h1>",
             f"<p>Model: {e(', '.join(rep['models']))}{' (ensemble)' if rep['ensemble'] else ''}. Metrics follow the "
             "paper's protocol: ground truth normalized (0.1, 99.9 percentiles), each result fitted to it by least squares. "
             + ("Inputs scaled by their own percentiles (normalization 'image')." if rep.get("normalization") == "image"
                else "Inputs scaled by the training inputs' percentiles, as the network learned (an image taken with "
                     "another gain or offset: `carecore qc --normalization image`).") + "</p>"]
    for w in rep["warnings"]:
        parts.append(f"<div class='warn'>⚠ {e(w)}</div>")
    left = [i["name"] for i in rep["images"] if i["name"] not in rep.get("overall_images", [i["name"]])]
    parts.append("<h2>Overall</h2><table><tr><th>method</th><th>NRMSE ↓</th><th>SSIM ↑</th><th>PSNR ↑</th></tr>"
                 + "".join(rows) + "</table>"
                 + (f"<p>The mean over the images CARE never saw; left out: {e(', '.join(left))} (trained on: their scores "
                    "flatter CARE).</p>" if left else "")
                 + ("<p class='warn'>⚠ <b>Every image here was trained on</b>: this is the mean over training images, "
                    "which flatters CARE; give images it never saw for an honest score.</p>"
                    if rep.get("overall_trained_on") else "")
                 + _beaten_note(rep.get("overall", {}), rep.get("kind", "care"), rep.get("overall_trained_on", False)))
    if rep.get("baselines"):
        fmt = lambda p, start: (", ".join(f"{k}={v:g}" for k, v in p.items()) or "defaults") + \
            (f" on the {start}" if start else "")  # noqa: E731
        from .baselines import BASELINES, EDGE_REACH

        def at_edge(b):   # (a reader who knows that a best at the grid's edge was not tuned: a user trial)
            keys = sorted(set(b.get("edge_ssim", []) + b.get("edge_nrmse", [])))
            return (f"; best at the edge of the values tried for {', '.join(keys)}, not tuned past it: tuning goes "
                    f"past a grid's edge, a few steps at most, only for a filter within {EDGE_REACH[0]:g} SSIM "
                    f"or {EDGE_REACH[1] - 1:.0%} NRMSE of the best filter on the same start" if keys else "")

        items = "".join(f"<li><b>{e(n)}</b>: SSIM at {e(fmt(b['params_ssim'], b.get('start_ssim')))}; NRMSE and PSNR at "
                        f"{e(fmt(b['params_nrmse'], b.get('start_nrmse')))} (of {len(b['grid'])} values tried"
                        f"{e(at_edge(b))})</li>"
                        for n, b in rep["baselines"].items())
        parts.append("<p class='tuned'>The classical baselines are <b>tuned on these images with their ground truth</b> "
                     "over a small grid each, and every metric is shown at the filter's best parameters for it "
                     f"(an advantage CARE does not get):</p><ul>{items}</ul>"
                     + (f"<p class='grid-note'>({e(rep['baselines_grid_note'])}.)</p>" if rep.get("baselines_grid_note")
                        else "")
                     + (f"<p class='warn left-out'>⚠ Not tried for this report: {e(', '.join(left))}; CARE was not "
                        "compared with them, and a verdict above is against the filters tried only.</p>"
                        if (left := [n for n in BASELINES if n not in rep["baselines"]]) else ""))
    else:   # (none asked for: the report must not read as if CARE had beaten them)
        parts.append("<p class='warn no-baselines'>⚠ No classical filter was tuned for this report: CARE is compared "
                     "with its input only, not with the best classical restoration.</p>")
    if rep.get("kind") in ("upsampling", "isotropic"):
        parts.append("<p>Input: the coarse stack interpolated onto the restored grid as the model's training inputs "
                     "were; each baseline starts from the best of nearest, linear and cubic interpolation and, where "
                     "the model knows its axial PSF, the cubic interpolation deconvolved along Z (Richardson-Lucy, "
                     "the paper's classical competitor; the iterations are tuned too).</p>")
    elif rep.get("kind") == "subdiffraction":
        parts.append("<p>Each baseline starts from the best of the input itself, its top-hat background subtraction "
                     "and its Richardson-Lucy deconvolutions with the model's PSF (the paper's classical competitor; "
                     "with no background, a smooth or a top-hat one subtracted first; the iterations are tuned "
                     "too).</p>")
    elif rep.get("kind") == "projection":
        parts.append("<p>Input: the stack's maximum projection; each baseline starts from the best of the maximum "
                     "and the surface-following projections.</p>")
    if "calibration" in rep:
        cal = rep["calibration"]
        several = len(cal.get("images", [])) > 1
        narrow = coverage_verdict(cal["by_brightness"], capital=True) if cal.get("by_brightness") else ""
        parts.append(f"<h2>Calibration</h2><p>Expected calibration error: <b>{cal['ece']:.3f}</b> "
                     + ("(the images' own ECEs, weighted by their size, so that an over-confident image and an "
                        f"under-confident one do not cancel; of their pooled pixels {cal.get('ece_pooled', cal['ece']):.3f}) "
                        if several else "")
                     + "(0 is perfect; a curve below the diagonal is over-confident). Measured where the network makes "
                     "its promise: the ground truth normalized as training targets were (for inputs scaled by the "
                     "training inputs' percentiles, by the training targets'), the predicted distributions "
                     "as the network outputs them, <b>no fit to the ground truth</b>. Of one view: each image as it "
                     "is, not the mean over its flips and rotations (<code>carecore predict --tta</code>, and the app "
                     "by default), whose intervals are widened or narrowed by a factor chosen on the validation "
                     "patches.</p><img src='calibration.png'>"
                     + (f"<p class='coverage'>How often the 90 % intervals hold the ground truth, by its brightness "
                        f"(each 0.90 when calibrated; the curve is mostly background): {e(coverage_text(cal['by_brightness']))}."
                        + (f" <b>{e(narrow)}.</b>" if narrow else "")
                        + "</p>" if cal.get("by_brightness") else ""))
    elif rep.get("images") and not rep.get("probabilistic"):   # (left out unsaid: a user trial)
        parts.append("<h2>Calibration</h2><p class='no-calibration'>Not measured: the model is not probabilistic, so "
                     "it predicts no intervals to calibrate (train with <code>--probabilistic</code>, where its kind "
                     "allows, for intervals).</p>")
    for img in rep["images"]:
        seen = ("" if not img.get("trained_on") else
                " <small>(its ground truth was a training target: its scores flatter CARE)</small>" if img.get("target_seen")
                else " <small>(a training image, or a part of one: its scores flatter CARE)</small>")
        parts.append(f"<h2>{e(img['name'])}{seen}</h2><table><tr><th>method</th><th>NRMSE</th><th>SSIM</th><th>PSNR</th></tr>")
        for name, m in img["metrics"].items():
            parts.append(f"<tr><td>{e(name)}</td><td>{m['nrmse']:.4f}</td><td>{m['ssim']:.4f}</td><td>{m['psnr']:.2f}</td></tr>")
        parts.append("</table>" + _beaten_note(img["metrics"], rep.get("kind", "care"), bool(img.get("trained_on"))))
        if "calibration" in img:
            parts.append(f"<p>ECE on this image: {img['calibration']['ece']:.3f}</p>")
        for key in ("images", "maps"):
            parts.append(f"<img src='{e(quote(img['figures'][key]))}' alt='{e(key)}'>")   # ('#', '?' in file names)
        parts.append(f"<p class='maps-note'>The error map is in the normalized ground truth's units (its "
                     f"{GT_PERCENTILES[0]:g} to {GT_PERCENTILES[1]:g} percentile range is 0 to 1), CARE fitted to it as "
                     "it is scored; the SSIM map is SSIM's local value (1: the same structure)"
                     + ("; D is 0 where the ensemble's members agree, 1 where their distributions do not overlap"
                        if img.get("has_disagreement") else "") + ".</p>")
        if img.get("has_disagreement"):   # (how far D says where the errors are: a trial found it did not, unsaid)
            parts.append(_disagreement_note(img))
    parts.append("</body></html>")
    return "\n".join(parts)

"""``carecore``: the command line. Thin: parses arguments and calls the public API.

Errors a user can cause (a :class:`~carecore.CareError`, a missing or unreadable file, a file that is
not an image) print one line and exit with status 2; an internal bug still shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np
from pathlib import Path

from . import __version__
from ._atomic import ENSEMBLE_FOLDER, MODEL_FOLDER, check_replaceable
from .errors import CareError
from .models.kinds import KINDS


def _devices(value):
    """``--devices``: None, 'all' or a count."""
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise CareError(f"--devices: give a number of devices or 'all', got {value!r}") from None


def _floats(text):
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 16,64,64, got {text!r}") from None


def cmd_demo_data(args):
    from .simulate import write_demo_data

    from .simulate import DEMO_TASKS

    out = write_demo_data(args.dir, tasks=args.task or DEMO_TASKS,
                          seed=args.seed, size=args.size)
    for task, folder in out.items():
        print(f"{task}: {folder}")
    return 0


def cmd_evaluate(args):
    from .io import read_image
    from .metrics import evaluate

    pred = read_image(args.pred, axes=args.axes)
    gt = read_image(args.gt, axes=args.axes)
    if not args.axes and gt.axes != pred.axes and gt.shape == pred.shape:
        gt = read_image(args.gt, axes=pred.axes)   # one grid, other letters (a stack saved as frames): the restoration's
    if pred.shape != gt.shape or pred.axes != gt.axes:
        from .metrics import z_slices_hint

        hint = z_slices_hint(pred.shape, gt.shape, pred.axes, pred=str(args.pred), gt=str(args.gt)) \
            if pred.axes == gt.axes else ""
        raise CareError(f"{args.pred} ({pred.axes}, shape {tuple(pred.shape)}) and {args.gt} ({gt.axes}, shape "
                        f"{tuple(gt.shape)}) differ: "
                        + (hint if hint else "compare a restoration with the ground truth of the same image"))
    m = evaluate(pred.data, gt.data, axes=pred.axes, per_slice=args.per_slice, name=str(args.pred))
    if args.json:
        print(json.dumps(m))
    else:   # (a user trial asked what the numbers meant: said beside them)
        said = {"nrmse": "root-mean-square error on the truth's normalized scale, the image fitted to it (the paper's "
                         "protocol): lower is better, 0 equal",
                "ssim": "structural similarity, -1 to 1: higher is better, 1 equal",
                "psnr": "peak signal-to-noise ratio in dB: higher is better"}
        for k in ("nrmse", "ssim", "psnr"):
            print(f"{k:6s} {m[k]:.4f}   ({said[k]})")
        if args.per_slice and "Z" not in pred.axes:
            print("note: --per-slice scores the Z slices of a stack; these images have no Z")
        rows = m.get("per_slice") or []
        channels = rows if rows and isinstance(rows[0], list) else [rows]   # (per channel where the images have C)
        for c, per in enumerate(channels):
            for z, row in enumerate(per):
                print((f"C {c} " if len(channels) > 1 else "") + f"Z {z:4d}  "
                      + "  ".join(f"{k} {row[k]:.4f}" for k in ("nrmse", "ssim", "psnr")))
    return 0


def cmd_degrade(args):
    from .io import read_image, write_image
    from .simulate import simulate_anisotropic, simulate_photon_noise

    if args.photons is not None and not args.photons > 0:   # (before reading: in the flag's words)
        raise CareError(f"--photons {args.photons:g}: give the expected photons at the brightest pixel, more than 0")
    img = read_image(args.inp, axes=args.axes)
    if args.kind == "noise":
        out, params = simulate_photon_noise(img.data, args.photons, background=args.background,
                                            read_noise=args.read_noise, gain=args.gain, offset=args.offset,
                                            seed=args.seed)
        spacing = img.spacing
        _say_photons(img, args.photons, params["clean_range"])
    else:
        if args.axis not in img.axes:
            raise CareError(f"{args.inp}: axes {img.axes} (shape {tuple(img.shape)}) have no {args.axis} to degrade; "
                            "give a stack (ZYX), its axes (--axes) if the file records none, or another --axis")
        sigma = args.psf_sigma
        if sigma is None:
            if args.na is None or args.wavelength is None:
                raise CareError("give --psf-sigma, or --na, --wavelength and --voxel-size to derive it")
            from .simulate import psf_sigma_from_optics

            size = args.voxel_size if args.voxel_size is not None else img.spacing.get(args.axis, 1.0)
            sigma = psf_sigma_from_optics(args.na, args.wavelength, size, direction="axial",
                                          refractive_index=args.refractive_index)
        out, params = simulate_anisotropic(img.data, args.factor, axes=img.axes, axis=args.axis, psf_sigma=sigma,
                                           peak_photons=args.photons, read_noise=args.read_noise,
                                           interpolation=args.interpolation, upsample_back=not args.subsampled,
                                           seed=args.seed)
        spacing = dict(img.spacing)
        if args.voxel_size is not None:   # (given: the one the PSF sigma was derived with, also written)
            spacing[args.axis] = args.voxel_size
        if args.subsampled and args.axis in spacing:
            spacing[args.axis] = spacing[args.axis] * args.factor
        n = img.shape[img.axes.index(args.axis)]
        if args.subsampled and float(args.factor).is_integer() and n % int(args.factor):
            from .errors import warn

            f = int(args.factor)
            warn(f"{args.inp}: {n} slices along {args.axis} are not a multiple of the factor {f}: the coarse stack keeps "
                 f"{out.shape[img.axes.index(args.axis)]}, and a restoration of it has round(that x {f}) slices, not {n}; "
                 f"to compare with this ground truth, crop it to {n - n % f} slices first", stacklevel=2)
    write_image(args.out, out, axes=img.axes, spacing=spacing)
    if args.params:
        Path(args.params).write_text(json.dumps(params, indent=1))
    print(f"wrote {args.out} ({' x '.join(map(str, out.shape))} {img.axes}, seed {params['seed']})")
    return 0


def _say_photons(img, peak, clean_range):
    """Say the photon levels a degradation gave (the brightest pixel gets ``peak``; ``clean_range``: the clean
    image's minimum and maximum, as the simulator scaled it), and warn where a few pixels far brighter than
    the rest set that scale (one hot pixel made a whole image 13 times darker)."""
    from .errors import warn

    x = np.asarray(img.data)
    lo, hi = (float(v) for v in clean_range)
    p999 = float(np.percentile(x, 99.9))
    to_photons = lambda v: peak * (v - lo) / (hi - lo)  # noqa: E731 (the clean image scaled as the simulator scales it)
    print(f"photons per pixel: mean {to_photons(float(x.mean())):.3g}, 99.9th percentile {to_photons(p999):.3g}, "
          f"brightest {peak:g} (plus the background)")
    n_bright = int(np.count_nonzero(x > lo + 0.5 * (hi - lo)))
    if to_photons(p999) < 0.25 * peak and n_bright <= max(3, 1e-5 * x.size):   # (a few pixels, not sparse beads)
        warn(f"{img.path}: its brightest pixel is {(hi - lo) / max(p999 - lo, 1e-12):.3g} times its 99.9th percentile: a few "
             f"pixels ({n_bright} above half the brightest) set the photon scale (--photons {peak:g} is theirs), and "
             f"99.9 % of the pixels get {to_photons(p999):.3g} photons or fewer; if they are hot pixels, remove them first, "
             "or give a --photons that fits the structures", stacklevel=2)


SAME_FIELD_HELP = ("pairs whose file names give the same match (its first group; the whole match without a group) "
                   "show one field of view, e.g. '(pos\\d+)_t' for time points of a position saved as files: they "
                   "validate on the same held-out boxes, so that no time point trains where another validates; names "
                   "without a match are fields of their own")


def _same_field_labels(listing, pattern):
    """A field label per pair from ``--same-field``: the first group of the pattern's match in the file
    name (the whole match without a group); a name without a match is a field of its own."""
    import re

    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise CareError(f"--same-field {pattern!r}: not a regular expression ({e})") from None
    labels, unmatched = [], []
    for i, pair in enumerate(listing):
        m = rx.search(pair.name)
        label = m and (m.group(1) if rx.groups else m.group(0))
        labels.append(("name", label) if label else ("own", i))
        if not label:
            unmatched.append(pair.name)
    if len(unmatched) == len(labels):
        raise CareError(f"--same-field {pattern!r} matches none of the file names ({', '.join(p.name for p in listing)})")
    if unmatched:
        print(f"--same-field {pattern!r}: {len(unmatched)} file name(s) without a match are fields of their own: "
              f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}")
    return labels


def cmd_patches(args):
    from .data.pairs import find_pairs
    from .data.patches import create_patches, few_validation_note
    from .progress import tqdm_progress

    listing = find_pairs(args.low, args.high)
    if listing.unmatched_low or listing.unmatched_high:
        print(listing.report(), file=sys.stderr)
    files = [] if args.axes else _low_files(args)
    if files:
        _say_if_guessed(files[0])
    fields = _same_field_labels(listing, args.same_field) if args.same_field else None
    with tqdm_progress("patches", unit="image") as progress:
        ps = create_patches(listing, args.patch, axes=args.axes, axes_high=args.axes_high,
                            n_patches_per_image=args.n_per_image, validation_fraction=args.validation,
                            fg_threshold=args.fg_threshold, fg_fraction=args.fg_fraction,
                            out=args.out, seed=args.seed, progress=progress, fields=fields,
                            shared_boxes=fields is not None)
    print(f"wrote {len(ps.X)} patch pairs ({ps.n_val} for validation) with axes {ps.axes} -> {ps.axes_y} to {args.out}")
    few = few_validation_note(ps.n_val)
    if few:
        print(f"note: {few}")
    _report_fields(ps, listing)
    return 0


def _report_fields(ps, listing):
    """Say how many image pairs the files gave (frames) and how many fields of view they show."""
    sources = ps.meta["sources"]
    n_fields = len({s["field"] for s in sources})
    if len(sources) > len(listing):
        print(f"{len(sources)} image pairs from {len(listing)} pair(s) of files: each time point (T) and sample (S) is "
              "a pair of its own, with --n-per-image patches")
    if n_fields < len(sources):
        print(f"{len(sources)} image pairs show {n_fields} field{'s' * (n_fields != 1)} of view: pairs of one ground "
              "truth, and the time points of one time-lapse, validate on the same held-out boxes, so that nothing is "
              "trained on where it is validated")


def _say_if_guessed(path):
    """The axes of the image at ``path`` (its header only), said on stderr where the file records none (3 or
    more: a stack of slices, time points or channels looks the same without them)."""
    from .io import peek_axes

    axes, shape, guessed = peek_axes(path)
    if guessed and len(axes) > 2:   # (a 2D image's YX is no guess worth a word)
        print(f"carecore: note: axes {axes} guessed for {path} (shape {tuple(shape)}: the file records none); give "
              "--axes if they are others (e.g. TYX for a time-lapse, CYX for channels)", file=sys.stderr)
    return axes


def _low_files(args):
    """The image files ``--low`` names: the images of its folders, and the files (or OME-Zarr images) given."""
    from .io import list_images
    from .ngff import is_ngff

    files = []
    for entry in args.low or ():
        p = Path(entry)
        if p.is_dir() and not is_ngff(p):
            files.extend(list_images(p))
        elif p.exists():
            files.append(p)
    return files


def _resume_conflicts(args, model, model_dir):
    """Refuse the flags that define what a model does (``--task``, ``--factor``/``--upsampling``,
    ``--psf-sigma``) when they contradict the configuration of the model being resumed: it trains on with
    its own, and the model that came out would not be the one asked for."""
    c = model.config
    conflicts = []
    if args.task and args.task != c.kind:
        conflicts.append(f"--task {args.task} (it is a model of kind {c.kind})")
    for flag, value in (("--factor", args.factor), ("--upsampling", args.upsampling)):
        if value and value != c.upsampling_factor:
            conflicts.append(f"{flag} {value:g} (its axial factor is {c.upsampling_factor:g})")
    if args.psf_sigma and args.psf_sigma != c.psf_sigma:
        conflicts.append(f"--psf-sigma {args.psf_sigma:g} (it was trained with {c.psf_sigma:g} px)")
    # (a 3D model's folder given 2D images was told "patch size (16, 32, 32) has 3 values": a user trial); a patch
    # folder holds the network's own patches (an isotropic model's 2D slices), images the ones the model restores
    from_patches = args.patches and not args.axes
    wanted = c.axes if from_patches else model.input_spatial_axes
    try:
        spatial = "".join(a for a in "ZYX" if a in _training_axes(args).upper())   # (XY images: a YX model's)
    except CareError:   # (no images to read them from: said where they are read)
        spatial = wanted
    axes_conflict = spatial != wanted
    if conflicts or axes_conflict:
        source = "--axes" if args.axes else "the patch folder" if from_patches else "the first image"
        raise CareError(f"{model_dir} already holds a model, which resumes with its own configuration: "
                        + "; ".join(conflicts + ([f"{'patches' if from_patches else 'images'} with spatial axes "
                                                  f"{spatial}, from {source} (it takes {wanted})"] if axes_conflict else []))
                        + "; give a new --model-dir to train a model for them"
                        + (", or leave the flags out to resume" if conflicts else "")
                        + ("; or, to resume, give --axes with the images' own letters (e.g. TYX or SYX for frames of "
                           "a YX model)" if axes_conflict and not from_patches else ""))


def _axial_factor(args, kind):
    """``--factor`` (or ``--upsampling``); for isotropic training without it, the first stack's recorded
    Z/X voxel-size ratio (said); else an error naming ``--factor``."""
    from .io import peek_spacing
    from .models.upsampling import spacing_ratio

    factor = args.factor or args.upsampling
    if factor or kind not in ("isotropic", "upsampling"):
        return factor
    if kind == "upsampling":   # its --low stacks are on the fine grid already: their voxel size cannot tell
        raise CareError("--task upsampling needs --factor F: the axial factor of the coarse stacks it will "
                        "restore (their Z voxel size / the lateral one), e.g. --factor 4")
    files = _low_files(args)
    if not files:
        raise CareError("--task isotropic needs --low stacks and --factor F (their Z voxel size / the lateral one)")
    spacing = peek_spacing(files[0])
    ratio = spacing_ratio(spacing)
    if ratio is None or ratio <= 1.05:
        found = (f"records a Z/X voxel-size ratio of {ratio:.3g}" if ratio is not None else
                 "records no voxel size")
        raise CareError(f"--task isotropic needs --factor F, the axial factor (Z voxel size / lateral voxel size, "
                        f"e.g. --factor 4): {files[0]} {found}")
    factor = round(ratio, 2)
    size = ", ".join(f"{a} {spacing[a]:g}" for a in "ZYX" if spacing.get(a))
    print(f"--factor {factor:g} taken from the voxel size of {files[0]} ({size} µm); give --factor to choose "
          "another", file=sys.stderr)
    return factor


def _check_isotropic_stacks(args, config):
    """Before the patches are made: every ``--low`` stack's lateral slices hold a training patch (told with
    the file and a ``--patch`` that fits), and a stack whose recorded Z/X voxel-size ratio is not the axial
    factor is warned about."""
    from .errors import warn_frames
    from .io import peek_axes, peek_spacing
    from .models.upsampling import spacing_mismatch

    if not config.psf_sigma > 0 and not args.psf:
        raise CareError("--task isotropic needs the axial PSF: --psf-sigma S (its sigma in lateral (Y/X) pixels, not Z "
                        "slices; carecore.psf_sigma_from_optics derives it) or --psf FILE (a measured PSF)")
    f = config.upsampling_factor
    side = max(config.patch_size)
    mismatched = []
    for path in _low_files(args):
        axes, shape, _ = peek_axes(path)
        if args.axes and len(args.axes) == len(shape):
            axes = args.axes.upper()
        if "Y" in axes and "X" in axes:
            ny, nx = shape[axes.index("Y")], shape[axes.index("X")]
            if min(ny, nx) < side:
                fits = min(ny, nx) // config.divisor * config.divisor
                hint = (f"give a smaller --patch, e.g. --patch {fits},{fits} (sides divisible by {config.divisor})"
                        if fits >= config.divisor else "the stack is too small to train on")
                raise CareError(f"{path}: its lateral slices are {ny} x {nx} pixels (Y x X), smaller than the training "
                                f"patch {config.patch_size[0]} x {config.patch_size[1]} (isotropic training cuts "
                                f"patches from every YX slice and from its transpose); {hint}")
        message = spacing_mismatch(peek_spacing(path), f, name=str(path), factor_label="--factor")
        if message:
            mismatched.append(message + f": the stack is degraded for training by {f:g}, not by its own ratio; give "
                                        "--factor with its ratio, or train on stacks acquired with this one")
    warn_frames(mismatched, "stack")


def _training_axes(args):
    """``--axes``, or the axes of the patch folder or of the first low-quality image (a 2D or 3D model)."""
    if args.axes:
        return args.axes
    if args.patches:
        meta = Path(args.patches) / "patches.json"
        try:
            return json.loads(meta.read_text())["axes"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CareError(f"{args.patches}: not a patch folder from `carecore patches` ({meta.name} is missing or "
                            "unreadable)") from None
    files = _low_files(args)
    if files:
        return _say_if_guessed(files[0])
    missing = [p for p in args.low or () if not Path(p).exists()]
    if missing:
        raise CareError(f"{missing[0]}: no such folder or file (--low)")
    raise CareError("give --axes (e.g. YX or ZYX): no patch folder or low-quality images to read them from")


#: The configuration's fields that ``carecore train`` sets from its flags: errors name the flag.
CONFIG_FLAGS = {"batch_size": "--batch", "patch_size": "--patch", "seed": "--seed", "epochs": "--epochs",
                "steps_per_epoch": "--steps", "precision": "--precision", "init_weights": "--init-weights",
                "psf_sigma": "--psf-sigma"}


def _folder_patch_size(folder):
    """The spatial patch size a patch folder was cut at (its ``patches.json``), or None where it says none."""
    try:
        size = json.loads((Path(folder) / "patches.json").read_text()).get("patch_size")
        return tuple(int(n) for n in size) if size else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _time_limit(text):
    """``--time-limit``'s seconds: a number with its unit (s, m or h; :func:`~carecore.models.care.parse_duration`),
    more than 0."""
    from .models.care import parse_duration

    if str(text).strip()[-1:].isdigit():   # (parse_duration takes bare seconds; the command line asks for the unit)
        raise CareError(f"--time-limit {text}: give a number with its unit, e.g. 3m, 90s or 1h (a bare number is "
                        "refused: seconds or minutes?)")
    seconds = -1.0 if str(text).strip().startswith("-") else parse_duration(text)
    if seconds <= 0:
        raise CareError(f"--time-limit {text}: a budget must be more than 0 (for a fixed number of steps, leave it out "
                        "and give --epochs and --steps)")
    return seconds


def _say_below_line(line, *, ensemble=False):
    """Say when CARE's best validation SSIM of this run (``line["care"]``; an ensemble's: of any member) stayed
    below the best classical filter's (``line["filter"]``): the chart's dashed line never crossed."""
    if "care" in line and "filter" in line and line["care"] < line["filter"]:
        who = "no member of the ensemble rose above" if ensemble else "CARE stayed below"
        print(f"{who} the best classical filter on the validation patches (SSIM {line['care']:.3f} "
              f"against {line['name']}'s {line['filter']:.3f}): that filter restores these images better so far; train "
              "longer (--time-limit) or compare on held-out images with `carecore qc`")
    elif ensemble and "filter" in line:   # some members under it (unsaid, the last line read as all well: a trial)
        below = {m: v for m, v in sorted((line.get("members") or {}).items()) if v < line["filter"]}
        if below:
            print(f"member{'s' * (len(below) > 1)} {', '.join(map(str, below))} stayed below the best classical filter "
                  f"on the validation patches (SSIM {', '.join(f'{v:.3f}' for v in below.values())} against "
                  f"{line['name']}'s {line['filter']:.3f}); the ensemble's mean is scored with `carecore qc` on "
                  "held-out images")


def cmd_train(args):
    from .data.pairs import find_pairs
    from .data.patches import load_patches
    from .models.care import parse_duration
    from .models.folder import load_model_folder
    from .models.config import with_channels_of
    from .models.kinds import create_model, model_class
    from .progress import tqdm_progress

    if args.time_limit is not None:   # (before any work)
        args.time_limit = _time_limit(args.time_limit)
    model_dir = Path(args.model_dir)
    resume = (model_dir / "manifest.json").exists()
    if args.ensemble is not None and args.ensemble < 2:   # (0 trained one plain model, 1 failed after the patches)
        raise CareError(f"--ensemble {args.ensemble}: an ensemble has at least 2 members (their disagreement needs "
                        "two); for one model leave out --ensemble (with --probabilistic for its intervals)")
    if not resume:   # never into a folder of the user's (saving replaces the folder), nor over an ensemble's members
        check_replaceable(model_dir, ENSEMBLE_FOLDER if args.ensemble else MODEL_FOLDER)
    if args.ensemble:   # told before any patch is made
        if resume:
            raise CareError(f"{model_dir} already holds a model; give a new folder for an ensemble")
        if args.devices not in (None, "1"):
            raise CareError("--devices and --ensemble: an ensemble's members train one after another on one device")
    if resume:
        model = load_model_folder(model_dir, weights="last")
        config = model.config
        _resume_conflicts(args, model, model_dir)
        ignored = [f"--{k.replace('_', '-')}" for k in ("patch", "batch", "seed", "precision", "probabilistic",
                                                         "init_weights") if getattr(args, k, None)]
        used = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("psf", "structures", "psf_sigma_z")
                if getattr(args, k, None) is not None]
        print(f"resuming {model_dir} after {len(model.history)} epoch(s) with its own configuration"
              + (f"; ignored: {' '.join(ignored)} (give a new --model-dir to change them)" if ignored else "")
              + (f"; this run's training patches are made with {', '.join(used)} as given" if used else ""))
    else:
        overrides = {k: v for k, v in (("batch_size", args.batch), ("seed", args.seed), ("precision", args.precision),
                                       ("epochs", args.epochs), ("steps_per_epoch", args.steps),
                                       ("init_weights", args.init_weights)) if v is not None}
        if args.ensemble and args.ensemble >= 2:   # members share a budget: the recipe is sized for a share
            overrides["members"] = args.ensemble
        if args.time_limit:
            overrides["time_limit"] = parse_duration(args.time_limit)
        elif args.epochs is not None or args.steps is not None:
            overrides["time_limit"] = 0   # epochs x steps asked for: no budget (kinds that default to one too)
        # a network's axes in their order (the images' own, --axes XY, are moved to it when patches are cut)
        axes = "".join(a for a in "ZYX" if a in _training_axes(args).upper())
        if args.patch:
            overrides["patch_size"] = args.patch
        if args.patches and args.task in (None, "care") and not (args.upsampling or args.factor):
            # the folder's patch size (a user trial's model recorded the default, or --patch unused); a plain CARE
            # network's only: other kinds' folders record sizes of their own (a projection's whole depth)
            cut = _folder_patch_size(args.patches)
            if args.patch and cut and tuple(args.patch) != cut:
                raise CareError(f"--patch {','.join(map(str, args.patch))}: the patch folder {args.patches} holds "
                                f"patches of {'x'.join(map(str, cut))}, which training takes as they are; leave --patch "
                                "out, or cut patches of that size with `carecore patches --patch`")
            if cut and len(cut) == len(axes):
                overrides["patch_size"] = cut
        if args.probabilistic:
            overrides["probabilistic"] = True
        if args.task and args.task != "care":
            overrides["kind"] = args.task
        if args.upsampling and args.task not in (None, "upsampling"):
            raise CareError(f"--upsampling F makes an upsampling model; with --task {args.task} give "
                            + ("--factor F" if args.task == "isotropic" else "neither (it has no axial factor)"))
        if args.factor and args.task not in (None, "upsampling", "isotropic"):
            raise CareError(f"--factor: a {args.task} model has no axial factor (upsampling and isotropic models do); "
                            "leave it out, or give --task upsampling")
        factor = _axial_factor(args, args.task or ("upsampling" if args.upsampling or args.factor else "care"))
        if factor:
            overrides.update(kind=overrides.get("kind", "upsampling"), upsampling_factor=factor)
        if args.psf_sigma:
            overrides["psf_sigma"] = args.psf_sigma
        try:
            config = model_class(overrides.get("kind", "care")).default_config(axes, **overrides)
        except CareError as e:   # the configuration's field named as the flag that set it
            text = str(e)
            if text.startswith("upsampling_factor:") and factor:
                text = "--factor" + text[len("upsampling_factor"):]
            if text.startswith("patch_size") and args.patches and not args.patch:   # (the folder's, not --patch)
                text = f"the patch size of the patch folder {args.patches}" + text[len("patch_size"):]
            for field_, flag in CONFIG_FLAGS.items():   # (a user trial read "batch_size:" for --batch)
                if getattr(args, flag[2:].replace("-", "_"), None) is None:
                    continue   # (not given: from the recipe, or a patch folder's size)
                if text.startswith(f"{field_}:") or text.startswith(f"{field_} and "):
                    text = flag + text[len(field_):]
                    break
            raise CareError(text) from None
        if args.ensemble:   # told before any patch is made, in the command's terms
            try:
                config.replace(probabilistic=True, loss="laplace")
            except CareError as e:
                reason = str(e).split(": ", 1)[-1].split("; ")[0]
                raise CareError(f"--ensemble: an ensemble's members are probabilistic models (its disagreement "
                                f"compares their predicted distributions), and {config.kind} models cannot be "
                                f"probabilistic: {reason}; train one model: leave out --ensemble") from None
        if config.init_weights:   # a wrong source, or another size of network, is told before the patches are made
            from .models.init_weights import check_init_weights

            check_init_weights(config)
    task_options = {k: v for k, v in (("psf", args.psf), ("structures", args.structures),
                                      ("psf_sigma_z", args.psf_sigma_z)) if v is not None}
    if args.no_match_noise:
        if config.kind != "isotropic":
            raise CareError("--no-match-noise: only isotropic training (--task isotropic) gives its inputs the stack's "
                            f"noise back, not kind {config.kind!r}; leave it out")
        if args.patches:
            raise CareError(f"--no-match-noise: the patch folder {args.patches} was cut already (the noise is given "
                            "back as the patches are made); leave it out, or give --low")
        task_options["match_noise"] = False
    if args.same_field and (args.patches or not model_class(config.kind).needs_pairs):
        raise CareError("--same-field joins pairs of files (--low, --high) into fields of view; "
                        + (f"the patch folder {args.patches} was cut already (give --same-field to `carecore patches`)"
                           if args.patches else f"kind {config.kind!r} makes its own pairs"))
    if args.high and not args.patches and not model_class(config.kind).needs_pairs:   # (it was ignored without a word)
        raise CareError(f"--high: kind {config.kind!r} makes its own training pairs"
                        + (" from the --low stacks alone (their lateral slices are the targets)"
                           if config.kind == "isotropic" else " (simulated)") + "; leave --high out")
    if config.kind == "isotropic" and not args.patches:
        _check_isotropic_stacks(args, config)
    if args.patches:
        patches = load_patches(args.patches)
    elif model_class(config.kind).needs_pairs:
        if not (args.low and args.high):
            raise CareError("give --low and --high folders (or --patches)")
        listing = find_pairs(args.low, args.high)
        if listing.unmatched_low or listing.unmatched_high:
            print(listing.report(), file=sys.stderr)
        if args.same_field:
            task_options.update(fields=_same_field_labels(listing, args.same_field), shared_boxes=True)
        with tqdm_progress("patches", unit="image") as progress:
            patches = model_class(config.kind).make_patches(config, listing, axes=args.axes,
                                                            n_patches_per_image=args.n_per_image, progress=progress,
                                                            **task_options)
        _report_fields(patches, listing)
    else:
        with tqdm_progress("patches", unit="image") as progress:
            patches = model_class(config.kind).make_patches(config, args.low, axes=args.axes,
                                                            n_patches_per_image=args.n_per_image, progress=progress,
                                                            **task_options)
    from .data.patches import few_validation_note

    if few := few_validation_note(patches.n_val):   # (`carecore patches` said it; a trial's train did not)
        print(f"note: {few}")
    if not resume:
        config = with_channels_of(config, patches)
        if not args.ensemble:
            model = create_model(config, model_dir)
    epochs = args.epochs or config.epochs
    if args.time_limit:
        limit = parse_duration(args.time_limit)
    elif args.epochs is not None or args.steps is not None:
        limit = 0.0   # epochs x steps asked for: no budget, also for a model saved with one
    else:
        limit = config.time_limit
    # under a budget, --steps spaces the validations (one every --steps steps while the budget lasts); without
    # it the steps between them are planned from timed steps
    steps = args.steps if limit else (args.steps or config.steps_per_epoch)
    if resume:
        print((f"this run: a time budget of {limit:g} s" + (f", validated every {steps} step(s)" if steps else ""))
              if limit else f"this run: {epochs} epoch(s) of {steps} steps")
    from .progress import LazyBar, bar_interval
    from .training.events import budget_clock

    # (drawn at the first step: a training refused before it leaves no empty bar above the error)
    bar = LazyBar(total=limit or epochs * steps, desc="training", unit="s" if limit else "step",
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}" if limit else None,
                  mininterval=bar_interval())

    def on_event(e):
        if e["kind"] == "preparing":   # (the bar drawn once the inputs are accepted: not above their error)
            bar.set_postfix_str("preparing: " + ("the filters' line, the network" if e.get("tuning", True) else
                                                 "the network"), refresh=False)
            bar.update(0)
        elif e["kind"] == "batch":
            # (under a budget the total is what the time left holds at the pace so far: "~")
            bar.set_postfix_str(f"epoch {e['epoch']}/{'~' if limit else ''}{e['epochs']} loss {e['loss']:.4f}",
                                refresh=False)
            bar.update(max(0.0, budget_clock(e, limit) - bar.n) if limit else 1)
        elif e["kind"] == "epoch":
            bar.write(f"epoch {e['epoch']}: loss {e['loss']:.4f} val_loss {e['val_loss']:.4f} "
                      f"val_ssim {e['val_ssim']:.3f} lr {e['lr']:.2g}")
            if np.isfinite(e["val_ssim"]):
                line["care"] = max(line.get("care", -np.inf), float(e["val_ssim"]))
                if e.get("member"):   # (an ensemble's members: each one's best)
                    best = line.setdefault("members", {})
                    best[e["member"]] = max(best.get(e["member"], -np.inf), float(e["val_ssim"]))
            if e.get("best"):   # the epoch whose weights are kept (so far)
                line["kept"] = (e["epoch"], float(e["val_ssim"]))
        elif e["kind"] == "baseline":
            line["filter"], line["name"] = float(e["val_ssim"]), e["name"]
            params = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in e["params"].items())
            bar.write(f"best classical filter on the validation patches: {e['name']} ({params or 'defaults'})"
                      f"{' on the ' + e['start'] if e.get('start') else ''} val_ssim {e['val_ssim']:.3f}")
        elif e["kind"] in ("resume", "plan", "dead_network", "note"):
            if e.get("reason") == "short_budget":   # a budget its preparation (nearly) used up
                line["short"] = e["message"]
            bar.write((f"member {e['member']}: " if e.get("member") else "") + e["message"])
        elif e["kind"] == "ensemble_end":
            outcome.update(e)

    outcome = {}   # how an ensemble's training ended
    line = {}      # the best classical filter's validation SSIM, and CARE's best of this run

    if args.ensemble:
        from .uncertainty import train_ensemble

        bar.total = limit or epochs * steps * args.ensemble
        try:
            ens = train_ensemble(patches, config, model_dir, n_members=args.ensemble, callback=on_event,
                                 epochs=epochs, steps_per_epoch=steps, time_limit=limit)
        finally:
            bar.close()
        if ens is None:
            print(f"carecore: {outcome['state']}: {outcome['message']}", file=sys.stderr)
            return 1
        _say_below_line(line, ensemble=True)   # (before the last line, which says how it ended)
        print(f"{outcome['state']}: ensemble of {len(ens.members)} member(s) in {model_dir}"
              + (f"; {outcome['message']}" if outcome["message"] else ""))
        return 0
    try:
        result = model.train(patches, epochs=epochs, steps_per_epoch=steps, callback=on_event, time_limit=limit,
                             devices=_devices(args.devices))
    finally:
        bar.close()
    best = ("validation MAE of the mean" if model._best_by() == "val_laplace_mae" else "val_loss")   # what chose it
    _say_below_line(line)   # (before the last line, which says how it ended)
    # how it ended (the steps a budget took: a user trial compared them with the plan's), and which epoch's
    # weights are kept with their validation SSIM, the number the epochs' lines were read by
    ended = result.message.split("; the best weights are kept")[0] if result.status == "time_limit" else ""
    kept = (f" (epoch {line['kept'][0]}, val_ssim {line['kept'][1]:.3f})" if line.get("kept") else
            " (of a run before this one: none of this run's epochs beat it)" if resume and "care" in line else "")
    print(f"{result.status}: {ended + ', ' if ended else ''}{result.epochs} epoch(s); the weights kept: best {best} "
          f"{result.best_val_loss:.4f}{kept}; model in {model_dir}")
    if result.status == "nan":
        print(f"carecore: {result.message}", file=sys.stderr)
        return 1
    if line.get("short"):   # (exit status 0 said that a network all but untrained had trained: a user trial)
        if resume or config.init_weights:   # its earlier (or its source's) weights are kept: not a failure
            print(f"carecore: note: {line['short']}; this run hardly trained the model in {model_dir} (the weights "
                  f"it {'had' if resume else 'started from'} are kept unless beaten)", file=sys.stderr)
            return 0
        print(f"carecore: {line['short']}; the model saved in {model_dir} has hardly trained", file=sys.stderr)
        return 1
    return 0


def cmd_predict(args):
    from .export.package import is_bioimageio_package, load_bioimageio
    from .io import read_image, write_image
    from .progress import tqdm_progress
    from .models.folder import load_model
    from .prediction.smoothing import MAX_OUTPUT_SIGMA
    from .uncertainty import Ensemble, predictive_readouts

    if args.output_sigma is not None and not 0 <= args.output_sigma <= MAX_OUTPUT_SIGMA:
        raise CareError(f"--output-sigma: must be a number of pixels in [0, {MAX_OUTPUT_SIGMA:g}] (0: no smoothing), "
                        f"got {args.output_sigma:g}")
    if args.workers is not None and args.workers < 1:   # (0 was taken as the default, unsaid)
        raise CareError(f"--workers {args.workers}: the number of Dask workers, 1 or more")
    if args.interval is not None and not (args.lower_out or args.upper_out or args.dask or args.scheduler or args.workers):
        raise CareError(f"--interval {args.interval:g}: the confidence of the interval that --lower-out and --upper-out "
                        "write; give them too, or leave out --interval")
    args.interval = 0.9 if args.interval is None else args.interval
    if not 0 < args.interval < 1:
        raise CareError(f"--interval {args.interval:g}: the confidence of the central interval, between 0 and 1 (e.g. 0.9)")
    if not args.memory_budget > 0:
        raise CareError(f"--memory-budget {args.memory_budget:g}: MiB of working memory, more than 0")
    if args.axes is None and Path(args.inp).exists():
        _say_if_guessed(args.inp)
    if args.dask or args.scheduler or args.workers:
        return _predict_dask(args)
    packages = [m for m in args.model if is_bioimageio_package(m)]
    if packages and len(args.model) > 1:
        raise CareError(f"--model {packages[0]}: a bioimage.io package is one model; give it alone")
    if packages:   # a bioimage.io package (zip or unpacked folder) runs through its own weights
        model = load_bioimageio(packages[0])
        probabilistic = model.probabilistic
    else:
        model = load_model(args.model)
        probabilistic = (model.members[0] if isinstance(model, Ensemble) else model).config.probabilistic
    img = read_image(args.inp, axes=args.axes, mmap=True)
    if hasattr(img.data, "dask"):  # an OME-Zarr input restored in memory (--dask restores it chunk by chunk)
        import dataclasses

        img = dataclasses.replace(img, data=np.asarray(img.data))
    tiles = "auto" if args.tiles == "auto" else _floats(args.tiles)
    kw = dict(axes=img.axes, n_tiles=tiles, memory_budget=int(args.memory_budget * 2**20))
    if args.normalization:
        if packages:
            raise CareError(f"--normalization: the bioimage.io package {packages[0]} scales its input by its own "
                            "preprocessing; restore the model folder to choose")
        kw["normalization"] = args.normalization
    if args.tta:
        if packages:
            raise CareError(f"--tta: the bioimage.io package {packages[0]} runs its own weights once; restore the "
                            "model folder to average the flips and rotations")
        kw["tta"] = True
    if args.output_sigma is not None:
        if packages:
            raise CareError(f"--output-sigma: the bioimage.io package {packages[0]} smooths as it was exported; "
                            "restore the model folder to choose")
        plain = [m for m in (model.members if isinstance(model, Ensemble) else [model]) if not m.smooths_output]
        if args.output_sigma and plain:   # 0 (no smoothing) suits every kind
            raise CareError(f"--output-sigma: {plain[0].config.kind} models do not smooth their output; leave it out")
        kw["output_sigma"] = args.output_sigma
    first = model.members[0] if isinstance(model, Ensemble) else model
    first.check_spacing(img.spacing, name=str(args.inp))   # (an isotropic model: the voxel size against its factor)
    spacing = first.output_spacing(img.spacing)
    out_axes = first.output_axes(img.axes)  # a projection drops Z
    if "S" in img.axes and args.axes and out_axes == img.axes and "Z" not in out_axes:
        # a stack whose Z slices were restored one by one as samples (--axes SYX for a ZYX file, as a 2D model's
        # error advises) is written back along Z, the file's own axis: as S it was written as time points (a user
        # trial); not where Z was only guessed for a file without axes
        from .io import peek_axes

        own, _, guessed = peek_axes(args.inp)
        if not guessed and len(own) == len(img.axes) and own[img.axes.index("S")] == "Z":
            out_axes = out_axes.replace("S", "Z")
    restored_by = {"model": [str(m) for m in args.model]}   # (an OME-Zarr output marked a restoration: replaceable)
    write = lambda path, data: write_image(path, data, axes=out_axes, spacing=spacing, attrs=restored_by)  # noqa: E731
    wants = [o for o in ("scale_out", "lower_out", "upper_out", "samples_out", "disagreement_out") if getattr(args, o)]
    if args.disagreement_out and not isinstance(model, Ensemble):   # (before the probabilistic check: the real need)
        raise CareError("--disagreement-out needs an ensemble: give several --model folders (or an ensemble folder)")
    if not probabilistic and wants:
        raise CareError(f"--{wants[0].replace('_', '-')} needs a probabilistic model; {args.model[0]} is not")

    if args.samples_out and "T" in out_axes:   # before any work is done
        raise CareError(f"--samples-out: the samples are written along T, and {args.inp} has time points (axes "
                        f"{img.axes}, shape {tuple(img.shape)}); draw samples of one time point at a time")
    if isinstance(model, Ensemble) and args.tta and args.disagreement_out:
        raise CareError("--tta with --disagreement-out: the mean of the views hides part of the members' disagreement, "
                        "and the ensemble's reference levels of D were measured on one view (as the app restores an "
                        "ensemble); leave --tta out for the disagreement")
    if isinstance(model, Ensemble) and args.scale_out:  # before any work is done
        raise CareError("--scale-out is one Laplace's scale; an ensemble predicts a mixture: use --lower-out/"
                        "--upper-out (the mixture's interval) or --disagreement-out")
    if isinstance(model, Ensemble):
        with tqdm_progress("predicting", unit="tile") as progress:
            means, scales = model.predict_members(img.data, progress=progress, name=str(args.inp), **kw)
        if args.disagreement_out:
            from .uncertainty import disagreement

            with tqdm_progress("disagreement", unit="px") as progress:
                write(args.disagreement_out, disagreement(means, scales, progress=progress))
        members = True
    else:
        with tqdm_progress("predicting", unit="tile") as progress:
            out = model.predict(img.data, progress=progress, name=str(args.inp), **kw)
        means, scales = out if isinstance(out, tuple) else (out, None)
        members = False
        if args.scale_out:
            write(args.scale_out, scales)
    if scales is not None:  # intervals, samples and the mean from the predicted distribution itself
        r = predictive_readouts(means, scales, members=members, confidence=args.interval,
                                n_samples=args.samples if args.samples_out else 0)
        mean = r["mean"]
        if args.lower_out:
            write(args.lower_out, r["lower"])
        if args.upper_out:
            write(args.upper_out, r["upper"])
        if args.samples_out:
            write_image(args.samples_out, r["samples"], axes="T" + out_axes.replace("T", ""), spacing=spacing,
                        attrs=restored_by)
    else:
        mean = means
    write(args.out, mean)
    print(f"wrote {args.out}" + "".join(f", {getattr(args, o)}" for o in wants))
    if getattr(getattr(first, "config", None), "kind", None) == "subdiffraction":   # (said once per run; a package: no)
        print("note: a sub-diffraction model was trained on simulated tubules and granules only: it draws such "
              "structures, also where the sample has none (diffuse signal can turn into thin lines, a nucleus into a "
              "ring); its intensities are the simulated targets' mapped into this image's percentile range, not a "
              "measurement. Check it against the input.")
    return 0


def _predict_dask(args):
    """``carecore predict --dask``: chunk by chunk over a Dask cluster into an OME-Zarr store."""
    from .export.package import is_bioimageio_package
    from .prediction.distributed import predict_chunked
    from .progress import tqdm_progress

    if any(is_bioimageio_package(m) for m in args.model):
        raise CareError(f"--dask runs carecore model folders; {args.model[0]} is a bioimage.io package (restore it "
                        "without --dask)")
    extra = [o for o in ("scale_out", "lower_out", "upper_out", "samples_out", "disagreement_out") if getattr(args, o)]
    if extra:
        raise CareError(f"--{extra[0].replace('_', '-')}: with --dask the scale, the interval bounds and the "
                        f"disagreement are written into {args.out} itself (extras/scale, extras/lower, extras/upper, "
                        "extras/disagreement)")
    if args.tiles != "auto":
        raise CareError("--tiles: with --dask give --chunks (block sides per spatial axis, e.g. 32,256,256)")
    model = args.model[0] if len(args.model) == 1 else args.model
    with tqdm_progress("predicting", unit="chunk") as progress:
        r = predict_chunked(model, args.inp, args.out, axes=args.axes, chunks=args.chunks, scheduler=args.scheduler,
                            n_workers=args.workers, memory_budget=int(args.memory_budget * 2**20),
                            interval=args.interval, normalization=args.normalization, tta=args.tta,
                            output_sigma=args.output_sigma, progress=progress)
    extras = [n for n in r.outputs if n != "image"]
    print(f"wrote {args.out} ({r.computed} of {r.blocks} chunks computed now"
          + (f"; extras: {', '.join(extras)}" if extras else "") + ")")
    return 0


def cmd_convert(args):
    from .io import read_image, write_image

    img = read_image(args.inp, axes=args.axes, mmap=True)
    write_image(args.out, img.data, axes=img.axes, spacing=img.spacing)
    size = ", ".join(f"{a} {v:g} {'s' if a == 'T' else 'µm'}" for a, v in img.spacing.items())
    print(f"wrote {args.out} ({' x '.join(map(str, img.shape))} {img.axes}" + (f"; voxel {size}" if size else "") + ")")
    return 0


def _say_if_tuning_is_long(args):
    """A note before the report on stacks: every filter is tuned on each image first, minutes for a 3D stack
    (file headers only)."""
    from .data.pairs import find_pairs
    from .io import peek_axes

    try:
        pairs = find_pairs(args.low, args.gt).pairs
        stacks = [p for p in pairs if "Z" in (args.axes.upper() if args.axes else peek_axes(p.low)[0])]
    except CareError:   # (said by the report itself)
        return
    if stacks:
        print(f"carecore: note: the classical filters are tuned on each image's ground truth before it is scored: "
              f"minutes for a 3D stack ({len(stacks)} here), NLM's large windows taking most of them; --baselines "
              "gaussian,median,tv,bilateral leaves NLM out", file=sys.stderr)


def _check_qc_depths(args):
    """Before the report: an axial model's restorations of ``--low`` have round(n x factor) slices; a ground
    truth of another depth is told with why and how to fix it (file headers only)."""
    from .data.pairs import find_pairs
    from .io import peek_axes
    from .metrics import z_slices_hint
    from .models.config import CareConfig

    try:   # one model folder's configuration (ensembles and packages: the report itself tells)
        config = CareConfig.from_dict(json.loads((Path(args.model[0]) / "config.json").read_text()))
    except (OSError, ValueError, TypeError, CareError):
        return
    if config is None or config.kind not in ("isotropic", "upsampling"):
        return
    f = config.upsampling_factor
    for pair in find_pairs(args.low, args.gt).pairs:
        try:
            (la, ls, _), (ga, gs, _) = peek_axes(pair.low), peek_axes(pair.high)
        except CareError:
            return
        if args.axes and len(args.axes) == len(ls) == len(gs):
            la = ga = args.axes.upper()
        if la != ga or "Z" not in la or len(ls) != len(gs):
            continue
        z = la.index("Z")
        restored = tuple(int(round(n * f)) if i == z else n for i, n in enumerate(ls))
        if restored == tuple(gs):
            continue
        hint = z_slices_hint(restored, gs, la, factor=f, n_input=ls[z], pred=f"the restoration of {pair.low}",
                             gt=str(pair.high))
        if hint:
            raise CareError(f"{pair.name}: the restoration will have shape {restored} (axes {la}) but the ground "
                            f"truth {pair.high} has {tuple(gs)}; {hint}")


def cmd_qc(args):
    from .progress import tqdm_progress
    from .qc import TUNING, quality_report, verdict

    baselines = None
    if args.baselines is not None:   # (NLM takes most of the time on a large image: a trial waited minutes)
        from .baselines import available_baselines

        baselines = [] if args.baselines.strip().lower() == "none" else \
            [n.strip() for n in args.baselines.split(",") if n.strip()]
        unknown = [n for n in baselines if n not in available_baselines()]
        if unknown or args.baselines.strip() == "":
            raise CareError(f"--baselines {args.baselines!r}: {', '.join(unknown) or 'no filter'} is not one of "
                            f"{', '.join(available_baselines())} (comma-separated), or none")
    _check_qc_depths(args)
    if baselines is None:   # (a trial's 3D stack: 12 minutes of a bar at "0/1 image", NLM's large windows most of it)
        _say_if_tuning_is_long(args)
    # the filters' grid points on a bar of their own, then the images (a trial's bar stood at "0/1 image" for
    # the 12 minutes of the filters, its clock still between its redraws)
    with tqdm_progress("filters", unit="point") as tuning, tqdm_progress("qc", unit="image") as images:
        def progress(done, total, what):
            if what.startswith(TUNING):
                tuning(done, total, what[len(TUNING) + 2:])
            else:   # (the filters' bar closed first: two open bars redrew out of order in a terminal)
                tuning.close()
                images(done, total, what)

        rep = quality_report(args.model, args.low, args.gt, args.out, axes=args.axes, normalization=args.normalization,
                             baselines=baselines, progress=progress)
    for name, m in rep["overall"].items():
        print(f"{name:10s} NRMSE {m['nrmse']:.4f}  SSIM {m['ssim']:.4f}  PSNR {m['psnr']:.2f}")
    if rep.get("overall_trained_on"):
        print("(every image here was trained on: the mean over training images flatters CARE)")
    for sentence in verdict(rep["overall"], kind=rep.get("kind", "care"),   # (as the report says it)
                            seen=bool(rep.get("overall_trained_on"))):
        print(sentence)
    if "calibration" in rep:
        from .qc import coverage_text, coverage_verdict

        print(f"ECE {rep['calibration']['ece']:.3f}")
        if rep["calibration"].get("by_brightness"):
            print("90 % intervals holding the truth, by its brightness: " + coverage_text(rep["calibration"]["by_brightness"]))
            said = coverage_verdict(rep["calibration"]["by_brightness"], capital=True)
            if said:
                print(said)
    for w in rep["warnings"]:
        print(f"carecore: warning: {w}", file=sys.stderr)   # (as every other warning)
    print(f"report: {Path(args.out) / 'index.html'}")
    return 0


def cmd_export(args):
    from .export import export_bioimageio

    test_input = None
    if args.test_input:
        from .io import read_image

        img = read_image(args.test_input, axes=args.axes)
        test_input, args.axes = img.data, img.axes
    formats = args.weight_formats.split(",") if args.weight_formats != "auto" else "auto"
    out = export_bioimageio(args.model, args.out, name=args.name, authors=args.author, license=args.license,
                            test_input=test_input, test_axes=args.axes, postprocessing=args.postprocessing,
                            weight_formats=formats)
    print(f"bioimage.io package: {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    try:
        kind = json.loads((Path(args.model) / "config.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if not args.test_input and kind == "subdiffraction":
        print("note: its test input (test_input.npy, in the package) is an image simulated as its training images were")
    elif not args.test_input:   # (a user trial did not know that a crop of its training data travels in the package)
        try:
            low = json.loads((Path(args.model) / "run_card.json").read_text())["data_sources"][0]["low"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            low = "the first training input"
        print(f"note: its test input (test_input.npy, in the package) is a crop of {low}; before you publish it, "
              "give --test-input with an image you may share")
    return 0


def cmd_import_csbdeep(args):
    from .export import import_csbdeep

    model = import_csbdeep(args.inp, args.model_dir, weights=args.weights)
    print(f"carecore model: {model.path} ({model.config.ndim}D, {model.count_params()} parameters)")
    return 0


def voila_options(cull_idle_timeout=600, cull_interval=60):
    """The options with which ``carecore lab`` (and the app's browser tests) serve the app with Voila.

    A reloaded or closed page leaves its kernel (about 1 GB) behind: Voila's shutdown request on unload
    lacks the XSRF token (voila-dashboards/voila#1458, answered 403). A kernel without a connected page
    is ended after ``cull_idle_timeout`` idle seconds (checked every ``cull_interval``). A page open in
    the browser keeps its kernel; one whose connection is lost for longer loses it (its restorations
    are saved, and training jobs run in their own processes: a reload shows them again). A kernel that
    follows a running training job stays busy until the job ends.
    """
    return [f"--MappingKernelManager.cull_idle_timeout={int(cull_idle_timeout)}",
            f"--MappingKernelManager.cull_interval={int(cull_interval)}",
            # jupytext (for the notebooks) ships a JupyterLab extension that fails to load in Voila
            "--VoilaConfiguration.extension_denylist=['jupyterlab-jupytext']"]


def _serve(cmd, env):
    """Run Voila (``cmd``) until it ends, and its exit status (128 + the signal's number where a signal ended
    it); a SIGTERM or SIGHUP sent to this process (``kill``, a closed terminal, a service manager) is passed on
    to it as a SIGTERM, on which it stops its kernels too (Voila 0.5 handles SIGTERM alone: a SIGHUP would end
    it with its kernels left). Ctrl-C reaches it with the terminal's process group."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env)
    passed = {sig: signal.signal(sig, lambda signum, frame: proc.send_signal(signal.SIGTERM))
              for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                code = proc.wait()
                return 128 - code if code < 0 else code
            except KeyboardInterrupt:   # (Voila has it too: it asks whether to stop, or stops on a second one)
                continue
    finally:
        for sig, handler in passed.items():
            signal.signal(sig, handler)


def cmd_lab(args):
    from .simulate import write_demo_data

    root = Path(args.data_root)
    if not (root / "denoising3d").exists():
        print(f"writing the embedded demo data to {root} ...")
        write_demo_data(root)
    app = Path(__file__).resolve().parent.parent / "app" / "care_lab.ipynb"
    if app.exists():
        import os

        env = dict(os.environ, CARELAB_DATA_ROOT=str(root.resolve()))
        cmd = [sys.executable, "-m", "voila", "--no-browser", f"--port={args.port}", f"--Voila.ip={args.ip}",
               *voila_options(), str(app)]
        print(f"CARE Lab: open http://{args.ip}:{args.port}/ in your browser (Ctrl-C stops it)")
        return _serve(cmd, env)
    print(f"demo data ready in {root}; try:\n  carecore evaluate --pred {root}/denoising3d/test/low/sample00.tif "
          f"--gt {root}/denoising3d/test/high/sample00.tif")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="carecore", description="CARE Lab: content-aware image restoration for microscopy.")
    p.add_argument("--version", action="version", version=f"carecore {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("demo-data", help="write small ready-to-train demo datasets (simulated, deterministic)")
    s.add_argument("dir")
    s.add_argument("--task", action="append", help="only this task (repeatable)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", choices=["small", "tiny"], default="small")
    s.set_defaults(func=cmd_demo_data)

    s = sub.add_parser("evaluate", help="NRMSE, SSIM and PSNR of an image against its ground truth (paper protocol)")
    s.add_argument("--pred", required=True, help="restored (or input) image")
    s.add_argument("--gt", required=True, help="ground truth image")
    s.add_argument("--axes", help="axes of both images (default: from the files)")
    s.add_argument("--per-slice", action="store_true", help="also report each Z slice")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("degrade", help="simulate low-quality images from a clean one")
    dsub = s.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, help_ in (("noise", "photon-budget degradation (Poisson + Gaussian)"),
                        ("anisotropic", "axial blur + subsampling along one axis, interpolated back onto the original grid "
                                        "(upsampling pairs; --subsampled: the coarse stack itself)")):
        d = dsub.add_parser(kind, help=help_)
        d.add_argument("--in", dest="inp", required=True)
        d.add_argument("--out", required=True)
        d.add_argument("--axes")
        d.add_argument("--seed", type=int, default=0)
        d.add_argument("--read-noise", type=float, default=0.0,
                       help="standard deviation of the camera's Gaussian read noise, in output units (default 0)")
        d.set_defaults(func=cmd_degrade)
    d = dsub.choices["noise"]
    d.add_argument("--photons", type=float, required=True, help="expected photons at the brightest pixel")
    d.add_argument("--background", type=float, default=0.0, help="background photons per pixel")
    d.add_argument("--gain", type=float, default=1.0, help="output units per photon (default 1)")
    d.add_argument("--offset", type=float, default=0.0, help="constant camera offset added, in output units (default 0)")
    d = dsub.choices["anisotropic"]
    d.add_argument("--factor", type=float, required=True, help="subsampling factor (non-integer allowed)")
    d.add_argument("--axis", default="Z", type=str.upper)
    d.add_argument("--psf-sigma", type=float, help="axial PSF sigma in pixels")
    d.add_argument("--na", type=float)
    d.add_argument("--wavelength", type=float, help="emission wavelength, same unit as --voxel-size")
    d.add_argument("--voxel-size", type=float,
                   help="the voxel size along --axis, in the unit of --wavelength: derives the PSF sigma with --na "
                        "and --wavelength (default: the file's recorded one, else 1), and is written with the output "
                        "(in place of the file's)")
    d.add_argument("--refractive-index", type=float, default=1.33)
    d.add_argument("--photons", type=float, help="add photon noise at this peak count")
    d.add_argument("--interpolation", choices=["nearest", "linear", "cubic"], default="linear",
                   help="how the subsampled stack is interpolated back (default: linear)")
    d.add_argument("--subsampled", action="store_true",
                   help="write the subsampled (coarse) stack, as an isotropic model trains on and predict takes, "
                        "instead of interpolating it back onto the original grid")
    d.add_argument("--params", help="also write the parameters used as JSON here")
    dsub.choices["noise"].add_argument("--params", help="also write the parameters used as JSON here")

    s = sub.add_parser("patches", help="training patches (half of them foreground-biased) from folders of pairs")
    s.add_argument("--low", required=True, nargs="+", help="low-quality folder(s)")
    s.add_argument("--high", required=True, help="ground-truth folder")
    s.add_argument("--axes")
    s.add_argument("--axes-high", help="axes of the ground-truth images where they differ from --axes")
    s.add_argument("--patch", type=_floats, required=True, help="patch size, e.g. 16,64,64")
    s.add_argument("--n-per-image", type=int, default=64,
                   help="patches per image pair (per time point or sample of a pair with T or S; default: 64)")
    s.add_argument("--same-field", metavar="REGEX", help=SAME_FIELD_HELP)
    s.add_argument("--validation", type=float, default=0.1,
                   help="share of the pairs' area held out for validation, in whole regions no training patch "
                        "touches (default: 0.1)")
    s.add_argument("--fg-threshold", type=float, default=0.4,
                   help="a biased patch lies within half a patch of ground truth above this share of its 99.9th percentile")
    s.add_argument("--fg-fraction", type=float, default=0.5,
                   help="share of the training patches drawn with the foreground bias; the rest are uniform")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_patches)

    s = sub.add_parser("train", help="train a CARE network on folders of pairs (resumes an existing model folder)")
    s.add_argument("--low", nargs="+", help="low-quality folder(s)")
    s.add_argument("--high", help="ground-truth folder")
    s.add_argument("--patches", help="a patch folder from `carecore patches` instead of --low/--high")
    s.add_argument("--same-field", metavar="REGEX", help=SAME_FIELD_HELP)
    s.add_argument("--axes", help="axes of the images, e.g. ZYX or CYX")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--epochs", type=int, help="epochs to train, each followed by a validation (with --steps and no "
                                              "--time-limit: a fixed number of steps)")
    s.add_argument("--steps", type=int, help="steps per epoch (with --time-limit: a validation every STEPS steps while "
                                             "the budget lasts)")
    s.add_argument("--time-limit", metavar="T", help="train for a wall-clock budget, a number with its unit, e.g. 3m, "
                                                     "90s, 1h (the schedule and the validations are planned for it "
                                                     "unless --steps; the best weights are kept)")
    s.add_argument("--devices", metavar="N", help="train data-parallel on N GPUs (or logical CPUs), or 'all'; "
                                                  "the batch is split across them (default: one device)")
    s.add_argument("--patch", type=_floats, help="patch size, e.g. 16,64,64")
    s.add_argument("--batch", type=int, help="patches per training step (default: sized for the budget)")
    s.add_argument("--n-per-image", type=int, default=64, help="patches per image (default: 64)")
    s.add_argument("--probabilistic", action="store_true", help="predict per-pixel Laplace mean and scale")
    s.add_argument("--task", choices=list(KINDS),
                   help="model kind (default: care): " + "; ".join(f"{k}: {v[2]}" for k, v in KINDS.items()))
    s.add_argument("--upsampling", type=float, metavar="FACTOR", help="an upsampling model for this axial factor "
                                                                      "(the same as --task upsampling --factor F)")
    s.add_argument("--factor", type=float, help="axial factor, Z voxel size / lateral voxel size (upsampling, "
                                                "isotropic; isotropic without it: the first stack's recorded ratio)")
    s.add_argument("--psf-sigma", type=float, metavar="S", help="PSF sigma in lateral (Y/X) pixels, not Z slices "
                                                                "(isotropic: the axial PSF's; upsampling: the axial PSF's, "
                                                                "optional: deconvolution among the classical "
                                                                "starts; subdiffraction: the lateral PSF's)")
    s.add_argument("--psf-sigma-z", type=float, metavar="SZ", help="subdiffraction, ZYX: axial PSF sigma in Z voxels "
                                                                    "(default: --psf-sigma)")
    s.add_argument("--psf", help="a measured PSF image instead of --psf-sigma")
    s.add_argument("--structures", help="subdiffraction: synthetic structures to train on, e.g. tubules,granules")
    s.add_argument("--no-match-noise", action="store_true",
                   help="isotropic: do not give the training inputs the stack's noise back after their blur (for a "
                        "stack simulated from a clean one, whose noise was blurred along Z with its structure; an "
                        "acquired stack's slices keep their noise in full, and the inputs are given it by default)")
    s.add_argument("--precision", choices=["mixed_bfloat16", "float32"],
                   help="default: mixed_bfloat16 for 3D networks where a training step is faster in it (a GPU that computes in "
                        "bfloat16; a CPU with bfloat16 instructions where a timed step says so), else float32")
    s.add_argument("--seed", type=int, help="seed of the patch draws and the initial weights (default 0)")
    s.add_argument("--init-weights", metavar="SOURCE",
                   help="fine-tune: start from a model folder's weights instead of random ones (the network takes "
                        "its size; its layers are copied before the first step)")
    s.add_argument("--ensemble", type=int, metavar="M", help="train M probabilistic members (seeds seed..seed+M-1)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="restore an image with a trained model or a bioimage.io package (tiled)")
    s.add_argument("--model", required=True, nargs="+",
                   help="model folder, ensemble folder, several model folders, or a bioimage.io package (.zip or "
                        "its unpacked folder with rdf.yaml; run with its own ONNX or Keras weights)")
    s.add_argument("--in", dest="inp", required=True, help="the image to restore (TIFF or OME-Zarr)")
    s.add_argument("--out", required=True, help="the restoration (.tif, or .zarr for OME-Zarr)")
    s.add_argument("--axes", help="axes of --in, e.g. ZYX, TZYX, CYX (default: from the file)")
    s.add_argument("--tiles", default="auto", help="auto, or tiles per spatial axis such as 1,4,4")
    s.add_argument("--memory-budget", type=float, default=1024,
                   help="MiB of network activations at once (default: 1024; memory_budget= in Python is in bytes)")
    s.add_argument("--normalization", choices=["image", "training"],
                   help="scale the input by its own percentiles (image) or by the training inputs' (training); "
                        "default: the model's input_normalization (training for models trained by this carecore)")
    s.add_argument("--tta", action="store_true",
                   help="average the restorations of the image's flips and 90° rotations in YX (test-time "
                        "augmentation: 8 views, 4 when the training patches were not square; that many times the "
                        "work, smoother where the truth is flat; a probabilistic model's scale is multiplied by the "
                        "factor its training measured on validation patches)")
    s.add_argument("--output-sigma", type=float, metavar="PIXELS",
                   help="smooth the restored mean by a Gaussian of this sigma instead of the model's own (the one "
                        "training chose on its validation patches, or the configured one); 0: the network's output "
                        "as it is")
    s.add_argument("--scale-out", help="probabilistic models: write the Laplace scale here (not for ensembles: their "
                                       "mixture has no one scale; use --lower-out/--upper-out or --disagreement-out)")
    s.add_argument("--disagreement-out", help="ensembles: write the disagreement D (0..1) here (one view: not with --tta)")
    s.add_argument("--interval", type=float, help="confidence of --lower-out/--upper-out (default: 0.9)")
    s.add_argument("--lower-out", help="probabilistic models: lower end of the central interval")
    s.add_argument("--upper-out", help="probabilistic models: upper end of the central interval")
    s.add_argument("--samples", type=int, default=10, help="number of samples for --samples-out (default: 10)")
    s.add_argument("--samples-out", help="probabilistic models: samples (an uncertainty movie, axis T)")
    s.add_argument("--dask", action="store_true", help="chunk by chunk over a Dask cluster into an OME-Zarr --out "
                                                      "(resumable; probabilistic outputs as extras of the store)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies "
                                                          "--dask; default: a local cluster)")
    s.add_argument("--workers", type=int, metavar="N", help="workers of the local cluster (with --scheduler: wait for N)")
    s.add_argument("--chunks", type=_floats, help="--dask: block sides per spatial axis, e.g. 32,256,256 (default: "
                                                  "from --memory-budget)")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("convert", help="convert an image between TIFF and OME-Zarr (keeps axes and voxel size)")
    s.add_argument("inp", metavar="IN", help="a .tif file or an .ome.zarr folder")
    s.add_argument("out", metavar="OUT", help="a .tif file or an .ome.zarr folder (NGFF 0.4 with a pyramid)")
    s.add_argument("--axes", help="axes of IN (default: from the file)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("qc", help="quality-control report: metrics, baselines, calibration, disagreement (HTML)")
    s.add_argument("--model", required=True, nargs="+", help="model folder, ensemble folder, or several model folders")
    s.add_argument("--low", required=True, help="folder of low-quality images")
    s.add_argument("--gt", required=True, help="folder of ground truth images (same file names)")
    s.add_argument("--axes")
    s.add_argument("--out", required=True, help="report folder (index.html, report.json, PNG figures)")
    s.add_argument("--normalization", choices=["image", "training"],
                   help="scale each input by its own percentiles (image: images taken with another gain or offset "
                        "than the training images) or by the training inputs' (training); default: the model's")
    s.add_argument("--baselines", help="the classical filters to tune on the ground truth and compare, comma-separated "
                                       "(default: all of gaussian, median, nlm, tv, bilateral; NLM takes the longest), "
                                       "or none")
    s.set_defaults(func=cmd_qc)

    s = sub.add_parser("export", help="write a model folder as a bioimage.io package (Fiji/deepImageJ, KNIME, napari)")
    s.add_argument("--model", required=True, help="model folder (kind care or subdiffraction)")
    s.add_argument("--out", required=True, help="package to write (.zip)")
    s.add_argument("--format", default="bioimageio", choices=["bioimageio"])
    s.add_argument("--name", help="package name: 5 to 128 letters, digits, spaces or _+-() (default: the folder's "
                                   "name made so, e.g. models/care -> 'care (CARE)')")
    s.add_argument("--author", action="append", help="author name (repeat for several)")
    s.add_argument("--license", default="CC-BY-4.0", help="SPDX license identifier (default: CC-BY-4.0)")
    s.add_argument("--test-input", help="image to test the package with (default: the first training input)")
    s.add_argument("--axes", help="axes of --test-input")
    s.add_argument("--postprocessing", choices=["scale_linear", "scale_mean_variance", "none"],
                   help="how the output is brought back to intensities (default: scale_linear where the channels "
                        "in and out agree and the model is not probabilistic or scales by its training inputs' "
                        "percentiles, else none: normalized units)")
    s.add_argument("--weight-formats", default="auto",
                   help="auto, or comma-separated: keras_v3,tensorflow_saved_model_bundle,onnx")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("import-csbdeep", help="turn a CSBDeep CARE model folder into a carecore model folder")
    s.add_argument("--in", dest="inp", required=True, help="CSBDeep model folder (config.json, weights_best.h5)")
    s.add_argument("--model-dir", required=True, help="carecore model folder to write (new)")
    s.add_argument("--weights", default="best", choices=["best", "last"])
    s.set_defaults(func=cmd_import_csbdeep)

    s = sub.add_parser("lab", help="start CARE Lab (the web app) on the demo data")
    s.add_argument("--data-root", default="lab-data",
                   help="the folder of datasets the lab lists (default: lab-data); the demo datasets are written into "
                        "it first when it has no denoising3d/ folder")
    s.add_argument("--port", type=int, default=8866, help="the port to serve on (default: 8866)")
    s.add_argument("--ip", default="127.0.0.1", help="the address to serve on (default: 127.0.0.1, this machine only)")
    s.set_defaults(func=cmd_lab)
    return p


#: Options naming files or folders a command reads, and files or folders it writes (argparse dests).
INPUT_OPTIONS = ("inp", "low", "high", "gt", "pred", "model", "patches", "test_input")
OUTPUT_OPTIONS = ("out", "scale_out", "lower_out", "upper_out", "samples_out", "disagreement_out")
#: Commands whose outputs are images (TIFF or OME-Zarr).
IMAGE_WRITERS = ("predict", "convert", "degrade")


def _same_path(a, b):
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return a.samefile(b)   # links and other spellings of one file
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(args):
    """Before any work: no output where an input is (it would be overwritten: the raw data lost) and no
    two outputs in one place."""
    inputs = [(o, v) for o in INPUT_OPTIONS for v in _listed(getattr(args, o, None))]
    outputs = [(o, v) for o in OUTPUT_OPTIONS for v in _listed(getattr(args, o, None))]
    for i, (o, out) in enumerate(outputs):
        for io, inp in inputs:
            if _same_path(out, inp):
                raise CareError(f"{_option(o)} {out}: is the {_option(io)} {inp}; writing there would overwrite it: "
                                "give another output path")
        for o2, out2 in outputs[i + 1:]:
            if _same_path(out, out2):
                raise CareError(f"{_option(o)} and {_option(o2)} are both {out}: give each output its own path")


def _listed(value):
    return [] if value is None else [value] if isinstance(value, (str, Path)) else list(value)


def _option(dest):
    return {"inp": "--in"}.get(dest, "--" + dest.replace("_", "-"))


def _show_care_warnings():
    """A :class:`~carecore.CareWarning` as one line, ``carecore: warning: ...`` (no source line)."""
    import warnings

    from .errors import CareWarning

    if getattr(warnings.showwarning, "_carecore", False):
        return
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CareWarning):   # (above a progress bar being drawn, not on its line)
            from tqdm import tqdm

            tqdm.write(f"carecore: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show._carecore = True
    warnings.showwarning = show


def _user_errors():
    """Exceptions a user causes with the files they give (an internal bug still shows its traceback)."""
    import tifffile

    return (OSError, tifffile.TiffFileError)


def main(argv=None):
    import os

    from . import _TF_LOG_OURS

    if _TF_LOG_OURS:   # keep TensorFlow's start-up chatter off the terminal (unless the user asked for it)
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # a negative budget ("--time-limit -1m") is taken for an option by argparse ("expected one argument"):
    # joined to its flag, it is told as a budget that must be more than 0
    for i, word in enumerate(argv[:-1]):
        if word == "--time-limit" and re.fullmatch(r"-[0-9.]+\w*", argv[i + 1]):
            argv[i:i + 2] = [f"--time-limit={argv[i + 1]}"]
            break
    args = parser.parse_args(argv)
    _show_care_warnings()
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        check_outputs(args)
        if getattr(args, "command", None) in IMAGE_WRITERS:   # a missing folder or a suffix told before any work
            from .io import check_writable

            for o in OUTPUT_OPTIONS:
                if getattr(args, o, None):
                    check_writable(getattr(args, o), what="OUT" if args.command == "convert" else _option(o))
                    if args.command == "predict":   # never over a store of raw data (a trial lost one so)
                        from .ngff import check_restoration_target

                        check_restoration_target(getattr(args, o))
        if getattr(args, "n_per_image", None) is not None and args.n_per_image < 1:   # (said by its flag)
            raise CareError(f"--n-per-image: must be >= 1, got {args.n_per_image}")
        if getattr(args, "command", None) == "patches" and args.out:   # (refused before a note says it is replaced)
            from ._atomic import PATCH_FOLDER, check_replaceable

            check_replaceable(args.out, PATCH_FOLDER)
        if getattr(args, "command", None) in IMAGE_WRITERS + ("patches", "export"):
            # (a patch folder and a package are swapped in at the end too: a user trial found them replaced unsaid)
            there = [str(getattr(args, o)) for o in OUTPUT_OPTIONS if getattr(args, o, None) and Path(getattr(args, o)).exists()]
            if there:   # (written beside and swapped in at the end: an interrupted run leaves them as they are)
                print(f"note: {', '.join(there)} exist{'s' if len(there) == 1 else ''} and will be replaced when this "
                      "run finishes (interrupt it before then to keep " + ("it" if len(there) == 1 else "them") + ")")
        return args.func(args)
    except CareError as e:
        print(f"carecore: error: {e}", file=sys.stderr)
        return 2
    except _user_errors() as e:  # files that are missing, unreadable, not images, a full disk: one line
        name = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"carecore: error:{name} {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("carecore: interrupted" + _kept_after_interrupt(args), file=sys.stderr)
        return 130


def _kept_after_interrupt(args):
    """What an interrupted ``train`` kept (its run card says; a user trial was told only "interrupted"), or an
    interrupted ``predict --dask`` (its chunks done, in the store's resumable part)."""
    if getattr(args, "command", None) == "predict" and getattr(args, "out", None) and (
            getattr(args, "dask", False) or getattr(args, "scheduler", None) or getattr(args, "workers", None)):
        from .prediction.distributed import DONE, resume_part

        part = resume_part(args.out)
        if part.is_dir():
            try:
                import zarr

                done = zarr.open_array(str(part / DONE), mode="r")[...]
                counted = f"{int(done.sum())} of {done.size} chunks done, "
            except Exception:  # noqa: BLE001 - the count is a courtesy
                counted = ""
            return (f": {counted}kept in {part} (run the same command again to continue; delete that folder to "
                    "start afresh)")
        return ""
    folder = getattr(args, "model_dir", None) if getattr(args, "command", None) == "train" else None
    try:
        card = json.loads((Path(folder) / "run_card.json").read_text()) if folder else {}
    except (OSError, ValueError):
        return ""
    if not isinstance(card, dict) or card.get("status") != "interrupted":
        return ""
    return (f": {folder} keeps the best weights of its {card.get('epochs_done')} epoch(s) and the last ones "
            "(run the same command again to resume)")


if __name__ == "__main__":
    sys.exit(main())

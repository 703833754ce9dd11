"""Isotropic restoration: a 2D network trained on the stack's own lateral slices, applied to its
axial slices (CARE-NOTES §1, §8).

No ground-truth volume is needed. Training pairs come from the anisotropic stack itself: its lateral
(YX) slices are the targets, and the inputs are the same slices degraded along one lateral axis as
the microscope degrades Z (:func:`~carecore.simulate_anisotropic`: the axial PSF, as a Gaussian sigma
or a measured PSF rotated into the plane, then decimation by the axial factor and interpolation back).
Each slice gives two pairs, degraded along Y and along X, both presented with the degraded axis first
(as Z is in an XZ or YZ slice); rotations are therefore not used as augmentation. Validation holds
out whole slices (both pairs), in runs of neighbouring slices with guards on either side: the slices
within two axial PSF sigmas of a held-out one give no patch, as they show much of its content.

Prediction interpolates Z by the factor (onto ``round(n × factor)`` slices at ``0, 1/f, 2/f, ...``
of the coarse grid, exactly as :class:`~carecore.models.upsampling.UpsamplingCARE`: the last
``factor - 1`` slices lie beyond the last coarse slice and repeat it), restores every XZ and every YZ
slice with the 2D network, and combines the two. The combination is the arithmetic mean (the paper);
``combine="geometric"`` gives CSBDeep's geometric mean of the two (negative values clipped to 0
first). On the real Arabidopsis embryo (tests/models/test_isotropic.py) the two differed by less
than 0.005 SSIM; the mean is kept as it needs no clipping.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..axes import check_axes, spatial_axes
from ..errors import CareError
from ..fingerprint import crop_sketches, fingerprint
from ..prediction.frames import frame_by_frame
from ..progress import check_stop, report
from .care import CARE, FINE_TUNE_INSTEAD
from .upsampling import (UpsamplingCARE, deconvolved_starts, interpolation_starts, spacing_mismatch,
                         warn_if_interpolated)


def noise_model(stack):
    """The pixel noise of a stack (Z, Y, X, C; one channel: the first is read) as ``(a, b)``: its variance ``a * signal + b``
    (shot noise and read noise), fitted to the variance of the finest diagonal Haar wavelet coefficients of
    its lateral slices (each 2 x 2 block's ``(a - b - c + d) / 2``: white noise's own variance, smooth
    structure and straight edges cancelled; a robust one, the median absolute deviation, over blocks binned
    by their mean level); about ``(0, 0)`` for a noise-free stack."""
    x = np.asarray(stack, np.float32)[..., 0]
    x = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
    p, q, r, t = x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]
    d = ((p - q - r + t) / 2.0).ravel()
    m = ((p + q + r + t) / 4.0).ravel()
    if len(d) > 2_000_000:   # (a sample of the pixels is enough)
        pick = np.random.default_rng(0).choice(len(d), 2_000_000, replace=False)
        d, m = d[pick], m[pick]
    edges = np.unique(np.percentile(m, np.linspace(0, 100, 21)))
    levels, variances = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (m >= lo) & (m <= hi)
        if sel.sum() >= 100:
            dd = d[sel]
            levels.append(float(np.median(m[sel])))
            variances.append(float((1.4826 * np.median(np.abs(dd - np.median(dd)))) ** 2))
    if len(levels) < 2:
        return 0.0, float(variances[0]) if variances else 0.0
    a, b = np.polyfit(levels, variances, 1)
    a = max(float(a), 0.0)
    b = float(np.mean(np.asarray(variances) - a * np.asarray(levels)))   # (refitted with the slope kept >= 0)
    return a, max(b, 0.0)


def _blur_noise_factor(psf):
    """How much of white noise's standard deviation a blur along one axis keeps (sqrt of its kernel's sum of
    squares): ``psf`` a Gaussian sigma in pixels or an axial profile."""
    from scipy import ndimage as ndi

    if np.ndim(psf) == 0:
        delta = np.zeros(8 * int(np.ceil(4 * float(psf))) + 1)
        delta[len(delta) // 2] = 1.0
        w = ndi.gaussian_filter1d(delta, float(psf), mode="constant") if float(psf) > 0 else delta
    else:
        w = np.asarray(psf, np.float64)
    return float(np.sqrt(np.sum(w ** 2)))


class IsotropicCARE(CARE):
    """A 2D :class:`CARE` (``config.axes == "YX"``) that restores anisotropic ZYX stacks slice by slice."""

    needs_pairs = False
    smooths_output = False
    #: its training percentiles are the median of its lateral slices' (each pair is a slice), which on a sparse
    #: stack lie well below the stack's own (13 times on a small simulated stack of a few nuclei, restoring
    #: the stack it was trained on): warned only at 20 times, as all kinds were before 2026-12-05
    unlike_range = 20

    @classmethod
    def check_config(cls, config):
        if config.axes != "YX":
            raise CareError(f"kind and axes: isotropic models are 2D networks on axial slices (axes 'YX'), "
                            f"got {config.axes!r}; they restore ZYX stacks: care_config('YX', kind='isotropic', ...), or "
                            "model_class('isotropic').default_config('ZYX', ...), which takes the stack's axes")
        if not config.upsampling_factor > 1:
            raise CareError(f"upsampling_factor: must be > 1 for kind='isotropic' (the axial factor), got "
                            f"{config.upsampling_factor}")
        if config.probabilistic:
            raise CareError("probabilistic: isotropic models predict one value per voxel (the two slice "
                            "directions are combined); train a plain model")
        if config.n_channel_in != config.n_channel_out:
            raise CareError("isotropic models restore each channel as it is: n_channel_in must equal n_channel_out")

    @classmethod
    def default_config(cls, axes="ZYX", **overrides):
        """A 2D configuration (axes YX) for stacks of ``axes`` (ZYX, with C for channels)."""
        from .config import care_config

        if "Z" not in axes.upper():
            raise CareError(f"isotropic restoration works on stacks with a Z axis, got axes {axes!r}")
        overrides.setdefault("augment", False)   # rotations would move the degraded axis
        overrides.setdefault("kind", "isotropic")
        return care_config("YX", **overrides)

    @classmethod
    def make_patches(cls, config, sources, *, axes="ZYX", n_patches_per_image=64, progress=None, stop=None,
                     out=None, psf=None, match_noise=True, **options):
        """Training patches from anisotropic stacks alone.

        Parameters
        ----------
        config : CareConfig
            Kind ``isotropic``: ``upsampling_factor`` (the axial factor) and ``psf_sigma`` (the axial PSF
            sigma, in lateral pixels) are used.
        sources : folder, file, list of them, or list of arrays / :class:`~carecore.Image`
            The anisotropic stacks (axes ``axes``).
        axes : str
            Axes of the stacks (ZYX, or with C).
        n_patches_per_image : int
            Patches per lateral slice and direction.
        out : str or Path, optional
            Write the patches into this folder (see :func:`~carecore.create_patches`).
        psf : str, Path or array, optional
            A measured PSF (ZYX, or its XZ plane) used instead of ``psf_sigma``: its axial profile (summed
            over Y and X) is rotated into the lateral plane and applied along the degraded axis.
        match_noise : bool
            Give each input the stack's noise back after the blur (:func:`noise_model`: the blur smooths a
            slice's noise, which an acquired stack's slices keep in full). Measured on the embryo subsampled
            by 4 (3 minutes, test part held out): 100 photons 0.589 -> 0.882 SSIM (cubic interpolation
            0.727), 10 photons 0.286 -> 0.476 (0.286); a stack whose noise was blurred with it (simulated
            from a clean image, not acquired) loses by it: 0.964 -> 0.936 (cubic 0.958), so turn it off there
            (``carecore train --no-match-noise``). Each channel gets its own channel's noise.
        """
        from ..data.patches import NoRoomForTraining, create_patches
        from ..io import read_image
        from ..simulate.anisotropic import simulate_anisotropic

        if options:
            raise CareError(f"kind 'isotropic' takes no options {sorted(options)} (it takes psf)")
        stacks = _read_stacks(sources, axes)
        if not stacks:
            raise CareError("isotropic training needs at least one anisotropic stack (--low)")
        profile = None
        if psf is not None:
            p = read_image(psf) if not isinstance(psf, np.ndarray) else None
            arr = np.asarray(p.data if p is not None else psf, np.float64)
            paxes = p.axes if p is not None else ("ZYX" if arr.ndim == 3 else "ZX")
            if "Z" not in paxes:
                raise CareError(f"PSF {psf if p is not None else 'array'}: axes {paxes} have no Z (shape {arr.shape})")
            z = paxes.index("Z")
            profile = arr.sum(axis=tuple(i for i in range(arr.ndim) if i != z))
            if not profile.sum() > 0:
                raise CareError(f"PSF {psf}: its axial profile sums to {profile.sum()}")
            profile = profile / profile.sum()
            reach = 2 * _half_maximum_width(profile) / 2.355   # two sigmas of a Gaussian of the same width
        elif not config.psf_sigma > 0:
            raise CareError("isotropic training needs the axial PSF: psf_sigma (in lateral pixels; see "
                            "carecore.psf_sigma_from_optics) or a measured psf")
        else:
            reach = 2 * config.psf_sigma
        f = config.upsampling_factor
        # slices that close (the axial PSF's two sigmas in slices, rounded; at least the next one) show much of
        # one another's content: a slice held out for validation has them as guards, not trained on
        guard = max(1, int(np.floor(reach / f + 0.5)))
        # the blur along the degraded axis also smooths the slice's own noise, which the stack's acquired slices
        # keep in full: given back before subsampling (the stack's noise, measured), so that the inputs are as
        # noisy as a real stack's (without it a noisy stack was restored worse than its cubic interpolation)
        kept = _blur_noise_factor(profile if profile is not None else config.psf_sigma)
        rng = np.random.default_rng(config.seed)
        pairs, fields, neighbours = [], [], {}   # fields: a slice's two pairs show one view (one the other's transpose)
        noise = []
        for i, (name, stack, saxes) in enumerate(stacks):
            check_stop(stop)
            if "C" in saxes:
                stack = np.moveaxis(stack, saxes.index("C"), -1)
            else:
                stack = stack[..., None]
            if match_noise:   # (each channel its own shot and read noise)
                fits = [noise_model(stack[..., c:c + 1]) for c in range(stack.shape[-1])]
                var_a = np.array([a for a, _ in fits], np.float32)
                var_b = np.array([b for _, b in fits], np.float32)
                share = max(1.0 - kept ** 2, 0.0)
                add = (lambda y, var_a=var_a, var_b=var_b, share=share:   # noqa: E731  (y: Y, X, C)
                       np.sqrt(np.maximum(var_a * y + var_b, 0.0) * share))
                one = len(fits) == 1   # (one channel's recorded as numbers, channels' as lists)
                noise.append({"variance_per_level": float(var_a[0]) if one else var_a.tolist(),
                              "variance_at_0": float(var_b[0]) if one else var_b.tolist()})
            else:   # (asked not to: a stack whose noise was blurred with its structure)
                add = 0.0
                noise.append(None)
            for z, zslice in enumerate(stack):   # (Y, X, C)
                for img in (zslice, np.swapaxes(zslice, 0, 1)):   # degrade along Y, then along X
                    if img.shape[0] < 2 * f:
                        raise CareError(f"{name}: lateral size {img.shape[0]} is too small for factor {f}")
                    seed = int(rng.integers(2**32))
                    if profile is not None:
                        from scipy import ndimage as ndi

                        blurred = ndi.convolve1d(img, profile[::-1], axis=0, mode="reflect")
                        low = simulate_anisotropic(blurred, f, axes="YXC", axis="Y", psf_sigma=0.0, noise_std=add,
                                                   seed=seed, interpolation=config.interpolation)[0]
                    else:
                        low = simulate_anisotropic(img, f, axes="YXC", axis="Y", psf_sigma=config.psf_sigma,
                                                   noise_std=add, seed=seed, interpolation=config.interpolation)[0]
                    pairs.append((low, np.asarray(img, np.float32)))
                    fields.append((i, z))
                neighbours[(i, z)] = [(i, z + d * side) for d in range(1, guard + 1) for side in (-1, 1)
                                      if 0 <= z + d * side < len(stack)]
            report(progress, i + 1, len(stacks), name)
        sketched = [crop_sketches(stack, saxes) for _, stack, saxes in stacks]   # (each stack's sketch's two parts)
        made = {"factor": f, "psf_sigma": config.psf_sigma, "guard_slices": guard,
                "psf": str(psf) if psf is not None and not isinstance(psf, np.ndarray) else
                ("array" if psf is not None else None),
                # a measured PSF's Gaussian of the same width: the sigma of the classical deconvolution starts
                **({"psf_sigma_equivalent": round(_half_maximum_width(profile) / 2.355, 4)}
                   if profile is not None else {}),
                "stacks": [name for name, _, _ in stacks],
                "slices": [[i, z] for i, z in fields],   # (the stack and slice of each pair)
                "fingerprints": [fingerprint(stack, saxes) for _, stack, saxes in stacks],
                "sketches": [first for first, _ in sketched], "sketches_rare": [rare for _, rare in sketched],
                "shapes": [[int(n) for n in stack.shape] for _, stack, _ in stacks],
                "pairs": "lateral slices degraded along Y and along X (degraded axis first)",
                "noise": noise, "blur_noise_factor": kept}
        # a slice validates whole, both ways, in runs of slices with guards on either side
        try:
            return create_patches(pairs, config.patch_size, axes="YXC", n_patches_per_image=n_patches_per_image,
                                  percentiles=config.percentiles, seed=config.seed, stop=stop, out=out,
                                  meta={"isotropic": made}, fields=fields, neighbours=neighbours, check_pairs=False)
        except NoRoomForTraining:
            n_slices = len(neighbours)
            raise CareError(f"{n_slices} slice(s) in {len(stacks)} stack(s) leave none to train on: validation holds out "
                            f"about a tenth of the slices (at least one), and the {guard} slice(s) on either side of "
                            f"each are not trained on (within two axial PSF sigmas, {reach:.3g} px, at factor {f:g}); "
                            "give more slices") from None

    def _training_images(self, info):
        """``[(name, fingerprint)]`` of the stacks (the patches' own sources are their slices), as the run card
        lists them."""
        made = info.get("isotropic") or {}
        return list(zip(made.get("stacks") or [], made.get("fingerprints") or []))

    @staticmethod
    def _stack_sketches(made):
        """Each stack's sketch as its patch set records it (:func:`~carecore.fingerprint.recorded_sketch`),
        or None's."""
        from ..fingerprint import recorded_sketch

        n = len(made.get("stacks") or [])
        rare = made.get("sketches_rare") or [None] * n
        return [recorded_sketch({"sketch": s, "sketch_rare": r}) for s, r in zip(made.get("sketches") or [None] * n, rare)]

    @staticmethod
    def _slices_by_block(info):
        """``{stack: {"trained": set, "validated": set}}``: each stack's slices (z) that its patches train
        on, and those they validate on (held out whole); None where the patches do not say (made before
        2026-12-07)."""
        made, sources = info.get("isotropic") or {}, info.get("sources") or []
        pairs = made.get("slices")
        if not pairs or len(pairs) != len(sources):
            return None
        out = {}
        for (i, z), s in zip(pairs, sources):
            block = s.get("validation_block")
            slices = out.setdefault(i, {"trained": set(), "validated": set()})
            if block is None or block.get("boxes"):   # (boxes: a slice that is its own transpose, both)
                slices["trained"].add(z)
            if block is not None and (block.get("whole") or block.get("boxes")):   # (a guard: neither)
                slices["validated"].add(z)
        return out

    def _validated_where_learned(self, info, learned):
        """The stacks whose held-out slices lie where a network of ``learned`` trained: on one of its
        trained slices of that stack (by fingerprint), or closer to one than the guard slices keep
        (:func:`make_patches`'s ``guard_slices``); every stack of theirs that holds slices out where either
        side does not say; a crop of one of their stacks (by its sketch, :func:`~carecore.fingerprint.
        sketches_overlap`), on another grid, where it holds slices out. A stack that holds none out is
        not named."""
        from ..fingerprint import recorded_sketch, sketch_matcher

        made = info.get("isotropic") or {}
        guard = int(made.get("guard_slices") or 1)
        now = self._slices_by_block(info)
        sketches = self._stack_sketches(made)
        crop_of = sketch_matcher([recorded_sketch(r) for r in learned])
        again = set()
        for i, ((name, fp), sketch) in enumerate(zip(self._training_images(info), sketches)):
            validated = (now or {}).get(i, {}).get("validated", set())
            if now is not None and not validated:
                continue   # (no slice of it validates)
            earlier = [r.get("trained_slices") for r in learned if fp and r.get("fingerprint") == fp]
            near = {z + d for z in validated for d in range(-guard, guard + 1)}
            if any(t is None or now is None or near & set(t) for t in earlier) or (not earlier and crop_of(sketch)):
                again.add(Path(str(name)).name)
        return again

    def _check_same_sources(self, info):
        """A resumed training goes on with the stacks it began with. The patches' own sources are the stacks'
        slices (arrays, which the base class's check passes): the stacks are compared here, by name and
        fingerprint (the run card's ``data_sources``). On other stacks, or one more, it would choose its best
        weights on other held-out slices, some of which its first run trained on."""
        super()._check_same_sources(info)
        recorded = (self.run_card or {}).get("data_sources") or []
        if any(str(s.get("low", "")).startswith("array ") for s in recorded):
            return   # (a run card of before 2026-12-05 lists the slices, not the stacks: not compared)
        before = sorted((Path(str(s.get("low", ""))).name, str(s.get("fingerprint"))) for s in recorded)
        now = sorted((Path(str(n)).name, str(fp)) for n, fp in self._training_images(info))
        if not before or not now or before == now:
            return
        where = f" {self.path}" if self.path else ""
        said = lambda keys: ", ".join(n for n, _ in keys[:3]) + (" ..." if len(keys) > 3 else "")  # noqa: E731
        raise CareError(f"this isotropic model{where} was trained on other stacks ({said(before)}; now {said(now)}, "
                        "or the same names with other pixels): resuming on them would choose its best weights on other "
                        "held-out slices, some of which it trained on, and lose the record of what it learned from; "
                        f"{FINE_TUNE_INSTEAD}")

    def _run_card(self, info, data_hash, status, message, seconds):
        """The training data recorded per stack (its lateral slices are the training pairs): whether the
        model was trained on a stack (:meth:`~carecore.CARE.trained_on`) is known by its path and pixels."""
        card = super()._run_card(info, data_hash, status, message, seconds)
        made = info.get("isotropic") or {}
        if made.get("stacks"):
            prints = made.get("fingerprints") or [None] * len(made["stacks"])
            shapes = made.get("shapes") or [None] * len(made["stacks"])
            sketches = self._stack_sketches(made)
            # the noise its training inputs were given back after the blur (None: none, match_noise=False)
            noises = made.get("noise") or [None] * len(made["stacks"])
            # the slices it trained on (a fine-tune validating on them, or next to them, is told)
            by_block = self._slices_by_block(info)
            trained = [sorted(by_block.get(i, {}).get("trained", ())) if by_block is not None else None
                       for i in range(len(made["stacks"]))]
            card["data_sources"] = [{"low": name, "high": f"{name} (its lateral slices, degraded along Y and X)",
                                     **({"fingerprint": fp} if fp else {}), **({"shape": sh} if sh else {}),
                                     **({"sketch": sk} if isinstance(sk, str) else
                                        {"sketch": sk[0], "sketch_rare": sk[1]} if sk else {}), "noise_given_back": nz,
                                     **({"trained_slices": t} if t is not None else {})}
                                    for name, fp, sh, sk, nz, t in zip(made["stacks"], prints, shapes, sketches, noises,
                                                                       trained)]
        return card

    # -- prediction ---------------------------------------------------------------------------
    # the output grid and voxel size are the upsampling kind's: Z interpolated by the axial factor
    on_output_grid = UpsamplingCARE.on_output_grid
    grid_starts = UpsamplingCARE.grid_starts
    output_spacing = UpsamplingCARE.output_spacing
    input_spatial_axes = "ZYX"   # (its 2D network restores the stack's XZ and YZ slices)

    def patch_grid_starts(self, X):
        """The validation patches (batch, degraded axis, other axis, channel), made by interpolating every
        ``factor``-th row of a degraded slice back (the model's interpolation), brought onto their grid
        three ways, as :meth:`grid_starts` brings a stack (:func:`~carecore.models.upsampling.
        interpolation_starts`)."""
        starts = interpolation_starts(X, self.config.upsampling_factor, self.config.interpolation)
        return {**starts, **deconvolved_starts(starts, self.axial_psf_sigma())}

    def axial_psf_sigma(self):
        """The axial PSF's Gaussian sigma in pixels that the classical deconvolution starts use: for a model
        trained with a measured PSF, the Gaussian of that PSF's half-maximum width (the run card's
        ``isotropic.psf_sigma_equivalent``: its training pairs were blurred with that PSF, whatever
        ``psf_sigma`` said), else ``config.psf_sigma``; 0 where neither is known."""
        measured = ((self.run_card or {}).get("isotropic") or {}).get("psf_sigma_equivalent")
        return float(measured or self.config.psf_sigma or 0.0)

    def _records_of(self, info):
        """A measured PSF's record (``{"isotropic": {"psf": ..., "psf_sigma_equivalent": ...}}``): the
        deconvolution starts of the validation line and of every later comparison take its sigma."""
        made = info.get("isotropic") or {}
        if made.get("psf_sigma_equivalent"):
            return {"isotropic": {"psf": made.get("psf"), "psf_sigma_equivalent": made["psf_sigma_equivalent"]}}
        return {"isotropic": None}   # (patches of a sigma: an earlier run's measured PSF no longer holds)

    def check_spacing(self, spacing, *, name="image"):
        """Warn when the voxel size ``spacing`` ({axis: size}, as :func:`~carecore.read_image` gives it) says
        the stack's axial factor is not the model's (:func:`spacing_mismatch`); returns the message or None.
        (Not for upsampling models: their fine grid need not be isotropic, so their factor need not be the
        stack's Z/X ratio.)"""
        message = spacing_mismatch(spacing, self.config.upsampling_factor, name=name)
        if message:
            from ..errors import warn

            warn(message + f"; the output's Z voxel size will be {spacing['Z']:g} / {self.config.upsampling_factor:g} = "
                 f"{spacing['Z'] / self.config.upsampling_factor:g} µm, and the restoration is made for a stack of ratio "
                 f"{self.config.upsampling_factor:g}: restore stacks acquired with that ratio, or train a model for "
                 "this one (carecore train --factor)", stacklevel=2)
        return message

    @frame_by_frame
    def predict(self, image, *, axes, combine="mean", normalization=None, progress=None, stop=None, out=None,
                name="image", **kw):
        """Restore an anisotropic stack; returns ``round(Z × factor)`` slices (see the module).

        Parameters
        ----------
        image : array_like
            The stack, axes ``ZYX`` (optionally with ``C``; with ``T`` or ``S`` each frame is restored
            on its own, :func:`~carecore.prediction.frames.frame_by_frame`).
        axes : str
        combine : {"mean", "geometric"}
            How the restorations of the XZ and the YZ slices are combined.
        normalization : Normalization, "image" or "training", optional
            How the stack is scaled (:meth:`~carecore.CARE.input_normalization`; default: the model's
            configured ``input_normalization``, the training inputs' percentiles for a model trained here).
        progress, stop : callables, optional
            ``progress(done, total, "slices")``.
        out : array, optional
            Where to write the result (shape of :meth:`on_output_grid`'s result).
        **kw
            Passed to :meth:`CARE.predict` for each slice (``n_tiles``, ``memory_budget``...).
        """
        x = np.asarray(image) if not hasattr(image, "shape") else image
        axes = check_axes(axes, np.ndim(x), name=name, shape=np.shape(x))
        if sorted(spatial_axes(axes)) != sorted("ZYX") or set(axes) - set("CZYX"):
            raise CareError(f"{name}: isotropic restoration takes a stack with Z, Y and X (optionally C, in any "
                            f"order); got axes {axes!r}, shape {tuple(np.shape(x))}")
        if combine not in ("mean", "geometric"):
            raise CareError(f"combine must be 'mean' or 'geometric', got {combine!r}")
        self._tta_views(kw.get("tta", False), name)   # before the stack is brought onto the fine grid
        self._check_output_sigma(kw.get("output_sigma"))   # only 0: this kind does not smooth
        nc = x.shape[axes.index("C")] if "C" in axes else 1
        if nc != self.config.n_channel_in:
            raise CareError(f"{name}: the model takes {self.config.n_channel_in} channel(s) but the stack has {nc} "
                            f"(shape {tuple(np.shape(x))}, axes {axes})")
        warn_if_interpolated(x, self.config.upsampling_factor, self.config.interpolation, axes=axes, name=name)
        norm = self.input_normalization(x, axes=axes, normalization=normalization, name=name)
        order = [axes.index(a) for a in "ZYX"] + ([axes.index("C")] if "C" in axes else [])
        fine = self.on_output_grid(np.transpose(x, order) if "C" in axes else np.transpose(x, order)[..., None],
                                   axes="ZYXC")   # (Z', Y, X, C)
        Z, Y, X, C = fine.shape
        res = np.zeros(fine.shape, np.float32)
        geo = combine == "geometric"
        total, done = Y + X, 0
        report(progress, 0, total, "slices")
        base = super().predict
        for direction, n in (("XZ", Y), ("YZ", X)):
            for k in range(n):
                check_stop(stop)
                sl = fine[:, k] if direction == "XZ" else fine[:, :, k]   # (Z', X or Y, C)
                r = base(sl, axes="YXC", normalization=norm, name=f"{name} {direction} slice {k}", **kw)
                if geo:
                    r = np.sqrt(np.maximum(r, 0))
                if direction == "XZ":
                    res[:, k] = r
                else:
                    res[:, :, k] = res[:, :, k] * r if geo else res[:, :, k] + r
                done += 1
                report(progress, done, total, "slices")
        if not geo:
            res *= 0.5
        # back in the input's axes order (a YXZ file comes back YXZ, on the fine Z grid)
        back = np.transpose(res, ["ZYXC".index(a) for a in axes]) if "C" in axes else \
            np.transpose(res[..., 0], ["ZYX".index(a) for a in axes])
        if out is not None:
            if tuple(out.shape) != back.shape:
                raise CareError(f"out has shape {tuple(out.shape)}, expected {back.shape}")
            out[...] = back
            return out
        return back


def _half_maximum_width(profile):
    """The full width at half maximum of a profile's main peak, in samples, its ends interpolated
    between samples: a measured PSF's background does not widen it as it widens the variance."""
    peak, half = int(np.argmax(profile)), float(profile.max()) / 2
    ends = []
    for step in (-1, 1):
        i = peak
        while 0 <= i + step < profile.size and profile[i + step] >= half:
            i += step
        j = i + step
        if 0 <= j < profile.size:   # between the last sample above half and the first below
            i = i + step * (profile[i] - half) / (profile[i] - profile[j])
        ends.append(i)
    return float(ends[1] - ends[0])


def _read_stacks(sources, axes):
    """[(name, array, axes)] from folders, files, Images or arrays."""
    from pathlib import Path

    from ..io import Image, list_images, read_image
    from ..ngff import is_ngff

    if sources is None:
        return []
    if isinstance(sources, (str, Path, np.ndarray, Image)):
        sources = [sources]
    out = []
    for s in sources:
        if isinstance(s, (str, Path)) and Path(s).is_dir() and not is_ngff(s):
            files = list_images(s)
            if not files:
                raise CareError(f"{s}: no TIFF stacks or OME-Zarr images in this folder")
            out.extend(_read_stacks(files, axes))
            continue
        if isinstance(s, (str, Path)):
            img = read_image(s)
            a = axes or img.axes
            out.append((str(s), np.asarray(img.data, np.float32), check_axes(a, img.data.ndim, name=str(s),
                                                                             shape=img.data.shape)))
        elif isinstance(s, Image):
            out.append((str(s.path or "image"), np.asarray(s.data, np.float32), s.axes))
        else:
            a = axes or "ZYX"
            out.append(("array", np.asarray(s, np.float32), check_axes(a, np.ndim(s), name="array",
                                                                       shape=np.shape(s))))
    for name, arr, a in out:
        if spatial_axes(a) != "ZYX" or set(a) - set("CZYX"):
            raise CareError(f"{name}: isotropic training takes ZYX stacks (optionally with C), got axes {a!r} (shape "
                            f"{arr.shape}); save each time point or sample as a stack of its own")
    return out

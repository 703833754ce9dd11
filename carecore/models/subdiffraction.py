"""Sub-diffraction restoration: a CARE network trained only on simulated structures (CARE-NOTES §1, §8).

No acquired training pairs are needed. :meth:`SubdiffractionCARE.make_patches` simulates them with the
microscope's PSF and noise: tubular networks and granules (:mod:`carecore.simulate.structures`) plus
a smooth background, blurred with the PSF and imaged with Poisson + Gaussian noise, are the inputs;
the same structures blurred only with a much smaller PSF (``target_sigma``, by default a quarter of
the PSF's) are the targets. The trained network then restores real widefield-like images (2D ``YX``
or 3D ``ZYX``) taken with that PSF.

The PSF is ``config.psf_sigma`` (a Gaussian, sigma in pixels; 3D: lateral, with ``psf_sigma_z``
along Z) or a measured PSF image given to :meth:`~SubdiffractionCARE.make_patches` (``psf=``: a
path or an array). A measured PSF is not stored in the configuration (``psf_sigma`` stays as it
was, 0 when only the measured PSF was given): the patch set's ``meta["subdiffraction"]`` records its
file name, SHA-256 and the sigmas of the Gaussian with the same second moments
(``psf_sigma_equivalent``), and the model's run card copies that record (``run_card["subdiffraction"]``).

Examples
--------
>>> config = SubdiffractionCARE.default_config("YX", psf_sigma=2.0, time_limit=60)    # doctest: +SKIP
>>> patches = SubdiffractionCARE.make_patches(config)                                 # doctest: +SKIP
>>> model = SubdiffractionCARE(config, "models/tubules"); model.train(patches)        # doctest: +SKIP
>>> restored = model.predict(widefield, axes="YX")                                    # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import CareError
from ..progress import check_stop, report
from .care import CARE

#: Training budget (seconds) of :meth:`SubdiffractionCARE.default_config` unless one is given.
DEFAULT_TIME_LIMIT = 180.0
#: What :meth:`SubdiffractionCARE.default_config` changes in the fast recipe (values given win). Measured
#: on 2 CPU cores, 45 s of training, PSF sigma 2 px, 4 held-out 128×128 images: 3×3 kernels (2.5×
#: cheaper steps than 5×5) reached mean SSIM 0.64 (tuned Richardson-Lucy 0.26, input 0.21) where 5×5
#: kernels reached 0.28-0.52 from run to run; 4 validations instead of 10 leave more time to train.
RECIPE = {"unet_kernel": 3, "epochs": 4,
          # every image by its own percentiles (the training inputs are synthetic: no percentiles of theirs to
          # scale by), said in the configuration as it is done ("training" read "training" and did "image")
          "input_normalization": "image"}
#: The targets' blur relative to the PSF (per axis) unless ``target_sigma`` is given.
TARGET_FRACTION = 0.25
#: Structures the simulator makes.
STRUCTURES = ("tubules", "granules")
#: Lateral PSF sigma in micrometres of a widefield microscope at 520 nm, NA 1.3 (0.21 λ/NA): sizes
#: the structures (tubules 25 nm wide, granules of 15-80 nm radius) relative to the PSF when no
#: ``pixel_size`` is given.
REFERENCE_PSF_SIGMA_UM = 0.21 * 0.52 / 1.3
#: Structures per image at ``density=1``: per 128×128 pixels (2D), per 32×128×128 voxels (3D).
_PER_AREA = {"tubules": 12, "granules": 60}


def _parse_structures(structures):
    if isinstance(structures, str):
        names = [s.strip().lower() for s in structures.split(",") if s.strip()]
    else:
        names = [str(s).strip().lower() for s in (structures or ())]
    bad = [s for s in names if s not in STRUCTURES]
    if not names or bad:
        raise CareError(f"structures: give a comma-separated list of {', '.join(STRUCTURES)}, got {structures!r}")
    return list(dict.fromkeys(names))


def load_psf(psf, ndim):
    """A measured PSF as an array with ``ndim`` axes, and a record of where it came from.

    Parameters
    ----------
    psf : str, Path or array_like
        A PSF image file (read with :func:`~carecore.read_image`) or an array. A 3D (ZYX) PSF for a
        2D model gives its in-focus plane (the Z slice with the largest sum).
    ndim : int
        2 (YX models) or 3 (ZYX).

    Returns
    -------
    array : numpy.ndarray (float64)
    record : dict
        ``psf`` (file name or ``"array"``), ``psf_sha256`` (of the array's float32 values), ``psf_shape``.
    """
    if isinstance(psf, (str, Path)):
        from ..io import read_image

        if not Path(psf).exists():
            raise CareError(f"PSF file {psf}: not found")
        img = read_image(psf)
        arr, axes, name = np.asarray(img.data, np.float64), img.axes, str(psf)
        keep = [i for i, a in enumerate(axes) if a in "ZYX" or img.data.shape[i] > 1]
        if len(keep) != arr.ndim:
            arr = arr.squeeze(tuple(i for i in range(arr.ndim) if i not in keep))
            axes = "".join(axes[i] for i in keep)
        if set(axes) - set("ZYX"):
            raise CareError(f"PSF file {psf}: axes {axes!r} (shape {tuple(img.data.shape)}); a PSF has axes YX or ZYX")
    else:
        arr = np.asarray(psf, np.float64)
        name = "array"
        axes = "ZYX"[-arr.ndim:] if arr.ndim in (2, 3) else "?" * arr.ndim
    if arr.ndim not in (2, 3) or min(arr.shape) < 1:
        raise CareError(f"PSF {name}: shape {arr.shape}; a PSF is a YX or ZYX image")
    if not np.isfinite(arr).all():
        raise CareError(f"PSF {name}: contains NaN or infinite values")
    record = {"psf": name, "psf_shape": list(arr.shape)}
    if arr.ndim == 3 and ndim == 2:
        z = int(np.argmax(arr.reshape(arr.shape[0], -1).sum(1)))
        arr = arr[z]
        record["psf_plane"] = f"in-focus plane Z={z} of the ZYX PSF (2D model)"
    elif arr.ndim == 2 and ndim == 3:
        raise CareError(f"PSF {name}: a 2D (YX) PSF of shape {arr.shape} cannot blur 3D (ZYX) training volumes; "
                        "give the measured ZYX PSF, or psf_sigma (and psf_sigma_z)")
    record["psf_sha256"] = hashlib.sha256(np.ascontiguousarray(arr, np.float32).tobytes()).hexdigest()
    return arr, record


class SubdiffractionCARE(CARE):
    """A :class:`CARE` trained on synthetic tubules and granules seen through the microscope's PSF.

    Prediction is plain CARE (same grid, tiled); only the training data differ. See the module
    docstring for the recipe and how the PSF is recorded.
    """

    needs_pairs = False

    @property
    def training_normalization(self):
        """``None``: the training inputs are synthetic, in units no microscope image shares, so every
        image is scaled by its own percentiles (``input_normalization`` falls back to ``"image"``)."""
        return None

    @classmethod
    def check_config(cls, config):
        s = config.psf_sigma
        if not (isinstance(s, (int, float)) and np.isfinite(s) and s >= 0):
            raise CareError(f"psf_sigma: the lateral PSF sigma in pixels must be a finite number > 0 (or 0 when a "
                            f"measured PSF is given to make_patches), got {s!r}")
        if config.n_channel_in != 1 or config.n_channel_out != 1:
            raise CareError(f"n_channel_in/n_channel_out: subdiffraction models restore one channel (the simulated "
                            f"structures have one), got {config.n_channel_in} -> {config.n_channel_out}")

    @classmethod
    def default_config(cls, axes="YX", **overrides):
        """A small, fast recipe: :func:`~carecore.care_config` with a time budget
        (:data:`DEFAULT_TIME_LIMIT` unless ``time_limit`` is given, 0 for none: the fast network and 64×64 /
        16×32×32 patches of :data:`~carecore.models.config.FAST_RECIPE`), with :data:`RECIPE`
        (3×3 kernels, 4 validations).

        ``psf_sigma`` (lateral, pixels) should be given, unless a measured PSF will be passed to
        :meth:`make_patches`.
        """
        from .config import care_config

        axes = "".join(a for a in str(axes).upper() if a in "ZYX")
        if axes not in ("YX", "ZYX"):
            raise CareError(f"subdiffraction models are 2D (YX) or 3D (ZYX), got axes {axes!r}")
        from .init_weights import with_source_size

        overrides = with_source_size(overrides)   # a fine-tune's source size before the recipe's
        if overrides.get("time_limit") is None:   # 0 given: no budget (epochs x steps), as care_config
            overrides["time_limit"] = DEFAULT_TIME_LIMIT
        for k, v in RECIPE.items():
            overrides.setdefault(k, v)
        if overrides.setdefault("kind", "subdiffraction") != "subdiffraction":
            raise CareError(f"kind: SubdiffractionCARE.default_config makes kind 'subdiffraction', got {overrides['kind']!r}")
        return care_config(axes, **overrides)

    # -- training data -------------------------------------------------------------------------
    @classmethod
    def _psf_setup(cls, config, psf, psf_sigma_z):
        """(psf argument for the simulator, sigma (-equivalent) per axis, record)."""
        from ..simulate.structures import prepare_psf

        nd = config.ndim
        if psf is not None:
            arr, record = load_psf(psf, nd)
            kernel, sig = prepare_psf(arr, nd, name=f"PSF {record['psf']}")
            record["psf_sigma_equivalent"] = [round(v, 4) for v in sig]
            if config.psf_sigma > 0:
                record["config_psf_sigma"] = config.psf_sigma
                record["note"] = "the measured PSF was used; config.psf_sigma was not"
            return kernel, sig, record
        if not config.psf_sigma > 0:
            raise CareError("subdiffraction training needs the microscope's PSF: psf_sigma (lateral sigma in "
                            "pixels, e.g. carecore.psf_sigma_from_optics(na, wavelength, pixel_size)) or a measured "
                            "psf (a YX/ZYX image file or array); CLI: --psf-sigma S or --psf PSF.tif")
        s = float(config.psf_sigma)
        if nd == 3:
            sz = float(psf_sigma_z) if psf_sigma_z is not None else s
            if not (np.isfinite(sz) and sz >= 0):
                raise CareError(f"psf_sigma_z: must be a number of Z voxels >= 0, got {psf_sigma_z!r}")
            sig = [sz, s, s]
        else:
            if psf_sigma_z is not None:
                raise CareError("psf_sigma_z: only 3D (ZYX) models have a Z axis")
            sig = [s, s]
        return sig, sig, {"psf": "gaussian", "psf_sigma": sig}

    @classmethod
    def simulate_pairs(cls, config, *, n_images=None, image_shape=None, structures="tubules,granules", psf=None,
                       psf_sigma_z=None, peak_photons=(30.0, 300.0), background_level=0.3, read_noise=2.0,
                       target_sigma=None, pixel_size=None, density=1.0, seed=None, stop=None, progress=None):
        """Simulated ``(low, high)`` pairs as :meth:`make_patches` trains on them.

        Parameters
        ----------
        config : CareConfig
            Kind ``subdiffraction``: ``axes`` (YX or ZYX) and ``psf_sigma`` are used.
        n_images : int, optional
            Default 12 (2D) or 6 (3D).
        image_shape : tuple of int, optional
            Default 256×256 (2D) or (max(32, 2 × patch Z), 96, 96) (3D).
        structures : str or list of str
            ``"tubules"``, ``"granules"`` or both (images alternate between them).
        psf : str, Path or array_like, optional
            A measured PSF (file or array, YX or ZYX) instead of ``config.psf_sigma``; normalized to
            sum 1 and centred (:func:`~carecore.simulate.structures.prepare_psf`).
        psf_sigma_z : float, optional
            3D with ``psf_sigma``: the PSF sigma along Z in Z voxels (default: ``psf_sigma``, i.e. Z
            sampled so that the axial PSF spans as many voxels as the lateral one; give the real value).
        peak_photons : float or (float, float)
            Photons at the brightest (blurred) pixel; a range is drawn log-uniformly per image, so that
            the network meets a range of noise levels.
        background_level : float
            Smooth (Perlin-like) background relative to the brightest structure.
        read_noise : float
            Camera read noise (photons).
        target_sigma : float, optional
            The targets' blur in pixels (default a quarter of the lateral PSF sigma; in 3D the same
            fraction along Z).
        pixel_size : float, optional
            Pixel size in micrometres, which sizes the structures; default: that of a 520 nm, NA 1.3
            widefield PSF of this sigma (:data:`REFERENCE_PSF_SIGMA_UM` / sigma).
        density : float
            Structures per area relative to 12 tubules or 60 granules per 128×128 pixels.
        seed : int, optional
            Default: ``config.seed``. Same seed, same pairs.

        Returns
        -------
        pairs : list of (low, high) float32 arrays with ``config.axes``
        record : dict
            Everything used (what :meth:`make_patches` stores in ``meta["subdiffraction"]``).
        """
        from ..simulate.structures import simulate_subdiffraction

        nd = config.ndim
        kinds = _parse_structures(structures)
        psf_arg, sigmas, record = cls._psf_setup(config, psf, psf_sigma_z)
        sigma_lat = float(np.mean(sigmas[-2:]))
        n_images = int(n_images if n_images is not None else (12 if nd == 2 else 6))
        if n_images < 1:
            raise CareError(f"n_images: need at least 1 simulated image, got {n_images}")
        if image_shape is None:
            image_shape = (256, 256) if nd == 2 else (max(32, 2 * config.patch_size[0]), 96, 96)
        image_shape = tuple(int(v) for v in image_shape)
        if len(image_shape) != nd:
            raise CareError(f"image_shape {image_shape}: give {nd} sizes for axes {config.axes}")
        small = [(a, n, q) for a, n, q in zip(config.axes, image_shape, config.patch_size) if n < q]
        if small:
            raise CareError(f"image_shape {image_shape} is smaller than the patch size {config.patch_size} along "
                            f"{', '.join(a for a, _, _ in small)}")
        pk = np.atleast_1d(np.asarray(peak_photons, np.float64))
        if pk.size not in (1, 2) or not np.all(pk > 0):
            raise CareError(f"peak_photons: a positive number or a (low, high) range, got {peak_photons!r}")
        if target_sigma is None:   # a quarter of the PSF (per axis in 3D)
            target_sigma = [round(TARGET_FRACTION * v, 4) for v in sigmas] if nd == 3 else \
                round(TARGET_FRACTION * sigma_lat, 4)
        if pixel_size is None:
            pixel_size = REFERENCE_PSF_SIGMA_UM / max(sigma_lat, 1e-6)
        if not (np.isfinite(density) and density > 0):
            raise CareError(f"density: must be > 0, got {density!r}")
        area = float(np.prod(image_shape[-2:])) / 128**2 * (image_shape[0] / 32 if nd == 3 else 1.0)
        seed = config.seed if seed is None else int(seed)
        rng = np.random.default_rng([seed, 0x5D1F])
        pairs, images = [], []
        for i in range(n_images):
            check_stop(stop)
            kind = kinds[i % len(kinds)]
            photons = float(pk[0] if pk.size == 1 else np.exp(rng.uniform(np.log(pk[0]), np.log(pk[1]))))
            sub = int(rng.integers(2**32))
            count = max(1, int(round(density * area * _PER_AREA[kind])))
            extra = {"supersample": 2} if nd == 3 else {}
            low, high, p = simulate_subdiffraction(
                image_shape, kind=kind, pixel_size=pixel_size, peak_photons=photons,
                background_level=background_level, read_noise=read_noise, seed=sub, psf=psf_arg,
                target_sigma=target_sigma, **{("n_tubules" if kind == "tubules" else "n_granules"): count}, **extra)
            pairs.append((low, high))
            images.append({"kind": kind, "seed": sub, "peak_photons": round(photons, 3), "count": count})
            report(progress, i + 1, n_images, f"simulated {kind}")
        record.update({
            "structures": kinds, "n_images": n_images, "image_shape": list(image_shape),
            "peak_photons": [float(v) for v in pk], "background_level": background_level, "read_noise": read_noise,
            "target_sigma": target_sigma, "pixel_size_um": round(float(pixel_size), 5), "density": density,
            "seed": seed, "images": images,
            "pairs": "low: (structures + background) blurred with the PSF, Poisson + Gaussian noise; "
                     "high: the structures blurred with target_sigma"})
        return pairs, record

    @classmethod
    def make_patches(cls, config, sources=None, *, axes=None, n_patches_per_image=64, progress=None, stop=None,
                     structures="tubules,granules", psf=None, **options):
        """Training patches from simulated structures (no images needed).

        Parameters
        ----------
        config : CareConfig
            Kind ``subdiffraction``; its ``seed`` makes the simulation and the sampling deterministic.
        sources : None
            Subdiffraction models train on simulated structures only; giving images is an error.
        axes : str, optional
            If given, must be the configuration's axes (YX or ZYX).
        n_patches_per_image : int
            Patches per simulated image (validation patches are held-out boxes, as always).
        structures : str or list of str
            ``"tubules,granules"`` (default), ``"tubules"`` or ``"granules"``.
        psf : str, Path or array_like, optional
            A measured PSF instead of ``config.psf_sigma`` (recorded in ``meta["subdiffraction"]``).
        **options
            More simulation options of :meth:`simulate_pairs`: ``n_images``, ``image_shape``,
            ``psf_sigma_z``, ``peak_photons``, ``background_level``, ``read_noise``, ``target_sigma``,
            ``pixel_size``, ``density``.

        Returns
        -------
        PatchSet
            With ``meta["subdiffraction"]``: the PSF, the simulation parameters and every image's seed.
        """
        from ..data.patches import create_patches

        if sources is not None and not (isinstance(sources, (list, tuple)) and len(sources) == 0):
            raise CareError("kind 'subdiffraction' trains on simulated structures only; do not give images "
                            "(--low/--high): give the PSF (--psf-sigma or --psf) and --structures")
        if axes is not None:
            sp = "".join(a for a in str(axes).upper() if a in "ZYX")
            if sp != config.axes or "C" in str(axes).upper():
                raise CareError(f"axes {axes!r}: the subdiffraction model was configured for {config.axes} "
                                "(one channel); give --axes YX or ZYX to match")
        allowed = {"n_images", "image_shape", "psf_sigma_z", "peak_photons", "background_level", "read_noise",
                   "target_sigma", "pixel_size", "density"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise CareError(f"kind 'subdiffraction' takes no options {unknown}; it takes structures, psf and "
                            f"{', '.join(sorted(allowed))}")
        pairs, record = cls.simulate_pairs(config, structures=structures, psf=psf, stop=stop, progress=progress,
                                           **options)
        ps = create_patches(pairs, config.patch_size, axes=config.axes, n_patches_per_image=n_patches_per_image,
                            percentiles=config.percentiles, seed=config.seed, stop=stop,
                            check_pairs=False)   # (simulated here: aligned by construction)
        for i, s in enumerate(ps.meta.get("sources", [])):
            s["low"] = s["high"] = f"simulated {record['images'][i]['kind']} {i} (seed {record['images'][i]['seed']})"
        ps.meta["subdiffraction"] = record
        return ps

    def _records_of(self, info):
        """The simulation's record (its PSF, measured or a sigma): the deconvolution starts of the validation
        line and of every later comparison take their sigmas from it (:meth:`psf_sigmas`)."""
        if not info.get("subdiffraction"):
            return {}
        rec = dict(info["subdiffraction"])
        rec.pop("images", None)   # every image's seed stays in the patch set's metadata
        return {"subdiffraction": rec}

    # -- the classical competitor: deconvolution ------------------------------------------------
    #: Background subtracted before the deconvolution starts, in lateral PSF sigmas (0: none): the
    #: training inputs carry a smooth autofluorescence that the targets lack, as widefield images do.
    BACKGROUND_SIGMAS = (0.0, 10.0)
    #: And a local background, a top-hat of this width in lateral PSF sigmas (:func:`~carecore.baselines.
    #: subtract_background`): around thin tubules it follows the haze closer than a broad Gaussian. A workshop
    #: trial found it missing: on notebook 9's held-out image the best classical pipeline scored SSIM 0.29
    #: without it (NLM on Richardson-Lucy after a Gaussian background), 0.45 with it (TV on the top-hat; a
    #: Gaussian filter on Richardson-Lucy after it 0.40; CARE, 150 s of training: 0.82).
    BACKGROUND_OPENINGS = (4.0,)

    def psf_sigmas(self):
        """The PSF's Gaussian sigma per spatial axis (``{"Y": 2.0, "X": 2.0}``): the run card's record (a
        measured PSF's equivalent sigmas), else ``config.psf_sigma`` laterally; None where neither is known."""
        rec = (self.run_card or {}).get("subdiffraction") or {}
        sig = rec.get("psf_sigma") or rec.get("psf_sigma_equivalent")
        axes = self.config.axes
        if isinstance(sig, (list, tuple)) and len(sig) == len(axes):
            return {a: float(v) for a, v in zip(axes, sig)}
        s = float(self.config.psf_sigma or 0.0)
        return {"Y": s, "X": s} if s > 0 else None

    def _openings(self):
        """``{label: width in pixels}`` of the top-hat background subtractions (a start of their own, and
        before Richardson-Lucy)."""
        sig = self.psf_sigmas()
        if not sig:
            return {}
        lateral = max(sig.get("Y", 0.0), sig.get("X", 0.0))
        sizes = [max(int(round(o * lateral)), 3) for o in self.BACKGROUND_OPENINGS]
        return {f"a top-hat background subtraction (opening of {size} px)": size for size in sizes}

    def _deconvolutions(self):
        """``{label: (iterations, background sigma, background opening)}`` of the Richardson-Lucy starts."""
        from ..baselines import RL_START_ITERATIONS

        sig = self.psf_sigmas()
        if not sig:
            return {}
        lateral = max(sig.get("Y", 0.0), sig.get("X", 0.0))
        backgrounds = [("", 0.0, 0)] + [(f" after a background subtraction (Gaussian sigma {b * lateral:g} px)",
                                         b * lateral, 0) for b in self.BACKGROUND_SIGMAS if b]
        backgrounds += [(f" after {label}", 0.0, size) for label, size in self._openings().items()]
        return {f"Richardson-Lucy ({n} iterations){said}": (n, bg, op)
                for said, bg, op in backgrounds for n in RL_START_ITERATIONS}

    def grid_starts(self):
        """The input itself, its top-hat background subtraction, and its Richardson-Lucy deconvolutions with
        the model's PSF (:data:`~carecore.baselines.RL_START_ITERATIONS`, with and without a smooth or a local
        background subtracted first): the paper compares sub-diffraction restoration with deconvolution. The
        tuned filters start from the best of them (:meth:`carecore.CARE.grid_starts`)."""
        from ..baselines import deconvolve, subtract_background

        starts = dict(super().grid_starts())
        for label, size in self._openings().items():
            def opened(image, *, axes, size=size):
                return subtract_background(image, axes=axes, opening=size)
            starts[label] = opened
        sig = self.psf_sigmas()
        for label, (n, bg, op) in self._deconvolutions().items():
            def start(image, *, axes, n=n, bg=bg, op=op):
                return deconvolve(image, sig, axes=axes, iterations=n, background_sigma=bg, background_opening=op)
            starts[label] = start
        return starts

    def patch_grid_starts(self, X):
        """:meth:`grid_starts` for the validation patches (batch, spatial axes, channel): each deconvolved
        with one scaling for all of them (the validation line fits all patches at once)."""
        from ..baselines import RL_START_ITERATIONS, deconvolve, subtract_background

        X = np.asarray(X, np.float32)
        starts = dict(super().patch_grid_starts(X))
        axes = "S" + self.config.axes + "C"
        for label, size in self._openings().items():
            starts[label] = subtract_background(X, axes=axes, opening=size)
        sig = self.psf_sigmas()
        runs = {}   # (one run per background to the largest count)
        for label, (n, bg, op) in self._deconvolutions().items():
            if (bg, op) not in runs:
                runs[bg, op] = deconvolve(X, sig, axes=axes, iterations=RL_START_ITERATIONS, background_sigma=bg,
                                          background_opening=op)
            starts[label] = runs[bg, op][n]
        return starts

    def check_spacing(self, spacing, *, name="image"):
        """Warn when the image's pixel size (``spacing["X"]``, micrometres) is more than twice or less than half
        the one its structures were simulated at (the run card's ``pixel_size_um``): the model's PSF sigma, in
        pixels, is then another PSF in micrometres, and it draws tubules and granules of the wrong size.
        Returns the message, or None (no pixel size recorded, or close enough)."""
        rec = (self.run_card or {}).get("subdiffraction") or {}
        p_model, p = rec.get("pixel_size_um"), (spacing or {}).get("X")
        sig = (self.psf_sigmas() or {}).get("X")
        if (spacing or {}).get("X") == 1.0 and (spacing or {}).get("Y") == 1.0:
            return None   # (an uncalibrated file, ImageJ's default 1 µm: no pixel size known)
        if not (p_model and p and sig) or 0.5 <= float(p) / float(p_model) <= 2.0:
            return None
        from ..errors import warn

        message = (f"{name}: pixels of {p:g} µm, but this model's structures were simulated at {p_model:g} µm pixels: "
                   f"its PSF sigma of {sig:g} px is {sig * p_model:.3g} µm there and {sig * p:.3g} µm at this image's "
                   f"pixels (a widefield PSF at NA 1.3 and 520 nm: about {REFERENCE_PSF_SIGMA_UM:.2g} µm). A sub-diffraction "
                   "model restores images whose PSF, in pixels, is the one it was trained for; for others it draws "
                   "tubules and granules of the wrong size: train one with your optics' PSF sigma in this image's pixels "
                   f"(carecore.psf_sigma_from_optics(na, wavelength, {p:g}); --psf-sigma). (Its structures' pixel "
                   "size was derived from that PSF where none was given: if your PSF really is that wide, ignore this.)")
        warn(message, stacklevel=2)
        return message

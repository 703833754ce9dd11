"""The CARE model: train and predict (tiled) through hooks (CARE-NOTES §2, §5).

Each model kind (:mod:`carecore.models.kinds`) is a subclass that overrides a few hooks, and
training, tiling, staging and saving just work:

- :meth:`CARE.check_config` — what the kind requires of a configuration;
- :meth:`CARE._build` — the Keras network for a configuration;
- :meth:`CARE._preprocess` — what happens to the (normalized) input before the network, e.g. the
  Z interpolation of :class:`~carecore.models.upsampling.UpsamplingCARE`;
- :meth:`CARE._halo` and :attr:`CareConfig.divisor` — tile overlap and size granularity;
- :meth:`CARE._stages` — the network cut into stages for memory-lean prediction, or None.

- :meth:`CARE.on_output_grid`, :meth:`CARE.output_spacing`, :meth:`CARE.output_axes` — the output's
  grid, voxel size and axes.

Model folders (save, load, format migration) are :mod:`carecore.models.folder`.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..axes import check_axes, spatial_axes
from ..errors import CareError
from ..normalize import Normalization, compute_percentiles
from ..prediction.frames import frame_by_frame
from ..prediction.tta import learnable_views
from ..progress import check_stop, counting, join_messages, report
from .config import CareConfig
from .precision import onednn_enabled

#: Default working memory of a prediction (bytes: network activations and kept intermediate arrays).
DEFAULT_PREDICT_BUDGET = 1 * 2**30
#: Validation patches a probabilistic model's ``tta_scale_factor`` is measured on (8 views each)
TTA_FIT_PATCHES = 32
#: Fewer training steps than this left in a time budget after its preparation: the run's message says the
#: budget was too short (it still ends on time, with what it learned)
MIN_BUDGET_STEPS = 20


@dataclass
class TrainingResult:
    """What :meth:`CARE.train` did."""

    status: str                      # completed, time_limit, stopped, early_stopped, nan
    message: str
    epochs: int                      # epochs completed in total (resumed ones included)
    history: list = field(default_factory=list)
    best_val_loss: float = math.inf
    seconds: float = 0.0
    #: The epoch whose weights the model holds (that of the best validation measure: the loss, or a probabilistic
    #: model's mean's error), counted as ``history`` counts; None where no epoch of this run beat the weights
    #: kept before it (a resumed run keeps those) or none finished.
    kept_epoch: int | None = None

    @property
    def kept(self):
        """The ``history`` row of :attr:`kept_epoch` (its ``val_loss``, ``val_ssim``…), or None."""
        return next((row for row in self.history if row.get("epoch") == self.kept_epoch), None)


def parse_duration(value):
    """Seconds from a number or a text such as ``"3m"``, ``"90s"``, ``"1.5h"``, ``"180"`` (0 or None: none)."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*", str(value))
        if not m:
            raise CareError(f"time limit {value!r}: give seconds or a number with s, m or h, e.g. 3m, 90s, 1h")
        seconds = float(m.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, None: 1}[m.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise CareError(f"time limit {value!r}: must be a positive number of seconds")
    return seconds


def finite_tile(tile, name, axes, window, shape):
    """``tile`` (read at ``window`` of an image of ``shape`` along ``axes``) as float32, or an error naming
    where it holds NaN or infinite values: found in every tile prediction reads, whatever scales the image
    (its percentiles may have seen a sample of it only, or the training inputs')."""
    v = np.asarray(tile, np.float32)
    if not np.isfinite(v).all():
        box = " ".join(f"{a} {max(w.start, 0)}-{min(w.stop, n) - 1}" for a, w, n in zip(axes, window, shape))
        # counted within the image (a window past its end reads reflected pixels again)
        bad = ~np.isfinite(v[tuple(slice(0, max(0, min(w.stop, n) - w.start)) for w, n in zip(window, shape))])
        if bad.ndim > len(axes):   # (pixels, not values of their channels)
            bad = bad.any(axis=tuple(range(len(axes), bad.ndim)))
        first = np.argwhere(bad)[0]
        at = " ".join(f"{a} {w.start + int(i)}" for a, w, i in zip(axes, window, first))
        n_bad = int(bad.sum())
        raise CareError(f"{name}: contains NaN or infinite values ({n_bad} pixel{'s' * (n_bad != 1)} in the tile {box}, "
                        f"the first at {at}); fix or mask them first")
    return v


#: An image whose percentile range is this many times the training inputs' is warned about: an 8-bit copy
#: contrast-stretched in Fiji (about 10 times a 20-photon mitochondria image's range) restored at 0.872 SSIM
#: where scaled by its own percentiles it restored at 0.907 (×10: 0.867; ×5: 0.881; as acquired: 0.905); a
#: brighter cell or a dimmer field moves the range by a few times at most (20 before 2026-12-05)
UNLIKE_RANGE = 8

#: What to do about an image unlike the training inputs, said by :func:`warn_if_unlike_training`
OWN_PERCENTILES_ADVICE = ("restore it scaled by its own percentiles (normalization='image'; `carecore predict "
                          "--normalization image`; in the app, the Restore step's own-percentiles box)")


def warn_if_unlike_training(x, norm, *, axes, name="image", advice=OWN_PERCENTILES_ADVICE, limit=UNLIKE_RANGE):
    """Warn (:class:`~carecore.CareWarning`) when ``x``'s own percentiles are far from the training
    inputs' ``norm`` that will scale it: an image acquired with another gain, offset or bit depth is then
    seen at a noise level the network never learned. Other content (a dim field, a bright cell) moves
    the percentiles far less: warned only when the image's dark level lies above the training's bright
    one, its bright level below the training's dark one, or its range is ``limit`` times the training's
    (:data:`UNLIKE_RANGE`; a model kind's ``unlike_range``)."""
    from ..errors import warn

    try:
        own = compute_percentiles(x, *norm.percentiles, axes=axes, name=name)
    except CareError:   # a constant image, NaNs: prediction says so where it matters
        return
    for ci, (lo, hi, tlo, thi) in enumerate(zip(own.lo, own.hi, norm.lo, norm.hi)):
        r = thi - tlo
        if lo > thi or hi < tlo or hi - lo > limit * r:
            ch = f" (channel {ci})" if len(own.lo) > 1 else ""
            p_lo, p_hi = norm.percentiles
            brighter = ("" if hi < tlo else ". If it was taken with much more light than the training images (far "
                        "less noisy), no scaling helps: the restoration may be worse than the image itself, so compare "
                        "them (a model trained at that light suits it)")
            warn(f"{name}{ch}: its {p_lo:g}-{p_hi:g} percentiles ({lo:.4g} to {hi:.4g}) are far from the "
                 f"training inputs' ({tlo:.4g} to {thi:.4g}), which scale it: if it was acquired with another gain, "
                 f"offset or bit depth, the network sees it at a noise level it never learned; {advice}{brighter}",
                 stacklevel=3)
            return



def _frames(image, axes):
    """Each time point or sample of ``image`` (``axes`` with T or S) with its axes, one at a time; the image
    itself where it has neither (a memory map or a Zarr array reads a frame at a time)."""
    frames = [a for a in axes if a in "TS"]
    rest = "".join(a for a in axes if a not in frames)
    if not frames:
        yield image, rest
        return
    for at in np.ndindex(*[np.shape(image)[axes.index(a)] for a in frames]):
        yield image[tuple(at[frames.index(a)] if a in frames else slice(None) for a in axes)], rest


#: What a refused resume (other images, other validation boxes) advises.
FINE_TUNE_INSTEAD = ("fine-tune from it into a new folder instead (init_weights=<its folder>; `carecore train "
                     "--init-weights FOLDER --model-dir NEW`; in the app: start a new training)")


def validation_layout(info):
    """A digest of where a patch set's validation boxes lie (each source's held-out block, from its metadata
    ``info``), or None where its metadata records none: a resumed training must validate where its first run
    did, on boxes that no training patch of either run touched."""
    blocks = [s.get("validation_block") for s in info.get("sources") or []]
    if not blocks or all(b is None for b in blocks):
        return None
    return hashlib.sha256(json.dumps(blocks, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: A validation block a run card does not record (a model trained before 2026-12-07).
UNRECORDED = "unrecorded"


def _box_inside(box, other):
    """Whether a validation box lies inside ``other``, along the same axes (``{axis: [start, stop]}``)."""
    return set(box) == set(other) and all(other[a][0] <= lo and hi <= other[a][1] for a, (lo, hi) in box.items())


def held_out_within(now, before):
    """Whether an image's validation boxes lie where a network that held out ``before`` on it never trained.

    Parameters
    ----------
    now, before : dict, None or str
        Validation blocks of one image as :func:`~carecore.data.patches.validation_blocks` gives them:
        boxes on the image's own grid along the ground truth's spatial axes, ``{"whole": True}``, a guard
        ``{"guard": True}`` (no patch), or None (no box: all of the image trains). ``before`` is the
        earlier network's, :data:`UNRECORDED` where its run card does not say.

    Returns
    -------
    bool
        True where ``now`` holds no box, where the earlier network held the image out whole or gave it
        no patch, or where every box of ``now`` lies inside one of its boxes. Boxes along other axes (a
        projection's YX against a 3D network's ZYX, which trained on the rest of Z) are not inside one
        another; an unrecorded block holds nothing.

    Examples
    --------
    >>> box = lambda y, x: {"Y": [y, y + 32], "X": [x, x + 32]}
    >>> held_out_within({"whole": False, "boxes": [box(0, 32)]}, {"whole": False, "boxes": [box(0, 32), box(64, 0)]})
    True
    >>> held_out_within({"whole": False, "boxes": [box(0, 0)]}, {"whole": False, "boxes": [box(0, 32)]})
    False
    >>> held_out_within({"whole": True}, None), held_out_within(None, None), held_out_within({"whole": True}, UNRECORDED)
    (False, True, False)
    >>> held_out_within({"whole": False, "boxes": [box(0, 32)]}, {"whole": False, "boxes": [{"Z": [0, 8], **box(0, 32)}]})
    False
    """
    if now is None or (isinstance(now, dict) and now.get("guard")):   # no validation box on it now
        return True
    if not isinstance(now, dict) or not isinstance(before, dict):   # unrecorded; or all of it trained then (None)
        return False
    if before.get("whole") or before.get("guard"):   # none of it trained then
        return True
    if now.get("whole"):
        return False
    return all(any(_box_inside(box, b) for b in before["boxes"]) for box in now.get("boxes") or [])


class CARE:
    """A content-aware restoration network.

    Parameters
    ----------
    config : CareConfig
    path : str or Path, optional
        Model folder; training saves there after every epoch.

    Examples
    --------
    >>> model = CARE(care_config("ZYX", epochs=10), "models/my_care")     # doctest: +SKIP
    >>> model.train(create_patches(find_pairs("low", "high"), (16, 64, 64)))  # doctest: +SKIP
    >>> restored = model.predict(read_image("new.tif").data, axes="ZYX")     # doctest: +SKIP
    """

    def __init__(self, config: CareConfig, path=None):
        if not isinstance(config, CareConfig):
            raise CareError(f"config must be a CareConfig, got {type(config).__name__}")
        from .kinds import model_class

        if not isinstance(self, model_class(config.kind)):
            raise CareError(f"the configuration is of kind {config.kind!r}, which {type(self).__name__} does not "
                            "implement; create the model with carecore.create_model(config)")
        self.config = config
        self.path = Path(path) if path is not None else None
        self.history = []
        self.run_card = {}
        self.best_val_loss = math.inf
        import keras

        keras.utils.set_random_seed(config.seed)
        self.keras_model = self._build()
        self._best_weights = None
        self._optimizer_state = None
        self._stage_cache = None
        self.baseline_val = None

    @staticmethod
    def _for(config, path=None):
        """A new model of the kind ``config.kind`` (:func:`~carecore.models.kinds.create_model`)."""
        from .kinds import create_model

        return create_model(config, path)

    @classmethod
    def check_config(cls, config):
        """Raise :class:`~carecore.CareError` if ``config`` does not suit this kind (called by
        :class:`~carecore.models.config.CareConfig` on creation)."""

    # -- hooks -------------------------------------------------------------------------------
    #: whether training needs pairs of low- and high-quality images (False: made from the input alone,
    #: or simulated)
    needs_pairs = True
    #: whether :meth:`predict` can smooth its output (``output_sigma``); kinds that cannot still take
    #: ``output_sigma=0``
    smooths_output = True
    #: how many times the training inputs' percentile range an image's may span before it is warned about
    #: (:func:`warn_if_unlike_training`)
    unlike_range = UNLIKE_RANGE

    @classmethod
    def default_config(cls, axes, **overrides):
        """The configuration a new model of this kind starts from (``carecore train --task <kind>`` too; :func:`~carecore.care_config` with its defaults)."""
        from .config import care_config

        return care_config(axes, **overrides)

    @classmethod
    def make_patches(cls, config, sources, *, axes=None, n_patches_per_image=64, progress=None, stop=None,
                     fields=None, shared_boxes=False, **options):
        """Training patches for this kind from ``sources`` (plain CARE: pairs, see
        :func:`~carecore.create_patches`, sampled with ``config``'s patch size, percentiles and seed;
        ``fields`` and ``shared_boxes`` as there).

        Kinds that make their pairs otherwise (from the low-quality stacks alone, or by simulation)
        override this; ``options`` are their task options (e.g. ``psf``, ``structures``).
        """
        from ..data.patches import create_patches

        if options:
            raise CareError(f"kind {config.kind!r} takes no options {sorted(options)}")
        if sources is None:
            raise CareError(f"kind {config.kind!r} trains on pairs: give low- and high-quality images")
        return create_patches(sources, config.patch_size, axes=axes, n_patches_per_image=n_patches_per_image,
                              percentiles=config.percentiles, seed=config.seed, progress=progress, stop=stop,
                              fields=fields, shared_boxes=shared_boxes)

    def _build(self):
        from .unet import build_unet

        return build_unet(self.config)

    def _preprocess(self, x, axes):
        """Normalized input (spatial..., C) -> what the network sees. Identity for plain CARE."""
        return x

    def on_output_grid(self, image, *, axes):
        """``image`` brought onto the grid of this model's output, as the network sees it (identity for
        plain CARE; Z interpolation for upsampling): the "input" to compare a restoration with."""
        return np.asarray(image, np.float32)

    def grid_starts(self):
        """The classical ways to bring an input onto the output's grid, ``{label: function(image, *, axes)}``:
        what the tuned filters a restoration is compared with start from
        (:func:`carecore.baselines.tune_output_baselines`; plain CARE: the input itself, label ``""``;
        upsampling: nearest, linear and cubic interpolation along Z; a projection: the maximum and the
        surface-following projections)."""
        return {"": self.on_output_grid}

    def patch_grid_starts(self, X):
        """:meth:`grid_starts` for input patches ``X`` (batch, spatial axes, channel) as the network
        takes them: ``{label: patches on the targets' grid}``, what the validation line's filters start from
        (the patches themselves, :meth:`patches_on_output_grid`; a projection's maximum and surface
        projections)."""
        return {"": self.patches_on_output_grid(X)}

    def patches_on_output_grid(self, X):
        """Input patches ``X`` (batch, spatial axes, channel), as the network takes them, brought onto
        the grid of the target patches: what the classical filters of the validation line restore
        (identity for kinds whose network input is on the output grid; a projection projects)."""
        return X

    def output_spacing(self, spacing):
        """Voxel size of the output for an input of voxel size ``spacing`` ({axis: size})."""
        return dict(spacing or {})

    def output_axes(self, axes):
        """Axes of the output for an input of ``axes`` (the same for most kinds; a projection drops Z)."""
        return axes

    @property
    def input_spatial_axes(self):
        """The spatial axes of the images this model restores (its configuration's; an isotropic model's
        2D network restores ZYX stacks)."""
        return self.config.axes

    def _halo(self, output_sigma=None):
        from ..prediction.smoothing import output_radius
        from .unet import receptive_radius, smoothing_radius

        # the output's smoothing (``output_sigma``, default the model's) reads the network's output that far
        # beyond each kept pixel
        sigma = self.output_sigma if output_sigma is None else output_sigma
        return max(receptive_radius(self.config), smoothing_radius(self.config)) + output_radius(sigma)

    @property
    def output_sigma(self):
        """The Gaussian sigma (pixels) :meth:`predict` smooths the restored mean with: the configuration's
        ``output_sigma``, 0 while ``"auto"`` has not been chosen by training."""
        s = self.config.output_sigma
        return 0.0 if s == "auto" else float(s)

    def _stages(self):
        """The network as prediction stages (:mod:`carecore.prediction.staged`), or None to run it whole.

        Staged prediction keeps large blocks in one piece at little memory. A subclass with a network
        of its own (another :meth:`_build`) gets plain tiles unless it overrides this hook too.
        """
        if type(self)._build is not CARE._build:
            return None
        if self._stage_cache is None:
            from .unet import unet_stages

            self._stage_cache = unet_stages(self.keras_model, self.config)
        return self._stage_cache

    def _bytes_per_voxel(self):
        """Estimated peak memory per voxel of a tile through the whole network, calibrated on CPU with
        TensorFlow (resident-set rise of one prediction, freed memory returned first): for the
        default 3D network in bfloat16 255-315 bytes per tile voxel, and 431-435 when every side is a
        power of two (16×128×128 to 64×256×256); the 2D network 287-293; float32 608 (3D, 2.5 M
        voxels). The estimate, 7 level-0 feature maps and 32 bytes, covers the worst case."""
        itemsize = 2 if self.config.precision == "mixed_bfloat16" else 4
        return int(7 * self.config.unet_filters * itemsize) + 32

    # -- properties --------------------------------------------------------------------------
    @property
    def axes(self):
        return self.config.axes

    def count_params(self):
        return int(self.keras_model.count_params())

    # -- training ----------------------------------------------------------------------------
    def _compile(self, learning_rate):
        import keras

        from .losses import LOSSES, laplace_mae

        c = self.config
        metrics = [laplace_mae] if c.probabilistic else None
        loss = LOSSES[c.loss]
        # no gradient clipping: the Laplace NLL, which can blow up a step (a tiny scale meets a large error),
        # reaches the scale's 1×1 head alone, and that head is fitted again after training (scale_head.py);
        # clipping would make the mean's steps differ from a plain network's
        if c.optimizer == "adamw":
            opt = keras.optimizers.AdamW(learning_rate, weight_decay=c.weight_decay)
        else:
            opt = keras.optimizers.Adam(learning_rate)
        self.keras_model.compile(optimizer=opt, loss=loss, metrics=metrics, jit_compile=False)

    def _restore_optimizer(self):
        """Put the optimizer state saved with the model back (a resumed training continues Adam's moments)."""
        state = getattr(self, "_optimizer_state", None)
        if not state:
            return "a fresh optimizer state (none was saved)"
        opt = self.keras_model.optimizer
        opt.build(self.keras_model.trainable_variables)
        if not all(np.isfinite(v).all() for v in state["values"] if v.dtype.kind == "f"):
            return "a fresh optimizer state (the saved one is not finite)"
        if state.get("class") != type(opt).__name__ or len(state["values"]) != len(opt.variables) or any(
                tuple(v.shape) != tuple(w.shape) for v, w in zip(state["values"], opt.variables)):
            return (f"a fresh optimizer state (the saved one is {state.get('class')}'s, training now uses "
                    f"{type(opt).__name__})")
        for v, w in zip(state["values"], opt.variables):
            w.assign(v)
        return f"the saved {type(opt).__name__} optimizer state (step {int(opt.iterations.numpy())})"

    def _best_by(self):
        """What chooses the best weights: the validation loss, or for a probabilistic network the validation
        MAE of its mean (the NLL of a scale's head that is fitted only after training says little about
        the epoch)."""
        return "val_laplace_mae" if self.config.probabilistic else "val_loss"

    def _check_patches(self, X, Y, what):
        c = self.config
        if X.ndim != c.ndim + 2 or X.shape[-1] != c.n_channel_in:
            raise CareError(f"{what}: input patches of shape {tuple(X.shape)} do not fit a {c.ndim}D model with "
                            f"{c.n_channel_in} input channel(s) (expected (N, {', '.join('?' * c.ndim)}, {c.n_channel_in}))"
                            + (f"; for {X.shape[-1]} channels configure it so: care_config(..., n_channel_in="
                               f"{X.shape[-1]}), or carecore.with_channels_of(config, patches)" if X.ndim == c.ndim + 2 else ""))
        if Y.shape[:-1] != X.shape[:-1] or Y.shape[-1] != c.n_channel_out:
            raise CareError(f"{what}: target patches of shape {tuple(Y.shape)} do not match inputs {tuple(X.shape)} "
                            f"with {c.n_channel_out} output channel(s)"
                            + (f"; for {Y.shape[-1]} channels configure it so: care_config(..., n_channel_out="
                               f"{Y.shape[-1]}), or carecore.with_channels_of(config, patches)"
                               if Y.shape[:-1] == X.shape[:-1] else ""))
        bad = [s for s in X.shape[1:-1] if s % c.divisor]
        if bad:
            raise CareError(f"{what}: patch sides {tuple(X.shape[1:-1])} must be divisible by {c.divisor} (2**unet_depth)")

    @property
    def training_normalization(self):
        """The percentiles of the training inputs (per channel, the median over the training images), or
        ``None`` when the model was trained on bare arrays, with no record of how they were normalized
        (and for kinds trained on synthetic data, whose units no microscope image shares)."""
        return self._median_seen("norm_low")

    @property
    def training_target_normalization(self):
        """The percentiles of the training targets (per channel, the median over the training images), or
        ``None`` where not recorded: the units of the network's output for inputs scaled by
        :attr:`training_normalization`."""
        return self._median_seen("norm_high")

    def _median_seen(self, key):
        """The run card's recorded scalings of the training images under ``key`` (``norm_low``: inputs,
        ``norm_high``: targets), per channel the median over the images; None where none is recorded."""
        seen = (self.run_card or {}).get("normalization_seen") or {}
        norms = [s[key] for s in seen.get("sources", []) if s.get(key)]
        if not norms:
            return None
        return Normalization(tuple(float(v) for v in np.median([n["lo"] for n in norms], axis=0)),
                             tuple(float(v) for v in np.median([n["hi"] for n in norms], axis=0)),
                             tuple(norms[0]["percentiles"]))

    def truth_normalization(self, normalization):
        """How a ground truth is scaled into the network's output units when the input was scaled by
        ``normalization`` (what :meth:`input_normalization` gave): the training targets' percentiles when
        that is the training inputs' scaling (the network then answers in the units of its training
        targets: a region half as bright as the training images gives a mean half as high), else None
        (the truth's own percentiles, as each training target was scaled with its input's own)."""
        train = self.training_normalization
        if train is not None and normalization == train:
            return self.training_target_normalization
        return None

    def _scalings(self, image, axes, normalization):
        """``(input scaling, ground-truth scaling)`` as :meth:`predict` scaled ``image`` (its warnings said there:
        collected and dropped here, in this thread only)."""
        from ..errors import collect_warnings

        with collect_warnings():
            norm = self.input_normalization(image, axes=axes, normalization=normalization, name="input")
        return norm, self.truth_normalization(norm)

    def calibration(self, truth, means, scales, *, image, axes, normalization=None, confidences=None):
        """The calibration of a probabilistic restoration against its ground truth, with no fit to it: the
        truth scaled as the training targets were, the prediction as :meth:`predict` scaled ``image``
        (:func:`~carecore.uncertainty.measure_calibration` with this model's scalings, percentiles and
        output grid).

        Parameters
        ----------
        truth : array_like
            The ground truth on the output's grid, in its own intensity units.
        means, scales : array_like
            What ``predict(image, axes=axes, ...)`` returned (an ensemble's members stacked, M first).
        image : array_like
            The input the restoration was made from.
        axes : str
            The input's axes.
        normalization : optional
            As given to :meth:`predict` (default: the model's configured scaling).
        confidences : sequence of float, optional
            Central-interval levels (default :data:`~carecore.uncertainty.DEFAULT_CONFIDENCES`).

        Returns
        -------
        dict
            ``{"confidence", "accuracy", "ece", "space"}``.

        Examples
        --------
        >>> mean, scale = model.predict(low, axes="ZYX")           # doctest: +SKIP
        >>> model.calibration(truth, mean, scale, image=low, axes="ZYX")["ece"]   # doctest: +SKIP
        """
        from ..uncertainty.mixture import DEFAULT_CONFIDENCES, measure_calibration

        norm, truth_norm = self._scalings(image, axes, normalization)
        return measure_calibration(truth, means, scales, image=image, axes=axes, output_axes=self.output_axes(axes),
                                   percentiles=tuple(self.config.percentiles),
                                   mapped_back=self.config.n_channel_in == self.config.n_channel_out,
                                   normalization=norm, truth_normalization=truth_norm,
                                   confidences=DEFAULT_CONFIDENCES if confidences is None else confidences)

    def truth_in_input_units(self, truth, *, image, axes, normalization=None):
        """The ground truth put into the units :meth:`predict` gives ``image``'s restoration in, with no fit
        to it: scaled as the training targets were (their percentiles, or its own), then mapped back as the
        restoration is (the input's scaling; not for a model with other output channels than input ones, whose
        restoration stays in the network's units), so that the two can be compared pixel by pixel (an interval
        against the truth along a line).

        Examples
        --------
        >>> line = model.truth_in_input_units(truth, image=low, axes="ZYX")[10, 64]   # doctest: +SKIP
        """
        from ..normalize import denormalize, percentile_normalize

        norm, truth_norm = self._scalings(image, axes, normalization)
        out_axes = self.output_axes(axes)
        g, _ = percentile_normalize(np.asarray(truth, np.float32), *self.config.percentiles, axes=out_axes,
                                    norm=truth_norm)
        if self.config.n_channel_in != self.config.n_channel_out:   # (predict leaves such output in the network's units)
            return g
        return denormalize(g, norm, axes=out_axes)

    def check_spacing(self, spacing, *, name="image"):
        """Warn when the voxel size ``spacing`` ({axis: size}) does not fit this model, and return the
        message (the isotropic kind: its axial factor against the stack's Z/X ratio); None here: a model
        that keeps the grid takes any voxel size."""
        return None

    def trained_on(self, image, *, axes=None, path=None):
        """Whether this model was trained on ``image``: its scores on it would flatter it.

        An image is one of the training inputs when its pixels have a recorded fingerprint
        (:func:`carecore.fingerprint.fingerprint`: also a copy under another name, in another format or
        under a data root moved elsewhere; each time point or sample of a time-lapse or a stack of samples
        is compared; a file at a recorded path but with other pixels is not). It shares pixels with one
        when it is a crop of one (any offset, Z range or channel; at least about 1/128 of its planes'
        area that is not background), an image one was cropped from, or overlaps one by a tenth of the
        smaller or more (:func:`carecore.fingerprint.overlaps`: a sketch of each training input's small
        windows is recorded; the whole image is read then, a plane at a time); a held-out part of one
        acquisition beside the part trained on does not. A run card without fingerprints (a model saved
        before they were recorded) is read by paths alone: the same file or, where that file is gone (a
        data root moved), the same last three path parts.

        Parameters
        ----------
        image : str, Path or array-like
            An image file (read memory-mapped: a few small blocks per frame are read) or an array.
        axes : str, optional
            Its axes (required for an array; for a file, as for :func:`carecore.read_image`).
        path : str or Path, optional
            The file an array was read from, compared with the recorded paths.

        Returns
        -------
        bool or None
            True when it is a training input or shares pixels with one; None when the run card records
            no training images.
        """
        from ..fingerprint import fingerprint, overlaps, recorded_sketch
        from ..io import read_image

        from .init_weights import learned_from

        sources = learned_from(self.run_card)   # (a fine-tune's source's images too)
        if not sources:
            return None
        if isinstance(image, (str, Path)):
            path = image
        prints = {s["fingerprint"] for s in sources if s.get("fingerprint")}
        sketches = [recorded_sketch(s) for s in sources if s.get("sketch")]
        if not prints and not sketches:   # by path alone (a card of before fingerprints; recorded paths may be relative)
            if path is not None:
                p = Path(path).resolve()
                for source in sources:
                    low = Path(str(source.get("low", "")))
                    with contextlib.suppress(OSError, RuntimeError):   # (RuntimeError: a symlink loop)
                        # (by its last parts only where the file is gone: two experiments' train/low/a.tif
                        # are not one image)
                        if low.resolve() == p or (not low.exists() and low.parts[-3:] == p.parts[-3:]):
                            return True
            return False
        # by its pixels, also for a recorded path: another experiment's train/low/a.tif, or a file written
        # again since, is not the image trained on
        shapes = {tuple(sorted(s["shape"])) for s in sources if s.get("shape")}   # (in any axes order)
        if isinstance(image, (str, Path)):
            img = read_image(image, axes=axes, mmap=True)
            image, axes = img.data, img.axes
        if axes is None:
            raise CareError("trained_on: give the axes of an array (axes='ZYX', ...)")
        frame_shape = tuple(sorted(n for a, n in zip(axes, np.shape(image)) if a not in "TS"))
        if not shapes or frame_shape in shapes:   # (else no training image had its shape: no block read)
            if any(fingerprint(frame, rest) in prints for frame, rest in _frames(image, axes)):
                return True
        # a crop of one, or an image one was cropped from (a time point of a time-lapse at a time)
        return bool(sketches) and any(overlaps(sketches, frame, rest) for frame, rest in _frames(image, axes))

    def truth_seen(self, truth, *, axes):
        """Whether ``truth`` (a ground truth, ``axes``) shares its pixels with one of this model's training
        targets (:func:`carecore.fingerprint.overlaps` on the targets' recorded sketches): a new noise draw or
        another exposure of a field trained on has never-seen input but a seen target, and its scores flatter
        CARE as a training image's do. None when the run card records no sketches of its targets."""
        from ..fingerprint import overlaps, recorded_sketch

        from .init_weights import learned_from

        sketches = [recorded_sketch(s, "sketch_high") for s in learned_from(self.run_card) if s.get("sketch_high")]
        if not sketches:
            return None
        return any(overlaps(sketches, frame, rest) for frame, rest in _frames(truth, axes))

    @property
    def scales_by_training(self):
        """Whether prediction scales inputs by the training inputs' percentiles unless told otherwise."""
        return self.config.input_normalization == "training" and self.training_normalization is not None

    def input_normalization(self, x, *, axes, normalization=None, name="image"):
        """How prediction scales ``x``: ``normalization`` when given (a :class:`~carecore.Normalization`,
        ``"image"`` or ``"training"``), else the configured ``input_normalization``.

        ``"image"`` takes the image's own percentiles (robust to a changed gain or offset); ``"training"``
        takes the training inputs' (:attr:`training_normalization`), so that an image acquired like them
        is seen at the noise level the network learned, whatever it shows: a field of background and dim
        cytoplasm has other percentiles than the nuclei the network trained on. A configured
        ``"training"`` falls back to ``"image"`` for a model trained on bare arrays; asked for
        explicitly, it raises :class:`~carecore.CareError` then.
        """
        if isinstance(normalization, Normalization):
            return normalization
        how = normalization or self.config.input_normalization
        if how not in ("image", "training"):
            raise CareError(f"normalization: give 'image', 'training' or a Normalization, got {normalization!r}")
        if how == "training":
            norm = self.training_normalization
            if norm is not None:
                warn_if_unlike_training(x, norm, axes=axes, name=name, limit=self.unlike_range)
                return norm
            if normalization == "training":
                raise CareError(f"{name}: normalization='training', but this model has no training inputs' "
                                "percentiles that apply to images (it was trained on bare arrays, or on synthetic "
                                "data); use 'image'")
        return compute_percentiles(x, *self.config.percentiles, axes=axes, name=name)

    def _check_normalization(self, info):
        """The patches must have been normalized as this model will normalize its inputs."""
        seen = info.get("percentiles")
        if seen is not None and tuple(float(v) for v in seen) != tuple(self.config.percentiles):
            raise CareError(f"the patches were normalized with percentiles {tuple(seen)} but the model uses "
                            f"{tuple(self.config.percentiles)}; create the patches with percentiles="
                            f"{tuple(self.config.percentiles)} or configure the model with percentiles={tuple(seen)}")

    def train(self, patches, *, epochs=None, steps_per_epoch=None, time_limit=None, callback=None, stop=None,
              data_hash=None, devices=None):
        """Train on a :class:`~carecore.PatchSet` (or ``(X, Y, X_val, Y_val)``), resuming if trained before.

        Parameters
        ----------
        patches : PatchSet or tuple
        epochs, steps_per_epoch : int, optional
            Override the configuration (``epochs`` more epochs are trained). With a time budget the
            deadline ends training and these only space the validations: ``epochs`` is the number of
            validations planned (the steps between them are sized from timed steps), or, given
            ``steps_per_epoch``, a validation follows every ``steps_per_epoch`` steps for as long as the
            budget lasts (the last epoch cut short at the deadline; ``epochs`` is then ignored, and
            validations are not held to a fifth of the budget; the configuration's ``steps_per_epoch`` is
            not used under a budget).
        time_limit : float or str, optional
            A wall-clock budget (seconds, or ``"3m"``, ``"90s"``, ``"1h"``; default: the configuration's
            ``time_limit``, 0 for none). Training plans for it (:func:`~carecore.training.events.plan_budget`):
            timed steps size the epochs so that ``epochs`` validations fit, the learning-rate schedule
            follows the clock to the end of the budget, and the deadline (not the planned step count) ends
            training, with the best weights kept; after each epoch another is begun while a step of it
            fits, the deadline cutting it short. Steps that run faster than timed give more epochs of that
            size, not unused time (the events' ``epochs`` is then an estimate, updated every epoch).
            Everything in this call counts: tuning the classical filters on the validation patches (the
            line to beat), building the training graph, validations and saving.
        callback : callable, optional
            Receives progress events (see :mod:`carecore.training.events`).
        stop : callable, optional
            Polled after every step (True ends training after that step) and during the preparation (True
            there returns "stopped" before the first step, nothing trained or saved).
        devices : None, "all", int or list of str, optional
            Train data-parallel on several devices (:mod:`carecore.training.devices`): ``"all"`` GPUs
            (or logical CPUs), the first ``n`` of them, or these device names; every step's batch
            (``batch_size``, the global batch) is split across them. None: one device.

        Returns
        -------
        TrainingResult
        """
        from ..training.events import EventCallback, cosine_lr, plan_budget, preparing_event, work_after_training
        from ..training.pipeline import make_dataset
        from ..training.validation import ValidationSet, cached_line, keep_line

        c = self.config
        if isinstance(patches, tuple):
            X, Y, Xv, Yv = patches
            info = {}
        else:
            (X, Y), (Xv, Yv) = patches.train, patches.val
            info = patches.meta
            if data_hash is None and patches.path is not None:
                from .folder import _sha256

                data_hash = _sha256(Path(patches.path) / "patches.json")
        t_enter = time.perf_counter()  # a budget counts everything from here: the filters' line included
        self._check_patches(X, Y, "training patches")
        if len(Xv) == 0:
            raise CareError("no validation patches: create patches with validation_fraction > 0")
        self._check_patches(Xv, Yv, "validation patches")
        self._check_normalization(info)
        views = self._views_to_learn(X)
        budget = parse_duration(c.time_limit if time_limit is None else time_limit)
        for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0):
                raise CareError(f"{name}: must be an integer >= 1 (0 or None: the configuration's), got {value!r}")
        epochs = int(epochs or c.epochs)
        steps = int(steps_per_epoch or c.steps_per_epoch)
        bs = c.batch_size
        initial = len(self.history)
        resumed = initial > 0
        if resumed:
            self._check_same_data(info)
        if callback is not None:   # (seconds to a minute before the first step: the CLI's bar is drawn from here)
            callback(preparing_event(tuning=not cached_line(info, self)))
        # what a stop before the first step restores: the model as this call found it
        before = (self.config, self.keras_model, self.keras_model.get_weights(), copy.deepcopy(self.run_card),
                  self.best_val_loss)
        for key in ("time_limit", "budget_clock", "devices"):   # an earlier call's: this one says its own
            (self.run_card or {}).pop(key, None)
        # the runs before's seconds and steps (a run card saved while training counts this run's so far: a user
        # trial's interrupted run left "0 s" for the next resume to say, and an export's README "status running")
        before_s = float((self.run_card or {}).get("training_seconds") or 0.0)
        before_steps = int((self.run_card or {}).get("steps_done", 0))
        self._choose_residual_base(X, Y)
        c = self.config
        if c.init_weights and not resumed:   # a fine-tune: the layers that match start from those weights
            from .init_weights import copy_matching_weights

            self.run_card["init_weights"] = copy_matching_weights(self.keras_model, c.init_weights)
            self._warn_if_fine_tuned_on_its_sources_images(info)
            import keras

            keras.utils.set_random_seed(c.seed)   # loading the source set its own seed: this run's draws are its own
        lr = c.learning_rate if c.lr_schedule == "cosine" or not resumed else self.history[-1]["lr"]
        from ..training.devices import resolve_devices, training_strategy

        strategy = training_strategy(devices)
        scope = contextlib.nullcontext() if strategy is None else strategy.scope()
        with scope:
            if strategy is not None:  # the network's variables are mirrored on every device: build it again
                weights = self.keras_model.get_weights()
                self.keras_model = self._build()
                self.keras_model.set_weights(weights)
                self._stage_cache = None
            self._compile(lr)
            optimizer_msg = self._restore_optimizer() if resumed else None
        if strategy is not None:
            self.run_card["devices"] = resolve_devices(devices)
        monitor = self._best_by()
        if resumed and self.run_card.get("best_by", "val_loss") != monitor:
            self.best_val_loss = math.inf   # the kept best was chosen by another measure: the next epoch replaces it
        resume_msg = None
        if resumed:
            resume_msg = (f"resuming after {initial} epoch(s) with the last weights, {optimizer_msg}, "
                          f"best validation loss so far {self.best_val_loss:.4g} (its weights are kept unless beaten)")
            if budget > 0:   # (a user trial took the stopped run's remaining time for the budget: it is a new one)
                said = lambda t: f"{t / 60:.1f} min" if t >= 60 else f"{t:.0f} s"  # noqa: E731
                resume_msg += f"; this run has a budget of its own, {said(budget)} (the runs before trained {said(before_s)})"
            if c.lr_schedule == "cosine":   # (a user trial asked why the loss rose after Resume)
                resume_msg += (f"; its learning rate {'warms up' if c.warmup > 0 else 'starts at its peak'} and falls "
                               "again (a warm restart): the loss rises for an epoch or two, then falls, usually below "
                               "where it was")
            if callback is not None:
                callback({"kind": "resume", "message": resume_msg})

        def stopped_before_training():
            """A stop request during the preparation (the filters' line, graph building, timed steps): the
            result "stopped" with nothing trained or saved, the model's configuration, network weights and
            run card as this call found them; None when no stop was asked for."""
            if stop is None or not stop():
                return None
            self.config, self.keras_model, weights, self.run_card, self.best_val_loss = before
            self.keras_model.set_weights(weights)   # the original, one-device network, its timed steps undone
            self._stage_cache = None
            message = ("training stopped on request before its first step: nothing was trained, "
                       + ("nothing was saved" if self.path is None or not resumed else "the folder is as it was"))
            if callback is not None:
                callback({"kind": "end", "status": "stopped", "message": message})
            return TrainingResult("stopped", message, len(self.history), list(self.history), self.best_val_loss,
                                  time.perf_counter() - t_enter)

        self._adopt_records(info)   # (a measured PSF's sigma: the line's deconvolution starts)
        val = ValidationSet(Xv, Yv, self)
        self.baseline_val = val.baseline(cached=cached_line(info, self))
        if (early := stopped_before_training()) is not None:
            return early
        if self.baseline_val and not isinstance(patches, tuple) and not cached_line(info, self):
            keep_line(patches.meta, self, self.baseline_val)   # the next run on these patches (an ensemble's members)
        if callback is not None and self.baseline_val:
            callback({"kind": "baseline", **self.baseline_val})
        val_ds = self._validation_dataset(val)
        prior = list(self.history)
        t0 = time.perf_counter()
        deadline = None
        too_short = None   # a budget that the preparation (nearly) used up: said in the message
        lr_fn = cosine_lr(c.learning_rate, c.warmup) if c.lr_schedule == "cosine" else None
        if lr_fn is not None:  # no step at the peak rate before the warm-up (it can ruin a fresh network)
            self.keras_model.optimizer.learning_rate.assign(lr_fn(0.0))
        if budget:   # timed steps (after the graph is built) and one timed validation plan the epochs
            s_step, s_val = self._time_step_and_validation(X, Y, val, val_ds, seed=c.seed + initial + 10_000,
                                                           saves=self.path is not None)
            prep = time.perf_counter() - t_enter
            after = work_after_training(s_step, s_val, probabilistic=c.probabilistic, n_train=len(X), batch_size=bs,
                                        chooses_sigma=self._chooses_output_sigma(), views=views)
            plan = plan_budget(budget, prep, s_step, s_val, after, epochs=epochs, steps_per_epoch=steps_per_epoch)
            epochs, steps, deadline, room = plan.epochs, plan.steps, plan.deadline, plan.room
            if room < MIN_BUDGET_STEPS:
                too_short = (f"the budget of {budget:.1f} s left room for about {room} training step(s) after "
                             f"{prep:.0f} s of preparation (the filters' line, building the network, timing it) and "
                             "the work after training: too few to learn from; give a longer budget")
                if callback is not None:
                    callback({"kind": "note", "reason": "short_budget", "message": too_short})
        if (early := stopped_before_training()) is not None:
            return early
        ds = make_dataset(X, Y, bs, seed=c.seed + initial, augment=c.augment)

        def so_far(events, status, message):
            """The run card with this run's seconds and steps so far."""
            self.run_card = self._run_card(info, data_hash, status, message, 0.0)
            self.run_card.update(training_seconds=before_s + time.perf_counter() - (t_enter if budget else t0),
                                 steps_done=before_steps + int(events.steps_done))

        def checkpoint(events, save=True):
            """After every epoch: record history and best weights, save the folder (if any)."""
            self.history = prior + list(events.rows)
            if events.best_weights is not None:
                self._best_weights = events.best_weights
                self.best_val_loss = events.best_val
            if save and self.path is not None and events.status != "nan":
                so_far(events, "running", f"saved after epoch {len(self.history)} while training: a run that ended "
                                          "here was interrupted (or its process ended); training again on this "
                                          "folder resumes it")
                self.save(self.path)

        from ..training.dead_network import Revival

        cb = EventCallback(epochs=initial + (plan.validations if budget else epochs), steps=steps, callback=callback,
                           stop=stop, val_fn=val.ssim,
                           lr_patience=c.lr_patience, early_stopping=c.early_stopping, initial_epoch=initial,
                           best_val=self.best_val_loss, monitor=monitor, on_epoch=checkpoint, lr_fn=lr_fn,
                           deadline=deadline, t_start=t_enter,
                           loss_scale=1.0 / self.keras_model.distribute_strategy.num_replicas_in_sync,
                           revival=Revival(self, val.X, c.seed))
        if callback is not None:   # (the epochs' lines show the rate: said here why it rises, then falls)
            import keras

            from ..training.events import plan_text

            callback({"kind": "plan", "message": plan_text(c, epochs=epochs, steps=steps, batch_size=bs,
                                                           budget_plan=plan if budget else None,
                                                           s_step=s_step if budget else None, prep=prep if budget else 0.0,
                                                           start_lr=float(keras.ops.convert_to_numpy(
                                                               self.keras_model.optimizer.learning_rate)))})
        # a budget: the deadline ends training (the callback counts the epochs it still holds); the planned
        # epochs only size them, from a few timed steps that can be off by half (measured: 17 s planned,
        # 8-12 s taken, and the run ended with a third of its budget unused)
        cap = max(10 * epochs, 1000) if budget else epochs
        try:
            self.keras_model.fit(ds, epochs=initial + cap, initial_epoch=initial, steps_per_epoch=steps,
                                 validation_data=val_ds, callbacks=[cb], verbose=0, shuffle=False)
        except KeyboardInterrupt:   # (Ctrl-C) the folder says so, with the weights where it stopped
            if self.path is not None and len(self.history) > initial and cb.status != "nan":   # (never NaN weights)
                try:
                    so_far(cb, "interrupted", f"interrupted during epoch {len(self.history) + 1}: the best weights of "
                                              f"the {len(self.history)} epoch(s) before and the last ones were saved; "
                                              "training again on this folder resumes it")
                    self.save(self.path)
                except Exception as e:  # noqa: BLE001 - the interrupt is what the user must hear of
                    from ..errors import warn

                    warn(f"{self.path}: the interrupted training's folder was not saved again ({type(e).__name__}: "
                         f"{e}); it holds what was saved after epoch {len(self.history)}, marked running", stacklevel=2)
            raise
        seconds = time.perf_counter() - (t_enter if budget else t0)
        # where a budget's seconds went (a run that ends off its budget says so in its run card)
        clock = {"fit_started": cb.t0 - t_enter, "last_epoch_ended": cb.epoch_ends[-1] if cb.epoch_ends else None,
                 "fit_returned": time.perf_counter() - t_enter}
        if strategy is not None:
            # back to one device for prediction (under a strategy ``predict_on_batch`` runs the whole batch
            # on every device), with the optimizer's state kept for a resumed run
            opt = self.keras_model.optimizer
            if getattr(opt, "built", False):
                self._optimizer_state = {"class": type(opt).__name__, "values": [np.asarray(v) for v in opt.variables]}
            weights = self.keras_model.get_weights()
            self.keras_model = self._build()
            self.keras_model.set_weights(weights)
            self._stage_cache = None
        checkpoint(cb, save=False)
        if cb.status == "nan":
            if self._best_weights is None:  # nothing usable was trained: leave the folder as it was
                message = join_messages(cb.message + " (no epoch finished before it: nothing was saved)", *cb.notes)
                if callback is not None:
                    callback({"kind": "end", "status": cb.status, "message": message})
                return TrainingResult(cb.status, message,
                                      len(self.history), list(self.history), self.best_val_loss, seconds, cb.best_epoch)
            self.keras_model.set_weights(self._best_weights)  # never keep NaN weights, not even as "last"
        notes = list(cb.notes) + ([too_short] if too_short else [])
        if cb.restarts and cb.best_epoch is not None and cb.best_epoch <= cb.restarts[-1]["epoch"]:
            notes.append(f"the restarted network did not beat the validation loss of epoch {cb.best_epoch}: "
                         "those weights, from before the restart, are kept")
        message = join_messages(cb.message, *notes)
        # (a checkpoint's counts of this run so far: this run's are added to the runs before's here)
        self.run_card.update(training_seconds=before_s, steps_done=before_steps)
        self.run_card = self._run_card(info, data_hash, cb.status, message, seconds)
        self.run_card["trained_views"] = views
        # the steps trained, over every call (a budget's config.json keeps the recipe's epochs and steps: a trial
        # read them as what had been trained)
        self.run_card["steps_done"] = int(self.run_card.get("steps_done", 0)) + int(cb.steps_done)
        if cb.restarts:
            self.run_card["restarts"] = self.run_card.get("restarts", []) + cb.restarts
        if resume_msg:
            self.run_card["resumed"] = resume_msg
        if self.baseline_val:
            self.run_card["validation_baseline"] = self.baseline_val
        if budget:
            self.run_card["time_limit"] = budget
            self.run_card["budget_clock"] = {k: (None if v is None else round(float(v), 2)) for k, v in clock.items()}

        def mark(name):
            """A budget's clock after a piece of the work after training (seconds from the call)."""
            if budget:
                self.run_card["budget_clock"][name] = round(time.perf_counter() - t_enter, 2)

        if c.probabilistic and self._best_weights is not None:
            from ..uncertainty import reference_levels
            from ..uncertainty.ensemble import REFERENCE_PATCHES
            from ..uncertainty.scale_head import fit_scale_head

            def fitted(weights):
                """The weights with the scale's head fitted to their features and mean (training patches only),
                and the fit's record; a fit that fails leaves them as they are and says why."""
                t_fit = time.perf_counter()
                self.keras_model.set_weights(weights)
                try:
                    record = fit_scale_head(self.keras_model, X, Y, batch_size=bs, seed=c.seed)
                except Exception as e:  # the trained weights are worth more than the fit: keep and save them
                    self.keras_model.set_weights(weights)
                    return weights, {"error": f"{type(e).__name__}: {e}"}
                return self.keras_model.get_weights(), {**record, "seconds": round(time.perf_counter() - t_fit, 2)}

            last = self.keras_model.get_weights()
            same = len(last) == len(self._best_weights) and all(np.array_equal(a, b) for a, b in zip(last, self._best_weights))
            self._best_weights, self.run_card["scale_head_fit"] = fitted(self._best_weights)
            last = self._best_weights if same else fitted(last)[0]
            mark("scale_head_fitted")
            self.keras_model.set_weights(self._best_weights)
            self.run_card["reference"] = reference_levels(self, val.X[:REFERENCE_PATCHES])
            mark("reference_measured")
            if views > 1:   # the intervals of the mean over views, calibrated on held-out patches
                from ..prediction.tta import fit_scale_factor

                net = lambda v, k: np.asarray(self.keras_model.predict_on_batch(v), np.float32)  # noqa: E731
                self.run_card["tta_scale_factor"] = fit_scale_factor(net, val.X[:TTA_FIT_PATCHES],
                                                                     val.Y[:TTA_FIT_PATCHES], views == 8)
                self.run_card["tta_scale_patches"] = int(len(val.X[:TTA_FIT_PATCHES]))   # (a trial's: 7, unsaid)
                mark("tta_scale_factor_fitted")
            self.keras_model.set_weights(last)
        if self._best_weights is not None and self._chooses_output_sigma():
            self._choose_output_sigma(val)
            mark("output_sigma_chosen")
        if self.path is not None:
            self.save(self.path)
        if self._best_weights is not None:
            self.keras_model.set_weights(self._best_weights)  # predict with the best weights
        if callback is not None:
            callback({"kind": "end", "status": cb.status, "message": message})
        return TrainingResult(cb.status, message, len(self.history), list(self.history), self.best_val_loss, seconds,
                              cb.best_epoch)

    def _views_to_learn(self, X):
        """The symmetries training on the patches ``X`` teaches the network (pipeline.augment_batch): the
        square's 8 when the patches are square in YX, the 4 flips otherwise, none (1) without augmentation;
        a resumed run keeps the fewest."""
        views = learnable_views(self.config.augment, X.shape[-3] == X.shape[-2])
        return min(views, (self.run_card or {}).get("trained_views", views))

    def _validation_dataset(self, val):
        """The validation patches of ``val`` (a :class:`~carecore.training.validation.ValidationSet`) as the
        ``tf.data`` batches that training evaluates."""
        import tensorflow as tf  # the data pipeline only

        from ..training.pipeline import without_autotune

        bs = min(self.config.batch_size, len(val.X))
        return without_autotune(tf.data.Dataset.from_tensor_slices((val.X, val.Y)).batch(bs))

    def _time_step_and_validation(self, X, Y, val=None, val_ds=None, *, seed, saves):
        """Seconds per training step on batches of ``X``, ``Y`` (the median of three, after one that builds
        the graph) and per validation of ``val`` over ``val_ds`` (after one that builds the graphs; + 0.3 s
        for saving the folder when ``saves``; None without ``val``): what a time budget is planned from.
        :meth:`train` and the Estimate (:func:`~carecore.training.jobs.preflight`) time them alike. The
        steps train the network. The batches come straight from the generator: a second tf.data iterator
        left behind here blocked the return from train() for up to a minute while TensorFlow finalized it."""
        from ..training.pipeline import batches

        it = batches(X, Y, self.config.batch_size, seed=seed, augment=self.config.augment)
        xb, yb = next(it)
        self.keras_model.train_on_batch(xb, yb)  # builds the training graph: not counted
        times = []
        for _ in range(3):  # the median of three timed steps (the first ones after building are slower)
            xb, yb = next(it)
            ts = time.perf_counter()
            self.keras_model.train_on_batch(xb, yb)
            times.append(time.perf_counter() - ts)
        s_step = float(np.median(times))
        if val is None:
            return s_step, None
        self.keras_model.evaluate(val_ds.take(1), verbose=0)  # builds the evaluation graph: not counted
        val.ssim()                                            # and the prediction's
        tv = time.perf_counter()
        self.keras_model.evaluate(val_ds, verbose=0)
        val.ssim()
        return s_step, time.perf_counter() - tv + (0.3 if saves else 0.0)   # + saving the folder

    def _choose_residual_base(self, X, Y):
        """With ``residual_sigma="auto"``: the smoothed input to start from, chosen on the training patches
        ``X``, ``Y`` (and its gain and offset, unless given), and the network built again with it (from the
        configuration's seed). Nothing otherwise. Part of :meth:`train`'s preparation; the Estimate
        (:func:`carecore.training.jobs.preflight`) does it too, to time it and the network it builds."""
        c = self.config
        if c.residual_sigma != "auto":
            return
        from ..training.residual_base import choose_residual_sigma, fit_base_affine

        sigma = choose_residual_sigma(X, Y, seed=c.seed)
        self.config = c.replace(residual_sigma=sigma,
                                residual_affine=c.residual_affine or fit_base_affine(X, Y, sigma, seed=c.seed))
        import keras

        keras.utils.set_random_seed(c.seed)
        self.keras_model = self._build()
        self._stage_cache = None

    def _chooses_output_sigma(self):
        """Whether training ends by choosing ``output_sigma``: ``"auto"``, or chosen so before (a resumed run
        chooses again for its new weights)."""
        return self.config.output_sigma == "auto" or bool((self.run_card or {}).get("output_smoothing", {}).get("auto"))

    def _choose_output_sigma(self, val):
        """Set ``output_sigma`` to the smoothing of the best weights' validation predictions closest to their
        targets (:func:`~carecore.prediction.smoothing.choose_output_sigma`); the run card keeps the choice."""
        from ..prediction.smoothing import choose_output_sigma

        t = time.perf_counter()
        n = self.config.n_channel_out
        current = self.keras_model.get_weights()
        self.keras_model.set_weights(self._best_weights)
        bs = max(1, self.config.batch_size)
        pred = np.concatenate([np.asarray(self.keras_model.predict_on_batch(val.X[i:i + bs]), np.float32)[..., :n]
                               for i in range(0, len(val.X), bs)])
        self.keras_model.set_weights(current)
        sigma, table = choose_output_sigma(pred, val.Y[..., :n])
        self.config = self.config.replace(output_sigma=sigma)
        self.run_card["output_smoothing"] = {
            "auto": True, "sigma": sigma, "patches": int(len(val.X)),
            "val_rmse": {f"{s:g}": round(r, 6) for s, r in table.items()},
            "seconds": round(time.perf_counter() - t, 2)}

    def _warn_if_fine_tuned_on_its_sources_images(self, info):
        """A fine-tune on images its source network learned from is told where its validation boxes there
        may lie on regions that network trained on (:meth:`_validated_where_learned`): its validation SSIM
        and its lead over the filters' line then flatter it. The images told of are recorded in the run
        card's ``init_weights`` (``validation_on_learned``). (The run card lists the source's images as
        learned from all the same, so :meth:`trained_on`, the QC report and the app flag them.)"""
        from ..errors import warn

        source = self.run_card.get("init_weights") or {}
        again = sorted(self._validated_where_learned(info, source.get("data_sources") or []))
        if again:
            source["validation_on_learned"] = again
            warn(f"fine-tuning on {len(again)} image(s) that {self.config.init_weights} learned from "
                 f"({', '.join(again[:3])}{' ...' if len(again) > 3 else ''}): validation there may lie where "
                 "that network trained, so the validation SSIM and its lead over the filters' line flatter this "
                 "model; cut the patches as that network's were (the same images in the same order, the same "
                 "patch size, patches per image, validation fraction, fields and seed: its validation boxes are "
                 "then held out again), or judge it on images neither network trained on (`carecore qc` says "
                 "which ones a model has seen)", stacklevel=3)

    def _validated_where_learned(self, info, learned):
        """The names of the training images (in the patch set's metadata ``info``) whose validation boxes
        may lie where a network of ``learned`` (the source's ``data_sources`` and those before it) trained.

        An image is one of theirs where its input's fingerprint, or its ground truth's sketch (another noise
        draw of a field it trained on), is among those they recorded. Boxes inside the ones each of them
        held out on it (:func:`held_out_within`: patches cut again from the same images in the same order,
        with the same patch size, patches per image, validation fraction, fields and seed) are honest; where
        a run card does not say where it held out (before 2026-12-07) they are not. A crop of one of their
        images (or of its ground truth), found by their sketches (:func:`~carecore.fingerprint.
        sketches_overlap`), lies on another grid: its boxes are not compared, and it is named where it
        holds any (a crop of at least about 1/128 of the image's windows)."""
        from ..fingerprint import recorded_sketch, sketch_matcher

        before = {}   # an input's fingerprint or a ground truth's sketch: each earlier network's block on it
        for s in learned:
            for key in {s.get("fingerprint"), s.get("sketch_high")} - {None, ""}:
                before.setdefault(key, []).append(s.get("validation_block", UNRECORDED))
        crop_of = {k: sketch_matcher([recorded_sketch(r, k) for r in learned]) for k in ("sketch", "sketch_high")}
        again = set()
        for s in info.get("sources") or []:
            block = s.get("validation_block", UNRECORDED)
            earlier = [b for key in {s.get("fingerprint"), s.get("sketch_high")} - {None, ""} for b in before.get(key, [])]
            honest = all(held_out_within(block, b) for b in earlier)
            if not earlier and not held_out_within(block, None):   # boxes on a crop of one: on another grid
                honest = not any(matches(recorded_sketch(s, k)) for k, matches in crop_of.items())
            if not honest:
                again.add(Path(str(s.get("low", ""))).name)
        return again

    def _check_same_data(self, info):
        """A training resumed goes on with the images it began with (:meth:`_check_same_sources`) and
        validates on the boxes it began with: patches cut at another patch size or with another seed hold out
        other boxes, some of them regions its first run trained on (the run card's ``validation_layout``)."""
        self._check_same_sources(info)
        where = f" {self.path}" if self.path else ""
        began, layout = (self.run_card or {}).get("validation_layout"), validation_layout(info)
        if began and layout and began != layout:   # (unknown for a model or patches of before 2026-12-07)
            # (the app's Resume after another budget cut its patches at another size: a user's run would have
            # validated on regions it had trained on)
            size = lambda v: "×".join(map(str, v or [])) or "?"   # noqa: E731
            raise CareError(f"this model{where} began training on patches whose validation boxes lie elsewhere: these "
                            f"were cut at another patch size, number of patches per image, seed or split (patches of "
                            f"{size(info.get('patch_size'))}, seed {info.get('seed', '?')}; the model's configuration: "
                            f"{size(self.config.patch_size)}, seed {self.config.seed}); resumed on them, it would validate "
                            "on regions its first run trained on, and choose its best weights on other boxes; resume on "
                            "the patches it began with (the same patch folder, or the same images, patch size, number "
                            f"per image and seed), or {FINE_TUNE_INSTEAD}")

    def _check_same_sources(self, info):
        """A training resumed goes on with the images it began with: on others, its validation losses
        (which choose the best weights) would compare different validation sets, and its run card would
        forget the images it learned from. Compared by file names (and frames) and, where the run card
        records them, by the inputs' fingerprints and the ground truths' sketches (the same names in a folder
        of another light dose, or the inputs given as their own ground truth, are other images); patches of
        bare arrays are not checked."""
        where = f" {self.path}" if self.path else ""
        before = (self.run_card or {}).get("data_sources")
        now = info.get("sources")
        arrays = lambda sources: any(str(s.get("low", "")).startswith("array ") for s in sources)  # noqa: E731
        if not before or not now or arrays(before) or arrays(now):
            return
        content = all(s.get("fingerprint") and s.get("sketch_high") for s in list(before) + list(now))

        def keys(sources, pixels):
            return sorted((Path(str(s.get("low", ""))).name, Path(str(s.get("high", ""))).name, str(s.get("frame", "")))
                          + ((str(s["fingerprint"]), str(s["sketch_high"])) if pixels else ()) for s in sources)

        if keys(before, content) == keys(now, content):
            return
        if keys(before, False) == keys(now, False):
            changed = sorted({f"{Path(str(n['low'])).name} / {Path(str(n['high'])).name}" for o, n in
                              zip(sorted(before, key=lambda s: keys([s], False)), sorted(now, key=lambda s: keys([s], False)))
                              if keys([o], True) != keys([n], True)})
            raise CareError(f"this model{where} was trained on other pixels under the same file names ({', '.join(changed[:3])}"
                            f"{' ...' if len(changed) > 3 else ''}: the inputs or their ground truths differ from the "
                            "ones it began with, e.g. a folder of another light dose, or the inputs given as ground "
                            "truth; or the same files read with other axes): resuming on them would choose its best "
                            "weights by validation losses on other validation sets and lose the record of what it "
                            f"learned from; {FINE_TUNE_INSTEAD}")
        old = sorted({Path(str(s["low"])).name for s in before})
        new = sorted({Path(str(s["low"])).name for s in now} - set(old))
        raise CareError(f"this model{where} was trained on other images ({', '.join(old[:3])}"
                        f"{' ...' if len(old) > 3 else ''}; now also or instead {', '.join(new[:3]) or 'fewer of them'}"
                        f"{' ...' if len(new) > 3 else ''}): resuming on them would choose its best weights by validation "
                        f"losses on other validation sets and lose the record of what it learned from; {FINE_TUNE_INSTEAD}")

    def _records_of(self, info):
        """The run card's records that a model kind takes from its patch set's metadata ``info`` (a measured
        PSF's, say), given to the run card before the validation line is tuned: {} here."""
        return {}

    def _adopt_records(self, info):
        """Give the run card the kind's records of the patch set (:meth:`_records_of`) before a validation line
        is tuned on it (training, an ensemble's line, the Estimate)."""
        self.run_card.update(self._records_of(info))

    def _run_card(self, info, data_hash, status, message, seconds):
        import keras
        import tensorflow as tf

        card = dict(self.run_card)
        card.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        card.update({
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"carecore": __version__, "keras": keras.__version__, "tensorflow": tf.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "backend": keras.backend.backend(), "machine": platform.machine(), "onednn": onednn_enabled(),
            "seed": self.config.seed, "epochs_done": len(self.history), "status": status, "message": message,
            "training_seconds": card.get("training_seconds", 0.0) + seconds,
            "parameters": self.count_params(), "best_val_loss": self.best_val_loss,
            "best_by": self._best_by(),
        })
        if data_hash:
            card["data_sha256"] = data_hash
        layout = validation_layout(info)
        if layout:   # (a resume on patches whose validation boxes lie elsewhere is refused)
            card["validation_layout"] = layout
        for key, record in self._records_of(info).items():   # (the kind's; None: an earlier run's no longer holds)
            if record is None:
                card.pop(key, None)
            else:
                card[key] = record
        if info.get("sources"):
            card["data_sources"] = [{"low": s["low"], "high": s["high"], **({"frame": s["frame"]} if "frame" in s else {}),
                                     **({"fingerprint": s["fingerprint"]} if s.get("fingerprint") else {}),
                                     **({"shape": s["shape"]} if s.get("shape") else {}),
                                     **{k: s[k] for k in ("sketch", "sketch_rare", "sketch_high", "sketch_high_rare")
                                        if s.get(k) is not None},
                                     # (where it held out: a fine-tune validates honestly on its boxes)
                                     **({"validation_block": s["validation_block"]} if "validation_block" in s else {})}
                                    for s in info["sources"]]
        if info.get("percentiles"):
            card["normalization_seen"] = {
                "percentiles": list(info["percentiles"]),
                "sources": [{"low": s["low"], "norm_low": s.get("norm_low"), "norm_high": s.get("norm_high")}
                            for s in info.get("sources", [])]}
        return card

    # -- prediction --------------------------------------------------------------------------
    def _check_input(self, x, axes, name):
        axes = check_axes(axes, np.ndim(x), name=name, shape=np.shape(x))
        c = self.config
        sp = spatial_axes(axes)
        extra = set(axes) - set(sp) - {"C"}
        if extra:   # predict takes T and S frame by frame (frame_by_frame) before it checks one image
            raise CareError(f"{name}: axes {axes!r} (shape {tuple(np.shape(x))}) have {''.join(sorted(extra))}; give "
                            f"one image: the model's spatial axes ({c.axes}), optionally with C")
        if sp != c.axes:
            hint = ""
            if c.axes == "YX" and sp == "ZYX":   # (frame_by_frame gives one frame: the file's axes may have T)
                hint = ("; to restore each Z slice on its own with this 2D model, give S in place of Z in the image's "
                        "axes (ZYX -> SYX, TZYX -> TSYX; `carecore predict --axes SYX`)")
            elif c.axes == "ZYX" and sp == "YX":   # (a user trial found no remedy said)
                hint = "; a 2D image is restored by a 2D model (trained on YX images)"
            raise CareError(f"{name}: the model is {c.ndim}D ({c.axes}) but the image has spatial axes {sp!r} "
                            f"(shape {tuple(np.shape(x))}, axes {axes}){hint}")
        nc = x.shape[axes.index("C")] if "C" in axes else 1
        if nc != c.n_channel_in:
            raise CareError(f"{name}: the model takes {c.n_channel_in} channel(s) but the image has {nc} "
                            f"(shape {tuple(np.shape(x))}, axes {axes})")
        if c.kind == "care" and not (self.run_card or {}).get("imported_from"):
            # (the other kinds restore slices of a stack or a grid of their own; an import's patch size is a default)
            small = [f"{a} {x.shape[axes.index(a)]} (the training patches' {int(p)})"
                     for a, p in zip(c.axes, c.patch_size) if x.shape[axes.index(a)] < p / 2]
            if small:
                from ..errors import warn

                warn(f"{name}: smaller than half the training patches along {', '.join(small)}: the network sees "
                     "mostly its reflected border there and restores it worse than within a larger image (a single "
                     "slice of a stack: restore the stack, or use a 2D model)", stacklevel=3)
        return axes

    @property
    def learned_views(self):
        """How many of the image's flips and 90° rotations the network was trained on: 8 (square
        patches), 4 (rectangular ones: no quarter turns) or 1 (``augment=False``). The run card's
        ``trained_views`` when training recorded it, else from ``augment`` and ``patch_size``."""
        c = self.config
        learned = (self.run_card or {}).get("trained_views")
        if learned is None:
            learned = learnable_views(c.augment, c.patch_size[-1] == c.patch_size[-2])
        return int(learned)

    @property
    def tta_scale_factor(self):
        """The factor on a probabilistic model's scale under ``tta`` (:func:`~carecore.prediction.tta.
        fit_scale_factor`), measured on its validation patches when training ended; 1 for models
        trained before it was recorded (the views' mixture-matched scale as it is)."""
        return float((self.run_card or {}).get("tta_scale_factor", 1.0))

    def _tta_views(self, tta, name):
        """Whether ``tta``'s views include the quarter turns (:attr:`learned_views`); raises when the
        model never learned the views."""
        c = self.config
        learned = self.learned_views
        if tta and learned == 1:
            raise CareError(f"{name}: tta averages the flips and rotations the network was trained on, but "
                            f"this {c.kind} model was trained without augmentation (augment=False); "
                            "predict with tta=False")
        return learned == 8

    def _check_output_sigma(self, output_sigma):
        """The sigma :meth:`predict` smooths with: the model's, or a per-call ``output_sigma`` checked (only 0
        for a kind that does not smooth, :attr:`smooths_output`)."""
        from ..prediction.smoothing import MAX_OUTPUT_SIGMA

        if output_sigma is None:
            return self.output_sigma
        if output_sigma and not self.smooths_output:
            raise CareError(f"output_sigma: {self.config.kind} models do not smooth their output (got {output_sigma!r}); "
                            "leave it out")
        if isinstance(output_sigma, bool) or not isinstance(output_sigma, (int, float, np.integer, np.floating)) \
                or not 0 <= output_sigma <= MAX_OUTPUT_SIGMA:
            raise CareError(f"output_sigma: must be a number of pixels in [0, {MAX_OUTPUT_SIGMA}] (or None for the "
                            f"model's, {self.output_sigma:g}), got {output_sigma!r}")
        return float(output_sigma)

    @frame_by_frame
    def predict(self, image, *, axes, n_tiles="auto", memory_budget=DEFAULT_PREDICT_BUDGET, batch_size=None,
                stage_tiles=None, normalization=None, tta=False, output_sigma=None, progress=None, stop=None,
                out=None, name="image"):
        """Restore ``image``; probabilistic models return ``(mean, scale)``.

        Parameters
        ----------
        image : array_like (may be a memory map)
        axes : str
            Axes of ``image``: the model's spatial axes (in any order: an ``XY`` image is restored as ``YX``
            and given back as ``XY``), optionally with ``C``; with ``T`` (time points)
            or ``S`` (samples) each frame is restored as an image of its own
            (:func:`~carecore.prediction.frames.frame_by_frame`; the result is held in memory: larger
            ones chunk by chunk with :func:`~carecore.predict_chunked`).
        n_tiles : "auto" or tuple of int
            Tiles per spatial axis; ``"auto"`` picks the plan with the least work within
            ``memory_budget`` (see :meth:`tile_plan`).
        memory_budget : int
            Bytes of working memory allowed at once (network activations and staged intermediates).
        batch_size : int, optional
            Tiles per network call (default: as many as fit the budget, at most 8).
        stage_tiles : tuple, optional
            Run the network in stages (:mod:`carecore.prediction.staged`) with these tile counts per
            axis, for every stage or one tuple per stage; ``"auto"`` picks them from the budget.
        normalization : Normalization, "image" or "training", optional
            The input's scaling (see :meth:`input_normalization`); default: the configured
            ``input_normalization``.
        tta : bool
            Test-time augmentation (:mod:`carecore.prediction.tta`): the mean of the restorations of
            the 8 flips and 90° rotations of every tile in the YX plane (4 when the training patches
            were not square), the views the network was trained on; 8× the work, a smoother result
            where the truth is flat. Probabilistic models: the views' mixture as one Laplace (its
            mean, and the scale of its variance: wider where the views disagree). Needs a model
            trained with ``augment=True``.
        output_sigma : float, optional
            The Gaussian sigma (pixels) that smooths the restored mean, for this call only: 0 shows the
            network's output as it is. Default: the model's (:attr:`output_sigma`, chosen by training
            when configured ``"auto"``). The tiles' overlap follows it, so any tiling gives the same.
        progress, stop : callables, optional
            ``progress(done, total, "tiles")`` after every batch of tiles (with ``tta``:
            ``"tile views"``, after every view of a batch); ``stop()`` polled likewise.
        out : array, optional
            Where to write the result (e.g. a ``np.memmap`` for results larger than RAM).

        Returns
        -------
        numpy.ndarray (float32), same axes as ``image`` (``C`` = output channels), mapped back to the
        input's intensity range when input and output channel counts agree; for probabilistic models
        the tuple ``(mean, scale)``.
        """
        x = image
        axes = self._check_input(x, axes, name)
        c = self.config
        square = self._tta_views(tta, name)
        sigma = self._check_output_sigma(output_sigma)
        sp = spatial_axes(axes)
        norm = self.input_normalization(x, axes=axes, normalization=normalization, name=name)
        lo = np.asarray(norm.lo, np.float32)
        hi = np.asarray(norm.hi, np.float32)
        # layout (spatial..., C) without copying data
        order = [axes.index(a) for a in sp] + ([axes.index("C")] if "C" in axes else [])
        xv = np.transpose(x, order) if "C" in axes else np.asarray(x)[..., None]
        xv = self._preprocess(xv, c.axes)
        shape = xv.shape[:-1]
        plan = self.tile_plan(shape, n_tiles, memory_budget=memory_budget, stage_tiles=stage_tiles,
                              output_sigma=sigma)
        n_out = c.n_channel_out * (2 if c.probabilistic else 1)
        if out is None:
            res = np.empty(tuple(shape) + (n_out,), np.float32)
        else:
            if tuple(out.shape) != tuple(shape) + (n_out,):
                raise CareError(f"out has shape {tuple(out.shape)}, expected {tuple(shape) + (n_out,)}")
            res = out
        from ..prediction.tiling import read_window
        from ..prediction.tta import mean_over_views, swap_yx, views
        from ..prediction.smoothing import smooth

        def smooth_mean(t, p):
            """Tile ``t``'s output ``p`` with its mean smoothed (``output_sigma``) over the tile, halo included,
            up to the image's end (not the padding past it): the same at any tiling."""
            if not sigma:
                return p
            p = p[tuple(slice(0, min(w.stop, n) - w.start) for w, n in zip(t.window, shape))]
            return smooth(p[None], sigma, n_channels=c.n_channel_out)[0]

        def normalized(t):
            return (finite_tile(read_window(xv, t.window), name, sp, t.window, shape) - lo) / (hi - lo)

        tiles = plan.tiles
        n_views = len(views(square)) if tta else 1   # progress counts every view of every tile
        unit = "tile views" if tta else "tiles"
        average = dict(n_mean=c.n_channel_out if c.probabilistic else None, scale_factor=self.tta_scale_factor,
                       stop=stop)
        if plan.stage_tiles is None:
            tile_bytes = int(np.prod(plan.tile_shape)) * self._bytes_per_voxel()
            bs = batch_size or int(max(1, min(8, memory_budget // max(tile_bytes, 1))))
            run_batch = counting(lambda v: np.asarray(self.keras_model.predict_on_batch(v), np.float32),
                                 progress, len(tiles) * n_views, unit)
            report(progress, 0, len(tiles) * n_views, unit)
            for start in range(0, len(tiles), bs):
                check_stop(stop)
                group = tiles[start:start + bs]
                batch = np.stack([normalized(t) for t in group])
                pred = mean_over_views(run_batch, batch, square, **average) if tta else run_batch(batch)
                for t, p in zip(group, pred):
                    res[t.core] = smooth_mean(t, p)[t.inner]
        else:
            from ..prediction.staged import run_stages, stage_plans

            stages = self._stages()
            total = len(tiles) * n_views * sum(len(p) for p in stage_plans(stages, plan.tile_shape,
                                                                            plan.stage_tiles))
            done = [0]

            def on_tile():
                done[0] += 1
                report(progress, done[0], total, unit)

            def run(v, k=0):  # view k's block: Y and X swap their stage tile counts on odd turns
                return run_stages(stages, v, [swap_yx(s, k) for s in plan.stage_tiles], on_tile=on_tile, stop=stop)

            report(progress, 0, total, unit)
            for t in tiles:
                pred = mean_over_views(run, normalized(t), square, **average) if tta else run(normalized(t))
                res[t.core] = smooth_mean(t, pred)[t.inner]
        if c.n_channel_in == c.n_channel_out:  # back to the input's intensity range
            res[..., : c.n_channel_out] *= hi - lo
            res[..., : c.n_channel_out] += lo
            if c.probabilistic:
                res[..., c.n_channel_out:] *= hi - lo
        back = lambda r: np.moveaxis(r, -1, axes.index("C")) if "C" in axes else r[..., 0]  # noqa: E731
        if c.probabilistic:
            return back(res[..., : c.n_channel_out]), back(res[..., c.n_channel_out:])
        return back(res)

    def tile_plan(self, shape, n_tiles="auto", *, memory_budget=DEFAULT_PREDICT_BUDGET, stage_tiles=None,
                  output_sigma=None):
        """How :meth:`predict` cuts an image of spatial ``shape`` (a :class:`~carecore.prediction.tiling.TilePlan`).

        With ``n_tiles="auto"``: the whole image at once when the network's activations fit
        ``memory_budget``; otherwise whichever needs less work within the budget, plain tiles
        through the whole network (each cut costs the receptive field on both sides) or staged
        prediction (:mod:`carecore.prediction.staged`: small halos per stage, plus the cost of
        keeping the intermediate arrays) over blocks as large as the budget allows.
        ``stage_tiles`` forces staged prediction. ``output_sigma``: the smoothing :meth:`predict` applies
        (default: the model's), which widens the tiles' overlap.
        """
        from ..prediction.staged import STAGING_OVERHEAD, staged_voxels
        from ..prediction.tiling import auto_tiles, plan_tiles

        if isinstance(n_tiles, str) and n_tiles != "auto":
            raise CareError(f"n_tiles must be 'auto' or a tuple of ints, got {n_tiles!r}")
        output_sigma = self._check_output_sigma(output_sigma)
        kw = dict(halo=self._halo(output_sigma), divisor=self.config.divisor)
        if stage_tiles is None:
            if n_tiles != "auto":
                return plan_tiles(shape, n_tiles, **kw)
            plain = plan_tiles(shape, auto_tiles(shape, bytes_per_voxel=self._bytes_per_voxel(),
                                                 budget=memory_budget, **kw), **kw)
            if len(plain) == 1 or self._stages() is None:
                return plain
            staged = self._staged_plan(shape, "auto", "auto", memory_budget, output_sigma)
            work = len(staged) * staged_voxels(self._stages(), staged.tile_shape, staged.stage_tiles)
            return staged if work * STAGING_OVERHEAD < plain.voxels else plain
        if self._stages() is None:
            raise CareError(f"{type(self).__name__} cannot predict in stages; leave stage_tiles unset")
        return self._staged_plan(shape, n_tiles, stage_tiles, memory_budget, output_sigma)

    def _staged_plan(self, shape, n_tiles, stage_tiles, memory_budget, output_sigma):
        from ..prediction.staged import auto_stage_tiles, stored_bytes_per_voxel
        from ..prediction.tiling import auto_tiles, plan_tiles

        c = self.config
        kw = dict(halo=self._halo(output_sigma), divisor=c.divisor)
        stages = self._stages()
        stored = stored_bytes_per_voxel(stages, n_channel_in=c.n_channel_in, ndim=c.ndim)
        if n_tiles == "auto":  # blocks whose kept arrays take at most half the budget
            n_tiles = auto_tiles(shape, bytes_per_voxel=2 * stored, budget=memory_budget, **kw)
        block = plan_tiles(shape, n_tiles, **kw).tile_shape
        if stage_tiles == "auto":
            stage_tiles = auto_stage_tiles(stages, block, memory_budget - stored * int(np.prod(block)))
        else:
            stage_tiles = tuple(stage_tiles)
            if all(isinstance(v, (int, np.integer)) for v in stage_tiles):
                stage_tiles = (stage_tiles,) * len(stages)
            if len(stage_tiles) != len(stages) or any(len(t) != len(shape) for t in stage_tiles):
                raise CareError(f"stage_tiles {stage_tiles}: give one count per axis ({len(shape)}), for all "
                                f"{len(stages)} stages or one tuple per stage")
        return plan_tiles(shape, n_tiles, stage_tiles=stage_tiles, **kw)

    # -- persistence -------------------------------------------------------------------------
    def _normalization_record(self):
        """What ``normalization.json`` says: the percentiles the model applies, and those its training
        patches were made with (checked equal before training) with each source image's values."""
        rec = {"method": "percentile", "percentiles": list(self.config.percentiles), "per_channel": True,
               "output": "mapped back with the input's percentile range when channels in == out"}
        seen = self.run_card.get("normalization_seen")
        if seen:
            rec["training_patches"] = seen
        return rec

    def save(self, path=None):
        """Write the model folder atomically (best and last weights, config, history, run card);
        see :func:`~carecore.models.folder.save_model`."""
        from .folder import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path, *, weights="best"):
        """Load a model folder of any kind (see :func:`~carecore.models.folder.load_model_folder`)."""
        from .folder import load_model_folder

        return load_model_folder(path, weights=weights)

"""A validated, JSON-serializable model configuration (CARE-NOTES §2).

Unknown keys and inconsistent values are rejected with a message naming the field. Configurations
are immutable: :meth:`CareConfig.replace` returns a changed copy. Saved configurations carry
:data:`CONFIG_VERSION`; :func:`upgrade` brings older ones up to date.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields

import numpy as np

from ..axes import check_axes
from ..errors import CareError
from ..normalize import DEFAULT_PERCENTILES
from ..prediction.smoothing import MAX_OUTPUT_SIGMA
from .init_weights import with_source_size
from .kinds import KINDS, model_class
from . import precision as precision_rules
from .precision import bfloat16_fits, default_precision

CONFIG_VERSION = 1
LOSSES = ("mae", "mse", "laplace")
LR_SCHEDULES = ("cosine", "plateau")
OPTIMIZERS = ("adamw", "adam")
INPUT_NORMALIZATIONS = ("image", "training")
PRECISIONS = ("mixed_bfloat16", "float32")
#: the largest Gaussian sigma (pixels) of a residual model's smoothed input (``residual_sigma``)
MAX_RESIDUAL_SIGMA = 16.0


@dataclass(frozen=True)
class CareConfig:
    """Everything that defines a CARE network and how it is trained."""

    axes: str = field(default="ZYX", metadata={"doc": "spatial axes of the network input (YX or ZYX); channels are separate"})
    n_channel_in: int = field(default=1, metadata={"doc": "channels of the input"})
    n_channel_out: int = field(default=1, metadata={"doc": "channels of the output"})
    kind: str = field(default="care", metadata={"doc": "model kind (carecore.models.kinds.KINDS): care, upsampling (interpolate Z "
                                                                 "by upsampling_factor first), ..."})
    upsampling_factor: float = field(default=1.0, metadata={"doc": "axial factor (Z spacing / lateral spacing) for "
                                                                   "kind=upsampling and kind=isotropic"})
    psf_sigma: float = field(default=0.0, metadata={"doc": "PSF sigma in pixels the training pairs were simulated with "
                                                           "(isotropic: axial; subdiffraction: lateral); 0: none/measured"})
    interpolation: str = field(default="linear", metadata={"doc": "how kind=upsampling interpolates Z before the "
                                                                  "network (as its training inputs were made): "
                                                                  "nearest, linear or cubic"})
    unet_depth: int = field(default=2, metadata={"doc": "number of poolings"})
    unet_filters: int = field(default=32, metadata={"doc": "filters in the first level; doubled per level"})
    unet_kernel: int = field(default=0, metadata={"doc": "convolution kernel size; 0 picks 5 in 2D, 3 in 3D"})
    unet_n_conv: int = field(default=2, metadata={"doc": "convolutions per level"})
    residual: bool = field(default=True, metadata={"doc": "learn the correction to the input (needs channels in == out)"})
    residual_sigma: float = field(default=0.0, metadata={"doc": "Gaussian sigma (pixels, every spatial axis) of the smoothed input that a "
                                                               "residual network's correction is added to: training starts "
                                                               "at that filter's answer; 0: the input itself; 'auto': the sigma "
                                                               "that restores the training patches best, chosen when training "
                                                               "starts"})
    residual_affine: tuple = field(default=(), metadata={"doc": "(gain, offset) per channel that put the residual base in "
                                                               "the targets' units (normalized input and targets differ "
                                                               "in scale): with residual_sigma='auto' and none given, "
                                                               "fitted by least squares on the training patches; "
                                                               "((1, 0),) keeps the base as it is; (): gain 1, offset 0"})
    output_sigma: float = field(default=0.0, metadata={"doc": "Gaussian sigma (pixels, every spatial axis) that smooths the "
                                                             "restored mean after the network (and after the views' "
                                                             "mean with tta): 0: none; 'auto': chosen when training "
                                                             "ends, the candidate (0-4 px) with the lowest RMSE on the "
                                                             "validation patches (carecore.prediction.smoothing)"})
    probabilistic: bool = field(default=False, metadata={"doc": "predict a Laplace mean and scale per pixel"})
    loss: str = field(default="mae", metadata={"doc": "mae, mse, or laplace (must be laplace iff probabilistic)"})
    learning_rate: float = field(default=4e-4, metadata={"doc": "(peak) learning rate"})
    lr_schedule: str = field(default="cosine", metadata={"doc": "cosine: linear warm-up, then cosine decay to 0 at the end of "
                                                                "the planned steps or time budget; plateau: CSBDeep's, halve "
                                                                "after lr_patience epochs without validation improvement"})
    warmup: float = field(default=0.05, metadata={"doc": "share of the training spent warming the learning rate up (cosine)"})
    optimizer: str = field(default="adamw", metadata={"doc": "adamw or adam"})
    weight_decay: float = field(default=1e-4, metadata={"doc": "decoupled weight decay of adamw"})
    time_limit: float = field(default=0.0, metadata={"doc": "training budget in seconds, everything included (0: train "
                                                            "epochs × steps_per_epoch); the schedule plans for it"})
    batch_size: int = field(default=16, metadata={"doc": "patches per training step"})
    epochs: int = field(default=100, metadata={"doc": "training epochs (with a time_limit: the validations planned, "
                                                      "the steps between them sized from timed steps)"})
    steps_per_epoch: int = field(default=400, metadata={"doc": "training steps per epoch (not used with a time_limit: "
                                                               "the run card's steps_done says what was trained)"})
    patch_size: tuple = field(default=(16, 64, 64), metadata={"doc": "training patch size along axes"})
    seed: int = field(default=0, metadata={"doc": "seed of weight initialization and patch order"})
    init_weights: str = field(default="", metadata={"doc": "start from these weights instead of random ones: a model "
                                                          "folder of the same network (its layers are copied before "
                                                          "the first step: a fine-tune); empty: random weights"})
    augment: bool = field(default=True, metadata={"doc": "random flips and 90° rotations in the lateral plane"})
    precision: str = field(default="float32", metadata={
        "doc": "float32 or mixed_bfloat16 (fast where the hardware computes in bfloat16, and not on every such "
               "CPU); care_config picks one for the machine (carecore.models.precision.default_precision)"})
    percentiles: tuple = field(default=DEFAULT_PERCENTILES, metadata={"doc": "normalization percentiles (low, high)"})
    input_normalization: str = field(default="training", metadata={
        "doc": "what prediction scales its input by: 'image' (each image's own percentiles, as CSBDeep) or "
               "'training' (the training inputs' percentiles, as CAREamics: for images acquired like them)"})
    lr_patience: int = field(default=10, metadata={"doc": "epochs without validation improvement before halving the learning rate"})
    early_stopping: int = field(default=0, metadata={"doc": "stop after this many epochs without improvement (0: never)"})
    version: int = field(default=CONFIG_VERSION, metadata={"doc": "configuration format version"})

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (normalizing, still frozen to users)
        try:
            axes = check_axes(self.axes, name="config")
        except CareError as e:
            raise CareError(f"axes: {e}") from None
        if axes not in ("YX", "ZYX"):
            raise CareError(f"axes: must be 'YX' (2D) or 'ZYX' (3D), got {self.axes!r}")
        set_("axes", axes)
        set_("patch_size", tuple(int(v) for v in self.patch_size))
        set_("percentiles", tuple(float(v) for v in self.percentiles))
        try:
            set_("residual_affine", tuple((float(g), float(o)) for g, o in self.residual_affine))
        except (TypeError, ValueError):
            raise CareError(f"residual_affine: must be one (gain, offset) pair of numbers per channel, "
                            f"got {self.residual_affine!r}") from None
        for name, lo in (("n_channel_in", 1), ("n_channel_out", 1), ("unet_depth", 1), ("unet_filters", 1),
                         ("unet_n_conv", 1), ("batch_size", 1), ("epochs", 1), ("steps_per_epoch", 1),
                         ("lr_patience", 1), ("early_stopping", 0), ("unet_kernel", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise CareError(f"{name}: must be an integer >= {lo}, got {v!r}")
        if isinstance(self.init_weights, os.PathLike):
            set_("init_weights", os.fspath(self.init_weights))
        if not isinstance(self.init_weights, str):
            raise CareError(f"init_weights: must be a model folder's path (or empty), "
                            f"got {self.init_weights!r}")
        if self.unet_kernel and self.unet_kernel % 2 == 0:
            raise CareError(f"unet_kernel: must be odd, got {self.unet_kernel}")
        if self.kind not in KINDS:
            raise CareError(f"kind: must be one of {tuple(KINDS)}, got {self.kind!r}")
        if self.loss not in LOSSES:
            raise CareError(f"loss: must be one of {LOSSES}, got {self.loss!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise CareError(f"lr_schedule: must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise CareError(f"optimizer: must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0 <= self.warmup < 1:
            raise CareError(f"warmup: must be in [0, 1), got {self.warmup!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise CareError(f"weight_decay: must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.time_limit, (int, float)) and self.time_limit >= 0):
            raise CareError(f"time_limit: must be a number of seconds >= 0, got {self.time_limit!r}")
        if self.precision not in PRECISIONS:
            raise CareError(f"precision: must be one of {PRECISIONS}, got {self.precision!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise CareError(f"learning_rate: must be in (0, 1), got {self.learning_rate!r}")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100 or len(self.percentiles) != 2:
            raise CareError(f"percentiles: need 0 <= low < high <= 100, got {self.percentiles}")
        if self.input_normalization not in INPUT_NORMALIZATIONS:
            raise CareError(f"input_normalization: must be one of {INPUT_NORMALIZATIONS}, got {self.input_normalization!r}")
        if self.probabilistic != (self.loss == "laplace"):
            raise CareError(f"probabilistic and loss: a probabilistic model trains with loss 'laplace' and only it "
                            f"(got probabilistic={self.probabilistic}, loss={self.loss!r})")
        if self.residual and self.n_channel_in != self.n_channel_out:
            raise CareError(f"residual and n_channel_in/n_channel_out: a residual model needs as many output as input "
                            f"channels (got {self.n_channel_in} -> {self.n_channel_out}); set residual=False")
        if self.residual_sigma != "auto" and not (isinstance(self.residual_sigma, (int, float))
                                                 and not isinstance(self.residual_sigma, bool)
                                                 and 0 <= self.residual_sigma <= MAX_RESIDUAL_SIGMA):
            raise CareError(f"residual_sigma: must be 'auto' or a number of pixels in [0, {MAX_RESIDUAL_SIGMA}], "
                            f"got {self.residual_sigma!r}")
        if self.residual_sigma and not self.residual:
            raise CareError(f"residual_sigma and residual: a smoothed input ({self.residual_sigma!r}) is the base "
                            "of a residual model; set residual=True or residual_sigma=0")
        if self.output_sigma != "auto" and not (isinstance(self.output_sigma, (int, float))
                                                and not isinstance(self.output_sigma, bool)
                                                and 0 <= self.output_sigma <= MAX_OUTPUT_SIGMA):
            raise CareError(f"output_sigma: must be 'auto' or a number of pixels in [0, {MAX_OUTPUT_SIGMA}], "
                            f"got {self.output_sigma!r}")
        if self.residual_affine and not self.residual:
            raise CareError(f"residual_affine and residual: a gain and offset ({self.residual_affine!r}) apply to the base "
                            "of a residual model; set residual=True or residual_affine=()")
        if self.residual_affine and (len(self.residual_affine) != self.n_channel_in
                                     or not np.all(np.isfinite(self.residual_affine))):
            raise CareError(f"residual_affine: one finite (gain, offset) pair per input channel ({self.n_channel_in}), "
                            f"got {self.residual_affine!r}")
        if len(self.patch_size) != len(axes):
            raise CareError(f"patch_size and axes: {len(self.patch_size)} sizes {self.patch_size} for axes {axes!r}")
        div = 2**self.unet_depth
        bad = [p for p in self.patch_size if p % div]
        if bad:
            raise CareError(f"patch_size and unet_depth: each patch side must be divisible by 2**unet_depth = {div}, "
                            f"got {self.patch_size}")
        if self.precision == "mixed_bfloat16" and not bfloat16_fits(self.patch_size, self.unet_depth):
            raise CareError(f"patch_size and precision: 3D bfloat16 training needs patch sides of at least "
                            f"{2 * div} (2**(unet_depth+1)), got {self.patch_size}; enlarge the patch or use float32")
        if self.interpolation not in ("nearest", "linear", "cubic"):
            raise CareError(f"interpolation: must be nearest, linear or cubic, got {self.interpolation!r}")
        kind = model_class(self.kind)
        if self.output_sigma and not kind.smooths_output:
            raise CareError(f"output_sigma: {self.kind} models do not smooth their output (got {self.output_sigma!r}); "
                            "set output_sigma=0")
        kind.check_config(self)
        if self.version != CONFIG_VERSION:
            raise CareError(f"version: configuration version {self.version} is not {CONFIG_VERSION}; use upgrade()")

    @property
    def ndim(self):
        return len(self.axes)

    @property
    def kernel(self):
        return self.unet_kernel or (5 if self.ndim == 2 else 3)

    @property
    def divisor(self):
        return 2**self.unet_depth

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        d["percentiles"] = list(self.percentiles)
        if self.residual_affine:   # left out when empty: older carecore reads such a configuration too
            d["residual_affine"] = [list(p) for p in self.residual_affine]
        else:
            del d["residual_affine"]
        if not self.init_weights:   # likewise
            del d["init_weights"]
        return d

    @classmethod
    def from_dict(cls, d):
        """Build from a dict, rejecting unknown keys (after :func:`upgrade`)."""
        d = upgrade(dict(d))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CareError(f"unknown configuration field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def describe(cls):
        """``{field: one-line doc}``."""
        return {f.name: f.metadata.get("doc", "") for f in fields(cls)}


def upgrade(d):
    """Bring a saved configuration dict to :data:`CONFIG_VERSION` (the hook for future formats)."""
    v = d.get("version", CONFIG_VERSION)
    if v > CONFIG_VERSION:
        raise CareError(f"version: this configuration was written by a newer carecore (format {v} > {CONFIG_VERSION}); upgrade carecore")
    if "lr_schedule" not in d:  # saved before schedules existed: trained with Adam and plateau halving
        d.setdefault("lr_schedule", "plateau")
        d.setdefault("optimizer", "adam")
    # saved before prediction could scale by the training inputs: each image by its own percentiles
    d.setdefault("input_normalization", "image")
    return d


#: Training budgets up to this many seconds get :data:`FAST_RECIPE`, measured on the 2-core CI machine with
#: the demo's simulated nuclei (README "Training for a time budget"): 16 filters, 16x32x32 patches, peak rate
#: 3e-3 reached SSIM 0.83 in 150 s with batches of 8 (0.81 with 16; at 60 s 0.58 and 0.48), where CSBDeep's
#: network size with its patches reached 0.69. The peak rate is now 1e-3, reached over the first 15 % of the
#: budget (benchmarks/quality-per-minute.md, its first section): on the BPAE nuclei at 5 photons, where 3e-3
#: with a 5 % warm-up tied the best filter at most, it beat it in 3 of 4 runs, by 0.002-0.005 SSIM (the fourth
#: tied in SSIM and lost in NRMSE); the other cases lost a little of their margins.
FAST_RECIPE_UP_TO = 1800
FAST_RECIPE = {"unet_filters": 16, "batch_size": 8, "learning_rate": 1e-3, "warmup": 0.15, "epochs": 10}  # epochs: validations
FAST_RECIPE_PATCH = {2: (64, 64), 3: (16, 32, 32)}
#: What 3D denoising budgets computed in float32 (where bfloat16 is not faster) take instead: half as thick patches,
#: half as many a batch. Training such a network in float32 on 2 AVX2 cores, a batch of 8 patches of 16x32x32
#: took 1.27 s a step, and 4 patches of 8x32x32 0.25 s (a working set that fits the caches: 1.3 times the
#: voxels a second, 5 times the steps); the 3D demo's test volume after 180 s went from SSIM / NRMSE 0.395 /
#: 0.0563 (79 steps) to 0.679 / 0.0447 (512 steps), past the tuned TV's 0.585 / 0.0482
#: (benchmarks/quality-per-minute.md, "Smaller 3D batches in float32"). Where 3D trains in bfloat16 the recipe
#: above is kept (measured there). And 8 filters, not 16 (2026-12-02, same CPU, the app's default
#: probabilistic run, 180 s, seed 0): a step took half the time (715 steps, not 351) and the 3D demo's test
#: volume went from 0.458 / 0.0564 (below TV) to 0.734 / 0.0388; the network escapes a plateau at the filter's
#: answer after ~200-300 steps whatever its width, and only the steps a budget holds decide whether it does
#: (benchmarks/quality-per-minute.md, "8 filters for short 3D budgets in float32"). The embryo at 10 photons
#: loses SSIM with it (0.741 against 0.776-0.790 with 16 filters): the narrower network is for budgets short
#: in steps only (up to :data:`FEW_STEPS_UP_TO` seconds); longer float32 budgets keep 16 filters (not measured
#: either way: where steps are plenty, width is what the embryo asked for). All of the above was measured with
#: TensorFlow's own kernels; since ``import carecore`` turns oneDNN on (2026-12-02, same kind of CPU), a step
#: of 8 filters takes 0.046 s, not 0.17, and 180 s hold ~2700 steps. With that many, batches of 2 patches of
#: 16x32x32 (the same voxels a step) won on both cases (plain recipe, seed 0, test SSIM / NRMSE): the 3D demo
#: 0.704 / 0.0354 -> 0.938 / 0.0316, the embryo 0.861 / 0.0339 -> 0.876 / 0.0286 (NLM 0.800, TV 0.0442); 16
#: filters, thin or thick, did less in the same time (thin: 0.777 / 0.0341 and 0.867 / 0.0306; thick: the
#: embryo 0.850 / 0.0303). benchmarks/quality-per-minute.md, "oneDNN where TensorFlow leaves it off".
FAST_RECIPE_3D_FLOAT32 = {"patch_size": (16, 32, 32), "batch_size": 2}
FEW_STEPS_UP_TO = 300
FAST_RECIPE_3D_FLOAT32_FEW_STEPS = {"unet_filters": 8}
#: What 2D denoising budgets take on a machine without bfloat16 hardware (2D networks train in float32
#: everywhere; where the CPU has bfloat16 the recipe above was measured and is kept). On 2 AVX2 cores,
#: 180 s, seed 0, batches of 8 -> 4: the BPAE actin at 5 photons SSIM / NRMSE 0.200 / 0.0769 (765 steps,
#: below the tuned filters' 0.504 / 0.0582) -> 0.768 / 0.0439 (1737 steps); the 2D demo 0.709 / 0.0461
#: -> 0.711 / 0.0458 (past the filter after 34 s -> 20 s).
FAST_RECIPE_2D_NO_BFLOAT16 = {"batch_size": 4}


def with_channels_of(config, patches):
    """``config`` for the channel counts of ``patches`` (their last axis): ``n_channel_in``/``n_channel_out``
    taken from them; a smoothed residual base needs as many channels out as in, so with others the
    network is a plain one. Unchanged when they agree (a configuration from a patch set's own images)."""
    n_in, n_out = int(patches.X.shape[-1]), int(patches.Y.shape[-1])
    if (n_in, n_out) == (config.n_channel_in, config.n_channel_out):
        return config
    same = n_in == n_out
    return config.replace(n_channel_in=n_in, n_channel_out=n_out, residual=config.residual and same,
                          residual_sigma=config.residual_sigma if same else 0.0, residual_affine=())


def care_config(axes="ZYX", *, quick=False, members=1, **overrides):
    """The common case in one line: CSBDeep-comparable defaults for ``axes``, or tiny ``quick`` sizes.

    With a ``time_limit`` of up to 30 minutes the network and batches are sized for it
    (:data:`FAST_RECIPE`: a smaller, faster network that learns more in a short budget; a 3D
    denoising network computed in float32 takes :data:`FAST_RECIPE_3D_FLOAT32`'s batches of 2, and up to
    :data:`FEW_STEPS_UP_TO` seconds 8 filters, a 2D one
    on a machine without bfloat16 hardware :data:`FAST_RECIPE_2D_NO_BFLOAT16`'s). The
    precision is chosen for this machine (:func:`~carecore.models.precision.default_precision`:
    mixed bfloat16 for 3D networks where a training step is faster in it, else float32). Any value
    given explicitly wins; with ``init_weights`` (a fine-tune) the network's size is that of the model it
    starts from unless given. ``members``: the budget is an ensemble's, whose members share it equally
    (:func:`~carecore.uncertainty.train_ensemble`), so the recipe is chosen for one member's share
    (``time_limit`` stays the whole budget).

    Examples
    --------
    >>> care_config("YX").patch_size
    (128, 128)
    >>> care_config("ZYX", probabilistic=True).loss
    'laplace'
    """
    axes = axes.upper()
    base = {"axes": axes, "patch_size": (16, 64, 64) if len(axes) == 3 else (128, 128)}
    overrides = with_source_size(overrides)   # a fine-tune: the network is the source's size unless given
    if isinstance(overrides.get("time_limit"), str):
        from .care import parse_duration

        overrides["time_limit"] = parse_duration(overrides["time_limit"])
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise CareError(f"members: the number of ensemble members sharing the budget, >= 1; got {members!r}")
    limit = (overrides.get("time_limit") or 0) / members   # what one network trains for
    if overrides.get("precision") is None:   # None: chosen for the machine, as when not given
        overrides.pop("precision", None)
    depth = overrides.get("unet_depth", 2)
    precision = overrides.get("precision") or default_precision(len(axes))
    if precision == "mixed_bfloat16" and "precision" not in overrides \
            and not bfloat16_fits(overrides.get("patch_size", FAST_RECIPE_PATCH[len(axes)]), depth):
        precision = "float32"   # as below: patches too thin for a bfloat16 network of this depth
    if 0 < limit <= FAST_RECIPE_UP_TO:
        base.update(FAST_RECIPE, patch_size=FAST_RECIPE_PATCH[len(axes)])
        denoising = overrides.get("kind", "care") == "care"
        if denoising and overrides.get("residual", True) \
                and overrides.get("n_channel_in", 1) == overrides.get("n_channel_out", overrides.get("n_channel_in", 1)):
            base["residual_sigma"] = "auto"   # denoising starts at a tuned Gaussian filter's answer
        if denoising:
            base["output_sigma"] = "auto"   # and its output is smoothed where the validation patches ask for it
        fp32_patch = FAST_RECIPE_3D_FLOAT32["patch_size"]
        if denoising and len(axes) == 3 and precision == "float32" and not any(p % 2 ** depth for p in fp32_patch):
            base.update(FAST_RECIPE_3D_FLOAT32)   # smaller batches, whose working set the CPU's caches hold
            if limit <= FEW_STEPS_UP_TO:
                base.update(FAST_RECIPE_3D_FLOAT32_FEW_STEPS)   # and a narrower network: twice the steps
        if denoising and len(axes) == 2 and not precision_rules.bfloat16_hardware():
            base.update(FAST_RECIPE_2D_NO_BFLOAT16)   # more, smaller steps where each is slow
    if quick:
        base.update(patch_size=(8, 32, 32) if len(axes) == 3 else (32, 32), unet_filters=8, batch_size=4,
                    epochs=2, steps_per_epoch=10)
    if overrides.get("kind") == "isotropic":
        # the degraded axis comes first in every training pair (as Z in an axial slice): rotations would move it
        # (IsotropicCARE.default_config and `carecore train --task isotropic` likewise); augment=True still wins
        base["augment"] = False
    if overrides.get("probabilistic") and "loss" not in overrides:
        base["loss"] = "laplace"
    if overrides.get("n_channel_in", 1) != overrides.get("n_channel_out", overrides.get("n_channel_in", 1)) \
            and "residual" not in overrides:
        base["residual"] = False
    base.update(overrides)
    if "precision" not in overrides:   # bfloat16 where the hardware computes in it and the patches allow it
        fits = bfloat16_fits(base["patch_size"], base.get("unet_depth", 2))
        base["precision"] = precision if fits else "float32"
    return CareConfig(**base)

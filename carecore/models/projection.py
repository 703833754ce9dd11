"""Joint surface projection and denoising: 3D stack in, 2D image out (CARE-NOTES §1, the fly wing).

The network has two parts, trained jointly with the loss on the 2D target only:

1. **Projection sub-network** — a small 3D encoder-decoder on the ZYX input whose poolings act in Y
   and X only (never in Z), ending in one score per voxel. A softmax over Z turns the scores into
   weights that sum to 1 along every (y, x) column, and the weighted sum over Z of the input and of
   the sub-network's full-resolution features gives a YX image of ``C + f`` channels (``f``: the
   sub-network's first-level filters). The network thus learns where the surface lies and how many
   slices around it to average.
2. **2D U-Net** — :func:`~carecore.models.unet.build_unet` with a 2D configuration derived from the
   model's (:func:`unet2d_config`), mapping the projected channels to the restored projection.

Z is taken whole: nothing pools along Z, so the network accepts stacks of any depth, and prediction
tiles only Y and X (:meth:`ProjectionCARE.tile_plan`), with halos covering both parts' receptive
fields, so that tiled prediction equals untiled prediction. Training patches are ``(Z, Y, X)`` from
the stacks and ``(Y, X)`` from the projections; :meth:`ProjectionCARE.make_patches` takes Z whole
(the stacks' depth; see there).

Examples
--------
>>> config = ProjectionCARE.default_config("ZYX", time_limit=60)                          # doctest: +SKIP
>>> patches = ProjectionCARE.make_patches(config, find_pairs("stacks", "projections"))     # doctest: +SKIP
>>> model = ProjectionCARE(config, "models/wing"); model.train(patches)                    # doctest: +SKIP
>>> surface = model.predict(stack, axes="ZYX")          # (Y, X) float32                  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from ..axes import check_axes, spatial_axes
from ..errors import CareError
from ..prediction.frames import frame_by_frame
from ..progress import check_stop, counting, report
from .care import CARE, DEFAULT_PREDICT_BUDGET, finite_tile

#: What :meth:`ProjectionCARE.default_config` starts from (any value given explicitly wins): a small,
#: fast network for budgets of minutes on a CPU. Z of the patch is nominal: patches take Z whole.
#: Its rate and warm-up are the ones it was measured with (the denoising fast recipe's first ones).
DEFAULT_PROJECTION = {"unet_filters": 16, "unet_kernel": 3, "batch_size": 8, "learning_rate": 3e-3,
                      "warmup": 0.05, "patch_size": (16, 32, 32), "epochs": 10}


#: The window (Z, Y, X) over which the input is averaged for the score's intensity prior, and the
#: prior's initial weight (on percentile-normalized input; trained with the rest).
PRIOR_WINDOW = (3, 5, 5)
PRIOR_WEIGHT = 4.0


def projection_filters(config):
    """Filters in the first level of the projection sub-network (half the U-Net's, at least 4)."""
    return max(4, config.unet_filters // 2)


def unet2d_config(config):
    """The 2D configuration of the U-Net that follows the projection (same depth, filters, precision,
    head and loss as ``config``; its input is the ``n_channel_in + projection_filters`` projected
    channels; not residual)."""
    from .config import CareConfig

    return CareConfig(axes="YX", n_channel_in=config.n_channel_in + projection_filters(config),
                      n_channel_out=config.n_channel_out, unet_depth=config.unet_depth,
                      unet_filters=config.unet_filters, unet_kernel=config.unet_kernel,
                      unet_n_conv=config.unet_n_conv, residual=False, probabilistic=config.probabilistic,
                      loss=config.loss, precision=config.precision, patch_size=tuple(config.patch_size[1:]),
                      seed=config.seed)


def projection_radius(config):
    """Half-width in Y and X (pixels) of the projection sub-network's receptive field: one
    convolution per level down, two at the bottom, one per level up, plus the pooling offsets (the
    intensity prior's window is smaller)."""
    r = config.kernel // 2
    depth = config.unet_depth
    total = sum(2 * r * 2**level + 2**level for level in range(depth))  # a conv down and up, pool/upsample
    return max(total + 2 * r * 2**depth, PRIOR_WINDOW[1] // 2, PRIOR_WINDOW[2] // 2)


def build_projection_net(config, *, name="projection_care"):
    """The Keras model (batch, Z, Y, X, C_in) -> (batch, Y, X, C_out [× 2 if probabilistic]).

    See the module docstring. Pooling and upsampling act on Y and X only, so any Z is accepted; Y and
    X must be multiples of ``config.divisor``. The softmax over Z and the weighted sum are computed in
    float32 whatever the precision of the convolutions.
    """
    import keras
    from keras import layers

    from .unet import Bias, build_unet

    c = config
    dtype = c.precision
    k = c.kernel
    f = projection_filters(c)
    depth = c.unet_depth

    def conv(x, n, nm):
        x = layers.Conv3D(n, k, padding="same", use_bias=False, dtype=dtype, name=nm)(x)
        x = Bias(dtype=dtype, name=f"{nm}_bias")(x)
        return layers.Activation("relu", dtype=dtype, name=f"{nm}_relu")(x)

    inp = keras.Input((None, None, None, c.n_channel_in), name="input")
    x = conv(inp, f, "proj_down0")
    skips = [x]
    for level in range(1, depth + 1):
        x = layers.MaxPooling3D((1, 2, 2), dtype=dtype, name=f"proj_pool{level}")(x)
        x = conv(x, f * 2 ** min(level, 2), f"proj_down{level}")
        skips.append(x)
    x = conv(x, f * 2 ** min(depth, 2), "proj_middle")
    for level in reversed(range(depth)):
        x = layers.UpSampling3D((1, 2, 2), dtype=dtype, name=f"proj_up{level}")(x)
        x = layers.Concatenate(dtype=dtype, name=f"proj_concat{level}")([x, skips[level]])
        x = conv(x, f, f"proj_up{level}_conv")
    # the score: learned from the features (zero at first) plus a learned multiple of the locally
    # averaged input (PRIOR_WEIGHT at first), so that training starts from a soft "brightest band"
    # projection and learns the surface from there rather than from a uniform average over Z
    score = layers.Conv3D(1, 1, dtype="float32", kernel_initializer="zeros", name="proj_score")(x)
    smooth = layers.AveragePooling3D(PRIOR_WINDOW, strides=1, padding="same", dtype="float32",
                                     name="proj_prior_mean")(inp)
    prior = layers.Conv3D(1, 1, use_bias=False, dtype="float32", name="proj_prior",
                          kernel_initializer=keras.initializers.Constant(PRIOR_WEIGHT / c.n_channel_in))(smooth)
    score = layers.Add(dtype="float32", name="proj_score_sum")([score, prior])
    values = layers.Concatenate(dtype="float32", name="proj_values")([inp, x])
    projected = softmax_projection_layer()(name="proj_softmax_sum")([score, values])
    unet = build_unet(unet2d_config(c), name="unet2d")
    return keras.Model(inp, unet(projected), name=name)


_SOFTMAX_PROJECTION = []


def softmax_projection_layer():
    """The Keras layer class ``SoftmaxProjection`` (made on first use, so that importing this module, as
    validating a configuration does, does not load Keras)."""
    if _SOFTMAX_PROJECTION:
        return _SOFTMAX_PROJECTION[0]
    import keras
    from keras import ops

    class SoftmaxProjection(keras.layers.Layer):
        """``sum_z softmax_z(score) · values``: (B, Z, Y, X, 1) scores and (B, Z, Y, X, C) values ->
        (B, Y, X, C), in float32."""

        def __init__(self, **kwargs):
            kwargs.setdefault("dtype", "float32")
            super().__init__(**kwargs)

        def call(self, inputs):
            score, values = inputs
            w = ops.softmax(ops.cast(score, "float32"), axis=1)
            return ops.sum(w * ops.cast(values, "float32"), axis=1)

        def compute_output_shape(self, input_shape):
            s = input_shape[1]
            return (s[0],) + tuple(s[2:])

    _SOFTMAX_PROJECTION.append(SoftmaxProjection)
    return SoftmaxProjection


class ProjectionCARE(CARE):
    """A :class:`CARE` that restores a 2D surface projection (``YX``) from a 3D stack (``ZYX``).

    ``config.axes`` is ``"ZYX"`` (the input); the output has the input's axes without Z. See the
    module docstring for the network.
    """

    smooths_output = False

    @classmethod
    def check_config(cls, config):
        if config.axes != "ZYX":
            raise CareError(f"kind and axes: projection models take ZYX stacks (axes 'ZYX'), got {config.axes!r}")
        if config.residual:
            raise CareError("residual: a projection model's output (YX) is not on its input's grid (ZYX); "
                            "set residual=False (model_class('projection').default_config('ZYX', ...) sets it)")

    @classmethod
    def default_config(cls, axes="ZYX", **overrides):
        """A small, fast configuration (:data:`DEFAULT_PROJECTION`) for stacks of ``axes`` (ZYX, with C
        for channels); ``overrides`` win."""
        from .config import care_config

        if spatial_axes(check_axes(axes, name="projection axes")) != "ZYX":
            raise CareError(f"projection works on ZYX stacks, got axes {axes!r}")
        from .init_weights import with_source_size

        base = dict(DEFAULT_PROJECTION, residual=False, kind="projection")
        return care_config("ZYX", **{**base, **with_source_size(overrides)})   # a fine-tune's source size first

    @classmethod
    def make_patches(cls, config, sources, *, axes=None, n_patches_per_image=64, progress=None, stop=None,
                     fields=None, shared_boxes=False, **options):
        """Training patches: ``(Z, Y, X)`` from the stacks, ``(Y, X)`` from their projections.

        Z is taken whole: the patches span ``min(stack depths)`` slices (all of each stack when the
        stacks have the same depth; ``config.patch_size[0]`` is not used), Y and X are
        ``config.patch_size[1:]``.

        Parameters
        ----------
        config : CareConfig
        sources : PairListing, list of Pair, or list of (stack, projection)
            Pairs of a low-quality ZYX stack and its high-quality YX projection.
        axes : str, optional
            Axes of the stacks (default: from the files); the projections' axes come from their files
            (or are the stacks' without Z for arrays).
        n_patches_per_image : int
        fields, shared_boxes : optional
            Which stacks show one field of view (see :func:`~carecore.create_patches`).
        """
        from ..data.pairs import Pair, PairListing
        from ..data.patches import _resolve, create_patches

        if options:
            raise CareError(f"kind 'projection' takes no options {sorted(options)}")
        if sources is None:
            raise CareError("kind 'projection' trains on pairs: give low-quality ZYX stacks and their YX projections")
        if isinstance(sources, PairListing):
            sources = sources.pairs
        axes_high = None
        if axes is not None:
            a = check_axes(axes, name="projection axes")
            axes_high = a.replace("Z", "")
        resolved = []
        for s in list(sources):
            # files: the projection's axes are read from its file; arrays: the stack's without Z
            low, high = _resolve(s, axes, None if isinstance(s, Pair) else axes_high)
            if spatial_axes(low.axes) != "ZYX" or spatial_axes(high.axes) != "YX":
                raise CareError(f"{low.name} -> {high.name}: a projection pair is a ZYX stack and a YX image, got "
                                f"axes {low.axes} (shape {tuple(low.shape)}) -> {high.axes} (shape {tuple(high.shape)})")
            resolved.append((low, high))
        if not resolved:
            raise CareError("no training pairs given")
        nz = min(lo.shape[lo.axes.index("Z")] for lo, _ in resolved)
        patch = (nz,) + tuple(config.patch_size[1:])
        ps = create_patches(resolved, patch, n_patches_per_image=n_patches_per_image,
                            percentiles=config.percentiles, seed=config.seed, progress=progress, stop=stop,
                            fields=fields, shared_boxes=shared_boxes)
        ps.meta["projection"] = {"z": nz, "note": "patches take Z whole (the smallest stack depth)"}
        return ps

    def _build(self):
        return build_projection_net(self.config)

    def _check_patches(self, X, Y, what):
        c = self.config
        if X.ndim != 5 or X.shape[-1] != c.n_channel_in:
            raise CareError(f"{what}: input patches of shape {tuple(X.shape)} do not fit a projection model with "
                            f"{c.n_channel_in} input channel(s) (expected (N, Z, Y, X, {c.n_channel_in}))")
        if Y.ndim != 4 or tuple(Y.shape[1:3]) != tuple(X.shape[2:4]) or Y.shape[-1] != c.n_channel_out \
                or len(Y) != len(X):
            raise CareError(f"{what}: target patches of shape {tuple(Y.shape)} do not match inputs {tuple(X.shape)}: "
                            f"a projection model needs (N, Y, X, {c.n_channel_out}) targets with the inputs' N, Y "
                            "and X")
        bad = [s for s in X.shape[2:4] if s % c.divisor]
        if bad:
            raise CareError(f"{what}: patch sides Y, X {tuple(X.shape[2:4])} must be divisible by {c.divisor} "
                            "(2**unet_depth)")

    # -- grids -------------------------------------------------------------------------------
    def output_axes(self, axes):
        """Axes of the output for an input with ``axes``: the same without Z."""
        return axes.replace("Z", "")

    def on_output_grid(self, image, *, axes):
        """The maximum-intensity projection along Z of ``image`` (the plain "input" a projection is
        compared with), axes ``axes`` without Z."""
        return np.asarray(np.max(np.asarray(image, np.float32), axis=axes.index("Z")), np.float32)

    def grid_starts(self):
        """The maximum projection and the surface-following projections of
        :data:`carecore.baselines.SURFACE_GRID` (a tuning picks among them: :meth:`carecore.CARE.grid_starts`)."""
        import functools

        from ..baselines import SURFACE_GRID, max_projection, surface_projection

        starts = {"maximum projection": max_projection}
        for p in SURFACE_GRID:
            label = ", ".join(f"{k}={v:g}" for k, v in p.items())
            starts[f"surface projection ({label})"] = functools.partial(surface_projection, **p)
        return starts

    def patch_grid_starts(self, X):
        """The stack patches (batch, Z, Y, X, channel) projected as :meth:`grid_starts` projects a stack."""
        X = np.asarray(X, np.float32)
        return {label: np.stack([np.stack([fn(p[..., c], axes="ZYX") for c in range(p.shape[-1])], -1) for p in X])
                for label, fn in self.grid_starts().items()}

    def patches_on_output_grid(self, X):
        """The maximum-intensity projection of stack patches (batch, Z, Y, X, channel): the validation
        line is the best tuned filter applied to it."""
        return np.max(np.asarray(X, np.float32), axis=1)

    @property
    def trained_depth(self):
        """The number of Z slices the training patches had (Z is taken whole: the smallest training stack's
        depth), from the run card; None for models trained before it was recorded."""
        z = ((self.run_card or {}).get("projection") or {}).get("z")
        return int(z) if z else None

    def check_depth(self, nz, *, name="image"):
        """Warn when a stack of ``nz`` slices is not as deep as the training stacks: the network learned
        where the surface lies among that many slices, and on another depth its projection is unreliable."""
        trained = self.trained_depth
        if trained and nz != trained:
            from ..errors import warn

            warn(f"{name}: {nz} Z slices, but this projection model was trained on stacks of {trained} slices "
                 "(patches take Z whole): on another depth the surface it finds is unreliable; restore stacks "
                 f"of {trained} slices (crop or pad Z around the surface), or train on stacks of this depth",
                 stacklevel=3)
            return False
        return True

    def _run_card(self, info, data_hash, status, message, seconds):
        """The depth of the training stacks recorded (``projection: {"z": nz}``): prediction warns on others."""
        card = super()._run_card(info, data_hash, status, message, seconds)
        if (info.get("projection") or {}).get("z"):
            card["projection"] = {"z": int(info["projection"]["z"])}
        return card

    def output_spacing(self, spacing):
        """The input's voxel size without Z."""
        return {a: v for a, v in dict(spacing or {}).items() if a != "Z"}

    def _halo(self):
        from .unet import receptive_radius

        return projection_radius(self.config) + receptive_radius(unet2d_config(self.config))

    def _stages(self):
        return None

    def _bytes_per_pixel(self, nz):
        """Estimated peak memory per YX pixel of a tile for a stack of ``nz`` slices: the 3D part's
        feature maps (about 6 first-level maps per voxel, float32 values and scores) and the 2D U-Net's."""
        item = 2 if self.config.precision == "mixed_bfloat16" else 4
        f = projection_filters(self.config)
        per_voxel = 6 * f * item + 4 * (self.config.n_channel_in + f + 2)
        return int(nz * per_voxel + 7 * self.config.unet_filters * item + 32)

    def tile_plan(self, shape, n_tiles="auto", *, memory_budget=DEFAULT_PREDICT_BUDGET, stage_tiles=None):
        """How :meth:`predict` cuts a stack of spatial shape ``(Z, Y, X)``: tiles in Y and X only (Z whole).

        ``n_tiles``: ``"auto"`` (the least work within ``memory_budget``), ``(ny, nx)`` or ``(1, ny, nx)``.
        Returns a :class:`~carecore.prediction.tiling.TilePlan` over ``(Y, X)``.
        """
        from ..prediction.tiling import auto_tiles, plan_tiles

        if stage_tiles is not None:
            raise CareError("ProjectionCARE cannot predict in stages; leave stage_tiles unset")
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise CareError(f"tile_plan: give the stack's spatial shape (Z, Y, X), got {shape}")
        nz, yx = shape[0], shape[1:]
        kw = dict(halo=self._halo(), divisor=self.config.divisor)
        if isinstance(n_tiles, str):
            if n_tiles != "auto":
                raise CareError(f"n_tiles must be 'auto' or a tuple of ints, got {n_tiles!r}")
            n_tiles = auto_tiles(yx, bytes_per_voxel=self._bytes_per_pixel(nz), budget=memory_budget, **kw)
        else:
            n_tiles = tuple(int(n) for n in n_tiles)
            if len(n_tiles) == 3:
                if n_tiles[0] != 1:
                    raise CareError(f"tiles {n_tiles}: a projection model takes Z whole; give 1 tile along Z "
                                    "(or two counts, for Y and X)")
                n_tiles = n_tiles[1:]
            if len(n_tiles) != 2:
                raise CareError(f"tiles {n_tiles}: give counts for Y and X (or Z, Y, X with 1 for Z)")
        return plan_tiles(yx, n_tiles, **kw)

    # -- prediction --------------------------------------------------------------------------
    @frame_by_frame
    def predict(self, image, *, axes, n_tiles="auto", memory_budget=DEFAULT_PREDICT_BUDGET, batch_size=None,
                stage_tiles=None, normalization=None, tta=False, output_sigma=None, progress=None, stop=None,
                out=None, name="image"):
        """Project and restore a stack; probabilistic models return ``(mean, scale)``.

        Parameters
        ----------
        image : array_like (may be a memory map)
            The stack, spatial axes ``ZYX`` (optionally with ``C``; with ``T`` or ``S`` each frame is
            projected and restored on its own, :func:`~carecore.prediction.frames.frame_by_frame`).
        axes : str
        n_tiles : "auto" or tuple of int
            Tiles along Y and X (``(ny, nx)``, or ``(1, ny, nx)``); Z is never cut.
        memory_budget : int
            Bytes of working memory allowed at once.
        batch_size : int, optional
            Tiles per network call (default: as many as fit the budget, at most 8).
        stage_tiles : None
            Not supported (staged prediction is for the plain U-Net).
        normalization : Normalization, "image" or "training", optional
            How the stack is scaled (:meth:`~carecore.CARE.input_normalization`; default: the model's
            configured ``input_normalization``, the training inputs' percentiles for a model trained here).
        tta : bool
            The mean over the stack's flips and 90° rotations in YX (see :meth:`CARE.predict`).
        output_sigma : None or 0
            Accepted so that every model kind's ``predict`` takes it; projection models never smooth their
            output, and any other value is an error.
        progress, stop : callables, optional
            ``progress(done, total, "tiles")`` after every batch of tiles; ``stop()`` polled likewise.
        out : array, optional
            Where to write the result (shape of the result: ``axes`` without Z).

        Returns
        -------
        numpy.ndarray (float32) with axes ``axes`` without Z (``C`` = output channels), mapped back to
        the input's intensity range when input and output channel counts agree; for probabilistic
        models the tuple ``(mean, scale)``.
        """
        from ..prediction.tiling import read_window
        from ..prediction.tta import mean_over_views, views

        self._check_output_sigma(output_sigma)   # only 0: this kind does not smooth
        x = image
        axes = self._check_input(x, axes, name)
        c = self.config
        square = self._tta_views(tta, name)
        norm = self.input_normalization(x, axes=axes, normalization=normalization, name=name)
        lo = np.asarray(norm.lo, np.float32)
        hi = np.asarray(norm.hi, np.float32)
        order = [axes.index(a) for a in "ZYX"] + ([axes.index("C")] if "C" in axes else [])
        xv = np.transpose(x, order) if "C" in axes else np.asarray(x)[..., None]   # (Z, Y, X, C), a view
        nz, ny, nx = xv.shape[:3]
        if min(ny, nx) < 1 or nz < 1:
            raise CareError(f"{name}: empty stack of shape {tuple(np.shape(x))} (axes {axes})")
        self.check_depth(nz, name=name)
        plan = self.tile_plan((nz, ny, nx), n_tiles, memory_budget=memory_budget, stage_tiles=stage_tiles)
        n_out = c.n_channel_out * (2 if c.probabilistic else 1)
        if out is None:
            res = np.empty((ny, nx, n_out), np.float32)
        else:
            want = (ny, nx, n_out)
            if tuple(out.shape) != want:
                raise CareError(f"out has shape {tuple(out.shape)}, expected {want} (Y, X, channels)")
            res = out
        tiles = plan.tiles
        tile_bytes = int(np.prod(plan.tile_shape)) * self._bytes_per_pixel(nz)
        bs = batch_size or int(max(1, min(8, memory_budget // max(tile_bytes, 1))))
        zall = slice(0, nz)

        def normalized(t):
            window = (zall,) + tuple(t.window)
            return (finite_tile(read_window(xv, window), name, "ZYX", window, (nz, ny, nx)) - lo) / (hi - lo)

        n_views = len(views(square)) if tta else 1
        unit = "tile views" if tta else "tiles"   # with tta, progress counts every view of every tile
        run_batch = counting(lambda v: np.asarray(self.keras_model.predict_on_batch(v), np.float32),
                             progress, len(tiles) * n_views, unit)
        report(progress, 0, len(tiles) * n_views, unit)
        for start in range(0, len(tiles), bs):
            check_stop(stop)
            group = tiles[start:start + bs]
            batch = np.stack([normalized(t) for t in group])   # (B, Z, Y, X, C) -> (B, Y, X, C)
            pred = (mean_over_views(run_batch, batch, square, n_mean=c.n_channel_out if c.probabilistic else None,
                                    scale_factor=self.tta_scale_factor, stop=stop) if tta else run_batch(batch))
            for t, p in zip(group, pred):
                res[t.core] = p[t.inner]
        if c.n_channel_in == c.n_channel_out:  # back to the input's intensity range
            res[..., : c.n_channel_out] *= hi - lo
            res[..., : c.n_channel_out] += lo
            if c.probabilistic:
                res[..., c.n_channel_out:] *= hi - lo
        out_axes = self.output_axes(axes)
        back = lambda r: np.moveaxis(r, -1, out_axes.index("C")) if "C" in out_axes else r[..., 0]  # noqa: E731
        if c.probabilistic:
            return back(res[..., : c.n_channel_out]), back(res[..., c.n_channel_out:])
        return back(res)

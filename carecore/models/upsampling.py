"""Upsampling CARE: interpolate Z by the axial factor, then the 3D network (CARE-NOTES §1).

Training pairs come from :func:`~carecore.simulate_anisotropic` (``axis="Z"``, interpolated back onto
the fine grid); prediction interpolates a coarse stack of ``n`` slices the same way, onto ``n × factor``
slices at positions ``0, 1/f, 2/f, ...`` of the coarse grid (the last ones held at the last coarse
slice, exactly as the training inputs were made), with the interpolation stored in the configuration
(``interpolation``: linear by default). So a coarse stack of 8 slices and factor 4 gives 32 slices,
on the grid of a ground truth of 32 slices.
"""
from __future__ import annotations

import numpy as np

from ..simulate.anisotropic import INTERPOLATION_ORDER, resample_axis
from ..errors import CareError
from .care import CARE


def interpolate_z(image, factor, axis, interpolation="linear"):
    """``image`` interpolated along ``axis`` onto ``round(n × factor)`` positions ``0, 1/f, 2/f, ...`` of
    its grid (the last ones held at the last slice), as the training inputs of the axial kinds were made."""
    x = np.asarray(image, np.float32)
    n_out = int(round(x.shape[axis] * factor))
    return resample_axis(x, np.arange(n_out) / factor, axis, order=INTERPOLATION_ORDER[interpolation])


def reproduces(x, factor, interpolation):
    """Whether ``x`` (Z first, further axes flattened: (n, -1)) is its every ``factor``-th slice (from any of
    the first ``factor``) interpolated so (:func:`coarse_phase_residuals`), up to the rounding of integer data
    (both ends rounded: twice 1/12 of a unit; acquired stacks leave 0.03 of their steps or more)."""
    rounding = 1 / 6 if np.array_equal(x, np.round(x)) else 0.0
    steps = (np.diff(x, axis=0) ** 2).mean()
    residual = coarse_phase_residuals(x, factor, interpolation).min()   # (a crop starts at any phase)
    return bool(residual < 0.1 * steps and residual < 1.5 * rounding + 1e-3 * steps)


def coarse_phase_residuals(x, factor, interpolation):
    """For each phase ``p < factor``: the mean squared difference between ``x`` (its first axis on a fine
    grid) and its slices ``p, p + factor, ...`` interpolated back along that axis (``interpolation``), over
    the slices between them and away from the ends (a spline through these slices alone differs there);
    the phase of an interpolated ``x``'s coarse slices gives next to nothing. ``factor`` an integer."""
    f = int(factor)
    out = []
    for p in range(f):
        coarse = x[p::f]
        known = (len(coarse) - 1) * f + 1   # (past the last coarse slice the interpolation holds it)
        again = interpolate_z(coarse, f, 0, interpolation)[:known] - x[p:p + known]
        inner = 2 * f if known > 6 * f else 0
        out.append(float((again[inner:known - inner] ** 2).mean()))
    return np.array(out)


#: A stack looks interpolated along Z when in most runs of ``floor(factor)`` slice steps the quietest step
#: (of first or second differences) carries less than this share of the busiest one's energy: exact
#: nearest-neighbour or linear interpolation leaves zeros between its coarse slices (rounded to integers at
#: a thousand photons: 0.003 or less), acquired stacks leave none, background margins included (their
#: steps are noise, about equal)
INTERPOLATED_SHARE = 0.01


def interpolated_along_z(stack, factor, interpolation="linear", *, box=96):
    """How ``stack`` (Z first; any further axes) looks interpolated along Z already, or None.

    Returns ``"nearest-neighbour"`` when slices repeat their neighbours, ``"linear"`` when they lie on
    the straight line between their neighbours (in most runs of ``floor(factor)`` slice steps one step is
    next to silent: :data:`INTERPOLATED_SHARE`), or ``"cubic"`` when, at an integer ``factor``, every
    ``factor``-th slice (from any of the first ``factor``) interpolated so gives the others back, up to the
    rounding of integer data (whatever the model's own ``interpolation``, which is no longer read). Read on a centred crop of at most ``box``
    pixels per further axis (a memory-mapped stack reads little); slices of one value (padding) are left
    out. None for stacks of fewer than ``2 × factor + 3`` slices: too few to tell.
    """
    n = int(np.shape(stack)[0])
    if n < 2 * factor + 3:
        return None
    crop = tuple(slice(max(0, (s - box) // 2), max(0, (s - box) // 2) + box) for s in np.shape(stack)[1:3])
    x = np.asarray(stack[(slice(None),) + crop], np.float64).reshape(n, -1)
    live = x.std(axis=1) > 0
    run = max(2, int(np.floor(factor)))
    for how, order in (("nearest-neighbour", 1), ("linear", 2)):
        energy = (np.diff(x, n=order, axis=0) ** 2).mean(axis=1)
        usable = np.convolve(~live, np.ones(order + 1), "valid") == 0   # (no slice of one value in the step)
        for offset in range(run):   # (runs from every slice: nearest-neighbour ties alternate their side)
            quiet = counted = 0
            for j in range(offset, len(energy) - run + 1, run):
                steps = energy[j:j + run]
                if usable[j:j + run].all() and steps.max() > 0:   # (a run of repeats, all silent, tells nothing)
                    counted += 1
                    quiet += steps.min() < INTERPOLATED_SHARE * steps.max()
            if counted >= 3 and quiet >= 0.5 * counted:   # (the tiny demo's 16 slices at factor 4: 3 runs)
                return how
    f = int(round(factor))
    kept = np.flatnonzero(live)
    if len(kept) and kept[-1] - kept[0] + 1 == len(kept):   # blank slices at the ends (none within) left out
        x = x[kept[0]:kept[-1] + 1]
    # a spline (cubic) whatever the model's own: a stack scaled in Z in Fiji (bicubic) given to a linear model
    # is interpolated twice too (a user trial: 416 slices from 104 without a word)
    if abs(factor - f) < 1e-6 and len(x) >= 2 * f + 3 and x.std(axis=1).min() > 0 and reproduces(x, f, "cubic"):
        return "cubic"
    return None


def interpolation_factor(stack, *, max_factor=8, box=64):
    """The integer factor by which ``stack`` (Z first; any further axes) was interpolated along Z, and how,
    as ``(factor, "linear" | "cubic")``, or None when no factor from 2 to ``max_factor`` fits (nor for
    nearest-neighbour interpolation):
    the largest one whose every ``factor``-th slice (from any of the first ``factor``), interpolated so,
    gives the other slices back (up to the rounding of integer data). Read on a centred crop of at most
    ``box`` pixels per further axis."""
    n = int(np.shape(stack)[0])
    crop = tuple(slice(max(0, (s - box) // 2), max(0, (s - box) // 2) + box) for s in np.shape(stack)[1:3])
    x = np.asarray(stack[(slice(None),) + crop], np.float64).reshape(n, -1)
    live = np.flatnonzero(x.std(axis=1) > 0)
    if not len(live):
        return None
    x = x[live[0]:live[-1] + 1]
    if len(x) < 2 or not (np.diff(x, axis=0) ** 2).mean() > 0:
        return None
    for f in range(int(max_factor), 1, -1):
        for how in ("linear", "cubic") if len(x) >= 2 * f + 3 else ():   # (nearest: ties to even make uneven runs)
            if reproduces(x, f, how):
                return f, how
    return None


def warn_if_interpolated(stack, factor, interpolation, *, axes, name="image"):
    """Warn, and return the message, when ``stack`` (``axes`` with Z, Y and X) looks interpolated along Z
    already (:func:`interpolated_along_z`): a model that interpolates Z by ``factor`` itself would
    interpolate it twice. None otherwise."""
    axes = axes.upper()
    order = [axes.index(a) for a in "ZYX"] + [i for i, a in enumerate(axes) if a not in "ZYX"]
    how = interpolated_along_z(np.transpose(stack, order), factor, interpolation)
    if how is None:
        return None
    from ..errors import warn

    n = int(np.shape(stack)[axes.index("Z")])
    what = ("most slices repeat their neighbour" if how == "nearest-neighbour" else
            "most slices lie on a straight line between their neighbours" if how == "linear" else
            f"every {int(round(factor))}th slice, interpolated ({how}), gives the others")
    message = (f"{name}: its {n} Z slices look interpolated already ({what}), but this model interpolates Z by "
               f"{float(factor):g} itself (onto {int(round(n * factor))} slices): the stack would be interpolated "
               f"twice and its restoration stretched {float(factor):g}× along Z. Restore the coarse stack as "
               "acquired (the training inputs are interpolated on purpose: the model makes that step for "
               "new stacks)")
    warn(message, stacklevel=3)
    return message


def interpolation_starts(X, factor, interpolation):
    """Patches interpolated along their first spatial axis by ``interpolation`` (batch, fine axis, ..., channel:
    an upsampling model's training inputs, an isotropic model's degraded slices), brought onto their grid
    three ways, as :meth:`UpsamplingCARE.grid_starts` brings a stack: ``{"nearest interpolation", "linear
    interpolation", "cubic interpolation": patches}``, the classical starts of the validation line.

    Each patch's coarse rows are found as the phase whose rows, interpolated so, give back the others (away
    from the patch's ends; of nearest-neighbour patches, the middles of the runs of repeated rows); the
    model's own interpolation is the patches themselves, and the others hold the rows past the patch's
    first and last coarse rows at them (the next coarse row lies outside the patch). At a factor that is not
    an integer, or for patches shorter than ``2 factor + 1`` along that axis, the patches alone.
    """
    X = np.asarray(X, np.float32)
    own = f"{interpolation} interpolation"
    f = int(round(factor))
    n = X.shape[1] if X.ndim >= 4 else 0
    if abs(factor - f) > 1e-6 or n < 2 * f + 1:
        return {own: X}
    order = INTERPOLATION_ORDER[interpolation]
    rows = np.arange(n)
    phases = []
    if order == 0:   # nearest-neighbour patches: a coarse row is the middle of its run of repeats
        for x in X:
            change = np.flatnonzero(np.any(np.diff(x.reshape(n, -1), axis=0) != 0, axis=1)) + 1
            middles = [(a + b - 1) // 2 for a, b in zip(change[:-1], change[1:])]   # runs inside the patch
            phases.append(int(np.bincount(np.mod(middles, f), minlength=f).argmax()) if middles else 0)
    for x in (X if order else ()):
        phases.append(int(coarse_phase_residuals(x, f, interpolation).argmin()))
    starts = {}
    for how in ("nearest", "linear", "cubic"):
        label = f"{how} interpolation"
        starts[label] = X if label == own else np.stack(
            [resample_axis(x[p::f], (rows - p) / f, 0, order=INTERPOLATION_ORDER[how]) for x, p in zip(X, phases)])
    return starts


def deconvolved_starts(starts, psf_sigma):
    """The cubic interpolation of :func:`interpolation_starts` deconvolved along the patches' fine axis
    (axis 1) with an axial PSF of ``psf_sigma`` pixels, as :meth:`UpsamplingCARE.grid_starts` deconvolves a
    stack (one scaling for all the patches, so that the validation line's one fit over all patches still
    holds); none without a PSF or a cubic interpolation."""
    from ..baselines import RL_START_ITERATIONS, deconvolve

    cubic = starts.get("cubic interpolation")
    if cubic is None or not float(psf_sigma or 0.0) > 0:
        return {}
    axes = "S" + "ZYX"[3 - (cubic.ndim - 2):] + "C"   # (batch, fine axis first, ..., channel): only axis 1 is blurred
    runs = deconvolve(cubic, {axes[1]: float(psf_sigma)}, axes=axes, iterations=RL_START_ITERATIONS)
    return {f"Richardson-Lucy along Z ({n} iterations) on cubic interpolation": runs[n] for n in RL_START_ITERATIONS}


class UpsamplingCARE(CARE):
    """A :class:`CARE` whose input stack is first interpolated along Z by ``config.upsampling_factor``."""

    @classmethod
    def check_config(cls, config):
        if config.axes != "ZYX":
            raise CareError("kind and axes: upsampling needs a 3D (ZYX) model")
        if not config.upsampling_factor > 1:
            raise CareError(f"upsampling_factor: must be > 1 for kind='upsampling', got {config.upsampling_factor}")

    def _check_input(self, x, axes, name):
        axes = super()._check_input(x, axes, name)
        warn_if_interpolated(x, self.config.upsampling_factor, self.config.interpolation, axes=axes, name=name)
        return axes

    @classmethod
    def make_patches(cls, config, sources, **kw):
        """Training patches as plain CARE makes them (the ``--low`` stacks interpolated onto the fine grid
        already), after a warning for a training input interpolated by another factor than the model's
        (:func:`interpolation_factor`, the first three pairs): trained so, the model would restore coarse
        stacks onto a wrong Z grid."""
        from ..data.pairs import load_pair
        from ..errors import warn

        pairs = list(getattr(sources, "pairs", sources) or [])[:3]
        f = float(config.upsampling_factor)
        for pair in pairs:
            try:
                low = load_pair(pair, axes=kw.get("axes"), mmap=True)[0] if hasattr(pair, "low") else None
            except (CareError, OSError, ValueError):
                continue   # (create_patches says what is wrong with it)
            if low is None or "Z" not in low.axes:
                continue
            order = [low.axes.index(a) for a in "ZYX" if a in low.axes] + \
                [i for i, a in enumerate(low.axes) if a not in "ZYX"]
            found = interpolation_factor(np.transpose(low.data, order))
            if found and abs(found[0] - f) > 1e-6:
                warn(f"{low.name}: this training input looks interpolated along Z by {found[0]} ({found[1]}: every "
                     f"{found[0]}th slice gives the others), but the model's factor is {f:g}: trained so, it restores "
                     f"coarse stacks onto a grid {f:g}× as fine in Z, not {found[0]}×, with the wrong Z voxel size; give "
                     f"the factor the inputs were interpolated by (--factor {found[0]})", stacklevel=2)
                break
        return super().make_patches(config, sources, **kw)

    def _preprocess(self, x, axes):
        """(Z, Y, X, C) coarse -> (round(Z × factor), Y, X, C), as the training inputs were made."""
        return interpolate_z(x, self.config.upsampling_factor, 0, self.config.interpolation)

    def on_output_grid(self, image, *, axes, interpolation=None):
        """The coarse stack interpolated onto the output's Z grid (``interpolation``: the model's own by default)."""
        return interpolate_z(image, self.config.upsampling_factor, axes.index("Z"),
                             interpolation or self.config.interpolation)

    def grid_starts(self):
        """The coarse stack interpolated along Z three ways (nearest, linear, cubic), and where the model
        knows an axial PSF (:meth:`axial_psf_sigma`) the cubic interpolation deconvolved along Z with it
        (Richardson-Lucy, :data:`~carecore.baselines.RL_START_ITERATIONS`: the paper's classical
        competitor, deconvolution of the bicubic upsampled stack): a classical restoration starts from
        whichever does best (:meth:`carecore.CARE.grid_starts`)."""
        import functools

        from ..baselines import RL_START_ITERATIONS, deconvolve

        starts = {f"{how} interpolation": functools.partial(self.on_output_grid, interpolation=how)
                  for how in ("nearest", "linear", "cubic")}
        sigma = self.axial_psf_sigma()
        for n in RL_START_ITERATIONS if sigma > 0 else ():
            def start(image, *, axes, n=n):
                return deconvolve(self.on_output_grid(image, axes=axes, interpolation="cubic"), {"Z": sigma}, axes=axes,
                                  iterations=n)
            starts[f"Richardson-Lucy along Z ({n} iterations) on cubic interpolation"] = start
        return starts

    def patch_grid_starts(self, X):
        """The validation patches (batch, Z, Y, X, channel: interpolated along Z by the model's
        interpolation) brought onto their grid as :meth:`grid_starts` brings a stack
        (:func:`interpolation_starts`, and :func:`deconvolved_starts`): the validation line's filters start
        from the best of them."""
        starts = interpolation_starts(X, self.config.upsampling_factor, self.config.interpolation)
        return {**starts, **deconvolved_starts(starts, self.axial_psf_sigma())}

    def axial_psf_sigma(self):
        """The axial PSF's Gaussian sigma in pixels that the classical deconvolution starts use
        (``config.psf_sigma``; 0: none known, no deconvolution start)."""
        return float(self.config.psf_sigma or 0.0)

    def output_spacing(self, spacing):
        out = dict(spacing or {})
        if "Z" in out:
            out["Z"] = out["Z"] / self.config.upsampling_factor
        return out


#: How far (relative) a stack's recorded Z/X voxel-size ratio may lie from the axial factor before it is told
SPACING_TOLERANCE = 0.1


def spacing_ratio(spacing):
    """The axial factor a voxel size records: Z size over the lateral (X, else Y) size, or None when
    either is unknown (not recorded, or zero)."""
    spacing = spacing or {}
    z = spacing.get("Z")
    lateral = spacing.get("X") or spacing.get("Y")
    if not z or not lateral or z <= 0 or lateral <= 0:
        return None
    return float(z) / float(lateral)


def spacing_mismatch(spacing, factor, *, name="image", tolerance=SPACING_TOLERANCE,
                     factor_label="the model's axial factor (upsampling_factor)"):
    """A sentence when the Z/X (or Z/Y) voxel-size ratio that ``spacing`` records differs from the axial
    ``factor`` by more than ``tolerance`` (relative), else None (also when the file records no voxel size).
    ``factor_label`` names where the factor comes from (a CLI flag, say)."""
    spacing = spacing or {}
    z = spacing.get("Z")
    for a in "XY":
        lateral = spacing.get(a)
        if not z or not lateral or z <= 0 or lateral <= 0:
            continue
        ratio = float(z) / float(lateral)
        if abs(ratio / float(factor) - 1) > tolerance:
            size = ", ".join(f"{k} {spacing[k]:g}" for k in "ZYX" if spacing.get(k))
            return (f"{name}: its voxel size ({size} µm) gives a Z/{a} ratio of {ratio:.3g}, but {factor_label} is "
                    f"{float(factor):g}")
    return None

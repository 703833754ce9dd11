"""Ensembles of probabilistic CARE models: their folders, training, prediction and reference levels.

The per-pixel maths they use (mixtures, disagreement, calibration) is in :mod:`.mixture`, which
knows nothing of models or files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import CareError
from ..progress import join_messages
from .mixture import disagreement, mixture_mean_variance

# -- ensembles ---------------------------------------------------------------------------------
ENSEMBLE_FILE = "ensemble.json"


class Ensemble:
    """M probabilistic CARE models trained on the same data with different seeds.

    An ensemble is a folder with ``ensemble.json`` listing its member model folders.
    """

    def __init__(self, members, path=None, info=None):
        if len(members) < 2:
            raise CareError("an ensemble needs at least 2 members")
        cfgs = [m.config for m in members]
        for c in cfgs[1:]:
            if (c.axes, c.n_channel_in, c.n_channel_out) != (cfgs[0].axes, cfgs[0].n_channel_in, cfgs[0].n_channel_out):
                names = [str(m.path or f"member {i}") for i, m in enumerate(members)]
                raise CareError("ensemble members must share axes and channel counts; got "
                                + ", ".join(f"{n} ({k.axes}, {k.n_channel_in} -> {k.n_channel_out} channels)"
                                            for n, k in zip(names, cfgs)))
        if not all(c.probabilistic for c in cfgs):   # (named: a user trial could not tell which folder it was)
            plain = [str(m.path or f"member {i}") for i, (m, c) in enumerate(zip(members, cfgs)) if not c.probabilistic]
            raise CareError("ensemble members must be probabilistic models (disagreement compares distributions); not "
                            f"probabilistic: {', '.join(plain)} (trained without --probabilistic / probabilistic=True)")
        self.members = list(members)
        self.path = Path(path) if path else None
        self.info = dict(info or {})

    @property
    def config(self):
        return self.members[0].config

    @classmethod
    def load(cls, path):
        from ..models.folder import load_model

        path = Path(path)
        f = path / ENSEMBLE_FILE
        if not f.exists():
            raise CareError(f"{path}: not an ensemble folder ({ENSEMBLE_FILE} is missing)")
        try:
            info = json.loads(f.read_text())
            members = list(info["members"])
        except (json.JSONDecodeError, KeyError, TypeError, OSError) as e:
            raise CareError(f"{f}: unreadable ensemble index ({e})") from None
        root = path.resolve()
        for m in members:  # members live inside the ensemble folder: no absolute paths, no '..'
            p = (path / str(m)).resolve()
            if Path(str(m)).is_absolute() or ".." in Path(str(m)).parts or root not in p.parents:
                raise CareError(f"{f}: member {m!r} is not a folder inside the ensemble folder; refusing to follow it")
        return cls([load_model(path / m) for m in members], path, info)

    @classmethod
    def from_folders(cls, folders):
        from ..models.folder import load_model

        return cls([load_model(f) for f in folders])

    def save_index(self):
        self.info["members"] = [str(Path(m.path).relative_to(self.path)) for m in self.members]
        tmp = self.path / (ENSEMBLE_FILE + ".part")
        tmp.write_text(json.dumps(self.info, indent=1))
        tmp.replace(self.path / ENSEMBLE_FILE)

    def input_normalization(self, image, *, axes, normalization=None, name="image"):
        """How the members scale ``image`` (the first member's :meth:`~carecore.CARE.input_normalization`;
        the members train on the same patches)."""
        return self.members[0].input_normalization(image, axes=axes, normalization=normalization, name=name)

    def truth_normalization(self, normalization):
        """How a ground truth is scaled into the members' output units (the first member's
        :meth:`~carecore.CARE.truth_normalization`; the members train on the same patches)."""
        return self.members[0].truth_normalization(normalization)

    def calibration(self, truth, means, scales, *, image, axes, normalization=None, confidences=None):
        """The calibration of the members' mixture (``means``, ``scales``: M first) against ``truth``, with
        no fit (:meth:`carecore.CARE.calibration` of the first member: the members share their scalings)."""
        return self.members[0].calibration(truth, means, scales, image=image, axes=axes, normalization=normalization,
                                           confidences=confidences)

    def truth_in_input_units(self, truth, *, image, axes, normalization=None):
        """:meth:`carecore.CARE.truth_in_input_units` of the first member (the members share their scalings)."""
        return self.members[0].truth_in_input_units(truth, image=image, axes=axes, normalization=normalization)

    def trained_on(self, image, *, axes=None, path=None):
        """Whether any member was trained on ``image`` (:meth:`carecore.CARE.trained_on`); None when no
        member's run card records its training images."""
        return self._any_member(lambda m: m.trained_on(image, axes=axes, path=path))

    def truth_seen(self, truth, *, axes):
        """Whether ``truth`` shares pixels with a training target of any member (:meth:`carecore.CARE.truth_seen`;
        members of the same training images are asked once)."""
        return self._any_member(lambda m: m.truth_seen(truth, axes=axes))

    def _any_member(self, ask):
        """True when ``ask(member)`` is for any member, False when one says False, None when none knows;
        members of the same training images are asked once (the image is read whole)."""
        said, asked = [], []
        for m in self.members:
            sources = (m.run_card or {}).get("data_sources")
            if sources and sources in asked:
                continue
            asked.append(sources)
            said.append(ask(m))
            if said[-1]:
                return True
        return False if False in said else None

    def predict_members(self, image, *, axes, progress=None, stop=None, name="image", **kw):
        """Stacked member means and scales, shape (M, ...).

        The first member's result tells their size: where the members' means and scales and the
        mixture's read-outs (about ``2 M + 3`` such images) would take more than
        :data:`~carecore.memory.SHARE` of the available memory, the others are not run and an error
        names chunk-by-chunk prediction."""
        from ..memory import require_memory

        M = len(self.members)
        mus = bs = None
        for i, m in enumerate(self.members):
            sub = (lambda d, t, w, i=i: progress(i * t + d, M * t, f"member {i + 1}/{M}")) if progress else None
            mu, b = m.predict(image, axes=axes, progress=sub, stop=stop, name=name, **kw)
            if mus is None:
                require_memory((2 * M + 3) * mu.nbytes,
                               f"{name}: the {M} members' restorations of shape {mu.shape} and their mixture",
                               "restore chunk by chunk (carecore.predict_chunked, `carecore predict --dask`) or with "
                               "fewer members")
                mus, bs = np.empty((M,) + mu.shape, mu.dtype), np.empty((M,) + b.shape, b.dtype)
            mus[i], bs[i] = mu, b
        return mus, bs

    def predict(self, image, *, axes, progress=None, stop=None, **kw):
        """Mixture mean and variance, and the disagreement D, as a dict of arrays."""
        mus, bs = self.predict_members(image, axes=axes, progress=progress, stop=stop, **kw)
        mean, var = mixture_mean_variance(mus, bs)
        return {"mean": mean, "variance": var, "disagreement": disagreement(mus, bs, stop=stop),
                "member_means": mus, "member_scales": bs}


def member_config(config):
    """The configuration an ensemble's members train with: ``config``, probabilistic (the Laplace loss)
    if it is not."""
    return config if config.probabilistic else config.replace(probabilistic=True, loss="laplace")


def train_ensemble(patches, config, folder, *, n_members=5, callback=None, stop=None, epochs=None,
                   steps_per_epoch=None, time_limit=None):
    """Train ``n_members`` probabilistic models with seeds ``config.seed + i``, one after another.

    ``time_limit`` (seconds or text such as ``"10m"``) is for the whole ensemble: the classical filters'
    line on the validation patches is tuned once, first, and each member gets an equal share of what is
    left when it starts (so a member that ended early or late moves the others' shares, not the end);
    when the budget is used up with 2 or more members trained, the rest are not trained.

    Events from each member's training are passed to ``callback`` with ``"member"`` (1-based) and
    ``"members"`` added (with a budget also ``"budget_start"``, the seconds into it when the member
    started, and ``"budget_share"``, its share); at the end, ``{"kind": "ensemble_end", "state",
    "message", "members", "n_members"}`` (:func:`ensemble_outcome`, and ``"traceback"`` of a member
    that raised). Training ends at a member that is stopped or fails
    (NaN); such a member is left out when no epoch of it was validated (it has no best weights).
    A member whose training raises ends the training too; the error is raised unless the members
    before it make an ensemble, which is then kept and its message says which member failed and why.
    Returns the :class:`Ensemble` (its folder lists the members), or None when fewer than 2 members
    were trained.
    """
    from ..models.kinds import create_model
    from ..training.validation import ValidationSet, cached_line, keep_line

    if n_members < 2:
        raise CareError(f"n_members must be >= 2, got {n_members}")
    config = member_config(config)
    from ..models.care import parse_duration

    budget = parse_duration(config.time_limit if time_limit is None else time_limit)
    t_start = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ENSEMBLE_FILE).unlink(missing_ok=True)   # trained again: the old index must not list new members
    members, ends, stopped, why = [], [], False, ""
    for i in range(n_members):
        if stop is not None and stop():
            stopped = True
            break
        if budget and len(members) >= 2 and time.perf_counter() - t_start >= budget:
            why = "the budget was used up"   # members trained on no time at all would only blur the others
            break
        model = create_model(config.replace(seed=config.seed + i), folder / f"member{i + 1:02d}")
        if i == 0 and budget and not isinstance(patches, tuple) and not cached_line(patches.meta, model):
            # the filters' line, which every member's training shows and reuses from the patches, is tuned
            # before the budget is shared: the first member does not pay for it alone
            from ..training.events import preparing_event

            if callback is not None:   # (its seconds said as the members' own preparation is)
                callback({**preparing_event(tuning=True), "member": 1, "members": n_members})
            model._adopt_records(patches.meta)   # (a measured PSF: its deconvolution starts)
            keep_line(patches.meta, model, ValidationSet(*patches.val, model).baseline())
        # an equal share of the time left (never 0, which would mean no budget at all)
        begun = time.perf_counter() - t_start
        share = max((budget - begun) / (n_members - i), 0.1) if budget else 0.0
        where = {"budget_start": begun, "budget_share": share} if budget else {}   # the bar's clock
        cb = (lambda e, i=i, where=where: callback({**e, "member": i + 1, "members": n_members, **where})) \
            if callback else None
        try:
            result = model.train(patches, epochs=epochs, steps_per_epoch=steps_per_epoch, callback=cb, stop=stop,
                                 time_limit=share)
        except Exception as e:   # the members trained before it are kept when they make an ensemble
            if len(members) < 2:
                raise
            import traceback

            ends.append({"member": i + 1, "status": "error", "kept": False, "traceback": traceback.format_exc(),
                         "message": str(e) if isinstance(e, CareError) else f"{type(e).__name__}: {e}"})
            break
        # a member that ended on its own keeps its weights (CARE.train does); one stopped or failed before a
        # validated epoch has none worth keeping
        kept = result.status not in ("stopped", "nan") or bool(np.isfinite(result.best_val_loss))
        if kept:
            members.append(model)
        ends.append({"member": i + 1, "status": result.status, "message": result.message, "kept": kept})
        if result.status in ("stopped", "nan"):
            stopped = result.status == "stopped"
            break
    ens = Ensemble(members, folder, {"n_members": n_members, "seed": config.seed}) if len(members) >= 2 else None
    if ens is not None:
        Xv, _ = patches.val
        ens.info["reference"] = reference_levels(ens, np.asarray(Xv[:REFERENCE_PATCHES]))
        ens.save_index()
    state, message = ensemble_outcome(ends, n_members, stopped, why)
    if callback is not None:
        failed = [e["traceback"] for e in ends if e.get("traceback")]
        callback({"kind": "ensemble_end", "state": state, "message": message, "members": len(members),
                  "n_members": n_members, **({"traceback": failed[0]} if failed else {})})
    return ens


def ensemble_outcome(ends, n_members, stopped, why=""):
    """How an ensemble's training ended: ``(state, message)``.

    ``ends``: one dict per member trained (``member``, ``status``, ``message``, ``kept``: whether it
    is in the ensemble); ``stopped``: a stop was requested; ``why``: why the members after the last
    trained were not (e.g. "the budget was used up"). The state is
    ``stopped``; ``nan`` or ``error`` when fewer than 2 members were kept (no ensemble); ``time_limit``
    when every kept member ended on its share of the budget; else ``completed``. The message is empty
    when every member trained as planned, else it says what is missing and why.
    """
    kept = [e for e in ends if e["kept"]]
    parts = []
    if len(kept) < 2:
        parts.append(f"no ensemble was made: it needs at least 2 trained members, {len(kept)} of {n_members} "
                     f"{'was' if len(kept) == 1 else 'were'} trained")
    elif len(kept) < n_members:
        parts.append(f"the ensemble has {len(kept)} of its {n_members} members")
    for e in ends:
        if e["status"] == "error":
            parts.append(f"member {e['member']} failed: {e['message']}")
        elif not e["kept"]:
            parts.append(f"member {e['member']} was left out (no epoch of it was validated): {e['message']}")
        elif e["status"] in ("stopped", "nan"):
            parts.append(f"member {e['member']}: {e['message']}")
    if len(ends) < n_members:
        first = len(ends) + 1
        parts.append((f"member {first} was not trained" if first == n_members
                      else f"members {first}-{n_members} were not trained") + (f": {why}" if why else ""))
    if stopped:
        state = "stopped"
    elif len(kept) < 2:
        state = "nan" if any(e["status"] == "nan" for e in ends) else "error"
    else:
        state = "time_limit" if all(e["status"] == "time_limit" for e in kept) else "completed"
    return state, join_messages(*parts)


#: the validation patches a model's or an ensemble's reference levels are measured on (at most)
REFERENCE_PATCHES = 16


def reference_levels(model_or_ensemble, X):
    """Typical mean scale (and disagreement, for ensembles) on validation patches (normalized units).

    Stored with the model so that new data can be compared to it (out-of-distribution warning).
    """
    from ..prediction.smoothing import smooth

    members = model_or_ensemble.members if isinstance(model_or_ensemble, Ensemble) else [model_or_ensemble]
    n = members[0].config.n_channel_out
    mus, bs = [], []
    for m in members:
        out = np.asarray(m.keras_model.predict_on_batch(X), np.float32)
        mus.append(smooth(out[..., :n], m.output_sigma))   # the means as predict gives them
        bs.append(out[..., n:])
    ref = {"mean_scale": float(np.mean(bs))}
    if len(members) > 1:
        ref["mean_disagreement"] = float(disagreement(np.stack(mus), np.stack(bs)).mean())
    return ref


def ood_check(value, reference, *, factor=3.0, what="disagreement"):
    """A warning string when ``value`` exceeds ``factor`` × ``reference`` (else None).

    The reference is measured on the validation patches. A hint, not a detector:
    measured with tiny ensembles (3 members, 16 filters, seeds 0-2) on simulated nuclei, a new nuclei
    volume had 1.2-1.6× the reference disagreement; stripes, noise or a checkerboard had 1.5-3.4×
    after 4×10 training steps but 0.4-2.8× after 10×20, when the members agree that such data is
    uncertain (their scales doubled) rather than disagree. The factor 3 keeps false alarms on
    familiar data rare; a missing warning does not prove the data familiar. A single model's
    predicted scale moved the other way with training (0.6-0.9× after 4×10 steps, 1.4-2.3× after
    10×20), so look at the interval maps as well.
    """
    if reference is None or not np.isfinite(value):
        return None
    if value > factor * reference and value > reference + 1e-3:
        return (f"the mean {what} on this image ({value:.3g}) is {value / max(reference, 1e-12):.1f}× that on the "
                f"validation data ({reference:.3g}): it may look unlike anything the model was trained on")
    return None

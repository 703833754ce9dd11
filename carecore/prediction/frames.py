"""Images with time points (``T``) or samples (``S``) restored in memory, one frame at a time.

A model restores one image (its spatial axes, optionally ``C``); :func:`frame_by_frame` lets a
model's ``predict`` take a time-lapse or a stack of samples as well: each frame is restored as an
image of its own (``normalization="image"`` scales each by its own percentiles, as
:func:`~carecore.predict_chunked` does), and the results are put back along the frame axes, where the
input had them. The whole result is held in
memory; a time-lapse larger than that is restored chunk by chunk into an OME-Zarr store
(:func:`~carecore.predict_chunked`, ``carecore predict --dask``).
"""
from __future__ import annotations

import functools

import numpy as np

from ..axes import check_axes, spatial_in_order
from ..errors import CareError, collect_warnings, warn_frames
from ..memory import require_memory
from ..progress import check_stop

#: Axes along which an image is a series of images a model restores one by one.
FRAME_AXES = "TS"


def frame_by_frame(predict):
    """Decorate a model's ``predict(image, *, axes, progress=None, stop=None, name="image", **kw)``
    so that an image with ``T`` or ``S`` axes is restored frame by frame (see the module).

    ``progress(done, total, what)`` counts the work of all frames (each frame's own units, ``total``
    the frames times one frame's); ``stop()`` is polled between frames and within them. ``out=`` is not
    taken with frames (the results are stacked in memory): a result that would take more than
    :data:`~carecore.memory.SHARE` of the available memory is refused after the first frame, before
    it is allocated. Returns what ``predict`` returns (an array or a tuple of arrays), each with the
    frame axes added where ``output_axes`` puts them.
    """
    @functools.wraps(predict)
    def with_frames(self, image, *, axes, progress=None, stop=None, name="image", **kw):
        upper = check_axes(axes, np.ndim(image), name=name, shape=np.shape(image))
        ordered = spatial_in_order(upper)
        if ordered != upper:   # (an XY image: restored as YX, the result given back in its own order)
            return _in_spatial_order(self, with_frames, image, upper, ordered, progress, stop, name, kw)
        frames = [a for a in upper if a in FRAME_AXES]
        if not frames:
            return predict(self, image, axes=axes, progress=progress, stop=stop, name=name, **kw)
        if kw.get("out") is not None:
            raise CareError(f"{name}: out= takes one image, not the frames of axes {upper!r} (shape "
                            f"{tuple(np.shape(image))}); restore a frame at a time into it, or chunk by chunk "
                            "(carecore.predict_chunked, `carecore predict --dask`)")
        kw.pop("out", None)
        sizes = [int(np.shape(image)[upper.index(a)]) for a in frames]
        if 0 in sizes:
            raise CareError(f"{name}: axes {upper!r} with shape {tuple(np.shape(image))} hold no frame to restore")
        rest = "".join(a for a in upper if a not in frames)
        n = int(np.prod(sizes))
        with collect_warnings() as said:   # (each frame's warnings, said once below)
            results, r = _frames(self, predict, image, upper, frames, sizes, rest, n, progress, stop, name, kw)
        warn_frames(said)
        inner = self.output_axes(rest)   # the frame's result axes; frames first in the stack
        stacked = "".join(frames) + inner
        full = self.output_axes(upper)
        if sorted(full) != sorted(stacked):
            raise CareError(f"{name}: the model's output axes {full!r} for {upper!r} do not hold its frames' "
                            f"{inner!r} and {''.join(frames)!r}")
        perm = [stacked.index(a) for a in full]
        out = [np.transpose(res, perm) for res in results]
        return tuple(out) if len(out) > 1 or isinstance(r, tuple) else out[0]

    return with_frames


def _in_spatial_order(self, with_frames, image, upper, ordered, progress, stop, name, kw):
    """``with_frames`` on ``image`` (axes ``upper``) seen in the axes ``ordered`` (a transposed view, no
    copy); the results (and ``n_tiles``) moved between the two orders (``out=`` is the network's own layout,
    as it is for any image)."""
    to_model = [upper.index(a) for a in ordered]
    spatial, model_spatial = [a for a in upper if a in "ZYX"], [a for a in ordered if a in "ZYX"]
    n_tiles = kw.get("n_tiles")
    if isinstance(n_tiles, (tuple, list)) and len(n_tiles) == len(spatial):   # (given in the image's order)
        kw["n_tiles"] = tuple(n_tiles[spatial.index(a)] for a in model_spatial)
    out_axes, out_model = self.output_axes(upper), self.output_axes(ordered)
    try:
        r = with_frames(self, np.transpose(image, to_model), axes=ordered, progress=progress, stop=stop, name=name,
                        **kw)
    except CareError as e:   # (said of the transposed view: the image as given named too)
        raise CareError(f"{e} (the image as given: axes {upper}, shape {tuple(np.shape(image))}, seen in the order "
                        f"{ordered})") from None
    back = [out_model.index(a) for a in out_axes]
    return tuple(np.transpose(x, back) for x in r) if isinstance(r, tuple) else np.transpose(r, back)


def _frames(self, predict, image, upper, frames, sizes, rest, n, progress, stop, name, kw):
    """Each frame restored by ``predict``, the results stacked frames first; the last frame's result."""
    results = r = None
    for k, index in enumerate(np.ndindex(*sizes)):
        check_stop(stop)
        at = dict(zip(frames, index))
        frame = image[tuple(at[a] if a in at else slice(None) for a in upper)]
        sub = (lambda d, t, w, k=k: progress(k * t + d, n * t, w)) if progress is not None else None
        label = f"{name} [{', '.join(f'{a}={i}' for a, i in at.items())}]"
        r = predict(self, frame, axes=rest, progress=sub, stop=stop, name=label, **kw)
        parts = r if isinstance(r, tuple) else (r,)
        if results is None:   # the first frame tells the result's size: refused before it is allocated
            require_memory(n * sum(np.asarray(p).nbytes for p in parts),
                           f"{name}: the restoration of its {n} frames (axes {upper!r}, shape {tuple(np.shape(image))})",
                           "restore it chunk by chunk into an OME-Zarr store (carecore.predict_chunked, "
                           "`carecore predict --dask`)")
            results = [np.empty(tuple(sizes) + np.shape(p), np.asarray(p).dtype) for p in parts]
        for res, p in zip(results, parts):
            res[index] = p
    return results, r

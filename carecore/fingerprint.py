"""What identifies an image's pixels whatever its file is called: a short fingerprint of its content.

A model's run card records the fingerprint of each image it was trained on, so that the lab can say
"CARE was trained on this image: its scores here flatter it" also for a copy under another name or in
another format (a TIFF saved again as OME-Zarr, a folder of copies). The fingerprint reads a few small
blocks at fixed places (never the whole image: large images stay unread) and hashes their values as
float32, so that a copy in another integer or float type of the same values has the same fingerprint.

A crop is not the image: it shares windows with it. :func:`crop_sketch` keeps the smallest hashes of an
image's 8x8 windows (of every YX plane) and :func:`overlaps` finds a crop of it, or an image it was cut
from, by the windows of another image whose hashes fall in the sketch's range: all of them are in the
sketch for a crop, almost none for another image. Windows of a few photons among zeros, which recur by
chance in unrelated images of little light, are left out (:data:`MIN_CHANGES`).
"""

import hashlib

import numpy as np

from .axes import SPATIAL

#: Where the blocks are read, as fractions of each spatial axis (the centre and four off-centre places).
PLACES = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (0.25, 0.75, 0.75), (0.75, 0.25, 0.75), (0.75, 0.75, 0.25))
#: A block's side along Y and X (and Z: a quarter of it).
BLOCK = 16


def fingerprint(data, axes):
    """A short hexadecimal fingerprint of an image's pixels, or None where it would not tell images apart.

    Parameters
    ----------
    data : array-like
        The image (NumPy, memory map, Dask or Zarr array: only a few small blocks are read).
    axes : str
        Its axes (``'ZYX'``, ``'CYX'``, ``'TZYX'``, ...). Channels, time points and samples are read whole
        at each place (a time-lapse's fingerprint is of all its frames; fingerprint a frame on its own to
        compare frames).

    Returns
    -------
    str or None
        24 hexadecimal digits, the same for the same values on the same grid in any array type, file name
        or format; None when the blocks read are all of one value (an empty or blank image: two such
        images must not be taken for one).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    >>> fingerprint(x, "YX") == fingerprint(x.astype(np.float32), "YX")
    True
    """
    from .errors import CareError

    shape = tuple(int(n) for n in np.shape(data))
    whole = "TSC"   # (read whole at each place)
    if len(axes) != len(shape) or len(set(axes)) != len(axes) or any(a not in whole + SPATIAL for a in axes):
        raise CareError(f"fingerprint: axes {axes!r} do not fit an image of shape {shape} (letters of {whole + SPATIAL}, "
                        "one each)")
    order = [axes.index(a) for a in whole + SPATIAL if a in axes]   # the same fingerprint in any axes order
    digest = hashlib.blake2b(digest_size=12)
    digest.update(repr([(axes[i], shape[i]) for i in order]).encode())
    varies = False
    for place in PLACES:
        index = []
        for a, n in zip(axes, shape):
            if a in whole:
                index.append(slice(None))
                continue
            side = min(n, BLOCK // 4 if a == "Z" else BLOCK)
            start = max(min(int(place["ZYX".index(a)] * n) - side // 2, n - side), 0)
            index.append(slice(start, start + side))
        block = np.asarray(data[tuple(index)], np.float32).transpose(order)
        varies = varies or bool(block.size and block.min() != block.max())
        digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest() if varies else None


# -- crops: a sketch of an image's small windows --------------------------------------------------------
#: A window's side along Y and X: the sketch hashes every WINDOW x WINDOW window of each YX plane.
WINDOW = 8
#: How many window hashes a sketch keeps (the smallest ones: 4 KiB).
SKETCH = 512
#: Least share of an image's sampled windows found in a training image's sketch for it to overlap it, and
#: the fewest such windows (a smaller crop cannot be told: about 1/128 of the training image's planes).
OVERLAP_SHARE, OVERLAP_WINDOWS = 0.1, 4
#: Fewest changes between horizontal neighbours a window must hold (of its WINDOW x (WINDOW - 1)) to be
#: sketched: a window of a few photons among zeros recurs by chance in unrelated images of little light.
MIN_CHANGES = 10
# the hash's coefficients: fixed for good (a sketch recorded in a run card is compared with them)
_ROW, _COL = (np.random.default_rng(seed).integers(1, 2**63, size=WINDOW, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
              for seed in (20261206, 6122026))


def _planes(data, axes):
    """The YX planes of ``data`` (every index of its other axes), read one at a time."""
    if "Y" not in axes or "X" not in axes:
        return
    other = [i for i, a in enumerate(axes) if a not in "YX"]
    shape = np.shape(data)
    for at in np.ndindex(*[shape[i] for i in other]):
        index = [slice(None)] * len(axes)
        for i, k in zip(other, at):
            index[i] = k
        plane = np.asarray(data[tuple(index)], np.float32)
        yield plane if axes.index("Y") < axes.index("X") else plane.T


def _window_hashes(plane):
    """The hashes (uint64) of the plane's WINDOW x WINDOW windows that hold at least :data:`MIN_CHANGES`
    changes between horizontal neighbours."""
    from numpy.lib.stride_tricks import sliding_window_view as windows

    if min(plane.shape) < WINDOW:
        return np.zeros(0, np.uint64)
    p = np.ascontiguousarray(plane + np.float32(0))   # (-0 as 0)
    bits = p.view(np.uint32).astype(np.uint64)
    rows = sum(bits[:, j:j + bits.shape[1] - WINDOW + 1] * _ROW[j] for j in range(WINDOW))
    h = sum(rows[i:i + rows.shape[0] - WINDOW + 1] * _COL[i] for i in range(WINDOW))
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):   # (splitmix64's finaliser)
        h = (h ^ (h >> np.uint64(shift))) * np.uint64(factor)
    h ^= h >> np.uint64(31)
    c = np.cumsum(np.pad(p[:, 1:] != p[:, :-1], ((0, 0), (1, 0))), 1, dtype=np.int32)   # (changes up to x)
    changes = windows(c[:, WINDOW - 1:] - c[:, :1 - WINDOW], WINDOW, axis=0).sum(-1)
    return h[changes >= MIN_CHANGES]


def crop_sketch(data, axes):
    """A sketch of an image's windows by which a crop of it is recognised: the :data:`SKETCH` smallest
    hashes of its :data:`WINDOW` x :data:`WINDOW` windows of :data:`MIN_CHANGES` changes or more, in every YX plane
    (a crop keeps its windows whatever its offset, Z range, channels or time points).

    Returns
    -------
    str or None
        The hashes as base64 text (for a run card), or None for an image with no such window.
    """
    import base64

    kept = np.zeros(0, np.uint64)
    for plane in _planes(data, axes):
        h = _window_hashes(plane)
        if len(kept) >= SKETCH:
            h = h[h < kept[-1]]
        kept = np.unique(np.concatenate([kept, h]))[:SKETCH]
    return base64.b64encode(kept.astype("<u8").tobytes()).decode() if len(kept) else None


def _from_text(sketch):
    import base64

    return np.frombuffer(base64.b64decode(sketch), "<u8").astype(np.uint64)


def sketch_hashes(sketch):
    """A sketch's hashes (sorted uint64), from its text (:func:`crop_sketch`) or as already read; an empty
    array for None."""
    if sketch is None or isinstance(sketch, np.ndarray):
        return np.zeros(0, np.uint64) if sketch is None else sketch
    return _from_text(sketch) if sketch else np.zeros(0, np.uint64)


def sketches_overlap(a, b):
    """Whether two images share their windows, told from their sketches alone (:func:`crop_sketch`, as
    text or as read by :func:`sketch_hashes`): one a crop of the other, or one overlapping the other by
    at least :data:`OVERLAP_SHARE` of the smaller's windows.

    Below the smaller of the two sketches' largest hashes (where a sketch holds fewer than :data:`SKETCH`
    hashes, it holds all of its image's), each sketch holds every window of its image: the windows the two
    share there are their common hashes. The smaller image's share of the larger's windows is about how
    many of its hashes lie there, out of :data:`SKETCH`: a crop of less than about 1/128 of the other
    image's windows (a 128 x 128 tile of a 2048 x 2048 image) is not found, where :func:`overlaps`, which
    reads the pixels of the larger, finds it.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((128, 128), dtype=np.float32)
    >>> y = np.random.default_rng(1).random((128, 128), dtype=np.float32)
    >>> sketches_overlap(crop_sketch(x[20:90, 10:100], "YX"), crop_sketch(x, "YX"))
    True
    >>> sketches_overlap(crop_sketch(y, "YX"), crop_sketch(x, "YX")), sketches_overlap(None, crop_sketch(x, "YX"))
    (False, False)
    """
    a, b = sketch_hashes(a), sketch_hashes(b)
    if not len(a) or not len(b):
        return False
    top = min((s[-1] for s in (a, b) if len(s) >= SKETCH), default=None)
    if top is not None:
        a, b = a[a <= top], b[b <= top]
    found = int(np.isin(a, b, assume_unique=True).sum())
    return found >= OVERLAP_WINDOWS and found >= OVERLAP_SHARE * min(len(a), len(b))


def sketch_matcher(sketches):
    """A test ``matches(sketch)``: whether a sketch overlaps any of ``sketches`` (:func:`sketches_overlap`).
    The sketches are read once, and a sketch sharing fewer than :data:`OVERLAP_WINDOWS` hashes with all of
    them together is answered at once (hundreds of time points against hundreds of records: a fine-tune
    on a time-lapse).

    >>> import numpy as np
    >>> x, y = (np.random.default_rng(k).random((64, 64), dtype=np.float32) for k in (0, 1))
    >>> matches = sketch_matcher([crop_sketch(x, "YX"), None])
    >>> matches(crop_sketch(x[8:, 8:], "YX")), matches(crop_sketch(y, "YX")), matches(None)
    (True, False, False)
    """
    read = [h for h in map(sketch_hashes, sketches) if len(h)]
    union = np.unique(np.concatenate(read)) if read else np.zeros(0, np.uint64)

    def matches(sketch):
        h = sketch_hashes(sketch)
        if int(np.isin(h, union, assume_unique=True).sum()) < OVERLAP_WINDOWS:
            return False
        return any(sketches_overlap(h, r) for r in read)

    return matches


def overlaps(sketches, data, axes):
    """Whether ``data`` shares its windows with any of the images sketched (:func:`crop_sketch`): a crop
    of one, an image it is a crop of, or one that overlaps it by at least :data:`OVERLAP_SHARE` of
    the smaller's windows.

    Of the image's windows, those whose hash lies within a sketch's range are compared with it: all are
    in it for a crop of the sketched image, about the shared part's share for an overlap, and almost none
    for another image (including another crop of one acquisition: a test half beside the training half).
    """
    sets = [_from_text(s) for s in sketches if s]
    if not sets:
        return False
    full = [s for s in sets if len(s) >= SKETCH]
    # a sketch of fewer than SKETCH hashes holds all of its (small) image's: every window of this image is in its
    # range, so its windows are counted plane by plane, not gathered (a large image has millions)
    small = [s for s in sets if len(s) < SKETCH]
    top = max((s[-1] for s in full), default=None)
    sampled, counts = [], [[0, 0] for _ in small]   # counts: [windows, found] per small sketch
    for h in map(_window_hashes, _planes(data, axes)):
        h = np.unique(h)
        if top is not None:
            sampled.append(h[h <= top])
        for c, s in zip(counts, small):
            c[0] += len(h)
            c[1] += int(np.isin(s, h, assume_unique=True).sum())   # (its windows seen here)
    sampled = np.unique(np.concatenate(sampled)) if sampled else np.zeros(0, np.uint64)
    decided = [(int(np.isin(sampled[sampled <= s[-1]], s, assume_unique=True).sum()), int((sampled <= s[-1]).sum()), len(s))
               for s in full] + [(found, seen, len(s)) for (seen, found), s in zip(counts, small)]
    return any(found >= OVERLAP_WINDOWS and found >= OVERLAP_SHARE * min(seen, n) for found, seen, n in decided)

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
chance in unrelated images of little light, are left out (:data:`MIN_CHANGES`); of a large image's, only
those with enough bits to be told from chance are compared (:data:`CHANCE_BITS`).
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
#: How much rarer than its chance to recur in the sketched image a window must be to be compared with its
#: sketch by :func:`overlaps`, as bits: a window whose values can be placed in it in M ways (2**b: 64! / the
#: product of each value's count!) recurs by chance in an image of N windows about N / M times. Windows of
#: 10 changes hold 22.9 bits or more (5 photons among zeros: C(64, 5)), enough below about 2**16 windows.
#: Two unrelated stacks of 96 x 1024 x 1024 at 0.04 photons a pixel shared 1/8 of their sketches' windows.
CHANCE_BITS = 7
#: Fewest bits of a window kept in a sketch's second part, of rare windows (:func:`crop_sketches`): a window
#: of 40 bits (12 photons among zeros or more) recurs by chance in an image of N windows about N / 2**40
#: times, under 1/1000 up to 10**9 windows (a stack of 1000 x 1024 x 1024). A crop of a large, dim image
#: keeps too few of the first part's windows that are not of chance to be found by them, but its rare ones.
RARE_BITS = 40
# the hash's coefficients: fixed for good (a sketch recorded in a run card is compared with them)
_ROW, _COL = (np.random.default_rng(seed).integers(1, 2**63, size=WINDOW, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
              for seed in (20261206, 6122026))
_LOG2_FACTORIAL = np.concatenate([[0.0], np.cumsum(np.log2(np.arange(1, WINDOW * WINDOW + 1)))])
_LOG2_CHOOSE = _LOG2_FACTORIAL[-1] - _LOG2_FACTORIAL - _LOG2_FACTORIAL[::-1]   # (log2 C(64, k))
# the fewest bits a window of MIN_CHANGES changes holds (_bits)
_LEAST_BITS = float(_LOG2_CHOOSE[(MIN_CHANGES + 1) // 2])


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


def _candidates(plane, below=None):
    """The plane (as float32, -0 as 0) and its WINDOW x WINDOW windows that hold at least :data:`MIN_CHANGES`
    changes between horizontal neighbours (and a hash below ``below``, where given): ``(plane, hashes, ys, xs,
    changes)``, each window by its top-left corner."""
    from numpy.lib.stride_tricks import sliding_window_view as windows

    p = np.ascontiguousarray(plane + np.float32(0))   # (-0 as 0)
    if min(p.shape) < WINDOW:
        return p, np.zeros(0, np.uint64), np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.intp)
    bits = p.view(np.uint32).astype(np.uint64)
    rows = sum(bits[:, j:j + bits.shape[1] - WINDOW + 1] * _ROW[j] for j in range(WINDOW))
    h = sum(rows[i:i + rows.shape[0] - WINDOW + 1] * _COL[i] for i in range(WINDOW))
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):   # (splitmix64's finaliser)
        h = (h ^ (h >> np.uint64(shift))) * np.uint64(factor)
    h ^= h >> np.uint64(31)
    c = np.cumsum(np.pad(p[:, 1:] != p[:, :-1], ((0, 0), (1, 0))), 1, dtype=np.int32)   # (changes up to x)
    changes = windows(c[:, WINDOW - 1:] - c[:, :1 - WINDOW], WINDOW, axis=0).sum(-1)
    keep = changes >= MIN_CHANGES
    if below is not None:
        keep &= h < below
    ys, xs = np.nonzero(keep)
    return p, h[ys, xs], ys, xs, changes[ys, xs]


def _window_hashes(plane):
    """The hashes (uint64) of the plane's WINDOW x WINDOW windows that hold at least
    :data:`MIN_CHANGES` changes between horizontal neighbours."""
    return _candidates(plane)[1]


def _bits(plane, ys, xs, changes, enough=np.inf):
    """log2 of the number of ways the values of the windows at top-left corners ``ys``, ``xs`` (of ``changes``
    changes) can be placed in them (:data:`CHANCE_BITS`), or, where that is ``enough`` or more, a bound below it
    told from their changes alone (a window of 32 changes or more: 48.6 bits or more, unsorted)."""
    from numpy.lib.stride_tricks import sliding_window_view as windows

    # each change needs a value other than the window's most common one, and each such value makes two at most:
    # k = changes / 2 of them or more. Up to 32 of them, the most common value's places alone can be chosen in
    # C(64, k) ways or more; beyond, every value fills fewer than 32 places, and some of them together fill 16 to 47,
    # which can be chosen in C(64, 16) ways or more
    out = _LOG2_CHOOSE[np.minimum((np.asarray(changes) + 1) // 2, 16)]
    todo = np.flatnonzero(out < enough)
    view = windows(plane, (WINDOW, WINDOW))
    for at in range(0, len(todo), 16384):   # (in parts of 16384 windows: about 30 MiB at a time)
        part = todo[at:at + 16384]
        v = np.sort(view[ys[part], xs[part]].reshape(-1, WINDOW * WINDOW), axis=1)
        starts = np.ones(v.shape, bool)
        starts[:, 1:] = v[:, 1:] != v[:, :-1]
        run = np.flatnonzero(np.append(starts.ravel(), True))   # (where each run of equal values starts)
        out[part] = _LOG2_FACTORIAL[-1] - np.bincount(run[:-1] // v.shape[1], _LOG2_FACTORIAL[np.diff(run)],
                                                      minlength=len(v))
    return out


def crop_sketch(data, axes):
    """A sketch of an image's windows by which a crop of it is recognised: the :data:`SKETCH` smallest
    hashes of its :data:`WINDOW` x :data:`WINDOW` windows of :data:`MIN_CHANGES` changes or more, in every YX plane
    (a crop keeps its windows whatever its offset, Z range, channels or time points). The first part of
    :func:`crop_sketches`.

    Returns
    -------
    str or None
        The hashes as base64 text (for a run card), or None for an image with no such window.
    """
    return crop_sketches(data, axes)[0]


def crop_sketches(data, axes):
    """The two parts of an image's sketch, read in one pass: :func:`crop_sketch`'s, and the :data:`SKETCH`
    smallest hashes of its rare windows (of :data:`RARE_BITS` bits or more), by which a crop of a large,
    dim image is told from chance.

    Returns
    -------
    (str or None, str or None)
        Each as base64 text (for a run card). The second is ``"="`` where it is the first (every window of
        the first is rare: an image of continuous values), ``""`` where the image has no rare window, and None
        where the first is None.
    """
    import base64

    kept, rare = np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    for plane in _planes(data, axes):
        # (past the first planes, only hashes below the parts' largest can enter them: few)
        p, h, ys, xs, ch = _candidates(plane, max(kept[-1], rare[-1]) if min(len(kept), len(rare)) >= SKETCH else None)
        kept = np.unique(np.concatenate([kept, h[h < kept[-1]] if len(kept) >= SKETCH else h]))[:SKETCH]
        if len(rare) >= SKETCH:
            h, ys, xs, ch = (v[h < rare[-1]] for v in (h, ys, xs, ch))
        h, first = np.unique(h, return_index=True)   # (sorted; a window recurring in the plane once)
        new = ~np.isin(h, rare)
        h, ys, xs, ch = h[new], ys[first][new], xs[first][new], ch[first][new]
        found, at = [], 0
        while at < len(h) and sum(map(len, found)) < SKETCH:   # (smallest hashes first, until SKETCH more are rare)
            part = slice(at, at + max(2 * SKETCH, at))
            found.append(h[part][_bits(p, ys[part], xs[part], ch[part], RARE_BITS) >= RARE_BITS])
            at = part.stop
        rare = np.unique(np.concatenate([rare, *found]))[:SKETCH]
    if not len(kept):
        return None, None
    text = lambda v: base64.b64encode(v.astype("<u8").tobytes()).decode()   # noqa: E731
    return text(kept), "=" if np.array_equal(rare, kept) else text(rare)


def _from_text(sketch):
    import base64

    return np.frombuffer(base64.b64decode(sketch), "<u8").astype(np.uint64)


def sketch_hashes(sketch):
    """A sketch's hashes (sorted uint64), from its text (:func:`crop_sketch`) or as already read; an empty
    array for None."""
    if sketch is None or isinstance(sketch, np.ndarray):
        return np.zeros(0, np.uint64) if sketch is None else sketch
    return _from_text(sketch) if sketch else np.zeros(0, np.uint64)


def recorded_sketch(record, key="sketch"):
    """The sketch of an image as a run card or a patch set records it (``record[key]``, and the rare part in
    ``record[key + "_rare"]``): the pair of its parts' texts, or the first part's alone where the record
    has no rare part (before 2026-12-07); None where it has no sketch."""
    first, rare = record.get(key), record.get(key + "_rare")
    return first if rare is None or not first else (first, rare)


def _parts(sketch):
    """A sketch's two parts, read (:func:`crop_sketches`): from its text or its pair of texts, or as already
    read. The second is None where it is not known (a sketch recorded before 2026-12-07, of one part)."""
    if not isinstance(sketch, tuple):
        return sketch_hashes(sketch), None
    first, rare = sketch_hashes(sketch[0]), sketch[1]
    if rare is None or isinstance(rare, np.ndarray):
        return first, rare
    return first, (first if rare == "=" else sketch_hashes(rare))


def _windows(hashes):
    """About how many windows (of :data:`MIN_CHANGES`) the image of a sketch's first part has."""
    return len(hashes) if len(hashes) < SKETCH else SKETCH * 2.0**64 / float(hashes[-1])


def _shared(a, b):
    """Whether two parts of sketches (read) share :data:`OVERLAP_WINDOWS` windows, and :data:`OVERLAP_SHARE`
    of the smaller's, below the smaller of their largest hashes."""
    if not len(a) or not len(b):
        return False
    top = min((s[-1] for s in (a, b) if len(s) >= SKETCH), default=None)
    if top is not None:
        a, b = a[a <= top], b[b <= top]
    found = int(np.isin(a, b, assume_unique=True).sum())
    return found >= OVERLAP_WINDOWS and found >= OVERLAP_SHARE * min(len(a), len(b))


def sketches_overlap(a, b):
    """Whether two images share their windows, told from their sketches alone: one a crop of the other, or
    one overlapping the other by at least :data:`OVERLAP_SHARE` of the smaller's windows. A sketch is the
    first part's text (:func:`crop_sketch`), both parts' texts as a pair (:func:`crop_sketches`), or either
    as read.

    Below the smaller of the two sketches' largest hashes (where a sketch holds fewer than :data:`SKETCH`
    hashes, it holds all of its image's), each sketch holds every window of its image: the windows the two
    share there are their common hashes. The smaller image's share of the larger's windows is about how
    many of its hashes lie there, out of :data:`SKETCH`: a crop of less than about 1/128 of the other
    image's windows (a 128 x 128 tile of a 2048 x 2048 image) is not found, where :func:`overlaps`, which
    reads the pixels of the larger, finds it. Where both sketches have their rare part, the first parts are
    compared only where neither image is large enough for its windows to recur by chance
    (:data:`CHANCE_BITS`), and the rare parts always.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((128, 128), dtype=np.float32)
    >>> y = np.random.default_rng(1).random((128, 128), dtype=np.float32)
    >>> sketches_overlap(crop_sketch(x[20:90, 10:100], "YX"), crop_sketch(x, "YX"))
    True
    >>> sketches_overlap(crop_sketch(y, "YX"), crop_sketch(x, "YX")), sketches_overlap(None, crop_sketch(x, "YX"))
    (False, False)
    >>> sketches_overlap(crop_sketches(x[20:90, 10:100], "YX"), crop_sketches(x, "YX"))
    True
    """
    (a, rare_a), (b, rare_b) = _parts(a), _parts(b)
    if rare_a is None or rare_b is None:
        return _shared(a, b)
    by_chance = np.log2(max(_windows(a), _windows(b), 1)) + CHANCE_BITS > _LEAST_BITS
    return (not by_chance and _shared(a, b)) or _shared(rare_a, rare_b)


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
    read = [(h, r) for h, r in map(_parts, sketches) if len(h)]
    union = np.unique(np.concatenate([v for h, r in read for v in (h, r) if v is not None])) if read else \
        np.zeros(0, np.uint64)

    def matches(sketch):
        h, r = _parts(sketch)
        mine = np.unique(np.concatenate([h, r])) if r is not None else h
        if int(np.isin(mine, union, assume_unique=True).sum()) < OVERLAP_WINDOWS:
            return False
        return any(sketches_overlap((h, r), other) for other in read)

    return matches


def overlaps(sketches, data, axes):
    """Whether ``data`` shares its windows with any of the images sketched (:func:`crop_sketch`, or both
    parts of :func:`crop_sketches` as a pair): a crop of one, an image it is a crop of, or one that overlaps
    it by at least :data:`OVERLAP_SHARE` of the smaller's windows.

    Of the image's windows, those whose hash lies within a sketch's range are compared with it: all are
    in it for a crop of the sketched image, about the shared part's share for an overlap, and almost none
    for another image (including another crop of one acquisition: a test half beside the training half).
    Where a sketch has its rare part, only the windows too rare to recur by chance in the sketched image or
    in this one (the larger: :data:`CHANCE_BITS`) are compared with its first part, and its rare windows
    with its rare part.
    """
    read = [(first, rare) for first, rare in map(_parts, sketches) if len(first)]
    if not read:
        return False
    firsts = [(first, rare is not None) for first, rare in read]   # (and whether its windows' bits count)
    rares = [rare for _, rare in read if rare is not None and len(rare)]
    full, small = ([(h, new) for h, new in firsts if (len(h) >= SKETCH) == big] for big in (True, False))
    full_rare, small_rare = ([h for h in rares if (len(h) >= SKETCH) == big] for big in (True, False))
    # a part of fewer than SKETCH hashes holds all of its (small) image's: every window of this image is in its
    # range, so its windows are counted plane by plane, not gathered (a large image has millions)
    top = max((h[-1] for h, _ in full), default=None)
    top_rare = max((h[-1] for h in full_rare), default=None)
    theirs = np.unique(np.concatenate([h for h, _ in small] + small_rare)) if small or small_rare else None
    # where neither image can have 2**16 windows, every window of 10 changes is too rare to recur by chance
    most = np.prod([n for a, n in zip(axes, np.shape(data)) if a not in "YX"] or [1]) * \
        max(np.shape(data)[axes.index("Y")] - WINDOW + 1, 0) * max(np.shape(data)[axes.index("X")] - WINDOW + 1, 0) \
        if "Y" in axes and "X" in axes else 0
    weighed = any(new and np.log2(max(_windows(h), most, 1)) + CHANCE_BITS > _LEAST_BITS for h, new in firsts)
    enough = max([RARE_BITS] + [np.log2(max(_windows(h), most, 1)) + CHANCE_BITS for h, new in firsts if new])
    sampled, sampled_bits = [], []
    rare_found, rare_compared = [[] for _ in full_rare], [0] * len(full_rare)   # (counted plane by plane)
    seen_rare, mine, windows = 0, [], 0   # mine: (hashes, bits) of this image's in small parts
    for plane in _planes(data, axes):
        p, h, ys, xs, ch = _candidates(plane)
        h, first = np.unique(h, return_index=True)
        ys, xs, ch = ys[first], xs[first], ch[first]
        windows += len(h)
        at = np.zeros(len(h), bool)   # (the windows whose bits are needed)
        if top is not None and weighed:
            at |= h <= top
        if top_rare is not None:
            at |= h <= top_rare
        if theirs is not None:
            at |= np.isin(h, theirs)
        bits = np.full(len(h), np.inf)
        bits[at] = _bits(p, ys[at], xs[at], ch[at], enough)
        if top is not None:
            sampled.append(h[h <= top])
            sampled_bits.append(bits[h <= top].astype(np.float32))
        if top_rare is not None:
            rare = h[(h <= top_rare) & (bits >= RARE_BITS)]
            for k, r in enumerate(full_rare):
                compared = rare[rare <= r[-1]]
                rare_compared[k] += len(compared)
                rare_found[k].append(compared[np.isin(compared, r, assume_unique=True)])
        if theirs is not None:
            mine.append((h[np.isin(h, theirs)], bits[np.isin(h, theirs)]))
            for part in range(0, len(h), 4096):   # (this image's rare windows, counted up to SKETCH)
                if seen_rare >= SKETCH or not small_rare:
                    break
                b = bits[part:part + 4096]
                unknown = np.isinf(b)
                b[unknown] = _bits(p, ys[part:part + 4096][unknown], xs[part:part + 4096][unknown],
                                   ch[part:part + 4096][unknown], RARE_BITS)
                seen_rare += int((b >= RARE_BITS).sum())
    need = lambda h, new: (np.log2(max(_windows(h), windows, 1)) + CHANCE_BITS) if new else 0.0   # noqa: E731
    decided = []
    if top is not None and sampled:   # (an image of no plane: none)
        sampled, first = np.unique(np.concatenate(sampled), return_index=True)
        sampled_bits = np.concatenate(sampled_bits)[first]
        for h, new in full:
            compared = sampled[(sampled <= h[-1]) & (sampled_bits >= need(h, new))]
            decided.append((int(np.isin(compared, h, assume_unique=True).sum()), len(compared), len(h)))
    for r, found, compared in zip(full_rare, rare_found, rare_compared):
        decided.append((len(np.unique(np.concatenate(found))) if found else 0, compared, len(r)))
    if theirs is not None:
        hashes, bits = (np.concatenate(v) for v in zip(*mine)) if mine else (np.zeros(0, np.uint64), np.zeros(0))
        for h, new in small:   # (every window of this image of the bits needed: more than SKETCH, or as counted)
            found = np.unique(hashes[bits >= need(h, new)])
            decided.append((int(np.isin(h, found, assume_unique=True).sum()), windows, len(h)))
        for h in small_rare:
            found = np.unique(hashes[bits >= RARE_BITS])
            decided.append((int(np.isin(h, found, assume_unique=True).sum()), seen_rare, len(h)))
    return any(found >= OVERLAP_WINDOWS and found >= OVERLAP_SHARE * min(seen, n) for found, seen, n in decided)

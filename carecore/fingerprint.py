"""What identifies an image's pixels whatever its file is called: a short fingerprint of its content.

A model's run card records the fingerprint of each image it was trained on, so that the lab can say
"CARE was trained on this image: its scores here flatter it" also for a copy under another name or in
another format (a TIFF saved again as OME-Zarr, a folder of copies). The fingerprint reads a few small
blocks at fixed places (never the whole image: large images stay unread) and hashes their values as
float32, so that a copy in another integer or float type of the same values has the same fingerprint.
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

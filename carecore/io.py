"""Image reading and writing with axes and voxel size: TIFF, and OME-Zarr through :mod:`carecore.ngff`.

Reading understands ImageJ hyperstacks and OME-TIFF metadata (axes, voxel size); without metadata
the axes are guessed from the number of dimensions and flagged as guessed. An explicit ``axes=``
overrides both. Writing produces OME-TIFF (Fiji opens it through Bio-Formats), atomically: the file
appears complete or not at all. A ``*.zarr`` path (a folder) is an OME-Zarr image, read and written
by :mod:`carecore.ngff` with the same :class:`Image`.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .axes import check_axes, guess_axes
from .errors import CareError

WRITE_DTYPES = (np.uint8, np.uint16, np.float32)


@dataclass(frozen=True)
class Image:
    """An array with its axes string, voxel size and origin.

    Attributes
    ----------
    data : numpy.ndarray
        The pixels (possibly a read-only memory map, or for an OME-Zarr image read with ``mmap=True``
        a dask array that reads chunks when sliced).
    axes : str
        One letter per dimension of ``data``.
    spacing : dict
        Voxel size per spatial axis letter (in micrometres) where known, e.g. ``{"Z": 1.0}``, and under
        ``"T"`` the frame interval in seconds (from OME's TimeIncrement, ImageJ's finterval, an OME-Zarr
        t axis), kept by every writer.
    path : str or None
        The file it was read from.
    axes_guessed : bool
        True when the file carried no axes and they were guessed from the number of dimensions.
    """

    data: np.ndarray
    axes: str
    spacing: dict = field(default_factory=dict)
    path: str | None = None
    axes_guessed: bool = False

    @property
    def shape(self):
        return self.data.shape

    @property
    def name(self):
        return Path(self.path).name if self.path else "image"


#: The key of the OME MapAnnotation that records the axes :func:`write_image` was given: the file stores
#: the pixels in an order OME-TIFF accepts (Y and X last) and reading puts them back in this order.
AXES_ANNOTATION = "carecore.axes"

#: Length units (lower case, micro sign normalised) and their size in micrometres, carecore's unit.
LENGTH_UNITS = {
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "angstrom": 1e-4, "ångström": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "nanometers": 1e-3, "nanometres": 1e-3,
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "micrometers": 1.0, "micrometres": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "in": 25400.0, "inch": 25400.0,
}


#: Seconds per time unit (OME's TimeIncrementUnit, ImageJ's time unit, OME-NGFF's axis unit)
TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3,
              "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}


def unit_to_s(unit):
    """The length of one time ``unit`` (``'s'``, ``'ms'``, ``'min'``, ``'sec'``...) in seconds; None if unknown."""
    return TIME_UNITS.get(unit.strip().lower()) if isinstance(unit, str) else None


def unit_to_um(unit):
    """The size of one ``unit`` (``'nm'``, ``'µm'``, ``'um'``, ``'micron'``, ``'\\u00B5m'`` ...) in micrometres.

    None for a unit that is no length (``'pixel'``) or that carecore does not know.

    Examples
    --------
    >>> unit_to_um("nm"), unit_to_um("micron"), unit_to_um("pixel")
    (0.001, 1.0, None)
    """
    if not isinstance(unit, str):
        return None
    u = unit.strip().lower().replace("\\u00b5", "µ").replace("\\u03bc", "µ").replace("\u03bc", "µ")
    return LENGTH_UNITS.get(u)


def _own_axes(tif):
    """The axes :func:`write_image` recorded in the file's OME metadata, or None."""
    if not tif.is_ome:
        return None
    try:
        import xml.etree.ElementTree as ET

        for el in ET.fromstring(tif.ome_metadata).iter():
            if el.tag.endswith("}M") and el.attrib.get("K") == AXES_ANNOTATION:
                return check_axes((el.text or "").strip())
    except Exception:  # a foreign or damaged annotation: read the file like any OME-TIFF
        return None
    return None


def _axes_from_tiff(tif):
    """Axes string from the file's own metadata, or None when it has none we trust.

    ImageJ and OME files: their axes (a samples axis ``S`` is the channel axis ``C``). Other TIFF files:
    the axes tifffile knows (from a shaped description, or ``S`` for the samples of an RGB or other
    multi-sample image, which is the channel axis ``C``); None when any axis is unknown (``Q``, ``I``).
    """
    series = tif.series[0]
    axes = series.axes.upper()
    if tif.is_imagej or tif.is_ome:
        axes = axes.replace("S", "C") if "C" not in axes else axes
        axes = axes.replace("Q", "")
        return axes if set(axes) <= set("TCZYX") and len(axes) == len(series.shape) else None
    if "S" in axes:
        if "C" in axes:
            return None
        axes = axes.replace("S", "C")
    ok = set(axes) <= set("TCZYX") and {"Y", "X"} <= set(axes) and len(set(axes)) == len(axes) == len(series.shape)
    return axes if ok else None


def _tiff_layout(tif):
    """How the pixels of the file's first series become the image, from its header alone.

    Returns ``(axes, shape, order, guessed)``: reshape the series' pixels to ``shape``, transpose them
    by ``order`` (None: keep) and they have ``axes``. A file :func:`write_image` wrote is put back in the
    order of the axes it was given; others get their metadata's axes, or guessed ones. Axes of size 1
    other than Y and X are dropped, as tifffile drops them from any file (``axes=`` puts them back).
    """
    series = tif.series[0]
    shape = tuple(series.shape)
    own = _own_axes(tif)
    if own is not None:
        full_axes = series.get_axes(False).upper()
        full_shape = tuple(series.get_shape(False))
        # tifffile's letters -> carecore's: Q holds carecore's S (sample); tifffile's S (samples per pixel) is 1
        mapped = [({"Q": "S", "S": "s"}.get(a, a), n) for a, n in zip(full_axes, full_shape)]
        kept = [(a, n) for a, n in mapped if n != 1 or a in own]
        letters = "".join(a for a, _ in kept)
        if len(letters) == len(own) and set(letters) == set(own):
            # as any file is read: axes of size 1 but Y and X dropped (a one-slice stack is YX; axes= puts them back)
            kept = [(a, n) for a, n in kept if n != 1 or a in "YX"]
            letters = "".join(a for a, _ in kept)
            own = "".join(a for a in own if a in letters)
            order = tuple(letters.index(a) for a in own)
            return own, tuple(n for _, n in kept), (None if order == tuple(range(len(own))) else order), False
    axes = _axes_from_tiff(tif)
    if axes is None:
        shape = _squeezed(shape)
        return guess_axes(len(shape)), shape, None, True
    return axes, shape, None, False


def _spacing_from_tiff(tif):
    """Voxel size in micrometres from OME or ImageJ metadata, converted from the file's length units.

    A length in a unit that is no length or not known (ImageJ's ``pixel``) is left out; an ImageJ file
    without a unit is taken to be in micrometres.
    """
    spacing = {}
    try:
        if tif.is_ome:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(tif.ome_metadata)
            for el in root.iter():
                if el.tag.endswith("Pixels"):
                    for a in "XYZ":
                        v = el.attrib.get(f"PhysicalSize{a}")
                        factor = unit_to_um(el.attrib.get(f"PhysicalSize{a}Unit", "µm"))  # OME's default
                        if v is not None and factor is not None:
                            spacing[a] = float(v) * factor
                    v, factor = el.attrib.get("TimeIncrement"), unit_to_s(el.attrib.get("TimeIncrementUnit", "s"))
                    if v is not None and factor is not None and float(v) > 0:
                        spacing["T"] = float(v) * factor
                    break
        elif tif.is_imagej:
            md = tif.imagej_metadata or {}
            unit = md.get("unit", "µm")
            units = {"X": unit, "Y": md.get("yunit", unit), "Z": md.get("zunit", unit)}
            values = {}
            if "spacing" in md:
                values["Z"] = float(md["spacing"])
            tags = tif.pages[0].tags
            for a, tag in (("X", "XResolution"), ("Y", "YResolution")):
                if tag in tags:
                    num, den = tags[tag].value
                    if num:
                        values[a] = den / num
            for a, v in values.items():
                factor = unit_to_um(units[a])
                if factor is not None:
                    spacing[a] = v * factor
            factor = unit_to_s(md.get("tunit", "sec"))   # (ImageJ's frame interval, in seconds by default)
            if md.get("finterval") and factor is not None and float(md["finterval"]) > 0:
                spacing["T"] = float(md["finterval"]) * factor
    except Exception:  # metadata is a courtesy: never fail a read because of it
        pass
    return spacing


def _fit_axes(data, axes, *, known, path):
    """``data`` with one dimension per letter of the user's ``axes``: axes of size 1 the file dropped are put back.

    ``known`` are the axes of ``data`` from the file's metadata (None when it has none): the added axes
    are the letters of ``axes`` not in ``known``; without metadata, the leading letters.
    """
    if len(axes) == data.ndim:
        return data
    extra = len(axes) - data.ndim
    if extra > 0:
        if known is not None:
            added = [i for i, a in enumerate(axes) if a not in known]
        else:
            added = list(range(extra))   # without metadata, leading dimensions of size 1 carry no meaning
        if len(added) == extra and not any(axes[i] in "YX" for i in added):
            return np.expand_dims(data, tuple(added))
    where = f" (the file's axes are {known!r})" if known is not None else ""
    raise CareError(
        f"{path}: axes {axes!r} have {len(axes)} letters but the image of shape {tuple(data.shape)} has "
        f"{data.ndim} dimensions{where}; give one letter per dimension, or add only letters of axes of "
        f"size 1 that the file lacks"
    )


def read_image(path, *, axes=None, mmap=False):
    """Read a TIFF file or an OME-Zarr image into an :class:`Image`.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff`` file (ImageJ, OME or plain), or an OME-Zarr folder (``*.ome.zarr``,
        :func:`carecore.ngff.read_ngff`).
    axes : str, optional
        Overrides the axes found in (or guessed for) the file. It may have more letters than the file
        has dimensions when the extra axes have size 1 (a one-slice stack saved as ``YX`` read as
        ``ZYX``): they are the letters the file's axes lack (without metadata: the leading ones).
    mmap : bool
        Memory-map the pixels instead of reading them (uncompressed TIFF files only; OME-Zarr: a
        dask array of its chunks), so that images larger than RAM can be streamed.

    Notes
    -----
    A file :func:`write_image` wrote comes back with the axes it was written with, in the same order;
    axes of size 1 other than Y and X are dropped, as from any file (``axes=`` with them puts them back).
    The voxel size is converted to micrometres from the file's length units (OME ``PhysicalSizeXUnit``
    ..., ImageJ ``unit``).

    Examples
    --------
    >>> img = read_image("stack.tif", axes="ZYX")   # doctest: +SKIP
    >>> img.data.shape, img.axes                    # doctest: +SKIP
    ((50, 256, 256), 'ZYX')
    """
    import tifffile

    path = Path(path)
    from .ngff import is_ngff

    if is_ngff(path):
        from .ngff import describe, read_ngff

        if axes is not None:
            _warn_reordered(path, check_axes(axes, name=str(path)), describe(path)[0])
        return read_ngff(path, axes=axes, lazy=mmap)
    if not path.exists():
        raise CareError(f"{path}: no such file")
    if path.is_dir():
        raise CareError(f"{path}: is a folder, expected a TIFF file")
    if path.stat().st_size == 0:
        raise CareError(f"{path}: the file is empty")
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise CareError(f"{path}: the TIFF file holds no image")
            file_axes, shape, order, guessed = _tiff_layout(tif)
            series_shape = tuple(tif.series[0].shape)
            spacing = _spacing_from_tiff(tif)
            if mmap:
                try:
                    data = tifffile.memmap(path, mode="r")
                except ValueError:
                    data = tif.series[0].asarray()
            else:
                data = tif.series[0].asarray()
    except CareError:
        raise
    except tifffile.TiffFileError as e:
        raise CareError(f"{path}: not a readable TIFF file ({e})") from None
    except Exception as e:
        raise CareError(f"{path}: could not read the image ({type(e).__name__}: {e})") from None
    if data.size == 0:
        raise CareError(f"{path}: the image is empty (shape {data.shape})")
    if guessed and axes is not None:   # the user's axes describe the file's dimensions, not the guess
        shape = series_shape if len(series_shape) == len(axes) else shape
    if data.size == int(np.prod(shape)) and data.shape != shape:
        data = data.reshape(shape)
    if order is not None and data.ndim == len(order):
        data = data.transpose(order)
    if axes is None:
        axes = file_axes
    else:
        axes = check_axes(axes, name=str(path))
        if not guessed:
            _warn_reordered(path, axes, file_axes, shape=data.shape)
        data = _fit_axes(data, axes, known=None if guessed else file_axes, path=path)
        guessed = False
    axes = check_axes(axes, data.ndim, name=str(path), shape=data.shape)
    return Image(data=data, axes=axes, spacing=spacing, path=str(path), axes_guessed=guessed)


def _warn_reordered(path, axes, file_axes, *, shape=None):
    """Warn when the ``axes`` a user gives are the axes the file records in another order: they relabel
    the file's dimensions without moving its pixels (a YXZ stack read as ZYX takes its Y for Z), which is
    right only where the file's metadata is wrong. Axes the file does not record (guessed) are not told."""
    if axes == file_axes or sorted(axes) != sorted(file_axes):
        return
    from .errors import warn

    size = f", shape {tuple(shape)}" if shape is not None else ""
    moved = ", ".join(f"its {f} is read as {a}" for f, a in zip(file_axes, axes) if f != a)
    warn(f"{path}: the file records its axes as {file_axes!r}{size}, and the axes given, {axes!r}, are the same "
         f"letters in another order: they relabel the dimensions without moving the pixels ({moved}); leave "
         "out --axes (axes=None) to read the file as it records itself, and give them only where its metadata "
         "is wrong", stacklevel=4)


def peek_spacing(path):
    """The voxel size ({axis: micrometres}) a TIFF file or an OME-Zarr image records, from its header alone
    (empty where it records none)."""
    import tifffile

    path = Path(path)
    from .ngff import describe, is_ngff

    if is_ngff(path):
        return dict(describe(path)[1] or {})
    try:
        with tifffile.TiffFile(path) as tif:
            return _spacing_from_tiff(tif)
    except Exception as e:
        raise CareError(f"{path}: not a readable TIFF file ({e})") from None


def _squeezed(shape):
    """Without metadata, leading singleton dimensions carry no meaning: drop them (Y and X stay)."""
    lead = tuple(s for s in shape[:-2] if s != 1)
    return lead + tuple(shape[-2:])


def peek_axes(path):
    """``(axes, shape, guessed)`` of a TIFF file or an OME-Zarr image from its header alone (no pixels are read)."""
    import tifffile

    path = Path(path)
    from .ngff import describe, is_ngff, open_level

    if is_ngff(path):
        return describe(path)[0], tuple(open_level(path).shape), False
    try:
        with tifffile.TiffFile(path) as tif:
            axes, shape, order, guessed = _tiff_layout(tif)
    except Exception as e:
        raise CareError(f"{path}: not a readable TIFF file ({e})") from None
    if order is not None:
        shape = tuple(shape[i] for i in order)
    return axes, shape, guessed


TIFF_SUFFIXES = (".tif", ".tiff")

#: What :func:`write_image` writes: OME-TIFF files and OME-Zarr folders.
WRITE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".zarr", ".ome.zarr")


def is_image_path(path):
    """True for a TIFF file or an OME-Zarr image (a ``*.zarr`` folder): what :func:`read_image` reads."""
    from .ngff import is_ngff

    path = Path(path)
    if path.name.startswith("."):  # hidden, e.g. a store being written beside its destination
        return False
    if path.suffix.lower() in TIFF_SUFFIXES:
        return path.is_file()
    return path.is_dir() and path.name.lower().endswith(".zarr") and is_ngff(path)


def list_images(folder):
    """The TIFF files and OME-Zarr images in ``folder``, sorted by name."""
    folder = Path(folder)
    if is_image_path(folder) or folder.is_file():   # (a user trial's image file was told "no such folder")
        raise CareError(f"{folder}: an image{'' if is_image_path(folder) else ' or other file'}, not a folder: give the "
                        "folder that holds the images")
    if not folder.is_dir():
        raise CareError(f"{folder}: no such folder")
    return [p for p in sorted(folder.iterdir()) if is_image_path(p)]


_NAME_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"   # those of tempfile's names


def create_unique(parent, prefix, suffix, *, folder=False):
    """Create an empty file (or folder) ``parent/<prefix><8 random letters><suffix>`` and return its path.

    Unlike :func:`tempfile.mkstemp` (mode 0600) and :func:`tempfile.mkdtemp` (0700), it gets the
    permissions a plain ``open()`` (0666) or ``mkdir()`` (0777) gives, less the umask (and as the
    folder's default ACL says): the file or folder renamed into place afterwards is readable by whom
    the user's other files are. The kernel applies the umask at creation, so it is never read or set
    (``os.umask`` sets it for the whole process, which is not thread safe).
    """
    parent = Path(parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(1000):
        name = parent / f"{prefix}{''.join(secrets.choice(_NAME_LETTERS) for _ in range(8))}{suffix}"
        try:
            if folder:
                os.mkdir(name, 0o777)
            else:
                os.close(os.open(name, flags, 0o666))
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"{parent}: no unused name {prefix}XXXXXXXX{suffix}")


def atomic_path(path):
    """A new empty file in the same folder as ``path``, for write-then-rename (``.NAME.<random>.part``)."""
    path = Path(path)
    return create_unique(path.parent, f".{path.name}.", ".part")


def check_writable(path, what="output"):
    """Check that :func:`write_image` can write ``path``, before the work that computes the image.

    Parameters
    ----------
    path : str or Path
        Where an image is to be written.
    what : str
        What the path is for (``"output"``, ``"--scale-out"`` ...), named in the error message.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    CareError
        Naming the path: when its suffix is not one :func:`write_image` writes (see
        :data:`WRITE_SUFFIXES`), when a TIFF path is a folder or an OME-Zarr path is a file or a folder
        that is no Zarr store (and not empty), or when its folder does not exist, is not a folder or
        cannot be written to.

    Examples
    --------
    >>> check_writable("restored.png")
    Traceback (most recent call last):
    ...
    carecore.errors.CareError: restored.png: cannot write the output as '.png'; write_image writes .tif, ...
    """
    from .ngff import is_ngff

    from ._atomic import ZARR_STORE, check_replaceable

    path = Path(path)
    if is_ngff(path):
        if path.exists() and not path.is_dir():
            raise CareError(f"{path}: is a file; the {what} is an OME-Zarr folder: give another path")
        check_replaceable(path, ZARR_STORE)   # never over a folder of the user's
    elif path.suffix.lower() in TIFF_SUFFIXES:
        if path.is_dir():
            raise CareError(f"{path}: is a folder; the {what} is a TIFF file: give a file name")
    else:
        got = repr(path.suffix) if path.suffix else "a file without suffix"
        raise CareError(
            f"{path}: cannot write the {what} as {got}; write_image writes "
            f"{', '.join(WRITE_SUFFIXES[:4])} (OME-TIFF) or {', '.join(WRITE_SUFFIXES[4:])} (OME-Zarr)"
        )
    parent = path.parent
    if not parent.exists():
        raise CareError(f"{path}: cannot write the {what}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise CareError(f"{path}: cannot write the {what}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CareError(f"{path}: cannot write the {what}: no permission to write into the folder {parent}")
    return path


def _storage_axes(axes):
    """The axes order an OME-TIFF file holds ``axes`` in, in tifffile's letters: Y and X last, the
    others in their order; carecore's S (sample) is tifffile's modulo axis Q, which follows T, C or Z
    or takes an unused one of them."""
    lead = [a for a in axes if a not in "YX"]
    if lead and lead[0] == "S" and set("TCZ") <= set(lead):
        lead.insert(1, lead.pop(0))   # Q must follow a T, C or Z axis when all three are used
    return "".join(lead).replace("S", "Q") + "YX"


def write_image(path, data, *, axes, spacing=None, dtype=None, compression=None, attrs=None):
    """Write ``data`` with its axes (and voxel size) to an OME-TIFF file, atomically.

    A path ending in ``.zarr`` writes an OME-Zarr image instead (:func:`carecore.ngff.write_ngff`: NGFF
    0.4 with a pyramid, axes in T C Z Y X order).

    Parameters
    ----------
    path : str or Path
        Destination, ``.tif``/``.tiff`` (``.ome.tif``) or ``.zarr``; the folder must exist (see
        :func:`check_writable`, which callers can use before their work).
    data : array_like
        uint8, uint16 or float32 pixels (float64 is stored as float32).
    axes : str
        One letter per dimension, in any order the package accepts (``YXC``, ``ZYXC``, ``CZYX`` ...).
    spacing : dict, optional
        Voxel size per spatial axis in micrometres, e.g. ``{"Z": 1.0, "Y": 0.2, "X": 0.2}``.
    dtype : numpy dtype, optional
        Convert to this type first (uint8, uint16 or float32); integer conversion rounds and errors
        out when values fall outside the type's range.
    attrs : dict, optional
        OME-Zarr only: written into the store's ``carecore`` attribute (:func:`carecore.ngff.write_ngff`).

    Notes
    -----
    OME-TIFF holds Y and X last: other orders (channel last ``YXC``) are stored with Y and X moved to
    the end, every channel a grey plane, and the axes given here recorded in the file (an OME
    MapAnnotation ``carecore.axes``): :func:`read_image` gives back the same axes (those of size 1 with
    ``axes=``) and the same pixels. Fiji shows the stored order.

    Examples
    --------
    >>> write_image("restored.tif", restored, axes="ZYX", spacing={"Z": 1.0})  # doctest: +SKIP
    """
    import tifffile

    path = Path(path)
    from .ngff import is_ngff

    check_writable(path)
    if is_ngff(path):
        from .ngff import write_ngff

        return write_ngff(path, data, axes=axes, spacing=spacing, dtype=dtype, attrs=attrs)
    data = np.asarray(data)
    axes = check_axes(axes, data.ndim, name=str(path), shape=data.shape)
    if dtype is None:
        dtype = np.float32 if data.dtype.kind == "f" or data.dtype == np.float64 else data.dtype
    dtype = np.dtype(dtype)
    if dtype.type not in WRITE_DTYPES:
        raise CareError(f"{path}: cannot write dtype {dtype}; use uint8, uint16 or float32")
    if dtype.kind == "u" and data.dtype != dtype:
        info = np.iinfo(dtype)
        lo, hi = np.nanmin(data), np.nanmax(data)
        if lo < info.min or hi > info.max or not np.isfinite(data).all():
            raise CareError(
                f"{path}: values in [{lo}, {hi}] do not fit in {dtype}; write float32 instead"
            )
        data = np.round(data)
    data = data.astype(dtype, copy=False)
    stored = _storage_axes(axes)
    # one copy at most (none when the order is already OME's), shared by the UUID's hash and tifffile
    data = np.ascontiguousarray(np.transpose(data, [axes.index(a) for a in stored.replace("Q", "S")]))
    if not path.parent.exists():
        raise CareError(f"{path}: the folder {path.parent} does not exist")
    # A UUID derived from the content (instead of tifffile's random one): same pixels, same bytes.
    digest = hashlib.sha256(data.view(np.uint8).ravel())
    digest.update(f"{axes} {data.shape}".encode())
    metadata = {"axes": stored, "UUID": str(uuid.UUID(bytes=digest.digest()[:16])), "Creator": "carecore",
                "MapAnnotation": {AXES_ANNOTATION: axes}}
    for a, v in (spacing or {}).items():
        if a in "XYZ" and v:
            metadata[f"PhysicalSize{a}"] = float(v)
            metadata[f"PhysicalSize{a}Unit"] = "µm"
    if (spacing or {}).get("T") and "T" in axes:   # the frame interval, in seconds
        metadata["TimeIncrement"] = float(spacing["T"])
        metadata["TimeIncrementUnit"] = "s"
    tmp = atomic_path(path)
    try:
        tifffile.imwrite(tmp, data, ome=True, photometric="minisblack", metadata=metadata,
                         compression=compression)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

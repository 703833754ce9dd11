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
import tempfile
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
        Voxel size per spatial axis letter (in micrometres) where known, e.g. ``{"Z": 1.0}``.
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


def _axes_from_tiff(tif):
    """Axes string from the file's own metadata, or None when it has none we trust."""
    series = tif.series[0]
    axes = series.axes.upper()
    if tif.is_imagej or tif.is_ome:
        axes = axes.replace("S", "C") if "C" not in axes else axes
        axes = axes.replace("Q", "")
        return axes if set(axes) <= set("TCZYX") and len(axes) == len(series.shape) else None
    return None


def _spacing_from_tiff(tif):
    spacing = {}
    try:
        if tif.is_ome:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(tif.ome_metadata)
            for el in root.iter():
                if el.tag.endswith("Pixels"):
                    for a in "XYZ":
                        v = el.attrib.get(f"PhysicalSize{a}")
                        if v is not None:
                            spacing[a] = float(v)
                    break
        elif tif.is_imagej:
            md = tif.imagej_metadata or {}
            if "spacing" in md:
                spacing["Z"] = float(md["spacing"])
            tags = tif.pages[0].tags
            if "XResolution" in tags:
                num, den = tags["XResolution"].value
                if num:
                    spacing["X"] = den / num
            if "YResolution" in tags:
                num, den = tags["YResolution"].value
                if num:
                    spacing["Y"] = den / num
    except Exception:  # metadata is a courtesy: never fail a read because of it
        pass
    return spacing


def read_image(path, *, axes=None, mmap=False):
    """Read a TIFF file or an OME-Zarr image into an :class:`Image`.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff`` file (ImageJ, OME or plain), or an OME-Zarr folder (``*.ome.zarr``,
        :func:`carecore.ngff.read_ngff`).
    axes : str, optional
        Overrides the axes found in (or guessed for) the file.
    mmap : bool
        Memory-map the pixels instead of reading them (uncompressed TIFF files only; OME-Zarr: a
        dask array of its chunks), so that images larger than RAM can be streamed.

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
        from .ngff import read_ngff

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
            file_axes = _axes_from_tiff(tif)
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
    guessed = False
    if axes is None:
        if file_axes is None:
            data = data.reshape(_squeezed(data.shape))
            axes, guessed = guess_axes(data.ndim), True
        else:
            axes = file_axes
    axes = check_axes(axes, data.ndim, name=str(path), shape=data.shape)
    return Image(data=data, axes=axes, spacing=spacing, path=str(path), axes_guessed=guessed)


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
            series = tif.series[0]
            axes = _axes_from_tiff(tif)
            shape = tuple(series.shape)
    except Exception as e:
        raise CareError(f"{path}: not a readable TIFF file ({e})") from None
    if axes is None:
        shape = _squeezed(shape)
        return guess_axes(len(shape)), shape, True
    return axes, shape, False


TIFF_SUFFIXES = (".tif", ".tiff")


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
    if not folder.is_dir():
        raise CareError(f"{folder}: no such folder")
    return [p for p in sorted(folder.iterdir()) if is_image_path(p)]


def atomic_path(path):
    """A temporary path in the same folder as ``path``, for write-then-rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_image(path, data, *, axes, spacing=None, dtype=None, compression=None):
    """Write ``data`` with its axes (and voxel size) to an OME-TIFF file, atomically.

    A path ending in ``.zarr`` writes an OME-Zarr image instead (:func:`carecore.ngff.write_ngff`: NGFF
    0.4 with a pyramid, axes in T C Z Y X order).

    Parameters
    ----------
    path : str or Path
        Destination; the folder must exist.
    data : array_like
        uint8, uint16 or float32 pixels (float64 is stored as float32).
    axes : str
        One letter per dimension.
    spacing : dict, optional
        Voxel size per spatial axis in micrometres, e.g. ``{"Z": 1.0, "Y": 0.2, "X": 0.2}``.
    dtype : numpy dtype, optional
        Convert to this type first (uint8, uint16 or float32); integer conversion rounds and errors
        out when values fall outside the type's range.

    Examples
    --------
    >>> write_image("restored.tif", restored, axes="ZYX", spacing={"Z": 1.0})  # doctest: +SKIP
    """
    import tifffile

    path = Path(path)
    from .ngff import is_ngff

    if is_ngff(path):
        from .ngff import write_ngff

        return write_ngff(path, data, axes=axes, spacing=spacing, dtype=dtype)
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
    if not path.parent.exists():
        raise CareError(f"{path}: the folder {path.parent} does not exist")
    # A UUID derived from the content (instead of tifffile's random one): same pixels, same bytes.
    digest = hashlib.sha256(np.ascontiguousarray(data).view(np.uint8).ravel()).digest()
    metadata = {"axes": axes, "UUID": str(uuid.UUID(bytes=digest[:16])), "Creator": "carecore"}
    for a, v in (spacing or {}).items():
        if a in "XYZ" and v:
            metadata[f"PhysicalSize{a}"] = float(v)
            metadata[f"PhysicalSize{a}Unit"] = "µm"
    tmp = atomic_path(path)
    try:
        tifffile.imwrite(tmp, data, ome=True, metadata=metadata, compression=compression)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

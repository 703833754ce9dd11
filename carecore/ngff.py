"""OME-Zarr (NGFF 0.4) reading and writing with axes and voxel size.

An OME-Zarr image is a folder (``*.ome.zarr``) holding a multiscale pyramid: level ``0`` at full
resolution, then levels ``1``, ``2``, ... halved along Y and X (Z and T kept), each with its voxel size
in ``coordinateTransformations``. carecore writes NGFF **0.4** (Zarr v2), which Fiji's MoBIE and
BigDataViewer open as well as napari and neuroglancer, and reads 0.4 and 0.5.

NGFF orders axes ``T C Z Y X``: writing moves carecore's axes into that order (``ZCYX`` is stored as
``CZYX``), reading gives the axes in the stored order. ``S`` (sample) has no NGFF equivalent and is
refused. Extra images of the same store (a restoration's scale, interval bounds, disagreement) are
multiscale images of their own under ``extras/<name>``: viewers open the store's root image, and an
extra by its path (``OUT.ome.zarr/extras/scale``).

Writes are atomic like every other write of carecore: the store is written beside its destination
and swapped in when complete (:mod:`carecore._atomic`). Reads can stay lazy: ``read_image(path,
mmap=True)`` gives a dask array that reads chunks only when sliced or computed.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from .axes import check_axes
from .errors import CareError

#: NGFF's axis order
NGFF_ORDER = "TCZYX"
NGFF_VERSION = "0.4"
EXTRAS = "extras"
_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_TO_UM = {"micrometer": 1.0, "micron": 1.0, "µm": 1.0, "um": 1.0, "nanometer": 1e-3, "nm": 1e-3,
          "millimeter": 1e3, "mm": 1e3, "meter": 1e6, "m": 1e6, "angstrom": 1e-4, "centimeter": 1e4}
#: chunk sides of written arrays (per axis letter; T and C one at a time)
DEFAULT_CHUNKS = {"T": 1, "C": 1, "Z": 32, "Y": 256, "X": 256}


def _require():
    try:
        import zarr  # noqa: F401
    except ImportError:
        raise CareError("OME-Zarr needs the optional packages of carecore[zarr]: pip install -e '.[zarr]'") from None


def is_ngff(path):
    """True when ``path`` names an OME-Zarr image: a ``*.zarr`` name, or a folder holding a Zarr group."""
    path = Path(path)
    if path.name.lower().endswith(".zarr"):
        return True
    return path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())


def is_restoration(path):
    """True when the Zarr store ``path`` is a restoration carecore wrote (its ``carecore`` attribute names the
    model: chunked prediction, ``carecore predict --out X.ome.zarr``)."""
    try:
        import zarr

        return bool((zarr.open_group(str(path), mode="r").attrs.get("carecore") or {}).get("model"))
    except Exception:  # noqa: BLE001 - not a readable group: not a restoration
        return False


def check_restoration_target(path):
    """Refuse to write a restoration over an existing Zarr store that is not one (:func:`is_restoration`): a raw
    acquisition named as ``--out`` was replaced after a note (a user trial lost 165 MB so). Missing or empty
    folders, and folders that are no store, are left to :func:`carecore._atomic.check_replaceable`."""
    from ._atomic import ZARR_STORE

    path = Path(path)
    if not path.is_dir() or not any((path / m).is_file() for m in ZARR_STORE[1]) or is_restoration(path):
        return
    raise CareError(f"{path}: an OME-Zarr store that is not a restoration carecore wrote (its attributes name no "
                    "model; restorations written in memory before 2026-12-08 lack that mark too): writing the "
                    "restoration there would replace it and all it holds; give a new name, or delete that store "
                    "yourself if it may go")


def ngff_axes(axes, *, name="image"):
    """``axes`` in NGFF order (``'ZCYX'`` -> ``'CZYX'``); ``S`` is refused."""
    axes = check_axes(axes, name=name)
    if "S" in axes:
        raise CareError(f"{name}: axes {axes!r} have S (sample), which OME-Zarr cannot store; write one image per "
                        "sample, or call the samples T")
    return "".join(a for a in NGFF_ORDER if a in axes)


def _multiscales(attrs, path):
    ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not ms:
        raise CareError(f"{path}: a Zarr group without OME-NGFF multiscales metadata; not an OME-Zarr image")
    return ms[0]


def _open_group(path):
    _require()
    import zarr

    path = Path(path)
    if not path.exists():
        raise CareError(f"{path}: no such OME-Zarr folder")
    if not path.is_dir():
        raise CareError(f"{path}: is a file, expected an OME-Zarr folder")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as e:
        raise CareError(f"{path}: not a readable Zarr group ({type(e).__name__}: {e})") from None


def describe(path):
    """``(axes, spacing, level paths, multiscales metadata)`` of an OME-Zarr image, pixels unread."""
    g = _open_group(path)
    ms = _multiscales(dict(g.attrs), path)
    axes_md = ms.get("axes")
    datasets = ms.get("datasets") or []
    if not datasets:
        raise CareError(f"{path}: its multiscales metadata lists no datasets")
    if not axes_md:  # NGFF 0.3 and older: no axes; the common case is TCZYX
        ndim = g[datasets[0]["path"]].ndim
        axes_md = [{"name": a.lower()} for a in NGFF_ORDER[-ndim:]]
    axes = "".join((a["name"] if isinstance(a, dict) else str(a)).upper() for a in axes_md)
    if not set(axes) <= set(NGFF_ORDER):
        raise CareError(f"{path}: axes {[a.get('name') if isinstance(a, dict) else a for a in axes_md]} are not "
                        "among t, c, z, y, x; carecore cannot map them")
    spacing = {}
    for t in datasets[0].get("coordinateTransformations") or ms.get("coordinateTransformations") or []:
        if t.get("type") == "scale" and len(t.get("scale", [])) == len(axes):
            for a, md, s in zip(axes, axes_md, t["scale"]):
                unit = md.get("unit") if isinstance(md, dict) else None
                if a in "ZYX" and (unit or float(s) != 1.0):
                    # (no unit and a scale of 1: no voxel size recorded, as carecore writes an image without
                    # one; a trial found "1 µm" invented after a round trip)
                    spacing[a] = float(s) * _TO_UM.get(str(unit or "micrometer").lower(), 1.0)
                elif a == "T" and unit and float(s) > 0:   # a frame interval where its unit is a time's
                    from .io import unit_to_s

                    factor = unit_to_s(str(unit))
                    if factor is not None:
                        spacing[a] = float(s) * factor
    return axes, spacing, [d["path"] for d in datasets], ms


def open_level(path, level=0):
    """The Zarr array of pyramid ``level`` (0: full resolution); slicing it reads only those chunks."""
    axes, _, paths, _ = describe(path)
    if not 0 <= level < len(paths):
        raise CareError(f"{path}: has {len(paths)} pyramid level(s), no level {level}")
    g = _open_group(path)
    try:
        arr = g[paths[level]]
    except KeyError:
        raise CareError(f"{path}: level {level} ({paths[level]!r}) is listed but missing") from None
    if arr.ndim != len(axes):
        raise CareError(f"{path}: level {level} has {arr.ndim} dimensions (shape {arr.shape}) but the axes "
                        f"{axes!r} name {len(axes)}")
    return arr


def read_ngff(path, *, axes=None, lazy=False, level=0):
    """Read an OME-Zarr image into an :class:`~carecore.Image`.

    Parameters
    ----------
    path : str or Path
        The store folder (``*.ome.zarr``), or an image inside one (``OUT.ome.zarr/extras/scale``).
    axes : str, optional
        Overrides the axes of the metadata.
    lazy : bool
        A dask array that reads chunks when sliced or computed, instead of numpy.
    level : int
        The pyramid level (0: full resolution).

    Examples
    --------
    >>> img = read_ngff("restored.ome.zarr", lazy=True)   # doctest: +SKIP
    >>> img.axes, img.spacing                             # doctest: +SKIP
    ('ZYX', {'Z': 1.0, 'Y': 0.2, 'X': 0.2})
    """
    from .io import Image

    file_axes, spacing, _, _ = describe(path)
    arr = open_level(path, level)
    if level:
        spacing = {a: v * 2**level if a in "YX" else v for a, v in spacing.items()}
    if arr.size == 0:
        raise CareError(f"{path}: the image is empty (shape {arr.shape})")
    if lazy:
        import dask.array as da

        data = da.from_zarr(arr)
    else:
        try:
            data = arr[...]
        except Exception as e:
            raise CareError(f"{path}: could not read the pixels ({type(e).__name__}: {e})") from None
    axes = check_axes(axes or file_axes, data.ndim, name=str(path), shape=data.shape)
    return Image(data=data, axes=axes, spacing=spacing, path=str(path), axes_guessed=False)


def pyramid_shapes(shape, axes, levels=None):
    """Shapes of the pyramid levels: Y and X halved (rounded down) while the larger side exceeds 64 and
    the smaller stays at least 16 (``levels`` forces a count)."""
    iy, ix = axes.index("Y"), axes.index("X")
    shapes = [tuple(shape)]
    while len(shapes) < (levels or 8):
        s = list(shapes[-1])
        if levels is None and (max(s[iy], s[ix]) <= 64 or min(s[iy], s[ix]) // 2 < 16):
            break
        if min(s[iy], s[ix]) < 2:
            break
        s[iy], s[ix] = s[iy] // 2, s[ix] // 2
        shapes.append(tuple(s))
    return shapes


def default_chunks(shape, axes):
    return tuple(min(n, DEFAULT_CHUNKS[a]) for n, a in zip(shape, axes))


def create_image(group, shape, axes, *, dtype, chunks=None, spacing=None, levels=None, name=None, fill_value=0):
    """An empty multiscale image in Zarr ``group`` (level arrays created, NGFF 0.4 metadata written).

    Returns the level arrays, level 0 first; fill level 0, then call :func:`fill_pyramid`.
    """
    import numcodecs

    axes = ngff_axes(axes)
    chunks = tuple(chunks) if chunks is not None else default_chunks(shape, axes)
    if len(chunks) != len(shape) or len(shape) != len(axes):
        raise CareError(f"{name or 'image'}: shape {tuple(shape)}, chunks {chunks} and axes {axes!r} disagree")
    arrays, datasets = [], []
    sp = [float((spacing or {}).get(a) or 1.0) if a in "TZYX" else 1.0 for a in axes]
    for k, s in enumerate(pyramid_shapes(shape, axes, levels)):
        arrays.append(group.create_array(
            str(k), shape=s, chunks=tuple(max(1, min(c, n)) for c, n in zip(chunks, s)), dtype=dtype,
            fill_value=fill_value, chunk_key_encoding={"name": "v2", "separator": "/"},
            compressors=numcodecs.Zstd(level=3), overwrite=True))
        f = [2**k if a in "YX" else 1 for a in axes]
        transforms = [{"type": "scale", "scale": [v * fi for v, fi in zip(sp, f)]}]
        if k:  # a binned pixel's centre lies half a (fine) pixel further in
            transforms.append({"type": "translation", "translation": [(fi - 1) / 2 * v for v, fi in zip(sp, f)]})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    timed = bool((spacing or {}).get("T"))
    # a unit only where the size is known (an unknown voxel size stays unknown: scale 1, no unit)
    md_axes = [{"name": a.lower(), "type": _TYPES[a], **({"unit": "micrometer"} if a in "ZYX" and (spacing or {}).get(a)
                                                          else {"unit": "second"} if a == "T" and timed else {})}
               for a in axes]
    group.attrs["multiscales"] = [{"version": NGFF_VERSION, "name": name or "image", "axes": md_axes,
                                   "datasets": datasets, "type": "mean (2x2 binning along Y and X)",
                                   "metadata": {"method": "carecore.ngff.fill_pyramid"}}]
    return arrays


def _bin_yx(x, axes):
    """Mean of 2x2 blocks along Y and X (odd last rows/columns dropped)."""
    iy, ix = axes.index("Y"), axes.index("X")
    ny, nx = x.shape[iy] // 2 * 2, x.shape[ix] // 2 * 2
    x = x[tuple(slice(0, ny) if i == iy else slice(0, nx) if i == ix else slice(None) for i in range(x.ndim))]
    shape = []
    for i, n in enumerate(x.shape):
        shape += [n // 2, 2] if i in (iy, ix) else [n]
    red = tuple(i + 1 + sum(1 for j in (iy, ix) if j < i) for i in (iy, ix))
    return x.astype(np.float32).reshape(shape).mean(axis=red)


def fill_pyramid(arrays, axes, *, compute=None):
    """Compute levels 1, 2, ... of a pyramid from level 0, one chunk at a time (dask).

    ``compute`` runs a list of dask objects (default: dask's threads); :func:`carecore.predict_chunked`
    runs them on its cluster.
    """
    import dask
    import dask.array as da

    axes = ngff_axes(axes)
    for prev, arr in zip(arrays[:-1], arrays[1:]):
        src = da.from_zarr(prev)
        # whole 2x2 blocks per dask chunk: source chunks of twice the target chunks along Y and X
        src = src.rechunk(tuple(2 * c if a in "YX" else c for c, a in zip(arr.chunks, axes)))
        binned = src.map_blocks(_bin_yx, axes, dtype=np.float32,
                                chunks=tuple(tuple(n // 2 for n in ch) if a in "YX" else ch
                                             for ch, a in zip(src.chunks, axes)))
        binned = binned[tuple(slice(0, n) for n in arr.shape)]
        if np.dtype(arr.dtype).kind in "ui":
            binned = da.round(binned)
        binned = binned.astype(arr.dtype).rechunk(arr.chunks)
        job = da.store(binned, arr, lock=False, compute=False)
        if compute is None:
            with dask.config.set(scheduler="threads"):
                dask.compute(job)
        else:
            compute([job])


def convert_dtype(data, dtype, *, name):
    """``data`` as uint8, uint16 or float32 (float64 -> float32; integers rounded, range checked)."""
    from .io import WRITE_DTYPES

    if dtype is None:
        dtype = np.float32 if data.dtype.kind == "f" else data.dtype
    dtype = np.dtype(dtype)
    if dtype.type not in WRITE_DTYPES:
        raise CareError(f"{name}: cannot write dtype {dtype}; use uint8, uint16 or float32")
    if dtype.kind == "u" and data.dtype != dtype:
        info = np.iinfo(dtype)
        lo, hi = (float(v) for v in _compute(data.min(), data.max()))
        if lo < info.min or hi > info.max or not math.isfinite(lo + hi):
            raise CareError(f"{name}: values in [{lo}, {hi}] do not fit in {dtype}; write float32 instead")
        data = data.round()
    return data.astype(dtype, copy=False) if isinstance(data, np.ndarray) else data.astype(dtype)


def _compute(*xs):
    if any(hasattr(x, "dask") for x in xs):
        import dask

        with dask.config.set(scheduler="threads"):
            return dask.compute(*xs)
    return xs


def write_ngff(path, data, *, axes, spacing=None, dtype=None, chunks=None, levels=None, extras=None, attrs=None):
    """Write ``data`` with its axes and voxel size as an OME-Zarr image (NGFF 0.4, pyramid), atomically.

    Parameters
    ----------
    path : str or Path
        The store folder to write (``*.ome.zarr``); its parent must exist. An existing store is replaced.
    data : array_like or dask array
        uint8, uint16 or float32 pixels (float64 is stored as float32); a dask array (or a memory map)
        is written chunk by chunk.
    axes : str
        One letter per dimension (any order; stored in NGFF's T C Z Y X order; no S).
    spacing : dict, optional
        Voxel size per spatial axis in micrometres.
    dtype : numpy dtype, optional
        Convert to uint8, uint16 or float32 first (integers: rounded, range checked).
    chunks : dict or tuple, optional
        Chunk sides, per axis letter (``{"Z": 16}``) or per stored axis; default :data:`DEFAULT_CHUNKS`.
    levels : int, optional
        Pyramid levels (default: halve Y and X down to about 64 pixels).
    extras : dict, optional
        ``{name: array}`` with the axes and shape of ``data``: written as images ``extras/<name>``.
    attrs : dict, optional
        Written into the root's ``carecore`` attribute (a restoration's ``model``: see :func:`is_restoration`).

    Examples
    --------
    >>> write_ngff("restored.ome.zarr", restored, axes="ZYX", spacing={"Z": 1.0, "Y": 0.2, "X": 0.2})  # doctest: +SKIP
    """
    _require()
    import zarr

    from ._atomic import ZARR_STORE, check_replaceable, fresh_tmp, swap_in
    from .axes import move_axes

    path = Path(path)
    if not path.parent.exists():
        raise CareError(f"{path}: the folder {path.parent} does not exist")
    if path.exists() and not path.is_dir():
        raise CareError(f"{path}: is a file; an OME-Zarr image is a folder")
    check_replaceable(path, ZARR_STORE)
    images = {None: data, **(extras or {})}
    tmp = fresh_tmp(path)
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        for key, x in images.items():
            name = str(path) if key is None else f"{path}/{EXTRAS}/{key}"
            if not hasattr(x, "dask"):
                x = np.asarray(x) if not isinstance(x, np.memmap) else x
            a = check_axes(axes, x.ndim, name=name, shape=x.shape)
            order = ngff_axes(a, name=name)
            if key is not None and tuple(x.shape) != tuple(data.shape):
                raise CareError(f"{name}: extra image of shape {tuple(x.shape)}, expected the image's {tuple(data.shape)}")
            perm = [a.index(c) for c in order]
            if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):
                x = move_axes(x, a, order, name=name)
            else:
                import dask.array as da

                x = da.from_array(x, chunks="auto") if not hasattr(x, "dask") else x
                x = da.transpose(x, perm)
            x = convert_dtype(x, dtype, name=name)
            if isinstance(chunks, dict):
                ch = tuple(min(n, int(chunks.get(c, DEFAULT_CHUNKS[c]))) for n, c in zip(x.shape, order))
            elif chunks is not None:
                ch = tuple(chunks)
            else:
                ch = default_chunks(x.shape, order)
            group = root if key is None else root.require_group(EXTRAS).require_group(key)
            arrays = create_image(group, x.shape, order, dtype=x.dtype, chunks=ch, spacing=spacing, levels=levels,
                                  name=path.name if key is None else key)
            if hasattr(x, "dask"):
                import dask
                import dask.array as da

                with dask.config.set(scheduler="threads"):
                    da.store(x.rechunk(arrays[0].chunks), arrays[0], lock=False)
            else:
                arrays[0][...] = x
            fill_pyramid(arrays, order)
        if extras or attrs:
            root.attrs["carecore"] = {**({"extras": sorted(extras)} if extras else {}), **(attrs or {})}
        swap_in(tmp, path, ZARR_STORE)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path

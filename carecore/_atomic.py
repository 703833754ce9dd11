"""Write-then-rename for folders: a folder appears complete or not at all.

Each writer writes into its own uniquely named sibling ``.NAME.<random>.part``; :func:`swap_in`
moves an existing folder aside to a unique ``.NAME.<random>.old``, renames the new one into place
and removes the old one. POSIX has no portable atomic exchange of two folders, so a crash between
the two renames leaves the complete old folder under ``.old`` and nothing at ``NAME``:
:func:`recover` (called by the loaders) puts it back.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path


def fresh_tmp(folder):
    """An empty, uniquely named sibling folder ``.NAME.<random>.part`` to write into."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    from .io import create_unique   # mkdtemp's 0700 would stay on the folder renamed into place: mkdir's umask mode
    return create_unique(folder.parent, f".{folder.name}.", ".part", folder=True)


#: The files that mark a folder as one of its kind, as carecore writes it: only such a folder (or an
#: empty one) is replaced, never a folder of the user's with other things in it (a Zarr store named as
#: an output is replaced whoever wrote it, as a TIFF file would be; a restoration replaces only a restoration:
#: :func:`carecore.ngff.check_restoration_target`).
MODEL_FOLDER = ("model folder", ("manifest.json",))        # (an ensemble's folder is not: its members would go)
ENSEMBLE_FOLDER = ("model or ensemble folder", ("manifest.json", "ensemble.json"))
PATCH_FOLDER = ("patch folder", ("patches.json",))
REPORT_FOLDER = ("quality report folder", ("report.json",))
ZARR_STORE = ("Zarr store", ("zarr.json", ".zgroup", ".zarray"))   # (any: replaced as a TIFF file would be)


def check_replaceable(folder, kind):
    """Refuse to replace ``folder`` unless it is missing, empty or a folder of ``kind`` carecore wrote.

    ``kind`` is ``(what, marker files)``, e.g. :data:`MODEL_FOLDER`. A file where the folder would go,
    or a folder holding other things (the user's images, say), is an error that names it: replacing it
    would delete everything in it.
    """
    from .errors import CareError

    folder = Path(folder)
    what, markers = kind
    if not folder.exists():
        return
    if not folder.is_dir():
        raise CareError(f"{folder}: is a file; a {what} goes there: give another path")
    if any((folder / m).is_file() for m in markers):
        return
    try:
        empty = next(os.scandir(folder), None) is None
    except OSError as e:
        raise CareError(f"{folder}: cannot be read ({e.strerror}); give another folder for the {what}") from None
    if not empty:
        raise CareError(f"{folder}: exists and is not a {what} (no {' or '.join(markers)} in it); "
                        f"writing the {what} there would delete everything in it: give a new or empty folder")


def swap_in(tmp, folder, kind):
    """Replace ``folder`` by ``tmp`` (two renames; the old folder is removed after the swap).

    An existing ``folder`` is replaced only if it is empty or a folder of ``kind`` (see
    :func:`check_replaceable`); writers call that before their work too.
    """
    folder = Path(folder)
    check_replaceable(folder, kind)
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.rmdir(old)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


def recover(folder, *, min_age=10.0):
    """Put back the folder a crash between :func:`swap_in`'s two renames left aside; True if it did.

    Only when ``folder`` is missing and a ``.NAME.<random>.old`` sibling older than ``min_age`` seconds
    exists (the newest wins): a younger one may belong to a writer between its two renames.
    """
    folder = Path(folder)
    if folder.exists() or not folder.parent.is_dir():
        return False
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.[a-z0-9_]{{8}}\.old")  # names made by swap_in only
    now = time.time()
    olds = [p for p in folder.parent.iterdir() if pattern.fullmatch(p.name)
            and now - p.stat().st_mtime > min_age]  # not the ms-old one of a writer between its renames
    if not olds:
        return False
    os.replace(max(olds, key=lambda p: p.stat().st_mtime), folder)
    return True

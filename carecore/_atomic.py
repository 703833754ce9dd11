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
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))


def swap_in(tmp, folder):
    """Replace ``folder`` by ``tmp`` (two renames; the old folder is removed after the swap)."""
    folder = Path(folder)
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

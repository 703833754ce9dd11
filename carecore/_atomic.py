"""Write-then-rename for folders: a folder appears complete or not at all."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def fresh_tmp(folder):
    """An empty sibling folder ``.NAME.part`` to write into."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.part"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def swap_in(tmp, folder):
    """Replace ``folder`` by ``tmp`` (renames; the old folder is removed after the swap)."""
    folder = Path(folder)
    if folder.exists():
        old = folder.parent / f".{folder.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
    else:
        os.replace(tmp, folder)

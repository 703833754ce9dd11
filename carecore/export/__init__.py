"""Models that leave the lab and come in: bioimage.io packages (:mod:`.bioimageio`) and CSBDeep
model folders (:mod:`.csbdeep`). Keras loads only when a function is called."""
from __future__ import annotations

from .bioimageio import export_bioimageio
from .csbdeep import import_csbdeep

__all__ = ["export_bioimageio", "import_csbdeep"]

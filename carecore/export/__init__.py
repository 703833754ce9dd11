"""Models that leave the lab and come in: bioimage.io packages written (:mod:`.bioimageio`) and run
without bioimageio.core (:mod:`.package`), and CSBDeep model folders (:mod:`.csbdeep`). Keras loads
only when a function is called."""
from __future__ import annotations

from .bioimageio import export_bioimageio
from .csbdeep import import_csbdeep
from .package import BioimageioModel, is_bioimageio_package, load_bioimageio

__all__ = ["export_bioimageio", "import_csbdeep", "load_bioimageio", "BioimageioModel", "is_bioimageio_package"]

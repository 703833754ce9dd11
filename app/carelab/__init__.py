"""CARE Lab: the Voila wizard. Widgets only; every computation is a carecore call."""
from .state import LabState
from .wizard import CareLab

__all__ = ["LabState", "CareLab"]

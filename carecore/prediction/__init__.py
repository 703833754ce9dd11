"""Tiled prediction."""

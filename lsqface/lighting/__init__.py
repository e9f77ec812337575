"""Spherical-harmonic lighting: the basis, shading, and the inverse-SH validation (seed D)."""

from lsqface.lighting.sh import SH_CONSTANTS, SH_COUNT, constant_lighting, sh_basis, sh_shading

__all__ = ["SH_CONSTANTS", "SH_COUNT", "constant_lighting", "sh_basis", "sh_shading"]

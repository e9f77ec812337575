"""Rendering in plain torch: rasterise once, interpolate with autograd, shade, picture.

``rasterize`` finds the nearest triangle, barycentrics and depth per pixel (no
gradient); ``interpolate`` recomputes barycentrics with autograd so gradients
reach vertex positions and attributes. Conventions are in
:mod:`lsqface.render.rasterize`.
"""

from lsqface.render.interpolate import barycentrics_differentiable, face_normals, interpolate, vertex_normals
from lsqface.render.rasterize import Fragments, RenderError, pixel_centres, rasterize
from lsqface.render.shading import composite, lambert, render_mesh

__all__ = [
    "Fragments",
    "RenderError",
    "barycentrics_differentiable",
    "composite",
    "face_normals",
    "interpolate",
    "lambert",
    "pixel_centres",
    "rasterize",
    "render_mesh",
    "vertex_normals",
]

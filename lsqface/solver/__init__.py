"""The differentiable linear least-squares layer: sampling, geometric and photometric solves, camera.

The whole layer is :func:`fit` (:func:`fit_geometry` is its camera and shape half); its parts are plain functions of tensors.
"""

from lsqface.solver.camera import Camera, compose_inverse_camera, decompose_camera, project, to_camera
from lsqface.solver.fit import LeastSquaresFit, ShapeFit, SolverConfig, fit, fit_geometry
from lsqface.solver.geometry import GeometryFit, GeometryRegularisation, solve_geometry
from lsqface.solver.photometry import (
    PhotometryFit,
    PhotometryRegularisation,
    inverse_shading,
    reconstructed_colour,
    solve_photometry,
)
from lsqface.solver.preprocess import inverse_softplus_preprocess, softplus_preprocess
from lsqface.solver.sampling import GatheredSamples, PixelSamples, gather_map, gather_samples, sample_pixels

__all__ = [
    "Camera",
    "GatheredSamples",
    "GeometryFit",
    "GeometryRegularisation",
    "LeastSquaresFit",
    "PhotometryFit",
    "PhotometryRegularisation",
    "PixelSamples",
    "ShapeFit",
    "SolverConfig",
    "compose_inverse_camera",
    "decompose_camera",
    "fit",
    "fit_geometry",
    "gather_map",
    "gather_samples",
    "inverse_shading",
    "inverse_softplus_preprocess",
    "project",
    "reconstructed_colour",
    "sample_pixels",
    "softplus_preprocess",
    "solve_geometry",
    "solve_photometry",
    "to_camera",
]

"""Empirical validation of the inverse SH lighting model (seed D, Fig. 11).

Conventional lighting shades a surface by ``s(n) = F(n)^T c``; inverse
lighting models ``1 / s(n)`` by ``F(n)^T l``. For random lighting,
the inverse coefficients l are the least-squares fit of 1 / s at random points
of the sphere, and the error between s and the inverse model's shading
``1 / (F^T l)`` is reported at those points.

Random lighting (seed D): coefficients N(0, 0.2^2) added to constant lighting
of intensity 0.9. We read "constant lighting with intensity 0.9" as the
shading being 0.9 everywhere, i.e. the DC coefficient 0.9 / Y00 = 3.19 in the
orthonormal basis of :mod:`lsqface.lighting.sh`, and add the noise to all nine
coefficients (DC included). The same coefficients serve all three colour
channels, so the shading is grey.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lsqface.files import atomic_path
from lsqface.lighting.sh import SH_COUNT, constant_lighting, sh_basis

#: The seed's Fig. 11 errors for its four examples.
SEED_MAX_ERRORS = (0.049, 0.109, 0.123, 0.272)
SEED_RMS_ERRORS = (0.019, 0.043, 0.029, 0.058)


@dataclass(frozen=True)
class LightingExample:
    """One random lighting and its inverse fit.

    Attributes:
        coefficients: (9,) conventional SH coefficients c.
        inverse_coefficients: (9,) inverse SH coefficients l.
        max_error: max over the sphere points of |F^T c - 1 / (F^T l)|.
        rms_error: root-mean-square of the same.
        min_shading: the smallest conventional shading at the points (near 0 the inverse model fails).
    """

    coefficients: torch.Tensor
    inverse_coefficients: torch.Tensor
    max_error: float
    rms_error: float
    min_shading: float


def random_sphere_points(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(count, 3) float64 points uniform on the unit sphere (normalised Gaussians)."""
    points = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    return points / points.norm(dim=-1, keepdim=True)


def random_lighting(count: int, generator: torch.Generator | None = None, sigma: float = 0.2, intensity: float = 0.9) -> torch.Tensor:
    """(count, 9) float64 coefficients: constant shading ``intensity`` plus N(0, sigma^2) on each coefficient."""
    noise = sigma * torch.randn(count, SH_COUNT, generator=generator, dtype=torch.float64)
    return constant_lighting(intensity) + noise


def fit_inverse_lighting(coefficients: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Least-squares inverse coefficients l (E, 9) with F^T l ~ 1 / (F^T c) at ``points`` (P, 3), c (E, 9)."""
    basis = sh_basis(points)  # (P, 9)
    shading = coefficients @ basis.T  # (E, P)
    solution = torch.linalg.lstsq(basis.expand(len(coefficients), -1, -1), (1.0 / shading).unsqueeze(-1)).solution
    return solution.squeeze(-1)


def validate_inverse_lighting(examples: int = 4, seed: int = 0, points: int = 100000) -> list[LightingExample]:
    """Repeat seed Fig. 11: ``examples`` random lightings, inverse fits and errors at ``points`` sphere points."""
    generator = torch.Generator().manual_seed(seed)
    coefficients = random_lighting(examples, generator)
    sphere = random_sphere_points(points, generator)
    inverse = fit_inverse_lighting(coefficients, sphere)
    basis = sh_basis(sphere)
    shading = coefficients @ basis.T
    inverse_model_shading = 1.0 / (inverse @ basis.T)
    error = (shading - inverse_model_shading).abs()
    return [
        LightingExample(
            coefficients=coefficients[e],
            inverse_coefficients=inverse[e],
            max_error=float(error[e].max()),
            rms_error=float(error[e].square().mean().sqrt()),
            min_shading=float(shading[e].min()),
        )
        for e in range(examples)
    ]


def format_table(examples: list[LightingExample]) -> str:
    """The error table, ours beside the seed's Fig. 11 (the seed's has four columns)."""
    def row(name: str, values) -> str:
        return f"{name:<16}" + "".join(f"{value:>8.3f}" for value in values)

    lines = [
        row("Max error", [example.max_error for example in examples]),
        row("RMS error", [example.rms_error for example in examples]),
        row("Seed max error", SEED_MAX_ERRORS),
        row("Seed RMS error", SEED_RMS_ERRORS),
        row("Min shading", [example.min_shading for example in examples]),
    ]
    return "\n".join(lines)


def sphere_normal_image(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Normals (size, size, 3) of a unit sphere seen orthographically along -z (y up), and its mask (size, size)."""
    coordinates = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-coordinates, coordinates, indexing="ij")
    inside = x.square() + y.square() < 1
    z = (1 - x.square() - y.square()).clamp_min(0).sqrt()
    return torch.stack((x, y, z), -1) * inside[..., None], inside


def face_normal_image(uv_model, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space vertex normals of the mean face rendered orthographically from the front (+z), and the mask."""
    from lsqface.render.interpolate import interpolate, vertex_normals
    from lsqface.render.rasterize import rasterize

    model = uv_model.model
    vertices = torch.from_numpy(model.shape_mean).to(torch.float64)
    triangles = torch.from_numpy(model.triangles).to(torch.int64)
    centre = (vertices.amax(0) + vertices.amin(0)) / 2
    extent = (vertices.amax(0) - vertices.amin(0))[:2].max()
    scale = 0.95 * size / extent
    image_vertices = torch.stack(
        (
            (vertices[:, 0] - centre[0]) * scale + size / 2,
            -(vertices[:, 1] - centre[1]) * scale + size / 2,
            -(vertices[:, 2] - centre[2]),
        ),
        dim=-1,
    )[None]
    fragments = rasterize(image_vertices, triangles, size, size)
    normals = vertex_normals(vertices[None], triangles)
    image = interpolate(normals, fragments, None, triangles)[0]
    image = image / image.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return image, fragments.mask[0]


def write_validation_picture(
    examples: list[LightingExample], path: str | os.PathLike, normals: torch.Tensor, mask: torch.Tensor
) -> Path:
    """PNG with one column per example: conventional SH shading (top row), inverse SH shading (bottom row).

    Args:
        examples: from :func:`validate_inverse_lighting`.
        path: the PNG to write (atomically).
        normals: (H, W, 3) unit normals of the surface to shade; mask: (H, W) bool.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    basis = sh_basis(normals.to(torch.float64))
    figure, axes = plt.subplots(2, len(examples), figsize=(2.4 * len(examples), 5.2), squeeze=False)
    for column, example in enumerate(examples):
        conventional = basis @ example.coefficients
        inverse = 1.0 / (basis @ example.inverse_coefficients)
        for row, (name, shading) in enumerate((("Regular SH", conventional), ("Inverse SH", inverse))):
            picture = np.where(mask.numpy(), shading.clamp(0, 1.5).numpy() / 1.5, 1.0)
            ax = axes[row, column]
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name)
        axes[1, column].set_xlabel(f"max {example.max_error:.3f}\nRMS {example.rms_error:.3f}")
    figure.suptitle("Inverse SH lighting (seed Fig. 11); shading / 1.5 shown")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    return path

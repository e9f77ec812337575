"""Laplacian-eigenfunction albedo space: eigen-equation, orthonormality, analytic spectrum, prior, samples."""

from __future__ import annotations

import numpy as np
import pytest

from lsqface.morphable import albedo
from lsqface.morphable.albedo import (
    albedo_standard_deviations,
    cotangent_laplacian,
    laplacian_albedo,
    laplacian_eigenfunctions,
    skin_albedo_mean,
    srgb_to_linear,
)


def square_grid(n: int, jitter: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The unit square as an n x n vertex grid (z = 0), two triangles per cell, counter-clockwise."""
    xs, ys = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    vertices = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], axis=1)
    if jitter:
        inner = (xs.ravel() > 0) & (xs.ravel() < 1) & (ys.ravel() > 0) & (ys.ravel() < 1)
        offsets = np.random.default_rng(seed).uniform(-jitter, jitter, (n * n, 2)) / (n - 1)
        vertices[inner, :2] += offsets[inner]
    triangles = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            triangles += [[a, b, e], [a, e, d]]
    return vertices, np.array(triangles)


def test_srgb_to_linear_known_values():
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0])), [0.0, 0.04045 / 12.92, 0.21404, 1.0], atol=1e-5)
    np.testing.assert_allclose(skin_albedo_mean(), [0.5395, 0.3049, 0.2232], atol=1e-3)


def test_cotangent_laplacian_properties():
    vertices, triangles = square_grid(8, jitter=0.3)
    stiffness, areas = cotangent_laplacian(vertices, triangles)
    assert areas.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(stiffness @ np.ones(len(vertices)), 0, atol=1e-12)
    np.testing.assert_allclose((stiffness - stiffness.T).toarray(), 0, atol=1e-12)
    # Linear functions have zero Laplacian at interior vertices; the Dirichlet energy of f = x is the area.
    x = vertices[:, 0]
    assert x @ stiffness @ x == pytest.approx(1.0)
    assert np.linalg.eigvalsh(stiffness.toarray()).min() > -1e-10


def test_eigenpairs_satisfy_generalised_equation_and_are_orthonormal():
    vertices, triangles = square_grid(15, jitter=0.3)
    eigenvalues, eigenfunctions, mass = laplacian_eigenfunctions(vertices, triangles, 12)
    stiffness, _ = cotangent_laplacian(vertices, triangles)
    residual = stiffness @ eigenfunctions - (mass[:, None] * eigenfunctions) * eigenvalues
    assert np.abs(residual).max() < 1e-8 * max(1.0, eigenvalues.max())
    np.testing.assert_allclose(eigenfunctions.T @ (mass[:, None] * eigenfunctions), np.eye(12), atol=1e-9)
    assert mass.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(eigenfunctions[:, 0], 1.0, atol=1e-9)  # the constant "global tone" mode
    assert eigenvalues[0] == pytest.approx(0.0, abs=1e-8) and np.all(np.diff(eigenvalues) >= -1e-9)


def test_spectrum_matches_the_neumann_square():
    # Free-boundary unit square: lambda = pi^2 (m^2 + n^2): 0, pi^2, pi^2, 2 pi^2, 4 pi^2, 4 pi^2, 5 pi^2, 5 pi^2.
    vertices, triangles = square_grid(41)
    eigenvalues, _, _ = laplacian_eigenfunctions(vertices, triangles, 8)
    expected = np.pi**2 * np.array([0, 1, 1, 2, 4, 4, 5, 5])
    np.testing.assert_allclose(eigenvalues, expected, rtol=0.01, atol=1e-8)


def test_standard_deviations_formula():
    eigenvalues = np.array([0.0, 2.0, 6.0])
    mean = np.array([0.5, 0.3, 0.2])
    sigmas = albedo_standard_deviations(eigenvalues, mean, global_tone_fraction=0.2, detail_fraction=0.1)
    np.testing.assert_allclose(sigmas[0], 0.2 * mean)
    np.testing.assert_allclose(sigmas[1], 0.1 * mean / np.sqrt(2.0))
    np.testing.assert_allclose(sigmas[2], 0.1 * mean / np.sqrt(4.0))


def test_basis_layout_and_variance():
    vertices, triangles = square_grid(12)
    mean, basis = laplacian_albedo(vertices * 100, triangles, modes_per_channel=4)
    assert mean.shape == (144, 3) and basis.shape == (144, 3, 12)
    np.testing.assert_allclose(mean, np.broadcast_to(skin_albedo_mean(), (144, 3)))
    # Mode 3k + c lives only in channel c; the constant modes shift the whole face.
    for mode in range(12):
        channel = mode % 3
        others = [c for c in range(3) if c != channel]
        assert np.all(basis[:, others, mode] == 0) and np.any(basis[:, channel, mode] != 0)
    np.testing.assert_allclose(basis[:, 0, 0], albedo.DEFAULT_GLOBAL_TONE_FRACTION * skin_albedo_mean()[0])


def test_ict_albedo_samples_mostly_in_range(ict_model):
    rng = np.random.default_rng(0)
    coefficients = rng.standard_normal((100, ict_model.n_albedo))
    samples = ict_model.albedo_mean[None] + np.einsum("vcn,sn->svc", ict_model.albedo_basis, coefficients)
    inside = ((samples >= 0) & (samples <= 1)).mean()
    assert inside > 0.98  # measured 0.992 with seed 0 and 200 samples
    # The albedo varies smoothly: mean absolute difference across an edge is small.
    edges = ict_model.triangles[:, :2]
    jump = np.abs(samples[:, edges[:, 0]] - samples[:, edges[:, 1]]).mean()
    assert jump < 0.01

import math

import numpy as np
import pytest
import scipy.special
import torch

from lsqface.lighting.sh import SH_CONSTANTS, constant_lighting, sh_basis, sh_shading


def _sphere_quadrature(n_theta=24, n_phi=48):
    """Gauss-Legendre in cos(theta) times uniform phi: exact for polynomials of degree < 2 n_theta."""
    cos_theta, weights_theta = np.polynomial.legendre.leggauss(n_theta)
    phi = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    ct, ph = np.meshgrid(cos_theta, phi, indexing="ij")
    st = np.sqrt(1 - ct**2)
    points = np.stack([st * np.cos(ph), st * np.sin(ph), ct], -1).reshape(-1, 3)
    weights = (weights_theta[:, None] * np.full(n_phi, 2 * np.pi / n_phi)[None, :]).reshape(-1)
    return points, weights


def test_basis_is_orthonormal_on_the_sphere():
    points, weights = _sphere_quadrature()
    basis = sh_basis(torch.from_numpy(points)).numpy()
    gram = (basis * weights[:, None]).T @ basis
    np.testing.assert_allclose(gram, np.eye(9), atol=1e-12)


def test_basis_matches_scipy_complex_harmonics_without_condon_shortley_phase():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    polar = np.arccos(points[:, 2])
    azimuth = np.arctan2(points[:, 1], points[:, 0])
    expected = []
    for degree in range(3):
        for order in range(-degree, degree + 1):
            complex_value = scipy.special.sph_harm_y(degree, abs(order), polar, azimuth)
            if order == 0:
                expected.append(complex_value.real)
            elif order > 0:
                expected.append(math.sqrt(2) * (-1) ** order * complex_value.real)
            else:
                expected.append(math.sqrt(2) * (-1) ** order * complex_value.imag)
    expected = np.stack(expected, -1)
    got = sh_basis(torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_constants_are_the_published_rounded_values():
    np.testing.assert_allclose(
        SH_CONSTANTS, [0.282095, 0.488603, 0.488603, 0.488603, 1.092548, 1.092548, 0.315392, 1.092548, 0.546274], atol=1e-6
    )


def test_shading_single_and_per_channel():
    normals = torch.nn.functional.normalize(torch.randn(4, 7, 3, dtype=torch.float64), dim=-1)
    coefficients = torch.randn(4, 1, 3, 9, dtype=torch.float64)
    shading = sh_shading(normals, coefficients)
    assert shading.shape == (4, 7, 3)
    for channel in range(3):
        single = sh_shading(normals, coefficients[:, :, channel])
        torch.testing.assert_close(shading[..., channel], single)
        manual = (sh_basis(normals) * coefficients[:, :, channel]).sum(-1)
        torch.testing.assert_close(single, manual)


def test_constant_lighting_gives_constant_shading():
    normals = torch.nn.functional.normalize(torch.randn(100, 3, dtype=torch.float64), dim=-1)
    shading = sh_shading(normals, constant_lighting(0.9))
    torch.testing.assert_close(shading, torch.full((100,), 0.9, dtype=torch.float64))


def test_per_channel_bands_of_a_batch_follow_the_explicit_formula():
    """One lighting per face, (B, 1, 3, 9), shading every vertex of that face (MoFA's decoder)."""
    normals = torch.nn.functional.normalize(torch.randn(1, 50, 3, dtype=torch.float64), dim=-1)
    coefficients = torch.zeros(1, 3, 9, dtype=torch.float64)
    coefficients[0, 0, 2] = 2.0  # red: the z band, Y10 = sqrt(3 / (4 pi)) z
    coefficients[0, 1, 8] = 1.0  # green: Y22 = sqrt(15 / (16 pi)) (x^2 - y^2)
    coefficients[0, 2, 4] = -1.0  # blue: Y2-2 = sqrt(15 / (4 pi)) x y
    x, y, z = normals[0].unbind(-1)
    shading = sh_shading(normals, coefficients[:, None])[0]
    torch.testing.assert_close(shading[:, 0], 2.0 * math.sqrt(3 / (4 * math.pi)) * z)
    torch.testing.assert_close(shading[:, 1], math.sqrt(15 / (16 * math.pi)) * (x * x - y * y))
    torch.testing.assert_close(shading[:, 2], -math.sqrt(15 / (4 * math.pi)) * x * y)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        sh_basis(torch.zeros(3, 2))
    with pytest.raises(ValueError):
        sh_shading(torch.zeros(1, 4, 3), torch.zeros(1, 3, 8))


def test_unbatched_rgb_coefficients_broadcast_over_points():
    normals = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    coefficients = torch.randn(3, 9, dtype=torch.float64)
    shading = sh_shading(normals, coefficients)
    assert shading.shape == (5, 3)
    torch.testing.assert_close(shading[:, 1], sh_basis(normals) @ coefficients[1])

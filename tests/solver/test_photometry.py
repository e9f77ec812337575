import numpy as np
import pytest
import torch

from lsqface.lighting.sh import constant_lighting, sh_basis
from lsqface.solver.photometry import PhotometryRegularisation, inverse_shading, reconstructed_colour, solve_photometry

ZERO = PhotometryRegularisation(lighting=0.0, albedo=0.0)


def make_photometric_scene(batch=2, points=200, count=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(batch, points, 3, generator=generator, dtype=torch.float64), dim=-1)
    lighting = constant_lighting(1.1).expand(batch, 3, 9) + 0.05 * torch.randn(batch, 3, 9, generator=generator, dtype=torch.float64)
    albedo_mean = 0.4 + 0.2 * torch.rand(batch, points, 3, generator=generator, dtype=torch.float64)
    albedo_basis = 0.05 * torch.randn(batch, points, 3, count, generator=generator, dtype=torch.float64)
    coefficients = torch.randn(batch, count, generator=generator, dtype=torch.float64)
    albedo = albedo_mean + (albedo_basis @ coefficients[:, None, :, None]).squeeze(-1)
    colours = albedo / inverse_shading(normals, lighting)
    confidence = 0.2 + torch.rand(batch, points, generator=generator, dtype=torch.float64)
    return normals, lighting, albedo_mean, albedo_basis, coefficients, colours, confidence


def test_exact_recovery_without_regularisation():
    normals, lighting, albedo_mean, albedo_basis, coefficients, colours, confidence = make_photometric_scene()
    assert (inverse_shading(normals, lighting) > 0).all()
    fit = solve_photometry(colours, normals, confidence, albedo_mean, albedo_basis, ZERO)
    torch.testing.assert_close(fit.inverse_lighting, lighting, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fit.albedo_coefficients, coefficients, rtol=1e-6, atol=1e-6)
    assert fit.residuals.abs().max() < 1e-10
    albedo = albedo_mean + (albedo_basis @ coefficients[:, None, :, None]).squeeze(-1)
    torch.testing.assert_close(reconstructed_colour(albedo, normals, fit.inverse_lighting), colours)


def test_equals_numpy_lstsq_on_the_stacked_system():
    normals, _, albedo_mean, albedo_basis, _, colours, confidence = make_photometric_scene(points=12, count=4, seed=1)
    generator = torch.Generator().manual_seed(2)
    gamma = torch.rand(2, 27, generator=generator, dtype=torch.float64)
    xi = torch.rand(4, generator=generator, dtype=torch.float64)
    target = torch.randn(3, 9, generator=generator, dtype=torch.float64)
    fit = solve_photometry(colours, normals, confidence, albedo_mean, albedo_basis, PhotometryRegularisation(gamma, target, xi))
    for b in range(2):
        rows, right = [], []
        basis = sh_basis(normals[b]).numpy()
        for j in range(12):
            for k in range(3):
                row = np.zeros(27 + 4)
                row[9 * k : 9 * k + 9] = colours[b, j, k].item() * basis[j]
                row[27:] = -albedo_basis[b, j, k].numpy()
                rows.append(np.sqrt(confidence[b, j].item()) * row)
                right.append(np.sqrt(confidence[b, j].item()) * albedo_mean[b, j, k].item())
        alpha = np.concatenate([gamma[b].numpy(), xi.numpy()])
        rows.extend(np.diag(np.sqrt(alpha)))
        right.extend(np.sqrt(alpha) * np.concatenate([target.numpy().reshape(-1), np.zeros(4)]))
        solution = np.linalg.lstsq(np.array(rows), np.array(right), rcond=None)[0]
        np.testing.assert_allclose(fit.inverse_lighting[b].numpy().reshape(-1), solution[:27], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fit.albedo_coefficients[b].numpy(), solution[27:], rtol=1e-8, atol=1e-10)


def test_error_falls_as_samples_grow():
    errors = []
    for points in (100, 1000, 10000):
        normals, lighting, albedo_mean, albedo_basis, coefficients, colours, confidence = make_photometric_scene(points=points, seed=3)
        generator = torch.Generator().manual_seed(4)
        noisy = colours + 0.01 * torch.randn(colours.shape, generator=generator, dtype=torch.float64)
        fit = solve_photometry(noisy, normals, confidence, albedo_mean, albedo_basis, ZERO)
        errors.append((fit.inverse_lighting - lighting).norm().item() + (fit.albedo_coefficients - coefficients).norm().item())
    assert errors[0] > 2 * errors[1] > 4 * errors[2], errors


def test_gradcheck_through_the_photometric_solve():
    normals, _, albedo_mean, albedo_basis, _, colours, confidence = make_photometric_scene(batch=1, points=8, count=2, seed=5)
    inputs = [t.clone().requires_grad_() for t in (colours, normals, confidence, albedo_mean, albedo_basis)]
    gamma = torch.full((27,), 0.1, dtype=torch.float64, requires_grad=True)

    def function(colours, normals, confidence, albedo_mean, albedo_basis, gamma):
        fit = solve_photometry(colours, normals, confidence, albedo_mean, albedo_basis, PhotometryRegularisation(gamma, None, 0.3))
        return fit.inverse_lighting, fit.albedo_coefficients

    assert torch.autograd.gradcheck(function, (*inputs, gamma), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_black_image_gives_the_lighting_target():
    normals, _, albedo_mean, albedo_basis, _, colours, confidence = make_photometric_scene(seed=6)
    black = torch.zeros_like(colours)
    fit = solve_photometry(black, normals, confidence, albedo_mean, albedo_basis, PhotometryRegularisation())
    torch.testing.assert_close(fit.inverse_lighting, constant_lighting(1.0).expand(2, 3, 9))
    assert torch.isfinite(fit.albedo_coefficients).all()
    unregularised = solve_photometry(black, normals, confidence, albedo_mean, albedo_basis, ZERO)
    assert unregularised.jittered.all()
    assert torch.isfinite(unregularised.inverse_lighting).all() and torch.isfinite(unregularised.albedo_coefficients).all()


def test_all_zero_confidence_gives_the_regularisation_targets():
    normals, _, albedo_mean, albedo_basis, _, colours, confidence = make_photometric_scene(seed=7)
    fit = solve_photometry(colours, normals, torch.zeros_like(confidence), albedo_mean, albedo_basis, PhotometryRegularisation())
    torch.testing.assert_close(fit.inverse_lighting, constant_lighting(1.0).expand(2, 3, 9))
    assert fit.albedo_coefficients.abs().max() == 0


def test_fewer_samples_than_unknowns_is_finite():
    normals, _, albedo_mean, albedo_basis, _, colours, confidence = make_photometric_scene(points=3, count=30, seed=8)
    fit = solve_photometry(colours, normals, confidence, albedo_mean, albedo_basis, PhotometryRegularisation())
    assert torch.isfinite(fit.inverse_lighting).all() and torch.isfinite(fit.albedo_coefficients).all()

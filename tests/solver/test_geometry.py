import numpy as np
import pytest
import torch

from lsqface.errors import SolverError
from lsqface.solver.camera import decompose_camera
from lsqface.solver.geometry import GeometryRegularisation, solve_geometry, solve_geometry_normalised

ZERO = GeometryRegularisation(inverse_camera=0.0, camera_centre=0.0, shape=0.0)


def stacked_lstsq(pixels, depth, confidence, mean, basis, alpha, target):
    """Independent reference: build the weighted Phi of eqs 33-35 row by row and call numpy.linalg.lstsq."""
    points, _, count = basis.shape
    rows, right = [], []
    for j in range(points):
        x = np.array([pixels[j, 0], pixels[j, 1], 1.0]) * depth[j]
        phi = np.zeros((3, 12 + count))
        for c in range(3):
            phi[c, 3 * c : 3 * c + 3] = x
            phi[c, 9 + c] = 1.0
        phi[:, 12:] = -basis[j]
        rows.append(np.sqrt(confidence[j]) * phi)
        right.append(np.sqrt(confidence[j]) * mean[j])
    rows.append(np.diag(np.sqrt(alpha)))
    right.append(np.sqrt(alpha) * target)
    solution = np.linalg.lstsq(np.concatenate(rows), np.concatenate(right), rcond=None)[0]
    return solution[:9].reshape(3, 3), solution[9:12], solution[12:]


def test_exact_recovery_without_regularisation(scene_factory):
    scene = scene_factory(batch=3, points=300, count=8)
    fit = solve_geometry(scene.pixels, scene.depth, scene.confidence, scene.mean, scene.basis, ZERO, scene.image_size)
    torch.testing.assert_close(fit.inverse_camera, scene.inverse_camera, rtol=1e-6, atol=1e-6 * scene.inverse_camera.abs().max().item())
    torch.testing.assert_close(fit.camera_centre, scene.camera_centre, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fit.shape_coefficients, scene.shape_coefficients, rtol=1e-6, atol=1e-6)
    assert fit.residuals.abs().max() < 1e-8
    camera = decompose_camera(fit.inverse_camera, fit.camera_centre)
    for name in ("intrinsics", "rotation", "translation", "depth_scale"):
        expected = getattr(scene.camera, name)
        torch.testing.assert_close(getattr(camera, name), expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())


@pytest.mark.parametrize("with_target", [False, True])
def test_normalised_solve_equals_numpy_lstsq(scene_factory, with_target):
    scene = scene_factory(batch=2, points=15, count=4, seed=1)
    generator = torch.Generator().manual_seed(5)
    pixels = torch.randn(2, 15, 2, generator=generator, dtype=torch.float64)
    depth = 1 + 0.3 * torch.randn(2, 15, generator=generator, dtype=torch.float64)
    shape_weight = torch.rand(2, 4, generator=generator, dtype=torch.float64)
    target = torch.tensor([0.0, 0.0, 40.0], dtype=torch.float64) if with_target else None
    regularisation = GeometryRegularisation(inverse_camera=0.3, camera_centre=0.05, camera_centre_target=target, shape=shape_weight)
    p, q, m, _ = solve_geometry_normalised(pixels, depth, scene.confidence, scene.mean, scene.basis, regularisation)
    for b in range(2):
        alpha = np.concatenate([np.full(9, 0.3), np.full(3, 0.05), shape_weight[b].numpy()])
        target_vector = np.zeros(16)
        if with_target:
            target_vector[9:12] = target.numpy()
        expected = stacked_lstsq(
            pixels[b].numpy(), depth[b].numpy(), scene.confidence[b].numpy(), scene.mean[b].numpy(), scene.basis[b].numpy(), alpha, target_vector
        )
        np.testing.assert_allclose(p[b].numpy(), expected[0], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(q[b].numpy(), expected[1], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(m[b].numpy(), expected[2], rtol=1e-8, atol=1e-10)


def test_full_solve_with_pixel_normalisation_equals_numpy_lstsq(scene_factory):
    scene = scene_factory(batch=2, points=20, count=3, seed=2)
    regularisation = GeometryRegularisation(inverse_camera=0.0, camera_centre=0.1, shape=0.5)
    fit = solve_geometry(scene.pixels, scene.depth, scene.confidence, scene.mean, scene.basis, regularisation, scene.image_size)
    for b in range(2):
        alpha = np.concatenate([np.zeros(9), np.full(3, 0.1), np.full(3, 0.5)])
        p, q, m = stacked_lstsq(
            scene.pixels[b].numpy(), scene.depth[b].numpy(), scene.confidence[b].numpy(), scene.mean[b].numpy(), scene.basis[b].numpy(), alpha, np.zeros(15)
        )
        np.testing.assert_allclose(fit.inverse_camera[b].numpy(), p, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(fit.camera_centre[b].numpy(), q, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fit.shape_coefficients[b].numpy(), m, rtol=1e-8, atol=1e-10)


def test_error_falls_as_samples_grow(scene_factory):
    errors = []
    for points in (100, 1000, 10000):
        scene = scene_factory(batch=2, points=points, count=6, seed=3)
        generator = torch.Generator().manual_seed(4)
        noisy_depth = scene.depth * (1 + 0.01 * torch.randn(scene.depth.shape, generator=generator, dtype=torch.float64))
        noisy_pixels = scene.pixels + 0.5 * torch.randn(scene.pixels.shape, generator=generator, dtype=torch.float64)
        fit = solve_geometry(noisy_pixels, noisy_depth, scene.confidence, scene.mean, scene.basis, ZERO, scene.image_size)
        errors.append((fit.shape_coefficients - scene.shape_coefficients).norm().item())
    assert errors[0] > 2 * errors[1] > 4 * errors[2], errors


def test_gradcheck_through_the_geometric_solve(scene_factory):
    scene = scene_factory(batch=2, points=10, count=3, seed=6)
    inputs = [t.clone().requires_grad_() for t in (scene.depth, scene.confidence, scene.mean, scene.basis)]
    shape_weight = torch.full((3,), 0.2, dtype=torch.float64, requires_grad=True)

    def function(depth, confidence, mean, basis, weight):
        regularisation = GeometryRegularisation(inverse_camera=1e-3, camera_centre=1e-2, shape=weight)
        fit = solve_geometry(scene.pixels, depth, confidence, mean, basis, regularisation, scene.image_size)
        return fit.inverse_camera, fit.camera_centre, fit.shape_coefficients

    assert torch.autograd.gradcheck(function, (*inputs, shape_weight), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_all_zero_confidence_gives_the_regularisation_target_then_a_camera_error(scene_factory):
    scene = scene_factory(batch=2, points=30, count=3)
    target = torch.tensor([0.0, 0.0, 50.0], dtype=torch.float64)
    regularisation = GeometryRegularisation(camera_centre=1.0, camera_centre_target=target)
    fit = solve_geometry(scene.pixels, scene.depth, torch.zeros_like(scene.confidence), scene.mean, scene.basis, regularisation, scene.image_size)
    assert torch.isfinite(fit.inverse_camera).all()
    torch.testing.assert_close(fit.camera_centre, target.expand(2, 3))
    assert fit.shape_coefficients.abs().max() == 0
    with pytest.raises(SolverError, match="singular"):
        decompose_camera(fit.inverse_camera, fit.camera_centre)


def test_all_zero_confidence_without_regularisation_is_finite_via_jitter(scene_factory):
    scene = scene_factory(batch=1, points=30, count=3)
    fit = solve_geometry(scene.pixels, scene.depth, torch.zeros_like(scene.confidence), scene.mean, scene.basis, ZERO, scene.image_size)
    assert fit.jittered.all()
    assert torch.isfinite(fit.inverse_camera).all() and torch.isfinite(fit.shape_coefficients).all()


def test_fewer_samples_than_unknowns_gives_a_finite_regularised_answer(scene_factory):
    scene = scene_factory(batch=2, points=4, count=20)  # 12 equations, 32 unknowns
    fit = solve_geometry(scene.pixels, scene.depth, scene.confidence, scene.mean, scene.basis, GeometryRegularisation(), scene.image_size)
    assert not fit.jittered.any()
    assert all(torch.isfinite(t).all() for t in (fit.inverse_camera, fit.camera_centre, fit.shape_coefficients))


def test_constant_depth_gives_a_finite_regularised_answer(scene_factory):
    scene = scene_factory(batch=2, points=100, count=5)
    depth = torch.full_like(scene.depth, 1.3)
    target = torch.tensor([0.0, 0.0, 50.0], dtype=torch.float64)
    regularisation = GeometryRegularisation(camera_centre=1.0, camera_centre_target=target)
    fit = solve_geometry(scene.pixels, depth, scene.confidence, scene.mean, scene.basis, regularisation, scene.image_size)
    assert all(torch.isfinite(t).all() for t in (fit.inverse_camera, fit.camera_centre, fit.shape_coefficients))
    camera = decompose_camera(fit.inverse_camera, fit.camera_centre)
    assert all(torch.isfinite(t).all() for t in (camera.intrinsics, camera.rotation, camera.translation))


def test_non_finite_input_raises_a_sentence(scene_factory):
    scene = scene_factory(batch=1, points=20, count=3)
    depth = scene.depth.clone()
    depth[0, 3] = float("nan")
    with pytest.raises(SolverError, match="NaN"):
        solve_geometry(scene.pixels, depth, scene.confidence, scene.mean, scene.basis, GeometryRegularisation(), scene.image_size)


def test_weighted_gram_backward_is_the_autograd_one():
    from lsqface.solver.geometry import weighted_gram

    generator = torch.Generator().manual_seed(9)
    rows = torch.randn(2, 7, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    expected = torch.einsum("brn,br,brm->bnm", rows, weights, rows)
    torch.testing.assert_close(weighted_gram(rows, weights), expected)
    assert torch.autograd.gradcheck(weighted_gram, (rows, weights))


def test_regularisation_weights_broadcast_per_unknown_and_per_image():
    from lsqface.solver.geometry import regularisation_vector

    like = torch.zeros(1, dtype=torch.float64)
    assert torch.equal(regularisation_vector(0.5, 2, 3, like), torch.full((2, 3), 0.5, dtype=torch.float64))
    per_unknown = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.equal(regularisation_vector(per_unknown, 2, 3, like), per_unknown.expand(2, 3))
    per_image = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert torch.equal(regularisation_vector(per_image, 2, 3, like), per_image[:, None].expand(2, 3))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inference_gram_leaves_out_only_rows_that_do_not_count(dtype):
    """The per-image product without autograd equals the batched one within rounding, though it skips
    the rows of zero and negligible weight."""
    from lsqface.solver.geometry import _WeightedGram, inference_weighted_gram, weighted_gram

    generator = torch.Generator().manual_seed(4)
    rows = torch.randn(3, 600, 40, generator=generator, dtype=dtype)
    weights = torch.rand(3, 600, generator=generator, dtype=dtype)
    weights[0, ::3] = 0.0  # outside the face's mask
    weights[1, ::2] *= 1e-9  # silenced by the robust passes
    weights[2] = 0.0  # an image without a confident sample
    expected = _WeightedGram.apply(rows.double(), weights.double())
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]
    for gram in (inference_weighted_gram(rows, weights), weighted_gram(rows, weights)):
        assert gram.dtype == dtype
        torch.testing.assert_close(gram.double(), expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())
    assert float(expected[2].abs().max()) == 0.0


@pytest.mark.parametrize("with_target", [False, True])
def test_solve_on_design_rows_equals_the_solve(scene_factory, with_target):
    """The inference solve on rows built once (one Gram matrix per pass) gives solve_geometry's fit: within
    1e-10 relative in float64; with the rows in float32 (SolverConfig "mixed") within 1e-5 of the float64
    fit, as solve_geometry with a float32 basis is."""
    from lsqface.solver.geometry import geometry_design, solve_geometry_design

    scene = scene_factory(batch=3, points=400, count=7, seed=6)
    generator = torch.Generator().manual_seed(2)
    confidence = scene.confidence * (torch.rand(3, 400, generator=generator, dtype=torch.float64) > 0.2)
    target = torch.tensor([1.0, -2.0, 40.0], dtype=torch.float64) if with_target else None
    regularisation = GeometryRegularisation(inverse_camera=1e-3, camera_centre=0.05, camera_centre_target=target,
                                            shape=torch.rand(7, generator=generator, dtype=torch.float64))
    pixels, depth = scene.pixels, scene.depth * (1 + 0.01 * torch.randn(3, 400, generator=generator, dtype=torch.float64))
    expected = solve_geometry(pixels, depth, confidence, scene.mean, scene.basis, regularisation, scene.image_size)
    # The basis as the UV sampling gives it (a transposed view), not contiguous.
    strided = scene.basis.transpose(2, 3).contiguous().transpose(2, 3)
    for basis_dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        design = geometry_design(pixels, depth, scene.mean, strided.to(basis_dtype), regularisation, scene.image_size)
        fit = solve_geometry_design(design, confidence)
        reference = expected if basis_dtype == torch.float64 else solve_geometry(
            pixels, depth, confidence, scene.mean, scene.basis.float(), regularisation, scene.image_size)
        for name in ("inverse_camera", "camera_centre", "shape_coefficients", "residuals", "normalised_inverse_camera",
                     "depth_scale"):
            actual, wanted = getattr(fit, name), getattr(expected, name)
            assert actual.dtype == torch.float64
            scale = float(wanted.abs().max())
            torch.testing.assert_close(actual, wanted, rtol=tolerance, atol=tolerance * scale, msg=name)
            if basis_dtype == torch.float32:  # as far from float64 as solve_geometry with the float32 basis, within 3x
                assert float((actual - wanted).abs().max()) <= 3 * float((getattr(reference, name) - wanted).abs().max()), name

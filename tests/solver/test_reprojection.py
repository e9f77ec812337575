"""The reprojection refinement: exact recovery, scipy's minimum of the same cost, gradients, and the layer's fields."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from lsqface.solver.camera import decompose_camera
from lsqface.solver.fit import SolverConfig, fit
from lsqface.solver.reprojection import cross_matrix, refine_reprojection, rotation_exp

EXACT = SolverConfig(sample_count=500, inverse_camera_weight=0.0, shape_weight=0.0, lighting_weight=0.0, albedo_weight=0.0)


def _start(scene, turn=0.05, shift=(0.5, -0.4, 3.0), coefficient_shift=0.3):
    """The scene's pose and shape moved off the truth: a small turn, a shift, other coefficients."""
    omega = torch.tensor([[turn, -turn, 0.5 * turn]], dtype=torch.float64).expand(scene.camera.rotation.shape[0], 3)
    rotation = rotation_exp(omega) @ scene.camera.rotation
    translation = scene.camera.translation + torch.tensor(shift, dtype=torch.float64)
    return rotation, translation, scene.shape_coefficients + coefficient_shift


def _refine(scene, start, **settings):
    rotation, translation, coefficients = start
    return refine_reprojection(scene.pixels, scene.depth, scene.confidence, scene.mean, scene.basis,
                               scene.camera.intrinsics, rotation, translation, scene.camera.depth_scale, coefficients,
                               **settings)


def test_rotation_exp_is_rodrigues_and_cross_matrix_is_the_cross_product():
    omega = torch.tensor([[0.3, -0.2, 0.7], [0.0, 0.0, 0.0], [1e-9, 0.0, 0.0]], dtype=torch.float64)
    expected = Rotation.from_rotvec(omega.numpy()).as_matrix()
    assert np.abs(rotation_exp(omega).numpy() - expected).max() < 1e-14
    vector, other = torch.randn(2, 5, 3, dtype=torch.float64).unbind(0)
    assert torch.allclose((cross_matrix(vector) @ other[..., None]).squeeze(-1), torch.cross(vector, other, dim=-1))


@pytest.mark.parametrize("depth_weight, robust_scale", [(0.0, None), (1.0, 2.0)])
def test_known_pose_and_shape_are_recovered_from_a_moved_start(scene_factory, depth_weight, robust_scale):
    scene = scene_factory(seed=4)
    result = _refine(scene, _start(scene), iterations=8, shape_weight=0.0, depth_weight=depth_weight,
                     robust_scale=robust_scale)
    assert (result.rotation - scene.camera.rotation).abs().max() < 1e-10
    assert (result.translation - scene.camera.translation).abs().max() < 1e-8
    assert (result.shape_coefficients - scene.shape_coefficients).abs().max() < 1e-8
    assert result.residuals.abs().max() < 1e-8


def test_zero_iterations_return_the_start(scene_factory):
    scene = scene_factory(seed=2)
    start = _start(scene)
    result = _refine(scene, start, iterations=0, shape_weight=1.0)
    assert torch.equal(result.rotation, start[0]) and torch.equal(result.translation, start[1])
    assert torch.equal(result.shape_coefficients, start[2])


def test_the_steps_reach_scipys_minimum_of_the_same_cost(scene_factory):
    """Noisy pixels and depth, a prior and a depth term, no reweighting: Gauss-Newton's fixed point is the
    minimum scipy's trust-region solver finds for the cost written out independently."""
    scene = scene_factory(seed=7, points=120, count=4)
    generator = torch.Generator().manual_seed(1)
    scene.pixels = scene.pixels + 0.8 * torch.randn(scene.pixels.shape, generator=generator, dtype=torch.float64)
    scene.depth = scene.depth * (1 + 0.02 * torch.randn(scene.depth.shape, generator=generator, dtype=torch.float64))
    alpha, lam = 0.7, 0.3
    start = _start(scene)
    result = _refine(scene, start, iterations=15, shape_weight=alpha, depth_weight=lam, robust_scale=None)

    for b in range(scene.pixels.shape[0]):
        intrinsics = scene.camera.intrinsics[b].numpy()
        focal = np.sqrt(abs(intrinsics[0, 0] * intrinsics[1, 1]))
        pixels, depth, weights = scene.pixels[b].numpy(), scene.depth[b].numpy(), scene.confidence[b].numpy()
        mean, basis = scene.mean[b].numpy(), scene.basis[b].numpy()
        psi = scene.camera.depth_scale[b].item()
        rotation0 = start[0][b].numpy()

        def residuals(theta):
            rotation = Rotation.from_rotvec(theta[:3]).as_matrix() @ rotation0
            coefficients = theta[6:]
            points = (mean + np.einsum("pkn,n->pk", basis, coefficients)) @ rotation.T + theta[3:6]
            projected = points @ intrinsics.T
            image = (projected[:, :2] - pixels * points[:, 2:3]) / focal  # (K p)_xy - x z, over f
            along = points[:, 2] - depth / psi
            root = np.sqrt(weights)
            return np.concatenate(((root[:, None] * image).ravel(), np.sqrt(lam) * root * along,
                                   np.sqrt(alpha) * coefficients))

        theta0 = np.concatenate((np.zeros(3), start[1][b].numpy(), start[2][b].numpy()))
        solution = least_squares(residuals, theta0, xtol=1e-15, ftol=1e-15, gtol=1e-15).x
        rotation = Rotation.from_rotvec(solution[:3]).as_matrix() @ rotation0
        assert np.abs(result.rotation[b].numpy() - rotation).max() < 1e-8
        assert np.abs(result.translation[b].numpy() - solution[3:6]).max() < 1e-6
        assert np.abs(result.shape_coefficients[b].numpy() - solution[6:]).max() < 1e-7


def test_reweighting_ignores_a_fifth_of_gross_outliers(scene_factory):
    scene = scene_factory(seed=5, points=200)
    generator = torch.Generator().manual_seed(2)
    outliers = torch.rand(scene.pixels.shape[:2], generator=generator) < 0.2
    scene.pixels = torch.where(outliers[..., None], scene.pixels + 40 * torch.randn(
        scene.pixels.shape, generator=generator, dtype=torch.float64), scene.pixels)
    plain = _refine(scene, _start(scene), iterations=10, shape_weight=0.0, robust_scale=None)
    robust = _refine(scene, _start(scene), iterations=10, shape_weight=0.0, robust_scale=2.0)
    truth = scene.camera.rotation
    assert (robust.rotation - truth).abs().max() < 1e-3 < (plain.rotation - truth).abs().max()


@pytest.mark.parametrize("change", ["mirror", "skew"])
def test_recovery_with_a_mirroring_or_skewed_camera(scene_factory, change):
    scene = scene_factory(seed=6)
    intrinsics = scene.camera.intrinsics.clone()
    if change == "mirror":
        intrinsics[:, 0, 0] = -intrinsics[:, 0, 0]
    else:
        intrinsics[:, 0, 1] = 30.0
    from lsqface.solver.camera import project

    points = scene.mean + (scene.basis @ scene.shape_coefficients[:, None, :, None]).squeeze(-1)
    scene.pixels = project(points, intrinsics, scene.camera.rotation, scene.camera.translation)
    rotation, translation, coefficients = _start(scene)
    result = refine_reprojection(scene.pixels, scene.depth, scene.confidence, scene.mean, scene.basis, intrinsics,
                                 rotation, translation, scene.camera.depth_scale, coefficients, iterations=8,
                                 shape_weight=0.0, robust_scale=2.0)
    assert (result.rotation - scene.camera.rotation).abs().max() < 1e-10


def test_gradients_stay_finite_for_an_image_without_weight(scene_factory):
    scene = scene_factory(seed=3, points=30, count=3)
    weights = scene.confidence.clone()
    weights[0] = 0.0
    weights.requires_grad_(True)
    pixels = scene.pixels.clone().requires_grad_(True)
    start = _start(scene)
    result = refine_reprojection(pixels, scene.depth, weights, scene.mean, scene.basis, scene.camera.intrinsics,
                                 *start[:2], scene.camera.depth_scale, start[2], iterations=2, shape_weight=0.5,
                                 robust_scale=2.0)
    (result.rotation.sum() + result.shape_coefficients.sum()).backward()
    assert torch.isfinite(pixels.grad).all() and torch.isfinite(weights.grad).all()
    assert pixels.grad[0].abs().max() == 0 and pixels.grad[1].abs().max() > 0


def test_gradcheck_through_the_steps(scene_factory):
    scene = scene_factory(seed=3, points=25, count=3, batch=1)
    start = _start(scene)

    def refined(pixels, depth, weights, mean, basis):
        result = refine_reprojection(pixels, depth, weights, mean, basis, scene.camera.intrinsics, *start[:2],
                                     scene.camera.depth_scale, start[2], iterations=2, shape_weight=0.5,
                                     depth_weight=0.4, robust_scale=None)
        return result.rotation, result.translation, result.shape_coefficients

    inputs = [tensor.clone().requires_grad_(True) for tensor in (scene.pixels, scene.depth, scene.confidence,
                                                                  scene.mean, scene.basis)]
    assert torch.autograd.gradcheck(refined, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_through_reweighted_steps(scene_factory):
    """Through the Geman-McClure factor too (its scale, a weighted median of the residual norms, included)."""
    scene = scene_factory(seed=8, points=25, count=2, batch=1)
    start = _start(scene)

    def refined(pixels, weights):
        result = refine_reprojection(pixels, scene.depth, weights, scene.mean, scene.basis, scene.camera.intrinsics,
                                     *start[:2], scene.camera.depth_scale, start[2], iterations=2, shape_weight=0.5,
                                     depth_weight=0.4, robust_scale=2.0)
        return result.rotation, result.shape_coefficients

    inputs = [scene.pixels.clone().requires_grad_(True), scene.confidence.clone().requires_grad_(True)]
    assert torch.autograd.gradcheck(refined, inputs, eps=1e-7, atol=1e-5, rtol=1e-4)


def test_an_image_without_confident_samples_keeps_its_start_and_the_others_are_refined(scene_factory):
    """No weight left (a picture without a face): the system is singular, that image keeps the fit it had,
    the other image of the batch is refined as alone."""
    scene = scene_factory(seed=1)
    start = _start(scene)
    alone = _refine(scene, start, iterations=4, shape_weight=0.0, robust_scale=None)
    scene.confidence = scene.confidence.clone()
    scene.confidence[0] = 0.0
    result = _refine(scene, start, iterations=4, shape_weight=0.0, robust_scale=None)
    assert torch.equal(result.rotation[0], start[0][0]) and torch.equal(result.shape_coefficients[0], start[2][0])
    assert torch.allclose(result.rotation[1], alone.rotation[1], atol=1e-12)
    assert (result.rotation[1] - scene.camera.rotation[1]).abs().max() < 1e-10


def _reprojection_error(uv_model, result):
    """Weighted RMS pixel distance between each sample and the projection of its fitted model point."""
    from lsqface.morphable.uv_model import sample_shape
    from lsqface.solver.camera import project

    mean, basis = sample_shape(uv_model, result.correspondence)
    points = mean + (basis @ result.shape_coefficients[:, None, :, None]).squeeze(-1)
    distance = (project(points, result.intrinsics, result.rotation, result.translation) - result.samples.pixels).norm(dim=-1)
    weights = result.geometric_weights
    return ((weights * distance.square()).sum() / weights.sum()).sqrt().item()


def test_in_the_layer_the_refined_fit_projects_onto_the_correspondences_and_its_fields_agree(image_scene_factory):
    """With depth maps flattened to a tenth of their relief, the layer's refined fit is refine_reprojection run
    on the closed-form fit's samples, weights, camera and shape, and its fields stay consistent: K and psi as
    the closed form fitted them, P and q the refined camera's, the residuals and weights the closed form's,
    the photometric solve on the refined rotation's normals."""
    from lsqface.morphable.uv_model import sample_shape

    scene = image_scene_factory(seed=3)
    level = scene.depth.mean(dim=(2, 3), keepdim=True)
    flattened = level + 0.1 * (scene.depth - level)
    maps = (scene.image, scene.correspondence, flattened, scene.confidence)
    closed = fit(scene.uv_model, *maps, EXACT, torch.Generator().manual_seed(0))
    config = dataclasses.replace(EXACT, reprojection_iterations=5)
    refined = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(0))
    assert torch.equal(refined.samples.indices, closed.samples.indices)
    mean, basis = sample_shape(scene.uv_model, closed.correspondence)
    samples = closed.samples
    depth = flattened.flatten(2)[:, 0].gather(1, samples.indices)
    direct = refine_reprojection(samples.pixels, depth, closed.geometric_weights, mean, basis, closed.intrinsics,
                                 closed.rotation, closed.translation, closed.depth_scale, closed.shape_coefficients,
                                 iterations=5, shape_weight=0.0, robust_scale=2.0)
    assert (refined.rotation - direct.rotation).abs().max() < 1e-12
    assert (refined.shape_coefficients - direct.shape_coefficients).abs().max() < 1e-10
    assert _reprojection_error(scene.uv_model, refined) <= _reprojection_error(scene.uv_model, closed) + 1e-3
    assert torch.equal(refined.intrinsics, closed.intrinsics) and torch.equal(refined.depth_scale, closed.depth_scale)
    camera = decompose_camera(refined.inverse_camera, refined.camera_centre)
    assert (camera.rotation - refined.rotation).abs().max() < 1e-10
    assert (camera.translation - refined.translation).abs().max() < 1e-8
    # The residuals (which the fit status reads) stay the closed-form solve's: how well one face explains the maps.
    assert torch.equal(refined.geometric_residuals, closed.geometric_residuals)
    assert torch.equal(refined.geometric_weights, closed.geometric_weights)
    assert torch.allclose(refined.normals, closed.normals @ closed.rotation @ refined.rotation.transpose(1, 2))


def test_steps_from_an_exact_fit_stay_on_it(image_scene_factory):
    scene = image_scene_factory(seed=1)
    maps = (scene.image, scene.correspondence, scene.depth, scene.confidence)
    config = dataclasses.replace(EXACT, reprojection_iterations=3, reprojection_depth_weight=0.5)
    result = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(0))
    assert (result.rotation - scene.camera.rotation).abs().max() < 1e-8
    assert (result.shape_coefficients - scene.shape_coefficients).abs().max() < 1e-6
    assert (result.inverse_lighting - scene.inverse_lighting).abs().max() < 1e-6


def test_mixed_precision_steps_give_the_float64_refinement(image_scene_factory):
    """The shape columns' products in float32 ("mixed"), everything else in float64: the float64 refinement
    within 1e-5 relative, on maps whose depth disagrees with the correspondences (so the steps move the fit)."""
    scene = image_scene_factory(seed=2)
    level = scene.depth.mean(dim=(2, 3), keepdim=True)
    maps = (scene.image, scene.correspondence, level + 0.1 * (scene.depth - level), scene.confidence)
    config = dataclasses.replace(EXACT, reprojection_iterations=3, shape_weight=1.0, inverse_camera_weight=1e-4,
                                 lighting_weight=1.0, albedo_weight=1.0)
    double = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(0))
    mixed = fit(scene.uv_model, *maps, dataclasses.replace(config, precision="mixed"), torch.Generator().manual_seed(0))
    for name in ("rotation", "translation", "shape_coefficients", "inverse_camera", "camera_centre"):
        expected = getattr(double, name)
        assert ((getattr(mixed, name) - expected).norm() / expected.norm()).item() < 1e-5, name


def test_each_precision_gives_the_steps_its_basis_dtype_and_their_own_prior(image_scene_factory, monkeypatch):
    """A float32 UV model (as the real one is stored): "float64" hands the steps a float64 basis, "mixed" a
    float32 one; the steps read reprojection_shape_weight when set and the solve's shape_weight otherwise."""
    import importlib

    fit_module = importlib.import_module("lsqface.solver.fit")

    scene = image_scene_factory(seed=2)
    uv_model = scene.uv_model.to(dtype=torch.float32)
    maps = (scene.image, scene.correspondence, scene.depth, scene.confidence)
    seen = []
    original = fit_module.refine_reprojection

    def spy(*arguments, **settings):
        seen.append((arguments[4].dtype, settings["shape_weight"]))
        return original(*arguments, **settings)

    monkeypatch.setattr(fit_module, "refine_reprojection", spy)
    base = dataclasses.replace(EXACT, reprojection_iterations=1, shape_weight=3.0)
    for precision, prior, expected in (("float64", None, (torch.float64, 3.0)), ("mixed", 7.0, (torch.float32, 7.0))):
        seen.clear()
        config = dataclasses.replace(base, precision=precision, reprojection_shape_weight=prior)
        with torch.no_grad():
            fit(uv_model, *maps, config, torch.Generator().manual_seed(0))
        assert seen and all(entry == expected for entry in seen)


def test_the_batch_refined_image_by_image_is_the_batch_refined_together(image_scene_factory):
    """Without autograd the layer refines image by image (the rows stay in the cache); with it, the whole batch
    in one call: the same fit within rounding."""
    scene = image_scene_factory(seed=4)
    level = scene.depth.mean(dim=(2, 3), keepdim=True)
    maps = (scene.image, scene.correspondence, level + 0.1 * (scene.depth - level), scene.confidence)
    config = dataclasses.replace(EXACT, reprojection_iterations=3, shape_weight=1.0, reprojection_depth_weight=0.2)
    with torch.no_grad():
        apart = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(0))
    together = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(0))
    for name in ("rotation", "translation", "shape_coefficients", "inverse_camera", "camera_centre"):
        torch.testing.assert_close(getattr(together, name).detach(), getattr(apart, name), rtol=1e-9, atol=1e-9)


def test_the_layer_takes_no_reprojection_step_unless_asked():
    assert SolverConfig().reprojection_iterations == 0


def test_a_training_config_refuses_reprojection_steps():
    from lsqface.errors import ConfigError
    from lsqface.train.config import TrainConfig

    with pytest.raises(ConfigError, match="inference setting"):
        TrainConfig(solver=SolverConfig(reprojection_iterations=2))


def test_a_checkpoint_asking_for_absurdly_many_steps_is_refused():
    from lsqface.errors import CheckpointError
    from lsqface.nets.checkpoint import check_settings

    check_settings({"input_size": 64, "solver_config": {"reprojection_iterations": 3}}, "x.pt")
    with pytest.raises(CheckpointError, match="reprojection_iterations"):
        check_settings({"input_size": 64, "solver_config": {"reprojection_iterations": 10**6}}, "x.pt")

import dataclasses

import pytest
import torch

from lsqface.errors import SolverError
from lsqface.solver.fit import LeastSquaresFit, ShapeFit, SolverConfig, fit, fit_geometry

EXACT = SolverConfig(sample_count=500, inverse_camera_weight=0.0, shape_weight=0.0, lighting_weight=0.0, albedo_weight=0.0)


def _relative(actual, expected):
    return ((actual - expected).norm() / expected.norm()).item()


def test_exact_recovery_through_the_whole_layer(image_scene_factory):
    scene = image_scene_factory()
    result = fit(scene.uv_model, scene.image, scene.correspondence, scene.depth, scene.confidence, EXACT, torch.Generator().manual_seed(0))
    assert isinstance(result, LeastSquaresFit)
    checks = {
        "inverse_camera": (result.inverse_camera, scene.inverse_camera),
        "camera_centre": (result.camera_centre, scene.camera_centre),
        "intrinsics": (result.intrinsics, scene.camera.intrinsics),
        "rotation": (result.rotation, scene.camera.rotation),
        "translation": (result.translation, scene.camera.translation),
        "depth_scale": (result.depth_scale, scene.camera.depth_scale),
        "shape": (result.shape_coefficients, scene.shape_coefficients),
        "inverse_lighting": (result.inverse_lighting, scene.inverse_lighting),
        "albedo": (result.albedo_coefficients, scene.albedo_coefficients),
    }
    for name, (actual, expected) in checks.items():
        assert _relative(actual, expected) < 1e-6, name
    assert result.identity_coefficients.shape == (2, 3) and result.expression_coefficients.shape == (2, 2)
    assert result.geometric_residuals.shape == (2, 500, 3) and result.geometric_residuals.abs().max() < 1e-8
    assert result.photometric_residuals.abs().max() < 1e-10


def test_float32_precision_is_close_to_float64(image_scene_factory):
    scene = image_scene_factory(seed=1)
    generator_seed = 3
    double = fit(scene.uv_model, scene.image, scene.correspondence, scene.depth, scene.confidence, EXACT, torch.Generator().manual_seed(generator_seed))
    single_config = dataclasses.replace(EXACT, precision="float32")
    single = fit(scene.uv_model.to(dtype=torch.float32), scene.image.float(), scene.correspondence.float(), scene.depth.float(),
                 scene.confidence.float(), single_config, torch.Generator().manual_seed(generator_seed))
    assert single.rotation.dtype == torch.float32
    assert _relative(single.rotation.double(), double.rotation) < 1e-3
    assert _relative(single.shape_coefficients.double(), double.shape_coefficients) < 1e-2


def test_mixed_precision_gives_the_float64_fit(image_scene_factory):
    """float32 products with the bases, float64 normal systems: the float64 answer within 1e-5 relative
    (plain float32 is 1e-3 off in the rotation), with float64 results and the same samples."""
    scene = image_scene_factory(seed=1)
    config = dataclasses.replace(EXACT, inverse_camera_weight=1e-4, shape_weight=1.0, lighting_weight=1.0, albedo_weight=1.0)
    maps = (scene.image, scene.correspondence, scene.depth, scene.confidence)
    double = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(3))
    mixed = fit(scene.uv_model, *maps, dataclasses.replace(config, precision="mixed"), torch.Generator().manual_seed(3))
    assert mixed.rotation.dtype == torch.float64
    assert torch.equal(mixed.samples.indices, double.samples.indices)
    for name in ("inverse_camera", "camera_centre", "intrinsics", "rotation", "translation", "shape_coefficients",
                 "inverse_lighting", "albedo_coefficients"):
        assert _relative(getattr(mixed, name), getattr(double, name)) < 1e-5, name


@pytest.mark.parametrize("precision", ["float64", "mixed"])
def test_inference_solves_image_by_image_as_the_batch_does(image_scene_factory, precision):
    """Without autograd the layer solves one image at a time on rows built once (fit._per_image,
    geometry.solve_geometry_design): the batched solve's results within rounding, robust passes included.

    In "mixed" the two sum their float32 products in different orders: the fit agrees within 1e-4; this
    scene's residuals are only 0.03 model units, so a float32 rounding of 6e-6 in one moves its robust
    weight by 3e-4 (measured), hence 1e-3 on the weights. Against float64 both are equally far."""
    scene = image_scene_factory(seed=4)
    tolerance = 1e-9 if precision == "float64" else 1e-4
    config = SolverConfig(sample_count=500, robust_iterations=3, precision=precision)
    maps = (scene.image, scene.correspondence, scene.depth, scene.confidence)
    batched = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(5))
    with torch.no_grad():
        single = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(5))
    assert scene.image.shape[0] > 1
    for name in ("inverse_camera", "camera_centre", "rotation", "translation", "shape_coefficients", "inverse_lighting",
                 "albedo_coefficients", "geometric_residuals", "geometric_weights", "photometric_residuals"):
        limit = 1e-3 if name == "geometric_weights" and precision == "mixed" else tolerance
        torch.testing.assert_close(getattr(single, name), getattr(batched, name), rtol=limit, atol=limit, msg=name)
    if precision == "mixed":
        double = fit(scene.uv_model, *maps, dataclasses.replace(config, precision="float64"), torch.Generator().manual_seed(5))
        for name in ("inverse_camera", "camera_centre", "shape_coefficients", "geometric_weights"):
            inference_error = (getattr(single, name) - getattr(double, name)).abs().max()
            batched_error = (getattr(batched, name) - getattr(double, name)).abs().max()
            assert float(inference_error) < 3 * float(batched_error) + 1e-12, name


def test_gradients_reach_every_map(image_scene_factory):
    scene = image_scene_factory(seed=2, uv_offset=0.25)
    maps = [t.clone().requires_grad_() for t in (scene.image, scene.correspondence, scene.depth, scene.confidence)]
    result = fit(scene.uv_model, *maps, SolverConfig(sample_count=300), torch.Generator().manual_seed(0))
    loss = result.translation.square().sum() + result.shape_coefficients.square().sum() + result.inverse_lighting.square().sum()
    loss = loss + result.albedo_coefficients.square().sum()
    loss.backward()
    for tensor in maps:
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_gradcheck_through_the_whole_layer(image_scene_factory):
    scene = image_scene_factory(batch=1, size=8, n_identity=2, n_expression=1, n_albedo=2, seed=4, uv_offset=0.25)
    config = SolverConfig(sample_count=40, inverse_camera_weight=1e-3, shape_weight=0.1)

    def function(image, correspondence, depth, confidence):
        result = fit(scene.uv_model, image, correspondence, depth, confidence, config, torch.Generator().manual_seed(0))
        return result.intrinsics, result.translation, result.shape_coefficients, result.inverse_lighting, result.albedo_coefficients

    inputs = [t.clone().requires_grad_() for t in (scene.image, scene.correspondence, scene.depth, scene.confidence)]
    assert torch.autograd.gradcheck(function, inputs, eps=1e-7, atol=1e-4, rtol=1e-3, fast_mode=True)


def test_all_zero_confidence_raises_a_sentence(image_scene_factory):
    scene = image_scene_factory(seed=5)
    with pytest.raises(SolverError, match="inverse camera is singular") as error:
        fit(scene.uv_model, scene.image, scene.correspondence, scene.depth, torch.zeros_like(scene.confidence), SolverConfig(sample_count=200))
    assert str(error.value).endswith(".")


def test_all_zero_confidence_with_a_camera_centre_target_still_raises(image_scene_factory):
    # P has target 0, so without data no camera exists; the error says so instead of returning NaN.
    scene = image_scene_factory(seed=5)
    config = SolverConfig(sample_count=200, camera_centre_weight=1.0, camera_centre_target=(0.0, 0.0, 500.0))
    with pytest.raises(SolverError):
        fit(scene.uv_model, scene.image, scene.correspondence, scene.depth, torch.zeros_like(scene.confidence), config)


def test_fewer_confident_samples_than_unknowns(image_scene_factory):
    scene = image_scene_factory(seed=6)
    confidence = torch.zeros_like(scene.confidence)
    confidence[:, :, 3, 2:6] = 1.0  # four pixels per image: 12 geometric equations for 17 unknowns
    # The solves stay finite (regularised), but four points cannot fix a camera: P comes out
    # nearly singular, and the layer says so instead of returning a meaningless K, R, t.
    with pytest.raises(SolverError, match="inverse camera is singular"):
        fit(scene.uv_model, scene.image, scene.correspondence, scene.depth, confidence, SolverConfig(sample_count=200))
    # Spread over the image, eight confident pixels (24 equations, 17 unknowns) give a finite camera.
    confidence = torch.zeros_like(scene.confidence)
    confidence[:, :, ::8, ::8] = 1.0
    result = fit(scene.uv_model, scene.image, scene.correspondence, scene.depth, confidence, SolverConfig(sample_count=200))
    for tensor in (result.intrinsics, result.rotation, result.translation, result.shape_coefficients, result.inverse_lighting):
        assert torch.isfinite(tensor).all()


def test_constant_depth_gives_a_finite_answer(image_scene_factory):
    scene = image_scene_factory(seed=7)
    config = SolverConfig(sample_count=300, camera_centre_weight=1.0, camera_centre_target=(0.0, 0.0, 500.0))
    result = fit(scene.uv_model, scene.image, scene.correspondence, torch.full_like(scene.depth, 2.0), scene.confidence, config)
    for tensor in (result.intrinsics, result.rotation, result.translation, result.shape_coefficients):
        assert torch.isfinite(tensor).all()


def test_black_image_gives_a_finite_answer(image_scene_factory):
    scene = image_scene_factory(seed=8)
    result = fit(scene.uv_model, torch.zeros_like(scene.image), scene.correspondence, scene.depth, scene.confidence, SolverConfig(sample_count=300))
    assert torch.isfinite(result.inverse_lighting).all() and torch.isfinite(result.albedo_coefficients).all()


def test_bad_map_shapes_raise(image_scene_factory):
    scene = image_scene_factory(seed=9)
    with pytest.raises(ValueError, match="confidence"):
        fit(scene.uv_model, scene.image, scene.correspondence, scene.depth, scene.confidence[:, :1])


def test_exact_recovery_with_the_real_ict_uv_model(ict_uv_model, camera_factory):
    """Noise-free samples drawn from the real UV-3DMM (ICT-FaceKit) give back camera, shape, lighting, albedo."""
    from lsqface.lighting.sh import constant_lighting
    from lsqface.morphable.uv_model import sample_albedo, sample_mask, sample_normal, sample_shape
    from lsqface.solver.camera import Camera, compose_inverse_camera, decompose_camera, project, to_camera
    from lsqface.solver.geometry import GeometryRegularisation, solve_geometry
    from lsqface.solver.photometry import PhotometryRegularisation, solve_photometry

    generator = torch.Generator().manual_seed(0)
    batch, points = 2, 3000
    uv = torch.rand(batch, 4 * points, 2, generator=generator, dtype=torch.float64)
    inside = sample_mask(ict_uv_model, uv.float()) > 0.999
    uv = torch.stack([uv[b][inside[b]][:points] for b in range(batch)])
    mean, basis = (t.double() for t in sample_shape(ict_uv_model, uv.float()))
    base = camera_factory(batch, generator, 224)
    camera = Camera(base.intrinsics, base.rotation, base.translation * 10, base.depth_scale)  # 500-600 mm away
    inverse_camera, camera_centre = compose_inverse_camera(camera)
    shape = torch.randn(batch, basis.shape[-1], generator=generator, dtype=torch.float64)
    model_points = mean + (basis @ shape[:, None, :, None]).squeeze(-1)
    pixels = project(model_points, camera.intrinsics, camera.rotation, camera.translation)
    depth = camera.depth_scale[:, None] * to_camera(model_points, camera.rotation, camera.translation)[..., 2]
    confidence = 0.5 + torch.rand(batch, points, generator=generator, dtype=torch.float64)
    zero = GeometryRegularisation(inverse_camera=0.0, camera_centre=0.0, shape=0.0)
    geometry = solve_geometry(pixels, depth, confidence, mean, basis, zero, (224, 224))
    fitted = decompose_camera(geometry.inverse_camera, geometry.camera_centre)
    assert _relative(geometry.inverse_camera, inverse_camera) < 1e-6
    assert _relative(geometry.camera_centre, camera_centre) < 1e-6
    assert _relative(geometry.shape_coefficients, shape) < 1e-6
    for name in ("intrinsics", "rotation", "translation", "depth_scale"):
        assert _relative(getattr(fitted, name), getattr(camera, name)) < 1e-6, name

    normals = sample_normal(ict_uv_model, uv.float()).double() @ fitted.rotation.transpose(1, 2)
    albedo_mean, albedo_basis = (t.double() for t in sample_albedo(ict_uv_model, uv.float()))
    lighting = constant_lighting(1.0).expand(batch, 3, 9) + 0.1 * torch.randn(batch, 3, 9, generator=generator, dtype=torch.float64)
    albedo_coefficients = torch.randn(batch, albedo_basis.shape[-1], generator=generator, dtype=torch.float64)
    albedo = albedo_mean + (albedo_basis @ albedo_coefficients[:, None, :, None]).squeeze(-1)
    from lsqface.solver.photometry import inverse_shading

    colours = albedo / inverse_shading(normals, lighting)
    # ICT's Laplacian albedo space holds a constant "global tone" mode per channel, so the albedo mean lies in
    # its span and (s l, h') explains the colours as well as (l, h): the overall brightness is shared between
    # lighting and albedo and only the regularisation decides it. Exact recovery is checked without those
    # modes; with them, the unregularised solve is rank deficient and still fits every colour.
    varies = albedo_basis.std(dim=1).amax(dim=(0, 1)) > 1e-6 * albedo_basis.abs().amax()
    assert (~varies).sum() == 3
    identifiable_basis = albedo_basis[..., varies]
    colours_identifiable = (albedo_mean + (identifiable_basis @ albedo_coefficients[:, varies, None, None].transpose(1, 2)).squeeze(-1))
    colours_identifiable = colours_identifiable / inverse_shading(normals, lighting)
    unregularised = PhotometryRegularisation(0.0, None, 0.0)
    photometry = solve_photometry(colours_identifiable, normals, confidence, albedo_mean, identifiable_basis, unregularised)
    assert not photometry.jittered.any()
    assert _relative(photometry.inverse_lighting, lighting) < 1e-6
    assert _relative(photometry.albedo_coefficients, albedo_coefficients[:, varies]) < 1e-6
    ambiguous = solve_photometry(colours, normals, confidence, albedo_mean, albedo_basis, unregularised)
    # Rank deficient: Cholesky either fails and gets jitter or passes with a tiny pivot; either way finite.
    assert torch.isfinite(ambiguous.inverse_lighting).all() and ambiguous.residuals.abs().max() < 1e-6


def test_per_coefficient_weights_replace_the_config_weights(image_scene_factory):
    scene = image_scene_factory(seed=10)
    maps = (scene.image, scene.correspondence, scene.depth, scene.confidence)
    config = SolverConfig(sample_count=300, shape_weight=2.0, albedo_weight=3.0)
    scalar = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(0))
    vector = fit(scene.uv_model, *maps, SolverConfig(sample_count=300), torch.Generator().manual_seed(0),
                 shape_weights=torch.full((5,), 2.0, dtype=torch.float64), albedo_weights=torch.full((2, 4), 3.0, dtype=torch.float64))
    torch.testing.assert_close(vector.shape_coefficients, scalar.shape_coefficients)
    torch.testing.assert_close(vector.albedo_coefficients, scalar.albedo_coefficients)
    heavier = fit(scene.uv_model, *maps, SolverConfig(sample_count=300), torch.Generator().manual_seed(0),
                  shape_weights=torch.full((5,), 1e6, dtype=torch.float64))
    assert heavier.shape_coefficients.abs().max() < 1e-3 < scalar.shape_coefficients.abs().max()


def test_robust_factor_is_the_cauchy_weight_at_the_weighted_median():
    import numpy as np

    from lsqface.solver.fit import robust_factor

    generator = torch.Generator().manual_seed(0)
    residuals = torch.randn(3, 50, 3, generator=generator, dtype=torch.float64)
    weights = torch.rand(3, 50, generator=generator, dtype=torch.float64)
    factor = robust_factor(residuals, weights, 2.0)
    for b in range(3):
        norms = np.linalg.norm(residuals[b].numpy(), axis=1)
        order = np.argsort(norms)
        cumulative = np.cumsum(weights[b].numpy()[order])
        median = norms[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
        expected = ((2 * median) ** 2 / ((2 * median) ** 2 + norms ** 2)) ** 2
        np.testing.assert_allclose(factor[b].numpy(), expected, rtol=1e-12)


def test_reweighting_recovers_the_camera_despite_gross_outliers(image_scene_factory):
    scene = image_scene_factory(seed=5)
    config = dataclasses.replace(EXACT, sample_count=576)
    # Exact data: any positive weights give the exact answer, with or without reweighting.
    robust = dataclasses.replace(config, robust_iterations=4)
    clean = fit(scene.uv_model, scene.image, scene.correspondence, scene.depth, scene.confidence, robust, torch.Generator().manual_seed(0))
    assert _relative(clean.rotation, scene.camera.rotation) < 1e-6
    # A fifth of the pixels get a depth far off (a network's boundary pixels, a hand in front of the face).
    generator = torch.Generator().manual_seed(1)
    outliers = torch.rand(scene.depth.shape, generator=generator) < 0.2
    depth = torch.where(outliers, scene.depth * (2.0 + torch.rand(scene.depth.shape, generator=generator, dtype=torch.float64)), scene.depth)
    errors = {}
    for iterations in (0, 12):
        result = fit(scene.uv_model, scene.image, scene.correspondence, depth, scene.confidence,
                     dataclasses.replace(config, robust_iterations=iterations), torch.Generator().manual_seed(0))
        errors[iterations] = _relative(result.rotation, scene.camera.rotation)
    assert errors[0] > 0.01 and errors[12] < 1e-6


def test_gradcheck_through_the_reweighted_layer(image_scene_factory):
    scene = image_scene_factory(batch=1, size=8, n_identity=2, n_expression=1, n_albedo=2, seed=4, uv_offset=0.25)
    config = SolverConfig(sample_count=40, inverse_camera_weight=1e-3, shape_weight=0.1, robust_iterations=2)

    def function(image, correspondence, depth, confidence):
        result = fit(scene.uv_model, image, correspondence, depth, confidence, config, torch.Generator().manual_seed(0))
        return result.intrinsics, result.translation, result.shape_coefficients, result.albedo_coefficients

    inputs = [t.clone().requires_grad_() for t in (scene.image, scene.correspondence, scene.depth, scene.confidence)]
    assert torch.autograd.gradcheck(function, inputs, eps=1e-7, atol=1e-4, rtol=1e-3, fast_mode=True)


def test_fit_geometry_is_fits_camera_and_shape_half(image_scene_factory):
    # Off-model maps, regularisation and robust passes: the halves must agree exactly, not only at the truth.
    scene = image_scene_factory(seed=6, uv_offset=0.25)
    config = SolverConfig(sample_count=300, inverse_camera_weight=1e-3, shape_weight=0.1, robust_iterations=2)
    maps = (scene.image, scene.correspondence, scene.depth, scene.confidence)
    whole = fit(scene.uv_model, *maps, config, torch.Generator().manual_seed(0))
    half = fit_geometry(scene.uv_model, *maps, config, torch.Generator().manual_seed(0))
    assert isinstance(half, ShapeFit) and not isinstance(half, LeastSquaresFit)
    for field in dataclasses.fields(ShapeFit):
        actual, expected = getattr(half, field.name), getattr(whole, field.name)
        if field.name == "samples":
            assert torch.equal(actual.pixels, expected.pixels)
        else:
            assert torch.equal(actual, expected), field.name
    # Same gradients into the maps for a loss on the shape and camera.
    grads = []
    for function in (fit, fit_geometry):
        inputs = [t.clone().requires_grad_() for t in maps]
        result = function(scene.uv_model, *inputs, config, torch.Generator().manual_seed(0))
        (result.shape_coefficients.square().sum() + result.translation.square().sum()).backward()
        grads.append([t.grad for t in inputs[1:]])
    for whole_grad, half_grad in zip(*grads):
        torch.testing.assert_close(half_grad, whole_grad, rtol=1e-10, atol=1e-12)

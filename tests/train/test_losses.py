"""Unsupervised losses against independent computations."""

import numpy as np
import pytest
import scipy.linalg
import torch

from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.morphable.uv_model import sample_shape
from lsqface.solver.fit import SolverConfig, fit
from lsqface.train.losses import geometric_loss, photometric_loss, statistical_loss


def _square(left, top, right, bottom, z=10.0):
    vertices = torch.tensor([[[left, top, z], [right, top, z], [right, bottom, z], [left, bottom, z]]], dtype=torch.float64)
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return vertices, triangles


def test_photometric_cost_is_capped_residual_on_covered_and_cap_elsewhere():
    height = width = 8
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    vertices, triangles = _square(2.0, 2.0, 6.0, 6.0)  # covers pixel centres 2.5 .. 5.5: a 4 x 4 block
    colour = torch.full((1, 4, 3), 0.5, dtype=torch.float64, requires_grad=True)
    tau = 0.3
    mean_cost, cost, rendered = photometric_loss(image, vertices, colour, triangles, tau)
    squared = (0.5 - image[0]).square().sum(0)
    expected = torch.full((height, width), tau ** 2, dtype=torch.float64)
    expected[2:6, 2:6] = squared[2:6, 2:6].clamp(max=tau ** 2)
    assert torch.allclose(cost[0], expected, atol=1e-12)
    assert torch.allclose(mean_cost, expected.mean()[None], atol=1e-12)
    assert torch.all(rendered[0, :, 2:6, 2:6] == 0.5) and torch.all(rendered[0, :, :2] == 0)
    mean_cost.sum().backward()
    # Only pixels under the cap pull on the colour: the gradient is the sum of their 2 (c - i) / HW.
    inside = squared[2:6, 2:6] < tau ** 2
    expected_gradient = (2 * (0.5 - image[0, :, 2:6, 2:6]) * inside).sum(dim=(1, 2)) / (height * width)
    assert torch.allclose(colour.grad.sum(dim=1)[0], expected_gradient, atol=1e-12)


def test_photometric_gradient_reaches_vertex_positions():
    image = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    image[..., :, :4] = 1.0  # left half white
    vertices, triangles = _square(1.0, 1.0, 7.0, 7.0)
    vertices.requires_grad_(True)
    colour = torch.zeros(1, 4, 3, dtype=torch.float64)
    colour[:, [0, 3]] = 1.0  # white on the left edge, black on the right: a gradient across the square
    mean_cost, _, _ = photometric_loss(image, vertices, colour, triangles, 10.0)
    mean_cost.sum().backward()
    assert torch.isfinite(vertices.grad).all() and vertices.grad[..., :2].abs().sum() > 0


def test_geometric_loss_is_the_reprojection_of_the_fitted_model_points(ict_uv_model):
    faces = generate_faces(ict_uv_model, [3, 4], SyntheticConfig(size=32))
    generator = torch.Generator().manual_seed(0)
    # Perturbed true maps: the fit is not exact, so residuals and reprojections are not zero.
    correspondence = (faces.correspondence + 0.01 * torch.randn(faces.correspondence.shape, generator=generator)).clamp(0, 1)
    confidence = faces.confidence.expand(-1, 2, -1, -1) + 1e-3
    result = fit(ict_uv_model, faces.image.double(), correspondence.double(), faces.depth.double() + 1e-3, confidence.double(),
                 SolverConfig(sample_count=200), torch.Generator().manual_seed(1))
    loss = geometric_loss(result, faces.depth.double() + 1e-3, cap=10.0)
    # Independent: sample the basis at the correspondences, build a + B m, project with K (R X + t).
    mean, basis = sample_shape(ict_uv_model, result.correspondence.to(ict_uv_model.shape_images.dtype))
    model_points = mean.double() + (basis.double() @ result.shape_coefficients[:, None, :, None]).squeeze(-1)
    camera = model_points @ result.rotation.transpose(1, 2) + result.translation[:, None]
    projected = camera @ result.intrinsics.transpose(1, 2)
    distance = ((projected[..., :2] / projected[..., 2:] - result.samples.pixels.double()) / 32.0).square().sum(-1)
    weights = result.geometric_weights.double()
    expected = (distance * weights).sum(1) / weights.sum(1)
    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-12)
    assert float(expected.max()) > 0
    capped = geometric_loss(result, faces.depth.double() + 1e-3, cap=1e-4)
    assert torch.all(capped <= 1e-8 + 1e-12)


def test_statistical_loss_is_the_weighted_sum_of_squares():
    shape, albedo = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])
    value = statistical_loss(shape, albedo, torch.tensor([0.5, 2.0]), torch.tensor([0.1]))
    assert torch.allclose(value, torch.tensor([0.5 + 8.0 + 0.9]))


def _true_maps(seed=0):
    generator = torch.Generator().manual_seed(seed)
    face = torch.zeros(2, 1, 6, 6, dtype=torch.float64)
    face[:, :, 1:5, 1:4] = 1.0
    correspondence = torch.rand(2, 2, 6, 6, generator=generator, dtype=torch.float64)
    depth = 400.0 + 50.0 * torch.rand(2, 1, 6, 6, generator=generator, dtype=torch.float64)
    return correspondence, depth * face, face


def test_true_map_loss_matches_a_direct_computation_and_ignores_the_depth_scale():
    from lsqface.train.losses import true_map_loss

    true_correspondence, true_depth, face = _true_maps()
    generator = torch.Generator().manual_seed(1)
    correspondence = torch.rand(2, 2, 6, 6, generator=generator, dtype=torch.float64)
    depth = 0.5 + torch.rand(2, 1, 6, 6, generator=generator, dtype=torch.float64)
    confidence = torch.rand(2, 2, 6, 6, generator=generator, dtype=torch.float64).clamp(0.05, 0.95)
    total, terms = true_map_loss(correspondence, depth, confidence, true_correspondence, true_depth, face, 1.0, 2.0, 0.5)
    for index in range(2):
        on = face[index, 0] > 0.5
        expected_uv = (correspondence[index] - true_correspondence[index]).abs().sum(0)[on].mean()
        log_depth, log_true = depth[index, 0][on].log(), true_depth[index, 0][on].log()
        expected_depth = ((log_depth - log_depth.mean()) - (log_true - log_true.mean())).abs().mean()
        target = face[index].expand(2, -1, -1)
        expected_confidence = -(target * confidence[index].log() + (1 - target) * (1 - confidence[index]).log()).mean()
        assert torch.allclose(terms["correspondence"][index], expected_uv)
        assert torch.allclose(terms["depth"][index], expected_depth)
        assert torch.allclose(terms["confidence"][index], expected_confidence)
        assert torch.allclose(total[index], expected_uv + 2.0 * expected_depth + 0.5 * expected_confidence)
    # Depth is relative: any scale of the prediction (or of the truth, mm vs m) costs the same,
    # and the true depth up to scale costs nothing.
    _, scaled = true_map_loss(correspondence, 7.0 * depth, confidence, true_correspondence, true_depth / 1000.0, face)
    assert torch.allclose(scaled["depth"], terms["depth"])
    _, exact = true_map_loss(true_correspondence, true_depth / 300.0 + (1 - face), confidence, true_correspondence, true_depth, face)
    assert torch.allclose(exact["depth"], torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(exact["correspondence"], torch.zeros(2, dtype=torch.float64))


def test_depth_tilt_is_numpys_least_squares_plane_over_the_mask():
    from lsqface.train.losses import depth_tilt

    generator = torch.Generator().manual_seed(4)
    log_depth = torch.randn(2, 1, 7, 9, generator=generator, dtype=torch.float64)
    mask = (torch.rand(2, 1, 7, 9, generator=generator) > 0.4).to(torch.float64)
    slopes = depth_tilt(log_depth, mask)
    y, x = np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 9), indexing="ij")
    for index in range(2):
        on = mask[index, 0].numpy() > 0
        design = np.stack([np.ones(on.sum()), x[on], y[on]], axis=1)
        solution = np.linalg.lstsq(design, log_depth[index, 0].numpy()[on], rcond=None)[0]
        np.testing.assert_allclose(slopes[index].numpy(), solution[1:], atol=1e-6)
    assert torch.autograd.gradcheck(lambda values: depth_tilt(values, mask), (log_depth.clone().requires_grad_(),))


def test_depth_tilt_term_sees_a_nod_the_centred_depth_term_weighs_like_any_error():
    from lsqface.train.losses import true_map_loss

    true_correspondence, true_depth, face = _true_maps()
    confidence = face.expand(-1, 2, -1, -1).clamp(0.05, 0.95)
    y = torch.linspace(-1, 1, 6, dtype=torch.float64)[None, None, :, None]
    level = true_depth / 300.0 + (1 - face)
    _, exact = true_map_loss(true_correspondence, level, confidence, true_correspondence, true_depth, face,
                             depth_tilt_weight=1.0)
    assert torch.allclose(exact["depth_tilt"], torch.zeros(2, dtype=torch.float64), atol=1e-7)
    # The prediction nods: log depth + 0.05 y. The tilt term is the slope's size, at any depth scale.
    nodded = level * torch.exp(0.05 * y)
    total, terms = true_map_loss(true_correspondence, 3.0 * nodded, confidence, true_correspondence, true_depth, face,
                                 depth_tilt_weight=2.0)
    assert torch.allclose(terms["depth_tilt"], torch.full((2,), 0.05, dtype=torch.float64), atol=1e-6)
    untilted, _ = true_map_loss(true_correspondence, 3.0 * nodded, confidence, true_correspondence, true_depth, face)
    assert torch.allclose(total, untilted + 2.0 * terms["depth_tilt"])


def test_true_shape_loss_is_the_vertex_error_after_procrustes_alignment(ict_uv_model):
    from lsqface.train.losses import true_shape_loss

    model = ict_uv_model.model
    mean = torch.as_tensor(model.shape_mean, dtype=torch.float64)
    basis = torch.as_tensor(model.shape_basis, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    truth = torch.randn(2, model.n_shape, generator=generator, dtype=torch.float64)
    fitted = truth + 0.3 * torch.randn(2, model.n_shape, generator=generator, dtype=torch.float64)
    value = true_shape_loss(mean, basis, fitted, truth)
    for index in range(2):
        # Independently: the meshes in numpy, aligned by scipy's orthogonal Procrustes and the
        # least-squares scale for that rotation.
        a = (model.shape_mean + model.shape_basis @ fitted[index].numpy())
        b = (model.shape_mean + model.shape_basis @ truth[index].numpy())
        a, b_centre = a - a.mean(0), b.mean(0)
        rotation, _ = scipy.linalg.orthogonal_procrustes(a, b - b_centre)
        scale = np.sum((a @ rotation) * (b - b_centre)) / np.sum(a * a)
        expected = np.linalg.norm(scale * a @ rotation + b_centre - b, axis=1).mean()
        assert float(value[index]) == pytest.approx(expected, rel=1e-9)
    assert torch.allclose(true_shape_loss(mean, basis, truth, truth), torch.zeros(2, dtype=torch.float64), atol=1e-9)


def test_true_shape_loss_gradient_matches_finite_differences(ict_uv_model):
    from lsqface.train.losses import true_shape_loss

    mean = torch.as_tensor(ict_uv_model.model.shape_mean[:60], dtype=torch.float64)
    basis = torch.as_tensor(ict_uv_model.model.shape_basis[:60, :, :6], dtype=torch.float64)
    generator = torch.Generator().manual_seed(4)
    truth = torch.randn(2, 6, generator=generator, dtype=torch.float64)
    fitted = torch.randn(2, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: true_shape_loss(mean, basis, m, truth), (fitted,))


def _camera_and_shape(coefficients, intrinsics, rotation, translation):
    from types import SimpleNamespace

    return SimpleNamespace(shape_coefficients=coefficients, intrinsics=intrinsics, rotation=rotation,
                           translation=translation)


def test_true_landmark_loss_is_zero_on_the_generators_own_face_and_matches_numpy(ict_uv_model):
    from lsqface.data.synthetic import SyntheticConfig, generate_faces
    from lsqface.train.losses import true_landmark_loss

    model = ict_uv_model.model
    mean = torch.as_tensor(model.shape_mean, dtype=torch.float64)
    basis = torch.as_tensor(model.shape_basis, dtype=torch.float64)
    rows = torch.as_tensor(model.landmarks_5)
    faces = generate_faces(ict_uv_model, [11, 12], SyntheticConfig(size=64, roll_range=180.0))
    coefficients = torch.cat([faces.identity, faces.expression], dim=1).double()
    camera = (faces.intrinsics.double(), faces.rotation.double(), faces.translation.double())
    # The face's own shape and camera give the generator's landmarks.
    exact = true_landmark_loss(mean, basis, rows, _camera_and_shape(coefficients, *camera), faces.landmarks_5)
    assert exact.abs().max() < 1e-3
    # A perturbed fit, against an independent computation: numpy mesh, landmark means, pinhole projection.
    generator = torch.Generator().manual_seed(7)
    perturbed = coefficients + 0.5 * torch.randn(coefficients.shape, generator=generator, dtype=torch.float64)
    shifted = camera[2] + torch.tensor([3.0, -2.0, 10.0], dtype=torch.float64)
    value = true_landmark_loss(mean, basis, rows, _camera_and_shape(perturbed, camera[0], camera[1], shifted), faces.landmarks_5)
    for index in range(2):
        c = perturbed[index].numpy()
        vertices = model.shape(c[:model.n_identity], c[model.n_identity:])
        five = vertices[model.landmarks_5].mean(axis=1)
        points = (five @ camera[1][index].numpy().T + shifted[index].numpy()) @ camera[0][index].numpy().T
        pixels = points[:, :2] / points[:, 2:]
        truth = faces.landmarks_5[index].double().numpy()
        expected = 100 * np.linalg.norm(pixels - truth, axis=1).mean() / np.linalg.norm(truth[0] - truth[1])
        assert float(value[index]) == pytest.approx(expected, rel=1e-9)
    assert (value > 1.0).all()


def test_true_landmark_loss_gradient_matches_finite_differences(ict_uv_model):
    from lsqface.train.losses import true_landmark_loss

    model = ict_uv_model.model
    mean = torch.as_tensor(model.shape_mean, dtype=torch.float64)
    basis = torch.as_tensor(model.shape_basis[:, :, :6], dtype=torch.float64)
    rows = torch.as_tensor(model.landmarks_5)
    generator = torch.Generator().manual_seed(8)
    intrinsics = torch.tensor([[[300.0, 0, 32], [0, 300.0, 32], [0, 0, 1]]], dtype=torch.float64).repeat(2, 1, 1)
    rotation = torch.linalg.qr(torch.randn(2, 3, 3, generator=generator, dtype=torch.float64))[0]
    truth = 64 * torch.rand(2, 5, 2, generator=generator, dtype=torch.float64)
    inputs = (torch.randn(2, 6, generator=generator, dtype=torch.float64, requires_grad=True),
              intrinsics.clone().requires_grad_(), rotation.clone().requires_grad_(),
              torch.tensor([[0.0, 0, 600], [5, -5, 700]], dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda *a: true_landmark_loss(mean, basis, rows, _camera_and_shape(*a), truth), inputs)


def _axis_angle(axis, degrees):
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    return torch.as_tensor(Rotation.from_rotvec(np.deg2rad(degrees) * axis).as_matrix())


@pytest.mark.parametrize("degrees", [0.0, 0.5, 30.0, 120.0, 179.5])
def test_true_rotation_loss_is_the_angle_between_the_rotations(degrees):
    # Against scipy: the fitted rotation is the true one turned by a known angle about a known axis.
    from scipy.spatial.transform import Rotation

    from lsqface.train.losses import true_rotation_loss

    truth = torch.as_tensor(Rotation.random(3, random_state=4).as_matrix())
    turn = torch.stack([_axis_angle(axis, degrees) for axis in ([1, 2, 3], [0, 1, 0], [-1, 0.2, 0.5])])
    angles = true_rotation_loss(turn @ truth, truth)
    assert torch.allclose(angles, torch.full((3,), degrees, dtype=torch.float64), atol=1e-6)
    # The same on the other side: the angle does not depend on which of the two rotations is turned.
    assert torch.allclose(true_rotation_loss(truth, turn @ truth), angles, atol=1e-6)


def test_true_rotation_loss_gradient_matches_finite_differences():
    from scipy.spatial.transform import Rotation

    from lsqface.train.losses import true_rotation_loss

    truth = torch.as_tensor(Rotation.random(2, random_state=5).as_matrix())
    fitted = (torch.stack([_axis_angle([1, 1, 0], 25.0), _axis_angle([0, 0, 1], 100.0)]) @ truth).requires_grad_()
    assert torch.autograd.gradcheck(lambda r: true_rotation_loss(r, truth), (fitted,))
    # At an exact match the gradient is finite, not NaN (the norm's floor).
    exact = truth.clone().requires_grad_()
    true_rotation_loss(exact, truth).sum().backward()
    assert torch.isfinite(exact.grad).all()

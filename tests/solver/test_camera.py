import math

import numpy as np
import pytest
import torch

from lsqface.errors import SolverError
from lsqface.solver.camera import Camera, compose_inverse_camera, decompose_camera, project, to_camera


def random_rotation(batch, generator, max_angle=math.pi):
    axis = torch.nn.functional.normalize(torch.randn(batch, 3, generator=generator, dtype=torch.float64), dim=-1)
    angle = (2 * torch.rand(batch, generator=generator, dtype=torch.float64) - 1) * max_angle
    cross = torch.zeros(batch, 3, 3, dtype=torch.float64)
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    cross = cross - cross.transpose(1, 2)
    eye = torch.eye(3, dtype=torch.float64)
    return eye + torch.sin(angle)[:, None, None] * cross + (1 - torch.cos(angle))[:, None, None] * cross @ cross


def random_camera(batch, generator, mirror=False):
    k = torch.zeros(batch, 3, 3, dtype=torch.float64)
    k[:, 0, 0] = 200 + 400 * torch.rand(batch, generator=generator, dtype=torch.float64)
    k[:, 1, 1] = k[:, 0, 0] * (0.8 + 0.4 * torch.rand(batch, generator=generator, dtype=torch.float64))
    k[:, 0, 1] = 5 * torch.randn(batch, generator=generator, dtype=torch.float64)
    k[:, 0, 2] = 100 + 20 * torch.randn(batch, generator=generator, dtype=torch.float64)
    k[:, 1, 2] = 100 + 20 * torch.randn(batch, generator=generator, dtype=torch.float64)
    k[:, 2, 2] = 1
    if mirror:
        k[:, 0, 0] *= -1
    rotation = random_rotation(batch, generator)
    translation = torch.randn(batch, 3, generator=generator, dtype=torch.float64) * 5
    translation[:, 2] += 60
    psi = 0.5 + torch.rand(batch, generator=generator, dtype=torch.float64)
    return Camera(k, rotation, translation, psi)


@pytest.mark.parametrize("mirror", [False, True])
def test_round_trip_recovers_k_r_t_psi(mirror):
    generator = torch.Generator().manual_seed(0)
    camera = random_camera(64, generator, mirror=mirror)
    recovered = decompose_camera(*compose_inverse_camera(camera))
    for name in ("intrinsics", "rotation", "translation", "depth_scale"):
        torch.testing.assert_close(getattr(recovered, name), getattr(camera, name), rtol=1e-9, atol=1e-9)
    assert torch.allclose(torch.linalg.det(recovered.rotation), torch.ones(64, dtype=torch.float64))
    assert ((recovered.intrinsics[:, 0, 0] < 0) == mirror).all()


def test_in_plane_rotations_up_to_180_degrees():
    angles = torch.tensor([0.0, 0.5, 1.5, 3.0, math.pi, -math.pi + 1e-3, -2.0], dtype=torch.float64)
    cos, sin = torch.cos(angles), torch.sin(angles)
    rotation = torch.zeros(len(angles), 3, 3, dtype=torch.float64)
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
    rotation[:, 2, 2] = 1
    frontal = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    rotation = rotation @ frontal
    generator = torch.Generator().manual_seed(1)
    base = random_camera(len(angles), generator)
    camera = Camera(base.intrinsics, rotation, base.translation, base.depth_scale)
    recovered = decompose_camera(*compose_inverse_camera(camera))
    torch.testing.assert_close(recovered.rotation, rotation, rtol=0, atol=1e-10)
    torch.testing.assert_close(recovered.intrinsics, camera.intrinsics, rtol=1e-10, atol=1e-9)


def test_projection_matches_the_inverse_camera_equation():
    generator = torch.Generator().manual_seed(2)
    camera = random_camera(3, generator)
    inverse_camera, camera_centre = compose_inverse_camera(camera)
    points = torch.randn(3, 50, 3, generator=generator, dtype=torch.float64) * 8
    pixels = project(points, camera.intrinsics, camera.rotation, camera.translation)
    depth = camera.depth_scale[:, None] * to_camera(points, camera.rotation, camera.translation)[..., 2]
    homogeneous = torch.cat((pixels, torch.ones_like(pixels[..., :1])), -1)
    back = (depth[..., None] * homogeneous) @ inverse_camera.transpose(1, 2) + camera_centre[:, None]
    torch.testing.assert_close(back, points, rtol=1e-10, atol=1e-10)
    # Independent projection in numpy.
    k, r, t = camera.intrinsics[0].numpy(), camera.rotation[0].numpy(), camera.translation[0].numpy()
    h = (k @ (points[0].numpy() @ r.T + t).T).T
    np.testing.assert_allclose(pixels[0].numpy(), h[:, :2] / h[:, 2:], rtol=1e-12)


def test_gradcheck_through_the_decomposition():
    generator = torch.Generator().manual_seed(3)
    camera = random_camera(2, generator)
    inverse_camera, camera_centre = compose_inverse_camera(camera)
    inverse_camera = (inverse_camera * 100).requires_grad_()
    camera_centre = camera_centre.clone().requires_grad_()

    def function(p, q):
        out = decompose_camera(p, q)
        return out.intrinsics, out.rotation, out.translation, out.depth_scale

    assert torch.autograd.gradcheck(function, (inverse_camera, camera_centre), eps=1e-7, atol=1e-5, rtol=1e-4)


def test_singular_inverse_camera_raises():
    with pytest.raises(SolverError, match="singular"):
        decompose_camera(torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))

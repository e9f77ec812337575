"""Synthetic scenes for the solver tests: a known camera, shape and lighting, and noise-free samples."""

import math
from dataclasses import dataclass

import pytest
import torch

from lsqface.solver.camera import Camera, compose_inverse_camera, project, to_camera


@dataclass
class Scene:
    camera: Camera
    inverse_camera: torch.Tensor
    camera_centre: torch.Tensor
    shape_coefficients: torch.Tensor
    pixels: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    mean: torch.Tensor
    basis: torch.Tensor
    image_size: tuple


def axis_rotation(angle, axis):
    cos, sin = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rotation = torch.eye(3, dtype=torch.float64)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = cos, -sin, sin, cos
    return rotation


def make_camera(batch, generator, size=224):
    frontal = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    rotations, intrinsics = [], []
    for _ in range(batch):
        yaw, pitch, roll = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1) * torch.tensor([0.6, 0.3, 3.1])
        rotations.append(axis_rotation(roll.item(), 2) @ axis_rotation(yaw.item(), 1) @ axis_rotation(pitch.item(), 0) @ frontal)
        focal = 400 + 300 * torch.rand(1, generator=generator, dtype=torch.float64).item()
        intrinsics.append(torch.tensor([[focal, 0, (size - 1) / 2 + 5], [0, focal * 1.02, (size - 1) / 2 - 3], [0, 0, 1]], dtype=torch.float64))
    translation = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    translation[:, 2] = 50 + 10 * torch.rand(batch, generator=generator, dtype=torch.float64)
    psi = 0.02 + 0.02 * torch.rand(batch, generator=generator, dtype=torch.float64)
    return Camera(torch.stack(intrinsics), torch.stack(rotations), translation, psi)


def make_scene(batch=2, points=200, count=6, seed=0, size=224, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    camera = make_camera(batch, generator, size)
    mean = torch.randn(batch, points, 3, generator=generator, dtype=torch.float64) * torch.tensor([6.0, 8.0, 3.0], dtype=torch.float64)
    basis = torch.randn(batch, points, 3, count, generator=generator, dtype=torch.float64) * 0.5
    coefficients = torch.randn(batch, count, generator=generator, dtype=torch.float64)
    model_points = mean + (basis @ coefficients[:, None, :, None]).squeeze(-1)
    pixels = project(model_points, camera.intrinsics, camera.rotation, camera.translation)
    depth = camera.depth_scale[:, None] * to_camera(model_points, camera.rotation, camera.translation)[..., 2]
    confidence = 0.2 + torch.rand(batch, points, generator=generator, dtype=torch.float64)
    inverse_camera, camera_centre = compose_inverse_camera(camera)
    scene = Scene(camera, inverse_camera, camera_centre, coefficients, pixels, depth, confidence, mean, basis, (size, size))
    if dtype != torch.float64:
        for name in ("pixels", "depth", "confidence", "mean", "basis"):
            setattr(scene, name, getattr(scene, name).to(dtype))
    return scene


@pytest.fixture
def scene_factory():
    return make_scene

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


def make_camera(batch, generator, size=224, focal_range=(400.0, 700.0)):
    frontal = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    rotations, intrinsics = [], []
    for _ in range(batch):
        yaw, pitch, roll = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1) * torch.tensor([0.6, 0.3, 3.1])
        rotations.append(axis_rotation(roll.item(), 2) @ axis_rotation(yaw.item(), 1) @ axis_rotation(pitch.item(), 0) @ frontal)
        focal = focal_range[0] + (focal_range[1] - focal_range[0]) * torch.rand(1, generator=generator, dtype=torch.float64).item()
        intrinsics.append(torch.tensor([[focal, 0, size / 2 + 5], [0, focal * 1.02, size / 2 - 3], [0, 0, 1]], dtype=torch.float64))
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


@dataclass
class ImageScene:
    uv_model: object
    image: torch.Tensor
    correspondence: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    camera: Camera
    inverse_camera: torch.Tensor
    camera_centre: torch.Tensor
    shape_coefficients: torch.Tensor
    inverse_lighting: torch.Tensor
    albedo_coefficients: torch.Tensor


def make_image_scene(batch=2, size=24, n_identity=3, n_expression=2, n_albedo=4, seed=0, uv_offset=0.0):
    """Network-like maps for a known camera, shape and lighting, with a float64 UV-3DMM written to match.

    Image b's pixel (x, y) corresponds to UV pixel (x + b size, y) of a (2 size)-wide UV image, so
    bilinear sampling hits UV pixel centres exactly and the model can hold every image's truth.
    """
    import numpy as np

    from lsqface.lighting.sh import constant_lighting, sh_basis
    from lsqface.morphable.model import MorphableModel
    from lsqface.morphable.uv_model import UVMorphableModel
    from lsqface.solver.preprocess import inverse_softplus_preprocess

    generator = torch.Generator().manual_seed(seed)
    n_shape = n_identity + n_expression
    uv_size = batch * size
    camera = make_camera(batch, generator, size, focal_range=(30.0, 45.0))
    inverse_camera, camera_centre = compose_inverse_camera(camera)
    # Pixel centres (j + 0.5, i + 0.5), the convention of lsqface.solver.sampling and the renderer.
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    pixels = torch.stack((xs + 0.5, ys + 0.5, torch.ones_like(xs)), -1)  # (H, W, 3)
    z = 50 + 5 * torch.rand(batch, size, size, generator=generator, dtype=torch.float64)
    depth = camera.depth_scale[:, None, None] * z
    points = torch.einsum("bij,bhwj->bhwi", inverse_camera, depth[..., None] * pixels) + camera_centre[:, None, None]
    shape_coefficients = torch.randn(batch, n_shape, generator=generator, dtype=torch.float64)
    basis = 0.5 * torch.randn(batch, size, size, 3, n_shape, generator=generator, dtype=torch.float64)
    mean = points - (basis @ shape_coefficients[:, None, None, :, None]).squeeze(-1)
    normals = torch.nn.functional.normalize(torch.randn(batch, size, size, 3, generator=generator, dtype=torch.float64), dim=-1)
    inverse_lighting = constant_lighting(1.1).expand(batch, 3, 9) + 0.05 * torch.randn(batch, 3, 9, generator=generator, dtype=torch.float64)
    albedo_coefficients = torch.randn(batch, n_albedo, generator=generator, dtype=torch.float64)
    albedo_mean = 0.4 + 0.2 * torch.rand(batch, size, size, 3, generator=generator, dtype=torch.float64)
    albedo_basis = 0.02 * torch.randn(batch, size, size, 3, n_albedo, generator=generator, dtype=torch.float64)
    albedo = albedo_mean + (albedo_basis @ albedo_coefficients[:, None, None, :, None]).squeeze(-1)
    camera_normals = torch.einsum("bij,bhwj->bhwi", camera.rotation, normals)
    shading = torch.einsum("bhwi,bki->bhwk", sh_basis(camera_normals), inverse_lighting)
    colours = albedo / shading

    def uv_images(values):  # (B, H, W, C) -> (C, H, 2W) with image b in columns b W .. (b + 1) W - 1
        return torch.cat(list(values.permute(0, 3, 1, 2)), dim=2)

    def mean_basis_images(mean_values, basis_values):
        channels = [mean_values] + [basis_values[..., n] for n in range(basis_values.shape[-1])]
        return uv_images(torch.cat(channels, dim=-1))

    def square(images):  # pad rows to a square UV image
        padded = torch.zeros(images.shape[0], uv_size, uv_size, dtype=torch.float64)
        padded[:, :size] = images
        return padded

    model = MorphableModel(
        name="synthetic",
        shape_mean=np.zeros((1, 3)),
        identity_basis=np.zeros((1, 3, n_identity)),
        expression_basis=np.zeros((1, 3, n_expression)),
        albedo_mean=np.zeros((1, 3)),
        albedo_basis=np.zeros((1, 3, n_albedo)),
        triangles=np.zeros((0, 3), dtype=np.int64),
        landmarks_68=np.zeros(68, dtype=np.int64),
        landmarks_5=np.zeros((5, 6), dtype=np.int64),
    )
    uv_model = UVMorphableModel(
        model=model,
        vertex_uv=np.zeros((1, 2)),
        shape_images=square(mean_basis_images(mean, basis)),
        albedo_images=square(mean_basis_images(albedo_mean, albedo_basis)),
        normal_image=square(uv_images(normals)),
        mask_image=torch.ones(1, uv_size, uv_size, dtype=torch.float64),
    )
    offsets = torch.arange(batch, dtype=torch.float64)[:, None, None] * size
    correspondence = torch.stack(((xs + offsets + uv_offset) / (uv_size - 1), (ys + uv_offset).expand(batch, -1, -1) / (uv_size - 1)), dim=1)
    confidence = 0.2 + torch.rand(batch, 2, size, size, generator=generator, dtype=torch.float64)
    image = inverse_softplus_preprocess(colours.permute(0, 3, 1, 2), 4.0)
    assert torch.isfinite(image).all(), "the synthetic albedo must stay positive"
    return ImageScene(
        uv_model, image, correspondence, depth[:, None], confidence, camera, inverse_camera, camera_centre,
        shape_coefficients, inverse_lighting, albedo_coefficients,
    )


@pytest.fixture
def image_scene_factory():
    return make_image_scene


@pytest.fixture
def camera_factory():
    return make_camera

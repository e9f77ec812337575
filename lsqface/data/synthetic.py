"""Synthetic faces with ground truth: the oracle of the reconstruct path and a training source.

A face is drawn from the morphable model itself (random identity, expression
and albedo), given albedo detail the model cannot explain (a random
high-frequency texture in UV space, so the images are not trivially in the
model's span), lit with random order-2 SH lighting (seed D's distribution),
posed by a random perspective camera at any in-plane rotation, and rendered
over a background. Alongside the image come the true maps the network is
meant to predict (correspondence, depth, confidence), the camera and the
landmarks, so every stage of the reconstruct path can be checked.

Conventions: image space as in :mod:`lsqface.render.rasterize` (pixel centres
at ``j + 0.5``); camera frame and head pose as in :mod:`lsqface.solver.pose`;
depth is camera-space z in millimetres. Each face is a deterministic function
of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lsqface.data.backgrounds import procedural_background
from lsqface.lighting.sh import constant_lighting, sh_shading
from lsqface.morphable.model import basis_products
from lsqface.morphable.uv_model import UVMorphableModel
from lsqface.render.interpolate import interpolate, vertex_normals
from lsqface.render.rasterize import rasterize
from lsqface.synthetic.camera import sample_camera


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic faces are drawn. Angles in degrees, lengths in millimetres.

    Attributes:
        size: image height and width in pixels.
        identity_std, expression_std, albedo_std: standard deviation of the
            coefficients, in units of the model's own standard deviation.
        albedo_detail: amplitude of the high-frequency albedo texture outside the model.
        roll_range: in-plane rotation drawn uniformly from [-roll_range, roll_range].
        yaw_range, pitch_range: out-of-plane rotation ranges, drawn the same way.
        face_fraction: range of the face's width as a fraction of the image width.
        shift: range of the face centre's offset from the image centre, as a fraction of the size.
        field_of_view: horizontal field of view range of the camera.
        lighting_std: standard deviation of each SH coefficient around constant lighting (seed D: 0.2).
        lighting_ambient: the constant lighting's shading (seed D: 0.9).
        colour_lighting_std: spread of the per-channel lighting scale (coloured light).
        background: "procedural" (random colour fields and shapes, lsqface.data.backgrounds) or "none" (black).
    """

    size: int = 128
    identity_std: float = 1.0
    expression_std: float = 0.5
    albedo_std: float = 1.0
    albedo_detail: float = 0.05
    roll_range: float = 180.0
    yaw_range: float = 25.0
    pitch_range: float = 15.0
    face_fraction: tuple[float, float] = (0.45, 0.75)
    shift: float = 0.1
    field_of_view: tuple[float, float] = (15.0, 40.0)
    lighting_std: float = 0.2
    lighting_ambient: float = 0.9
    colour_lighting_std: float = 0.1
    background: str = "procedural"


@dataclass
class SyntheticFaces:
    """A batch of B synthetic faces of size H = W = ``config.size``.

    Attributes:
        image: (B, 3, H, W) in [0, 1].
        correspondence: (B, 2, H, W) true (u, v) of the visible surface, 0 on background.
        depth: (B, 1, H, W) camera-space z in millimetres, 0 on background.
        confidence: (B, 1, H, W) 1 where the face is visible, 0 elsewhere.
        intrinsics: (B, 3, 3) K in pixels; rotation: (B, 3, 3) R; translation: (B, 3) t in mm,
            so that a model point X projects to K (R X + t).
        identity: (B, N_id); expression: (B, N_exp); albedo: (B, N_alb) coefficients.
        lighting: (B, 3, 9) conventional SH lighting per colour channel (camera frame).
        pose: (B, 3) yaw, pitch, roll in degrees.
        vertices: (B, V, 3) camera-space vertices in mm.
        landmarks_68: (B, 68, 2) and landmarks_5: (B, 5, 2) in pixels.
        seeds: the seed of each face.
    """

    image: torch.Tensor
    correspondence: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    intrinsics: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    identity: torch.Tensor
    expression: torch.Tensor
    albedo: torch.Tensor
    lighting: torch.Tensor
    pose: torch.Tensor
    vertices: torch.Tensor
    landmarks_68: torch.Tensor
    landmarks_5: torch.Tensor
    seeds: list[int] = field(default_factory=list)


def _detail_texture(generator: torch.Generator, amplitude: float) -> torch.Tensor:
    """A (1, 3, 64, 64) zero-mean random albedo texture in UV space (freckles and blotches)."""
    fine = torch.randn(1, 1, 64, 64, generator=generator)
    medium = F.interpolate(torch.randn(1, 1, 16, 16, generator=generator), size=(64, 64), mode="bilinear", align_corners=False)
    tint = 1.0 + 0.2 * torch.randn(1, 3, 1, 1, generator=generator)
    return amplitude * (0.5 * fine + medium) * tint


def generate_faces(uv_model: UVMorphableModel, seeds: list[int], config: SyntheticConfig = SyntheticConfig()) -> SyntheticFaces:
    """Render one synthetic face per seed, with its ground truth.

    Args:
        uv_model: the UV-3DMM whose model draws the faces and whose flattening gives the correspondence.
        seeds: one integer per face; the same seed always gives the same face.
        config: the distributions faces are drawn from.
    """
    model = uv_model.model
    dtype = torch.float64
    mean = torch.as_tensor(model.shape_mean, dtype=dtype)
    identity_basis = torch.as_tensor(model.identity_basis, dtype=dtype)
    expression_basis = torch.as_tensor(model.expression_basis, dtype=dtype)
    albedo_mean = torch.as_tensor(model.albedo_mean, dtype=dtype)
    albedo_basis = torch.as_tensor(model.albedo_basis, dtype=dtype)
    triangles = torch.as_tensor(model.triangles, dtype=torch.int64)
    vertex_uv = torch.as_tensor(uv_model.vertex_uv, dtype=dtype)
    centroid, face_width, centre_depth = model.framing()
    centre = torch.as_tensor(centroid, dtype=dtype)

    parts: dict[str, list[torch.Tensor]] = {key: [] for key in (
        "identity", "expression", "albedo", "lighting", "intrinsics", "rotation", "translation", "pose",
        "camera_translation", "detail", "background")}
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        identity = config.identity_std * torch.randn(model.n_identity, generator=generator, dtype=dtype)
        expression = config.expression_std * torch.randn(model.n_expression, generator=generator, dtype=dtype)
        albedo = config.albedo_std * torch.randn(model.n_albedo, generator=generator, dtype=dtype)
        intrinsics, rotation, translation, pose = sample_camera(
            generator, config.size, face_width, centre_depth, config.field_of_view, config.face_fraction,
            config.yaw_range, config.pitch_range, config.roll_range, config.shift)
        lighting = constant_lighting(config.lighting_ambient) + config.lighting_std * torch.randn(9, generator=generator, dtype=dtype)
        colour_scale = 1.0 + config.colour_lighting_std * torch.randn(3, 1, generator=generator, dtype=dtype)
        parts["identity"].append(identity)
        parts["expression"].append(expression)
        parts["albedo"].append(albedo)
        parts["lighting"].append(colour_scale * lighting)
        parts["intrinsics"].append(intrinsics)
        parts["rotation"].append(rotation)
        # The model is centred before posing; fold the centring into t so X projects as K (R X + t).
        parts["translation"].append(translation - rotation @ centre)
        parts["pose"].append(pose)
        parts["camera_translation"].append(translation)
        parts["detail"].append(_detail_texture(generator, config.albedo_detail))
        if config.background == "procedural":
            parts["background"].append(procedural_background(1, config.size, config.size, generator)[0])
        else:
            parts["background"].append(torch.zeros(3, config.size, config.size))
    stacked = {key: torch.stack(value) for key, value in parts.items()}

    shape = (mean + basis_products(identity_basis, stacked["identity"])
             + basis_products(expression_basis, stacked["expression"]) - centre)
    vertices = shape @ stacked["rotation"].transpose(1, 2) + stacked["camera_translation"][:, None]
    stacked["vertex_albedo"] = albedo_mean + basis_products(albedo_basis, stacked["albedo"])
    intrinsics = stacked["intrinsics"]
    projected = vertices @ intrinsics.transpose(1, 2)
    image_vertices = torch.cat([projected[..., :2] / projected[..., 2:], vertices[..., 2:]], dim=-1)
    fragments = rasterize(image_vertices.float(), triangles, config.size, config.size)
    mask = fragments.triangle_id >= 0
    batch = len(seeds)
    normals = vertex_normals(vertices, triangles)
    attributes = torch.cat([vertex_uv.expand(batch, -1, -1), normals, stacked["vertex_albedo"], vertices[..., 2:]], dim=-1)
    pixels = interpolate(attributes.float(), fragments, image_vertices.float(), triangles)  # (B, H, W, C)
    uv = pixels[..., 0:2]
    pixel_normals = F.normalize(pixels[..., 2:5], dim=-1)
    # Faces are wound counter-clockwise from outside: normals point towards the camera (negative z).
    detail = torch.cat([F.grid_sample(stacked["detail"][b], (uv[b:b + 1] * 2 - 1).float(), align_corners=True) for b in range(batch)])
    albedo_image = (pixels[..., 5:8].permute(0, 3, 1, 2) + detail).clamp(0.0, 1.0)
    shading = sh_shading(pixel_normals, stacked["lighting"].float()[:, None, None]).permute(0, 3, 1, 2).clamp_min(0.0)
    mask_image = mask[:, None].float()
    face = (albedo_image * shading).clamp(0.0, 1.0)
    image = mask_image * face + (1.0 - mask_image) * stacked["background"]

    landmark_68, landmark_5 = model.landmark_points(vertices.numpy())
    def to_pixels(points):
        points = torch.as_tensor(points) @ intrinsics.transpose(1, 2)
        return (points[..., :2] / points[..., 2:]).float()

    return SyntheticFaces(
        image=image.float(),
        correspondence=(uv.permute(0, 3, 1, 2) * mask_image).float(),
        depth=(pixels[..., 8:9].permute(0, 3, 1, 2) * mask_image).float(),
        confidence=mask_image,
        intrinsics=intrinsics,
        rotation=stacked["rotation"],
        translation=stacked["translation"],
        identity=stacked["identity"],
        expression=stacked["expression"],
        albedo=stacked["albedo"],
        lighting=stacked["lighting"],
        pose=stacked["pose"],
        vertices=vertices,
        landmarks_68=to_pixels(landmark_68),
        landmarks_5=to_pixels(landmark_5),
        seeds=[int(seed) for seed in seeds],
    )

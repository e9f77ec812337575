"""MoFA in spirit (Tewari et al. 2017): a CNN regresses 3DMM, camera and lighting; a model-based decoder renders them.

The seed (section P) compares lsqface with a "2D-augmented MoFA": the
conventional pipeline image -> encoder -> parameters -> rendered image, trained
with a photometric loss, statistical regularisation and optionally landmarks,
on images moved by 2D shifts or similarities. This module is that pipeline on
lsqface's own face model, renderer and lighting convention:

Encoder (:class:`MoFAEncoder`): a plain CNN (3x3 conv, batch norm, ReLU,
2x2 max-pool per stage), global average pooling and one linear layer giving
the parameter vector

    [rotation (6) | translation (3) | identity (N_id) | expression (N_exp) | albedo (N_alb) | lighting (27)]

``encoder = "small"`` (default) has five stages of one convolution with
32, 64, 128, 256, 256 channels times ``width``: 1.05 M parameters at width 1 with ICT-FaceKit,
sized for a CPU. ``encoder = "vgg19-like"`` has VGG19's sixteen convolutions
(64, 64 | 128, 128 | 256 x 4 | 512 x 4 | 512 x 4, times ``width``) with batch
norm, trained from scratch (MoFA started from ImageNet weights; we have none
offline), global average pooling instead of VGG's 4096-wide fully connected
layers (which fit only 224 px inputs).

Decoder (:func:`decode_parameters`, :func:`mofa_mesh`):

- rotation: the continuous 6D representation (Zhou et al. 2019): two 3-vectors
  ``a = e_x + o[0:3]``, ``b = e_y + o[3:6]`` are Gram-Schmidt orthonormalised
  into the columns (r1, r2, r1 x r2) of a rotation Q, and R = Q FRONTAL
  (lsqface.solver.pose), so a zero output is the frontal upright face. Unlike
  Euler angles it has no singularity, which matters for faces at any in-plane
  rotation.
- translation: a fixed pinhole camera (``field_of_view``, principal point at
  the image centre); the centred face sits at t = (x, y, z) with
  ``z = z0 exp(o_z)`` and ``(x, y) = z0 (S / 2 f) o_xy`` (o_xy in half image
  sides at the default distance); z0 puts the mean face at ``face_fraction`` of
  the image width. Camera-space vertices: ``R (X - c) + t``, c the mean face's centroid.
- identity, expression, albedo: the raw outputs are the coefficients (the
  model's bases are scaled to unit-variance coefficients).
- lighting: conventional SH per colour channel, ``constant_lighting(0.9) + o``
  (seed D's mean lighting, the synthetic faces' ambient term).
- colour of a vertex = albedo x F(n)^T l (:func:`lsqface.lighting.sh.sh_shading`),
  rendered with :func:`lsqface.render.rasterize` / ``interpolate``.

Losses (per image, (B,)): :func:`photometric_loss` (mean L2 colour distance
over the rendered face region, MoFA's unsquared norm), :func:`landmark_loss`
(L1 distance of the 68 projected model landmarks to the true ones over the
image side; the seed uses L1 "for stability"), :func:`statistical_loss`
(weighted squared coefficients).

Phases (seed P, :data:`PHASES`): "rotation_xy" trains only rotation and xy
translation, "rotation_translation" rotation and the full translation (3DMM
and lighting fixed at the mean in both, landmark loss only), "full" every
parameter. Fixed groups are zeroed in the raw output before decoding, so they
take their default values and no gradient reaches their rows of the last layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from lsqface.errors import ConfigError
from lsqface.lighting.sh import SH_COUNT, constant_lighting, sh_shading
from lsqface.morphable.model import MorphableModel, basis_products
from lsqface.render.interpolate import interpolate, vertex_normals
from lsqface.render.rasterize import rasterize
from lsqface.solver.pose import FRONTAL

#: Encoder stages: (channels, convolutions) before each 2x2 max-pool.
ENCODERS = {
    "small": ((32, 1), (64, 1), (128, 1), (256, 1), (256, 1)),
    "vgg19-like": ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}
#: Parameter groups in the order of the network's output vector.
GROUPS = ("rotation", "translation_xy", "translation_z", "identity", "expression", "albedo", "lighting")
#: Which groups each training phase lets the network change (seed P).
PHASES = {
    "rotation_xy": ("rotation", "translation_xy"),
    "rotation_translation": ("rotation", "translation_xy", "translation_z"),
    "full": GROUPS,
}
#: The synthetic faces' mean ambient shading (lsqface.data.synthetic), the lighting at a zero output.
BASE_LIGHTING = 0.9


@dataclass(frozen=True)
class MoFANetworkConfig:
    """Which MoFA encoder and camera.

    Attributes:
        encoder: "small" (CPU-sized) or "vgg19-like" (module notes).
        width: factor on every convolution's channel count.
        field_of_view: the fixed camera's horizontal field of view, degrees (the synthetic
            faces draw theirs from 15-40; 27.5 is the middle).
        face_fraction: the mean face's width over the image width at the default distance.
        head_scale: the last layer's initial weights are PyTorch's default times this, so the
            first outputs are near the frontal, centred, mean face.
    """

    encoder: Literal["small", "vgg19-like"] = "small"
    width: float = 1.0
    field_of_view: float = 27.5
    face_fraction: float = 0.6
    head_scale: float = 0.01

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"Unknown MoFA encoder {self.encoder!r}; choose one of {', '.join(ENCODERS)}.")
        if not (math.isfinite(self.width) and self.width > 0):
            raise ConfigError(f"MoFA width must be a positive number, got {self.width!r}.")
        if not 0.0 < self.field_of_view < 180.0:
            raise ConfigError(f"field_of_view must be between 0 and 180 degrees, got {self.field_of_view}.")
        if not self.face_fraction > 0:
            raise ConfigError(f"face_fraction must be positive, got {self.face_fraction}.")


def group_sizes(n_identity: int, n_expression: int, n_albedo: int) -> dict[str, int]:
    """Length of each parameter group in the output vector (rotation is the 6D representation)."""
    return {"rotation": 6, "translation_xy": 2, "translation_z": 1, "identity": n_identity,
            "expression": n_expression, "albedo": n_albedo, "lighting": 3 * SH_COUNT}


def group_slices(n_identity: int, n_expression: int, n_albedo: int) -> dict[str, slice]:
    """Where each group sits in the (B, P) output vector."""
    slices, start = {}, 0
    for name, size in group_sizes(n_identity, n_expression, n_albedo).items():
        slices[name] = slice(start, start + size)
        start += size
    return slices


class MoFAEncoder(nn.Module):
    """Image (B, 3, S, S) in [0, 1] -> raw parameter vector (B, P); S divisible by 32.

    Args:
        config: encoder kind and width.
        n_identity, n_expression, n_albedo: the face model's coefficient counts.
    """

    def __init__(self, config: MoFANetworkConfig, n_identity: int, n_expression: int, n_albedo: int) -> None:
        super().__init__()
        self.config = config
        self.dimensions = (int(n_identity), int(n_expression), int(n_albedo))
        layers: list[nn.Module] = []
        channels = 3
        for stage_channels, convolutions in ENCODERS[config.encoder]:
            out = max(1, int(round(stage_channels * config.width)))
            for _ in range(convolutions):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.parameter_count = sum(group_sizes(*self.dimensions).values())
        self.head = nn.Linear(channels, self.parameter_count)
        with torch.no_grad():
            self.head.weight.mul_(config.head_scale)
            self.head.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images in [0, 1] -> (B, P) raw outputs (centred input: image - 0.5)."""
        features = self.features(images - 0.5)
        return self.head(features.mean(dim=(2, 3)))


@dataclass
class MoFAParameters:
    """Decoded MoFA parameters of B faces.

    Attributes:
        rotation: (B, 3, 3) model-to-camera rotation R.
        translation: (B, 3) camera-space position of the model centroid c, millimetres.
        identity: (B, N_id); expression: (B, N_exp); albedo: (B, N_alb) coefficients.
        lighting: (B, 3, 9) conventional SH lighting per colour channel.
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    identity: torch.Tensor
    expression: torch.Tensor
    albedo: torch.Tensor
    lighting: torch.Tensor


def rotation_from_6d(six: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations whose first two columns are Gram-Schmidt of the 3-vectors six[:, 0:3], six[:, 3:6] (B, 6).

    Zhou et al. 2019, "On the continuity of rotation representations in neural networks", eq. 15.
    """
    first = F.normalize(six[:, 0:3], dim=-1, eps=1e-8)
    second = six[:, 3:6] - (first * six[:, 3:6]).sum(-1, keepdim=True) * first
    second = F.normalize(second, dim=-1, eps=1e-8)
    third = torch.cross(first, second, dim=-1)
    return torch.stack([first, second, third], dim=-1)


class FaceCamera:
    """The fixed camera and default distance of MoFA for a face model and input size.

    Attributes:
        intrinsics: (3, 3) K in input pixels (float64).
        centroid: (3,) c, the mean face's vertex centroid, model millimetres.
        default_distance: z0, millimetres.
        size: S, the input side in pixels.
    """

    def __init__(self, model: MorphableModel, size: int, config: MoFANetworkConfig) -> None:
        self.size = int(size)
        self.focal = 0.5 * size / math.tan(0.5 * math.radians(config.field_of_view))
        self.intrinsics = torch.tensor([[self.focal, 0.0, 0.5 * size], [0.0, self.focal, 0.5 * size], [0.0, 0.0, 1.0]],
                                       dtype=torch.float64)
        centroid, face_width, front_depth = model.framing()
        self.centroid = torch.as_tensor(centroid, dtype=torch.float64)
        self.default_distance = self.focal * face_width / (config.face_fraction * size) + front_depth


def phase_mask(phase: str, n_identity: int, n_expression: int, n_albedo: int) -> torch.Tensor:
    """(P,) 1 for the output entries a phase trains, 0 for the fixed ones.

    Raises:
        ConfigError: an unknown phase name.
    """
    if phase not in PHASES:
        raise ConfigError(f"Unknown MoFA phase {phase!r}; choose one of {', '.join(PHASES)}.")
    slices = group_slices(n_identity, n_expression, n_albedo)
    mask = torch.zeros(slices["lighting"].stop)
    for name in PHASES[phase]:
        mask[slices[name]] = 1.0
    return mask


def decode_parameters(raw: torch.Tensor, camera: FaceCamera, dimensions: tuple[int, int, int],
                      phase: str = "full") -> MoFAParameters:
    """Turn raw outputs (B, P) into :class:`MoFAParameters` (module notes), fixing what ``phase`` does not train."""
    mask = phase_mask(phase, *dimensions).to(device=raw.device, dtype=raw.dtype)
    raw = raw * mask
    slices = group_slices(*dimensions)
    batch = raw.shape[0]
    base = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=raw.dtype, device=raw.device)
    frontal = torch.tensor(FRONTAL, dtype=raw.dtype, device=raw.device)
    rotation = rotation_from_6d(base + raw[:, slices["rotation"]]) @ frontal
    z0 = camera.default_distance
    depth = z0 * torch.exp(raw[:, slices["translation_z"]])
    xy = raw[:, slices["translation_xy"]] * (z0 * camera.size / (2.0 * camera.focal))
    translation = torch.cat([xy, depth], dim=-1)
    lighting = constant_lighting(BASE_LIGHTING, dtype=raw.dtype).to(raw.device)
    lighting = lighting.expand(batch, 3, SH_COUNT) + raw[:, slices["lighting"]].reshape(batch, 3, SH_COUNT)
    return MoFAParameters(rotation, translation, raw[:, slices["identity"]], raw[:, slices["expression"]],
                          raw[:, slices["albedo"]], lighting)


@dataclass
class MoFAMesh:
    """The decoded face of B images.

    Attributes:
        vertices: (B, V, 3) camera-space vertices, millimetres.
        image_vertices: (B, V, 3) projected (x, y) in input pixels and camera z.
        normals: (B, V, 3) unit vertex normals (camera space).
        albedo: (B, V, 3); colour: (B, V, 3) = albedo x F(n)^T l.
        landmarks_68: (B, 68, 2) projected model landmarks, input pixels.
    """

    vertices: torch.Tensor
    image_vertices: torch.Tensor
    normals: torch.Tensor
    albedo: torch.Tensor
    colour: torch.Tensor
    landmarks_68: torch.Tensor


def mofa_mesh(parameters: MoFAParameters, tensors: dict[str, torch.Tensor], camera: FaceCamera,
              landmarks_68: torch.Tensor) -> MoFAMesh:
    """Shape, pose, project and shade the 3DMM (conventional SH shading), differentiably.

    Args:
        parameters: decoded parameters (B faces).
        tensors: :func:`lsqface.reconstruct.model_tensors` of the face model (dtype of the parameters).
        camera: the fixed camera.
        landmarks_68: (68,) int64 vertex indices of the 68 landmarks.
    """
    dtype, device = parameters.rotation.dtype, parameters.rotation.device
    coefficients = torch.cat([parameters.identity, parameters.expression], dim=-1)
    shape = tensors["shape_mean"] + basis_products(tensors["shape_basis"], coefficients)
    centroid = camera.centroid.to(dtype=dtype, device=device)
    vertices = (shape - centroid) @ parameters.rotation.transpose(1, 2) + parameters.translation[:, None]
    projected = vertices @ camera.intrinsics.to(dtype=dtype, device=device).T
    # Keep z away from 0 so a wild early output cannot divide by zero.
    z = projected[..., 2:3].clamp_min(1e-3)
    image_vertices = torch.cat([projected[..., :2] / z, vertices[..., 2:3]], dim=-1)
    normals = vertex_normals(vertices, tensors["triangles"])
    albedo = tensors["albedo_mean"] + basis_products(tensors["albedo_basis"], parameters.albedo)
    colour = albedo * sh_shading(normals, parameters.lighting[:, None])
    return MoFAMesh(vertices, image_vertices, normals, albedo, colour, image_vertices[:, landmarks_68, :2])


def mofa_landmarks(parameters: MoFAParameters, tensors: dict[str, torch.Tensor], camera: FaceCamera,
                   landmarks_68: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) projected model landmarks in input pixels: :func:`mofa_mesh`'s, posing only the 68 vertices.

    The pretraining phases need nothing else, and skipping the other vertices makes their steps cheap.
    """
    dtype, device = parameters.rotation.dtype, parameters.rotation.device
    coefficients = torch.cat([parameters.identity, parameters.expression], dim=-1)
    shape = tensors["shape_mean"][landmarks_68] + basis_products(tensors["shape_basis"][landmarks_68], coefficients)
    centroid = camera.centroid.to(dtype=dtype, device=device)
    vertices = (shape - centroid) @ parameters.rotation.transpose(1, 2) + parameters.translation[:, None]
    projected = vertices @ camera.intrinsics.to(dtype=dtype, device=device).T
    return projected[..., :2] / projected[..., 2:3].clamp_min(1e-3)


def render(mesh: MoFAMesh, triangles: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise and colour the mesh: ((B, 3, S, S) rendering, 0 outside; (B, 1, S, S) coverage mask)."""
    fragments = rasterize(mesh.image_vertices.detach().float(), triangles, size, size)
    colours = interpolate(mesh.colour, fragments, mesh.image_vertices, triangles)
    return colours.permute(0, 3, 1, 2), fragments.mask[:, None].to(colours.dtype)


def photometric_loss(images: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean over the rendered face region of the L2 colour distance ||I - R||_2 (MoFA's E_photo).

    Args:
        images: (B, 3, S, S) input in [0, 1]; rendered: (B, 3, S, S); mask: (B, 1, S, S) coverage.
        An image the face does not cover costs 0 (its landmark loss still acts).
    """
    distance = torch.sqrt((rendered - images.to(rendered.dtype)).square().sum(dim=1, keepdim=True) + 1e-8)
    return (distance * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)


def landmark_loss(predicted: torch.Tensor, truth: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) mean L1 distance |dx| + |dy| of landmarks (B, L, 2) over the image side ``size`` (pixels)."""
    return (predicted - truth.to(predicted.dtype)).abs().sum(dim=-1).mean(dim=-1) / float(size)


def statistical_loss(parameters: MoFAParameters, identity_weight: float, expression_weight: float,
                     albedo_weight: float) -> torch.Tensor:
    """(B,) w_id ||alpha||^2 + w_exp ||delta||^2 + w_alb ||beta||^2 (unit-variance coefficients)."""
    return (identity_weight * parameters.identity.square().sum(-1) + expression_weight * parameters.expression.square().sum(-1)
            + albedo_weight * parameters.albedo.square().sum(-1))


def encoder_from_checkpoint(payload: dict, path="checkpoint") -> MoFAEncoder:
    """Build the MoFA encoder a checkpoint describes and load its weights.

    Raises:
        CheckpointError: the checkpoint is not a MoFA one, or its weights do not fit its config.
    """
    from lsqface.errors import CheckpointError

    if payload.get("kind") != "mofa":
        raise CheckpointError(f"Checkpoint {path} is not a MoFA checkpoint; pass one written by 'lsqface train-mofa'.")
    try:
        config = MoFANetworkConfig(**payload["network_config"])
        dimensions = [int(value) for value in payload["dimensions"]]
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"Checkpoint {path} names an unknown MoFA configuration ({error}).") from None
    encoder = MoFAEncoder(config, *dimensions)
    try:
        encoder.load_state_dict(payload["network_state"], strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"Checkpoint {path} holds weights of another network than its config describes "
                              f"({str(error).splitlines()[0]}); it is damaged or was edited.") from None
    return encoder


# --------------------------------------------------------------------------- evaluation adapter


@dataclass
class MoFAReconstruction:
    """What :class:`MoFAReconstructor` returns for B images: the fields the benchmarks read, in original-image pixels.

    Attributes:
        vertices: (B, V, 3) camera-space vertices, millimetres; triangles: (F, 3) int64.
        rotation: (B, 3, 3) R; translation: (B, 3) t (K (R (X - c) + t) projects X), mm.
        intrinsics: (B, 3, 3) K in original-image pixels; pose: (B, 3) yaw, pitch, roll, degrees.
        identity, expression, albedo_coefficients: (B, N) coefficients; lighting: (B, 3, 9) SH.
        colour: (B, V, 3) albedo x shading.
        landmarks_68: (B, 68, 2) and landmarks_5: (B, 5, 2) in original-image pixels.
        network_image: (B, 3, S, S) the framed input.
        correspondence: (B, 2, S, S) the rendered (u, v) of the fitted face (MoFA predicts no map: the
            benchmark's "direct" landmarks are then read off the rendering); confidence: (B, 2, S, S)
            the rendering's coverage in both channels.
        to_network: (B, 3, 3) original-image pixels -> network pixels; image_sizes: (height, width) each.
    """

    vertices: torch.Tensor
    triangles: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    intrinsics: torch.Tensor
    pose: torch.Tensor
    identity: torch.Tensor
    expression: torch.Tensor
    albedo_coefficients: torch.Tensor
    lighting: torch.Tensor
    colour: torch.Tensor
    landmarks_68: torch.Tensor
    landmarks_5: torch.Tensor
    network_image: torch.Tensor
    correspondence: torch.Tensor
    confidence: torch.Tensor
    to_network: torch.Tensor
    image_sizes: list

    def __len__(self) -> int:
        return int(self.vertices.shape[0])


class MoFAReconstructor:
    """A trained MoFA encoder with its face model: images in, :class:`MoFAReconstruction` out.

    The same call signature as :class:`lsqface.reconstruct.Reconstructor`, so
    :func:`lsqface.evaluate.benchmark.evaluate_synthetic` runs it unchanged.

    Args:
        encoder: the trained encoder (put in eval mode).
        uv_model: the UV-3DMM whose model the encoder was trained with (its flattening gives the
            rendered correspondence).
        input_size: S, the encoder's input side in pixels.
        device: where the encoder runs.
    """

    def __init__(self, encoder: MoFAEncoder, uv_model, input_size: int, device: str | torch.device = "cpu") -> None:
        from lsqface.reconstruct import model_tensors

        self.device = torch.device(device)
        self.network = encoder.to(self.device).eval()
        self.uv_model = uv_model
        self.input_size = int(input_size)
        model = uv_model.model
        if (model.n_identity, model.n_expression, model.n_albedo) != encoder.dimensions:
            from lsqface.errors import CheckpointError

            raise CheckpointError(f"The MoFA network predicts {encoder.dimensions} identity, expression and albedo "
                                  f"coefficients but the face model has {(model.n_identity, model.n_expression, model.n_albedo)}; "
                                  "pass the same --source as in training.")
        self.camera = FaceCamera(model, self.input_size, encoder.config)
        self.tensors = model_tensors(model, torch.float64, self.device)
        self.landmarks_68 = torch.as_tensor(model.landmarks_68, dtype=torch.int64, device=self.device)
        self.landmarks_5 = torch.as_tensor(model.landmarks_5, dtype=torch.int64, device=self.device)
        self.vertex_uv = torch.as_tensor(uv_model.vertex_uv, dtype=torch.float64, device=self.device)

    @classmethod
    def from_checkpoint(cls, path, uv_model=None, device: str | torch.device = "cpu") -> "MoFAReconstructor":
        """Load a checkpoint written by ``lsqface train-mofa`` and the UV-3DMM it needs."""
        from lsqface.nets.checkpoint import check_face_model, load_checkpoint

        payload = load_checkpoint(path)
        encoder = encoder_from_checkpoint(payload, path)
        if uv_model is None:
            from lsqface.morphable.cache import load_uv_model

            uv_model = load_uv_model()
        check_face_model(payload, uv_model, path)
        return cls(encoder, uv_model, int(payload["input_size"]), device)

    @torch.no_grad()
    def decode(self, network_image: torch.Tensor) -> tuple[MoFAParameters, MoFAMesh]:
        """Parameters and mesh (input-pixel frame, float64) of framed images (B, 3, S, S) in [0, 1]."""
        raw = self.network(network_image.to(self.device)).to(torch.float64)
        parameters = decode_parameters(raw, self.camera, self.network.dimensions)
        return parameters, mofa_mesh(parameters, self.tensors, self.camera, self.landmarks_68)

    @torch.no_grad()
    def __call__(self, images, boxes=None) -> MoFAReconstruction:
        """Reconstruct a batch of images (paths, (H, W, 3) arrays or PIL images) in one forward pass."""
        from lsqface.data.images import read_image
        from lsqface.reconstruct import frame_image
        from lsqface.solver.pose import pose_from_rotation

        boxes = boxes if boxes is not None else [None] * len(images)
        framed, matrices, sizes = [], [], []
        for image, box in zip(images, boxes):
            array = read_image(image)
            sizes.append(tuple(array.shape[:2]))
            tensor, matrix = frame_image(array, self.input_size, box)
            framed.append(tensor)
            matrices.append(matrix)
        network_image, to_network = torch.stack(framed), torch.stack(matrices).to(torch.float64)
        parameters, mesh = self.decode(network_image)
        batch, size = network_image.shape[0], self.input_size
        fragments = rasterize(mesh.image_vertices.float(), self.tensors["triangles"], size, size)
        uv = interpolate(self.vertex_uv.expand(batch, -1, -1), fragments, None, self.tensors["triangles"])
        coverage = fragments.mask[:, None].to(torch.float64)
        intrinsics = torch.linalg.solve(to_network, self.camera.intrinsics.expand(batch, 3, 3).to(self.device))
        intrinsics = intrinsics / intrinsics[:, 2:3, 2:3]

        def project(points: torch.Tensor) -> torch.Tensor:
            camera_points = points @ intrinsics.transpose(1, 2)
            return camera_points[..., :2] / camera_points[..., 2:3]

        five = mesh.vertices[:, self.landmarks_5].mean(dim=-2)
        return MoFAReconstruction(
            vertices=mesh.vertices, triangles=self.tensors["triangles"], rotation=parameters.rotation,
            translation=parameters.translation, intrinsics=intrinsics,
            pose=torch.rad2deg(pose_from_rotation(parameters.rotation)), identity=parameters.identity,
            expression=parameters.expression, albedo_coefficients=parameters.albedo, lighting=parameters.lighting,
            colour=mesh.colour, landmarks_68=project(mesh.vertices[:, self.landmarks_68]), landmarks_5=project(five),
            network_image=network_image, correspondence=uv.permute(0, 3, 1, 2), confidence=coverage.expand(-1, 2, -1, -1),
            to_network=to_network, image_sizes=sizes,
        )

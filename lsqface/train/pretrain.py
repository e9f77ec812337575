"""Pretraining targets and loss (seed F; DESIGN.md "Training").

The paper pretrains the network on roughly aligned face images with the SAME
targets for every image: a constant depth map, a confidence map (face 1,
elsewhere 0) and a correspondence map, made by aligning the 3DMM's mean shape
to the images' average 5-landmark position. Image and targets are moved by the
same random 2D similarity (lsqface.data.augment), so the network learns to
follow the face, never a landmark of any single image.

How the targets are made (:func:`pretraining_targets`): the mean shape is seen
frontally (lsqface.solver.pose.FRONTAL) by a pinhole camera of the configured
field of view; the 2D similarity that best maps its projected 5 landmarks onto
the average positions (least squares, closed form) is applied to the projected
vertices; the renderer rasterises them and interpolates the vertices' (u, v).

Loss (:func:`pretraining_loss`), averaged over the batch:

- correspondence: mean squared (u, v) error over target face pixels;
- depth: mean squared error to the constant over all pixels;
- confidence: binary cross-entropy of both confidence channels against the
  target confidence, over all pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lsqface.data.augment import warp_images
from lsqface.morphable.uv_model import UVMorphableModel
from lsqface.nets.unet import NetworkMaps
from lsqface.render.interpolate import interpolate
from lsqface.render.rasterize import rasterize
from lsqface.solver.pose import FRONTAL

#: Average 5 landmarks (CelebA order: left eye, right eye, nose tip, left and right mouth
#: corner; x, y pixels) of the aligned 178 x 218 CelebA images ("img_align_celeba"),
#: rounded; docs/training.md.
CELEBA_ALIGNED_LANDMARKS_5 = ((69.0, 111.0), (108.0, 111.0), (88.0, 136.0), (72.0, 152.0), (106.0, 152.0))
CELEBA_ALIGNED_SIZE = (178, 218)


@dataclass
class PretrainTargets:
    """The targets shared by every pretraining image, for one S x S input.

    Attributes:
        correspondence: (1, 2, S, S) (u, v) of the aligned mean shape, 0 off the face.
        depth: (1, 1, S, S) the constant depth.
        confidence: (1, 1, S, S) 1 on the face, 0 elsewhere.
        landmarks_5: (5, 2) the average landmark positions the mean shape was aligned to, pixels.
    """

    correspondence: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    landmarks_5: torch.Tensor


def celeba_landmarks_5(size: int) -> torch.Tensor:
    """(5, 2) average aligned-CelebA landmarks in an S x S centre-square crop (lsqface.data.celeba mode "crop")."""
    width, height = CELEBA_ALIGNED_SIZE
    side = min(width, height)
    points = torch.tensor(CELEBA_ALIGNED_LANDMARKS_5, dtype=torch.float64)
    points = points - torch.tensor([(width - side) / 2.0, (height - side) / 2.0], dtype=torch.float64)
    return points * (size / side)


def similarity_2d(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The (2, 3) similarity minimising sum |A [source; 1] - target|^2 (closed form, complex numbers).

    Args:
        source, target: (K, 2) points.
    """
    source_c = torch.complex(source[:, 0], source[:, 1])
    target_c = torch.complex(target[:, 0], target[:, 1])
    source_mean, target_mean = source_c.mean(), target_c.mean()
    centred = source_c - source_mean
    factor = ((target_c - target_mean) * centred.conj()).sum() / (centred.abs() ** 2).sum()
    offset = target_mean - factor * source_mean
    return torch.tensor([[factor.real, -factor.imag, offset.real], [factor.imag, factor.real, offset.imag]], dtype=source.dtype)


def pretraining_targets(uv_model: UVMorphableModel, landmarks_5: torch.Tensor, size: int,
                        field_of_view: float = 30.0, depth: float = 1.0) -> PretrainTargets:
    """Targets from the mean shape aligned to average landmark positions (seed F).

    Args:
        uv_model: the UV-3DMM (its mean shape, vertex (u, v) and 5 landmarks).
        landmarks_5: (5, 2) average landmark positions in the S x S input, pixels, CelebA order.
        size: S, pixels.
        field_of_view: horizontal field of view of the camera seeing the mean shape, degrees.
        depth: the constant depth map's value.
    """
    model = uv_model.model
    dtype = torch.float64
    mean = torch.as_tensor(model.shape_mean, dtype=dtype)
    centroid, face_width, front_depth = model.framing()
    centre = torch.as_tensor(centroid, dtype=dtype)
    focal = 0.5 * size / math.tan(0.5 * math.radians(field_of_view))
    distance = focal * face_width / (0.6 * size) + front_depth
    rotation = torch.tensor(FRONTAL, dtype=dtype)
    camera = (mean - centre) @ rotation.T + torch.tensor([0.0, 0.0, distance], dtype=dtype)
    projected = focal * camera[:, :2] / camera[:, 2:3] + 0.5 * size
    _, five = model.landmark_points(camera.numpy())
    five_projected = focal * torch.as_tensor(five[:, :2]) / torch.as_tensor(five[:, 2:3]) + 0.5 * size
    target = torch.as_tensor(landmarks_5, dtype=dtype).reshape(5, 2)
    matrix = similarity_2d(five_projected, target)
    moved = projected @ matrix[:, :2].T + matrix[:, 2]
    image_vertices = torch.cat([moved, camera[:, 2:3]], dim=1)[None].float()
    triangles = torch.as_tensor(model.triangles, dtype=torch.int64)
    fragments = rasterize(image_vertices, triangles, size, size)
    mask = (fragments.triangle_id >= 0)[:, None].float()
    vertex_uv = torch.as_tensor(uv_model.vertex_uv, dtype=torch.float32)[None]
    uv = interpolate(vertex_uv, fragments, None, triangles).permute(0, 3, 1, 2)
    return PretrainTargets(
        correspondence=uv * mask,
        depth=torch.full((1, 1, size, size), float(depth)),
        confidence=mask,
        landmarks_5=target.float(),
    )


def moved_targets(targets: PretrainTargets, matrices: torch.Tensor | None, batch: int) -> dict[str, torch.Tensor]:
    """The shared targets moved by each image's similarity (B, 2, 3) (None: unmoved), as (B, C, S, S) maps.

    Correspondence is moved with nearest-neighbour sampling (a blend of (u, v) with the
    background's 0 would point into the wrong part of the face); confidence bilinearly.
    """
    expand = {name: getattr(targets, name).expand(batch, -1, -1, -1) for name in ("correspondence", "depth", "confidence")}
    if matrices is None:
        return {name: value.contiguous() for name, value in expand.items()}
    matrices = matrices.to(torch.float32)
    return {
        "correspondence": warp_images(expand["correspondence"].contiguous(), matrices, mode="nearest"),
        "confidence": warp_images(expand["confidence"].contiguous(), matrices, mode="bilinear").clamp(0.0, 1.0),
        # Constant depth, also where the moved map would be padded.
        "depth": expand["depth"].contiguous(),
    }


def pretraining_loss(maps: NetworkMaps, targets: dict[str, torch.Tensor], correspondence_weight: float = 1.0,
                     depth_weight: float = 0.1, confidence_weight: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Supervised loss of the network's maps against (moved) pretraining targets.

    Args:
        maps: the network's output for B images.
        targets: from :func:`moved_targets`: correspondence (B, 2, S, S), depth (B, 1, S, S),
            confidence (B, 1, S, S).

    Returns:
        (B,) total loss per image and a dict of the (B,) terms.
    """
    face = (targets["confidence"] > 0.5).float()
    face_pixels = face.sum(dim=(1, 2, 3)).clamp_min(1.0)
    correspondence = ((maps.correspondence - targets["correspondence"]).square().sum(dim=1, keepdim=True) * face).sum(dim=(1, 2, 3)) / face_pixels
    depth = (maps.depth - targets["depth"]).square().mean(dim=(1, 2, 3))
    target_confidence = targets["confidence"].expand_as(maps.confidence)
    confidence = F.binary_cross_entropy(maps.confidence.clamp(1e-6, 1 - 1e-6), target_confidence, reduction="none").mean(dim=(1, 2, 3))
    total = correspondence_weight * correspondence + depth_weight * depth + confidence_weight * confidence
    return total, {"correspondence": correspondence, "depth": depth, "confidence": confidence}

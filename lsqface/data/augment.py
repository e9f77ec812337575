"""Random 2D similarity transforms of faces, their targets and landmarks (seeds F, K).

The seed pretrains and trains on cropped faces moved by "random 2D similarity
transformation", with "the background region filled with random images from
ImageNet". The seed gives no ranges; ours (``SimilarityAugmentation``) default
to rotation over the full circle (the seed's Fig. 18 shows upside-down faces
reconstructed), scale log-uniform in [0.8, 1.25] and shift up to 10 % of the
image side in each axis.

Matrices are (B, 2, 3) in pixel coordinates (x right, y down; the pixel in
column j, row i has its centre at (j + 0.5, i + 0.5), so a W x H image covers
[0, W] x [0, H]), mapping a point of the input image to where it lands in the
output: ``[x', y'] = A @ [x, y, 1]``. Rotation and scale are about the image
centre (W / 2, H / 2), then the shift is added. A positive angle turns the
picture clockwise on screen (y points down).

Images are moved with ``affine_grid``/``grid_sample`` and
``align_corners=False``, whose normalised coordinate -1 is the left (top)
edge of the image and +1 the right (bottom) edge: normalised = 2 x / W - 1,
2 y / H - 1, the same convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Mapping

import torch
import torch.nn.functional as F

from lsqface.errors import ConfigError


@dataclass(frozen=True)
class SimilarityAugmentation:
    """Ranges of the random similarity transform.

    Attributes:
        rotation_degrees: angle uniform in [-r, r] degrees; 180 is the full circle.
        scale_range: (low, high), scale log-uniform in it.
        shift_fraction: shift uniform in [-f, f] times the image width (x) and height (y).
    """

    rotation_degrees: float = 180.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    shift_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation_degrees <= 180.0:
            raise ConfigError(f"rotation_degrees must be in [0, 180], got {self.rotation_degrees}.")
        low, high = self.scale_range
        if not 0.0 < low <= high:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}.")
        if not 0.0 <= self.shift_fraction <= 1.0:
            raise ConfigError(f"shift_fraction must be in [0, 1], got {self.shift_fraction}.")


def similarity_matrix(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Similarity transforms about the image centre (W / 2, H / 2).

    Args:
        angle: (B,) radians (positive = clockwise on screen).
        scale: (B,) factor.
        shift: (B, 2) pixels (x, y), added after rotation and scale.
        height, width: image size in pixels.
    Returns:
        (B, 2, 3) matrices, input pixel coordinates -> output pixel coordinates.
    """
    centre = torch.tensor([width / 2.0, height / 2.0], dtype=angle.dtype, device=angle.device)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    translation = centre - linear @ centre + shift  # x' = L (x - c) + c + shift
    return torch.cat([linear, translation[..., None]], dim=-1)


def sample_similarity(
    config: SimilarityAugmentation,
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw ``batch`` random similarity matrices (B, 2, 3) on the CPU; deterministic given ``generator``."""
    uniform = torch.rand(batch, 4, generator=generator, dtype=torch.float64)
    angle = math.radians(config.rotation_degrees) * (2.0 * uniform[:, 0] - 1.0)
    low, high = config.scale_range
    scale = torch.exp(math.log(low) + (math.log(high) - math.log(low)) * uniform[:, 1])
    sides = torch.tensor([width, height], dtype=torch.float64)
    shift = config.shift_fraction * (2.0 * uniform[:, 2:4] - 1.0) * sides
    return similarity_matrix(angle, scale, shift, height, width).to(dtype)


def transform_points(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply (B, 2, 3) matrices to points (B, K, 2) in pixels (x, y); returns (B, K, 2) pixels."""
    matrix = matrix.to(points.dtype)
    return points @ matrix[:, :, :2].transpose(1, 2) + matrix[:, None, :, 2]


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of (B, 2, 3) affine matrices, (B, 2, 3)."""
    linear_inverse = torch.linalg.inv(matrix[:, :, :2])
    return torch.cat([linear_inverse, -linear_inverse @ matrix[:, :, 2:]], dim=-1)


def _pixel_to_normalised(height: int, width: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(3, 3) map from pixel coordinates to grid_sample's [-1, 1] (align_corners=False).

    With pixel centres at (j + 0.5, i + 0.5) the image covers [0, W] x [0, H],
    which align_corners=False calls [-1, 1]: normalised = 2 x / W - 1.
    """
    return torch.tensor(
        [[2.0 / width, 0.0, -1.0], [0.0, 2.0 / height, -1.0], [0.0, 0.0, 1.0]],
        dtype=dtype, device=device,
    )


def warp_images(images: torch.Tensor, matrix: torch.Tensor, mode: str = "bilinear",
                size: tuple[int, int] | None = None) -> torch.Tensor:
    """Move image content by ``matrix``; pixels with no source are 0.

    Args:
        images: (B, C, H, W).
        matrix: (B, 2, 3), input pixel coordinates -> output pixel coordinates.
        mode: ``"bilinear"`` for images and smooth maps, ``"nearest"`` for labels.
        size: (H_out, W_out) of the output, pixels; None keeps (H, W). A crop of a large photo
            is one matrix and a smaller ``size``.
    Returns:
        (B, C, H_out, W_out) warped images.
    """
    batch, _, height, width = images.shape
    out_height, out_width = (height, width) if size is None else (int(size[0]), int(size[1]))
    dtype = images.dtype if images.is_floating_point() else torch.float32
    to_normalised = _pixel_to_normalised(height, width, torch.float64, images.device)
    out_to_normalised = _pixel_to_normalised(out_height, out_width, torch.float64, images.device)
    inverse = invert_affine(matrix.to(device=images.device, dtype=torch.float64))
    inverse = torch.cat([inverse, inverse.new_tensor([0.0, 0.0, 1.0]).expand(batch, 1, 3)], dim=1)
    # theta maps normalised output coordinates to normalised input coordinates.
    theta = to_normalised @ inverse @ torch.linalg.inv(out_to_normalised)
    grid = F.affine_grid(theta[:, :2].to(dtype), [batch, 1, out_height, out_width], align_corners=False)
    return F.grid_sample(images.to(dtype), grid, mode=mode, padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class AugmentedBatch:
    """The result of :func:`augment`.

    Attributes:
        image: (B, 3, H, W) transformed image, background filled in.
        matrix: (B, 2, 3) input pixel coordinates -> output pixel coordinates.
        coverage: (B, 1, H, W) in [0, 1], how much of each output pixel the input covers.
        maps: each given map (B, C, H, W) transformed; 0 where the input does not cover.
        landmarks: (B, K, 2) transformed landmarks in pixels, or None.
    """

    image: torch.Tensor
    matrix: torch.Tensor
    coverage: torch.Tensor
    maps: dict = field(default_factory=dict)
    landmarks: torch.Tensor | None = None


def augment(
    image: torch.Tensor,
    config: SimilarityAugmentation = SimilarityAugmentation(),
    generator: torch.Generator | None = None,
    background: torch.Tensor | None = None,
    maps: Mapping[str, torch.Tensor] | None = None,
    landmarks: torch.Tensor | None = None,
    nearest: Collection[str] = (),
    matrix: torch.Tensor | None = None,
) -> AugmentedBatch:
    """Apply one random similarity per image to the image, its maps and landmarks (seeds F, K).

    Args:
        image: (B, 3, H, W) in [0, 1].
        config: the ranges to draw from.
        generator: makes the draw reproducible.
        background: (B, 3, H, W) image shown where the moved face does not
            cover; blended with the (soft-edged) coverage. None: black.
        maps: targets of the same H x W (correspondence (B, 2, H, W), depth,
            confidence ...), moved exactly like the image.
        landmarks: (B, K, 2) pixels (x, y), pixel centres at (j + 0.5, i + 0.5).
        nearest: names in ``maps`` sampled with nearest neighbour (label maps);
            the others are bilinear.
        matrix: (B, 2, 3) use this transform instead of drawing one.
    """
    batch, _, height, width = image.shape
    if matrix is None:
        matrix = sample_similarity(config, batch, height, width, generator)
    matrix = matrix.to(device=image.device, dtype=torch.float32)
    ones = image.new_ones(batch, 1, height, width)
    warped = warp_images(torch.cat([image, ones], dim=1), matrix)
    moved, coverage = warped[:, :3], warped[:, 3:].clamp(0.0, 1.0)
    if background is not None:
        if background.shape != image.shape:
            raise ValueError(f"background must have the image's shape {tuple(image.shape)}, got {tuple(background.shape)}")
        # ``moved`` is already multiplied by the coverage at the soft edge (zero padding).
        moved = moved + background.to(moved.dtype) * (1.0 - coverage)
    moved_maps = {
        name: warp_images(value, matrix, mode="nearest" if name in nearest else "bilinear")
        for name, value in (maps or {}).items()
    }
    moved_landmarks = transform_points(landmarks, matrix) if landmarks is not None else None
    return AugmentedBatch(image=moved, matrix=matrix, coverage=coverage, maps=moved_maps, landmarks=moved_landmarks)

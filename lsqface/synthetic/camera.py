"""The camera of a synthetic photo: where it looks from, and what its optics and processing do to the image.

:func:`sample_camera` draws a perspective camera and head pose that put a face of
a given width at a random size, position and in-plane rotation in the picture.
:func:`camera_effects` then degrades a rendered image as real cameras and their
files do: defocus and motion blur, low resolution upsampled, white balance,
exposure, gamma, vignetting, sensor noise, JPEG compression and black-and-white
film. Each effect is drawn per image from the caller's generator.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lsqface.solver.pose import rotation_from_pose


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float drawn uniformly from [low, high]."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def sample_camera(generator: torch.Generator, size: int, face_width: float, centre_depth: float,
                  field_of_view: tuple[float, float], face_fraction: tuple[float, float],
                  yaw_range: float, pitch_range: float, roll_range: float, shift: float):
    """A random camera and head pose for one face.

    Args:
        generator: the face's random stream.
        size: image side in pixels.
        face_width: the face's width in mm; centre_depth: how far its front lies before its centre, mm.
        field_of_view: horizontal field of view range, degrees.
        face_fraction: range of the face's width as a fraction of the image width.
        yaw_range, pitch_range, roll_range: pose drawn uniformly in [-range, range], degrees.
        shift: range of the face centre's offset from the image centre, as a fraction of the size.

    Returns:
        intrinsics (3, 3) K in pixels, rotation (3, 3), translation (3,) in mm of the face's centre,
        pose (3,) yaw, pitch, roll in degrees; float64.
    """
    fov = math.radians(uniform(generator, *field_of_view))
    focal = 0.5 * size / math.tan(0.5 * fov)
    fraction = uniform(generator, *face_fraction)
    distance = focal * face_width / (fraction * size) + centre_depth
    pose = torch.tensor(
        [uniform(generator, -yaw_range, yaw_range), uniform(generator, -pitch_range, pitch_range),
         uniform(generator, -roll_range, roll_range)],
        dtype=torch.float64,
    )
    rotation = rotation_from_pose(*torch.deg2rad(pose)[:, None])[0]
    offset = torch.tensor([uniform(generator, -shift, shift) for _ in range(2)], dtype=torch.float64)
    intrinsics = torch.tensor([[focal, 0.0, 0.5 * size], [0.0, focal, 0.5 * size], [0.0, 0.0, 1.0]], dtype=torch.float64)
    translation = torch.cat([offset * size * distance / focal, torch.tensor([distance], dtype=torch.float64)])
    return intrinsics, rotation, translation, pose


@dataclass(frozen=True)
class EffectRates:
    """How often each camera effect is applied (probability per image), and how strong it may get."""

    blur: float = 0.2
    max_blur_sigma: float = 0.8
    motion_blur: float = 0.05
    low_resolution: float = 0.1
    white_balance: float = 0.5
    gamma: float = 0.4
    vignetting: float = 0.2
    noise: float = 0.3
    max_noise: float = 0.03
    jpeg: float = 0.3
    grayscale: float = 0.08


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel = _gaussian_kernel(sigma)
    pad = len(kernel) // 2
    channels = image.shape[0]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(F.pad(image[None], (pad, pad, 0, 0), mode="replicate"), horizontal, groups=channels)
    return F.conv2d(F.pad(out, (0, 0, pad, pad), mode="replicate"), vertical, groups=channels)[0]


def _motion_blur(image: torch.Tensor, length: int, angle: float) -> torch.Tensor:
    size = 2 * (length // 2) + 1
    kernel = torch.zeros(size, size)
    centre = size // 2
    for t in torch.linspace(-centre, centre, 4 * size):
        kernel[int(round(centre + float(t) * math.sin(angle))), int(round(centre + float(t) * math.cos(angle)))] = 1.0
    kernel = (kernel / kernel.sum()).expand(3, 1, size, size)
    return F.conv2d(F.pad(image[None], (centre,) * 4, mode="replicate"), kernel, groups=3)[0]


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, H, W) in [0, 1] through a JPEG encoder and decoder at ``quality`` (1-95)."""
    from PIL import Image

    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(decoded).permute(2, 0, 1).contiguous()


def camera_effects(image: torch.Tensor, generator: torch.Generator, rates: EffectRates = EffectRates()) -> torch.Tensor:
    """One image (3, H, W) in [0, 1] as a random real camera would record it; geometry is unchanged."""
    def chance(p: float) -> bool:
        return float(torch.rand((), generator=generator)) < p

    _, height, width = image.shape
    if chance(rates.low_resolution):
        factor = uniform(generator, 1.3, 2.0)
        small = (max(8, int(height / factor)), max(8, int(width / factor)))
        image = F.interpolate(F.interpolate(image[None], size=small, mode="area"), size=(height, width),
                              mode="bilinear", align_corners=False)[0]
    if chance(rates.blur):
        image = _blur(image, uniform(generator, 0.3, rates.max_blur_sigma))
    if chance(rates.motion_blur):
        image = _motion_blur(image, int(uniform(generator, 2, 5)), uniform(generator, 0, math.pi))
    if chance(rates.white_balance):
        image = image * (1.0 + 0.12 * torch.randn(3, 1, 1, generator=generator)).clamp(0.6, 1.5)
    image = image * uniform(generator, 0.85, 1.2)  # exposure
    if chance(rates.gamma):
        image = image.clamp(0, 1) ** uniform(generator, 0.7, 1.4)
    if chance(rates.vignetting):
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        image = image * (1.0 - uniform(generator, 0.1, 0.5) * ((xs**2 + ys**2) / 2.0))
    if chance(rates.noise):
        sigma = uniform(generator, 0.005, rates.max_noise)
        grey = torch.randn(1, height, width, generator=generator)
        colour = torch.randn(3, height, width, generator=generator)
        image = image + sigma * (0.7 * grey + 0.5 * colour) * (0.3 + image.clamp(0, 1).sqrt())
    image = image.clamp(0.0, 1.0)
    if chance(rates.grayscale):
        image = (image * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True).expand(3, -1, -1).clone()
    if chance(rates.jpeg):
        image = jpeg(image, int(uniform(generator, 30, 95)))
    return image

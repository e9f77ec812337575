"""Sampling the UV images: the fast pixel-major path against grid_sample and numpy, and gradcheck in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsqface.morphable.uv_model import channels_last, sample_uv_images


def _grid_sample_reference(images: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    grid = (uv * 2 - 1).unsqueeze(1)
    expanded = images.unsqueeze(0).expand(uv.shape[0], -1, -1, -1)
    return F.grid_sample(expanded, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0].transpose(1, 2)


def _numpy_bilinear(images: np.ndarray, u: float, v: float) -> np.ndarray:
    channels, height, width = images.shape
    x = min(max(u * (width - 1), 0), width - 1)
    y = min(max(v * (height - 1), 0), height - 1)
    x0, y0 = min(int(np.floor(x)), width - 2), min(int(np.floor(y)), height - 2)
    fx, fy = x - x0, y - y0
    return (
        images[:, y0, x0] * (1 - fx) * (1 - fy)
        + images[:, y0, x0 + 1] * fx * (1 - fy)
        + images[:, y0 + 1, x0] * (1 - fx) * fy
        + images[:, y0 + 1, x0 + 1] * fx * fy
    )


def test_channels_last_keeps_values_and_changes_storage():
    images = torch.randn(5, 6, 6)
    stored = channels_last(images)
    assert torch.equal(stored, images)
    assert stored.permute(1, 2, 0).is_contiguous() and not images.permute(1, 2, 0).is_contiguous()


@pytest.mark.parametrize("pixel_major", [True, False])
def test_sampling_matches_grid_sample_and_numpy(pixel_major):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(7, 9, 11, generator=generator, dtype=torch.float64)  # rectangular, to catch u/v swaps
    images = channels_last(images) if pixel_major else images.contiguous()
    uv = torch.rand(3, 50, 2, generator=generator, dtype=torch.float64) * 1.4 - 0.2  # some outside: clamped
    uv[0, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.5, 1.0]], dtype=torch.float64)  # exact borders
    sampled = sample_uv_images(images, uv)
    assert sampled.shape == (3, 50, 7)
    torch.testing.assert_close(sampled, _grid_sample_reference(images.contiguous(), uv))
    for b, p in [(0, 0), (0, 1), (1, 7), (2, 33)]:
        expected = _numpy_bilinear(images.numpy(), float(uv[b, p, 0]), float(uv[b, p, 1]))
        np.testing.assert_allclose(sampled[b, p].numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("pixel_major", [True, False])
def test_gradcheck_wrt_uv_and_images(pixel_major):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 6, 6, generator=generator, dtype=torch.float64)
    images = (channels_last(images) if pixel_major else images.contiguous()).requires_grad_(True)
    # Keep points off pixel-centre lines, where bilinear interpolation has a kink.
    uv = ((torch.randint(0, 5, (2, 8, 2), generator=generator) + 0.2 + 0.6 * torch.rand(2, 8, 2, generator=generator, dtype=torch.float64)) / 5)
    uv.requires_grad_(True)
    assert torch.autograd.gradcheck(sample_uv_images, (images, uv), eps=1e-6, atol=1e-7)

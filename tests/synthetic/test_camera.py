"""The synthetic camera: framing as asked, and effects that keep the image's geometry and range."""

import math

import torch

from lsqface.synthetic.camera import EffectRates, camera_effects, jpeg, sample_camera


def test_face_width_and_position_in_the_picture():
    generator = torch.Generator().manual_seed(0)
    size, width = 64, 150.0
    intrinsics, rotation, translation, pose = sample_camera(generator, size, width, 0.0, (30.0, 30.0), (0.5, 0.5),
                                                            0.0, 0.0, 0.0, 0.0)
    edges = torch.tensor([[-width / 2, 0, 0], [width / 2, 0, 0]], dtype=torch.float64) @ rotation.T + translation
    projected = edges @ intrinsics.T
    pixels = projected[:, :2] / projected[:, 2:]
    assert math.isclose(float((pixels[1, 0] - pixels[0, 0]).abs()), 0.5 * size, rel_tol=1e-6)
    torch.testing.assert_close(pixels.mean(0), torch.tensor([32.0, 32.0], dtype=torch.float64))
    assert pose.abs().max() == 0


def test_effects_are_deterministic_and_in_range():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    rates = EffectRates(blur=1, motion_blur=1, low_resolution=1, white_balance=1, gamma=1, vignetting=1, noise=1, jpeg=1)
    first = camera_effects(image, torch.Generator().manual_seed(5), rates)
    second = camera_effects(image, torch.Generator().manual_seed(5), rates)
    torch.testing.assert_close(first, second)
    assert first.shape == image.shape and first.min() >= 0 and first.max() <= 1
    none = EffectRates(blur=0, motion_blur=0, low_resolution=0, white_balance=0, gamma=0, vignetting=0, noise=0,
                       jpeg=0, grayscale=0)
    exposed = camera_effects(image, torch.Generator().manual_seed(5), none)
    ratio = exposed[image > 0.2] / image[image > 0.2]
    assert ratio.std() < 1e-4  # only the exposure: one factor for every unclipped pixel


def test_jpeg_at_high_quality_is_close():
    image = torch.linspace(0, 1, 3 * 16 * 16).reshape(3, 16, 16)
    assert (jpeg(image, 95) - image).abs().mean() < 0.02

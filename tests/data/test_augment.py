"""Random similarity transforms: content, maps and landmarks move together."""

import math

import numpy as np
import pytest
import torch

from lsqface.data.augment import (
    SimilarityAugmentation, augment, invert_affine, sample_similarity, similarity_matrix, transform_points, warp_images,
)
from lsqface.errors import ConfigError


def pixel_centres(height, width, dtype=torch.float64):
    """(H, W) y and x of every pixel centre, (i + 0.5, j + 0.5): the project's convention."""
    return torch.meshgrid(torch.arange(height, dtype=dtype) + 0.5, torch.arange(width, dtype=dtype) + 0.5, indexing="ij")


def dot_image(batch, height, width, points):
    """Images with a small bright Gaussian blob at each (x, y) in points (B, 2)."""
    ys, xs = pixel_centres(height, width)
    blobs = [torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5 ** 2)) for x, y in points.tolist()]
    return torch.stack(blobs)[:, None].expand(batch, 3, height, width).contiguous()


def centroid(image):
    """(B, 2) intensity-weighted centre (x, y) of channel 0."""
    weights = image[:, 0]
    height, width = weights.shape[-2:]
    ys, xs = pixel_centres(height, width, weights.dtype)
    total = weights.sum((1, 2))
    return torch.stack([(weights * xs).sum((1, 2)) / total, (weights * ys).sum((1, 2)) / total], dim=1)


def test_landmarks_follow_content():
    generator = torch.Generator().manual_seed(3)
    height, width = 48, 64
    points = torch.tensor([[30.0, 20.0], [25.5, 27.0], [36.0, 22.0], [32.0, 25.0]], dtype=torch.float64)
    image = dot_image(4, height, width, points)
    config = SimilarityAugmentation(rotation_degrees=180.0, scale_range=(0.8, 1.25), shift_fraction=0.1)
    result = augment(image, config, generator, landmarks=points[:, None, :].float())
    moved_centre = centroid(result.image.double())
    torch.testing.assert_close(moved_centre, result.landmarks[:, 0].double(), atol=0.05, rtol=0)
    # And the returned matrix is the one that moved them.
    torch.testing.assert_close(transform_points(points[:, None].float(), result.matrix)[:, 0], result.landmarks[:, 0])


def test_single_pixel_lands_where_the_matrix_sends_its_centre():
    # A bright pixel at column j, row i has its centroid at (j + 0.5, i + 0.5); warped, the
    # centroid must be where the matrix sends that point (bilinear weights sum to the point).
    height, width, i, j = 24, 32, 9, 13
    image = torch.zeros(3, 1, height, width, dtype=torch.float64)
    image[:, :, i, j] = 1.0
    torch.testing.assert_close(centroid(image)[0], torch.tensor([j + 0.5, i + 0.5], dtype=torch.float64))
    matrix = torch.tensor([[[1.0, 0.0, 2.25], [0.0, 1.0, -3.5]],                      # shift by fractions of a pixel
                           [[2.0, 0.0, -10.0], [0.0, 2.0, -6.0]],                     # double
                           [[0.0, -1.0, 28.0], [1.0, 0.0, -4.0]]], dtype=torch.float64)  # 90 degrees
    moved = warp_images(image, matrix)
    expected = transform_points(torch.tensor([[[j + 0.5, i + 0.5]]], dtype=torch.float64).expand(3, 1, 2), matrix)[:, 0]
    torch.testing.assert_close(expected[2], torch.tensor([18.5, 9.5], dtype=torch.float64))
    torch.testing.assert_close(centroid(moved), expected, atol=1e-9, rtol=0)
    # The quarter turn sends the pixel centre onto the centre of pixel (row 9, column 18): moved exactly.
    assert moved[2, 0, 9, 18] == pytest.approx(1.0, abs=1e-12) and moved[2, 0].sum() == pytest.approx(1.0, abs=1e-12)


def test_known_rotation_direction():
    # 90 degrees about the centre (16.5, 16.5) of a 33 x 33 image: (16.5 + 10, 16.5) -> (16.5, 16.5 + 10)
    # (clockwise on screen).
    matrix = similarity_matrix(torch.tensor([math.pi / 2], dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                               torch.zeros(1, 2, dtype=torch.float64), 33, 33)
    moved = transform_points(torch.tensor([[[26.5, 16.5]]], dtype=torch.float64), matrix)
    torch.testing.assert_close(moved, torch.tensor([[[16.5, 26.5]]], dtype=torch.float64))
    image = dot_image(1, 33, 33, torch.tensor([[26.5, 16.5]]))
    # Compare with the input's own centroid moved (the blob is cut slightly by the border).
    expected = transform_points(centroid(image)[:, None], matrix)[:, 0]
    torch.testing.assert_close(centroid(warp_images(image, matrix)), expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("height, width", [(16, 16), (15, 15), (16, 24), (24, 16), (13, 21)])
def test_quarter_turn_about_the_centre_permutes_pixels(height, width):
    # A 90-degree turn about (W/2, H/2) keeps the centre and, when W + H is even, sends pixel
    # centres onto pixel centres: output pixel (r, c) is input pixel (i, j) with
    # i = (W + H)/2 - 1 - c, j = r + (W - H)/2 (0 outside the input). Exact in float64.
    matrix = similarity_matrix(torch.tensor([math.pi / 2], dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                               torch.zeros(1, 2, dtype=torch.float64), height, width)
    centre = torch.tensor([[[width / 2, height / 2]]], dtype=torch.float64)
    torch.testing.assert_close(transform_points(centre, matrix), centre, atol=1e-12, rtol=0)
    image = torch.rand(1, 2, height, width, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = np.zeros((2, height, width))
    source = image[0].numpy()
    for r in range(height):
        for c in range(width):
            i, j = (width + height) // 2 - 1 - c, r + (width - height) // 2
            if 0 <= i < height and 0 <= j < width:
                expected[:, r, c] = source[:, i, j]
    torch.testing.assert_close(warp_images(image, matrix)[0], torch.from_numpy(expected), atol=1e-12, rtol=0)
    if height == width:
        torch.testing.assert_close(warp_images(image, matrix), torch.rot90(image, -1, dims=(-2, -1)), atol=1e-12, rtol=0)


def test_identity_is_exact():
    image = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    result = augment(image, matrix=identity, background=torch.zeros_like(image), maps={"depth": image[:, :1]},
                     landmarks=torch.ones(2, 5, 2))
    # float32 grid arithmetic: a few units in the last place.
    torch.testing.assert_close(result.image, image, atol=3e-6, rtol=0)
    torch.testing.assert_close(result.maps["depth"], image[:, :1], atol=3e-6, rtol=0)
    exact = warp_images(image.double(), identity)
    torch.testing.assert_close(exact, image.double(), atol=1e-12, rtol=0)
    torch.testing.assert_close(result.coverage, torch.ones(2, 1, 16, 24), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.landmarks, torch.ones(2, 5, 2))


def test_full_circle_rotation_range():
    config = SimilarityAugmentation(rotation_degrees=180.0, scale_range=(1.0, 1.0), shift_fraction=0.0)
    matrix = sample_similarity(config, 2000, 32, 32, torch.Generator().manual_seed(1), dtype=torch.float64)
    angles = torch.atan2(matrix[:, 1, 0], matrix[:, 0, 0])
    counts = torch.histc(angles, bins=12, min=-math.pi, max=math.pi)
    assert (counts > 2000 / 12 * 0.6).all()  # every 30-degree sector is visited about equally
    assert angles.abs().max() > math.radians(175)
    scales = torch.linalg.det(matrix[:, :, :2]).sqrt()
    torch.testing.assert_close(scales, torch.ones(2000, dtype=torch.float64))


def test_ranges_honoured_and_deterministic():
    config = SimilarityAugmentation(rotation_degrees=30.0, scale_range=(0.5, 2.0), shift_fraction=0.2)
    first = sample_similarity(config, 500, 40, 80, torch.Generator().manual_seed(7), dtype=torch.float64)
    second = sample_similarity(config, 500, 40, 80, torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(first, second)
    angles = torch.atan2(first[:, 1, 0], first[:, 0, 0])
    assert angles.abs().max() <= math.radians(30) + 1e-9
    scales = torch.linalg.det(first[:, :, :2]).sqrt()
    assert scales.min() >= 0.5 - 1e-9 and scales.max() <= 2.0 + 1e-9
    centre = torch.tensor([[[40.0, 20.0]]], dtype=torch.float64).expand(500, 1, 2)  # (W/2, H/2) stays put but for the shift
    shift = transform_points(centre, first)[:, 0] - centre[:, 0]
    assert shift[:, 0].abs().max() <= 0.2 * 80 + 1e-9 and shift[:, 1].abs().max() <= 0.2 * 40 + 1e-9


def test_background_fills_uncovered_region_and_maps_zero():
    image = torch.full((1, 3, 32, 32), 0.8)
    background = torch.full((1, 3, 32, 32), 0.2)
    # Shrink to half about the centre: the border is uncovered.
    matrix = similarity_matrix(torch.zeros(1), torch.tensor([0.5]), torch.zeros(1, 2), 32, 32)
    result = augment(image, background=background, matrix=matrix,
                     maps={"confidence": torch.ones(1, 1, 32, 32), "label": torch.ones(1, 1, 32, 32)}, nearest=["label"])
    torch.testing.assert_close(result.image[0, :, 16, 16], torch.full((3,), 0.8))
    torch.testing.assert_close(result.image[0, :, 1, 1], torch.full((3,), 0.2))
    assert result.maps["confidence"][0, 0, 16, 16] == 1 and result.maps["confidence"][0, 0, 1, 1] == 0
    assert set(result.maps["label"].unique().tolist()) <= {0.0, 1.0}
    # Where partly covered, the image is the coverage blend of face and background.
    blend = 0.8 * result.coverage + 0.2 * (1 - result.coverage)
    torch.testing.assert_close(result.image[:, :1], blend, atol=1e-5, rtol=0)


def test_invert_affine():
    matrix = sample_similarity(SimilarityAugmentation(), 3, 20, 20, torch.Generator().manual_seed(2), dtype=torch.float64)
    points = torch.rand(3, 7, 2, dtype=torch.float64) * 20
    torch.testing.assert_close(transform_points(transform_points(points, matrix), invert_affine(matrix)), points)


@pytest.mark.parametrize("kwargs", [dict(rotation_degrees=200), dict(scale_range=(0.0, 1.0)), dict(scale_range=(2.0, 1.0)),
                                    dict(shift_fraction=-0.1)])
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        SimilarityAugmentation(**kwargs)


def test_an_output_size_crops_and_rescales_where_the_matrix_says():
    # A 20 x 30 crop of a 48 x 64 image at (10, 8), doubled: output size (40, 60). A pixel of the
    # crop lands on an exact pixel of the output grid, and a dot lands where its point is moved.
    image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    matrix = torch.tensor([[[1.0, 0.0, -10.0], [0.0, 1.0, -8.0]]], dtype=torch.float64)
    crop = warp_images(image, matrix, size=(20, 30))
    assert crop.shape == (1, 3, 20, 30)
    torch.testing.assert_close(crop, image[:, :, 8:28, 10:40], atol=1e-12, rtol=0)
    points = torch.tensor([[31.0, 22.5]], dtype=torch.float64)
    doubled = torch.tensor([[[2.0, 0.0, -20.0], [0.0, 2.0, -16.0]]], dtype=torch.float64)
    moved = warp_images(dot_image(1, 48, 64, points), doubled, size=(40, 60))
    assert moved.shape == (1, 3, 40, 60)
    # Bilinear upsampling moves a blob's centroid by a few thousandths of a pixel at most.
    torch.testing.assert_close(centroid(moved), transform_points(points[None], doubled)[:, 0], atol=0.01, rtol=0)

"""Pretraining targets (seed F): alignment, shared targets moved like the image, loss."""

import dataclasses
import math

import torch

from lsqface.data.synthetic import generate_faces
from lsqface.train.config import load_train_config
from lsqface.train.data import synthetic_config
from lsqface.train.pretrain import (
    celeba_landmarks_5, moved_targets, pretraining_loss, pretraining_targets, similarity_2d,
)
from lsqface.train.trainer import default_landmarks_5
from lsqface.nets.unet import NetworkMaps
from tests.conftest import REPOSITORY_ROOT

TINY = REPOSITORY_ROOT / "configs" / "tiny.toml"


def test_similarity_2d_recovers_a_known_transform():
    generator = torch.Generator().manual_seed(1)
    source = torch.rand(5, 2, generator=generator, dtype=torch.float64) * 50
    angle, scale, shift = 0.7, 1.3, torch.tensor([4.0, -2.5], dtype=torch.float64)
    linear = scale * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    target = source @ linear.T + shift
    matrix = similarity_2d(source, target)
    assert torch.allclose(matrix[:, :2], linear, atol=1e-12)
    assert torch.allclose(matrix[:, 2], shift, atol=1e-10)


def test_targets_put_the_mean_face_landmarks_at_the_average_position(ict_uv_model):
    """Where the target correspondence map shows each landmark vertex's (u, v), averaged per
    5-landmark group, is where the average landmarks are (independent of the alignment code)."""
    size = 64
    config = dataclasses.replace(load_train_config(TINY), input_size=size)
    average = default_landmarks_5(config, ict_uv_model)
    targets = pretraining_targets(ict_uv_model, average, size)
    uv_map = targets.correspondence[0].permute(1, 2, 0).reshape(-1, 2).to(torch.float64)
    face = targets.confidence[0, 0].reshape(-1) > 0
    pixels = torch.stack(torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="xy"), -1).reshape(-1, 2)
    vertex_uv = torch.as_tensor(ict_uv_model.vertex_uv, dtype=torch.float64)
    found = []
    for group in ict_uv_model.model.landmarks_5:
        positions = []
        for vertex in group:
            distance = (uv_map - vertex_uv[int(vertex)]).norm(dim=1)
            distance[~face] = float("inf")
            positions.append(pixels[int(distance.argmin())].to(torch.float64))
        found.append(torch.stack(positions).mean(0))
    error = (torch.stack(found) - average).norm(dim=1)
    assert error.max() < 1.0, error
    # Constant depth; confidence is 1 on a face-sized blob, 0 elsewhere.
    assert torch.all(targets.depth == 1.0)
    assert set(targets.confidence.unique().tolist()) == {0.0, 1.0}
    assert 0.1 < float(targets.confidence.mean()) < 0.6


def test_default_landmarks_are_the_average_of_upright_synthetic_faces(ict_uv_model):
    config = load_train_config(TINY)
    average = default_landmarks_5(config, ict_uv_model)
    faces = generate_faces(ict_uv_model, list(range(16)), dataclasses.replace(
        synthetic_config(config.data, config.input_size, aligned=True), background="none"))
    drawn = faces.landmarks_5.to(torch.float64).mean(0)
    assert (drawn - average).norm(dim=1).max() < 0.75  # pixels of a 32 px input


def test_celeba_landmarks_scale_with_the_input():
    at_178 = celeba_landmarks_5(178)
    assert torch.allclose(celeba_landmarks_5(64), at_178 * 64 / 178)
    assert at_178[0, 1] == 111.0 - 20.0  # the 178 x 178 centre square starts 20 rows down


def test_targets_move_with_the_image_and_loss_vanishes_on_them(ict_uv_model):
    size = 32
    targets = pretraining_targets(ict_uv_model, celeba_landmarks_5(size), size)
    shift = torch.tensor([[[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]]])
    moved = moved_targets(targets, shift, 1)
    assert torch.equal(moved["correspondence"][..., :-2, 3:], targets.correspondence[..., 2:, :-3])
    assert torch.allclose(moved["confidence"][..., :-2, 3:], targets.confidence[..., 2:, :-3], atol=1e-6)
    unmoved = moved_targets(targets, None, 2)
    confidence = unmoved["confidence"].expand(-1, 2, -1, -1)
    maps = NetworkMaps(correspondence=unmoved["correspondence"], depth=unmoved["depth"], confidence=confidence,
                       logits=torch.zeros(2, 5, size, size))
    total, terms = pretraining_loss(maps, unmoved)
    assert torch.all(terms["correspondence"] == 0) and torch.all(terms["depth"] == 0)
    # Binary cross-entropy of a 0/1 target against itself is the clamp's 1e-6 floor.
    assert torch.all(terms["confidence"] < 1e-5)
    wrong = dataclasses.replace(maps, correspondence=maps.correspondence + 0.1)
    _, wrong_terms = pretraining_loss(wrong, unmoved)
    assert torch.allclose(wrong_terms["correspondence"], torch.full((2,), 0.02), atol=1e-6)

"""The synthetic face generator: determinism, and ground truth consistent with the image it renders."""

import time

import numpy as np
import pytest
import torch

from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.morphable.uv_model import sample_shape
from lsqface.solver.pose import pose_from_rotation

CONFIG = SyntheticConfig(size=64)


@pytest.fixture(scope="module")
def faces(ict_uv_model):
    return generate_faces(ict_uv_model, [0, 1, 2, 3], CONFIG)


def test_same_seed_same_face_and_different_seeds_differ(ict_uv_model, faces):
    again = generate_faces(ict_uv_model, [2, 0], CONFIG)
    torch.testing.assert_close(again.image[1], faces.image[0])
    torch.testing.assert_close(again.image[0], faces.image[2])
    assert (faces.image[0] - faces.image[1]).abs().mean() > 0.05


def test_vertices_are_each_face_s_own_coefficients_posed(ict_uv_model, faces):
    # numpy, face by face, against the batched products of generate_faces
    model = ict_uv_model.model
    for k in range(len(faces.seeds)):
        shape = (model.shape_mean + model.identity_basis @ faces.identity[k].numpy()
                 + model.expression_basis @ faces.expression[k].numpy())
        posed = shape @ faces.rotation[k].numpy().T + faces.translation[k].numpy()
        np.testing.assert_allclose(faces.vertices[k].numpy(), posed, rtol=0, atol=1e-9)


def test_shapes_and_ranges(faces):
    assert faces.image.shape == (4, 3, 64, 64) and faces.image.min() >= 0 and faces.image.max() <= 1
    assert faces.correspondence.shape == (4, 2, 64, 64) and faces.depth.shape == (4, 1, 64, 64)
    assert faces.landmarks_68.shape == (4, 68, 2) and faces.landmarks_5.shape == (4, 5, 2)
    covered = faces.confidence[:, 0] > 0
    assert 0.1 < covered.float().mean() < 0.7  # a face, not the whole frame
    assert torch.all(faces.depth[:, 0][covered] > 0) and torch.all(faces.depth[:, 0][~covered] == 0)


def test_pose_is_the_rotation(faces):
    torch.testing.assert_close(torch.rad2deg(pose_from_rotation(faces.rotation)), faces.pose)
    assert faces.pose[:, 2].abs().max() <= CONFIG.roll_range


def test_true_maps_agree_with_the_camera(ict_uv_model, faces):
    """At covered pixels the model point at the true correspondence projects to that pixel at the true depth."""
    covered = faces.confidence[:, 0] > 0
    errors, depth_errors = [], []
    for b in range(4):
        rows, cols = torch.nonzero(covered[b], as_tuple=True)
        uv = faces.correspondence[b, :, rows, cols].T[None]
        mean, basis = sample_shape(ict_uv_model, uv)
        coefficients = torch.cat([faces.identity[b], faces.expression[b]]).float()
        points = (mean + (basis @ coefficients))[0].double()  # (P, 3) model space
        camera = points @ faces.rotation[b].T + faces.translation[b]
        projected = camera @ faces.intrinsics[b].T
        pixels = projected[:, :2] / projected[:, 2:]
        centres = torch.stack([cols, rows], -1).double() + 0.5
        errors.append((pixels - centres).norm(dim=-1))
        depth_errors.append((camera[:, 2] - faces.depth[b, 0, rows, cols]).abs())
    errors, depth_errors = torch.cat(errors), torch.cat(depth_errors)
    # The UV-3DMM at 128 px is bilinear between texels: most points land within a tenth of a pixel.
    assert errors.median() < 0.1 and torch.quantile(errors, 0.95) < 0.5
    assert depth_errors.median() < 1.0  # millimetres, at about half a metre


def test_landmarks_are_the_projected_landmark_vertices(ict_uv_model, faces):
    model = ict_uv_model.model
    # Landmarks are 3D points (an eye centre is the mean of six vertices in 3D), then projected.
    for landmarks, points in zip((faces.landmarks_68, faces.landmarks_5), model.landmark_points(faces.vertices.numpy())):
        projected = torch.as_tensor(points) @ faces.intrinsics.transpose(1, 2)
        np.testing.assert_allclose(landmarks.numpy(), (projected[..., :2] / projected[..., 2:]).numpy(), atol=1e-3)
    # Frontal-ish faces have the image-left eye left of the image-right eye after undoing the roll.
    roll = torch.deg2rad(faces.pose[:, 2])
    eye_vector = faces.landmarks_5[:, 1] - faces.landmarks_5[:, 0]
    unrolled_x = torch.cos(roll) * eye_vector[:, 0].double() + torch.sin(roll) * eye_vector[:, 1].double()
    assert torch.all(unrolled_x > 0)


def test_generation_speed_is_usable_on_the_fly(ict_uv_model):
    start = time.perf_counter()
    generate_faces(ict_uv_model, list(range(8)), CONFIG)
    per_face = (time.perf_counter() - start) / 8
    assert per_face < 1.0  # generous bound; benchmarks/bench_train.py measures the real rate

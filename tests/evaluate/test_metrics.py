import math

import numpy as np
import torch

from lsqface.evaluate.metrics import landmark_error, rotation_error_degrees, similarity_align, vertex_error
from lsqface.solver.pose import rotation_from_pose


def test_landmark_error_by_hand():
    truth = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [2.0, 9.0], [8.0, 9.0]]])
    predicted = truth.clone()
    predicted[0, 2] += torch.tensor([3.0, 4.0])  # one point off by 5 px
    # mean distance 1 px over an inter-ocular distance of 10 px
    torch.testing.assert_close(landmark_error(predicted, truth), torch.tensor([10.0]))


def test_similarity_alignment_recovers_exact_copy():
    generator = torch.Generator().manual_seed(1)
    target = torch.randn(2, 50, 3, generator=generator, dtype=torch.float64)
    rotation = rotation_from_pose(*torch.tensor([[0.3, -0.2], [0.1, 0.4], [2.5, -3.0]], dtype=torch.float64))
    source = 0.37 * (target - 4.0) @ rotation.transpose(1, 2) + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(similarity_align(source, target), target)
    torch.testing.assert_close(vertex_error(source, target), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)


def test_alignment_never_reflects():
    points = torch.randn(1, 40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mirrored = points * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    aligned = similarity_align(mirrored, points)
    # The best proper rotation cannot undo a mirror, so some error must remain.
    assert (aligned - points).norm(dim=-1).mean() > 0.1


def test_rotation_error():
    zero = torch.zeros(1, dtype=torch.float64)
    a = rotation_from_pose(zero, zero, zero)
    b = rotation_from_pose(zero, zero, torch.full((1,), math.radians(30), dtype=torch.float64))
    np.testing.assert_allclose(rotation_error_degrees(b, a).numpy(), [30.0])

import math

import torch

from lsqface.solver.pose import pose_from_rotation, rotation_from_pose


def test_round_trip_over_full_roll_circle():
    generator = torch.Generator().manual_seed(0)
    yaw = (torch.rand(200, generator=generator, dtype=torch.float64) - 0.5) * math.radians(170)
    pitch = (torch.rand(200, generator=generator, dtype=torch.float64) - 0.5) * math.radians(170)
    roll = (torch.rand(200, generator=generator, dtype=torch.float64) - 0.5) * 2 * math.pi * 0.999
    rotation = rotation_from_pose(yaw, pitch, roll)
    eye = torch.eye(3, dtype=torch.float64).expand(200, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(200, dtype=torch.float64))
    torch.testing.assert_close(pose_from_rotation(rotation), torch.stack([yaw, pitch, roll], -1))


def test_frontal_face_looks_at_camera_upright():
    zero = torch.zeros(1, dtype=torch.float64)
    rotation = rotation_from_pose(zero, zero, zero)[0]
    # The model's up (+y) points up the image (-y), its front (+z) towards the camera (-z).
    torch.testing.assert_close(rotation @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(rotation @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    # A positive roll turns the image of the face's up vector clockwise on screen (towards +x).
    rolled = rotation_from_pose(zero, zero, torch.full((1,), 0.5, dtype=torch.float64))[0]
    assert (rolled @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))[0] > 0

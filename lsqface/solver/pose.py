"""Head pose: rotations from and to (yaw, pitch, roll) angles.

Camera frame: x to the image right, y down the image, z into the scene. The
morphable models face +z with y up, so a frontal, upright face seen by the
camera has rotation ``FRONTAL = diag(1, -1, -1)`` (a half turn about x).
Head pose angles describe the rest of the rotation, applied in the camera
frame: ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch) @ FRONTAL`` with right-handed
rotations about the camera's axes; roll is the in-plane rotation.
"""

from __future__ import annotations

import torch

FRONTAL = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))


def _axis_rotation(angle: torch.Tensor, axis: int) -> torch.Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = (one, zero, zero, zero, cos, -sin, zero, sin, cos)
    elif axis == 1:
        rows = (cos, zero, sin, zero, one, zero, -sin, zero, cos)
    else:
        rows = (cos, -sin, zero, sin, cos, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)


def rotation_from_pose(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Model-to-camera rotations (B, 3, 3) from head pose angles (B,) in radians."""
    frontal = torch.tensor(FRONTAL, dtype=yaw.dtype, device=yaw.device)
    return _axis_rotation(roll, 2) @ _axis_rotation(yaw, 1) @ _axis_rotation(pitch, 0) @ frontal


def pose_from_rotation(rotation: torch.Tensor) -> torch.Tensor:
    """Head pose (B, 3) as (yaw, pitch, roll) in radians from model-to-camera rotations (B, 3, 3).

    The inverse of ``rotation_from_pose`` for |yaw| < 90 degrees; roll covers the full circle.
    """
    frontal = torch.tensor(FRONTAL, dtype=rotation.dtype, device=rotation.device)
    relative = rotation @ frontal  # FRONTAL is its own inverse
    yaw = torch.asin((-relative[..., 2, 0]).clamp(-1.0, 1.0))
    pitch = torch.atan2(relative[..., 2, 1], relative[..., 2, 2])
    roll = torch.atan2(relative[..., 1, 0], relative[..., 0, 0])
    return torch.stack([yaw, pitch, roll], dim=-1)

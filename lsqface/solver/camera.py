"""Camera from the inverse camera P, q (seed Q, eqs 19-29).

The geometric solve gives P, q with ``P (d x) + q = X`` for a model point X
seen at homogeneous pixel x with depth d. Hence

    M = P^-1 = psi K R     (eq. 19)        -P^-1 q = psi K t     (eq. 20)

and ``d x = psi K (R X + t)``: x ~ K (R X + t) is the usual projection and the
network's depth is psi times the camera-space z. K = [[k1, k2, k3], [0, k4,
k5], [0, 0, 1]] holds the focal lengths k1, k4 (pixels), skew k2 and
principal point (k3, k5) in the pixel convention of
:mod:`lsqface.solver.sampling`; R is model-to-camera (camera frame: x right,
y down, z into the scene, see :mod:`lsqface.solver.pose`).

Gram-Schmidt runs on the rows m1, m2, m3 of M from the third up (eqs 21-29):
psi = |m3|, r3 = m3 / psi; k5 = m2 . r3 / psi, k4 = |m2 / psi - k5 r3|,
r2 = (m2 / psi - k5 r3) / k4; k3 = m1 . r3 / psi, k2 = m1 . r2 / psi,
k1 = |m1 / psi - k2 r2 - k3 r3|, r1 = (m1 / psi - k2 r2 - k3 r3) / k1.

Mirror case: psi > 0 and k4 > 0 always, and R is kept a rotation
(det R = +1). When det M < 0 the camera mirrors the image (a mirrored face):
then r1 and k1 change sign, so k1 < 0 flags the mirror and M = psi K R still
holds exactly. The decomposition runs in float64 whatever the input dtype
(3 x 3 matrices, negligible cost) and returns the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lsqface.errors import SolverError

#: An inverse camera whose condition number exceeds this is treated as singular.
MAX_CONDITION = 1e12


@dataclass(frozen=True)
class Camera:
    """A perspective camera x ~ K (R X + t); B cameras.

    Attributes:
        intrinsics: (B, 3, 3) K, upper triangular with K[2, 2] = 1, pixels.
        rotation: (B, 3, 3) R, model to camera, det R = +1.
        translation: (B, 3) t, model units.
        depth_scale: (B,) psi, network depth per unit of camera-space z.
    """

    intrinsics: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    depth_scale: torch.Tensor


def decompose_camera(inverse_camera: torch.Tensor, camera_centre: torch.Tensor) -> Camera:
    """K, R, t, psi from P (B, 3, 3) and q (B, 3) (eqs 19-29); differentiable.

    Raises:
        SolverError: when P is singular or nearly so (condition number > 1e12),
            e.g. when every sample had zero confidence.
    """
    dtype = inverse_camera.dtype
    inverse64 = inverse_camera.to(torch.float64)
    condition = torch.linalg.cond(inverse64.detach())
    if not bool(torch.isfinite(inverse64).all()) or bool((~(condition < MAX_CONDITION)).any()):
        raise SolverError(
            "The fitted inverse camera is singular, so no camera can be recovered; give the solver samples with "
            "non-zero confidence and varied pixel positions, or regularise the camera centre towards a point in "
            "front of the face."
        )
    matrix = torch.linalg.inv(inverse64)  # M = P^-1
    m1, m2, m3 = matrix.unbind(-2)
    psi = m3.norm(dim=-1)
    r3 = m3 / psi[:, None]
    n2 = m2 / psi[:, None]
    k5 = (n2 * r3).sum(-1)
    u2 = n2 - k5[:, None] * r3
    k4 = u2.norm(dim=-1)
    r2 = u2 / k4[:, None]
    n1 = m1 / psi[:, None]
    k3 = (n1 * r3).sum(-1)
    k2 = (n1 * r2).sum(-1)
    u1 = n1 - k2[:, None] * r2 - k3[:, None] * r3
    k1 = u1.norm(dim=-1)
    r1 = u1 / k1[:, None]
    # Keep det R = +1; a mirroring camera shows as k1 < 0 (module docstring).
    handed = torch.sign(torch.linalg.det(matrix))
    handed = torch.where(handed == 0, torch.ones_like(handed), handed)
    k1 = k1 * handed
    r1 = r1 * handed[:, None]
    rotation = torch.stack((r1, r2, r3), dim=-2)
    zero, one = torch.zeros_like(k1), torch.ones_like(k1)
    intrinsics = torch.stack((k1, k2, k3, zero, k4, k5, zero, zero, one), dim=-1).reshape(-1, 3, 3)
    # -M q = psi K t  ->  t = K^-1 (-M q) / psi.
    rhs = -(matrix @ camera_centre.to(torch.float64)[..., None]) / psi[:, None, None]
    translation = torch.linalg.solve_triangular(intrinsics, rhs, upper=True).squeeze(-1)
    return Camera(
        intrinsics=intrinsics.to(dtype),
        rotation=rotation.to(dtype),
        translation=translation.to(dtype),
        depth_scale=psi.to(dtype),
    )


def compose_inverse_camera(camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """P (B, 3, 3) and q (B, 3) from a camera: P = (psi K R)^-1, q = -R^T t (the camera centre)."""
    matrix = camera.depth_scale[:, None, None] * camera.intrinsics @ camera.rotation
    inverse_camera = torch.linalg.inv(matrix)
    camera_centre = -(camera.rotation.transpose(1, 2) @ camera.translation[..., None]).squeeze(-1)
    return inverse_camera, camera_centre


def to_camera(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Model points (B, V, 3) to camera space R X + t (B, V, 3), model units."""
    return points @ rotation.transpose(1, 2) + translation[:, None, :]


def project(points: torch.Tensor, intrinsics: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Model points (B, V, 3) to pixels (B, V, 2) by x ~ K (R X + t) (pixel convention of sampling.py)."""
    homogeneous = to_camera(points, rotation, translation) @ intrinsics.transpose(1, 2)
    return homogeneous[..., :2] / homogeneous[..., 2:]

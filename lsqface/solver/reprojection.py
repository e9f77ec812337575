"""Gauss-Newton refinement of the fitted pose and shape on where the correspondences are seen.

The closed-form geometric solve (:mod:`lsqface.solver.geometry`) fits every sample's model point to
the pixel's ray scaled by the network's depth. Where the depth maps are flatter than the face (they
lose much of a nodding head's slope from forehead to chin, docs/synthetic.md), the fitted head
follows them towards a level pose, although the correspondences alone say where each point of the
face is seen. This step starts from the closed-form fit and minimises, over the rotation R, the
translation t and the shape coefficients m (the intrinsics K and the depth scale psi stay as
fitted),

    sum_j w_j |(K_xy p_j - x_j z_j) / f|^2 + lambda sum_j w_j (z_j - d_j / psi)^2 + alpha |m|^2,

    p_j = R (a_j + B_j m) + t,  z_j its third coordinate,

by Gauss-Newton with the rotation updated on the left, ``R <- exp([omega]_x) R``. x_j is sample j's
pixel, K_xy the first two rows of K, d_j the network depth and f the geometric mean of K's focal
lengths. The first term is the image distance between where the point is seen and where it
projects, times z_j / f, the millimetres per pixel at the point's depth: a residual in model units
like the closed-form solve's, so alpha weighs the shape prior as the closed-form solve's
``shape_weight`` does, and linear in p_j, so the Gauss-Newton steps are exact up to the rotation and
the product of R with B m. lambda = 0 leaves the depth out; lambda = 1 weighs the depth along the ray
as much as the image position. Each iteration multiplies the closed-form fit's final row weights w_j
by the Geman-McClure factor of the sample's current residual (as the robust passes do), so
correspondences the face cannot explain stop pulling.

The whole step is plain differentiable torch; it runs in float64 and returns the input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lsqface.solver.geometry import weighted_gram


@dataclass(frozen=True)
class ReprojectionFit:
    """The refined pose and shape of B images with P samples and N shape coefficients.

    Attributes:
        rotation: (B, 3, 3) R, model to camera; translation: (B, 3) t, model units.
        shape_coefficients: (B, N) m.
        residuals: (B, P, 2) the image residuals (K_xy p_j - x_j z_j) / f after the last update,
            model units (millimetres at the point's depth).
        weights: (B, P) the row weights of the last iteration.
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    shape_coefficients: torch.Tensor
    residuals: torch.Tensor
    weights: torch.Tensor


def cross_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """[v]_x (..., 3, 3) of vectors (..., 3): [v]_x u = v x u."""
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).reshape(*vectors.shape[:-1], 3, 3)


def rotation_exp(omega: torch.Tensor) -> torch.Tensor:
    """exp([omega]_x) (B, 3, 3) by Rodrigues' formula, differentiable at omega = 0 too (Taylor terms)."""
    theta_squared = omega.square().sum(-1)[:, None, None]
    small = theta_squared < 1e-12
    theta = theta_squared.clamp_min(1e-12).sqrt()
    sine_term = torch.where(small, 1 - theta_squared / 6, torch.sin(theta) / theta)
    cosine_term = torch.where(small, 0.5 - theta_squared / 24, (1 - torch.cos(theta)) / theta_squared.clamp_min(1e-12))
    cross = cross_matrix(omega)
    identity = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(cross)
    return identity + sine_term * cross + cosine_term * (cross @ cross)


def refine_reprojection(
    pixels: torch.Tensor,
    depth: torch.Tensor,
    weights: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    intrinsics: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    depth_scale: torch.Tensor,
    shape_coefficients: torch.Tensor,
    *,
    iterations: int,
    shape_weight: float | torch.Tensor,
    depth_weight: float = 0.0,
    robust_scale: float | None = 2.0,
) -> ReprojectionFit:
    """Refine R, t and m by ``iterations`` Gauss-Newton steps (module docstring).

    Args:
        pixels: (B, P, 2) sample pixel centres; depth: (B, P) network depth at the samples.
        weights: (B, P) non-negative row weights (the closed-form fit's final ones).
        mean: (B, P, 3) and basis: (B, P, 3, N) the shape mean and basis at the correspondences; the
            products with the basis (the Gram matrix of the shape columns, nearly all the arithmetic) run in
            its dtype, everything else in float64 (a float32 basis: the "mixed" precision of the solves).
        intrinsics, rotation: (B, 3, 3); translation: (B, 3); depth_scale: (B,) psi;
        shape_coefficients: (B, N): the closed-form fit to start from.
        iterations: Gauss-Newton steps (0 returns the start).
        shape_weight: alpha: a float, (N,) per coefficient or (B, N) per image and coefficient.
        depth_weight: lambda (0: the image term alone).
        robust_scale: c of the Geman-McClure factor as a multiple of the weighted median residual
            norm; None keeps the weights as given.

    An image whose normal system is not positive definite or not finite (no sample left with weight)
    keeps the fit it has; nothing is raised.
    """
    from lsqface.solver.fit import robust_factor  # the closed-form passes' reweighting; fit.py imports this module

    dtype = pixels.dtype
    wide = torch.float64
    product = basis.dtype  # the products with the basis (nearly all the arithmetic) run in its dtype
    pixels, depth, base_weights = pixels.to(wide), depth.to(wide), weights.to(wide)
    mean = mean.to(wide)
    intrinsics, rotation, translation = intrinsics.to(wide), rotation.to(wide), translation.to(wide)
    depth_scale, coefficients = depth_scale.to(wide), shape_coefficients.to(wide)
    batch, count, _ = pixels.shape
    unknowns = 6 + coefficients.shape[1]
    focal = (intrinsics[:, 0, 0] * intrinsics[:, 1, 1]).abs().sqrt()[:, None]  # (B, 1)
    shape_prior = torch.as_tensor(shape_weight, dtype=wide, device=pixels.device).expand(batch, unknowns - 6)
    prior = torch.cat((shape_prior.new_zeros(batch, 6), shape_prior), dim=1)  # (B, 6 + N)
    depth_row = torch.tensor([0.0, 0.0, 1.0], dtype=wide, device=pixels.device)
    identity = torch.eye(unknowns, dtype=wide, device=pixels.device)
    # d r / d p, (B, P, rows, 3): the image rows (K_xy - x e_3^T) / f, the same at every step, and
    # sqrt(lambda) e_3^T for the depth row.
    residual_rows = (intrinsics[:, None, :2, :] - pixels[..., :, None] * depth_row) / focal[..., None, None]
    if depth_weight > 0:
        along = (depth_weight ** 0.5 * depth_row).expand(batch, count, 1, 3)
        residual_rows = torch.cat((residual_rows, along), dim=-2)
    rows = residual_rows.shape[-2]
    # The shape columns dr/dm = (dr/dp) R B_j: with u_0 = (k1 R_1 + k2 R_2 + k3 R_3) / f, u_1 = (k4 R_2 + k5 R_3) / f
    # and u_2 = R_3 / f (R_i the rows of R), the image rows are u_0 B_j - x_j u_2 B_j and u_1 B_j - y_j u_2 B_j
    # and the depth row sqrt(lambda) f u_2 B_j: three combinations of the basis's x, y, z rows per image,
    # three multiply-adds over the sampled basis per row instead of a small product per sample.
    row_weights = base_weights

    def residuals_at(rotation, translation, coefficients):
        offsets = torch.bmm(basis.reshape(batch, count * 3, -1), coefficients.to(product)[..., None])
        turned = (mean + offsets.reshape(batch, count, 3).to(wide)) @ rotation.transpose(1, 2)  # R (a_j + B_j m)
        camera = turned + translation[:, None, :]  # p_j
        residual = (residual_rows * camera[..., None, :]).sum(-1)
        if rows == 3:
            residual[..., 2] -= depth_weight ** 0.5 * depth / depth_scale[:, None]
        return turned, residual

    for _ in range(iterations):
        turned, residual = residuals_at(rotation, translation, coefficients)
        if robust_scale is not None:
            row_weights = base_weights * robust_factor(residual, base_weights, robust_scale)
        # Pose columns (omega, t) of a row a^T: a^T (-[R X_j]_x) = (R X_j x a)^T and a^T.
        pose = torch.cat((torch.cross(turned[..., None, :].expand_as(residual_rows), residual_rows, dim=-1),
                          residual_rows), dim=-1).reshape(batch, count * rows, 6)
        directions = torch.stack((
            intrinsics[:, 0, 0, None] * rotation[:, 0] + intrinsics[:, 0, 1, None] * rotation[:, 1]
            + intrinsics[:, 0, 2, None] * rotation[:, 2],
            intrinsics[:, 1, 1, None] * rotation[:, 1] + intrinsics[:, 1, 2, None] * rotation[:, 2],
            rotation[:, 2],
        ), dim=1) / focal[..., None]  # (B, 3, 3): u_0, u_1, u_2
        # Per sample, the combination of the basis's x, y, z rows that each residual row reads: (B, P, rows, 3).
        combinations = [directions[:, None, 0] - pixels[..., 0, None] * directions[:, None, 2],
                        directions[:, None, 1] - pixels[..., 1, None] * directions[:, None, 2]]
        if rows == 3:
            combinations.append((depth_weight ** 0.5 * focal[..., None] * directions[:, None, 2]).expand(batch, count, 3))
        shape_rows = []
        for combination in combinations:
            combination = combination.to(product)[..., None]  # (B, P, 3, 1)
            row = combination[:, :, 0] * basis[:, :, 0]
            row.addcmul_(combination[:, :, 1], basis[:, :, 1]).addcmul_(combination[:, :, 2], basis[:, :, 2])
            shape_rows.append(row)
        shape = torch.stack(shape_rows, dim=2).reshape(batch, count * rows, -1)  # (B, P rows, N)
        flat_weights = row_weights.repeat_interleave(rows, dim=1)
        weighted_pose = pose * flat_weights[..., None]
        normal = torch.empty(batch, unknowns, unknowns, dtype=wide, device=pixels.device)
        normal[:, :6, :6] = weighted_pose.transpose(1, 2) @ pose
        normal[:, :6, 6:] = (weighted_pose.to(product).transpose(1, 2) @ shape).to(wide)
        normal[:, 6:, :6] = normal[:, :6, 6:].transpose(1, 2)
        normal[:, 6:, 6:] = weighted_gram(shape, flat_weights.to(product)).to(wide)
        normal = normal + torch.diag_embed(prior)
        flat_residual = (flat_weights * residual.reshape(batch, count * rows))
        gradient = torch.cat(((pose.transpose(1, 2) @ flat_residual[..., None]).squeeze(-1),
                              (shape.transpose(1, 2) @ flat_residual.to(product)[..., None]).squeeze(-1).to(wide)), dim=1)
        gradient = gradient + torch.cat((coefficients.new_zeros(batch, 6), shape_prior * coefficients), dim=1)
        # An image whose system cannot be solved (no sample left with weight, or a non-finite map) keeps
        # the fit it has: the closed-form one, which is regularised, or its last good step.
        solvable = torch.isfinite(normal).flatten(1).all(dim=1) & torch.isfinite(gradient).all(dim=1)
        normal = torch.where(solvable[:, None, None], normal, identity)
        factor, info = torch.linalg.cholesky_ex(normal.detach())
        solvable = solvable & (info == 0)
        if normal.requires_grad:
            # Factorise again with the failed systems replaced by the identity, so that no gradient reads a
            # failed factor.
            factor = torch.linalg.cholesky_ex(torch.where(solvable[:, None, None], normal, identity))[0]
        else:
            factor = torch.where(solvable[:, None, None], factor, identity)
        step = -torch.cholesky_solve(torch.where(solvable[:, None], gradient, 0.0)[..., None], factor).squeeze(-1)
        step = torch.where(solvable[:, None] & torch.isfinite(step).all(dim=1, keepdim=True), step, 0.0)
        rotation = rotation_exp(step[:, :3]) @ rotation
        translation = translation + step[:, 3:6]
        coefficients = coefficients + step[:, 6:]

    residual = residuals_at(rotation, translation, coefficients)[-1]
    return ReprojectionFit(
        rotation=rotation.to(dtype),
        translation=translation.to(dtype),
        shape_coefficients=coefficients.to(dtype),
        residuals=residual[..., :2].to(dtype),
        weights=row_weights.to(dtype),
    )

"""Photometric linear least squares: inverse SH lighting l and albedo coefficients h (seed R, eqs 38-41).

Inverse lighting (seed D): the albedo is the image times an inverse shading
that is linear in 9 SH coefficients per colour channel,
``albedo_k(n) = i_k F(n)^T l_k`` with F the order-2 SH basis of
:mod:`lsqface.lighting.sh`. With the albedo model ``c + D h`` at each sample,
the equations for sample j and colour channel k

    i_jk F_j^T l_k - D_jk h = c_jk

are linear in (l (3 x 9 = 27), h (N_alb)). Rows are weighted by the
photometric confidence w_j; regularisation rows add
``gamma (l - l_target)^2 + xi h^2``. The lighting target is the inverse of
constant unit shading, ``l_k = (1 / Y00, 0, ..., 0)`` for every channel (the
albedo equals the image), not zero: zero would pull the inverse shading to 0,
i.e. towards an infinitely bright light, and would make the reconstructed
colour albedo / (F^T l) blow up wherever the data are weak. The reconstructed
colour is ``(c + D h) / (F(n)^T l)`` (see :func:`reconstructed_colour`).

Normals are the UV-3DMM's mean-shape normals at the samples, rotated into
camera space by the fitted R (camera frame of :mod:`lsqface.solver.pose`).
The normal matrix is built blockwise (the lighting block is block-diagonal
per channel; the albedo block is one batched matmul) and factorised by the
same checked Cholesky solve as the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lsqface.lighting.sh import SH_COUNT, constant_lighting, sh_basis
from lsqface.solver.geometry import cholesky_solve_checked, regularisation_vector, weighted_gram


@dataclass(frozen=True)
class PhotometryRegularisation:
    """Weights of the photometric regularisation rows (seed R eq. 39).

    Attributes:
        lighting: gamma, float, (27,), (B,) or (B, 27) (channel-major: 9 per channel).
        lighting_target: (3, 9) or (B, 3, 9) target of l, or None for the inverse of
            constant unit shading (module docstring).
        albedo: xi, float, (N_alb,) or (B, N_alb).
    """

    lighting: float | torch.Tensor = 1.0
    lighting_target: torch.Tensor | None = None
    albedo: float | torch.Tensor = 1.0


@dataclass(frozen=True)
class PhotometryFit:
    """The solution of the photometric least squares; B images, P samples.

    Attributes:
        inverse_lighting: (B, 3, 9) l, per colour channel.
        albedo_coefficients: (B, N_alb) h.
        residuals: (B, P, 3) i F^T l - c - D h, albedo units (unweighted).
        jittered: (B,) bool, True where the Cholesky factorisation needed jitter.
    """

    inverse_lighting: torch.Tensor
    albedo_coefficients: torch.Tensor
    residuals: torch.Tensor
    jittered: torch.Tensor


def solve_photometry(
    colours: torch.Tensor,
    normals: torch.Tensor,
    confidence: torch.Tensor,
    albedo_mean: torch.Tensor,
    albedo_basis: torch.Tensor,
    regularisation: PhotometryRegularisation,
) -> PhotometryFit:
    """Fit inverse lighting and albedo coefficients to the samples (seed R eqs 38-41).

    Args:
        colours: (B, P, 3) pre-processed image colours i_j (RGB, nominally (0, 1]).
        normals: (B, P, 3) unit normals in camera space.
        confidence: (B, P) photometric confidence w_j >= 0.
        albedo_mean: (B, P, 3) c_j; albedo_basis: (B, P, 3, N_alb) D_j, in the others' dtype or a
            lower one (the products with it then run in its dtype, the small system in theirs).
        regularisation: gamma, xi and the lighting target.

    Returns:
        PhotometryFit; differentiable in every tensor input and the weights.
    """
    batch, points, _ = colours.shape
    count = albedo_basis.shape[-1]
    if tuple(albedo_basis.shape[:3]) != (batch, points, 3):
        raise ValueError(f"albedo_basis must have shape ({batch}, {points}, 3, N), got {tuple(albedo_basis.shape)}")
    for name, tensor in (("normals", normals), ("albedo_mean", albedo_mean)):
        if tuple(tensor.shape) != (batch, points, 3):
            raise ValueError(f"{name} must have shape ({batch}, {points}, 3), got {tuple(tensor.shape)}")
    low = albedo_basis.dtype  # may be lower than the rest (SolverConfig "mixed"): the large products run in it
    basis = sh_basis(normals)  # F_j, (B, P, 9)
    albedo_rows = albedo_basis.reshape(batch, points * 3, count)
    row_weights = confidence[..., None].expand(batch, points, 3).reshape(batch, points * 3)
    weighted_colours = confidence[..., None] * colours  # w_j i_jk
    # sum_j w_j i_jk^2 F_j F_j^T per channel as one (B, 27, P) x (B, P, 9) bmm (no (B, P, 3, 9, 9) intermediate).
    lighting_squares = ((weighted_colours * colours)[..., None] * basis[:, :, None, :]).reshape(batch, points, 3 * SH_COUNT)
    block_ll = torch.bmm(lighting_squares.transpose(1, 2), basis).reshape(batch, 3, SH_COUNT, SH_COUNT)
    eye3 = torch.eye(3, dtype=colours.dtype, device=colours.device)
    block_ll = torch.einsum("kl,bkij->bkilj", eye3, block_ll).reshape(batch, 3 * SH_COUNT, 3 * SH_COUNT)
    # -sum_j w_j i_jk F_j D_jk^T for each channel k: one bmm over all channel pairs (k, k'), keeping
    # k = k' (3x the flops of this small product, but one pass over D forward and backward).
    lighting_rows = (weighted_colours[..., None] * basis[:, :, None, :]).reshape(batch, points, 3 * SH_COUNT)
    all_pairs = torch.bmm(lighting_rows.transpose(1, 2).to(low), albedo_basis.reshape(batch, points, 3 * count))
    all_pairs = all_pairs.to(colours.dtype)
    all_pairs = all_pairs.reshape(batch, 3, SH_COUNT, 3, count)
    block_lh = -torch.diagonal(all_pairs, dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(batch, 3 * SH_COUNT, count)
    block_hh = weighted_gram(albedo_rows, row_weights.to(low)).to(colours.dtype)
    normal = torch.cat(
        (torch.cat((block_ll, block_lh), dim=2), torch.cat((block_lh.transpose(1, 2), block_hh), dim=2)), dim=1
    )
    rhs_l = torch.einsum("bpk,bpi->bki", weighted_colours * albedo_mean, basis).reshape(batch, 3 * SH_COUNT)
    rhs_h = -torch.bmm((row_weights * albedo_mean.reshape(batch, points * 3))[:, None, :].to(low), albedo_rows)
    rhs_h = rhs_h.squeeze(1).to(colours.dtype)
    gamma = regularisation_vector(regularisation.lighting, batch, 3 * SH_COUNT, colours)
    xi = regularisation_vector(regularisation.albedo, batch, count, colours)
    if regularisation.lighting_target is None:
        target = constant_lighting(1.0, dtype=colours.dtype).to(colours.device).expand(3, SH_COUNT)
    else:
        target = torch.as_tensor(regularisation.lighting_target, dtype=colours.dtype, device=colours.device)
    target = target.expand(batch, 3, SH_COUNT).reshape(batch, 3 * SH_COUNT)
    normal = normal + torch.diag_embed(torch.cat((gamma, xi), dim=1))
    rhs = torch.cat((rhs_l + gamma * target, rhs_h), dim=1)
    solution, jittered = cholesky_solve_checked(normal, rhs, "photometric")
    inverse_lighting = solution[:, : 3 * SH_COUNT].reshape(batch, 3, SH_COUNT)
    albedo_coefficients = solution[:, 3 * SH_COUNT :]
    inverse_shading = torch.einsum("bpi,bki->bpk", basis, inverse_lighting)
    offsets = torch.bmm(albedo_rows, albedo_coefficients[..., None].to(low)).reshape(batch, points, 3)
    albedo = albedo_mean + offsets.to(colours.dtype)
    residuals = colours * inverse_shading - albedo
    return PhotometryFit(inverse_lighting, albedo_coefficients, residuals, jittered)


def inverse_shading(normals: torch.Tensor, inverse_lighting: torch.Tensor) -> torch.Tensor:
    """F(n)^T l_k per colour channel: normals (B, P, 3), l (B, 3, 9) -> (B, P, 3)."""
    return torch.einsum("bpi,bki->bpk", sh_basis(normals), inverse_lighting)


def reconstructed_colour(albedo: torch.Tensor, normals: torch.Tensor, inverse_lighting: torch.Tensor) -> torch.Tensor:
    """The model's colour albedo / (F(n)^T l): albedo (B, P, 3), normals (B, P, 3), l (B, 3, 9) -> (B, P, 3).

    Where the inverse shading is not positive the colour is undefined; it is
    clamped to 1e-6 so the result stays finite (the training loss can then
    see the pixel as badly explained).
    """
    return albedo / inverse_shading(normals, inverse_lighting).clamp_min(1e-6)

"""Geometric linear least squares: inverse camera P, q and shape coefficients m (seed R, eqs 33-37).

For sampled pixel j with homogeneous pixel coordinates x_j = (x_j, y_j, 1)
(pixels; pixel centres at integer + 0.5, y grows downwards, see
:mod:`lsqface.solver.sampling`), depth d_j, confidence w_j, and the UV-3DMM's
shape mean a_j (3) and basis B_j (3 x N) at the pixel's correspondence, the
three equations

    P (d_j x_j) + q = a_j + B_j m

are linear in theta = (vec P (9, row-major), q (3), m (N)). Each is weighted
by w_j; one regularisation row per unknown adds ``alpha_k (theta_k -
target_k)^2`` to the cost, so the solve minimises

    sum_j w_j |P d_j x_j + q - a_j - B_j m|^2 + sum_k alpha_k (theta_k - target_k)^2

with target 0 except for q, whose target may be a fixed point in front of the
face (seed F). The closed form theta = (Phi^T Omega Phi)^-1 Phi^T Omega abar
is assembled blockwise, never forming the (3P x (12 + N)) matrix Phi: the
P-block is kron(I3, sum_j w_j d_j^2 x_j x_j^T), and the only large product is
sum_j w_j B_j^T B_j, one batched matmul over (B, 3P, N). The normal matrix is
factorised by Cholesky (see :func:`cholesky_solve_checked`).

Conditioning. Pixel coordinates are O(100) and depth arbitrary, which would
make the P-columns of the normal matrix differ in scale by 10^4 and more.
Inside the solver pixels are mapped to ``x_n = N x`` with
``N = [[1/s, 0, -c_x/s], [0, 1/s, -c_y/s], [0, 0, 1]]``, c = (W/2, H/2)
the image centre and s = max(H, W) / 2, so the image spans [-1, 1]; depth is
divided by its root-mean-square over the samples of each image, d_s. The solve
finds P_n with P_n d_n x_n = P d x, and returns ``P = P_n N / d_s`` in pixel
and depth units. The regularisation weight of P applies to P_n (an O(1)
quantity: model units per normalised unit), the weights of q and m to q and m
themselves. With zero weight on P the answer does not depend on the
normalisation at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lsqface.errors import SolverError

#: Diagonal jitter, relative to the mean diagonal of the normal matrix, added once
#: to a system whose Cholesky factorisation fails (not positive definite).
JITTER = {torch.float64: 1e-10, torch.float32: 1e-5}


@dataclass(frozen=True)
class GeometryRegularisation:
    """Weights alpha of the regularisation rows (seed R eq. 35), each a float or a tensor.

    Attributes:
        inverse_camera: weight on each entry of the normalised P: float, (9,), (B,) or (B, 9).
        camera_centre: weight on q: float, (3,), (B,) or (B, 3).
        camera_centre_target: (3,) or (B, 3) target of q in model units, or None for 0.
        shape: statistical regularisation of m: float, (N,) or (B, N), e.g. the
            adaptive weights of seed G.
    """

    inverse_camera: float | torch.Tensor = 1e-4
    camera_centre: float | torch.Tensor = 0.0
    camera_centre_target: torch.Tensor | None = None
    shape: float | torch.Tensor = 1.0


@dataclass(frozen=True)
class GeometryFit:
    """The solution of the geometric least squares; B images, P samples, N shape coefficients.

    Attributes:
        inverse_camera: (B, 3, 3) P, mapping depth-scaled pixels (d x, d y, d) to model units.
        camera_centre: (B, 3) q, the camera centre in model units.
        shape_coefficients: (B, N) m (identity then expression).
        residuals: (B, P, 3) P d x + q - a - B m, model units (unweighted).
        normalised_inverse_camera: (B, 3, 3) P_n, the unknown the solver regularises.
        pixel_normalisation: (3, 3) N; depth_scale: (B,) d_s (see the module docstring).
        jittered: (B,) bool, True where the Cholesky factorisation needed jitter.
    """

    inverse_camera: torch.Tensor
    camera_centre: torch.Tensor
    shape_coefficients: torch.Tensor
    residuals: torch.Tensor
    normalised_inverse_camera: torch.Tensor
    pixel_normalisation: torch.Tensor
    depth_scale: torch.Tensor
    jittered: torch.Tensor


def pixel_normalisation(height: int, width: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The (3, 3) matrix N taking homogeneous pixels of an H x W image to [-1, 1] (module docstring)."""
    scale = max(height, width) / 2.0
    return torch.tensor(
        [[1 / scale, 0, -width / 2 / scale], [0, 1 / scale, -height / 2 / scale], [0, 0, 1]],
        dtype=dtype,
        device=device,
    )


def regularisation_vector(weight: float | torch.Tensor, batch: int, count: int, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a weight given as float, (count,), (B,) or (B, count) to (B, count).

    A 1-D weight of length ``count`` is per unknown; of length B (and B != count) per image.
    """
    weight = torch.as_tensor(weight, dtype=like.dtype, device=like.device)
    if weight.ndim == 1 and weight.shape[0] == batch and count != batch:
        weight = weight[:, None]
    return weight.expand(batch, count)


class _WeightedGram(torch.autograd.Function):
    """sum_r w_r B_r^T B_r with a hand-written backward of one bmm (autograd would need two)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, weights)
        return torch.bmm((rows * weights[..., None]).transpose(1, 2), rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, weights = ctx.saved_tensors
        # d/dB_r = w_r B_r (G + G^T);  d/dw_r = B_r G B_r^T = (B_r (G + G^T)) . B_r / 2.
        rows_times_grad = torch.bmm(rows, grad + grad.transpose(1, 2))
        grad_rows = rows_times_grad * weights[..., None] if ctx.needs_input_grad[0] else None
        grad_weights = 0.5 * (rows_times_grad * rows).sum(-1) if ctx.needs_input_grad[1] else None
        return grad_rows, grad_weights


def weighted_gram(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_r weights_r rows_r^T rows_r: rows (B, R, N), weights (B, R) -> (B, N, N); differentiable in both.

    One pass to weight the rows and one batched matmul forward; one batched
    matmul and two elementwise passes backward. Without autograd on the CPU it is
    :func:`inference_weighted_gram`, which skips rows of negligible weight.
    """
    if rows.device.type == "cpu" and not (torch.is_grad_enabled() and (rows.requires_grad or weights.requires_grad)):
        return inference_weighted_gram(rows, weights)
    return _WeightedGram.apply(rows, weights)


def inference_weighted_gram(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """:func:`weighted_gram` without autograd, one image at a time and only over rows that count.

    A row whose weight is at most the dtype's rounding unit (``finfo.eps``) times the image's largest
    weight changes no entry of the sum beyond rounding, so it is left out; after the robust passes
    that is 10-80 % of the samples (background pixels whose residuals the Geman-McClure factor has
    silenced). One image's rows (6,000 x 153 in float32: 3.7 MB) stay in the processor's cache,
    where the batched product of all images' weighted rows would not (B x 3.7 MB through memory):
    on 2 cores this is 1.5-2x faster than the batched product at batch 16 before any row is left out.
    Equal to the batched product within rounding (tests/solver/test_geometry.py).

    Args:
        rows: (B, R, N); weights: (B, R), non-negative.

    Returns:
        (B, N, N).
    """
    return torch.stack([symmetric_weighted_gram(image_rows, image_weights) for image_rows, image_weights in zip(rows, weights)])


#: Column blocks of :func:`symmetric_weighted_gram`: the product of block i is computed from column
#: block i onwards, so four blocks do 5/8 of a full product's arithmetic.
GRAM_BLOCKS = 4


def symmetric_weighted_gram(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_r w_r rows_r^T rows_r of one image, without autograd, over the rows that count: (R, K), (R,) -> (K, K).

    A row whose weight is at most the dtype's rounding unit (``finfo.eps``) times the largest weight
    changes no entry beyond rounding and is left out (after the robust passes, background pixels whose
    residuals the Geman-McClure factor has silenced). The result is symmetric, so only its upper
    triangle is computed, a block row at a time (``GRAM_BLOCKS`` products from the diagonal block
    onwards, 5/8 of the arithmetic of the full product and 15-25 % faster with 150-170 columns on
    one core), and mirrored. Equal to the full product within rounding (tests/solver/test_geometry.py).
    """
    count = rows.shape[1]
    kept = (weights > torch.finfo(rows.dtype).eps * weights.max()).nonzero().squeeze(1)
    if kept.numel() < weights.numel():
        rows, weights = rows.index_select(0, kept), weights.index_select(0, kept)
    weighted = rows * weights[:, None]
    gram = rows.new_empty(count, count)
    edges = [round(count * block / GRAM_BLOCKS) for block in range(GRAM_BLOCKS + 1)]
    for start, stop in zip(edges, edges[1:]):
        if stop > start:
            torch.mm(weighted[:, start:stop].T, rows[:, start:], out=gram[start:stop, start:])
    upper = gram.triu()
    return upper + upper.triu(1).T


def cholesky_solve_checked(normal: torch.Tensor, rhs: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``normal x = rhs`` for symmetric positive (semi)definite ``normal`` (B, n, n), ``rhs`` (B, n).

    Cholesky by ``torch.linalg.cholesky_ex``; systems whose factorisation fails
    get ``JITTER[dtype] x mean(diag)`` added to the diagonal once (a tiny ridge
    that picks a finite answer in the null space of a rank-deficient system);
    if that still fails, or the system holds NaN or infinity, a SolverError
    is raised. Differentiable (autograd through ``cholesky_solve``).

    Returns:
        (B, n) solution and (B,) bool, True where jitter was added.
    """
    if not bool(torch.isfinite(normal).all()) or not bool(torch.isfinite(rhs).all()):
        raise SolverError(
            f"The {what} least-squares system holds NaN or infinity; check the network's depth, confidence and "
            "correspondence outputs and the input image for non-finite values."
        )
    factor, info = torch.linalg.cholesky_ex(normal)
    failed = info != 0
    if bool(failed.any()):
        size = normal.shape[-1]
        scale = normal.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp_min(torch.finfo(normal.dtype).tiny ** 0.5)
        jitter = JITTER.get(normal.dtype, 1e-5) * scale * failed.to(normal.dtype)
        normal = normal + jitter[:, None, None] * torch.eye(size, dtype=normal.dtype, device=normal.device)
        factor, info = torch.linalg.cholesky_ex(normal)
        if bool((info != 0).any()):
            raise SolverError(
                f"The {what} least-squares system is not positive definite even after adding a small diagonal "
                "jitter; raise the regularisation weights or give more confident samples."
            )
    solution = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    return solution, failed


def _check_shapes(pixels, depth, confidence, mean, basis) -> None:
    batch, points = depth.shape
    expected = {"pixels": (batch, points, 2), "confidence": (batch, points), "mean": (batch, points, 3)}
    for name, tensor in (("pixels", pixels), ("confidence", confidence), ("mean", mean)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(tensor.shape)}")
    if basis.ndim != 4 or tuple(basis.shape[:3]) != (batch, points, 3):
        raise ValueError(f"basis must have shape ({batch}, {points}, 3, N), got {tuple(basis.shape)}")


def solve_geometry_normalised(
    pixels: torch.Tensor,
    depth: torch.Tensor,
    confidence: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    regularisation: GeometryRegularisation,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve eqs 33-37 in the coordinates given, with no normalisation.

    Args:
        pixels: (B, P, 2) pixel coordinates (already normalised if wanted).
        depth: (B, P) depth (already scaled if wanted).
        confidence: (B, P) weights w_j >= 0.
        mean: (B, P, 3) shape mean a_j; basis: (B, P, 3, N) shape basis B_j, in the dtype of the
            other inputs or a lower one: the products with the basis (the only large ones) then run
            in the basis's dtype, the small normal system in the others'.
        regularisation: weights alpha (module docstring).

    Returns:
        P (B, 3, 3), q (B, 3), m (B, N), jittered (B,) bool.
    """
    _check_shapes(pixels, depth, confidence, mean, basis)
    batch, points, _, count = basis.shape
    low = basis.dtype  # the basis may be stored in a lower precision than the system (SolverConfig "mixed")
    homogeneous = torch.cat((pixels, torch.ones_like(pixels[..., :1])), dim=-1)
    scaled = depth[..., None] * homogeneous  # d_j x_j, (B, P, 3)
    # The basis is read as (B, 3P, N) rows and (B, P, 3N): every product touching it is one bmm,
    # and the only elementwise pass over it is the weighting below.
    basis_rows = basis.reshape(batch, points * 3, count)
    row_weights = confidence[..., None].expand(batch, points, 3).reshape(batch, points * 3)
    # Blocks of Phi^T Omega Phi (eq. 37), ordered (vec P, q, m).
    weighted = confidence[..., None] * scaled  # w_j d_j x_j
    gram_pixels = torch.bmm(weighted.transpose(1, 2), scaled)  # (B, 3, 3)
    eye3 = torch.eye(3, dtype=depth.dtype, device=depth.device)
    block_pp = torch.einsum("ce,bij->bciej", eye3, gram_pixels).reshape(batch, 9, 9)
    block_pq = torch.einsum("ce,bi->bcie", eye3, weighted.sum(1)).reshape(batch, 9, 3)
    block_qq = confidence.sum(1)[:, None, None] * eye3
    # (w_j [d x_j ; 1])^T B_j in one bmm, the weights on the small side: rows 0-2 give the P-m block,
    # row 3 the q-m block.
    lifted = confidence[..., None] * torch.cat((scaled, torch.ones_like(scaled[..., :1])), dim=-1)  # (B, P, 4)
    cross = -torch.bmm(lifted.transpose(1, 2).to(low), basis.reshape(batch, points, 3 * count)).to(depth.dtype)
    cross = cross.reshape(batch, 4, 3, count)
    block_pm = cross[:, :3].transpose(1, 2).reshape(batch, 9, count)  # row 3c + i: -sum_j w_j (d x_j)_i B_j[c, :]
    block_qm = cross[:, 3]
    block_mm = weighted_gram(basis_rows, row_weights.to(low)).to(depth.dtype)  # sum_j w_j B_j^T B_j
    normal = torch.cat(
        (
            torch.cat((block_pp, block_pq, block_pm), dim=2),
            torch.cat((block_pq.transpose(1, 2), block_qq, block_qm), dim=2),
            torch.cat((block_pm.transpose(1, 2), block_qm.transpose(1, 2), block_mm), dim=2),
        ),
        dim=1,
    )
    # Phi^T Omega abar.
    rhs_p = torch.bmm(mean.transpose(1, 2), weighted).reshape(batch, 9)  # row c: sum_j w_j a_j[c] d x_j
    rhs_q = (confidence[..., None] * mean).sum(1)
    # (w a)^T B as a row vector times the untransposed basis: the fast orientation for BLAS.
    rhs_m = -torch.bmm((row_weights * mean.reshape(batch, points * 3))[:, None, :].to(low), basis_rows).squeeze(1)
    rhs_m = rhs_m.to(depth.dtype)
    rhs = torch.cat((rhs_p, rhs_q, rhs_m), dim=1)
    # Regularisation rows: alpha on the diagonal, alpha * target on the right.
    alpha_q = regularisation_vector(regularisation.camera_centre, batch, 3, depth)
    alpha = torch.cat(
        (
            regularisation_vector(regularisation.inverse_camera, batch, 9, depth),
            alpha_q,
            regularisation_vector(regularisation.shape, batch, count, depth),
        ),
        dim=1,
    )
    normal = normal + torch.diag_embed(alpha)
    if regularisation.camera_centre_target is not None:
        target = torch.as_tensor(regularisation.camera_centre_target, dtype=depth.dtype, device=depth.device)
        rhs = rhs + torch.cat((torch.zeros_like(rhs_p), alpha_q * target.expand(batch, 3), torch.zeros_like(rhs_m)), 1)
    theta, jittered = cholesky_solve_checked(normal, rhs, "geometric")
    return theta[:, :9].reshape(batch, 3, 3), theta[:, 9:12], theta[:, 12:], jittered


def solve_geometry(
    pixels: torch.Tensor,
    depth: torch.Tensor,
    confidence: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    regularisation: GeometryRegularisation,
    image_size: tuple[int, int],
) -> GeometryFit:
    """Fit P, q and m to the samples (seed R eqs 33-37), conditioned as in the module docstring.

    Args:
        pixels: (B, P, 2) pixel coordinates (x, y) in pixels, centres at integer + 0.5.
        depth: (B, P) depth, in the network's units (the camera's z times psi, see camera.py).
        confidence: (B, P) geometric confidence w_j >= 0.
        mean: (B, P, 3) shape mean at the correspondences, model units.
        basis: (B, P, 3, N) shape basis at the correspondences, model units per coefficient; may
            be of a lower dtype than the rest (:func:`solve_geometry_normalised`).
        regularisation: the weights alpha.
        image_size: (H, W) in pixels, for the pixel normalisation.

    Returns:
        GeometryFit; differentiable in depth, confidence, mean, basis and the weights.
    """
    height, width = image_size
    normalisation = pixel_normalisation(height, width, dtype=depth.dtype, device=depth.device)
    normalised_pixels = pixels @ normalisation[:2, :2].T + normalisation[:2, 2]
    depth_scale = depth.square().mean(1).sqrt().clamp_min(torch.finfo(depth.dtype).tiny ** 0.25)
    normalised_depth = depth / depth_scale[:, None]
    normalised_p, camera_centre, shape_coefficients, jittered = solve_geometry_normalised(
        normalised_pixels, normalised_depth, confidence, mean, basis, regularisation
    )
    inverse_camera = normalised_p @ normalisation / depth_scale[:, None, None]
    homogeneous = torch.cat((pixels, torch.ones_like(pixels[..., :1])), dim=-1)
    model_points = (depth[..., None] * homogeneous) @ inverse_camera.transpose(1, 2) + camera_centre[:, None]
    batch, points, _, count = basis.shape
    shape_offsets = torch.bmm(basis.reshape(batch, points * 3, count), shape_coefficients[..., None].to(basis.dtype))
    shape_offsets = shape_offsets.reshape(batch, points, 3).to(depth.dtype)
    residuals = model_points - mean - shape_offsets
    return GeometryFit(
        inverse_camera=inverse_camera,
        camera_centre=camera_centre,
        shape_coefficients=shape_coefficients,
        residuals=residuals,
        normalised_inverse_camera=normalised_p,
        pixel_normalisation=normalisation,
        depth_scale=depth_scale,
        jittered=jittered,
    )


@dataclass(frozen=True)
class GeometryDesign:
    """The rows of the geometric least squares for inference, built once and shared by every robust pass.

    Row 3j + c of ``rows`` is sample j's equation for coordinate c in the normalised coordinates of the
    module docstring, with the unknowns (vec P_n, q, -m) and the target a_j[c] as its last column:
    ``[kron(I3, (d_n x_n)_j^T)[c], I3[c], B_j[c, :], a_j[c]]``. The solve's every product with the basis
    is then one weighted Gram matrix of these rows: its m-blocks are the normal matrix's, its last column
    the right-hand side (:func:`solve_geometry_design`). The basis enters with a plus sign, so the solve
    finds -m; a zero target on m makes the regularisation the same. ``camera_rows`` are the same rows
    without the basis, in the system's dtype: their Gram matrix gives the blocks of P and q alone.

    Attributes:
        rows: (B, 3P, 13 + N), in the basis's dtype (float32 for SolverConfig "mixed").
        camera_rows: (B, 3P, 13) ``[kron(I3, (d_n x_n)_j^T)[c], I3[c], a_j[c]]`` in the system's dtype.
        scaled: (B, P, 3) d_n x_n; mean: (B, P, 3) a_j; in the system's dtype.
        pixel_normalisation: (3, 3) N; depth_scale: (B,) d_s.
        alpha: (B, 12 + N) the regularisation weights on the diagonal; target: (B, 3) alpha times the
            target of q, or None.
    """

    rows: torch.Tensor
    camera_rows: torch.Tensor
    scaled: torch.Tensor
    mean: torch.Tensor
    pixel_normalisation: torch.Tensor
    depth_scale: torch.Tensor
    alpha: torch.Tensor
    target: torch.Tensor | None


def geometry_design(pixels: torch.Tensor, depth: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor,
                    regularisation: GeometryRegularisation, image_size: tuple[int, int]) -> GeometryDesign:
    """The rows of :class:`GeometryDesign` (no autograd), conditioned as :func:`solve_geometry` does.

    Args:
        pixels: (B, P, 2) pixel coordinates; depth: (B, P); mean: (B, P, 3); in the system's dtype.
        basis: (B, P, 3, N) in its own dtype (any strides: it is copied into the rows once).
        regularisation: the weights alpha; image_size: (H, W) in pixels.
    """
    _check_shapes(pixels, depth, depth, mean, basis)
    batch, points, _, count = basis.shape
    height, width = image_size
    normalisation = pixel_normalisation(height, width, dtype=depth.dtype, device=depth.device)
    normalised_pixels = pixels @ normalisation[:2, :2].T + normalisation[:2, 2]
    depth_scale = depth.square().mean(1).sqrt().clamp_min(torch.finfo(depth.dtype).tiny ** 0.25)
    normalised_depth = depth / depth_scale[:, None]
    homogeneous = torch.cat((normalised_pixels, torch.ones_like(normalised_pixels[..., :1])), dim=-1)
    scaled = normalised_depth[..., None] * homogeneous
    camera_rows = depth.new_zeros(batch, points, 3, 13)
    for coordinate in range(3):
        camera_rows[:, :, coordinate, 3 * coordinate:3 * coordinate + 3] = scaled
        camera_rows[:, :, coordinate, 9 + coordinate] = 1.0
    camera_rows[..., 12] = mean
    rows = basis.new_empty(batch, points, 3, 13 + count)
    rows[..., :12] = camera_rows[..., :12]
    rows[..., 12:12 + count] = basis
    rows[..., -1] = mean
    alpha_q = regularisation_vector(regularisation.camera_centre, batch, 3, depth)
    alpha = torch.cat((regularisation_vector(regularisation.inverse_camera, batch, 9, depth), alpha_q,
                       regularisation_vector(regularisation.shape, batch, count, depth)), dim=1)
    target = None
    if regularisation.camera_centre_target is not None:
        target = alpha_q * torch.as_tensor(regularisation.camera_centre_target, dtype=depth.dtype,
                                           device=depth.device).expand(batch, 3)
    return GeometryDesign(rows.reshape(batch, 3 * points, 13 + count), camera_rows.reshape(batch, 3 * points, 13),
                          scaled, mean, normalisation, depth_scale, alpha, target)


def solve_geometry_design(design: GeometryDesign, confidence: torch.Tensor) -> GeometryFit:
    """:func:`solve_geometry` on the rows of a :class:`GeometryDesign`, without autograd: one robust pass.

    Per image, one weighted Gram matrix of the rows (:func:`symmetric_weighted_gram`) gives every block
    that involves the basis and the right-hand side; the blocks of P and q alone (and their right-hand
    side) come from the Gram matrix of the 13 camera rows in the system's dtype, as
    :func:`solve_geometry_normalised` forms them in it; the systems of the batch are then solved together.
    Equal to :func:`solve_geometry` within rounding (tests/solver/test_geometry.py).

    Args:
        design: from :func:`geometry_design`.
        confidence: (B, P) weights w_j >= 0, in the system's dtype.

    Returns:
        GeometryFit, as :func:`solve_geometry` returns it.
    """
    scaled, mean, rows = design.scaled, design.mean, design.rows
    batch, points, _ = scaled.shape
    count = rows.shape[-1] - 13
    size = 12 + count
    dtype = scaled.dtype
    if tuple(confidence.shape) != (batch, points):
        raise ValueError(f"confidence must have shape ({batch}, {points}), got {tuple(confidence.shape)}")
    row_weights = confidence.repeat_interleave(3, dim=1)
    normal = scaled.new_empty(batch, size, size)
    rhs = scaled.new_empty(batch, size)
    low_weights = row_weights.to(rows.dtype)
    for index in range(batch):
        gram = symmetric_weighted_gram(rows[index], low_weights[index])
        normal[index] = gram[:size, :size]
        rhs[index] = gram[:size, size]
    # The blocks of P and q alone, and their right-hand side, in the system's dtype (eq. 37).
    camera = torch.bmm((design.camera_rows * row_weights[..., None]).transpose(1, 2), design.camera_rows)
    normal[:, :12, :12] = camera[:, :12, :12]
    rhs[:, :12] = camera[:, :12, 12]
    normal.diagonal(dim1=1, dim2=2).add_(design.alpha)
    if design.target is not None:
        rhs[:, 9:12] += design.target
    theta, jittered = cholesky_solve_checked(normal, rhs, "geometric")
    normalised_p, camera_centre, shape_coefficients = theta[:, :9].reshape(batch, 3, 3), theta[:, 9:12], -theta[:, 12:]
    # Residuals P_n d_n x_n + q - a - B m, with B (-m) from the rows.
    negative_offsets = torch.stack([torch.mv(rows[index, :, 12:size], theta[index, 12:].to(rows.dtype))
                                    for index in range(batch)]).reshape(batch, points, 3)
    residuals = scaled @ normalised_p.transpose(1, 2) + camera_centre[:, None] - mean + negative_offsets.to(dtype)
    return GeometryFit(
        inverse_camera=normalised_p @ design.pixel_normalisation / design.depth_scale[:, None, None],
        camera_centre=camera_centre,
        shape_coefficients=shape_coefficients,
        residuals=residuals,
        normalised_inverse_camera=normalised_p,
        pixel_normalisation=design.pixel_normalisation,
        depth_scale=design.depth_scale,
        jittered=jittered,
    )

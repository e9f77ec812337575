"""Unsupervised training losses (DESIGN.md "Training"; docs/training.md says why each exists).

All three are per image, so a batch's loss is their mean and a batch split
over processes or micro-batches gives the same gradient.

- :func:`photometric_loss`: the fitted mesh rendered with the fitted camera;
  per pixel min(r^2, tau^2) where the mesh covers the pixel (r the RGB
  residual in display units) and tau^2 where it does not. Covering a pixel pays
  only if the model explains its colour (seed K/L/M's robust residual that
  "expands the face region").
- :func:`geometric_loss`: the distance, in image sides, between each sampled
  pixel and the projection of its correspondence's model point under the
  fitted camera and shape, capped, weighted like the solve's rows; it keeps the correspondence map consistent
  with one camera and one shape.
- :func:`statistical_loss`: sum_i w_i a_i^2 with the adaptive weights of seed G.

Not unsupervised, for the ablation's upper bound and the default model (``train.supervision =
"true_maps"``): :func:`true_map_loss` regresses the maps onto a synthetic face's true maps, and
:func:`true_shape_loss` measures the shape the least-squares layer fits from the network's maps
against the face's true shape, so the maps are trained for what the fit makes of them;
:func:`true_landmark_loss` does the same for the fitted 5 landmarks, the benchmark's fitted error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lsqface.morphable.model import basis_products
from lsqface.render.interpolate import interpolate
from lsqface.render.rasterize import rasterize
from lsqface.solver.camera import project
from lsqface.solver.fit import LeastSquaresFit, ShapeFit
from lsqface.solver.sampling import gather_map


def photometric_loss(image: torch.Tensor, image_vertices: torch.Tensor, colour: torch.Tensor, triangles: torch.Tensor,
                     residual_cap: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Robust photometric loss of a rendered fitted mesh.

    Args:
        image: (B, 3, H, W) the input image in [0, 1] (display units).
        image_vertices: (B, V, 3) projected vertices (x, y pixels, camera z), differentiable.
        colour: (B, V, 3) reconstructed vertex colours in [0, 1], differentiable.
        triangles: (F, 3) int64.
        residual_cap: tau, in RGB distance units.

    Returns:
        (B,) mean cost per pixel, (B, H, W) the per-pixel cost (the robust residual map),
        (B, 3, H, W) the rendering (0 where uncovered, for pictures).
    """
    batch, _, height, width = image.shape
    fragments = rasterize(image_vertices.detach().float(), triangles, height, width)
    rendered = interpolate(colour, fragments, image_vertices, triangles)  # (B, H, W, 3)
    covered = fragments.triangle_id >= 0
    squared = (rendered - image.permute(0, 2, 3, 1).to(rendered.dtype)).square().sum(dim=-1)
    cap = residual_cap ** 2
    cost = torch.where(covered, squared.clamp(max=cap), torch.full_like(squared, cap))
    return cost.mean(dim=(1, 2)), cost, rendered.permute(0, 3, 1, 2)


def geometric_loss(result: LeastSquaresFit, depth: torch.Tensor, cap: float) -> torch.Tensor:
    """Capped squared reprojection distance of the sampled pixels, in image sides, per image.

    The model point of sample j with the fitted shape is X_j = a_j + B_j m = P (d_j x_j) + q - r_j
    (r_j the fit's geometric residual), and P (d_j x_j) + q projects exactly onto x_j (P = M^-1,
    M = psi K R, q = -P psi K t), so the projection of X_j under K (R X + t) differs from x_j only
    through r_j; computing it this way avoids sampling the basis again.

    Args:
        result: the least-squares fit (its samples, residuals, camera).
        depth: (B, 1, H, W) the depth map the fit used.
        cap: distances above this fraction of the image side count as this much.

    Returns:
        (B,) weighted mean over samples of min(distance^2, cap^2). Each sample's weight is its row
        weight in the geometric solve (geometric confidence x UV-3DMM validity), detached: the
        loss concentrates on the pixels the solve trusts, and cannot be lowered by lowering a
        confidence (that would let the network switch the term off).
    """
    samples = result.samples
    dtype = result.rotation.dtype
    pixels = samples.pixels.to(dtype)
    sample_depth = gather_map(depth, samples).to(dtype)  # (B, P, 1)
    homogeneous = torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1) * sample_depth
    model_points = homogeneous @ result.inverse_camera.transpose(1, 2) + result.camera_centre[:, None] - result.geometric_residuals
    camera_points = model_points @ result.rotation.transpose(1, 2) + result.translation[:, None]
    projected = camera_points @ result.intrinsics.transpose(1, 2)
    reprojected = projected[..., :2] / projected[..., 2:3]
    side = float(max(samples.height, samples.width))
    distance = ((reprojected - pixels) / side).square().sum(dim=-1)
    weights = result.geometric_weights.detach().to(dtype)
    return (distance.clamp(max=cap ** 2) * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)


def statistical_loss(shape_coefficients: torch.Tensor, albedo_coefficients: torch.Tensor,
                     shape_weights: torch.Tensor, albedo_weights: torch.Tensor) -> torch.Tensor:
    """(B,) sum_i w_i a_i^2 over shape (B, N) and albedo (B, N_alb) coefficients, weights (N,), (N_alb,)."""
    shape = (shape_coefficients.square() * shape_weights.to(shape_coefficients)).sum(dim=1)
    albedo = (albedo_coefficients.square() * albedo_weights.to(albedo_coefficients)).sum(dim=1)
    return shape + albedo


def true_map_loss(correspondence: torch.Tensor, depth: torch.Tensor, confidence: torch.Tensor,
                  true_correspondence: torch.Tensor, true_depth: torch.Tensor, face: torch.Tensor,
                  correspondence_weight: float = 1.0, depth_weight: float = 1.0,
                  confidence_weight: float = 0.1, depth_tilt_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Supervised loss of the network's maps against a synthetic face's true maps, per image.

    The network's depth is relative (the solve's inverse camera absorbs its scale psi) while the
    true depth is camera z in mm, so depth is compared scale-invariantly: log depth minus its mean
    over the image's face pixels, for both.

    Args:
        correspondence: (B, 2, H, W) predicted (u, v); depth: (B, 1, H, W) predicted relative depth,
            positive; confidence: (B, C, H, W) predicted confidences in (0, 1) (every channel is supervised).
        true_correspondence: (B, 2, H, W) true (u, v); true_depth: (B, 1, H, W) camera z in mm
            (anything off the face); face: (B, 1, H, W) 1 where the face is visible, 0 elsewhere.
        correspondence_weight, depth_weight, confidence_weight: the terms' weights.
        depth_tilt_weight: weight of "depth_tilt" (:func:`depth_tilt`), the difference between the
            planes that best fit the two log-depth maps over the face; 0 leaves the term out.

    Returns:
        (B,) the weighted sum and a dict of the (B,) terms: "correspondence" (mean over face pixels of
        |du| + |dv|), "depth" (mean over face pixels of the absolute centred log-depth difference),
        "confidence" (binary cross-entropy against the face mask, mean over all pixels and channels)
        and, with a depth tilt weight, "depth_tilt".
    """
    mask = (face > 0.5).to(correspondence.dtype)
    face_pixels = mask.sum(dim=(1, 2, 3)).clamp_min(1.0)

    def face_mean(value: torch.Tensor) -> torch.Tensor:
        return (value * mask).sum(dim=(1, 2, 3)) / face_pixels

    correspondence_term = face_mean((correspondence - true_correspondence).abs().sum(dim=1, keepdim=True))
    log_depth = depth.clamp_min(1e-6).log()
    log_true = torch.where(mask > 0, true_depth.to(depth.dtype), torch.ones_like(depth)).clamp_min(1e-6).log()
    centred = (log_depth - face_mean(log_depth)[:, None, None, None]) - (log_true - face_mean(log_true)[:, None, None, None])
    depth_term = face_mean(centred.abs())
    target = mask.expand_as(confidence)
    confidence_term = F.binary_cross_entropy(confidence.clamp(1e-6, 1 - 1e-6), target, reduction="none").mean(dim=(1, 2, 3))
    total = correspondence_weight * correspondence_term + depth_weight * depth_term + confidence_weight * confidence_term
    terms = {"correspondence": correspondence_term, "depth": depth_term, "confidence": confidence_term}
    if depth_tilt_weight > 0:
        terms["depth_tilt"] = (depth_tilt(log_depth, mask) - depth_tilt(log_true, mask)).abs().sum(dim=1)
        total = total + depth_tilt_weight * terms["depth_tilt"]
    return total, terms


def depth_tilt(log_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 2) the slopes (b, c) of the plane a + b x + c y that best fits ``log_depth`` over ``mask``.

    x and y run from -1 to 1 across the image, so a slope is the log-depth change over half the image's
    side. A head nodding or turning tilts this plane; the centred log-depth term weighs such a tilt no
    more than any other error of its size, so a network can leave a nod out of its depth map (docs/synthetic.md).

    Args:
        log_depth: (B, 1, H, W) log depth; mask: (B, 1, H, W) 1 on the pixels fitted, 0 elsewhere.
    """
    batch, _, height, width = log_depth.shape
    y, x = torch.meshgrid(torch.linspace(-1, 1, height, dtype=log_depth.dtype, device=log_depth.device),
                          torch.linspace(-1, 1, width, dtype=log_depth.dtype, device=log_depth.device), indexing="ij")
    design = torch.stack([torch.ones_like(x), x, y], dim=-1).reshape(1, height * width, 3)
    weights = mask.reshape(batch, height * width, 1).to(log_depth.dtype)
    values = log_depth.reshape(batch, height * width, 1)
    # Centred first, so that the small ridge (which keeps an empty or one-row mask solvable) barely moves the slopes.
    values = values - (values * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1.0)
    gram = (design * weights).transpose(1, 2) @ design + 1e-6 * torch.eye(3, dtype=log_depth.dtype, device=log_depth.device)
    moment = (design * weights).transpose(1, 2) @ values
    return torch.linalg.solve(gram, moment)[:, 1:, 0]


def true_shape_loss(shape_mean: torch.Tensor, shape_basis: torch.Tensor, fitted: torch.Tensor,
                    truth: torch.Tensor) -> torch.Tensor:
    """The benchmark's vertex error (mm) between a fitted and a true shape, per image.

    Both shapes are built in model space (mean plus basis times coefficients) and compared after
    the least-squares similarity alignment of the fitted one onto the truth
    (:func:`lsqface.evaluate.metrics.vertex_error`): differentiable, and blind to any pose or
    size the camera absorbs, like the benchmark.

    Args:
        shape_mean: (V, 3) the model's mean shape; shape_basis: (V, 3, N) its shape basis
            (identity, then expression).
        fitted: (B, N) shape coefficients from the least-squares layer (differentiable).
        truth: (B, N) the synthetic faces' true coefficients.

    Returns:
        (B,) mean over vertices of the aligned distance.
    """
    from lsqface.evaluate.metrics import vertex_error

    mean, basis = shape_mean.to(fitted.dtype), shape_basis.to(fitted.dtype)
    return vertex_error(mean + basis_products(basis, fitted),
                        mean + basis_products(basis, truth.to(fitted.dtype)))


def true_landmark_loss(shape_mean: torch.Tensor, shape_basis: torch.Tensor, landmark_rows: torch.Tensor, fitted: ShapeFit,
                       truth: torch.Tensor) -> torch.Tensor:
    """The benchmark's fitted 5-landmark error (percent of the inter-ocular distance), per image.

    Each landmark is the mean of its model vertices (``MorphableModel.landmarks_5`` rows) on the
    fitted shape, projected by the fitted camera, as ``Reconstruction.landmarks_5`` is; the error
    is :func:`lsqface.evaluate.metrics.landmark_error` against the true landmarks. Unlike the
    vertex error it sees the camera too: pose, size and position.

    Args:
        shape_mean: (V, 3) the model's mean shape; shape_basis: (V, 3, N) its shape basis.
        landmark_rows: (5, K) int vertex indices of each landmark.
        fitted: the least-squares layer's camera and shape (differentiable).
        truth: (B, 5, 2) the true landmarks in the fitted image's pixels.

    Returns:
        (B,) mean landmark distance over the true inter-ocular distance, percent.
    """
    from lsqface.evaluate.metrics import landmark_error

    coefficients = fitted.shape_coefficients
    dtype = coefficients.dtype
    rows = landmark_rows.to(shape_mean.device)
    mean = shape_mean[rows].to(dtype).mean(dim=1)  # (5, 3)
    basis = shape_basis[rows].to(dtype).mean(dim=1)  # (5, 3, N)
    points = mean + basis_products(basis, coefficients)
    predicted = project(points, fitted.intrinsics, fitted.rotation, fitted.translation)
    return landmark_error(predicted, truth.to(dtype))


def true_rotation_loss(fitted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The angle (degrees) of the rotation that takes the true camera rotation to the fitted one, per image.

    theta = atan2(|axis part|, cos part) of D = R_fit R_true^T, with cos = (trace D - 1) / 2 and the axis
    part the vector of D's antisymmetric half, so that it is accurate near 0 and 180 degrees where
    acos is not. Differentiable; the norm's square root has a tiny floor so that the gradient at
    an exact match is finite.

    Args:
        fitted: (B, 3, 3) the least-squares layer's rotations (differentiable).
        truth: (B, 3, 3) the synthetic faces' true rotations.

    Returns:
        (B,) angles in degrees.
    """
    difference = fitted @ truth.to(fitted.dtype).transpose(1, 2)
    cosine = 0.5 * (difference.diagonal(dim1=1, dim2=2).sum(-1) - 1.0)
    axis = torch.stack([difference[:, 2, 1] - difference[:, 1, 2], difference[:, 0, 2] - difference[:, 2, 0],
                        difference[:, 1, 0] - difference[:, 0, 1]], dim=-1)
    sine = 0.5 * torch.sqrt((axis ** 2).sum(-1) + 1e-20)
    return torch.rad2deg(torch.atan2(sine, cosine))

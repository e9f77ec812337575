"""The differentiable least-squares layer, end to end (seed B, Fig. 10).

image -> softplus pre-processing (seed E) -> sampling of confident pixels
(seed C) -> geometric least squares for P, q, m (seed R eqs 33-37) -> camera
K, R, t (seed Q) -> normals rotated into camera space -> photometric least
squares for the inverse lighting l and albedo coefficients h (seed R eqs
38-41).

The confidence map has two channels: channel 0 weights the geometric rows,
channel 1 the photometric rows (the U-Net's fifth output, DESIGN.md "Network").
Pixels are sampled on the larger of the two, so a pixel confident for either
solve can be drawn. Each sample's weight is also multiplied by the UV-3DMM's
validity mask at its correspondence, so correspondences that fall outside the
flattened face carry no weight.

Precision: the solves run in ``SolverConfig.precision`` (float64 by default,
see docs/solver.md for the float32 measurement; "mixed" forms the products
with the sampled shape and albedo bases, nearly all of the cost, in float32
and assembles and solves the small normal systems in float64); the UV images
are sampled in their own dtype and cast, and every result is returned in the
input image's dtype, so gradients flow back into a float32 network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch.profiler import record_function

from lsqface.morphable.uv_model import UVMorphableModel, sample_albedo, sample_mask, sample_normal, sample_shape
from lsqface.solver.camera import Camera, compose_inverse_camera, decompose_camera
from lsqface.solver.geometry import (GeometryFit, GeometryRegularisation, geometry_design, solve_geometry,
                                     solve_geometry_design)
from lsqface.solver.photometry import PhotometryFit, PhotometryRegularisation, solve_photometry
from lsqface.solver.preprocess import softplus_preprocess
from lsqface.solver.reprojection import ReprojectionFit, refine_reprojection
from lsqface.solver.sampling import PixelSamples, gather_map, sample_pixels


@dataclass(frozen=True)
class SolverConfig:
    """Settings of the least-squares layer; defaults from the paper where it gives them.

    The seed gives the sample count (10,000, seed C) and eps (4, seed E) but no
    regularisation weights; ours weigh each squared regularisation residual
    against sum_j w_j |residual_j|^2 over the samples (model units: millimetres
    for geometry, [0, 1] colour for photometry).

    Attributes:
        sample_count: pixels drawn per image.
        softplus_eps: the softplus scale of the pre-processing.
        inverse_camera_weight: alpha on each entry of the normalised P (geometry.py).
        camera_centre_weight: alpha on q; 0 leaves q free.
        camera_centre_target: target of q in model units, or None for 0 (seed F:
            a fixed point in front of the face during early training).
        shape_weight: alpha on each of m (statistical regularisation; seed G adapts it).
        lighting_weight: gamma on each inverse-lighting coefficient.
        albedo_weight: xi on each albedo coefficient.
        precision: dtype of the solves: "float64", "float32", or "mixed": the products with the
            sampled bases (the weighted Gram matrices, 90 % of the layer's arithmetic) in float32, the
            normal systems assembled and solved in float64. On the shipped model's maps "mixed" gives the
            float64 landmarks within 1e-4 pixel where plain float32 moves the camera along its depth
            by millimetres (docs/solver.md, "Precision"); inference presets use it.
        robust_iterations: after the geometric solve, re-solve this many times with each sample's
            confidence weight multiplied by the Geman-McClure factor (c^2 / (c^2 + r^2))^2 of its
            residual norm r in the previous solve (iteratively reweighted least squares; our
            addition for inference with imperfect maps, 0 is the paper's single solve). The factor also
            multiplies the photometric weights: a pixel whose correspondence the shape cannot explain
            reads the wrong albedo too.
        robust_scale: c = robust_scale x the median residual norm of the image's samples (weighted
            by confidence), from the previous solve.
        reprojection_iterations: after the closed-form solve and its robust passes, this many
            Gauss-Newton steps on the rotation, translation and shape that fit where the sampled
            correspondences are seen in the image (:mod:`lsqface.solver.reprojection`; our addition for
            inference: the depth maps flatten a nodding head, the correspondences do not). 0, the default,
            is the closed-form layer alone.
        reprojection_shape_weight: alpha of the shape prior in those steps; None uses ``shape_weight``.
        reprojection_depth_weight: lambda, the weight of the network's depth along each ray in those
            steps against the image position (0: the image alone).
    """

    sample_count: int = 10000
    softplus_eps: float = 4.0
    inverse_camera_weight: float = 1e-4
    camera_centre_weight: float = 0.0
    camera_centre_target: tuple[float, float, float] | None = None
    shape_weight: float = 1.0
    lighting_weight: float = 1.0
    albedo_weight: float = 1.0
    precision: Literal["float64", "float32", "mixed"] = "float64"
    robust_iterations: int = 0
    robust_scale: float = 2.0
    reprojection_iterations: int = 0
    reprojection_shape_weight: float | None = None
    reprojection_depth_weight: float = 0.0


@dataclass(frozen=True)
class ShapeFit:
    """What the geometric solve fits, for B images and P samples each (in the input image's dtype).

    Attributes:
        inverse_camera: (B, 3, 3) P (depth-scaled pixels -> model units).
        camera_centre: (B, 3) q, model units.
        intrinsics: (B, 3, 3) K, pixels; rotation: (B, 3, 3) R (model to camera);
        translation: (B, 3) t, model units; depth_scale: (B,) psi (camera.py).
        identity_coefficients: (B, N_id); expression_coefficients: (B, N_exp).
        geometric_residuals: (B, P, 3) P d x + q - a - B m of the closed-form solve, model units: how well
            one face explains the maps (with ``reprojection_iterations``, the residuals before those steps,
            which move P, q and m off the depth towards where the correspondences are seen).
        geometric_weights: (B, P) the row weights of the closed-form solve (confidence x mask, x the robust
            factor); the reprojection steps multiply them by a robust factor of their own residuals.
        correspondence: (B, P, 2) UV coordinates at the samples.
        samples: which pixels were drawn.
    """

    inverse_camera: torch.Tensor
    camera_centre: torch.Tensor
    intrinsics: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    depth_scale: torch.Tensor
    identity_coefficients: torch.Tensor
    expression_coefficients: torch.Tensor
    geometric_residuals: torch.Tensor
    geometric_weights: torch.Tensor
    correspondence: torch.Tensor
    samples: PixelSamples

    @property
    def shape_coefficients(self) -> torch.Tensor:
        """(B, N_id + N_exp) m, identity then expression."""
        return torch.cat((self.identity_coefficients, self.expression_coefficients), dim=1)


@dataclass(frozen=True)
class LeastSquaresFit(ShapeFit):
    """Everything the layer fits: the geometric fit, then inverse lighting and albedo.

    Attributes (besides ShapeFit's):
        inverse_lighting: (B, 3, 9) l per colour channel; albedo_coefficients: (B, N_alb) h.
        photometric_residuals: (B, P, 3) i F^T l - c - D h, albedo units.
        photometric_weights: (B, P) the row weights used (confidence x mask, x the robust factor).
        normals: (B, P, 3) camera-space mean-shape normals at the samples.
    """

    inverse_lighting: torch.Tensor
    albedo_coefficients: torch.Tensor
    photometric_residuals: torch.Tensor
    photometric_weights: torch.Tensor
    normals: torch.Tensor


@dataclass(frozen=True)
class _GeometryStage:
    """The geometric solve's results in the solve dtype, with what the photometric solve reads."""

    geometry: GeometryFit
    camera: Camera
    uv: torch.Tensor  # (B, P, 2) sampled correspondences in the UV model's dtype
    weights: torch.Tensor  # (B, P, 2) final row weights, solve dtype
    correspondence: torch.Tensor  # (B, P, 2) sampled correspondences in the maps' dtype
    samples: PixelSamples


def _check_maps(image, correspondence, depth, confidence) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    batch, _, height, width = image.shape
    for name, tensor, channels in (("correspondence", correspondence, 2), ("depth", depth, 1), ("confidence", confidence, 2)):
        if tuple(tensor.shape) != (batch, channels, height, width):
            raise ValueError(f"{name} must have shape ({batch}, {channels}, {height}, {width}), got {tuple(tensor.shape)}")


def robust_factor(residuals: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """Geman-McClure reweighting factors (c^2 / (c^2 + r^2))^2 of one IRLS step.

    Redescending: a sample far off gets a weight falling like (c / r)^4, so a fifth of gross
    outliers is ignored after a few passes (the Cauchy factor c^2 / (c^2 + r^2) only halved the
    camera error in tests/solver/test_fit.py).

    Args:
        residuals: (B, P, 3) geometric residuals (model units); weights: (B, P) current weights.
        scale: c = scale x the weighted median of the residual norms of each image.

    Returns:
        (B, P) factors in (0, 1]; an image whose weights are all zero gets factors 1.
    """
    norms = residuals.norm(dim=-1)
    median = weighted_median(norms, weights)[:, None]
    c_squared = (scale * median).square().clamp_min(torch.finfo(norms.dtype).tiny)
    return (c_squared / (c_squared + norms.square())).square()


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) the weighted median of each row: the smallest value whose cumulative weight reaches half.

    Args:
        values: (B, P); weights: (B, P) non-negative. A row of zero weights gives its smallest value.
    """
    order = values.argsort(dim=1)
    sorted_values = values.gather(1, order)
    cumulative = weights.gather(1, order).cumsum(dim=1)
    half = 0.5 * cumulative[:, -1:]
    index = (cumulative < half).sum(dim=1, keepdim=True).clamp_max(values.shape[1] - 1)
    return sorted_values.gather(1, index)[:, 0]


def _per_image(uv: torch.Tensor, *weights: torch.Tensor | None) -> bool:
    """Whether to solve image by image on rows built once (:func:`lsqface.solver.geometry.geometry_design`):
    without autograd on the CPU, with the regularisation weights of the config.

    Every solve is per image anyway; taken one image at a time, an image's rows (2,000 samples x 3 x 166
    float32: 4 MB) stay in the processor's cache through its robust passes, where the batch's (16 images:
    64 MB) would go through memory several times per pass. Each pass is then one weighted Gram matrix of
    the rows and a few small products. The results equal the batched solve's within rounding
    (tests/solver/test_fit.py). Regularisation weights given as tensors (adaptive or per image) keep the
    batched path.
    """
    return uv.device.type == "cpu" and not torch.is_grad_enabled() and all(weight is None for weight in weights)


def _concatenate(parts: list, shared: tuple[str, ...] = ()):
    """One fit (GeometryFit, PhotometryFit) of the images of several, batch by batch; the ``shared`` fields
    are the same for all (a GeometryFit's pixel normalisation) and taken from the first."""
    return type(parts[0])(**{
        item.name: getattr(parts[0], item.name) if item.name in shared
        else torch.cat([getattr(part, item.name) for part in parts])
        for item in dataclasses.fields(parts[0])
    })


def _geometric_stage(uv_model: UVMorphableModel, image: torch.Tensor, correspondence: torch.Tensor, depth: torch.Tensor,
                     confidence: torch.Tensor, config: SolverConfig, generator: torch.Generator | None,
                     shape_weights: torch.Tensor | None, sampling_keys: torch.Tensor | None = None) -> _GeometryStage:
    """Sampling, the geometric solve (with its robust passes) and the camera, in the solve dtype."""
    _check_maps(image, correspondence, depth, confidence)
    dtype = torch.float32 if config.precision == "float32" else torch.float64
    basis_dtype = torch.float64 if config.precision == "float64" else torch.float32
    height, width = image.shape[-2:]
    # The record_function labels let a profiler split the layer's time by stage (benchmarks/bench_reconstruct.py).
    with record_function("lsqface.sampling"):
        samples = sample_pixels(confidence.detach().amax(dim=1), min(config.sample_count, height * width), generator,
                                sampling_keys)
        correspondence_samples = gather_map(correspondence, samples)  # (B, P, 2)
        model_dtype = uv_model.shape_images.dtype
        uv = correspondence_samples.to(model_dtype)
        mask = sample_mask(uv_model, uv).to(dtype)
        weights = gather_map(confidence, samples).to(dtype) * mask[..., None]  # (B, P, 2)
        depth_samples = gather_map(depth, samples)[..., 0].to(dtype)
        pixels = samples.pixels.to(dtype)

    with record_function("lsqface.geometric_solve"):
        regularisation = GeometryRegularisation(
            inverse_camera=config.inverse_camera_weight,
            camera_centre=config.camera_centre_weight,
            camera_centre_target=None if config.camera_centre_target is None else torch.tensor(config.camera_centre_target, dtype=dtype),
            shape=config.shape_weight if shape_weights is None else shape_weights.to(dtype),
        )

        # The shape mean and basis at the samples, read once for the solve and the reprojection steps.
        shape_mean, shape_basis = sample_shape(uv_model, uv)

        def solve(rows: slice, inference: bool) -> tuple[GeometryFit, torch.Tensor]:
            mean, basis = shape_mean[rows].to(dtype), shape_basis[rows]
            if inference:
                # The rows are built once (the basis copied into them in one pass) for every robust pass.
                design = geometry_design(pixels[rows], depth_samples[rows], mean, basis.to(basis_dtype), regularisation,
                                         (height, width))

                def solve_pass(confidence: torch.Tensor) -> GeometryFit:
                    return solve_geometry_design(design, confidence)
            else:
                # One pass: cast and (B, P, 3, N) layout (``to`` keeps a view of the right dtype as it is, hence contiguous()).
                basis = basis.to(dtype=basis_dtype, memory_format=torch.contiguous_format).contiguous()

                def solve_pass(confidence: torch.Tensor) -> GeometryFit:
                    return solve_geometry(pixels[rows], depth_samples[rows], confidence, mean, basis, regularisation,
                                          (height, width))
            confidence_weights = final = weights[rows]
            geometry = solve_pass(final[..., 0])
            for _ in range(config.robust_iterations):
                # Each pass reweights the confidence weights afresh (not the previous pass's product,
                # which would shrink every weight towards the regularisation and the jitter).
                factor = robust_factor(geometry.residuals, confidence_weights[..., 0], config.robust_scale)
                final = confidence_weights * factor[..., None]
                geometry = solve_pass(final[..., 0])
            return geometry, final

        if _per_image(uv, shape_weights):
            parts = [solve(slice(index, index + 1), True) for index in range(uv.shape[0])]
            geometry = _concatenate([part[0] for part in parts], shared=("pixel_normalisation",))
            weights = torch.cat([part[1] for part in parts])
        else:
            geometry, weights = solve(slice(None), False)
        camera = decompose_camera(geometry.inverse_camera, geometry.camera_centre)

    if config.reprojection_iterations > 0:
        with record_function("lsqface.reprojection"):
            geometry, camera = _refine_pose(shape_mean, shape_basis, pixels, depth_samples, weights[..., 0], geometry,
                                            camera, config, regularisation.shape)
    return _GeometryStage(geometry, camera, uv, weights, correspondence_samples, samples)


def _refine_pose(mean: torch.Tensor, basis: torch.Tensor, pixels: torch.Tensor, depth: torch.Tensor,
                 weights: torch.Tensor, geometry: GeometryFit, camera: Camera, config: SolverConfig,
                 shape_weight: float | torch.Tensor) -> tuple[GeometryFit, Camera]:
    """The closed-form fit refined on the reprojection of its samples (:mod:`lsqface.solver.reprojection`).

    ``mean`` (B, P, 3) and ``basis`` (B, P, 3, N) are the shape's at the samples, as the solve read them.
    K and psi stay; R, t and m are refined, P and q recomposed from the refined camera. The residuals and
    row weights stay the closed-form solve's (ShapeFit.geometric_residuals).
    """
    dtype = geometry.inverse_camera.dtype
    if config.reprojection_shape_weight is not None:
        shape_weight = config.reprojection_shape_weight
    # The products with the basis in the precision's dtype (float64 for "float64", float32 for "mixed" and
    # "float32"), laid out (B, P, 3, N) contiguously once for every step.
    basis = basis.to(dtype=torch.float64 if config.precision == "float64" else torch.float32,
                     memory_format=torch.contiguous_format).contiguous()

    def refine(rows: slice) -> ReprojectionFit:
        weight = shape_weight[rows] if isinstance(shape_weight, torch.Tensor) and shape_weight.ndim == 2 else shape_weight
        return refine_reprojection(
            pixels[rows], depth[rows], weights[rows], mean[rows].to(dtype), basis[rows], camera.intrinsics[rows],
            camera.rotation[rows], camera.translation[rows], camera.depth_scale[rows],
            geometry.shape_coefficients[rows], iterations=config.reprojection_iterations, shape_weight=weight,
            depth_weight=config.reprojection_depth_weight, robust_scale=config.robust_scale,
        )

    if pixels.device.type == "cpu" and not torch.is_grad_enabled():
        # Image by image, as the closed-form solve: an image's sampled basis stays in the cache through the steps.
        refined = _concatenate([refine(slice(index, index + 1)) for index in range(pixels.shape[0])])
    else:
        refined = refine(slice(None))
    camera = Camera(camera.intrinsics, refined.rotation, refined.translation, camera.depth_scale)
    inverse_camera, camera_centre = compose_inverse_camera(camera)
    normalisation = geometry.pixel_normalisation.to(dtype)
    normalised = geometry.depth_scale[:, None, None] * inverse_camera @ torch.linalg.inv(normalisation)
    # The residuals stay the closed-form solve's: how well one face explains the network's maps, which the
    # fit status reads (lsqface.solver.plausibility); the steps trade agreement with the depth for agreement
    # with where the correspondences are seen.
    geometry = dataclasses.replace(geometry, inverse_camera=inverse_camera, camera_centre=camera_centre,
                                   shape_coefficients=refined.shape_coefficients, normalised_inverse_camera=normalised)
    return geometry, camera


def _geometric_fields(uv_model: UVMorphableModel, stage: _GeometryStage, output_dtype: torch.dtype) -> dict:
    """ShapeFit's fields from a geometric stage, cast to the output dtype."""
    geometry, camera = stage.geometry, stage.camera
    n_identity = uv_model.model.n_identity
    return dict(
        inverse_camera=geometry.inverse_camera.to(output_dtype),
        camera_centre=geometry.camera_centre.to(output_dtype),
        intrinsics=camera.intrinsics.to(output_dtype),
        rotation=camera.rotation.to(output_dtype),
        translation=camera.translation.to(output_dtype),
        depth_scale=camera.depth_scale.to(output_dtype),
        identity_coefficients=geometry.shape_coefficients[:, :n_identity].to(output_dtype),
        expression_coefficients=geometry.shape_coefficients[:, n_identity:].to(output_dtype),
        geometric_residuals=geometry.residuals.to(output_dtype),
        geometric_weights=stage.weights[..., 0].to(output_dtype),
        correspondence=stage.correspondence,
        samples=stage.samples,
    )


def fit_geometry(
    uv_model: UVMorphableModel,
    image: torch.Tensor,
    correspondence: torch.Tensor,
    depth: torch.Tensor,
    confidence: torch.Tensor,
    config: SolverConfig = SolverConfig(),
    generator: torch.Generator | None = None,
    shape_weights: torch.Tensor | None = None,
    sampling_keys: torch.Tensor | None = None,
) -> ShapeFit:
    """The least-squares layer's geometric half only: camera and shape, no lighting or albedo.

    For a caller that needs only the shape or the camera (the true-shape training term): the same
    samples, weights and solves as :func:`fit` with the same arguments and generator state, so its
    fields equal fit's, without the photometric solve's cost. Arguments, errors and differentiability
    as :func:`fit`; ``image`` is read only for its shape and dtype.
    """
    stage = _geometric_stage(uv_model, image, correspondence, depth, confidence, config, generator, shape_weights,
                             sampling_keys)
    return ShapeFit(**_geometric_fields(uv_model, stage, image.dtype))


def fit(
    uv_model: UVMorphableModel,
    image: torch.Tensor,
    correspondence: torch.Tensor,
    depth: torch.Tensor,
    confidence: torch.Tensor,
    config: SolverConfig = SolverConfig(),
    generator: torch.Generator | None = None,
    shape_weights: torch.Tensor | None = None,
    albedo_weights: torch.Tensor | None = None,
    sampling_keys: torch.Tensor | None = None,
) -> LeastSquaresFit:
    """Run the least-squares layer on a batch of network outputs.

    Args:
        uv_model: the UV-3DMM (on the maps' device).
        image: (B, 3, H, W) RGB in [0, 1] (not yet pre-processed).
        correspondence: (B, 2, H, W) UV coordinates (u, v) in [0, 1].
        depth: (B, 1, H, W) depth, positive in front of the camera.
        confidence: (B, 2, H, W) geometric (channel 0) and photometric (channel 1) confidence >= 0.
        config: sample count, eps, regularisation weights, precision.
        generator: optional torch.Generator for reproducible sampling.
        shape_weights: optional (N,) or (B, N) per-coefficient alpha for m
            replacing ``config.shape_weight`` (the adaptive weights of seed G).
        albedo_weights: optional (N_alb,) or (B, N_alb) xi replacing ``config.albedo_weight``.
        sampling_keys: optional (H, W) fixed sampling keys for every image instead of the generator's
            random ones (:func:`lsqface.solver.sampling.quarter_turn_keys`, what inference uses).

    Returns:
        LeastSquaresFit, differentiable in image, correspondence, depth, confidence and the weights.

    Raises:
        SolverError: a system is not positive definite even with jitter, or the
            fitted inverse camera is singular (e.g. every confidence is zero).
    """
    stage = _geometric_stage(uv_model, image, correspondence, depth, confidence, config, generator, shape_weights,
                             sampling_keys)
    dtype, uv, weights = stage.weights.dtype, stage.uv, stage.weights
    with record_function("lsqface.photometric_solve"):
        normals = sample_normal(uv_model, uv).to(dtype) @ stage.camera.rotation.transpose(1, 2)
        colours = gather_map(softplus_preprocess(image, config.softplus_eps), stage.samples).to(dtype)
        regularisation = PhotometryRegularisation(
            lighting=config.lighting_weight,
            albedo=config.albedo_weight if albedo_weights is None else albedo_weights.to(dtype),
        )

        def solve(rows: slice) -> PhotometryFit:
            albedo_mean, albedo_basis = sample_albedo(uv_model, uv[rows])
            return solve_photometry(
                colours[rows],
                normals[rows],
                weights[rows, :, 1],
                albedo_mean.to(dtype),
                albedo_basis.to(dtype=torch.float64 if config.precision == "float64" else torch.float32,
                                memory_format=torch.contiguous_format).contiguous(),
                regularisation,
            )

        if _per_image(uv, shape_weights, albedo_weights):
            parts = [solve(slice(index, index + 1)) for index in range(uv.shape[0])]
            photometry = _concatenate(parts)
        else:
            photometry = solve(slice(None))

    output_dtype = image.dtype
    return LeastSquaresFit(
        **_geometric_fields(uv_model, stage, output_dtype),
        inverse_lighting=photometry.inverse_lighting.to(output_dtype),
        albedo_coefficients=photometry.albedo_coefficients.to(output_dtype),
        photometric_residuals=photometry.residuals.to(output_dtype),
        photometric_weights=weights[..., 1].to(output_dtype),
        normals=normals.to(output_dtype),
    )

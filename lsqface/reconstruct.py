"""The one path from an image to a Reconstruction.

image (path, array or PIL image) -> framed to the network's square input,
keeping the transform -> U-Net -> correspondence, depth and confidence maps
-> the least-squares layer (sampling, geometric then photometric solve) ->
the fitted mesh, camera, albedo and lighting -> everything mapped back to the
original image's pixel frame.

The path has a seam after the network, :func:`reconstruct_from_maps`: the
network path and the oracle (true maps from :mod:`lsqface.data.synthetic`)
both go through it, so the oracle tests check the very code users run.

Conventions: pixel centres at (j + 0.5, i + 0.5) (lsqface.render.rasterize);
camera frame and head pose as in lsqface.solver.pose; millimetres.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lsqface.errors import CheckpointError, ConfigError, ImageError, SolverError
from lsqface.morphable.model import MorphableModel, basis_products
from lsqface.morphable.uv_model import UVMorphableModel
from lsqface.nets.unet import InferenceNetwork, NetworkMaps, UNet, network_version
from lsqface.render.interpolate import vertex_normals
from lsqface.solver.fit import LeastSquaresFit, SolverConfig, fit
from lsqface.solver.plausibility import FitMeasures, StatusThresholds, fit_measures, fit_status
from lsqface.solver.photometry import reconstructed_colour
from lsqface.solver.pose import pose_from_rotation
from lsqface.solver.sampling import quarter_turn_keys
from lsqface.solver.preprocess import inverse_softplus_preprocess, softplus_preprocess

#: Where the default trained network ships inside the package.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "default.pt"

#: The ReconstructConfig settings a checkpoint may carry (``lsqface export --ensemble/--refine``).
RECONSTRUCT_CHECKPOINT_KEYS = ("rotation_ensemble", "refine_passes", "refine_fraction")


#: The inference presets (``lsqface reconstruct/video/evaluate --preset``), see :func:`preset_config`.
PRESETS = ("accurate", "fast", "reference")


@dataclass(frozen=True)
class ReconstructConfig:
    """Settings of the reconstruct path.

    Attributes:
        input_size: side of the network's square input, pixels (divisible by 16).
        solver: the least-squares layer's settings.
        sampling_seed: seed of the fixed table of pixel-sampling keys that every photo's fit reads
            (:func:`lsqface.solver.sampling.quarter_turn_keys`): a photo gives the same result
            wherever it is in a batch, and turned by quarter turns, the same face turned.
        face_margin: with a face box (--bbox or a detector), the square crop is the box's
            larger side times this factor, centred on the box.
        rotation_ensemble: run the network on the image turned by this many quarter turns
            (1: once, 2: 0 and 180 degrees, 4: every quarter turn) and average the maps
            (:func:`rotation_ensemble_maps`; our addition, not the paper's).
        refine_passes: after the fit, frame the photo again on the fitted face (centred, the
            mean face's width at ``refine_fraction`` of the square) and reconstruct again, this many
            times (:func:`refine_boxes`; our addition: a small or off-centre face gets the pixels
            the network was trained to see). A face whose fit gives no usable frame keeps its framing.
        refine_fraction: the face's width as a fraction of the re-framed square's side.
        status: the bounds of :func:`lsqface.solver.plausibility.fit_status` that decide each
            reconstruction's ``status`` (``ok``, ``low_confidence`` or ``implausible``).
    """

    input_size: int = 128
    solver: SolverConfig = field(default_factory=SolverConfig)
    sampling_seed: int = 0
    face_margin: float = 1.6
    rotation_ensemble: int = 1
    refine_passes: int = 0
    refine_fraction: float = 0.6
    status: StatusThresholds = field(default_factory=StatusThresholds)

    def __post_init__(self) -> None:
        if self.rotation_ensemble not in (1, 2, 4):
            raise ConfigError(f"rotation_ensemble must be 1, 2 or 4 quarter-turn copies, got {self.rotation_ensemble}.")
        if self.refine_passes < 0:
            raise ConfigError(f"refine_passes must be 0 or more, got {self.refine_passes}.")
        if not 0.0 < self.refine_fraction <= 1.0:
            raise ConfigError(f"refine_fraction must lie in (0, 1], got {self.refine_fraction}.")


def preset_config(config: "ReconstructConfig", preset: str) -> "ReconstructConfig":
    """A checkpoint's reconstruct settings changed for one of the inference :data:`PRESETS`.

    - ``accurate`` (the default): every pass the checkpoint asks for (turned copies, robust passes,
      re-framing), its float64 solves made "mixed" (:class:`lsqface.solver.fit.SolverConfig`), which give
      the same landmarks within 1e-3 pixel at a fraction of the cost.
    - ``fast``: a single pass, the paper's: one network call, one geometric and one photometric solve
      (no turned copies, no robust passes, no reprojection steps, no re-framing), "mixed" solves.
    - ``reference``: the stored settings unchanged, the slow path the others are tested against.

    Raises:
        ConfigError: an unknown preset.
    """
    if preset not in PRESETS:
        raise ConfigError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    if preset == "reference":
        return config
    solver = config.solver
    if solver.precision == "float64":
        solver = dataclasses.replace(solver, precision="mixed")
    if preset == "fast":
        solver = dataclasses.replace(solver, robust_iterations=0, reprojection_iterations=0)
        return dataclasses.replace(config, solver=solver, rotation_ensemble=1, refine_passes=0)
    return dataclasses.replace(config, solver=solver)


def rotation_ensemble_maps(network: torch.nn.Module, inputs: torch.Tensor, copies: int) -> NetworkMaps:
    """The network's maps averaged over copies of the input turned by multiples of 90 degrees.

    A quarter turn of the pixel grid is exact (no resampling), and lsqface's network is trained
    on faces at every in-plane rotation, so each turned copy is an independent estimate of the same
    maps; turned back, they are averaged. Correspondence and log depth are averaged with the
    geometric confidence as weights (a copy that is unsure of a pixel counts less there), the
    confidences and logits plainly.

    Args:
        network: maps (N, 3, S, S) network inputs to :class:`NetworkMaps` (square S x S inputs).
        inputs: (B, 3, S, S) pre-processed network inputs.
        copies: 1, 2 (0 and 180 degrees) or 4 (every quarter turn); one forward pass of B x copies.

    Returns:
        NetworkMaps of (B, ., S, S) tensors in the inputs' frame.
    """
    if copies == 1:
        return network(inputs)
    turns = [0, 2] if copies == 2 else [0, 1, 2, 3]
    batch = inputs.shape[0]
    maps = network(torch.cat([torch.rot90(inputs, turn, dims=(2, 3)) for turn in turns]))

    def back(tensor: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.rot90(part, -turn, dims=(2, 3)) for turn, part in zip(turns, tensor.split(batch))])

    weight = back(maps.confidence)[:, :, :1].clamp_min(1e-6)
    total = weight.sum(0)
    correspondence = (back(maps.correspondence) * weight).sum(0) / total
    depth = ((back(maps.depth).log() * weight).sum(0) / total).exp()
    return NetworkMaps(correspondence=correspondence, depth=depth, confidence=back(maps.confidence).mean(0),
                       logits=back(maps.logits).mean(0))


@dataclass
class FittedMesh:
    """The fitted 3DMM as a mesh, B faces of V vertices, differentiable in the fit.

    Attributes:
        vertices: (B, V, 3) camera-space positions, millimetres.
        image_vertices: (B, V, 3) projected (x, y) in the fit's pixel frame, and camera-space z.
        normals: (B, V, 3) unit vertex normals in camera space.
        albedo: (B, V, 3) fitted albedo (c + D h), the UV-3DMM's albedo units.
        colour: (B, V, 3) reconstructed colour albedo / inverse shading, in [0, 1] display units.
    """

    vertices: torch.Tensor
    image_vertices: torch.Tensor
    normals: torch.Tensor
    albedo: torch.Tensor
    colour: torch.Tensor


_MODEL_TENSORS: dict = {}


def model_tensors(model: MorphableModel, dtype: torch.dtype, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The per-vertex model as torch tensors (cached per model, dtype and device).

    Returns a dict with ``shape_mean`` (V, 3), ``shape_basis`` (V, 3, N), ``albedo_mean`` (V, 3),
    ``albedo_basis`` (V, 3, N_alb) and ``triangles`` (F, 3) int64.
    """
    key = (id(model), dtype, str(device))
    cached = _MODEL_TENSORS.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    tensors = {
        "shape_mean": torch.as_tensor(model.shape_mean, dtype=dtype, device=device),
        "shape_basis": torch.as_tensor(model.shape_basis, dtype=dtype, device=device),
        "albedo_mean": torch.as_tensor(model.albedo_mean, dtype=dtype, device=device),
        "albedo_basis": torch.as_tensor(model.albedo_basis, dtype=dtype, device=device),
        "triangles": torch.as_tensor(model.triangles, dtype=torch.int64, device=device),
    }
    if len(_MODEL_TENSORS) > 8:
        _MODEL_TENSORS.clear()
    _MODEL_TENSORS[key] = (model, tensors)
    return tensors


def fitted_mesh(uv_model: UVMorphableModel, result: LeastSquaresFit, softplus_eps: float = 4.0,
                basis_dtype: torch.dtype | None = None) -> FittedMesh:
    """The mesh of a least-squares fit: shape from m, posed by R, t; colour from h and l.

    Differentiable in every tensor of ``result`` (training renders it). ``basis_dtype``: the dtype of the
    products with the per-vertex shape and albedo bases (None: the fit's). Inference with "mixed" solves
    forms them in float32 (the bases read at half the bytes: 2 ms less for one face) and adds them to the
    means in the fit's dtype: within 1e-4 mm of float64 (tests/test_reconstruct.py).
    """
    dtype, device = result.rotation.dtype, result.rotation.device
    tensors = model_tensors(uv_model.model, dtype, device)
    bases = tensors if basis_dtype in (None, dtype) else model_tensors(uv_model.model, basis_dtype, device)

    def offsets(name: str, coefficients: torch.Tensor) -> torch.Tensor:
        return basis_products(bases[name], coefficients.to(bases[name].dtype)).to(dtype)

    coefficients = result.shape_coefficients
    model_points = tensors["shape_mean"] + offsets("shape_basis", coefficients)
    vertices = model_points @ result.rotation.transpose(1, 2) + result.translation[:, None, :]
    projected = vertices @ result.intrinsics.transpose(1, 2)
    image_vertices = torch.cat([projected[..., :2] / projected[..., 2:3], vertices[..., 2:3]], dim=-1)
    normals = vertex_normals(vertices, tensors["triangles"])
    albedo = tensors["albedo_mean"] + offsets("albedo_basis", result.albedo_coefficients)
    # The photometric solve works on softplus-pre-processed colours; map back for display.
    preprocessed = reconstructed_colour(albedo, normals, result.inverse_lighting)
    colour = inverse_softplus_preprocess(preprocessed.clamp(1e-4, 1.0 + 1e-4), softplus_eps).clamp(0.0, 1.0)
    return FittedMesh(vertices, image_vertices, normals, albedo, colour)


@dataclass
class Reconstruction:
    """A batch of B reconstructed faces, in each original image's pixel frame.

    Attributes:
        vertices: (B, V, 3) camera-space vertices, millimetres (camera of the original image).
        triangles: (F, 3) int64.
        vertex_uv: (V, 2) the 3DMM's flattened (u, v) of each vertex (texture coordinates).
        normals: (B, V, 3) unit vertex normals, camera space.
        albedo: (B, V, 3) per-vertex fitted albedo; colour: (B, V, 3) reconstructed colour in [0, 1].
        intrinsics: (B, 3, 3) K in original-image pixels; rotation: (B, 3, 3) R; translation: (B, 3) t, mm.
        pose: (B, 3) head pose (yaw, pitch, roll) in degrees (lsqface.solver.pose).
        identity: (B, N_id), expression: (B, N_exp), albedo_coefficients: (B, N_alb).
        inverse_lighting: (B, 3, 9) inverse SH lighting per colour channel (camera frame).
        landmarks_68: (B, 68, 2) and landmarks_5: (B, 5, 2) in original-image pixels.
        network_image: (B, 3, S, S) the framed input the network saw.
        correspondence: (B, 2, S, S), depth: (B, 1, S, S), confidence: (B, 2, S, S) the network's maps.
        to_network: (B, 3, 3) original-image pixels -> network-input pixels (homogeneous).
        image_sizes: (height, width) of each original image.
        fit: the least-squares layer's output, in the network's pixel frame.
        measures: how much each fit looks like a face (:class:`lsqface.solver.plausibility.FitMeasures`).
        status: per face ``ok``, ``low_confidence`` (the network sees little face) or ``implausible``
            (the geometry is not a face); status_reason: per face, why it is not ``ok`` ("" if it is);
            face_like: per face, whether every geometric check passed (the mesh is worth drawing).
    """

    vertices: torch.Tensor
    triangles: torch.Tensor
    vertex_uv: np.ndarray
    normals: torch.Tensor
    albedo: torch.Tensor
    colour: torch.Tensor
    intrinsics: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    pose: torch.Tensor
    identity: torch.Tensor
    expression: torch.Tensor
    albedo_coefficients: torch.Tensor
    inverse_lighting: torch.Tensor
    landmarks_68: torch.Tensor
    landmarks_5: torch.Tensor
    network_image: torch.Tensor
    correspondence: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    to_network: torch.Tensor
    image_sizes: list[tuple[int, int]]
    fit: LeastSquaresFit
    measures: FitMeasures | None = None
    status: list[str] = field(default_factory=list)
    status_reason: list[str] = field(default_factory=list)
    face_like: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.vertices.shape[0])

    def confident_fraction(self) -> torch.Tensor:
        """(B,) the share of the network's input pixels whose geometric confidence is over one half.

        The shipped network gives 0.33-0.42 on synthetic faces; under
        ``StatusThresholds.min_confident_fraction`` it found little or no face, and the fit on those
        few pixels is rarely a face (the status is then ``low_confidence``).
        """
        return (self.confidence[:, 0] > 0.5).flatten(1).double().mean(dim=1)

    def image_vertices(self) -> torch.Tensor:
        """(B, V, 3) vertices projected into the original images: (x, y) pixels and camera z in mm."""
        projected = self.vertices @ self.intrinsics.transpose(1, 2)
        return torch.cat([projected[..., :2] / projected[..., 2:3], self.vertices[..., 2:3]], dim=-1)


def assess(reconstruction: Reconstruction, uv_model: UVMorphableModel,
           thresholds: StatusThresholds = StatusThresholds()) -> Reconstruction:
    """The reconstruction with its plausibility measures, status and status reason (re)computed."""
    measures = fit_measures(uv_model, reconstruction.fit, reconstruction.confidence, reconstruction.vertices)
    verdicts = fit_status(measures, thresholds)
    return dataclasses.replace(reconstruction, measures=measures, status=[verdict.status for verdict in verdicts],
                               status_reason=[verdict.reason for verdict in verdicts],
                               face_like=[verdict.face_like for verdict in verdicts])


def reconstruct_from_maps(
    uv_model: UVMorphableModel,
    network_image: torch.Tensor,
    correspondence: torch.Tensor,
    depth: torch.Tensor,
    confidence: torch.Tensor,
    *,
    to_network: torch.Tensor | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    config: ReconstructConfig = ReconstructConfig(),
) -> Reconstruction:
    """Fit the 3DMM to per-pixel maps and express the result in the original images' frames.

    Args:
        uv_model: the UV-3DMM the maps point into.
        network_image: (B, 3, S, S) the framed images in [0, 1].
        correspondence: (B, 2, S, S) (u, v); depth: (B, 1, S, S) positive;
        confidence: (B, 2, S, S) geometric and photometric confidence (a (B, 1, S, S)
            map is used for both).
        to_network: (B, 3, 3) original-image pixels -> network pixels; None for identity.
        image_sizes: original (height, width) per image; None for the network size.
        config: solver settings and the sampling seed.
    """
    batch, _, height, width = network_image.shape
    if confidence.shape[1] == 1:
        confidence = confidence.expand(-1, 2, -1, -1)
    keys = quarter_turn_keys(height, width, config.sampling_seed)
    result = fit(uv_model, network_image, correspondence, depth, confidence, config.solver, sampling_keys=keys)
    dtype = torch.float64
    if to_network is None:
        to_network = torch.eye(3, dtype=dtype).expand(batch, 3, 3)
    to_network = to_network.to(dtype=dtype, device=network_image.device)
    if image_sizes is None:
        image_sizes = [(height, width)] * batch
    mesh = fitted_mesh(uv_model, dataclasses.replace(result, **{
        name: getattr(result, name).to(dtype)
        for name in ("rotation", "translation", "intrinsics", "identity_coefficients", "expression_coefficients",
                     "albedo_coefficients", "inverse_lighting")
    }), config.solver.softplus_eps, torch.float64 if config.solver.precision == "float64" else torch.float32)
    # x_network = A x_original and x_network ~ K (R X + t), so x_original ~ A^-1 K (R X + t).
    intrinsics = torch.linalg.solve(to_network, result.intrinsics.to(dtype))
    intrinsics = intrinsics / intrinsics[:, 2:3, 2:3]
    model = uv_model.model
    sixty_eight, five = model.landmark_points(mesh.vertices.detach().cpu().numpy())

    def project(points: np.ndarray) -> torch.Tensor:
        camera = torch.as_tensor(points, dtype=dtype) @ intrinsics.cpu().transpose(1, 2)
        return camera[..., :2] / camera[..., 2:3]

    reconstruction = Reconstruction(
        vertices=mesh.vertices,
        triangles=model_tensors(model, dtype, "cpu")["triangles"],
        vertex_uv=uv_model.vertex_uv,
        normals=mesh.normals,
        albedo=mesh.albedo,
        colour=mesh.colour,
        intrinsics=intrinsics,
        rotation=result.rotation.to(dtype),
        translation=result.translation.to(dtype),
        pose=torch.rad2deg(pose_from_rotation(result.rotation.to(dtype))),
        identity=result.identity_coefficients,
        expression=result.expression_coefficients,
        albedo_coefficients=result.albedo_coefficients,
        inverse_lighting=result.inverse_lighting,
        landmarks_68=project(sixty_eight),
        landmarks_5=project(five),
        network_image=network_image,
        correspondence=correspondence,
        depth=depth,
        confidence=confidence,
        to_network=to_network,
        image_sizes=list(image_sizes),
        fit=result,
    )
    return assess(reconstruction, uv_model, config.status)


def _crop_corner(centre: float, side: int, extent: int) -> int:
    """The pixel corner nearest ``centre - side / 2`` on an axis of ``extent`` pixels; an exact half goes
    towards the photo's middle. Every rule here treats both ends of the axis alike (a turned photo's
    crop is the turned crop); a plain round-half-up would not."""
    corner = centre - 0.5 * side
    low = int(np.floor(corner))
    if corner - low != 0.5:
        return int(np.floor(corner + 0.5))
    return low + 1 if centre < 0.5 * extent else low


def frame_image(image: np.ndarray, size: int, box: Sequence[float] | None = None, margin: float = 1.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame an image for the network: the whole image letterboxed, or a square around a face box.

    Only the part of the photo inside the frame is read, a band of rows at a time, and never converted to
    float whole (:func:`lsqface.data.images.fit_region_to_square`); a part over ``FULL_FLOAT_PIXELS`` (the
    whole of a photo over 16 megapixels, say) is first box-averaged by an integer factor k
    (:func:`lsqface.data.images.photo_region`), and the matrix says so: the frame's point (x, y) is
    (x / k, y / k) before the resize to ``size``.

    Args:
        image: (H, W, 3) float32 in [0, 1], or uint8 (0..255, converted part by part).
        size: the network's input side, pixels.
        box: optional face box (x, y, width, height) in original pixels.
        margin: the square crop's side is ``margin`` times the box's larger side.

    Returns:
        (3, size, size) framed image and the (3, 3) matrix mapping original pixels to framed pixels.
    """
    from lsqface.data.images import fit_region_to_square, fit_to_square, photo_region, reduction_factor

    height, width = image.shape[:2]
    if box is not None:
        x, y, box_width, box_height = (float(value) for value in box)
        if box_width <= 0 or box_height <= 0:
            raise ImageError(f"The face box {tuple(box)} has no area; give x,y,width,height with positive width and height.")
        side = margin * max(box_width, box_height)
        # Crop the square (padding with black outside the image) at integer pixel bounds: a whole number of
        # pixels, its corner at the nearest pixel corner, so that the box of a photo turned by a quarter
        # turn (or a half turn) crops the same pixels, turned (_crop_corner).
        centre_x, centre_y = x + 0.5 * box_width, y + 0.5 * box_height
        side_px = max(1, int(np.ceil(side)))
        if (2.0 * centre_x == width and (width - side_px) % 2) or (2.0 * centre_y == height and (height - side_px) % 2):
            side_px += 1  # a crop centred on the photo's middle line: only this side can lie on it exactly
        left_px, top_px = _crop_corner(centre_x, side_px, width), _crop_corner(centre_y, side_px, height)
        frame_height = frame_width = side_px
    else:
        left_px = top_px = 0
        frame_height, frame_width = height, width
    src_top, src_left = max(0, top_px), max(0, left_px)
    src_bottom, src_right = min(height, top_px + frame_height), min(width, left_px + frame_width)
    if src_bottom <= src_top or src_right <= src_left:
        raise ImageError(f"The face box {tuple(box)} lies outside the {width}x{height} image.")
    factor = reduction_factor((src_bottom - src_top) * (src_right - src_left))
    if factor > 1:
        # Blocks of factor x factor pixels counted from the frame's corner: the part inside the photo
        # keeps its place on the reduced frame's pixel grid (a strip under factor pixels at the
        # photo's top or left edge is left out).
        src_top = top_px + -(-(src_top - top_px) // factor) * factor
        src_left = left_px + -(-(src_left - left_px) // factor) * factor
    to_framed = torch.tensor([[1.0 / factor, 0.0, (0.0 - left_px) / factor],
                              [0.0, 1.0 / factor, (0.0 - top_px) / factor],
                              [0.0, 0.0, 1.0]], dtype=torch.float64)
    if factor == 1:
        # The part inside the frame is resized a band of rows at a time, never converted to float whole.
        framed, matrix = fit_region_to_square(image, src_top, src_left, src_bottom, src_right,
                                              (frame_height, frame_width), (src_top - top_px, src_left - left_px), size)
    else:
        # Only the part of the photo inside the frame is converted (not the whole photo, then cropped).
        inside = photo_region(image, src_top, src_left, src_bottom, src_right, factor)
        tensor = inside.new_zeros(3, frame_height // factor, frame_width // factor)
        row, column = (src_top - top_px) // factor, (src_left - left_px) // factor
        rows, columns = min(inside.shape[1], tensor.shape[1] - row), min(inside.shape[2], tensor.shape[2] - column)
        tensor[:, row:row + rows, column:column + columns] = inside[:, :rows, :columns]
        framed, matrix = fit_to_square(tensor, size, mode="pad")
    to_network = torch.cat([matrix, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)]) @ to_framed
    return framed, to_network


def refine_boxes(result: Reconstruction, model: MorphableModel, fraction: float,
                 margin: float) -> list[tuple[float, float, float, float] | None]:
    """Face boxes (x, y, width, height) that frame each fitted face as the training faces were framed.

    The synthetic generator puts the mean face's width at a fraction of the picture with the face's
    centroid near the centre; this box does the same for the fitted face: the square of side
    ``f W / ((z - d) fraction)`` centred on the projected centroid, where f is the fitted focal length
    in original pixels, W and d the mean face's width and front depth
    (:meth:`MorphableModel.framing`) and z the centroid's depth. The box is returned shrunk by
    ``margin`` so that :func:`frame_image`, which enlarges it by the same factor, crops exactly that
    square. None where the fit gives no usable frame (not finite, behind the camera, smaller than a
    pixel, or larger than four times the photo).
    """
    _, face_width, front_depth = model.framing()
    centres = result.vertices.detach().cpu().to(torch.float64).mean(dim=1)
    intrinsics = result.intrinsics.detach().cpu().to(torch.float64)
    boxes: list[tuple[float, float, float, float] | None] = []
    for k, (height, width) in enumerate(result.image_sizes):
        centre, matrix = centres[k], intrinsics[k]
        distance = float(centre[2]) - front_depth
        projected = matrix @ centre
        focal = float(torch.linalg.det(matrix[:2, :2]).abs().sqrt())
        if not (torch.isfinite(projected).all() and distance > 0 and float(projected[2]) > 0 and focal > 0):
            boxes.append(None)
            continue
        side = focal * face_width / (distance * fraction)
        x, y = float(projected[0] / projected[2]), float(projected[1] / projected[2])
        inside = -0.5 * side <= x <= width + 0.5 * side and -0.5 * side <= y <= height + 0.5 * side
        if not (1.0 <= side <= 4.0 * max(height, width)) or not inside:
            boxes.append(None)
            continue
        box_side = side / margin
        boxes.append((x - 0.5 * box_side, y - 0.5 * box_side, box_side, box_side))
    return boxes


#: How far the frame a refined fit asks for may lie from the frame it was fitted in and still count
#: as the same: |log| of the side ratio, and the centre distance over the side. On 64 synthetic faces
#: of the default model the medians are 0.011 and 0.006, and refits that went wrong exceed 0.4.
FRAME_SCALE_TOLERANCE = 0.2
FRAME_SHIFT_TOLERANCE = 0.1


def frames_agree(box: tuple[float, float, float, float] | None, reference: tuple[float, float, float, float]) -> bool:
    """Whether square ``box`` (x, y, side, side), or None, frames the face as ``reference`` does."""
    if box is None:
        return False
    scale = abs(float(np.log(box[2] / reference[2])))
    shift = float(np.hypot(box[0] + 0.5 * box[2] - reference[0] - 0.5 * reference[2],
                           box[1] + 0.5 * box[3] - reference[1] - 0.5 * reference[3])) / reference[2]
    return scale <= FRAME_SCALE_TOLERANCE and shift <= FRAME_SHIFT_TOLERANCE


def merge_rows(first, second, take_second: Sequence[bool]):
    """A batch of B rows taken from two batches of the same kind: row k of ``second`` where ``take_second[k]``.

    Works on a :class:`Reconstruction` and on any dataclass of B-row tensors, arrays and lists, nested
    dataclasses included (the fit, its pixel samples, the plausibility measures); a field that is not
    B rows long (triangles, texture coordinates, sizes) is taken from ``first``.
    """
    batch = len(take_second)
    take = torch.tensor([bool(value) for value in take_second])

    def pick(a, b):
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.ndim == 0 or a.shape[0] != batch or a.shape != b.shape:
                return a
            return torch.where(take.to(a.device).reshape(-1, *[1] * (a.ndim - 1)), b, a)
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            if a.ndim == 0 or a.shape[0] != batch or a.shape != b.shape:
                return a
            return np.where(take.numpy().reshape(-1, *[1] * (a.ndim - 1)), b, a)
        if isinstance(a, list) and isinstance(b, list) and len(a) == batch == len(b):
            return [y if chosen else x for x, y, chosen in zip(a, b, take_second)]
        if dataclasses.is_dataclass(a) and not isinstance(a, type) and type(b) is type(a):
            return dataclasses.replace(a, **{item.name: pick(getattr(a, item.name), getattr(b, item.name))
                                             for item in dataclasses.fields(a) if item.init})
        return a

    return pick(first, second)


def network_input(image: torch.Tensor, softplus_eps: float = 4.0) -> torch.Tensor:
    """What the U-Net sees: the softplus pre-processed image (seed E), (B, 3, S, S).

    Training and inference both call this, so the network always sees the same input.
    """
    return softplus_preprocess(image, softplus_eps)


def default_checkpoint() -> Path:
    """The trained network that ships with lsqface, or a CheckpointError saying it is missing."""
    if not DEFAULT_CHECKPOINT.is_file():
        raise CheckpointError(
            f"The default network {DEFAULT_CHECKPOINT} is missing from this installation; reinstall lsqface "
            "or pass --checkpoint PATH with a checkpoint written by 'lsqface train'."
        )
    return DEFAULT_CHECKPOINT


class Reconstructor:
    """A trained network and its UV-3DMM: images in, Reconstructions out.

    Args:
        network: the U-Net (put in eval mode here).
        uv_model: the UV-3DMM it was trained with.
        config: input size, solver settings and sampling seed.
        device: where the network and the solve run.
    """

    def __init__(self, network: UNet, uv_model: UVMorphableModel, config: ReconstructConfig = ReconstructConfig(),
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.uv_model = uv_model.to(self.device) if self.device.type != "cpu" else uv_model
        self.config = config

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, uv_model: UVMorphableModel | None = None,
                        device: str | torch.device = "cpu", config: ReconstructConfig | None = None,
                        preset: str = "accurate") -> "Reconstructor":
        """Load a checkpoint (default: the one that ships with lsqface) and the UV-3DMM it needs.

        Without ``config``, the checkpoint's settings changed by ``preset`` (:func:`preset_config`).
        """
        from lsqface.config import from_dict
        from lsqface.nets.checkpoint import check_face_model, load_checkpoint, network_from_checkpoint

        path = default_checkpoint() if path is None else Path(path)
        payload = load_checkpoint(path)
        network = network_from_checkpoint(payload, path)
        if uv_model is None:
            from lsqface.morphable.cache import load_uv_model

            uv_model = load_uv_model()
        check_face_model(payload, uv_model, path)
        if config is None:
            solver = from_dict(SolverConfig, payload.get("solver_config", {}))
            settings = {key: value for key, value in (payload.get("reconstruct_config") or {}).items()
                        if key in RECONSTRUCT_CHECKPOINT_KEYS}
            config = ReconstructConfig(input_size=int(payload["input_size"]), solver=solver, **settings)
            config = preset_config(config, preset)
        return cls(network, uv_model, config, device)

    def prepare(self, images: Sequence, boxes: Sequence[Sequence[float] | None] | None = None, *, read: bool = True):
        """Read and frame images: ((B, 3, S, S) tensor, (B, 3, 3) to-network matrices, sizes).

        ``read=False``: the images are already what ``photo_array`` gives ((H, W, 3) float32 in [0, 1], or
        uint8), as in a call's later passes, which then skip reading (a copy and a clip of every photo) again.
        """
        from lsqface.data.images import photo_array

        framed, matrices, sizes = [], [], []
        boxes = boxes if boxes is not None else [None] * len(images)
        for image, box in zip(images, boxes):
            array = photo_array(image) if read else image
            sizes.append(tuple(array.shape[:2]))
            tensor, matrix = frame_image(array, self.config.input_size, box, self.config.face_margin)
            framed.append(tensor)
            matrices.append(matrix)
        return torch.stack(framed), torch.stack(matrices), sizes

    @torch.no_grad()
    def predict_maps(self, network_image: torch.Tensor) -> NetworkMaps:
        """The network's maps for framed images (B, 3, S, S) in [0, 1].

        Run by the network's :class:`lsqface.nets.unet.InferenceNetwork` (batch norms folded, channels-last),
        made again whenever the network's weights change; every turned copy goes through it in one call
        (in chunks of ``CHUNK_PIXELS`` on the CPU).
        """
        inputs = network_input(network_image.to(self.device), self.config.solver.softplus_eps)
        return rotation_ensemble_maps(self.inference_network(), inputs, self.config.rotation_ensemble)

    def inference_network(self) -> torch.nn.Module:
        """The network's frozen inference copy (the network itself while it is in training mode)."""
        if self.network.training:
            return self.network
        key = network_version(self.network)
        cached = getattr(self, "_inference", None)
        if cached is None or cached[0] != key:
            cached = self._inference = (key, InferenceNetwork(self.network))
        return cached[1]

    def __call__(self, images: Sequence, boxes: Sequence[Sequence[float] | None] | None = None) -> Reconstruction:
        """Reconstruct a batch of images (paths, (H, W, 3) arrays or PIL images).

        One forward pass, then ``config.refine_passes`` more on the photos framed by the fit. A uint8
        (H, W, 3) array is kept as it is and only the parts the network sees are converted to float
        (:func:`lsqface.data.images.photo_array`): the same results as its float copy, without the copy.
        """
        from lsqface.data.images import photo_array

        arrays = [photo_array(image) for image in images]
        boxes = list(boxes) if boxes is not None else [None] * len(arrays)
        result = self._reconstruct(arrays, boxes)
        for _ in range(self.config.refine_passes):
            refined = self._refine_boxes(result)
            if all(box is None for box in refined):
                break
            trial_boxes = [new if new is not None else old for new, old in zip(refined, boxes)]
            try:
                trial = self._reconstruct(arrays, trial_boxes)
            except SolverError:
                break  # a photo whose new frame cannot be solved: the batch keeps the frames that could
            # A good fit of a well-framed face asks for the frame it was given; one that asks for a
            # very different frame (or none) went wrong in the new frame, so that face keeps its old one.
            settled = [new is None or frames_agree(check, new)
                       for new, check in zip(refined, self._refine_boxes(trial))]
            if all(settled):
                result, boxes = trial, trial_boxes
                continue
            # The faces that stay get their rows of the fit in their old frame, which is what fitting the
            # batch again in the mixed frames would give them (each row's network input, pixel sample and
            # solve are its own): one pass fewer (tests/test_reconstruct.py checks the equality).
            boxes = [new if ok else old for new, old, ok in zip(trial_boxes, boxes, settled)]
            result = merge_rows(result, trial, settled)
        return result

    def _refine_boxes(self, result: Reconstruction) -> list[tuple[float, float, float, float] | None]:
        return refine_boxes(result, self.uv_model.model, self.config.refine_fraction, self.config.face_margin)

    def _reconstruct(self, arrays: list[np.ndarray], boxes: list) -> Reconstruction:
        network_image, to_network, sizes = self.prepare(arrays, boxes, read=False)
        maps = self.predict_maps(network_image)
        with torch.no_grad():
            return reconstruct_from_maps(
                self.uv_model, network_image.to(self.device), maps.correspondence, maps.depth, maps.confidence,
                to_network=to_network, image_sizes=sizes, config=self.config,
            )

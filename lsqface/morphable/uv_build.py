"""Rasterise a morphable model into UV images over its Tutte flattening (seed A).

Each UV pixel centre is located in one triangle of the filled, flattened mesh
(face triangles and the holes' fan triangles) and gets the barycentric
interpolation of the per-vertex values there; an auxiliary vertex's value is
the mean over its ring. Because every attribute is a linear function of the
per-vertex values, the whole rasterisation is one sparse matrix
``(S * S, V)`` applied to every attribute at once.

The outer boundary is pinned to the square, so the filled mesh covers every
pixel; pixels that a numerical tolerance still misses copy their nearest
covered pixel (so bilinear sampling at the border never mixes in zeros) and
keep mask 0.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.sparse
import torch

from lsqface.morphable.flatten import Flattening, flatten
from lsqface.morphable.model import MorphableModel
from lsqface.morphable.uv_model import UVMorphableModel

# A pixel centre counts as inside a triangle when every barycentric coordinate is
# above -_INSIDE_TOLERANCE; this closes the cracks rounding opens along shared edges.
_INSIDE_TOLERANCE = 1e-9
# Number of channels interpolated at once, to bound the float64 temporary memory.
_CHANNEL_CHUNK = 96


def locate_pixels(uv: np.ndarray, triangles: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each UV pixel centre, and its barycentric coordinates there.

    Pixel (row i, column j) has its centre at (u, v) = (j, i) / (size - 1)
    (the ``align_corners=True`` convention of ``uv_model``).

    Args:
        uv: (V', 2) vertex coordinates in [0, 1]^2.
        triangles: (F', 3) vertex indices.
        size: S, the UV image size in pixels.

    Returns:
        triangle_index: (S, S) int64, the covering triangle or -1 where none does.
        barycentric: (S, S, 3) float64 weights of that triangle's vertices (0 where none).
    """
    scale = size - 1
    corners = uv[triangles] * scale  # (F, 3, 2) in pixel units, x = column, y = row
    low = np.clip(np.ceil(corners.min(axis=1) - 1e-9), 0, scale).astype(np.int64)
    high = np.clip(np.floor(corners.max(axis=1) + 1e-9), 0, scale).astype(np.int64)
    widths = np.maximum(high[:, 0] - low[:, 0] + 1, 0)
    heights = np.maximum(high[:, 1] - low[:, 1] + 1, 0)
    counts = widths * heights
    owner = np.repeat(np.arange(len(triangles)), counts)
    # Position of each candidate pixel inside its triangle's bounding box.
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    columns = low[owner, 0] + offsets % widths[owner]
    rows = low[owner, 1] + offsets // widths[owner]

    a, b, c = corners[owner, 0], corners[owner, 1], corners[owner, 2]
    point = np.stack([columns, rows], axis=1).astype(np.float64)
    v0, v1, v2 = b - a, c - a, point - a
    denominator = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    safe = np.where(np.abs(denominator) > 1e-300, denominator, 1.0)
    weight_b = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / safe
    weight_c = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / safe
    weight_a = 1.0 - weight_b - weight_c
    weights = np.stack([weight_a, weight_b, weight_c], axis=1)
    inside = (weights.min(axis=1) > -_INSIDE_TOLERANCE) & (np.abs(denominator) > 1e-300)

    # A pixel on a shared edge is inside two triangles: keep the one it is deepest in.
    owner, rows, columns, weights = owner[inside], rows[inside], columns[inside], weights[inside]
    depth = weights.min(axis=1)
    order = np.lexsort((-depth, rows * size + columns))
    pixel = (rows * size + columns)[order]
    first = np.concatenate([[True], pixel[1:] != pixel[:-1]])
    chosen = order[first]

    triangle_index = np.full(size * size, -1, dtype=np.int64)
    barycentric = np.zeros((size * size, 3))
    flat = rows[chosen] * size + columns[chosen]
    triangle_index[flat] = owner[chosen]
    barycentric[flat] = np.clip(weights[chosen], 0.0, 1.0)
    barycentric[flat] /= barycentric[flat].sum(axis=1, keepdims=True)
    return triangle_index.reshape(size, size), barycentric.reshape(size, size, 3)


def rasterisation_matrix(flattening: Flattening, size: int) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """The sparse linear map from per-vertex values to UV pixels.

    Args:
        flattening: the flattened, filled face mesh.
        size: S, the UV image size.

    Returns:
        matrix: (S * S, V) sparse, row ``i * S + j`` gives pixel (i, j) as a weighted
            sum of the original vertices (auxiliary vertices already replaced by
            their ring means; uncovered pixels copy their nearest covered pixel).
        mask: (S, S) bool, True where a triangle of the filled mesh covers the pixel.
    """
    triangle_index, barycentric = locate_pixels(flattening.uv, flattening.triangles, size)
    mask = triangle_index >= 0
    if not mask.any():
        raise ValueError("no UV pixel is covered by the flattened mesh")
    # Pixels nowhere inside take the triangle and weights of their nearest covered pixel.
    _, (near_rows, near_columns) = scipy.ndimage.distance_transform_edt(~mask, return_indices=True)
    source = (near_rows * size + near_columns).ravel()
    triangle_index = triangle_index.ravel()[source]
    barycentric = barycentric.reshape(-1, 3)[source]

    n_filled = len(flattening.uv)
    pixels = np.repeat(np.arange(size * size), 3)
    filled_vertices = flattening.triangles[triangle_index].ravel()
    to_filled = scipy.sparse.csr_matrix(
        (barycentric.ravel(), (pixels, filled_vertices)), shape=(size * size, n_filled)
    )
    return (to_filled @ flattening.filled.extension_matrix()).tocsr(), mask


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit vertex normals (V, 3): the area-weighted sum of the adjacent triangles' normals, renormalised."""
    cross = np.cross(vertices[triangles[:, 1]] - vertices[triangles[:, 0]], vertices[triangles[:, 2]] - vertices[triangles[:, 0]])
    normals = np.zeros_like(vertices, dtype=np.float64)
    for corner in range(3):
        np.add.at(normals, triangles[:, corner], cross)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _rasterise(matrix: scipy.sparse.csr_matrix, values: np.ndarray, size: int) -> np.ndarray:
    """Per-vertex channels (V, C) -> (S, S, C) float32 (pixel-major), in chunks of channels."""
    channels = values.shape[1]
    out = np.empty((size * size, channels), dtype=np.float32)
    for start in range(0, channels, _CHANNEL_CHUNK):
        chunk = np.ascontiguousarray(values[:, start : start + _CHANNEL_CHUNK], dtype=np.float64)
        out[:, start : start + chunk.shape[1]] = matrix @ chunk
    return out.reshape(size, size, channels)


def _as_channel_images(pixel_major: np.ndarray) -> torch.Tensor:
    """(S, S, C) array -> (C, S, S) tensor view that keeps the pixel-major storage."""
    return torch.from_numpy(pixel_major).permute(2, 0, 1)


def _mean_and_basis_channels(mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(V, 3) mean and (V, 3, N) basis -> (V, 3 + 3 N) with channel 3 + 3 n + c = coordinate c of mode n."""
    vertices = mean.shape[0]
    return np.concatenate([mean, basis.transpose(0, 2, 1).reshape(vertices, -1)], axis=1)


def build_uv_model(model: MorphableModel, size: int = 320, flattening: Flattening | None = None) -> UVMorphableModel:
    """Flatten ``model`` and rasterise its mean, bases, normals and mask into S x S UV images.

    Args:
        model: the per-vertex morphable model.
        size: S, the UV image size in pixels (the paper uses 320).
        flattening: a flattening of ``model`` already computed, or None to compute it.

    Returns:
        The UV-3DMM; images are float32 in the layout ``UVMorphableModel`` documents
        (shape in the model's units, the normal image unit length per pixel), stored
        pixel-major so that sampling reads each pixel's channels contiguously.
    """
    if size < 2:
        raise ValueError(f"the UV image size must be at least 2 pixels, got {size}")
    flattening = flattening if flattening is not None else flatten(model)
    matrix, mask = rasterisation_matrix(flattening, size)

    shape_images = _rasterise(matrix, _mean_and_basis_channels(model.shape_mean, model.shape_basis), size)
    albedo_images = _rasterise(matrix, _mean_and_basis_channels(model.albedo_mean, model.albedo_basis), size)
    normals = _rasterise(matrix, vertex_normals(model.shape_mean, model.triangles), size)
    normals /= np.maximum(np.linalg.norm(normals, axis=2, keepdims=True), 1e-12)

    return UVMorphableModel(
        model=model,
        vertex_uv=flattening.vertex_uv.copy(),
        shape_images=_as_channel_images(shape_images),
        albedo_images=_as_channel_images(albedo_images),
        normal_image=_as_channel_images(normals.astype(np.float32)),
        mask_image=_as_channel_images(mask.astype(np.float32)[:, :, None]),
    )

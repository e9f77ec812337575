"""Triangle rasteriser in plain torch: triangle id, barycentrics and depth per pixel.

Rasterise once without gradients (this module), then interpolate attributes
with autograd (:mod:`lsqface.render.interpolate`), as nvdiffrast does. No
compiled extension and no OpenGL: every step is a vectorised torch operation,
so the same code runs on CPU tensors and on CUDA tensors.

Conventions (image space)
-------------------------
* ``x`` is the column and ``y`` the row, both in pixels, ``y`` pointing down.
  Pixel (column ``j``, row ``i``) has its centre at ``(j + 0.5, i + 0.5)``; the
  image covers ``[0, width] x [0, height]``.
* ``z`` is depth: smaller is nearer. By default any finite value is drawn (no
  near or far plane); the z-buffer keeps the smallest depth at each pixel
  centre and, on exact ties, the smallest triangle index.
* Near plane: with ``near`` set, a triangle with any corner at ``z < near`` is
  dropped (not clipped). A camera-space mesh must set it: a vertex behind the
  camera projects through infinity to the far side of the image, so a triangle
  crossing the camera plane would otherwise cover the whole picture (and cost
  a full image of candidate pixels each). A mesh behind the camera draws nothing.
* A pixel is covered by a triangle when its centre lies inside the triangle
  or exactly on one of its edges. Every edge shared by two triangles is
  evaluated with the same floating-point operations from both sides (from
  its lower- to its higher-indexed vertex), so a mesh has no cracks: a pixel
  centre on a shared edge is inside at least one of the two triangles.
* Zero-area (degenerate) triangles and triangles with a non-finite vertex are
  skipped.
* Front-facing triangles are those whose vertices appear counter-clockwise on
  the displayed image (``y`` down), i.e. ``cross(v1 - v0, v2 - v0) < 0`` in
  pixel coordinates. That is what a mesh wound counter-clockwise when seen
  from outside (the OBJ convention) looks like after projection. Both windings
  are drawn unless ``cull_backfaces`` is set.

Algorithm
---------
Each triangle's pixel bounding box is clipped to the image; triangles are
grouped by the box size rounded up to powers of two (width and height
separately). For one group, every candidate pixel of every box is enumerated
by broadcasting, and the three edge functions give the inside test and the
depth. The z-test of all candidate pixels is one ``scatter_reduce('amin')`` over a
packed int64 key per pixel: the order-preserving integer bits of the float32
depth in the high 32 bits and the triangle index in the low 32 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lsqface.errors import LsqfaceError

__all__ = ["Fragments", "RenderError", "rasterize", "pixel_centres"]

# Candidate pixels enumerated at once; bounds the temporary memory of one step
# (about 20 tensors of this many elements).
_DEFAULT_MAX_CANDIDATES = 1 << 21
_BACKGROUND_KEY = torch.iinfo(torch.int64).max
_LOW_32_BITS = 0xFFFFFFFF


class RenderError(LsqfaceError):
    """A mesh or image size given to the renderer is malformed."""


@dataclass(frozen=True)
class Fragments:
    """What the rasteriser found at each pixel centre.

    Attributes:
        triangle_id: (B, H, W) int64, index into ``triangles`` of the nearest
            triangle covering the pixel centre, -1 for background.
        barycentrics: (B, H, W, 3) screen-space (affine) barycentric
            coordinates of the pixel centre in that triangle, summing to 1;
            0 for background. Not differentiable; use
            :func:`lsqface.render.interpolate.barycentrics_differentiable`.
        depth: (B, H, W) depth of the surface at the pixel centre (same unit as
            the vertices' z), ``inf`` for background.
    """

    triangle_id: torch.Tensor
    barycentrics: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool, True where a triangle covers the pixel."""
        return self.triangle_id >= 0


def pixel_centres(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel centres of an image.

    Returns:
        (H, W, 2) ``(x, y)`` in pixels: ``(j + 0.5, i + 0.5)`` at row i, column j.
    """
    rows = torch.arange(height, device=device, dtype=dtype) + 0.5
    columns = torch.arange(width, device=device, dtype=dtype) + 0.5
    y, x = torch.meshgrid(rows, columns, indexing="ij")
    return torch.stack((x, y), dim=-1)


def _check_inputs(vertices: torch.Tensor, triangles: torch.Tensor, height: int, width: int) -> None:
    if vertices.dim() != 3 or vertices.shape[-1] != 3 or not vertices.is_floating_point():
        raise RenderError(
            f"vertices must be a float tensor of shape (B, V, 3), got {tuple(vertices.shape)} "
            f"{vertices.dtype}; add a batch dimension with vertices[None] if needed."
        )
    if triangles.dim() != 2 or triangles.shape[-1] != 3 or triangles.is_floating_point():
        raise RenderError(
            f"triangles must be an integer tensor of shape (F, 3), got {tuple(triangles.shape)} "
            f"{triangles.dtype}; split quads into triangles first."
        )
    if triangles.numel() and (int(triangles.min()) < 0 or int(triangles.max()) >= vertices.shape[1]):
        raise RenderError(
            f"triangles index vertices outside 0..{vertices.shape[1] - 1}; "
            "check that the triangles belong to these vertices."
        )
    if triangles.shape[0] >= 2**31:
        raise RenderError("meshes with 2**31 triangles or more are not supported; split the mesh.")
    if int(height) < 1 or int(width) < 1:
        raise RenderError(f"image size must be positive, got height={height}, width={width}.")


# Columns of the per-triangle table: for each edge k, origin x, origin y and the
# signed direction (x, y); then the corner depths; then the pixel box.
_ORIGIN_X, _ORIGIN_Y, _DIRECTION_X, _DIRECTION_Y = 0, 1, 2, 3
_DEPTH = 12
_TABLE_COLUMNS = 15


def _edge_table(corners: torch.Tensor, triangles: torch.Tensor, orientation: torch.Tensor) -> torch.Tensor:
    """Per-triangle edge functions in a form shared exactly by neighbouring triangles.

    Edge k is opposite corner k and runs from corner k+1 to corner k+2, so that
    ``e_k(p) = cross(c_{k+2} - c_{k+1}, p - c_{k+1})`` and ``e_0 + e_1 + e_2``
    is twice the signed area. Each edge is evaluated from its lower-indexed
    vertex (origin) along the direction to the other vertex, times a sign
    (+1 or -1) folded into the direction, together with the triangle's
    orientation (so that inside means every e_k >= 0). Multiplying by -1 is
    exact and ``(-a) - (-b) == -(a - b)`` in IEEE arithmetic, so the two
    triangles sharing an edge get exactly opposite values there: no cracks.

    Args:
        corners: (B, F, 3, 3) corner positions (x, y in pixels, z depth).
        triangles: (F, 3) vertex indices.
        orientation: (B, F) +1 or -1, the sign of the triangle's signed area.

    Returns:
        (B * F, 15) table: per edge k columns 4k..4k+3 = origin x, origin y,
        signed direction x, signed direction y; columns 12..14 corner depths.
    """
    start_corner = torch.tensor([1, 2, 0], device=triangles.device)
    end_corner = torch.tensor([2, 0, 1], device=triangles.device)
    forward = triangles[:, start_corner] < triangles[:, end_corner]  # (F, 3)
    first = torch.where(forward, start_corner, end_corner)  # (F, 3) corner index of the origin
    second = torch.where(forward, end_corner, start_corner)
    batch = corners.shape[0]
    corners_xy = corners[..., :2]
    origin = torch.gather(corners_xy, 2, first[None, :, :, None].expand(batch, -1, -1, 2))
    direction = torch.gather(corners_xy, 2, second[None, :, :, None].expand(batch, -1, -1, 2)) - origin
    sign = torch.where(forward, 1.0, -1.0).to(corners.dtype)[None] * orientation[..., None]  # (B, F, 3)
    direction = direction * sign[..., None]
    edges = torch.cat((origin, direction), dim=-1)  # (B, F, 3, 4)
    return torch.cat((edges.flatten(2), corners[..., 2]), dim=-1).reshape(-1, _TABLE_COLUMNS)


def _edge_values(table: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> list:
    """Edge functions e_0, e_1, e_2 at points (x, y), oriented so inside is all >= 0.

    ``table`` rows are triangles (N, 15) and its columns broadcast against x, y
    after ``reshape`` by the caller: x, y must broadcast with (N, ...).
    """
    extra = (1,) * (max(x.dim(), y.dim()) - 1)
    values = []
    for k in range(3):
        column = table[:, 4 * k : 4 * k + 4].reshape((-1,) + extra + (4,))
        origin_x, origin_y = column[..., _ORIGIN_X], column[..., _ORIGIN_Y]
        direction_x, direction_y = column[..., _DIRECTION_X], column[..., _DIRECTION_Y]
        values.append(direction_x * (y - origin_y) - direction_y * (x - origin_x))
    return values


def _depth_keys(depth: torch.Tensor, triangle_index: torch.Tensor) -> torch.Tensor:
    """Pack (depth, triangle index) into one int64 whose order is the z-test order."""
    bits = depth.to(torch.float32).view(torch.int32).to(torch.int64)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits
    # of negative values to get a two's-complement order.
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits * (1 << 32) + triangle_index


@torch.no_grad()
def rasterize(
    vertices: torch.Tensor,
    triangles: torch.Tensor,
    height: int,
    width: int,
    cull_backfaces: bool = False,
    max_candidates: int = _DEFAULT_MAX_CANDIDATES,
    near: float | None = None,
) -> Fragments:
    """Find the nearest triangle, its barycentrics and depth at every pixel centre.

    Not differentiable (runs under ``torch.no_grad``); gradients come from
    :func:`lsqface.render.interpolate.interpolate`.

    Args:
        vertices: (B, V, 3) image-space vertices: x (column) and y (row) in
            pixels with pixel centres at integer + 0.5, z depth (smaller is
            nearer). Float32 or float64; float64 is used throughout if given.
        triangles: (F, 3) int64 vertex indices, shared by the batch (a numpy array works too).
        height: H, image height in pixels.
        width: W, image width in pixels.
        cull_backfaces: if True, skip triangles that appear clockwise on the
            displayed image (``cross(v1 - v0, v2 - v0) > 0`` in pixel
            coordinates with y down); see the module docstring.
        max_candidates: how many candidate pixels to test at once (memory bound).
        near: drop every triangle with a corner at depth ``z < near`` (the near plane, in the
            vertices' z unit, e.g. millimetres for camera-space meshes); None draws every finite depth.

    Returns:
        Fragments with triangle_id (B, H, W), barycentrics (B, H, W, 3) and
        depth (B, H, W), on the device of ``vertices``.
    """
    triangles = torch.as_tensor(triangles)
    _check_inputs(vertices, triangles, height, width)
    height, width = int(height), int(width)
    device = vertices.device
    dtype = torch.float64 if vertices.dtype == torch.float64 else torch.float32
    vertices = vertices.detach().to(dtype)
    triangles = triangles.to(device=device, dtype=torch.int64)
    batch, face_count = vertices.shape[0], triangles.shape[0]

    corners = vertices[:, triangles]  # (B, F, 3, 3)
    corners_xy = corners[..., :2]
    edge0 = corners_xy[:, :, 1] - corners_xy[:, :, 0]
    edge1 = corners_xy[:, :, 2] - corners_xy[:, :, 0]
    double_area = edge0[..., 0] * edge1[..., 1] - edge0[..., 1] * edge1[..., 0]  # (B, F)
    drawable = torch.isfinite(corners).all(dim=-1).all(dim=-1) & (double_area != 0)
    if cull_backfaces:
        drawable &= double_area < 0
    if near is not None:
        drawable &= (corners[..., 2] >= near).all(dim=-1)
    orientation = torch.where(double_area < 0, -1.0, 1.0).to(dtype)
    table = _edge_table(corners, triangles, orientation)  # (B * F, 15)

    # Pixel-index bounding boxes: column j holds candidate pixels when minimum_x <= j + 0.5 <= maximum_x.
    limit = float(max(width, height)) + 1.0
    low = corners_xy.amin(dim=2).clamp(-1.0, limit)
    high = corners_xy.amax(dim=2).clamp(-1.0, limit)
    first_column = torch.ceil(low[..., 0] - 0.5).to(torch.int64).clamp_min(0)
    last_column = torch.floor(high[..., 0] - 0.5).to(torch.int64).clamp_max(width - 1)
    first_row = torch.ceil(low[..., 1] - 0.5).to(torch.int64).clamp_min(0)
    last_row = torch.floor(high[..., 1] - 0.5).to(torch.int64).clamp_max(height - 1)
    box_width = last_column - first_column + 1
    box_height = last_row - first_row + 1
    drawable &= (box_width > 0) & (box_height > 0)
    boxes = torch.stack((first_column, first_row, box_width, box_height), dim=-1).reshape(-1, 4)

    best_keys = torch.full((batch * height * width,), _BACKGROUND_KEY, dtype=torch.int64, device=device)
    drawn = torch.nonzero(drawable.reshape(-1), as_tuple=True)[0]  # flat index b * F + f
    if drawn.numel():
        drawn_boxes = boxes.index_select(0, drawn)
        levels = torch.ceil(torch.log2(drawn_boxes[:, 2:].to(torch.float32))).to(torch.int64)
        bucket, order = torch.sort(levels[:, 0] * 64 + levels[:, 1])
        bucket_levels, counts = torch.unique_consecutive(bucket, return_counts=True)
        drawn = drawn.index_select(0, order)
        start = 0
        for level, count in zip(bucket_levels.tolist(), counts.tolist()):
            span_width, span_height = 1 << (level // 64), 1 << (level % 64)
            chunk = max(1, max_candidates // (span_width * span_height))
            for chunk_start in range(start, start + count, chunk):
                members = drawn[chunk_start : min(chunk_start + chunk, start + count)]
                _rasterize_group(
                    best_keys, members, span_width, span_height, boxes, table, face_count, height, width
                )
            start += count

    covered = best_keys != _BACKGROUND_KEY
    triangle_id = torch.where(covered, best_keys & _LOW_32_BITS, -1)
    barycentrics = torch.zeros(batch * height * width, 3, dtype=dtype, device=device)
    depth = torch.full((batch * height * width,), float("inf"), dtype=dtype, device=device)
    pixel = torch.nonzero(covered, as_tuple=True)[0]
    if pixel.numel():
        hit = table.index_select(0, pixel // (height * width) * face_count + triangle_id.index_select(0, pixel))
        x = (pixel % width).to(dtype) + 0.5
        y = ((pixel // width) % height).to(dtype) + 0.5
        weights = torch.stack(_edge_values(hit, x, y), dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        barycentrics[pixel] = weights
        depth[pixel] = (weights * hit[:, _DEPTH:]).sum(dim=-1)
    return Fragments(
        triangle_id=triangle_id.reshape(batch, height, width),
        barycentrics=barycentrics.reshape(batch, height, width, 3),
        depth=depth.reshape(batch, height, width),
    )


def _rasterize_group(best_keys, members, span_width, span_height, boxes, table, face_count, height, width):
    """Test every candidate pixel of one group of boxes no larger than span_width x span_height.

    ``members`` (N,) are flat triangle indices b * F + f; the z-test is folded
    into ``best_keys`` (B * H * W,) with one scatter_reduce.
    """
    device = best_keys.device
    dtype = table.dtype
    member_boxes = boxes.index_select(0, members)  # (N, 4)
    member_table = table.index_select(0, members)  # (N, 15)
    column_offset = torch.arange(span_width, device=device)
    row_offset = torch.arange(span_height, device=device)
    x = (member_boxes[:, 0:1] + column_offset).to(dtype) + 0.5  # (N, w)
    y = (member_boxes[:, 1:2] + row_offset).to(dtype) + 0.5  # (N, h)
    # Candidate pixels outside the clipped box get NaN coordinates, which fail every test below.
    x = torch.where(column_offset < member_boxes[:, 2:3], x, float("nan"))[:, None, :]  # (N, 1, w)
    y = torch.where(row_offset < member_boxes[:, 3:4], y, float("nan"))[:, :, None]  # (N, h, 1)
    values = _edge_values(member_table, x, y)  # 3 x (N, h, w)
    inside = values[0] >= 0
    inside &= values[1] >= 0
    inside &= values[2] >= 0
    hit = torch.nonzero(inside.reshape(-1), as_tuple=True)[0]
    if hit.numel() == 0:
        return
    area = span_width * span_height
    which = hit // area
    row = member_boxes[:, 1].index_select(0, which) + (hit // span_width) % span_height
    column = member_boxes[:, 0].index_select(0, which) + hit % span_width
    hit = member_table.index_select(0, which)
    weights = torch.stack(_edge_values(hit, column.to(dtype) + 0.5, row.to(dtype) + 0.5), dim=-1)
    depth = (weights * hit[:, _DEPTH:]).sum(dim=-1) / weights.sum(dim=-1)
    flat_triangle = members.index_select(0, which)
    pixel = ((flat_triangle // face_count) * height + row) * width + column
    keys = _depth_keys(depth, flat_triangle % face_count)
    best_keys.scatter_reduce_(0, pixel, keys, reduce="amin", include_self=True)

"""The photo's colours pulled into the 3DMM's UV space: a texture for the reconstructed mesh.

Each texel of the UV image is a point on the fitted surface: rasterise the
mesh with its flattened (u, v) as 2D positions, interpolate the camera-space
position, project it with the reconstruction's K into the photo and sample
the photo there (bilinear). The photo only shows the surface that faces the
camera and is not hidden by another part of the face (the far cheek behind
the nose), so a texel counts as *visible* when its normal faces the camera
and its depth passes a z-buffer test against the mesh rendered over the photo
(at most ``DEPTH_SIDE`` pixels on its longer side, with a near plane, so a large
photo or a fit that is not a face costs no more than a face). Everything else (hidden texels, and texels between the UV chart and the
texture's border) is filled from the fitted colour, so the texture has no
holes when a viewer filters it.

UV convention (lsqface.morphable.uv_model): a vertex with flattened (u, v)
lands at texel (u (S - 1), v (S - 1)), i.e. its centre at
(u (S - 1) + 0.5, v (S - 1) + 0.5) in the rasteriser's pixel frame; v grows
downwards, the same texture layout ``write_obj`` expects.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lsqface.errors import ImageError
from lsqface.render.rasterize import rasterize

__all__ = ["photo_texture", "uv_texels", "uv_vertices", "visible_in_photo"]

#: Depth tolerance of the z-buffer test, as a fraction of the face's distance to the camera
#: (1 % is about 5 mm at 50 cm: a texel within that of the rendered surface is that surface).
DEPTH_TOLERANCE = 0.01
#: Longest side, pixels, of the depth image the visibility test renders (the photo is sampled at full size).
DEPTH_SIDE = 1024
#: Near plane of that rendering, millimetres: a triangle with a corner nearer to the camera is not drawn.
NEAR_PLANE_MM = 10.0


def uv_vertices(vertex_uv: np.ndarray | torch.Tensor, size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The flattened mesh as a (1, V, 3) image-space mesh of a ``size`` x ``size`` texture (z = 0).

    Args:
        vertex_uv: (V, 2) flattened (u, v) in [0, 1].
        size: texture side S, pixels.

    Returns:
        (1, V, 3): x = u (S - 1) + 0.5, y = v (S - 1) + 0.5 in texels, z = 0.
    """
    uv = torch.as_tensor(np.asarray(vertex_uv), dtype=dtype)
    xy = uv * (size - 1) + 0.5
    return torch.cat([xy, torch.zeros_like(xy[:, :1])], dim=-1)[None]


def visible_in_photo(points: torch.Tensor, normals: torch.Tensor, image_points: torch.Tensor,
                     photo_depth: torch.Tensor, tolerance: float = DEPTH_TOLERANCE,
                     origin: tuple[int, int] = (0, 0), photo_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Which surface points the photo shows: facing the camera, inside the photo, not occluded.

    Args:
        points: (N, 3) camera-space positions, millimetres.
        normals: (N, 3) outward normals there (need not be unit).
        image_points: (N, 2) their projections (x, y) in photo pixels.
        photo_depth: (h, w) the mesh's camera z rendered at the photo's size, ``inf`` off the mesh: the
            whole photo, or a window of it whose top-left pixel is column, row = ``origin`` (every pixel
            outside the window is off the mesh).
        tolerance: a point is hidden when the rendered surface is nearer by more than
            ``tolerance`` times the point's depth.
        photo_size: (H, W) of the photo, pixels; None when ``photo_depth`` is the whole photo.

    Returns:
        (N,) bool.
    """
    height, width = photo_depth.shape if photo_size is None else photo_size
    # The camera sits at the origin: the point faces it when n . (0 - X) > 0.
    facing = (normals * -points).sum(-1) > 0
    x, y = image_points[:, 0], image_points[:, 1]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height) & torch.isfinite(x) & torch.isfinite(y)
    # Compare with the four pixel centres around the point and keep the farthest: at a depth
    # edge a point of the far side still sees its own surface in one neighbour, while a point
    # hidden behind the nose sees the nose in all four.
    column = torch.floor(x - 0.5).clamp(-1, width - 1).nan_to_num(0).long()
    row = torch.floor(y - 0.5).clamp(-1, height - 1).nan_to_num(0).long()
    # The window, with a border of pixels off the mesh around it.
    window = torch.nn.functional.pad(photo_depth, (1, 1, 1, 1), value=float("inf"))
    farthest = torch.full_like(x, -float("inf"))
    for row_offset in (0, 1):
        for column_offset in (0, 1):
            r = (row + row_offset).clamp(0, height - 1) - origin[1] + 1
            c = (column + column_offset).clamp(0, width - 1) - origin[0] + 1
            farthest = torch.maximum(farthest, window[r.clamp(0, window.shape[0] - 1), c.clamp(0, window.shape[1] - 1)])
    unoccluded = points[:, 2] <= farthest + tolerance * points[:, 2].abs()
    return facing & inside & unoccluded


_UV_TEXELS: dict = {}


def uv_texels(vertex_uv: np.ndarray, triangles: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each texel lies on the flattened mesh: the texture's rasterisation, made once per layout and size.

    It depends only on the 3DMM's (u, v) and triangles, not on the fit, so the photo texture of every face
    reuses it (a cache of the 8 latest layouts; rasterising 13,000 triangles at 256 texels cost more than
    writing the rest of an OBJ).

    Returns:
        covered (S, S) bool; corners (N, 3) int64 vertex indices of each covered texel's triangle;
        weights (N, 3) float64 its barycentric coordinates (N covered texels, row-major order).
    """
    return _uv_layout(vertex_uv, triangles, size)[:3]


def _uv_layout(vertex_uv: np.ndarray, triangles: torch.Tensor, size: int) -> tuple:
    """:func:`uv_texels` and, for every texel, the covered texel nearest to it (its fill source, (S, S) rows
    and columns), cached together."""
    uv = np.ascontiguousarray(np.asarray(vertex_uv, dtype=np.float64))
    triangles = torch.as_tensor(triangles, dtype=torch.int64).cpu()
    key = (hash(uv.tobytes()), hash(triangles.numpy().tobytes()), uv.shape, tuple(triangles.shape), int(size))
    cached = _UV_TEXELS.get(key)
    if cached is None:
        fragments = rasterize(uv_vertices(uv, size), triangles, size, size)
        covered = fragments.mask[0]
        corners = triangles.index_select(0, fragments.triangle_id[0][covered])
        known = covered.numpy()
        _, nearest = ndimage.distance_transform_edt(~known, return_indices=True) if not known.all() else (None, None)
        cached = (covered, corners, fragments.barycentrics[0][covered].to(torch.float64), nearest)
        if len(_UV_TEXELS) >= 8:
            _UV_TEXELS.clear()
        _UV_TEXELS[key] = cached
    return cached


def _fill_outside(image: np.ndarray, known: np.ndarray, nearest: np.ndarray | None = None) -> np.ndarray:
    """Copy each unknown pixel from its nearest known pixel; image (S, S, C), known (S, S) bool.

    ``nearest``: the (2, S, S) rows and columns of each pixel's nearest known pixel, if known already.
    """
    if known.all() or not known.any():
        return image
    if nearest is None:
        _, nearest = ndimage.distance_transform_edt(~known, return_indices=True)
    rows, columns = nearest
    return image[rows, columns]


@torch.no_grad()
def photo_texture(reconstruction, index: int, photo: np.ndarray, size: int = 256,
                  from_photo: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The photo mapped into UV space, hidden parts filled with the fitted colour.

    Args:
        reconstruction: a :class:`lsqface.reconstruct.Reconstruction`.
        index: which face of the batch.
        photo: (H, W, 3) float in [0, 1] (or uint8), the ORIGINAL image of that face (H, W = its image size);
            only the part the face covers is converted to float (:func:`_sample_photo`).
        size: texture side S, texels.
        from_photo: False gives the fitted colour everywhere (nothing visible) without looking at the
            photo: for a fit that is not a face (``Reconstruction.face_like``), whose mesh over the
            photo means nothing and could be costly to render.

    Returns:
        texture (S, S, 3) float32 in [0, 1] and visible (S, S) bool: True where the texel's colour
        comes from the photo.

    Raises:
        ImageError: the photo's size is not the reconstruction's image size.
    """
    photo = np.asarray(photo)
    height, width = reconstruction.image_sizes[index]
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.shape[:2] != (height, width):
        raise ImageError(
            f"The photo is {photo.shape} but face {index} was reconstructed from a {width}x{height} image; "
            "pass the same (H, W, 3) image that was reconstructed."
        )
    dtype = torch.float64
    triangles = reconstruction.triangles.cpu()
    vertices = reconstruction.vertices[index:index + 1].detach().cpu().to(dtype)
    normals = reconstruction.normals[index:index + 1].detach().cpu().to(dtype)
    colour = reconstruction.colour[index:index + 1].detach().cpu().to(dtype)
    intrinsics = reconstruction.intrinsics[index].detach().cpu().to(dtype)

    covered, corners, weights, nearest = _uv_layout(reconstruction.vertex_uv, triangles, size)
    attributes = torch.cat([vertices, normals, colour], -1)[0]  # (V, 9)
    values = sum(weights[:, k, None] * attributes.index_select(0, corners[:, k]) for k in range(3))  # (N, 9)
    points, texel_normals, fitted = values[:, 0:3], values[:, 3:6], values[:, 6:9]
    if not from_photo:
        texture = np.zeros((size, size, 3), np.float32)
        mask = covered.numpy()
        texture[mask] = fitted.clamp(0, 1).nan_to_num(0.5).numpy()
        return _fill_outside(texture, mask, nearest), np.zeros((size, size), bool)

    projected = points @ intrinsics.T
    image_points = projected[:, :2] / projected[:, 2:3]
    # The depth for the occlusion test at a bounded size: scaling x and y by the same factors
    # as the image keeps every point on its pixel (the image spans [0, W] x [0, H] either way).
    scale = min(1.0, DEPTH_SIDE / max(height, width))
    depth_height, depth_width = max(1, round(height * scale)), max(1, round(width * scale))
    factors = torch.tensor([depth_width / width, depth_height / height], dtype=dtype)
    image_vertices = reconstruction.image_vertices()[index:index + 1].detach().cpu().to(dtype)
    image_vertices = torch.cat([image_vertices[..., :2] * factors, image_vertices[..., 2:]], dim=-1)
    # Only the window around the drawn vertices is rendered (off it the depth is inf anyway): shifting
    # by whole pixels leaves every edge function, hence every depth, exactly as in the whole photo.
    (left, top), (right, bottom) = _drawn_window(image_vertices[0], depth_height, depth_width)
    shift = torch.tensor([left, top, 0.0], dtype=dtype)
    photo_fragments = rasterize(image_vertices - shift, triangles, max(1, bottom - top), max(1, right - left),
                                near=NEAR_PLANE_MM)
    window_depth = photo_fragments.depth[0] if right > left and bottom > top else photo_fragments.depth[0, :0, :0]
    visible = visible_in_photo(points, texel_normals, image_points * factors, window_depth,
                               origin=(left, top), photo_size=(depth_height, depth_width))

    sampled = _sample_photo(photo, image_points, visible).to(dtype)
    texel_colour = torch.where(visible[:, None], sampled, fitted)

    texture = np.zeros((size, size, 3), np.float32)
    mask = covered.numpy()
    texture[mask] = texel_colour.clamp(0, 1).numpy()
    visible_image = np.zeros((size, size), bool)
    visible_image[mask] = visible.numpy()
    return _fill_outside(texture, mask, nearest), visible_image


def _drawn_window(image_vertices: torch.Tensor, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(left, top), (right, bottom): the pixels of an H x W image whose centres the mesh can cover.

    ``image_vertices`` (V, 3): x, y in pixels and camera z (mm). Only vertices that the rasteriser may draw
    count (finite, not nearer than ``NEAR_PLANE_MM``); no such vertex gives an empty window.
    """
    drawable = torch.isfinite(image_vertices).all(dim=-1) & (image_vertices[:, 2] >= NEAR_PLANE_MM)
    if not bool(drawable.any()):
        return (0, 0), (0, 0)
    xy = image_vertices[drawable, :2]
    low, high = xy.amin(dim=0), xy.amax(dim=0)
    # Pixel j is a candidate pixel when low <= j + 0.5 <= high (the rasteriser's boxes).
    left, top = (max(0, min(limit, int(np.ceil(float(value) - 0.5)))) for value, limit in zip(low, (width, height)))
    right, bottom = (max(0, min(limit, int(np.floor(float(value) - 0.5)) + 1)) for value, limit in zip(high, (width, height)))
    return (left, top), (max(left, right), max(top, bottom))


def _sample_photo(photo: np.ndarray, image_points: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """(N, 3) float32: the photo, bilinear, at ``image_points`` (N, 2) pixels; only the ``visible`` ones matter.

    Only the box the visible points reach (plus a pixel for the bilinear neighbours) is converted to
    float (:func:`lsqface.data.images.photo_region`), box-averaged where that box is over
    ``FULL_FLOAT_PIXELS``: the face's part of a multi-megapixel photo, not the photo, is copied.
    """
    from lsqface.data.images import photo_region, reduction_factor

    height, width = photo.shape[:2]
    points = image_points[visible]
    finite = torch.isfinite(points).all(dim=1)
    points = points[finite]
    if points.shape[0] == 0:
        return torch.zeros(image_points.shape[0], 3)
    low, high = points.min(0).values, points.max(0).values
    left, top = max(0, int(np.floor(float(low[0]))) - 1), max(0, int(np.floor(float(low[1]))) - 1)
    right, bottom = min(width, int(np.floor(float(high[0]))) + 2), min(height, int(np.floor(float(high[1]))) + 2)
    if right <= left or bottom <= top:
        return torch.zeros(image_points.shape[0], 3)
    factor = reduction_factor((bottom - top) * (right - left))
    region = photo_region(photo, top, left, bottom, right, factor)
    region_height, region_width = region.shape[1:]
    # grid_sample with align_corners=False puts pixel centres at (j + 0.5) / W * 2 - 1: our convention
    # (the region's point (x, y) is (x / factor, y / factor) in its tensor).
    x = (image_points[:, 0] - left) / (factor * region_width)
    y = (image_points[:, 1] - top) / (factor * region_height)
    grid = torch.stack([x, y], -1) * 2 - 1
    # Sampled in float32 (the photo's own precision).
    return F.grid_sample(region[None], grid.nan_to_num(0).float()[None, None], mode="bilinear",
                         padding_mode="border", align_corners=False)[0, :, 0].T  # (N, 3)

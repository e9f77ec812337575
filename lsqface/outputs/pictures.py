"""Pictures of one reconstruction (seed H, Fig. 13): what the network saw, predicted and fitted.

Every picture is an (h, w, 3) uint8 array; the ones drawn over the photo are
at the photo's resolution up to ``PICTURE_SIDE`` pixels on the longer side
(larger photos are drawn scaled down, the camera and landmarks scaled with
them, so every point stays on its pixel), the network's maps at the network's
input size. Meshes are drawn with lsqface's own rasteriser (the same camera
the fit found, with a near plane); matplotlib (Agg) is used only for its
colour maps; the point cloud is our own orthographic splatting, so a picture
costs milliseconds, not a figure.

A fit whose status is not ``ok`` (:attr:`lsqface.reconstruct.Reconstruction.status`)
is marked: the pictures of the fit (overlay, reconstruction, geometry,
uv_photo, landmarks) get a red border and a red banner naming the status and
its reason, and so does the contact sheet. A fit that is not shaped like a face
(``Reconstruction.face_like`` False) is not rendered at all: its overlay and
reconstruction show the photo, its geometry the plain background, its uv_photo
the fitted colour; so such a fit costs less than a face, never more.

Pictures (keys of :func:`reconstruction_pictures`):

* ``overlay``: the mesh, grey and Lambert-lit from the camera, half transparent over the photo.
* ``reconstruction``: the reconstructed colour (albedo x fitted lighting) rendered over the photo.
* ``geometry``: the grey shaded mesh alone on a plain background, same camera.
* ``correspondence``: the network's (u, v) as red and green, faded out where the geometric
  confidence is low.
* ``uv_photo``: the photo pulled into UV space (:func:`lsqface.outputs.texture.photo_texture`),
  parts the photo does not show darkened.
* ``depth``: the network's depth map, colour-mapped (near is bright), where the confidence is high.
* ``point_cloud``: the depth map as 3D points in the face's own frame, seen from the face's left side.
* ``confidence``: geometric (left) and photometric (right) confidence, black 0 to white 1.
* ``landmarks``: the 68 landmarks (green) and 5 landmarks (red) on the photo.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from lsqface.data.images import photo_float  # noqa: E402
from lsqface.errors import ImageError  # noqa: E402
from lsqface.outputs.export import write_png  # noqa: E402
from lsqface.outputs.texture import photo_texture  # noqa: E402
from lsqface.render.interpolate import interpolate  # noqa: E402
from lsqface.render.rasterize import rasterize  # noqa: E402
from lsqface.render.shading import composite, lambert  # noqa: E402

__all__ = [
    "PICTURE_NAMES",
    "reconstruction_pictures",
    "map_pictures",
    "mesh_pictures",
    "batch_mesh_pictures",
    "contact_sheet",
    "mark_status",
    "picture_frame",
    "write_pictures",
]

PICTURE_NAMES = (
    "overlay", "reconstruction", "geometry", "correspondence", "uv_photo", "depth", "point_cloud", "confidence",
    "landmarks",
)
#: Grey of the shaded mesh and plain background of the geometry picture, in [0, 1].
MESH_GREY = 0.85
BACKGROUND = (0.16, 0.17, 0.19)
#: Opacity of the mesh in the overlay.
OVERLAY_ALPHA = 0.6
#: Pixels whose confidence is below this are left out of the depth map and the point cloud.
CONFIDENCE_THRESHOLD = 0.5
#: Longest side, pixels, of the pictures drawn over the photo (``lsqface reconstruct --picture-size``).
PICTURE_SIDE = 1024
#: Near plane of the mesh pictures, millimetres in front of the camera.
NEAR_PLANE_MM = 10.0
#: The colour that marks a fit whose status is not ``ok``.
STATUS_COLOUR = (220, 30, 30)
#: The pictures that show the fit (marked when it is not ``ok``); the others show the network's maps.
FIT_PICTURES = ("overlay", "reconstruction", "geometry", "uv_photo", "landmarks")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8 (rounded); a uint8 image is returned as it is."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return image
    return (np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check_photo(reconstruction, index: int, photo: np.ndarray) -> np.ndarray:
    """The photo as an array, uint8 or float32 as it came (a large photo is not converted whole here)."""
    photo = np.asarray(photo)
    if photo.dtype != np.uint8:
        photo = photo.astype(np.float32, copy=False)
    height, width = reconstruction.image_sizes[index]
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.shape[:2] != (height, width):
        raise ImageError(
            f"The photo is {photo.shape} but face {index} was reconstructed from a {width}x{height} image; "
            "pass the same (H, W, 3) image that was reconstructed."
        )
    return photo


def _shaded_grey(reconstruction, index: int) -> torch.Tensor:
    """(1, V, 3) grey vertex colours lit by a light at the camera (Lambert plus some ambient)."""
    normals = reconstruction.normals[index:index + 1].detach().cpu().float()
    towards_camera = torch.tensor([[0.0, 0.0, -1.0]])
    # A light slightly above and left of the camera shows the shape better than a head-on one.
    light = torch.tensor([[-0.3, -0.4, -1.0]])
    shade = 0.25 + 0.75 * (0.3 * lambert(normals, towards_camera) + 0.7 * lambert(normals, light))
    return (MESH_GREY * shade).expand(-1, -1, 3)


def picture_frame(reconstruction, index: int, photo: np.ndarray, max_side: int | None = PICTURE_SIDE):
    """Face ``index`` and its photo scaled so the longer side is at most ``max_side`` pixels.

    The photo is resized (antialiased) to (h, w) and the camera's intrinsics and the landmarks are
    scaled by w / W and h / H, so the image spans [0, w] x [0, h] as the photo spans [0, W] x [0, H]:
    a point at (x, y) in the photo is drawn at (x w / W, y h / H).

    Args:
        reconstruction: a :class:`lsqface.reconstruct.Reconstruction`; index: which face.
        photo: (H, W, 3) float in [0, 1] or uint8, the original image.
        max_side: the bound; None keeps the photo's size.

    Returns:
        (a Reconstruction of that one face in the scaled frame, the (h, w, 3) float32 photo). Only the
        scaled photo is ever in float: a uint8 photo is resized as it is.
    """
    photo = _check_photo(reconstruction, index, photo)
    height, width = photo.shape[:2]
    one = slice(index, index + 1)
    scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    factors = torch.tensor([size[1] / width, size[0] / height], dtype=torch.float64)
    matrix = torch.diag(torch.cat([factors, torch.ones(1, dtype=torch.float64)]))
    r = reconstruction
    single = dataclasses.replace(
        r, vertices=r.vertices[one], normals=r.normals[one], colour=r.colour[one], albedo=r.albedo[one],
        intrinsics=matrix @ r.intrinsics[one].detach().cpu().to(torch.float64), image_sizes=[size],
        landmarks_68=r.landmarks_68[one].detach().cpu().to(torch.float64) * factors,
        landmarks_5=r.landmarks_5[one].detach().cpu().to(torch.float64) * factors,
        measures=None, status=r.status[index:index + 1], status_reason=r.status_reason[index:index + 1],
        face_like=r.face_like[index:index + 1])
    if size != (height, width):
        resized = Image.fromarray(np.ascontiguousarray(to_uint8(photo))).resize((size[1], size[0]), Image.BILINEAR)
        photo = np.asarray(resized)
    return single, photo_float(photo)


def _face_like(reconstruction, index: int) -> bool:
    return bool(reconstruction.face_like[index]) if reconstruction.face_like else True


def mesh_pictures(reconstruction, index: int, photo: np.ndarray) -> dict[str, np.ndarray]:
    """``overlay``, ``reconstruction`` and ``geometry`` at the photo's resolution, (H, W, 3) uint8.

    A fit that is not shaped like a face (``reconstruction.face_like[index]`` False) is not
    rendered: the overlay and reconstruction are the photo, the geometry the plain background.

    Args:
        reconstruction: a :class:`lsqface.reconstruct.Reconstruction`.
        index: which face of the batch.
        photo: (H, W, 3) float in [0, 1] or uint8, the original image (see :func:`picture_frame`
            to draw a large photo at a bounded size).
    """
    return batch_mesh_pictures(reconstruction, [index], [photo])[0]


def batch_mesh_pictures(reconstruction, indices, photos) -> list[dict[str, np.ndarray]]:
    """:func:`mesh_pictures` of several faces of one reconstruction, their meshes rasterised in one call.

    The faces' photos must have one size (a video's frames): the rasteriser's fixed cost per call
    is then paid once for all of them, and each face's pictures are those of :func:`mesh_pictures`
    bit for bit.

    Args:
        reconstruction: a :class:`lsqface.reconstruct.Reconstruction`.
        indices: which faces of the batch.
        photos: one (H, W, 3) float in [0, 1] or uint8 photo per index, all of the same size.
    """
    indices, photos = list(indices), list(photos)
    if len(indices) != len(photos):
        raise ImageError(f"{len(indices)} faces were given {len(photos)} photos; pass one photo per face.")
    photos = [_check_photo(reconstruction, index, photo) for index, photo in zip(indices, photos)]
    if len({photo.shape for photo in photos}) > 1:
        raise ImageError("The photos of faces drawn together must have one size; draw the others one by one.")
    results: list[dict[str, np.ndarray] | None] = [None] * len(indices)
    drawn = []
    for position, (index, photo) in enumerate(zip(indices, photos)):
        if _face_like(reconstruction, index):
            drawn.append(position)
        else:
            plain = np.empty(photo.shape, np.float32)
            plain[:] = BACKGROUND
            results[position] = {"overlay": np.array(to_uint8(photo)), "reconstruction": np.array(to_uint8(photo)),
                                 "geometry": to_uint8(plain)}
    if not drawn:
        return results
    height, width = photos[0].shape[:2]
    chosen = torch.tensor([indices[position] for position in drawn])
    vertices = reconstruction.image_vertices().index_select(0, chosen.to(reconstruction.vertices.device))
    vertices = vertices.detach().cpu().float()
    triangles = reconstruction.triangles.cpu()
    grey = torch.cat([_shaded_grey(reconstruction, indices[position]) for position in drawn])
    colour = reconstruction.colour.detach().cpu().float().index_select(0, chosen)
    # One rasterisation serves the three pictures of every face: interpolate both colour sets at once.
    fragments = rasterize(vertices, triangles, height, width, cull_backfaces=True, near=NEAR_PLANE_MM)
    values = interpolate(torch.cat([grey, colour], -1), fragments, None, triangles).permute(0, 3, 1, 2)
    masks = fragments.mask[:, None].float()
    as_image = lambda tensor: to_uint8(tensor[0].permute(1, 2, 0).numpy())  # noqa: E731
    for row, position in enumerate(drawn):
        photo = np.require(photo_float(photos[position]), requirements=["C", "W"])
        background = torch.from_numpy(photo).permute(2, 0, 1)[None]
        grey_image, colour_image = values[row:row + 1, :3], values[row:row + 1, 3:]
        mask = masks[row:row + 1]
        plain = torch.tensor(BACKGROUND)[None, :, None, None].expand_as(background)
        results[position] = {
            "overlay": as_image(composite(background, grey_image, mask, OVERLAY_ALPHA)),
            "reconstruction": as_image(composite(background, colour_image, mask)),
            "geometry": as_image(composite(plain, grey_image, mask)),
        }
    return results


def correspondence_picture(correspondence: torch.Tensor, confidence: torch.Tensor) -> np.ndarray:
    """(S, S, 3) uint8: u red, v green, times the geometric confidence.

    Args:
        correspondence: (2, S, S) (u, v) in [0, 1]; confidence: (S, S) in [0, 1].
    """
    u, v = correspondence.detach().cpu().float()
    weight = confidence.detach().cpu().float()
    return to_uint8(torch.stack([u * weight, v * weight, torch.zeros_like(u)], -1).numpy())


def depth_picture(depth: torch.Tensor, confidence: torch.Tensor, colour_map: str = "magma") -> np.ndarray:
    """(S, S, 3) uint8: depth colour-mapped between its 2nd and 98th percentile inside the mask, near bright.

    Args:
        depth: (S, S) positive depth (any unit); confidence: (S, S) in [0, 1].
    """
    depth = depth.detach().cpu().double().numpy()
    mask = (confidence.detach().cpu().numpy() >= CONFIDENCE_THRESHOLD) & np.isfinite(depth)
    picture = np.zeros(depth.shape + (3,))
    if mask.any():
        near, far = np.quantile(depth[mask], [0.02, 0.98])
        scaled = np.clip((far - depth) / max(far - near, 1e-12), 0.0, 1.0)
        picture[mask] = colormaps[colour_map](0.15 + 0.85 * scaled[mask])[:, :3]
    return to_uint8(picture)


def confidence_picture(confidence: torch.Tensor, gap: int = 4) -> np.ndarray:
    """(S, 2 S + gap, 3) uint8: geometric | photometric confidence, grey levels, white gap between.

    Args:
        confidence: (2, S, S) in [0, 1] (a (1, S, S) map is shown twice).
    """
    confidence = confidence.detach().cpu().float()
    if confidence.shape[0] == 1:
        confidence = confidence.expand(2, -1, -1)
    size = confidence.shape[-2]
    gap_column = torch.ones(size, gap)
    grey = torch.cat([confidence[0], gap_column, confidence[1]], 1).numpy()
    return to_uint8(np.repeat(grey[..., None], 3, -1))


def point_cloud_picture(reconstruction, index: int, size: int = 256, side_angle: float = 60.0) -> np.ndarray:
    """(size, size, 3) uint8: the depth map unprojected to 3D and seen from the face's left side.

    Each confident pixel of the network frame becomes X = (d / psi) K^-1 (x, y, 1) (the network's
    depth is psi times the camera z, lsqface.solver.camera), then is moved into the face's own
    frame X_face = R^T (X - t), so the view is upright whatever the roll, and turned by
    ``side_angle`` degrees about the face's vertical axis. Points are splatted orthographically
    with a z-buffer and coloured by the network image.
    """
    fit = reconstruction.fit
    depth = reconstruction.depth[index, 0].detach().cpu().double()
    confidence = reconstruction.confidence[index, 0].detach().cpu().double()
    image = reconstruction.network_image[index].detach().cpu().double()
    mask = (confidence >= CONFIDENCE_THRESHOLD) & torch.isfinite(depth) & (depth > 0)
    picture = np.empty((size, size, 3))
    picture[:] = BACKGROUND
    if int(mask.sum()) < 3:
        return to_uint8(picture)
    rows, columns = torch.nonzero(mask, as_tuple=True)
    pixels = torch.stack([columns.double() + 0.5, rows.double() + 0.5, torch.ones_like(rows, dtype=torch.double)], -1)
    intrinsics = fit.intrinsics[index].detach().cpu().double()
    scale = fit.depth_scale[index].detach().cpu().double()
    rotation = reconstruction.rotation[index].detach().cpu().double()
    translation = reconstruction.translation[index].detach().cpu().double()
    camera = (depth[rows, columns] / scale)[:, None] * torch.linalg.solve(intrinsics, pixels.T).T
    face = (camera - translation) @ rotation  # R^T (X - t), as row vectors
    if not torch.isfinite(face).all():
        return to_uint8(picture)
    # The face frame has y up and the face looking along +z; turn it so its left cheek faces us.
    angle = np.radians(side_angle)
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    x = face[:, 0] * cos - face[:, 2] * sin
    z = face[:, 0] * sin + face[:, 2] * cos  # towards the viewer
    y = face[:, 1]
    centre_x, centre_y = (x.max() + x.min()) / 2, (y.max() + y.min()) / 2
    extent = float(torch.maximum(x.max() - x.min(), y.max() - y.min())) * 1.15 + 1e-9
    column = ((x - centre_x) / extent + 0.5) * size
    row = (0.5 - (y - centre_y) / extent) * size
    colours = image[:, rows, columns].T.numpy()
    # Shade by distance to the viewer so the profile reads as 3D.
    nearness = ((z - z.min()) / (z.max() - z.min() + 1e-9)).numpy()
    colours = colours * (0.45 + 0.55 * nearness[:, None])
    order = np.argsort(z.numpy())  # far first, near points painted last
    # Splat each point over about its share of the picture, so the cloud has no gaps between
    # the network's pixels when it is enlarged (the face spans about sqrt(N) pixels across).
    spacing = size / 1.15 / np.sqrt(len(order))
    radius = max(1, int(np.ceil(0.6 * spacing)))
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r = np.clip(np.floor(row.numpy()).astype(int) + dr, 0, size - 1)[order]
            c = np.clip(np.floor(column.numpy()).astype(int) + dc, 0, size - 1)[order]
            picture[r, c] = colours[order]
    return to_uint8(picture)


def landmark_picture(photo: np.ndarray, landmarks_68: np.ndarray, landmarks_5: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the photo with 68 landmarks (green dots) and 5 landmarks (red rings).

    Args:
        photo: (H, W, 3) float in [0, 1]; landmarks_68: (68, 2), landmarks_5: (5, 2) in pixels (x, y).
    """
    image = Image.fromarray(to_uint8(photo))
    draw = ImageDraw.Draw(image)
    height, width = photo.shape[:2]
    radius = max(1.0, min(height, width) / 160.0)

    def on_picture(points) -> np.ndarray:
        # A fit that is not a face can put landmarks at infinity or far off; only those near the picture are drawn.
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        near = np.isfinite(points).all(-1) & (np.abs(points - [width / 2, height / 2]) < [width, height]).all(-1)
        return points[near]

    for x, y in on_picture(landmarks_68):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(40, 230, 80))
    ring = 2.5 * radius
    for x, y in on_picture(landmarks_5):
        draw.ellipse([x - ring, y - ring, x + ring, y + ring], outline=(255, 40, 40), width=max(1, int(radius)))
    return np.asarray(image)


def map_pictures(reconstruction, index: int) -> dict[str, np.ndarray]:
    """``correspondence``, ``depth`` and ``confidence`` of the network's maps, in the network frame."""
    confidence = reconstruction.confidence[index]
    return {
        "correspondence": correspondence_picture(reconstruction.correspondence[index], confidence[0]),
        "depth": depth_picture(reconstruction.depth[index, 0], confidence[0]),
        "confidence": confidence_picture(confidence),
    }


def reconstruction_pictures(reconstruction, index: int, photo: np.ndarray, texture_size: int = 256,
                            texture: tuple[np.ndarray, np.ndarray] | None = None,
                            max_side: int | None = PICTURE_SIDE) -> dict[str, np.ndarray]:
    """Every picture of :data:`PICTURE_NAMES` for face ``index`` of a reconstruction.

    Args:
        reconstruction: a :class:`lsqface.reconstruct.Reconstruction`.
        index: which face of the batch.
        photo: (H, W, 3) float in [0, 1] or uint8: the original image of that face.
        texture_size: side of the ``uv_photo`` picture, texels.
        texture: the (texture, visible) pair of :func:`lsqface.outputs.texture.photo_texture` if the
            caller has it already (saves computing it twice); None computes it.
        max_side: longest side of the pictures drawn over the photo (:func:`picture_frame`); None: the photo's.

    Returns:
        name -> (h, w, 3) uint8; overlay, reconstruction, geometry and landmarks are the photo's
        (H, W, 3) scaled down to ``max_side``. The fit's pictures are marked when its status is not ``ok``.
    """
    photo = _check_photo(reconstruction, index, photo)
    single, small_photo = picture_frame(reconstruction, index, photo, max_side)
    pictures = mesh_pictures(single, 0, small_photo)
    pictures.update(map_pictures(reconstruction, index))
    if texture is None:
        texture = photo_texture(reconstruction, index, photo, size=texture_size, from_photo=_face_like(reconstruction, index))
    texture, visible = texture
    pictures["uv_photo"] = to_uint8(texture * np.where(visible, 1.0, 0.5)[..., None])
    pictures["point_cloud"] = point_cloud_picture(reconstruction, index)
    pictures["landmarks"] = landmark_picture(
        small_photo, single.landmarks_68[0].numpy(), single.landmarks_5[0].numpy()
    )
    status = reconstruction.status[index] if reconstruction.status else "ok"
    if status != "ok":
        reason = reconstruction.status_reason[index]
        if not _face_like(reconstruction, index):
            reason += " (mesh not drawn)"
        for name in FIT_PICTURES:
            pictures[name] = mark_status(pictures[name], status, reason)
    return {name: pictures[name] for name in PICTURE_NAMES}


def _fitted_text(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels in ``font``."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def mark_status(picture: np.ndarray, status: str, reason: str = "", bottom: bool = False) -> np.ndarray:
    """The picture with a red border and a red banner along its top (or bottom): "STATUS: reason" in white.

    Drawn over the picture (its size and every pixel's place stay), the banner a fourteenth of the
    picture's shorter side (at least 12 pixels), the text cut to the width.

    Args:
        picture: (h, w, 3) uint8; status: e.g. ``implausible``; reason: why, or "".
        bottom: the banner along the bottom (a video panel's title is written over its top).

    Returns:
        (h, w, 3) uint8, a new array.
    """
    image = Image.fromarray(np.ascontiguousarray(picture[..., :3]))
    width, height = image.size
    draw = ImageDraw.Draw(image)
    border = max(2, round(min(width, height) / 100))
    draw.rectangle([0, 0, width - 1, height - 1], outline=STATUS_COLOUR, width=border)
    banner = min(height, max(12, round(min(width, height) / 14)))
    start = height - banner if bottom else 0
    draw.rectangle([0, start, width - 1, start + banner - 1], fill=STATUS_COLOUR)
    font = ImageFont.load_default(size=max(8, round(banner * 0.7)))
    text = status.replace("_", " ").upper() + (f": {reason}" if reason else "")
    text = _fitted_text(draw, text, font, width - 2 * border - 4)
    _, ascent, _, descent = font.getbbox("Ag")
    top = start + (banner - (descent - ascent)) / 2 - ascent
    draw.text((border + 2, top), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def _fit_in_tile(picture: np.ndarray, tile: int) -> np.ndarray:
    """The picture scaled to fit a tile x tile square (aspect kept), centred on black."""
    height, width = picture.shape[:2]
    scale = tile / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.NEAREST if scale >= 2 else Image.BILINEAR
    resized = np.asarray(Image.fromarray(picture).resize(new_size, resample))
    out = np.zeros((tile, tile, 3), np.uint8)
    top, left = (tile - new_size[1]) // 2, (tile - new_size[0]) // 2
    out[top:top + new_size[1], left:left + new_size[0]] = resized[..., :3]
    return out


def contact_sheet(pictures: Mapping[str, np.ndarray], columns: int = 3, tile: int = 256, title_height: int = 20,
                  status: str = "ok", reason: str = "") -> np.ndarray:
    """All pictures on one sheet, each in a tile x tile square under its name.

    Args:
        pictures: name -> (h, w, 3) uint8 (e.g. from :func:`reconstruction_pictures`).
        columns: tiles per row.
        tile: tile side, pixels.
        title_height: height of the title strip above each tile, pixels.
        status, reason: the fit's status; any other than ``ok`` marks the sheet (:func:`mark_status`).

    Returns:
        (rows (title_height + tile), columns tile, 3) uint8, rows = ceil(len(pictures) / columns).
    """
    names = list(pictures)
    rows = max(1, -(-len(names) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + title_height)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, name in enumerate(names):
        row, column = divmod(k, columns)
        left, top = column * tile, row * (tile + title_height)
        draw.text((left + 4, top + 3), name.replace("_", " "), fill=(0, 0, 0), font=font)
        sheet.paste(Image.fromarray(_fit_in_tile(np.asarray(pictures[name]), tile)), (left, top + title_height))
    if status != "ok":
        return mark_status(np.asarray(sheet), status, reason)
    return np.asarray(sheet)


def write_pictures(folder: str | Path, stem: str, pictures: Mapping[str, np.ndarray]) -> list[Path]:
    """Write each picture as ``folder/stem_name.png`` (atomically); returns the paths in order."""
    folder = Path(folder)
    return [write_png(folder / f"{stem}_{name}.png", picture) for name, picture in pictures.items()]

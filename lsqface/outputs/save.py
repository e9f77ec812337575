"""Write one face of a Reconstruction to disk: mesh files, parameters, maps and pictures.

Files for a face named ``STEM`` in folder ``OUT`` (each written atomically):

    STEM.obj                               mesh with vertex colours (obj)
    STEM_texture.png (+ STEM.mtl)          the photo in the mesh's UV space; with obj, the OBJ's texture (texture)
    STEM.ply                               mesh with vertex colours (ply)
    STEM.json                              every parameter, schema ``lsqface-reconstruction/1`` (json)
    STEM.npz                               the network's maps and the framing (npz)
    STEM_*.png, STEM_sheet.png             pictures and their contact sheet (pictures)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from lsqface.outputs.export import TEXTURE_COMPRESS_LEVEL, write_json, write_npz, write_obj, write_ply, write_png
from lsqface.reconstruct import Reconstruction

#: What ``lsqface reconstruct --save`` accepts (all of them by default). The photo texture is its own kind:
#: mapping the photo onto the mesh (a z-buffer of the mesh over the photo) costs several times the OBJ's text,
#: so ``--save json,obj`` leaves it out (docs/performance.md).
SAVE_KINDS = ("obj", "texture", "ply", "json", "npz", "pictures")
JSON_SCHEMA_NAME = "lsqface-reconstruction/1"


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy()


def _to_photo(photo_scale: tuple[float, float]) -> np.ndarray:
    """(3, 3) decoded-image pixels -> the photo's own pixels (see :func:`lsqface.data.images.read_photo`)."""
    return np.diag([float(photo_scale[0]), float(photo_scale[1]), 1.0])


def reconstruction_parameters(reconstruction: Reconstruction, index: int, image_name: str = "",
                              photo_scale: tuple[float, float] = (1.0, 1.0)) -> dict:
    """The JSON-ready parameters of face ``index`` (schema ``lsqface-reconstruction/1``, see the README).

    Pixels (camera, landmarks, image size) are the photo's own: ``photo_scale`` is the photo's pixels
    per pixel of the image that was reconstructed (a JPEG over the pixel limit is decoded smaller).
    """
    r = reconstruction
    yaw, pitch, roll = (float(value) for value in _array(r.pose[index]))
    height, width = r.image_sizes[index]
    scale_x, scale_y = (float(value) for value in photo_scale)
    height, width = round(height * scale_y), round(width * scale_x)
    to_photo = _to_photo(photo_scale)
    return {
        "schema": JSON_SCHEMA_NAME,
        "image": image_name,
        "image_size": {"height": int(height), "width": int(width)},
        "units": {
            "length": "millimetre",
            "angle": "degree",
            "pixel": "original image pixels; pixel (column j, row i) has its centre at (j + 0.5, i + 0.5)",
        },
        "camera": {
            "projection": "x ~ K (R X + t), X in model space (mm), x in pixels",
            "intrinsics": to_photo @ _array(r.intrinsics[index]),
            "rotation": _array(r.rotation[index]),
            "translation": _array(r.translation[index]),
        },
        "pose": {"yaw": yaw, "pitch": pitch, "roll": roll},
        "coefficients": {
            "identity": _array(r.identity[index]),
            "expression": _array(r.expression[index]),
            "albedo": _array(r.albedo_coefficients[index]),
        },
        "inverse_lighting": _array(r.inverse_lighting[index]),
        "landmarks_68": _array(r.landmarks_68[index]) * [scale_x, scale_y],
        "landmarks_5": _array(r.landmarks_5[index]) * [scale_x, scale_y],
        "mesh": {"vertices": int(r.vertices.shape[1]), "triangles": int(r.triangles.shape[0])},
        "confident_fraction": float(r.confident_fraction()[index]),
        **status_fields(r, index),
    }


def status_fields(reconstruction: Reconstruction, index: int) -> dict:
    """``status``, ``status_reason`` and ``plausibility`` (the measures behind them) of face ``index``."""
    r = reconstruction
    if not r.status:
        return {}
    return {"status": r.status[index], "status_reason": r.status_reason[index],
            "plausibility": r.measures.record(index) if r.measures is not None else {}}


def output_names(stem: str, kinds: Iterable[str] = SAVE_KINDS) -> list[str]:
    """The file names :func:`save_reconstruction` writes for a face named ``stem`` (see the module docstring)."""
    from lsqface.outputs.pictures import PICTURE_NAMES

    kinds = set(kinds)
    names: list[str] = []
    if "obj" in kinds:
        names.append(f"{stem}.obj")
    if "obj" in kinds and "texture" in kinds:
        names.append(f"{stem}.mtl")
    if "texture" in kinds:
        names.append(f"{stem}_texture.png")
    names += [f"{stem}.{kind}" for kind in ("ply", "json", "npz") if kind in kinds]
    if "pictures" in kinds:
        names += [f"{stem}_{name}.png" for name in (*PICTURE_NAMES, "sheet")]
    return names


def save_reconstruction(
    reconstruction: Reconstruction,
    index: int,
    photo: np.ndarray,
    folder: str | Path,
    stem: str,
    kinds: Iterable[str] = SAVE_KINDS,
    image_name: str = "",
    picture_side: int | None = None,
    photo_scale: tuple[float, float] = (1.0, 1.0),
    extra: dict | None = None,
) -> list[Path]:
    """Write the files of face ``index`` (see the module docstring); returns the paths written.

    A fit that is not shaped like a face (``reconstruction.face_like``) is written all the same,
    its status in the JSON, but its texture is the fitted colour (the photo is not mapped onto a
    mesh that is not a face) and its pictures are marked and not rendered (lsqface.outputs.pictures).

    Args:
        photo: (H, W, 3) float in [0, 1] or uint8 (as :func:`lsqface.data.images.read_photo` keeps an 8-bit
            file), the original image (for the texture and the pictures).
        picture_side: longest side of the pictures drawn over the photo, pixels; None for
            ``lsqface.outputs.pictures.PICTURE_SIDE`` (1024), 0 for the photo's own size.
        photo_scale: the file's pixels per pixel of ``photo`` along x and y, when the file was decoded
            smaller (:func:`lsqface.data.images.read_photo`): the JSON and NPZ give the file's pixels.
        extra: more top-level JSON fields (``framing``: how the face was found, see the schema).
    """
    folder = Path(folder)
    kinds = set(kinds)
    r = reconstruction
    written: list[Path] = []
    vertices = _array(r.vertices[index])
    triangles = r.triangles.cpu().numpy()
    colours = _array(r.colour[index])
    texture = None
    if "texture" in kinds or "pictures" in kinds:
        from lsqface.outputs.texture import photo_texture

        # One texture serves the OBJ and the "uv_photo" picture.
        texture = photo_texture(r, index, photo, from_photo=not r.face_like or bool(r.face_like[index]))
    if "obj" in kinds:
        textured = "texture" in kinds
        written += write_obj(folder / f"{stem}.obj", vertices, triangles, texture_coords=r.vertex_uv if textured else None,
                             texture=texture[0] if textured else None, vertex_colours=colours)
    elif "texture" in kinds:
        written.append(write_png(folder / f"{stem}_texture.png", texture[0], compress_level=TEXTURE_COMPRESS_LEVEL))
    if "ply" in kinds:
        written.append(write_ply(folder / f"{stem}.ply", vertices, triangles, colours))
    if "json" in kinds:
        written.append(write_json(folder / f"{stem}.json", {**reconstruction_parameters(r, index, image_name, photo_scale), **(extra or {})}))
    if "npz" in kinds:
        written.append(write_npz(folder / f"{stem}.npz", {
            "correspondence": _array(r.correspondence[index]).astype(np.float32),
            "depth": _array(r.depth[index]).astype(np.float32),
            "confidence": _array(r.confidence[index]).astype(np.float32),
            "network_image": _array(r.network_image[index]).astype(np.float32),
            "to_network": _array(r.to_network[index]) @ np.linalg.inv(_to_photo(photo_scale)),
        }))
    if "pictures" in kinds:
        from lsqface.outputs.pictures import PICTURE_SIDE, contact_sheet, reconstruction_pictures, write_pictures

        pictures = reconstruction_pictures(r, index, photo, texture=texture,
                                           max_side=PICTURE_SIDE if picture_side is None else picture_side or None)
        status = r.status[index] if r.status else "ok"
        pictures["sheet"] = contact_sheet(pictures, status=status, reason=r.status_reason[index] if r.status else "")
        written += write_pictures(folder, stem, pictures)
    return written

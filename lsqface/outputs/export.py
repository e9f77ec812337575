"""Mesh and parameter files: OBJ (+ MTL + texture PNG), PLY, JSON and NPZ.

Every file is written to a temporary name and renamed, so an interrupted
export never leaves half a file behind.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import trimesh
from PIL import Image

from lsqface.files import atomic_path, write_bytes_atomic, write_text_atomic


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


#: zlib level of the OBJ's texture PNG: 1 encodes a 256-texel texture several times faster than PIL's 6,
#: for a file about a third larger with the same pixels.
TEXTURE_COMPRESS_LEVEL = 1


def write_png(path: str | Path, image: np.ndarray, compress_level: int = 6) -> Path:
    """Write an (H, W, 3) or (H, W) image (uint8, or float in [0, 1]) as PNG, atomically.

    ``compress_level``: zlib's 0-9 (6, PIL's default); 1 encodes a 256-texel texture several times faster,
    for a file about a third larger with the same pixels.
    """
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(image)).save(buffer, format="PNG", compress_level=compress_level)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def _rows(keyword: str, field: str, values: np.ndarray) -> str:
    """Lines ``keyword field field ...`` of a 2-D array, one per row, formatted in one call.

    ``field`` is a printf format per value ("%.6f", "%d", or "%d/%d" for pairs of values), as
    ``f"{value:.6f}"`` formats; one ``%`` over the whole array is 20-50 times faster than a
    string per value, and its text is the same (tests/outputs/test_export.py).
    """
    values = np.asarray(values)
    if values.size == 0:
        return ""
    if field == "%.6f":
        return _fixed_rows(keyword, values)
    per_row = values.shape[1] // field.count("%")
    line = keyword + (" " + field) * per_row + "\n"
    return (line * values.shape[0]) % tuple(values.ravel().tolist())


# "ddd" for 0..999 packed in a uint32 each (bytes d d d 0): three digits per np.take.
_THREE_DIGITS = np.frombuffer(b"".join(f"{number:03d}\0".encode() for number in range(1000)), np.uint32)


def _fixed_rows(keyword: str, values: np.ndarray) -> str:
    """:func:`_rows` with ``"%.6f"``: the same text as Python's formatting, built by numpy (1.6x faster).

    Each value's digits come from its rounding to millionths, computed exactly: the magnitude is split
    into two halves of 26 and 27 bits, whose products with 10^6 (15625 x 2^6) are exact, and the integer
    nearest to their sum is checked against them. A value within 1e-9 of a tie between two roundings,
    not finite, or of 10^12 or more (no exact integer of millionths in int64 arithmetic here) has its
    row formatted by Python instead; so every row is the text of ``f"{value:.6f}"`` per value
    (tests/outputs/test_export.py), negative zero and values that round to it keeping their sign.
    """
    values = np.asarray(values, dtype=np.float64)
    rows, columns = values.shape
    flat = values.ravel()
    magnitude = np.abs(flat)
    plain = np.isfinite(flat) & (magnitude < 1e12)
    magnitude[~plain] = 0.0
    split = 134217729.0 * magnitude  # Veltkamp's split: 2^27 + 1
    high = split - (split - magnitude)
    low = magnitude - high
    high *= 1e6
    low *= 1e6
    rounded = np.rint(high + low)
    plain &= np.abs((high - rounded) + low) < 0.5 - 1e-9  # the exact product is nearer to it than to any other
    integer, fraction = np.divmod(rounded.astype(np.int64), 1_000_000)
    chunks = max(1, -(-len(str(int(integer.max()))) // 3))  # groups of three digits of the integer part
    width = 2 + 3 * chunks + 1 + 6  # " -ddd.dddddd" before leaving out the absent sign and leading zeros
    point = 2 + 3 * chunks
    prefix = len(keyword)
    chars = np.empty((rows, prefix + columns * width + 1), np.uint8)
    kept = np.ones(chars.shape, bool)
    chars[:, :prefix] = np.frombuffer(keyword.encode(), np.uint8)
    chars[:, -1] = ord("\n")
    fields = chars[:, prefix:-1].reshape(rows, columns, width)
    kept_fields = kept[:, prefix:-1].reshape(rows, columns, width)
    fields[..., 0] = ord(" ")
    fields[..., 1] = ord("-")
    kept_fields[..., 1] = np.signbit(flat).reshape(rows, columns)
    fields[..., point] = ord(".")

    def put(start: int, numbers: np.ndarray) -> None:
        fields[..., start:start + 3] = np.take(_THREE_DIGITS, numbers).view(np.uint8).reshape(rows, columns, 4)[..., :3]

    rest = integer
    for chunk in range(chunks - 1, -1, -1):
        rest, part = np.divmod(rest, 1000)
        put(2 + 3 * chunk, part)
    integer = integer.reshape(rows, columns)
    for digit in range(3 * chunks - 1):  # leading zeros of the integer part are left out, not its last digit
        kept_fields[..., 2 + digit] = integer >= 10 ** (3 * chunks - 1 - digit)
    thousandths, millionths = np.divmod(fraction, 1000)
    put(point + 1, thousandths)
    put(point + 4, millionths)
    text = chars[kept].tobytes().decode("ascii")
    if plain.all():
        return text
    lines = text.splitlines(keepends=True)
    for row in np.unique(np.nonzero(~plain)[0] // columns):
        lines[row] = keyword + "".join(f" {value:.6f}" for value in values[row]) + "\n"
    return "".join(lines)


_MODEL_LINES: dict = {}


def _model_rows(keyword: str, field: str, values: np.ndarray) -> str:
    """:func:`_rows` of an array that is the same for every face of a face model (texture coordinates,
    triangles), formatted once (a cache of the 16 latest)."""
    values = np.ascontiguousarray(values)
    key = (keyword, field, values.shape, values.dtype.str, hash(values.tobytes()))
    text = _MODEL_LINES.get(key)
    if text is None:
        if len(_MODEL_LINES) >= 16:
            _MODEL_LINES.clear()
        text = _MODEL_LINES[key] = _rows(keyword, field, values)
    return text


def write_obj(
    path: str | Path,
    vertices: np.ndarray,
    triangles: np.ndarray,
    *,
    texture_coords: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    vertex_colours: np.ndarray | None = None,
) -> list[Path]:
    """Write a Wavefront OBJ with optional per-vertex colours and a texture (MTL + PNG beside it).

    The OBJ is written by hand because it carries both a texture and the common
    ``v x y z r g b`` vertex-colour extension, which no mesh library writes together.

    Args:
        vertices: (V, 3) positions (millimetres, camera space).
        triangles: (F, 3) vertex indices, zero-based.
        texture_coords: (V, 2) UV coordinates in [0, 1] with v growing downwards
            (lsqface's UV convention); written as OBJ ``vt`` with v flipped upwards.
        texture: (S, S, 3) texture image in UV space (uint8, or float in [0, 1]).
        vertex_colours: (V, 3) colours in [0, 1].

    Returns:
        The files written: the OBJ, then the MTL and PNG if a texture was given.
    """
    path = Path(path)
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    written = []
    lines = ["# written by lsqface\n"]
    textured = texture is not None and texture_coords is not None
    if textured:
        material_path = path.with_suffix(".mtl")
        texture_path = path.with_name(path.stem + "_texture.png")
        lines.append(f"mtllib {material_path.name}\n")
    if vertex_colours is not None:
        colours = np.clip(np.asarray(vertex_colours, dtype=np.float64), 0.0, 1.0)
        lines.append(_rows("v", "%.6f", np.concatenate([vertices, colours], axis=1)))
    else:
        lines.append(_rows("v", "%.6f", vertices))
    if textured:
        coords = np.asarray(texture_coords, dtype=np.float64)
        lines.append(_model_rows("vt", "%.6f", np.stack([coords[:, 0], 1.0 - coords[:, 1]], axis=1)))
        lines.append("usemtl face\n")
        lines.append(_model_rows("f", "%d/%d", np.repeat(triangles + 1, 2, axis=1)))
    else:
        lines.append(_model_rows("f", "%d", triangles + 1))
    write_text_atomic(path, "".join(lines))
    written.append(path)
    if textured:
        write_png(texture_path, texture, compress_level=TEXTURE_COMPRESS_LEVEL)
        material = (
            "newmtl face\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
            f"illum 1\nmap_Kd {texture_path.name}\n"
        )
        write_text_atomic(material_path, material)
        written += [material_path, texture_path]
    return written


def write_ply(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, vertex_colours: np.ndarray | None = None) -> Path:
    """Write a binary PLY with optional per-vertex colours (V, 3) in [0, 1], through trimesh."""
    mesh = trimesh.Trimesh(vertices=np.asarray(vertices), faces=np.asarray(triangles), process=False)
    if vertex_colours is not None:
        rgba = np.concatenate([_to_uint8(vertex_colours), np.full((len(vertices), 1), 255, np.uint8)], axis=1)
        mesh.visual.vertex_colors = rgba
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type="ply")
    return Path(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def write_json(path: str | Path, values: Mapping[str, Any]) -> Path:
    """Write ``values`` (numpy arrays become nested lists) as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(_jsonable(values), indent=1) + "\n")
    return Path(path)


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays to a compressed NPZ, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **{key: np.asarray(value) for key, value in arrays.items()})
    return Path(path)

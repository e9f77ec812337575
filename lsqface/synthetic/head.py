"""The whole ICT-FaceKit head for rendering: scalp, ears, neck, eyes, mouth interior, teeth, eyelashes.

The fitted face model (:mod:`lsqface.morphable.ict`) keeps only the narrow face
region (vertices 0-6705), because in a photo the rest is hair, shadow or
clothing that a skin albedo cannot explain. A training image must still show
everything around that region, or the network learns that a face is a floating
mask. This module keeps every opaque part of the ICT head with its identity and
expression bases, in the same units and coefficients as the fitted model, so
one set of coefficients poses both: the first 6,706 vertices are the fitted
model's own.

ICT-FaceKit's geometry parts (its README, "Face Model Topology"; vertex index
ranges, end exclusive)::

    face 0-9409 (narrow fitted region 0-6706)   head and neck 9409-11248
    mouth socket 11248-13294                     eye sockets 13294-14062
    gums and tongue 14062-17039                  teeth 17039-21451
    eyeballs 21451-24591                         lacrimal fluid, eye blend, eye occlusion 24591-25351
    eyelashes 25351-26719

The lacrimal fluid, eye blend and eye occlusion layers are transparent overlays
in ICT's own renderer and are left out.

The triangle list starts with the fitted model's triangles in the fitted model's
order, so a rasterised triangle id below ``face_triangle_count`` is a pixel of
the fitted face and its correspondence is the fitted UV-3DMM's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsqface.errors import FaceModelError
from lsqface.files import atomic_path, cache_dir

#: Part codes, per vertex.
FACE, SKIN, HAIR_SCALP, MOUTH, EYE_SOCKET, GUMS, TEETH, EYEBALL, EYELASH = range(9)
#: Vertex ranges of the opaque parts (end exclusive), by part code.
PART_RANGES = (
    (SKIN, 6706, 11248),  # the face area outside the fitted region, then head and neck
    (MOUTH, 11248, 13294),
    (EYE_SOCKET, 13294, 14062),
    (GUMS, 14062, 17039),
    (TEETH, 17039, 21451),
    (EYEBALL, 21451, 24591),
    (EYELASH, 25351, 26719),
)
TRANSPARENT_RANGE = (24591, 25351)
HEAD_VERTEX_COUNT = 26719
FITTED_VERTEX_COUNT = 6706
CACHE_FORMAT_VERSION = 1
_ARRAYS = ("shape_mean", "identity_basis", "expression_basis", "triangles", "part", "normals", "eyeball_centre")


@dataclass(frozen=True)
class HeadModel:
    """The opaque ICT head, in millimetres, with the fitted model's coefficients.

    Attributes:
        shape_mean: (V, 3) neutral head, ICT axes (x to the subject's left, y up, z out of the face).
        identity_basis: (V, 3, N_id) and expression_basis: (V, 3, N_exp), as the fitted model's
            (the same unit-variance identity and the same expression prior).
        triangles: (F, 3) int64; the first ``face_triangle_count`` are the fitted model's.
        face_triangle_count: how many triangles belong to the fitted face.
        part: (V,) int8 part code (FACE, SKIN, ...).
        normals: (V, 3) unit outward normals of the neutral head (for hair volume and shells).
        eyeball_centre: (2, 3) centres of the two eyeballs (left, right) in the neutral head.
    """

    shape_mean: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    triangles: np.ndarray
    face_triangle_count: int
    part: np.ndarray
    normals: np.ndarray
    eyeball_centre: np.ndarray

    @property
    def n_vertices(self) -> int:
        return int(self.shape_mean.shape[0])


def _vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    face_normals = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _outward(vertices: np.ndarray, triangles: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Triangles wound so that their normals point away from ``centre`` on the whole (a closed-ish part)."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    outward = ((a + b + c) / 3.0 - centre) * normals
    return triangles if outward.sum() >= 0 else triangles[:, [0, 2, 1]]


def build_head(source: str | os.PathLike, face_triangles: np.ndarray, expression_std: float = 0.5) -> HeadModel:
    """The opaque ICT head from an ICT-FaceKit source (archive, zip or folder).

    Args:
        source: as :func:`lsqface.morphable.ict.load_ict` reads it.
        face_triangles: (F_face, 3) the fitted model's triangles (vertices < 6706), kept first and as they are.
        expression_std: the fitted model's expression prior (its basis is (blendshape - neutral) * std).

    Raises:
        FaceModelError: the source is not a complete ICT-FaceKit FaceXModel.
    """
    from lsqface.morphable import ict

    path = Path(source)
    vertices_by_file: dict[str, np.ndarray] = {}
    vertex_indices = None
    neutral_bytes = None
    for name, data in ict._iter_model_files(path):
        if name == ict.VERTEX_INDICES:
            vertex_indices = json.loads(data.decode("utf-8"))
            continue
        if name == ict.NEUTRAL_MESH:
            neutral_bytes = data
        vertices, total = ict.read_obj_vertices(data)
        if total != HEAD_VERTEX_COUNT:
            raise FaceModelError(f"{name} in {path} has {total} vertices instead of {HEAD_VERTEX_COUNT}; "
                                 "use the unmodified ICT-FaceKit FaceXModel files.")
        vertices_by_file[name] = vertices
    if neutral_bytes is None or vertex_indices is None:
        raise FaceModelError(f"{path} is not a complete ICT-FaceKit FaceXModel; pass the ICT-FaceKit .tar.xz, zip or folder.")
    scale = ict.CENTIMETRES_TO_MILLIMETRES
    neutral = vertices_by_file[ict.NEUTRAL_MESH] * scale
    names = [str(name) for name in vertex_indices["expressions"]]
    try:
        identity = np.stack([vertices_by_file[f"identity{i:03d}.obj"] * scale - neutral for i in range(ict.IDENTITY_COUNT)], axis=2)
        expression = np.stack([(vertices_by_file[f"{name}.obj"] * scale - neutral) * expression_std for name in names], axis=2)
    except KeyError as error:
        raise FaceModelError(f"{path} is not a complete ICT-FaceKit FaceXModel: {error.args[0]} is missing.") from error

    _, polygons = ict.read_obj_mesh(neutral_bytes)
    part = np.full(HEAD_VERTEX_COUNT, FACE, dtype=np.int8)
    for code, start, end in PART_RANGES:
        part[start:end] = code
    part[TRANSPARENT_RANGE[0]:TRANSPARENT_RANGE[1]] = -1
    # Every polygon outside the fitted region that has no transparent vertex.
    kept = [faces[(faces >= FITTED_VERTEX_COUNT).any(axis=1) & (part[faces] >= 0).all(axis=1)] for faces in polygons]
    rest = ict.split_polygons([faces for faces in kept if len(faces)], neutral)
    centre = neutral[part >= 0].mean(axis=0)
    groups = []
    for code in sorted({int(c) for c in part[rest[:, 0]]}):
        chosen = rest[part[rest[:, 0]] == code]
        if code == EYEBALL:  # two balls: orient each about its own centre
            for start, end in ((21451, 23021), (23021, 24591)):
                ball = chosen[(chosen[:, 0] >= start) & (chosen[:, 0] < end)]
                groups.append(_outward(neutral, ball, neutral[start:end].mean(axis=0)))
        elif code in (FACE, SKIN, EYELASH):  # FACE: polygons that straddle the fitted region's edge
            groups.append(_outward(neutral, chosen, centre))
        else:  # mouth and eye sockets, gums, teeth: seen from inside the head; keep ICT's winding
            groups.append(chosen)
    face_triangles = np.asarray(face_triangles, dtype=np.int64)
    triangles = np.concatenate([face_triangles] + groups).astype(np.int64)
    normals = _vertex_normals(neutral, triangles)
    eyeball_centre = np.stack([neutral[21451:23021].mean(axis=0), neutral[23021:24591].mean(axis=0)])
    return HeadModel(
        shape_mean=neutral.astype(np.float32), identity_basis=identity.astype(np.float32),
        expression_basis=expression.astype(np.float32), triangles=triangles, face_triangle_count=len(face_triangles),
        part=part, normals=normals.astype(np.float32), eyeball_centre=eyeball_centre.astype(np.float32),
    )


def head_cache_path(source: str | os.PathLike, face_triangles: np.ndarray, expression_std: float = 0.5) -> Path:
    """Where the head built from ``source`` is cached: ``cache_dir() / "heads" / KEY.npz``."""
    from lsqface.morphable.sources import source_fingerprint

    settings = {
        "format": CACHE_FORMAT_VERSION, "source": source_fingerprint(source), "expression_std": float(expression_std),
        "face_triangles": hashlib.sha256(np.ascontiguousarray(face_triangles, dtype=np.int64).tobytes()).hexdigest(),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()
    return cache_dir() / "heads" / f"{key}.npz"


def load_head(source: str | os.PathLike | None, face_triangles: np.ndarray, expression_std: float = 0.5) -> HeadModel:
    """The head of an ICT-FaceKit source, from its cache or built (about 10 s) and cached (80 MB).

    Args:
        source: the ICT-FaceKit archive, zip or folder; None finds it as ``lsqface model build`` does.
        face_triangles: (F_face, 3) the fitted model's triangles.
        expression_std: the fitted model's expression prior.

    Raises:
        FaceModelError: no ICT-FaceKit source (a Basel Face Model has no head to render).
    """
    from lsqface.morphable.sources import resolve_source

    path = resolve_source(source)
    if path.suffix.lower() == ".h5":
        raise FaceModelError(f"{path} is a Basel Face Model; the whole-head generator needs the ICT-FaceKit model.")
    cache = head_cache_path(path, face_triangles, expression_std)
    if cache.exists():
        try:
            with np.load(cache) as arrays:
                values = {name: arrays[name] for name in _ARRAYS}
                count = int(arrays["face_triangle_count"])
            return HeadModel(face_triangle_count=count, **values)
        except (OSError, KeyError, ValueError):
            pass  # rebuilt below
    head = build_head(path, face_triangles, expression_std)
    with atomic_path(cache) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, face_triangle_count=np.array(head.face_triangle_count),
                     **{name: getattr(head, name) for name in _ARRAYS})
    return head

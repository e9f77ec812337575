"""ICT-FaceKit (light model, MIT licence) as a :class:`MorphableModel` (seed A; DESIGN.md "3DMM and UV-3DMM").

Reads ``FaceXModel/`` from the published ``.tar.xz``, an unpacked folder, or a
GitHub zip of the ICT-FaceKit repository, without extracting anything to disk.

- Units: ICT's OBJs are in centimetres; everything here is in millimetres.
  Axes as in ICT: x towards the subject's left (image right), y up, z out of
  the face towards the viewer.
- Region: the face area of ICT's README ("full": vertices 0-9408, polygons
  0-9229; "narrow": vertices 0-6705, polygons 0-6559). Quads are split into two
  triangles along their shorter diagonal, oriented so normals point out of the
  face (towards +z for the front of the face).
- Identity: ``identityNNN.obj`` are complete meshes at one standard deviation
  of ICT's PCA (ICT's own ``randomize_identity`` draws weights from
  ``numpy.random.normal``); mode = identity - neutral, already unit-variance.
- Expression: the 53 ARKit-style blendshapes listed under ``"expressions"`` in
  ``vertex_indices.json`` have weights in [0, 1]; our prior is a zero-mean
  Gaussian with standard deviation ``expression_std`` (default 0.5) per
  blendshape, so the basis is (blendshape - neutral) * expression_std and a
  full activation (weight 1) is two standard deviations.
- Albedo: ICT's light model has none; :func:`lsqface.morphable.albedo.laplacian_albedo`.
"""

from __future__ import annotations

import io
import json
import lzma
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from lsqface.errors import FaceModelError
from lsqface.morphable import albedo as albedo_space
from lsqface.morphable.model import MorphableModel

CENTIMETRES_TO_MILLIMETRES = 10.0
ICT_VERTEX_COUNT = 26719
IDENTITY_COUNT = 100
NEUTRAL_MESH = "generic_neutral_mesh.obj"
VERTEX_INDICES = "vertex_indices.json"
MODEL_FOLDER = "FaceXModel"
DEFAULT_EXPRESSION_STD = 0.5

# ICT README, "Face Area Details": region -> (number of vertices, number of polygons); both are prefixes.
FACE_REGIONS = {"full": (9409, 9230), "narrow": (6706, 6560)}

#: The region lsqface fits by default: the narrow face area (forehead to chin, cheek to cheek),
#: which, like the Basel Face Model's face, leaves out scalp, ears and neck: in photos those
#: are hair, shadow or clothing that a skin albedo cannot explain.
DEFAULT_REGION = "narrow"

#: ICT README, "Facial Landmarks": Multi-PIE 68-point indices, 0-based.
ICT_LANDMARKS_68 = (
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509,
    978, 4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360,
    1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732,
    5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
)  # fmt: skip

#: The 68 landmark vertices lsqface reports for the ICT model: ICT's list with the inner points
#: (17-67) moved to the vertices whose projections lie nearest dlib's 68-point predictor (the iBUG
#: 300-W convention) on fits of the shipped network to the real-photo benchmark's validation split
#: (docs/scripts/landmark_vertices.py, docs/evaluation.md "Landmark vertices"): the nose tip 6 mm
#: lower on the nose, the eye points on the lid margins, the lip points on the lips' outline; left
#: and right points mirror each other. The jaw line (0-16), a silhouette, keeps ICT's vertices.
LANDMARKS_68 = ICT_LANDMARKS_68[:17] + (
    383, 78, 1033, 102, 2003, 4203, 2343, 3253, 2319, 2624,
    971, 1348, 4839, 4553, 68, 2075, 1178, 4269, 2309,
    6604, 1576, 1536, 596, 6596, 6594, 2837, 3750, 3790, 6562, 6552, 6554,
    5926, 6637, 6655, 5535, 6691, 6673, 6431, 6358, 6479, 5520, 5975, 5853, 6640, 5762, 5533, 6267, 6676, 6699, 6632, 6663,
)  # fmt: skip


def five_landmarks_from_68(landmarks_68: np.ndarray) -> np.ndarray:
    """The 5 CelebA/MAFL landmarks (5, 6) from Multi-PIE 68 vertex indices (68,).

    Rows: image-left eye centre (mean of 68-point 36..41), image-right eye centre
    (42..47), nose tip (30), left mouth corner (48), right mouth corner (54);
    single vertices are repeated six times so every row is a mean of six.
    """
    landmarks_68 = np.asarray(landmarks_68, dtype=np.int64)
    return np.stack(
        [
            landmarks_68[36:42],
            landmarks_68[42:48],
            np.repeat(landmarks_68[30], 6),
            np.repeat(landmarks_68[48], 6),
            np.repeat(landmarks_68[54], 6),
        ]
    ).astype(np.int64)


def read_obj_vertices(data: bytes, count: int | None = None) -> tuple[np.ndarray, int]:
    """The ``v x y z`` records of an OBJ file, fast (no faces, normals or texture coordinates).

    Args:
        data: the OBJ file's bytes.
        count: parse only the first ``count`` vertices (all if None).

    Returns:
        vertices: (count or V, 3) float64, in the file's units.
        total: the number of vertex records in the file.
    """
    # Fast path: ICT writes its vertex records as one contiguous block, so count them with
    # bytes.count and split only the first `count` lines after the first one.
    starts_with_vertex = data.startswith(b"v ")
    total = data.count(b"\nv ") + int(starts_with_vertex)
    wanted = total if count is None else min(count, total)
    start = 0 if starts_with_vertex else data.find(b"\nv ") + 1
    lines = data[start:].split(b"\n", wanted)[:wanted] if total else []
    if all(line.startswith(b"v ") for line in lines):
        records = [line[2:] for line in lines]
    else:  # vertex records interleaved with other records: filter every line
        records = [line[2:] for line in data.split(b"\n") if line.startswith(b"v ")][:wanted]
    tokens = b" ".join(records).split()
    if len(tokens) != 3 * len(records):
        raise FaceModelError(
            "An ICT-FaceKit OBJ has vertex records that are not three numbers 'v x y z'; "
            "use the unmodified FaceXModel files from ICT-FaceKit."
        )
    try:
        vertices = np.array(tokens, dtype=np.float64).reshape(-1, 3)
    except ValueError as error:
        raise FaceModelError(
            f"An ICT-FaceKit OBJ has an unreadable vertex record ({error}); use the unmodified FaceXModel files."
        ) from error
    return vertices, total


def read_obj_mesh(data: bytes) -> tuple[np.ndarray, list[np.ndarray]]:
    """Vertices (V, 3) and polygon arrays (each (F_i, 3) or (F_i, 4), global vertex indices) of an OBJ, via trimesh."""
    import trimesh

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trimesh warns about the texture coordinates it does not need here
        loaded = trimesh.exchange.obj.load_obj(
            io.BytesIO(data), maintain_order=True, skip_materials=True, group_material=False, split_object=False
        )
    geometries = list(loaded["geometry"].values()) if "geometry" in loaded else [loaded]
    if not geometries:
        raise FaceModelError("The ICT-FaceKit neutral mesh has no geometry; use the unmodified FaceXModel files.")
    vertices = max((np.asarray(g["vertices"], dtype=np.float64) for g in geometries), key=len)
    polygons = []
    for geometry in geometries:
        # With maintain_order every per-material geometry keeps the file's vertex order
        # (a prefix of it), so its face indices are global.
        part = np.asarray(geometry["vertices"], dtype=np.float64)
        if not np.array_equal(part, vertices[: len(part)]):
            raise FaceModelError(
                "The ICT-FaceKit neutral mesh could not be read with its vertex order kept; "
                "use the unmodified FaceXModel files."
            )
        polygons.append(np.asarray(geometry["faces"], dtype=np.int64))
    return vertices, polygons


def split_polygons(polygons: list[np.ndarray], vertices: np.ndarray) -> np.ndarray:
    """Triangles (F, 3) from triangle and quad arrays, quads cut along their shorter diagonal."""
    triangles = []
    for faces in polygons:
        if faces.shape[1] == 3:
            triangles.append(faces)
        elif faces.shape[1] == 4:
            a, b, c, d = faces.T
            diagonal_ac = np.linalg.norm(vertices[a] - vertices[c], axis=1)
            diagonal_bd = np.linalg.norm(vertices[b] - vertices[d], axis=1)
            use_ac = diagonal_ac <= diagonal_bd
            first = np.where(use_ac[:, None], np.stack([a, b, c], 1), np.stack([a, b, d], 1))
            second = np.where(use_ac[:, None], np.stack([a, c, d], 1), np.stack([b, c, d], 1))
            triangles += [first, second]
        else:
            raise FaceModelError(
                f"The ICT-FaceKit neutral mesh has {faces.shape[1]}-sided polygons; use the unmodified FaceXModel files."
            )
    return np.concatenate(triangles).astype(np.int64)


def orient_towards_viewer(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Triangles (F, 3) reordered, if needed, so the face's total vector area points towards +z.

    The total vector area ``sum_f (b - a) x (c - a) / 2`` of an open face-like
    surface is its projected area onto the image plane, positive along +z when
    the triangles are counter-clockwise seen from the viewer.
    """
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    vector_area = np.cross(b - a, c - a).sum(axis=0)
    if vector_area[2] < 0:
        return triangles[:, [0, 2, 1]]
    return triangles


def _is_model_member(name: str) -> str | None:
    """The file name inside ``FaceXModel/`` for an archive member name, or None."""
    parts = name.replace("\\", "/").strip("/").split("/")
    if len(parts) >= 2 and parts[-2] == MODEL_FOLDER and (parts[-1].endswith(".obj") or parts[-1] == VERTEX_INDICES):
        return parts[-1]
    return None


def _iter_model_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (file name, bytes) for every OBJ and vertex_indices.json inside FaceXModel/ of a source."""
    if path.is_dir():
        folder = path if path.name == MODEL_FOLDER or (path / NEUTRAL_MESH).exists() else path / MODEL_FOLDER
        if not folder.is_dir():
            raise FaceModelError(
                f"{path} is a folder without FaceXModel/ or {NEUTRAL_MESH}; pass the ICT-FaceKit "
                "FaceXModel folder, the folder containing it, its .tar.xz or the GitHub zip."
            )
        for file in sorted(folder.iterdir()):
            if file.is_file() and (file.suffix == ".obj" or file.name == VERTEX_INDICES):
                yield file.name, file.read_bytes()
        return
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = _is_model_member(info.filename)
                if name is not None and not info.is_dir():
                    yield name, archive.read(info)
        return
    # Stream the tar (any compression): members are read in archive order, none written to disk.
    with tarfile.open(path, mode="r|*") as archive:
        for member in archive:
            name = _is_model_member(member.name)
            if name is not None and member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    yield name, handle.read()


def load_ict(
    path: str | Path,
    region: str = DEFAULT_REGION,
    *,
    expression_std: float = DEFAULT_EXPRESSION_STD,
    albedo_modes_per_channel: int = albedo_space.DEFAULT_MODES_PER_CHANNEL,
    landmarks_68: np.ndarray | None = None,
) -> MorphableModel:
    """The ICT-FaceKit light model restricted to a face region, in millimetres, unit-variance coefficients.

    Args:
        path: ``ICT-FaceKit-FaceXModel.tar.xz`` (or any tar), a ``FaceXModel/``
            folder or a folder containing it, or a GitHub zip of ICT-FaceKit.
        region: ``"full"`` (9,409 vertices) or ``"narrow"`` (6,706 vertices), ICT README "Face Area Details".
        expression_std: prior standard deviation of each blendshape weight.
        albedo_modes_per_channel: Laplacian eigenfunctions per colour channel.
        landmarks_68: (68,) vertex indices replacing :data:`LANDMARKS_68` (ICT's own list: :data:`ICT_LANDMARKS_68`).

    Returns:
        MorphableModel with V region vertices: identity_basis (V, 3, 100),
        expression_basis (V, 3, 53), albedo_basis (V, 3, 3 * albedo_modes_per_channel).

    Raises:
        FaceModelError: the path is missing, unreadable, truncated, not ICT-FaceKit, or has wrong vertex counts.
    """
    path = Path(path)
    if region not in FACE_REGIONS:
        raise FaceModelError(f"Unknown ICT-FaceKit face region {region!r}; use one of {sorted(FACE_REGIONS)}.")
    if not path.exists():
        raise FaceModelError(f"The ICT-FaceKit source {path} does not exist; pass an existing .tar.xz, zip or folder.")
    n_region_vertices, n_region_polygons = FACE_REGIONS[region]

    vertices_by_file: dict[str, np.ndarray] = {}
    neutral_bytes: bytes | None = None
    vertex_indices: dict | None = None
    try:
        for name, data in _iter_model_files(path):
            if name == VERTEX_INDICES:
                try:
                    vertex_indices = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as error:
                    raise FaceModelError(
                        f"{VERTEX_INDICES} in {path} is not valid JSON ({error}); use the unmodified ICT-FaceKit files."
                    ) from error
                continue
            if name == NEUTRAL_MESH:
                neutral_bytes = data
            region_vertices, total = read_obj_vertices(data, n_region_vertices)
            if total != ICT_VERTEX_COUNT:
                raise FaceModelError(
                    f"{name} in {path} has {total} vertices instead of ICT-FaceKit's {ICT_VERTEX_COUNT}; "
                    "use the unmodified FaceXModel files."
                )
            vertices_by_file[name] = region_vertices
    except (tarfile.TarError, lzma.LZMAError, EOFError, zipfile.BadZipFile, zlib_error()) as error:
        raise FaceModelError(
            f"{path} is truncated or not a readable ICT-FaceKit archive ({type(error).__name__}: {error}); "
            "download it again or pass the unpacked FaceXModel folder."
        ) from error
    except PermissionError as error:
        raise FaceModelError(f"{path} cannot be read ({error}); check its permissions.") from error
    except OSError as error:
        raise FaceModelError(f"{path} cannot be read ({error}); pass a readable ICT-FaceKit source.") from error

    missing = _missing_files(neutral_bytes, vertex_indices, vertices_by_file)
    if missing:
        raise FaceModelError(
            f"{path} is not a complete ICT-FaceKit FaceXModel: {missing} is missing; "
            "pass the ICT-FaceKit .tar.xz, the GitHub zip or the FaceXModel folder."
        )
    expression_names = tuple(str(name) for name in vertex_indices["expressions"])
    missing_expressions = [name for name in expression_names if f"{name}.obj" not in vertices_by_file]
    if missing_expressions:
        raise FaceModelError(
            f"{path} is not a complete ICT-FaceKit FaceXModel: {missing_expressions[0]}.obj is missing; "
            "pass the ICT-FaceKit .tar.xz, the GitHub zip or the FaceXModel folder."
        )

    all_vertices, polygons = read_obj_mesh(neutral_bytes)
    if len(all_vertices) != ICT_VERTEX_COUNT:
        raise FaceModelError(
            f"{NEUTRAL_MESH} in {path} has {len(all_vertices)} vertices instead of {ICT_VERTEX_COUNT}; "
            "use the unmodified FaceXModel files."
        )
    region_polygons = [faces[(faces < n_region_vertices).all(axis=1)] for faces in polygons]
    n_polygons = sum(len(faces) for faces in region_polygons)
    if n_polygons != n_region_polygons:
        raise FaceModelError(
            f"{NEUTRAL_MESH} in {path} has {n_polygons} polygons in the {region} face region instead of "
            f"{n_region_polygons}; use the unmodified FaceXModel files."
        )

    scale = CENTIMETRES_TO_MILLIMETRES
    neutral = vertices_by_file[NEUTRAL_MESH] * scale
    triangles = split_polygons(region_polygons, neutral)
    triangles = orient_towards_viewer(neutral, triangles)
    identity_basis = np.stack(
        [vertices_by_file[f"identity{i:03d}.obj"] * scale - neutral for i in range(IDENTITY_COUNT)], axis=2
    )
    expression_basis = np.stack(
        [(vertices_by_file[f"{name}.obj"] * scale - neutral) * expression_std for name in expression_names], axis=2
    )
    albedo_mean, albedo_basis = albedo_space.laplacian_albedo(
        neutral, triangles, modes_per_channel=albedo_modes_per_channel
    )

    landmarks = np.asarray(LANDMARKS_68 if landmarks_68 is None else landmarks_68, dtype=np.int64)
    if landmarks.shape != (68,) or landmarks.min() < 0 or landmarks.max() >= n_region_vertices:
        raise FaceModelError(
            f"The 68 landmarks must be 68 vertex indices in [0, {n_region_vertices}) for the {region} "
            "ICT-FaceKit face region; fix the landmark file."
        )
    return MorphableModel(
        name="ict-facekit",
        shape_mean=neutral,
        identity_basis=identity_basis,
        expression_basis=expression_basis,
        albedo_mean=albedo_mean,
        albedo_basis=albedo_basis,
        triangles=triangles,
        landmarks_68=landmarks,
        landmarks_5=five_landmarks_from_68(landmarks),
        expression_names=expression_names,
        notes={
            "source": str(path),
            "region": region,
            "units": "millimetres (ICT centimetres x 10)",
            "identity_prior": "ICT identity meshes are +1 standard deviation of ICT's PCA; mode = identity - neutral",
            "expression_prior": f"zero-mean Gaussian, standard deviation {expression_std} per blendshape weight",
            "albedo_prior": (
                f"Laplacian eigenfunctions, {albedo_modes_per_channel} per channel, "
                f"global tone std {albedo_space.DEFAULT_GLOBAL_TONE_FRACTION} x mean, "
                f"detail std {albedo_space.DEFAULT_DETAIL_FRACTION} x mean / sqrt(1 + lambda_k / lambda_1)"
            ),
        },
    )


def zlib_error() -> type[Exception]:
    """zlib.error (gzip-compressed tars and deflated zips raise it when cut short)."""
    import zlib

    return zlib.error


def _missing_files(neutral_bytes: bytes | None, vertex_indices: dict | None, vertices: dict[str, np.ndarray]) -> str:
    """The first required FaceXModel file that is missing, or ''."""
    if neutral_bytes is None:
        return f"{MODEL_FOLDER}/{NEUTRAL_MESH}"
    if vertex_indices is None or "expressions" not in vertex_indices:
        return f"{MODEL_FOLDER}/{VERTEX_INDICES} (with its 'expressions' list)"
    for i in range(IDENTITY_COUNT):
        if f"identity{i:03d}.obj" not in vertices:
            return f"{MODEL_FOLDER}/identity{i:03d}.obj"
    return ""

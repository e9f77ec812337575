"""The Basel Face Model 2017 (statismo ``.h5``) as a :class:`MorphableModel` (seed A).

Users download BFM 2017 from the University of Basel after accepting its
licence (e.g. ``model2017-1_face12_nomouth.h5``); it is never shipped.

Layout read (statismo HDF5, V vertices, F triangles)::

    shape/model/{mean (3V,), pcaBasis (3V, N_id), pcaVariance (N_id,)}
    shape/representer/{points (3, V), cells (3, F)}
    color/model/{mean (3V,), pcaBasis (3V, N_alb), pcaVariance (N_alb,)}
    expression/model/{mean (3V,), pcaBasis (3V, N_exp), pcaVariance (N_exp,)}
    metadata/landmarks/json   (optional) named landmarks with 3D coordinates

Flattened vectors are x, y, z (or r, g, b) per vertex. statismo stores the
*orthonormal* principal directions in ``pcaBasis`` and the PCA variances in
``pcaVariance`` (eos' BFM 2017 converter notes the basis columns have unit norm
and are orthogonal, and pairs them with the variances), so a unit-variance
basis is ``pcaBasis[:, k] * sqrt(pcaVariance[k])``. To be safe against a file
that stored already-scaled columns, each column is first divided by its norm.
Units: millimetres (BFM 2017 shapes) and colours in [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lsqface.errors import FaceModelError
from lsqface.morphable.model import MorphableModel

REQUIRED_DATASETS = (
    "shape/model/mean",
    "shape/model/pcaBasis",
    "shape/model/pcaVariance",
    "shape/representer/points",
    "shape/representer/cells",
    "color/model/mean",
    "color/model/pcaBasis",
    "color/model/pcaVariance",
    "expression/model/mean",
    "expression/model/pcaBasis",
    "expression/model/pcaVariance",
)
LANDMARKS_DATASET = "metadata/landmarks/json"

# BFM 2017 landmark names are the subject's sides: "right.eye" is the image-left eye.
# Each of our 5 points (image-left eye, image-right eye, nose tip, left and right mouth
# corner in the image) is the mean of these named points.
FIVE_POINT_NAMES = (
    ("right.eye.corner_outer", "right.eye.corner_inner"),
    ("left.eye.corner_inner", "left.eye.corner_outer"),
    ("center.nose.tip",),
    ("right.lips.corner",),
    ("left.lips.corner",),
)


def load_bfm2017(path: str | Path, landmarks: np.ndarray | None = None) -> MorphableModel:
    """Basel Face Model 2017 from its ``.h5``: mm, unit-variance identity, expression and albedo coefficients.

    Args:
        path: the BFM 2017 ``.h5`` file.
        landmarks: (68,) vertex indices in the Multi-PIE order (e.g. from
            :func:`lsqface.morphable.sources.read_landmark_file`). Without them,
            ``landmarks_68`` is empty (0,) and ``landmarks_5`` comes from the
            file's named landmarks if present, else is empty (0, 6);
            :func:`lsqface.morphable.sources.require_landmarks` raises where they are needed.

    Returns:
        MorphableModel with shape_mean = shape mean + expression mean (V, 3),
        identity_basis (V, 3, N_id), expression_basis (V, 3, N_exp),
        albedo_mean (V, 3), albedo_basis (V, 3, N_alb), triangles (F, 3).

    Raises:
        FaceModelError: not an HDF5 file, a dataset missing, or inconsistent shapes.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FaceModelError(f"The Basel Face Model file {path} does not exist; pass the path of the BFM 2017 .h5.")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as error:
        raise FaceModelError(f"The Basel Face Model file {path} cannot be read ({error}); check its permissions.") from error
    if not is_hdf5:
        raise FaceModelError(
            f"{path} is not an HDF5 file; pass the Basel Face Model 2017 .h5 downloaded from the University of Basel."
        )
    try:
        with h5py.File(path, "r") as handle:
            for name in REQUIRED_DATASETS:
                if name not in handle or not isinstance(handle[name], h5py.Dataset):
                    raise FaceModelError(
                        f"{path} has no dataset {name}; pass an unmodified Basel Face Model 2017 .h5 "
                        "(e.g. model2017-1_face12_nomouth.h5)."
                    )
            data = {name: np.asarray(handle[name][()]) for name in REQUIRED_DATASETS}
            landmark_text = _read_text(handle[LANDMARKS_DATASET]) if LANDMARKS_DATASET in handle else None
    except OSError as error:
        raise FaceModelError(f"{path} is a damaged HDF5 file ({error}); download the Basel Face Model again.") from error

    points = data["shape/representer/points"].astype(np.float64)
    if points.ndim != 2 or points.shape[0] != 3:
        raise FaceModelError(f"{path}: shape/representer/points has shape {points.shape}, expected (3, V); pass an unmodified BFM 2017 .h5.")
    n_vertices = points.shape[1]
    cells = data["shape/representer/cells"]
    if cells.ndim != 2 or cells.shape[0] != 3 or cells.size == 0 or cells.min() < 0 or cells.max() >= n_vertices:
        raise FaceModelError(
            f"{path}: shape/representer/cells has shape {cells.shape} or indices outside [0, {n_vertices}); "
            "pass an unmodified BFM 2017 .h5."
        )

    shape_mean = _vertex_array(path, "shape/model/mean", data["shape/model/mean"], n_vertices)
    expression_mean = _vertex_array(path, "expression/model/mean", data["expression/model/mean"], n_vertices)
    identity_basis = _unit_variance_basis(path, "shape", data, n_vertices)
    expression_basis = _unit_variance_basis(path, "expression", data, n_vertices)
    albedo_mean = _vertex_array(path, "color/model/mean", data["color/model/mean"], n_vertices)
    albedo_basis = _unit_variance_basis(path, "color", data, n_vertices)

    mean = shape_mean + expression_mean
    triangles = _oriented_triangles(mean, cells.T.astype(np.int64))

    if landmarks is not None:
        from lsqface.morphable.ict import five_landmarks_from_68

        landmarks_68 = np.asarray(landmarks, dtype=np.int64)
        if landmarks_68.shape != (68,) or landmarks_68.min() < 0 or landmarks_68.max() >= n_vertices:
            raise FaceModelError(
                f"The 68 landmarks must be vertex indices in [0, {n_vertices}) for {path.name}; fix the landmark file."
            )
        landmarks_5 = five_landmarks_from_68(landmarks_68)
        landmark_origin = "user landmark file"
    else:
        landmarks_68 = np.zeros((0,), dtype=np.int64)
        landmarks_5 = np.zeros((0, 6), dtype=np.int64)
        landmark_origin = "none (pass a 68-landmark file)"
        if landmark_text is not None:
            named = parse_named_landmarks(landmark_text, path)
            five = five_landmarks_from_named(named, points.T)  # landmarks are given on the reference mesh
            if five is not None:
                landmarks_5 = five
                landmark_origin = f"5 points from {LANDMARKS_DATASET}; 68 need a landmark file"

    return MorphableModel(
        name="bfm2017",
        shape_mean=mean,
        identity_basis=identity_basis,
        expression_basis=expression_basis,
        albedo_mean=albedo_mean,
        albedo_basis=albedo_basis,
        triangles=triangles,
        landmarks_68=landmarks_68,
        landmarks_5=landmarks_5,
        expression_names=(),
        notes={
            "source": str(path),
            "units": "millimetres",
            "scaling": "orthonormal pcaBasis columns times sqrt(pcaVariance)",
            "shape_mean": "shape/model/mean + expression/model/mean",
            "landmarks": landmark_origin,
        },
    )


def _read_text(dataset) -> str:
    value = dataset[()]
    if isinstance(value, np.ndarray):
        value = value.tobytes() if value.dtype.kind in "SUV" or value.dtype == np.uint8 else value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00")
    return str(value)


def _vertex_array(path: Path, name: str, values: np.ndarray, n_vertices: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.shape != (3 * n_vertices,):
        raise FaceModelError(
            f"{path}: {name} has {values.size} values, expected 3 x {n_vertices}; pass an unmodified BFM 2017 .h5."
        )
    return values.reshape(n_vertices, 3)


def _unit_variance_basis(path: Path, group: str, data: dict, n_vertices: int) -> np.ndarray:
    """(V, 3, N) basis with unit-variance coefficients from ``{group}/model/pcaBasis`` and ``pcaVariance``."""
    basis = np.asarray(data[f"{group}/model/pcaBasis"], dtype=np.float64)
    variance = np.asarray(data[f"{group}/model/pcaVariance"], dtype=np.float64).ravel()
    if basis.ndim != 2 or basis.shape[0] != 3 * n_vertices or basis.shape[1] != variance.size:
        raise FaceModelError(
            f"{path}: {group}/model/pcaBasis has shape {basis.shape} and pcaVariance {variance.size} values, "
            f"expected (3 x {n_vertices}, N) and N; pass an unmodified BFM 2017 .h5."
        )
    if np.any(variance < 0) or not np.all(np.isfinite(variance)):
        raise FaceModelError(f"{path}: {group}/model/pcaVariance has negative or non-finite values; pass an unmodified BFM 2017 .h5.")
    norms = np.linalg.norm(basis, axis=0)
    if np.any(norms == 0):
        raise FaceModelError(f"{path}: {group}/model/pcaBasis has an all-zero column; pass an unmodified BFM 2017 .h5.")
    scaled = basis / norms * np.sqrt(variance)
    return scaled.reshape(n_vertices, 3, -1)


def _oriented_triangles(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Triangles reordered, if needed, so the total vector area points towards +z (the viewer)."""
    from lsqface.morphable.ict import orient_towards_viewer

    return orient_towards_viewer(vertices, triangles)


def parse_named_landmarks(text: str, path: Path | str = "") -> dict[str, np.ndarray]:
    """Named 3D landmarks from BFM's ``metadata/landmarks/json``: name -> (3,) coordinates, millimetres.

    Accepts the statismo list ``[{"id": name, "coordinates": [x, y, z], ...}, ...]``
    and a plain mapping ``{name: [x, y, z]}``.
    """
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise FaceModelError(f"{path}: {LANDMARKS_DATASET} is not valid JSON ({error}); pass --landmarks FILE instead.") from error
    named = {}
    items = parsed.items() if isinstance(parsed, dict) else ((entry.get("id"), entry.get("coordinates")) for entry in parsed if isinstance(entry, dict))
    for name, coordinates in items:
        coordinates = np.asarray(coordinates, dtype=np.float64) if coordinates is not None else None
        if name is not None and coordinates is not None and coordinates.shape == (3,):
            named[str(name)] = coordinates
    return named


def five_landmarks_from_named(named: dict[str, np.ndarray], vertices: np.ndarray) -> np.ndarray | None:
    """The 5 landmarks (5, 6) as nearest vertices of ``vertices`` (V, 3) to BFM's named points, or None if any is missing.

    Each named point maps to its nearest mean-shape vertex; a row's six entries
    repeat the vertices of its named points (eye centre = mean of both eye corners).
    """
    if not all(name in named for names in FIVE_POINT_NAMES for name in names):
        return None
    rows = []
    for names in FIVE_POINT_NAMES:
        indices = [int(np.argmin(np.linalg.norm(vertices - named[name], axis=1))) for name in names]
        rows.append(np.repeat(indices, 6 // len(indices)))
    return np.stack(rows).astype(np.int64)

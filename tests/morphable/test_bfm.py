"""Basel Face Model 2017 loader on small .h5 files in BFM 2017's layout, written by the tests."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from lsqface.errors import FaceModelError
from lsqface.morphable.bfm import REQUIRED_DATASETS, load_bfm2017
from lsqface.morphable.sources import require_landmarks

N_VERTICES = 50


def _grid_mesh(n_side: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A 10 x 5 bumpy grid facing +z (x right, y up), in millimetres, and its counter-clockwise triangles."""
    xs, ys = np.meshgrid(np.linspace(-50, 50, n_side), np.linspace(-25, 25, N_VERTICES // n_side))
    z = 20 * np.exp(-(xs**2 + ys**2) / 800)
    points = np.stack([xs.ravel(), ys.ravel(), z.ravel()], axis=1)
    triangles = []
    rows = N_VERTICES // n_side
    for r in range(rows - 1):
        for c in range(n_side - 1):
            a, b, d, e = r * n_side + c, r * n_side + c + 1, (r + 1) * n_side + c, (r + 1) * n_side + c + 1
            triangles += [[a, b, e], [a, e, d]]
    return points, np.array(triangles)


def _orthonormal(rng, rows: int, columns: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((rows, columns)))
    return q


def write_bfm(path, *, drop: str | None = None, clockwise: bool = False, landmarks_json: str | None = None, seed: int = 0):
    """Write a tiny BFM 2017-layout .h5; return the arrays written."""
    rng = np.random.default_rng(seed)
    points, triangles = _grid_mesh()
    if clockwise:
        triangles = triangles[:, [0, 2, 1]]
    arrays = {
        "shape/model/mean": points.ravel().astype(np.float32),
        "shape/model/pcaBasis": _orthonormal(rng, 3 * N_VERTICES, 7).astype(np.float32),
        "shape/model/pcaVariance": np.array([400, 100, 50, 20, 9, 4, 1], np.float32),
        "shape/representer/points": points.T.astype(np.float32),
        "shape/representer/cells": triangles.T.astype(np.uint32),
        "color/model/mean": rng.uniform(0.3, 0.7, 3 * N_VERTICES).astype(np.float32),
        "color/model/pcaBasis": _orthonormal(rng, 3 * N_VERTICES, 5).astype(np.float32),
        "color/model/pcaVariance": np.array([0.5, 0.2, 0.1, 0.05, 0.01], np.float32),
        "expression/model/mean": rng.normal(0, 0.5, 3 * N_VERTICES).astype(np.float32),
        "expression/model/pcaBasis": _orthonormal(rng, 3 * N_VERTICES, 4).astype(np.float32),
        "expression/model/pcaVariance": np.array([30, 10, 3, 1], np.float32),
    }
    with h5py.File(path, "w") as handle:
        for name, value in arrays.items():
            if name != drop:
                handle.create_dataset(name, data=value)
        if landmarks_json is not None:
            handle.create_dataset("metadata/landmarks/json", data=landmarks_json)
    return arrays, triangles


def test_shapes_means_and_triangles(tmp_path):
    path = tmp_path / "model2017-tiny.h5"
    arrays, triangles = write_bfm(path)
    model = load_bfm2017(path)
    assert model.name == "bfm2017"
    assert model.shape_mean.shape == (N_VERTICES, 3)
    assert model.identity_basis.shape == (N_VERTICES, 3, 7)
    assert model.expression_basis.shape == (N_VERTICES, 3, 4)
    assert model.albedo_mean.shape == (N_VERTICES, 3) and model.albedo_basis.shape == (N_VERTICES, 3, 5)
    expected_mean = arrays["shape/model/mean"].astype(np.float64) + arrays["expression/model/mean"]
    np.testing.assert_allclose(model.shape_mean, expected_mean.reshape(-1, 3), rtol=1e-6)
    np.testing.assert_allclose(model.albedo_mean.ravel(), arrays["color/model/mean"], rtol=1e-6)
    np.testing.assert_array_equal(model.triangles, triangles)
    assert model.triangles.dtype == np.int64


@pytest.mark.parametrize("group,field", [("shape", "identity_basis"), ("expression", "expression_basis"), ("color", "albedo_basis")])
def test_unit_variance_scaling(tmp_path, group, field):
    path = tmp_path / "model.h5"
    arrays, _ = write_bfm(path)
    basis = getattr(load_bfm2017(path), field).reshape(3 * N_VERTICES, -1)
    orthonormal = arrays[f"{group}/model/pcaBasis"].astype(np.float64)
    variance = arrays[f"{group}/model/pcaVariance"].astype(np.float64)
    # Independent check: draw faces from the statismo model (mean + U diag(sqrt(var)) z) and
    # from ours (mean + basis c, c ~ N(0, 1)); their variance along each U_k must agree.
    rng = np.random.default_rng(3)
    samples = rng.standard_normal((20000, basis.shape[1]))
    along = (samples @ basis.T) @ orthonormal  # coordinates along U_k
    np.testing.assert_allclose(along.std(axis=0), np.sqrt(variance), rtol=0.03)
    np.testing.assert_allclose(basis.T @ basis, np.diag(variance), atol=1e-4 * variance.max())


def test_scaling_does_not_depend_on_stored_column_norms(tmp_path):
    # A file whose pcaBasis columns were stored already multiplied by sqrt(variance) gives the same model.
    path = tmp_path / "a.h5"
    arrays, _ = write_bfm(path)
    scaled_path = tmp_path / "b.h5"
    with h5py.File(path, "r") as source, h5py.File(scaled_path, "w") as target:
        for name in REQUIRED_DATASETS:
            value = source[name][()]
            if name == "shape/model/pcaBasis":
                value = value * np.sqrt(source["shape/model/pcaVariance"][()])
            target.create_dataset(name, data=value)
    np.testing.assert_allclose(load_bfm2017(scaled_path).identity_basis, load_bfm2017(path).identity_basis, rtol=1e-5)


def test_clockwise_cells_are_flipped(tmp_path):
    path = tmp_path / "model.h5"
    _, triangles = write_bfm(path, clockwise=True)
    model = load_bfm2017(path)
    np.testing.assert_array_equal(model.triangles, triangles[:, [0, 2, 1]])
    v = model.shape_mean
    a, b, c = (v[model.triangles[:, i]] for i in range(3))
    assert np.cross(b - a, c - a).sum(axis=0)[2] > 0


@pytest.mark.parametrize("dataset", REQUIRED_DATASETS)
def test_missing_dataset_is_named(tmp_path, dataset):
    path = tmp_path / "model.h5"
    write_bfm(path, drop=dataset)
    with pytest.raises(FaceModelError, match=dataset):
        load_bfm2017(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "model2017-1_face12_nomouth.h5"
    path.write_bytes(b"this is not HDF5" * 100)
    with pytest.raises(FaceModelError, match="not an HDF5 file"):
        load_bfm2017(path)


def test_missing_file(tmp_path):
    with pytest.raises(FaceModelError, match="does not exist"):
        load_bfm2017(tmp_path / "nothing.h5")


def test_wrong_basis_shape(tmp_path):
    path = tmp_path / "model.h5"
    write_bfm(path)
    with h5py.File(path, "a") as handle:
        del handle["expression/model/pcaVariance"]
        handle.create_dataset("expression/model/pcaVariance", data=np.ones(3, np.float32))
    with pytest.raises(FaceModelError, match="expression/model/pcaBasis"):
        load_bfm2017(path)


def test_no_landmarks_loads_but_landmarks_are_required_later(tmp_path):
    path = tmp_path / "model.h5"
    write_bfm(path)
    model = load_bfm2017(path)
    assert model.landmarks_68.shape == (0,) and model.landmarks_5.shape == (0, 6)
    with pytest.raises(FaceModelError, match="--landmarks"):
        require_landmarks(model, "68")
    with pytest.raises(FaceModelError, match="--landmarks"):
        require_landmarks(model, "5")


def test_user_landmarks_give_68_and_5(tmp_path):
    path = tmp_path / "model.h5"
    write_bfm(path)
    indices = np.arange(68) % N_VERTICES
    model = load_bfm2017(path, landmarks=indices)
    np.testing.assert_array_equal(model.landmarks_68, indices)
    np.testing.assert_array_equal(model.landmarks_5[0], indices[36:42])
    require_landmarks(model, "68")
    with pytest.raises(FaceModelError, match="vertex indices"):
        load_bfm2017(path, landmarks=np.full(68, N_VERTICES))


@pytest.mark.parametrize("as_list", [True, False])
def test_named_landmarks_from_metadata(tmp_path, as_list):
    points, _ = _grid_mesh()
    # BFM names are the subject's sides: the subject's right eye is on the image left (-x).
    chosen = {
        "right.eye.corner_outer": 11, "right.eye.corner_inner": 13, "left.eye.corner_inner": 16,
        "left.eye.corner_outer": 18, "center.nose.tip": 24, "right.lips.corner": 32, "left.lips.corner": 37,
        "center.chin.tip": 44,
    }  # fmt: skip
    jitter = np.random.default_rng(5).uniform(-1, 1, (len(chosen), 3))  # within 1 mm of the vertex
    coordinates = {name: (points[index] + jitter[i]).tolist() for i, (name, index) in enumerate(chosen.items())}
    if as_list:
        text = json.dumps([{"id": name, "coordinates": xyz, "uncertainty": [1, 1, 1]} for name, xyz in coordinates.items()])
    else:
        text = json.dumps(coordinates)
    path = tmp_path / "model.h5"
    write_bfm(path, landmarks_json=text)
    model = load_bfm2017(path)
    assert model.landmarks_68.shape == (0,)
    expected = np.array([[11, 11, 11, 13, 13, 13], [16, 16, 16, 18, 18, 18], [24] * 6, [32] * 6, [37] * 6])
    np.testing.assert_array_equal(model.landmarks_5, expected)
    _, five = model.landmark_points(points)
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # image-left first

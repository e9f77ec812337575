"""ICT-FaceKit loader: reading, region, orientation, scaling, landmarks and every bad-input error."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
import zipfile

import numpy as np
import pytest

from lsqface.errors import FaceModelError
from lsqface.morphable import ict
from lsqface.morphable.ict import (
    ICT_LANDMARKS_68,
    LANDMARKS_68,
    five_landmarks_from_68,
    load_ict,
    orient_towards_viewer,
    read_obj_vertices,
    split_polygons,
)


def _trimesh_vertices(data: bytes) -> np.ndarray:
    import trimesh

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = trimesh.exchange.obj.load_obj(
            io.BytesIO(data), maintain_order=True, skip_materials=True, group_material=False, split_object=False
        )
    return max((np.asarray(g["vertices"]) for g in loaded["geometry"].values()), key=len)


# ---------------------------------------------------------------- pieces, no model files needed


def test_read_obj_vertices_small_file():
    data = b"# c\nv 1 2 3\nvt 0.5 0.5\nvn 0 0 1\nv -1.5 2e-1 3\nf 1 2 1\nv 7 8 9\n"
    vertices, total = read_obj_vertices(data)
    assert total == 3
    np.testing.assert_array_equal(vertices, [[1, 2, 3], [-1.5, 0.2, 3], [7, 8, 9]])
    first, total = read_obj_vertices(data, count=2)
    assert total == 3 and first.shape == (2, 3)


def test_read_obj_vertices_rejects_four_numbers():
    with pytest.raises(FaceModelError, match="three numbers"):
        read_obj_vertices(b"v 1 2 3 1\nv 1 2 3\n")


def test_split_quads_keeps_area_and_orientation():
    rng = np.random.default_rng(0)
    # A planar quad mesh (a 2x2 grid, z = 0) with random in-plane jitter.
    xs, ys = np.meshgrid(np.arange(3.0), np.arange(3.0))
    vertices = np.stack([xs.ravel(), ys.ravel(), np.zeros(9)], 1) + np.c_[rng.uniform(-0.2, 0.2, (9, 2)), np.zeros(9)]
    quads = np.array([[0, 1, 4, 3], [1, 2, 5, 4], [3, 4, 7, 6], [4, 5, 8, 7]])
    triangles = split_polygons([quads], vertices)
    assert triangles.shape == (8, 3)
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    signed = np.cross(b - a, c - a)[:, 2] / 2
    # Counter-clockwise quads give counter-clockwise triangles covering the same area (shoelace formula).
    assert np.all(signed > 0)
    quad_area = sum(
        0.5 * abs(np.dot(vertices[q, 0], np.roll(vertices[q, 1], -1)) - np.dot(vertices[q, 1], np.roll(vertices[q, 0], -1)))
        for q in quads
    )
    assert signed.sum() == pytest.approx(quad_area)
    flipped = orient_towards_viewer(vertices, triangles[:, [0, 2, 1]])
    np.testing.assert_array_equal(np.sort(flipped, 1), np.sort(triangles, 1))
    a, b, c = (vertices[flipped[:, i]] for i in range(3))
    assert np.all(np.cross(b - a, c - a)[:, 2] > 0)


def test_five_landmarks_from_68_rows():
    five = five_landmarks_from_68(np.arange(100, 168))
    assert five.shape == (5, 6)
    np.testing.assert_array_equal(five[0], np.arange(136, 142))
    np.testing.assert_array_equal(five[1], np.arange(142, 148))
    assert set(five[2]) == {130} and set(five[3]) == {148} and set(five[4]) == {154}


def test_landmarks_fit_both_regions():
    assert len(LANDMARKS_68) == 68
    assert max(LANDMARKS_68) < ict.FACE_REGIONS["narrow"][0] <= ict.FACE_REGIONS["full"][0]


# ---------------------------------------------------------------- errors from files the tests write


def test_missing_path(tmp_path):
    with pytest.raises(FaceModelError, match="does not exist"):
        load_ict(tmp_path / "nothing.tar.xz")


def test_unknown_region(tmp_path):
    with pytest.raises(FaceModelError, match="region"):
        load_ict(tmp_path, region="forehead")


def test_folder_without_model(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(FaceModelError, match="FaceXModel"):
        load_ict(tmp_path)


def test_folder_missing_neutral_mesh(tmp_path):
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    (folder / "vertex_indices.json").write_text(json.dumps({"expressions": []}))
    with pytest.raises(FaceModelError, match="generic_neutral_mesh.obj is missing"):
        load_ict(folder)


def test_wrong_vertex_count(tmp_path):
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    (folder / "generic_neutral_mesh.obj").write_bytes(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(FaceModelError, match="3 vertices instead of ICT-FaceKit's 26719"):
        load_ict(tmp_path)


def test_zip_that_is_not_ict(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("some-repo-master/README.md", "not a face model")
    with pytest.raises(FaceModelError, match="generic_neutral_mesh.obj is missing"):
        load_ict(path)


def test_corrupt_archive(tmp_path):
    path = tmp_path / "ICT-FaceKit-FaceXModel.tar.xz"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(FaceModelError, match="truncated or not a readable"):
        load_ict(path)


def test_truncated_small_archive(tmp_path):
    # A real .tar.xz written here, cut in half: lzma/tar must report it, not crash.
    source = tmp_path / "full.tar.xz"
    payload = np.random.default_rng(2).integers(0, 10, 200_000).astype(str)
    data = ("\n".join("v " + " ".join(payload[i : i + 3]) for i in range(0, 60_000, 3))).encode()
    with tarfile.open(source, "w:xz") as archive:
        info = tarfile.TarInfo("FaceXModel/identity000.obj")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    truncated = tmp_path / "cut.tar.xz"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(FaceModelError, match="truncated"):
        load_ict(truncated)


def test_truncated_real_archive(ict_archive, tmp_path):
    truncated = tmp_path / "ICT-FaceKit-FaceXModel.tar.xz"
    with open(ict_archive, "rb") as handle:
        truncated.write_bytes(handle.read(1 << 20))
    with pytest.raises(FaceModelError, match="truncated"):
        load_ict(truncated)


# ---------------------------------------------------------------- real model files


def test_fast_vertex_reader_matches_trimesh(ict_raw_files):
    data = ict_raw_files["generic_neutral_mesh.obj"]
    vertices, total = read_obj_vertices(data)
    reference = _trimesh_vertices(data)
    assert total == ict.ICT_VERTEX_COUNT
    np.testing.assert_array_equal(vertices, reference)


def test_github_zip_layout_is_read(ict_raw_files, tmp_path):
    # A GitHub zip (top folder ICT-FaceKit-master/) with only the neutral mesh and the JSON:
    # the loader must find both and then name the first missing identity.
    path = tmp_path / "ICT-FaceKit-master.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("generic_neutral_mesh.obj", "vertex_indices.json"):
            archive.writestr(f"ICT-FaceKit-master/FaceXModel/{name}", ict_raw_files[name])
        archive.writestr("ICT-FaceKit-master/README.md", "readme")
    with pytest.raises(FaceModelError, match="identity000.obj is missing"):
        load_ict(path)


def test_folder_containing_facexmodel(ict_raw_files, tmp_path):
    # The folder holding FaceXModel/ (as unpacked from the GitHub zip) is accepted; the first missing file is named.
    folder = tmp_path / "ICT-FaceKit" / "FaceXModel"
    folder.mkdir(parents=True)
    for name in ("generic_neutral_mesh.obj", "vertex_indices.json"):
        (folder / name).write_bytes(ict_raw_files[name])
    with pytest.raises(FaceModelError, match="identity000.obj is missing"):
        load_ict(folder.parent)


def test_model_sizes_and_units(ict_model):
    model = ict_model
    assert model.n_vertices == 6706
    assert model.triangles.shape == (13120, 3)  # 6,560 quads of ICT's narrow face area, each split in two
    assert model.n_identity == 100 and model.n_expression == 53 and model.n_albedo == 99
    assert len(model.expression_names) == 53 and model.expression_names[26] == "jawOpen"
    width, height, _ = np.ptp(model.shape_mean, axis=0)
    # The narrow face area of an adult is roughly 15 cm wide and 20 cm tall (forehead to chin): millimetres.
    assert 120 < width < 180 and 150 < height < 250
    assert np.array_equal(np.unique(model.triangles), np.arange(model.n_vertices))


def test_identity_and_expression_modes_recovered(ict_model, ict_raw_files):
    neutral = read_obj_vertices(ict_raw_files["generic_neutral_mesh.obj"])[0][:6706]
    identity = _trimesh_vertices(ict_raw_files["identity000.obj"])[:6706]
    jaw_open = _trimesh_vertices(ict_raw_files["jawOpen.obj"])[:6706]
    np.testing.assert_allclose(ict_model.shape_mean, 10 * neutral, atol=1e-9)
    np.testing.assert_allclose(ict_model.identity_basis[:, :, 0], 10 * (identity - neutral), atol=1e-9)
    index = ict_model.expression_names.index("jawOpen")
    np.testing.assert_allclose(
        ict_model.expression_basis[:, :, index], 10 * (jaw_open - neutral) * ict.DEFAULT_EXPRESSION_STD, atol=1e-9
    )
    # jawOpen at full weight (two standard deviations) lowers the chin by centimetres.
    chin = ict_model.landmarks_68[8]
    assert -60 < 2 * ict_model.expression_basis[chin, 1, index] < -5


def test_triangles_face_the_viewer(ict_model):
    vertices, triangles = ict_model.shape_mean, ict_model.triangles
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    normals = np.cross(b - a, c - a)
    assert normals.sum(axis=0)[2] > 0
    # Consistently oriented: every interior edge is used once in each direction.
    directed = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    # Most of the face (cheeks, forehead, nose, chin) looks towards the viewer.
    assert (normals[:, 2] > 0).mean() > 0.8
    # The nose tip's neighbouring triangles look straight at the viewer.
    nose = ict_model.landmarks_68[30]
    around_nose = normals[(triangles == nose).any(axis=1)]
    assert np.all(around_nose[:, 2] > 0)


def test_face_region_is_a_manifold_with_four_holes(ict_model):
    triangles = ict_model.triangles
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 2
    boundary = unique[counts == 1]
    import scipy.sparse
    import scipy.sparse.csgraph

    n = ict_model.n_vertices
    graph = scipy.sparse.coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), shape=(n, n))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    loop_sizes = sorted(np.bincount(labels[np.unique(boundary)]))
    loop_sizes = sorted(size for size in loop_sizes if size > 0)
    assert loop_sizes == [42, 42, 74, 138]  # eyes, mouth, outer rim (edges = vertices on a loop)


def test_landmarks_sides(ict_model):
    x = ict_model.shape_mean[:, 0]
    sixty_eight = ict_model.landmarks_68
    # Image-left (subject's right) is -x: jaw starts there, eye 36..41 and mouth corner 48 are there.
    assert x[sixty_eight[0]] < 0 < x[sixty_eight[16]]
    assert np.all(x[sixty_eight[36:42]] < 0) and np.all(x[sixty_eight[42:48]] > 0)
    _, five = ict_model.landmark_points(ict_model.shape_mean)
    assert five[0, 0] < 0 < five[1, 0] and five[3, 0] < 0 < five[4, 0]
    # Nose tip is the frontmost of the five and lies on the symmetry plane.
    assert five[2, 2] == five[:, 2].max() and abs(five[2, 0]) < 1e-6
    # Interocular distance of an adult: about 60-70 mm.
    assert 50 < np.linalg.norm(five[1] - five[0]) < 80


def test_reported_landmarks_are_icts_moved_symmetrically_and_nearby(ict_model):
    """The 68 vertices lsqface reports (docs/scripts/landmark_vertices.py) keep ICT's jaw line, lie within
    12 mm of ICT's own vertices, mirror each other left to right, and keep midline points on the midline."""
    mean = ict_model.shape_mean
    reported, ict_own = np.asarray(LANDMARKS_68), np.asarray(ICT_LANDMARKS_68)
    assert len(set(reported.tolist())) == 68
    np.testing.assert_array_equal(ict_model.landmarks_68, reported)
    np.testing.assert_array_equal(reported[:17], ict_own[:17])
    moved = np.linalg.norm(mean[reported] - mean[ict_own], axis=1)
    assert moved.max() < 12.0 and moved[30] > 4.0  # the nose tip moves down the nose
    assert mean[reported[30], 1] < mean[ict_own[30], 1]
    pairs = [(17 + k, 26 - k) for k in range(5)] + [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42),
             (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    for left, right in pairs:
        # Each point stays on the side of the face where ICT has it (image-left is -x).
        assert np.sign(mean[reported[left], 0]) == np.sign(mean[ict_own[left], 0]) == -np.sign(mean[reported[right], 0])
        assert np.linalg.norm(mean[reported[left]] * [-1, 1, 1] - mean[reported[right]]) < 0.5, (left, right)
    for k in (27, 28, 29, 30, 33, 51, 57, 62, 66):
        assert abs(mean[reported[k], 0]) < 0.5, k


def test_identity_modes_have_plausible_size(ict_model):
    # One standard deviation of ICT's identity PCA moves vertices by millimetres, not centimetres or microns.
    rms = np.sqrt((ict_model.identity_basis**2).sum(axis=1).mean(axis=0))
    assert 0.3 < rms.max() < 10 and np.all(rms > 0.01)
    assert np.all(np.diff(rms[:10]) < 1.0)  # leading PCA modes are roughly sorted by size

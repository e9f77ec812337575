"""Tutte flattening: boundary loops, hole filling and a valid embedding on a grid with a hole and on ICT-FaceKit."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lsqface.errors import FaceModelError
from lsqface.morphable.flatten import boundary_loops, fill_holes, flatten, tutte_embedding, uv_signed_areas


def grid_with_hole(n: int = 9, hole: tuple[int, int] = (3, 4)) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid of points in the plane z = 0 (x right, y up) with the cells hole[0]..hole[1]-1 squared removed.

    Triangles are counter-clockwise seen from +z. Returns (vertices (n n, 3), triangles (F, 3)).
    """
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    vertices = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], axis=1)
    triangles = []
    for row in range(n - 1):
        for column in range(n - 1):
            if hole[0] <= row < hole[1] and hole[0] <= column < hole[1]:
                continue
            a, b, c, d = row * n + column, row * n + column + 1, (row + 1) * n + column, (row + 1) * n + column + 1
            triangles += [[a, b, d], [a, d, c]]
    return vertices, np.array(triangles)


def boundary_edges(triangles: np.ndarray) -> set[tuple[int, int]]:
    """Undirected edges used by exactly one triangle, counted independently with a Counter."""
    counts = Counter(tuple(sorted(edge)) for t in triangles.tolist() for edge in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    return {edge for edge, count in counts.items() if count == 1}


def test_boundary_loops_of_a_grid_with_a_hole():
    vertices, triangles = grid_with_hole()
    loops = boundary_loops(triangles)
    assert [len(loop) for loop in loops] == [32, 4]
    expected = boundary_edges(triangles)
    found = {tuple(sorted((int(a), int(b)))) for loop in loops for a, b in zip(loop, np.roll(loop, -1))}
    assert found == expected


def test_tutte_on_grid_with_hole_is_valid_and_harmonic():
    vertices, triangles = grid_with_hole()
    loops = boundary_loops(triangles)
    filled = fill_holes(len(vertices), triangles, loops[1:])
    assert filled.n_auxiliary == 1 and len(filled.triangles) == len(triangles) + len(loops[1])
    assert boundary_loops(filled.triangles)[0].tolist() == loops[0].tolist()  # only the rim is left open
    positions = filled.extend(vertices)
    np.testing.assert_allclose(positions[-1], vertices[loops[1]].mean(axis=0))
    uv = tutte_embedding(positions, filled.triangles, loops[0])

    assert np.all(uv_signed_areas(uv, filled.triangles) > 0)
    rim = uv[loops[0]]
    assert np.allclose(np.minimum.reduce([rim[:, 0], 1 - rim[:, 0], rim[:, 1], 1 - rim[:, 1]]), 0)
    for corner in ([0, 0], [1, 0], [1, 1], [0, 1]):
        assert np.any(np.all(np.isclose(rim, corner), axis=1))
    # The grid's top-left corner (x = 0, y = n - 1 is up) goes to UV (0, 0): the picture is upright.
    np.testing.assert_allclose(uv[(9 - 1) * 9 + 0], [0, 0], atol=1e-12)
    np.testing.assert_allclose(uv[8], [1, 1], atol=1e-12)
    # Each free vertex is the mean of its neighbours (Tutte's uniform weights), checked edge by edge.
    neighbours: dict[int, set[int]] = {}
    for t in filled.triangles.tolist():
        for i in range(3):
            neighbours.setdefault(t[i], set()).update((t[(i + 1) % 3], t[(i + 2) % 3]))
    free = set(range(len(positions))) - set(loops[0].tolist())
    for vertex in free:
        np.testing.assert_allclose(uv[vertex], uv[sorted(neighbours[vertex])].mean(axis=0), atol=1e-12)


def test_corners_that_flatten_a_boundary_triangle_are_refused():
    vertices, triangles = grid_with_hole(5, hole=(0, 0))
    outer = boundary_loops(triangles)[0]
    # Move every corner one step along the rim: the grid corner's triangle then lies on one side.
    default = tutte_embedding(vertices, triangles, outer)
    corner_positions = [int(np.flatnonzero((outer == v))[0]) for v in (20, 24, 4, 0)]
    np.testing.assert_allclose(default[[20, 24, 4, 0]], [[0, 0], [1, 0], [1, 1], [0, 1]], atol=1e-12)
    shifted = [(position + 1) % len(outer) for position in corner_positions]
    with pytest.raises(FaceModelError, match="one side"):
        tutte_embedding(vertices, triangles, outer, corners=shifted)


def test_unused_vertex_is_refused():
    vertices, triangles = grid_with_hole(5, hole=(0, 0))
    with pytest.raises(FaceModelError, match="no triangle"):
        tutte_embedding(np.concatenate([vertices, [[9.0, 9.0, 0.0]]]), triangles, boundary_loops(triangles)[0])


def test_closed_mesh_cannot_be_flattened(ict_model):
    import dataclasses

    tetrahedron = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    closed = dataclasses.replace(ict_model, triangles=tetrahedron)
    with pytest.raises(FaceModelError, match="no boundary"):
        flatten(closed)


def test_ict_boundary_loops(ict_model):
    loops = boundary_loops(ict_model.triangles)
    # The narrow face area (vertices 0-6705): rim, mouth and both eyes.
    assert [len(loop) for loop in loops] == [138, 74, 42, 42]
    found = {tuple(sorted((int(a), int(b)))) for loop in loops for a, b in zip(loop, np.roll(loop, -1))}
    assert found == boundary_edges(ict_model.triangles)


def test_ict_flattening_is_a_valid_upright_embedding(ict_model):
    flattening = flatten(ict_model)
    areas = uv_signed_areas(flattening.uv, flattening.triangles)
    assert np.all(areas > 0)
    np.testing.assert_allclose(areas.sum(), 1.0, rtol=1e-9)  # the filled mesh tiles the square exactly
    rim = flattening.vertex_uv[flattening.outer_loop]
    assert np.allclose(np.minimum.reduce([rim[:, 0], 1 - rim[:, 0], rim[:, 1], 1 - rim[:, 1]]), 0)
    inside = np.setdiff1d(np.arange(ict_model.n_vertices), flattening.outer_loop)
    uv_inside = flattening.vertex_uv[inside]
    assert uv_inside.min() > 0 and uv_inside.max() < 1
    mouth, eye_a, eye_b = flattening.auxiliary_uv
    assert mouth[1] > max(eye_a[1], eye_b[1])  # chin side down
    # u follows model +x (the subject's left on the image right); v follows model -y.
    x, y = ict_model.shape_mean[inside, 0], ict_model.shape_mean[inside, 1]
    assert np.corrcoef(uv_inside[:, 0], x)[0, 1] > 0.8
    assert np.corrcoef(uv_inside[:, 1], -y)[0, 1] > 0.8


def test_full_face_area_has_four_boundary_loops(ict_raw_files):
    from lsqface.morphable.ict import FACE_REGIONS, read_obj_mesh, split_polygons

    vertices, polygons = read_obj_mesh(ict_raw_files["generic_neutral_mesh.obj"])
    n_vertices, _ = FACE_REGIONS["full"]
    triangles = split_polygons(polygons, vertices)
    triangles = triangles[(triangles < n_vertices).all(axis=1)]
    assert len(triangles) == 18460
    # DESIGN.md counts 203 rim edges; the full face area (vertices 0-9408, 9230 quads) has 204.
    assert [len(loop) for loop in boundary_loops(triangles)] == [204, 74, 42, 42]

"""Tutte flattening of the face mesh onto the unit square (seed A; DESIGN.md "3DMM and UV-3DMM").

The face mesh is a disc with holes (ICT-FaceKit: outer rim, mouth, two eyes).
Every inner hole is filled with one auxiliary vertex joined to each vertex of
its boundary loop; the auxiliary vertex's value for any per-vertex attribute
(mean, each basis vector) is the mean over that loop ("ring"). The outer loop
is pinned to the boundary of the unit square by arc length, and every other
vertex is placed at the mean of its neighbours (Tutte's uniform weights),
which is a sparse linear system. Tutte's theorem makes this an embedding: no
triangle flips. The spokes of each hole's fan weigh 1 / (ring length) instead of 1,
so that a hole's auxiliary vertex does not pull its whole ring onto one point
(see ``flatten``); positive weights keep the embedding valid (Floater 1997).

Orientation: model coordinates have +y up and +z towards the front of the face
(ICT-FaceKit and BFM 2017 both do). The UV picture looks like a photograph
taken from in front: u grows to image-right (model +x, the subject's left), v
grows downwards (model -y), so the forehead is at small v and the chin at
large v. Triangles that are counter-clockwise seen from in front stay
counter-clockwise on screen in that picture, which is what
``uv_signed_areas`` counts as positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from lsqface.errors import FaceModelError
from lsqface.morphable.model import MorphableModel

# Corners of the unit square in UV, in the order top-left, top-right, bottom-right,
# bottom-left, and the matching corners of the face's front view (x right, y up).
_UV_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
_FRONT_CORNERS = np.array([[-1.0, 1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Ordered vertex loops of the mesh boundary, longest first.

    A boundary edge is an edge used by exactly one triangle. Each loop follows
    its edges in the direction they have in their triangle, so for a mesh
    oriented counter-clockwise from the front the outer rim runs
    counter-clockwise and the holes clockwise (seen from the front).

    Args:
        triangles: (F, 3) vertex indices.

    Returns:
        loops: list of (L_k,) int64 vertex indices; loop k has L_k edges.

    Raises:
        FaceModelError: if the boundary is not a set of simple loops (a vertex
            where two holes touch, or an edge used by three triangles).
    """
    triangles = np.asarray(triangles, dtype=np.int64)
    directed = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(undirected, axis=0, return_inverse=True, return_counts=True)
    if counts.max(initial=0) > 2:
        raise FaceModelError("The face mesh has an edge shared by more than two triangles; use a manifold face mesh.")
    boundary = directed[counts[inverse.ravel()] == 1]
    if len(boundary) == 0:
        return []
    starts = boundary[:, 0]
    if len(np.unique(starts)) != len(starts):
        raise FaceModelError("The face mesh boundary touches itself at a vertex; use a face mesh whose holes are separate.")
    following = dict(zip(starts.tolist(), boundary[:, 1].tolist()))
    loops: list[np.ndarray] = []
    visited: set[int] = set()
    for start in starts.tolist():
        if start in visited:
            continue
        loop = [start]
        visited.add(start)
        vertex = following[start]
        while vertex != start:
            if vertex in visited or vertex not in following:
                raise FaceModelError("The face mesh boundary is not a set of closed loops; use a manifold face mesh.")
            loop.append(vertex)
            visited.add(vertex)
            vertex = following[vertex]
        loops.append(np.array(loop, dtype=np.int64))
    loops.sort(key=len, reverse=True)
    return loops


@dataclass(frozen=True)
class FilledMesh:
    """A face mesh whose inner holes are filled by fans around auxiliary vertices.

    Attributes:
        n_vertices: V, number of original vertices; auxiliary vertex k has index V + k.
        triangles: (F + F_fan, 3) int64, the original triangles then the fan triangles,
            oriented like the original ones.
        n_face_triangles: F, number of original triangles.
        rings: the boundary loop of each hole, (L_k,) int64; auxiliary vertex k is their mean.
    """

    n_vertices: int
    triangles: np.ndarray
    n_face_triangles: int
    rings: tuple[np.ndarray, ...]

    @property
    def n_auxiliary(self) -> int:
        return len(self.rings)

    def extension_matrix(self) -> scipy.sparse.csr_matrix:
        """(V + n_aux, V) sparse matrix: identity on top, each ring's mean below."""
        rows = [np.arange(self.n_vertices)]
        cols = [np.arange(self.n_vertices)]
        weights = [np.ones(self.n_vertices)]
        for k, ring in enumerate(self.rings):
            rows.append(np.full(len(ring), self.n_vertices + k))
            cols.append(ring)
            weights.append(np.full(len(ring), 1.0 / len(ring)))
        return scipy.sparse.csr_matrix(
            (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.n_vertices + self.n_auxiliary, self.n_vertices),
        )

    def extend(self, values: np.ndarray) -> np.ndarray:
        """Per-vertex values (V, ...) extended to (V + n_aux, ...) by the ring means."""
        values = np.asarray(values)
        means = [values[ring].mean(axis=0, keepdims=True) for ring in self.rings]
        return np.concatenate([values, *means], axis=0)


def fill_holes(n_vertices: int, triangles: np.ndarray, loops: list[np.ndarray]) -> FilledMesh:
    """Fill every loop in ``loops`` with a fan around a new auxiliary vertex.

    Args:
        n_vertices: V, number of vertices of the mesh.
        triangles: (F, 3) vertex indices.
        loops: the inner boundary loops (not the outer rim) as returned by
            ``boundary_loops``, each (L_k,) in the direction of its triangles.

    Returns:
        The filled mesh; fan triangles are (next, previous, auxiliary) so they
        have the orientation of the triangles around them.
    """
    triangles = np.asarray(triangles, dtype=np.int64)
    fans = []
    for k, loop in enumerate(loops):
        loop = np.asarray(loop, dtype=np.int64)
        auxiliary = np.full(len(loop), n_vertices + k)
        # The boundary edge a->b belongs to a face triangle; the fan uses b->a.
        fans.append(np.stack([np.roll(loop, -1), loop, auxiliary], axis=1))
    all_triangles = np.concatenate([triangles, *fans]) if fans else triangles.copy()
    return FilledMesh(
        n_vertices=int(n_vertices),
        triangles=all_triangles,
        n_face_triangles=len(triangles),
        rings=tuple(np.asarray(loop, dtype=np.int64) for loop in loops),
    )


def uv_signed_areas(uv: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed areas (F,) of triangles in UV, positive when counter-clockwise on screen (v down).

    Args:
        uv: (V, 2) flattened coordinates, v growing downwards.
        triangles: (F, 3) vertex indices.
    """
    a, b, c = uv[triangles[:, 0]], uv[triangles[:, 1]], uv[triangles[:, 2]]
    # Counter-clockwise on screen with v down is clockwise in the (u, v) frame: hence the minus.
    return -0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))


def _corner_positions(loop: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Positions along ``loop`` of the vertices nearest the four corners of the front view."""
    front = vertices[loop][:, :2]
    low, high = front.min(axis=0), front.max(axis=0)
    normalised = 2.0 * (front - (low + high) / 2) / np.maximum(high - low, 1e-12)
    distances = np.linalg.norm(normalised[None, :, :] - _FRONT_CORNERS[:, None, :], axis=2)
    return distances.argmin(axis=1)


def _pin_to_square(loop: np.ndarray, vertices: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(L, 2) positions on the square's boundary for the loop vertices, by arc length between corners."""
    n = len(loop)
    edge_lengths = np.linalg.norm(vertices[np.roll(loop, -1)] - vertices[loop], axis=1)
    positions = np.empty((n, 2))
    # Walk from each corner to the next one met along the loop, whichever square corner it is.
    order = np.argsort(corners)
    steps_between = {(order[(rank + 1) % 4] - order[rank]) % 4 for rank in range(4)}
    if steps_between not in ({1}, {3}):
        raise FaceModelError("The face mesh's outer boundary does not go round the face once; use a disc-like face region.")
    for rank in range(4):
        corner_index = order[rank]
        next_index = order[(rank + 1) % 4]
        start, end = corners[corner_index], corners[next_index]
        steps = (end - start) % n or n
        along = (start + np.arange(steps + 1)) % n
        lengths = np.concatenate([[0.0], np.cumsum(edge_lengths[along[:-1]])])
        fraction = lengths / max(lengths[-1], 1e-12)
        a, b = _UV_CORNERS[corner_index], _UV_CORNERS[next_index]
        positions[along[:-1]] = a + fraction[:-1, None] * (b - a)
    return positions


def _degenerate_boundary_triangles(triangles: np.ndarray, pinned: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Indices of triangles whose three vertices are pinned to one side of the square."""
    all_pinned = pinned[triangles].all(axis=1)
    corners_uv = uv[triangles]
    same_u = (np.ptp(corners_uv[:, :, 0], axis=1) < 1e-12) & np.isin(corners_uv[:, 0, 0], (0.0, 1.0))
    same_v = (np.ptp(corners_uv[:, :, 1], axis=1) < 1e-12) & np.isin(corners_uv[:, 0, 1], (0.0, 1.0))
    return np.flatnonzero(all_pinned & (same_u | same_v))


def tutte_embedding(
    vertices: np.ndarray,
    triangles: np.ndarray,
    outer_loop: np.ndarray,
    corners: np.ndarray | None = None,
    vertex_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Tutte embedding with the outer loop pinned to the unit square.

    Solves L_II uv_I = -L_IB uv_B for the free vertices, L the graph Laplacian
    with edge weights w_i w_j (uniform Tutte weights when every w_i = 1: each
    free vertex at the mean of its neighbours). Any positive weights with a
    convex pinned boundary give an embedding (Tutte 1963, Floater 1997).

    Args:
        vertices: (V', 3) positions, used only for arc length along the outer loop
            and to choose the corners; +y up, +z front. Auxiliary vertices may be anywhere.
        triangles: (F', 3) vertex indices of a mesh whose only boundary is ``outer_loop``.
        outer_loop: (L,) vertex indices of the outer boundary, in order.
        corners: (4,) positions along ``outer_loop`` of the vertices pinned to the
            top-left, top-right, bottom-right and bottom-left corners; by default
            the loop vertices nearest those corners of the front view.
        vertex_weights: (V',) positive, or None for all ones.

    Returns:
        uv: (V', 2) in [0, 1]^2, u to image-right, v downwards.

    Raises:
        FaceModelError: if a triangle would have all three vertices on one side of the square.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    outer_loop = np.asarray(outer_loop, dtype=np.int64)
    n = len(vertices)
    if corners is None:
        corners = _corner_positions(outer_loop, vertices)
    corners = np.asarray(corners, dtype=np.int64)
    if len(np.unique(corners)) != 4:
        raise FaceModelError("The face mesh's outer boundary is too short to pin to a square; use a larger face region.")

    pinned = np.zeros(n, dtype=bool)
    pinned[outer_loop] = True
    uv = np.zeros((n, 2))
    uv[outer_loop] = _pin_to_square(outer_loop, vertices, corners)
    degenerate = _degenerate_boundary_triangles(triangles, pinned, uv)
    if len(degenerate):
        raise FaceModelError(
            f"{len(degenerate)} triangles of the face mesh have all three vertices on one side of the UV square; "
            "choose other corners or remove those boundary triangles."
        )

    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    weights = np.ones(n) if vertex_weights is None else np.asarray(vertex_weights, dtype=np.float64)
    edge_weights = weights[edges[:, 0]] * weights[edges[:, 1]]
    adjacency = scipy.sparse.coo_matrix(
        (np.concatenate([edge_weights, edge_weights]), (np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([edges[:, 1], edges[:, 0]]))),
        shape=(n, n),
    ).tocsr()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    if np.any(degree == 0):
        raise FaceModelError(
            f"{int(np.sum(degree == 0))} vertices of the face mesh belong to no triangle; remove unused vertices."
        )
    laplacian = (scipy.sparse.diags(degree) - adjacency).tocsr()
    free = np.flatnonzero(~pinned)
    fixed = np.flatnonzero(pinned)
    system = laplacian[free][:, free].tocsc()
    right = -laplacian[free][:, fixed] @ uv[fixed]
    solve = scipy.sparse.linalg.factorized(system)
    uv[free, 0] = solve(right[:, 0])
    uv[free, 1] = solve(right[:, 1])
    return uv


@dataclass(frozen=True)
class Flattening:
    """A face mesh flattened onto the unit square.

    Attributes:
        vertex_uv: (V, 2) float64 (u, v) of the original vertices, u to image-right, v downwards.
        auxiliary_uv: (n_aux, 2) float64 (u, v) of the holes' auxiliary vertices.
        filled: the mesh with its holes filled (extended triangles, rings).
        outer_loop: (L,) int64 vertex indices of the outer rim, pinned to the square.
    """

    vertex_uv: np.ndarray
    auxiliary_uv: np.ndarray
    filled: FilledMesh
    outer_loop: np.ndarray

    @property
    def uv(self) -> np.ndarray:
        """(V + n_aux, 2) coordinates of every vertex of the filled mesh."""
        return np.concatenate([self.vertex_uv, self.auxiliary_uv])

    @property
    def triangles(self) -> np.ndarray:
        """(F + F_fan, 3) triangles of the filled mesh."""
        return self.filled.triangles


def flatten(model: MorphableModel) -> Flattening:
    """Flatten the mean shape of ``model`` onto the unit square (fill holes, Tutte embedding).

    Raises:
        FaceModelError: if the mesh has no boundary, or the embedding is not valid
            (some triangle not positively oriented, for example because the mesh is
            not oriented counter-clockwise seen from in front).
    """
    loops = boundary_loops(model.triangles)
    if not loops:
        raise FaceModelError("The face mesh has no boundary and cannot be flattened; use an open face region.")
    outer, holes = loops[0], loops[1:]
    filled = fill_holes(model.n_vertices, model.triangles, holes)
    positions = filled.extend(model.shape_mean)
    # Uniform weights on the face's edges; each spoke of a hole's fan weighs 1 / L (L = ring
    # length), so the auxiliary vertex pulls its ring as hard as one ordinary neighbour. With
    # uniform spokes, a vertex of degree L = 74 drags the whole mouth ring onto itself (ICT's
    # 46 mm wide mouth ends up 3.5 pixels wide in a 320 pixel UV image; with 1 / L, 19 pixels).
    vertex_weights = np.ones(len(positions))
    vertex_weights[model.n_vertices :] = [1.0 / len(ring) for ring in filled.rings]
    uv = tutte_embedding(positions, filled.triangles, outer, vertex_weights=vertex_weights)
    areas = uv_signed_areas(uv, filled.triangles)
    if not np.all(areas > 0):
        raise FaceModelError(
            f"Flattening the face mesh folded {int(np.sum(areas <= 0))} of {len(areas)} triangles; "
            "check that its triangles are counter-clockwise seen from in front (+z) with +y up."
        )
    return Flattening(
        vertex_uv=uv[: model.n_vertices],
        auxiliary_uv=uv[model.n_vertices :],
        filled=filled,
        outer_loop=outer,
    )

"""The linear 3D morphable model every source gives (seed A; DESIGN.md "3DMM and UV-3DMM").

A face is ``shape_mean + identity_basis @ identity + expression_basis @ expression``
with albedo ``albedo_mean + albedo_basis @ albedo``. Every basis is scaled so
that its coefficient has standard deviation 1 under the model's prior, so the
statistical regularisation of every coefficient is the same unit Gaussian.

Units: shape in millimetres, albedo in linear [0, 1] per RGB channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def basis_products(basis: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Every face's offset from a per-vertex basis, ``basis @ coefficients``, in one product for the batch.

    The one place the library forms a linear combination of basis vectors (shape, albedo, or a
    subset of vertices such as the landmarks); differentiable in both arguments.

    The product is ``coefficients @ basis^T`` on the flattened basis: it reads the basis once per
    batch, not once per face, and it is bit-for-bit what ``torch.einsum("vcn,bn->bvc", ...)`` gives
    in float32 and float64 (tests/morphable/test_model.py).

    Args:
        basis: (V, 3, N) per-vertex basis; coefficients: (B, N).

    Returns:
        (B, V, 3) the basis applied to each face's coefficients.
    """
    flat = basis.reshape(-1, basis.shape[-1])  # (V * 3, N)
    return (coefficients @ flat.T).reshape(coefficients.shape[0], *basis.shape[:-1])


@dataclass(frozen=True)
class MorphableModel:
    """A linear 3DMM. ``V`` vertices, ``F`` triangles.

    Attributes:
        name: short name of the source, e.g. ``"ict-facekit"`` or ``"bfm2017"``.
        shape_mean: (V, 3) float64, millimetres.
        identity_basis: (V, 3, N_id) float64, millimetres per standard deviation.
        expression_basis: (V, 3, N_exp) float64, millimetres per standard deviation.
        albedo_mean: (V, 3) float64 in [0, 1].
        albedo_basis: (V, 3, N_alb) float64 per standard deviation.
        triangles: (F, 3) int64, counter-clockwise seen from in front of the face
            (outward normals point towards a camera looking at the face).
        landmarks_68: (68,) int64 vertex indices in the Multi-PIE 68-point order.
        landmarks_5: (5, 6) int64 vertex indices; landmark k is the mean of the
            six vertices in row k (left eye centre, right eye centre, nose tip,
            left mouth corner, right mouth corner; a single vertex is repeated).
        expression_names: names of the expression modes, if the source has them.
        source_hash: a hex digest identifying the source files and build settings.
        notes: free-form provenance (priors, scaling) for reports and the model card.
    """

    name: str
    shape_mean: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    albedo_mean: np.ndarray
    albedo_basis: np.ndarray
    triangles: np.ndarray
    landmarks_68: np.ndarray
    landmarks_5: np.ndarray
    expression_names: tuple[str, ...] = ()
    source_hash: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.shape_mean.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[2])

    @property
    def n_expression(self) -> int:
        return int(self.expression_basis.shape[2])

    @property
    def n_shape(self) -> int:
        """Number of geometric coefficients, N = N_id + N_exp."""
        return self.n_identity + self.n_expression

    @property
    def n_albedo(self) -> int:
        return int(self.albedo_basis.shape[2])

    @property
    def shape_basis(self) -> np.ndarray:
        """(V, 3, N_id + N_exp): identity modes then expression modes."""
        return np.concatenate([self.identity_basis, self.expression_basis], axis=2)

    def shape(self, identity: np.ndarray | None = None, expression: np.ndarray | None = None) -> np.ndarray:
        """Vertex positions (V, 3) in millimetres for coefficients ``identity`` (N_id,) and ``expression`` (N_exp,)."""
        vertices = self.shape_mean.copy()
        if identity is not None:
            vertices += self.identity_basis @ np.asarray(identity, dtype=np.float64)
        if expression is not None:
            vertices += self.expression_basis @ np.asarray(expression, dtype=np.float64)
        return vertices

    def albedo(self, coefficients: np.ndarray | None = None) -> np.ndarray:
        """Per-vertex albedo (V, 3) for albedo coefficients (N_alb,)."""
        colours = self.albedo_mean.copy()
        if coefficients is not None:
            colours += self.albedo_basis @ np.asarray(coefficients, dtype=np.float64)
        return colours

    def framing(self) -> tuple[np.ndarray, float, float]:
        """How the mean face is framed in a picture: (centroid (3,), width, front depth), millimetres.

        The width is the mean shape's extent along x; the front depth is how far its foremost point
        lies in front of the centroid (along +z, towards a camera looking at the face). The generator,
        the pretraining targets, MoFA's default camera and the reconstructor's re-framing all place a
        face of this width at a chosen fraction of the picture.
        """
        centroid = self.shape_mean.mean(axis=0)
        width = float(self.shape_mean[:, 0].max() - self.shape_mean[:, 0].min())
        front_depth = float(self.shape_mean[:, 2].max() - centroid[2])
        return centroid, width, front_depth

    def landmark_points(self, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 68 and the 5 landmarks of a shape ``vertices`` (..., V, 3): ((..., 68, 3), (..., 5, 3))."""
        sixty_eight = vertices[..., self.landmarks_68, :]
        five = vertices[..., self.landmarks_5, :].mean(axis=-2)
        return sixty_eight, five

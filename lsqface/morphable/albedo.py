"""A smooth albedo space for face models that have none (ICT-FaceKit), from mesh Laplacian eigenfunctions.

ICT-FaceKit's public model has no albedo. We span albedo, per colour channel,
by the lowest-frequency eigenfunctions of the face mesh's Laplace-Beltrami
operator, the mesh analogue of the low Fourier modes: smooth patterns first,
finer ones later, with a prior standard deviation that falls with frequency.

Generalised eigenproblem (cotangent stiffness ``K``, lumped mass ``M``)::

    K phi_k = lambda_k M phi_k,    phi_k^T M phi_l = delta_kl,

with ``M`` normalised by the total surface area, so ``phi_0 = 1`` (the constant
"global tone" mode) and every ``phi_k`` has area-weighted root mean square 1:
a coefficient of one standard deviation changes the albedo of channel ``c`` by
``sigma_k,c`` in root mean square over the face. Standard deviations::

    sigma_0,c = global_tone_fraction * mean_c
    sigma_k,c = detail_fraction * mean_c / sqrt(1 + lambda_k / lambda_1)   (k >= 1)

so the spatial prior is a Matern-like (inverse Helmholtz) process: variation
proportional to each channel's mean (skin varies roughly multiplicatively),
falling like 1 / frequency beyond the coarsest pattern.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

# Linear-RGB albedo of the X-Rite ColorChecker "light skin" patch (sRGB 194, 150, 130
# from the published patch values, converted with the sRGB transfer function).
SKIN_SRGB_8BIT = (194, 150, 130)

DEFAULT_MODES_PER_CHANNEL = 33
DEFAULT_GLOBAL_TONE_FRACTION = 0.25
DEFAULT_DETAIL_FRACTION = 0.15


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted: sRGB values (...,) in [0, 1] to linear RGB in [0, 1]."""
    srgb = np.asarray(srgb, dtype=np.float64)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def skin_albedo_mean() -> np.ndarray:
    """The mean skin albedo (3,), linear RGB in [0, 1]: about (0.539, 0.305, 0.223)."""
    return srgb_to_linear(np.asarray(SKIN_SRGB_8BIT, dtype=np.float64) / 255.0)


def cotangent_laplacian(vertices: np.ndarray, triangles: np.ndarray) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Cotangent stiffness matrix and lumped (barycentric) vertex areas of a triangle mesh.

    Args:
        vertices: (V, 3) float, any length unit.
        triangles: (F, 3) int vertex indices.

    Returns:
        stiffness: (V, V) sparse, symmetric positive semi-definite,
            ``K_ij = -(cot alpha_ij + cot beta_ij) / 2`` off the diagonal, rows summing to 0.
        vertex_areas: (V,) one third of the area of every incident triangle (unit squared).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    n_vertices = vertices.shape[0]
    corners = vertices[triangles]  # (F, 3, 3)
    rows, cols, weights = [], [], []
    for corner in range(3):
        # The angle at `corner` is opposite the edge (next, previous).
        nxt, prv = (corner + 1) % 3, (corner + 2) % 3
        edge_a = corners[:, nxt] - corners[:, corner]
        edge_b = corners[:, prv] - corners[:, corner]
        cross = np.linalg.norm(np.cross(edge_a, edge_b), axis=1)
        cotangent = np.einsum("ij,ij->i", edge_a, edge_b) / np.maximum(cross, 1e-300)
        rows.append(triangles[:, nxt])
        cols.append(triangles[:, prv])
        weights.append(0.5 * cotangent)
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    weights = np.concatenate(weights)
    off_diagonal = scipy.sparse.coo_matrix((weights, (rows, cols)), shape=(n_vertices, n_vertices))
    off_diagonal = off_diagonal + off_diagonal.T
    degree = np.asarray(off_diagonal.sum(axis=1)).ravel()
    stiffness = (scipy.sparse.diags(degree) - off_diagonal).tocsr()

    doubled_areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    vertex_areas = np.bincount(triangles.ravel(), weights=np.repeat(doubled_areas / 6.0, 3), minlength=n_vertices)
    return stiffness, vertex_areas


def laplacian_eigenfunctions(
    vertices: np.ndarray, triangles: np.ndarray, n_modes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n_modes`` lowest eigenpairs of ``K phi = lambda M phi`` on a connected triangle mesh.

    ``M`` is the lumped mass matrix divided by the total area, so the
    eigenfunctions are orthonormal under it and the first is the constant 1.

    Args:
        vertices: (V, 3) float, millimetres (any unit; eigenvalues are per unit squared times area).
        triangles: (F, 3) int; every vertex must belong to a triangle.
        n_modes: number of eigenpairs, including the constant one.

    Returns:
        eigenvalues: (n_modes,) ascending, the first 0 up to rounding.
        eigenfunctions: (V, n_modes), ``phi^T diag(mass) phi = I``.
        mass: (V,) the normalised lumped mass (vertex areas / total area, summing to 1).
    """
    stiffness, vertex_areas = cotangent_laplacian(vertices, triangles)
    if np.any(vertex_areas <= 0):
        raise ValueError("every vertex must belong to a triangle of positive area")
    mass = vertex_areas / vertex_areas.sum()
    mass_matrix = scipy.sparse.diags(mass).tocsc()
    # Shift-invert just below zero: K is singular (constants), K - sigma M is not.
    typical = float(stiffness.diagonal().mean() / mass.mean())
    sigma = -1e-6 * typical
    eigenvalues, eigenfunctions = scipy.sparse.linalg.eigsh(
        stiffness.tocsc(), k=n_modes, M=mass_matrix, sigma=sigma, which="LM", v0=np.ones(len(mass))
    )
    order = np.argsort(eigenvalues)
    eigenvalues = eigenvalues[order]
    eigenfunctions = eigenfunctions[:, order]
    # Fix the sign (eigsh returns either) so the output is reproducible: constant mode positive,
    # others positive at their largest-magnitude vertex.
    pivots = np.argmax(np.abs(eigenfunctions), axis=0)
    eigenfunctions = eigenfunctions * np.sign(eigenfunctions[pivots, np.arange(n_modes)])
    eigenvalues[0] = max(eigenvalues[0], 0.0)
    return eigenvalues, eigenfunctions, mass


def laplacian_albedo(
    vertices: np.ndarray,
    triangles: np.ndarray,
    modes_per_channel: int = DEFAULT_MODES_PER_CHANNEL,
    mean_colour: np.ndarray | None = None,
    global_tone_fraction: float = DEFAULT_GLOBAL_TONE_FRACTION,
    detail_fraction: float = DEFAULT_DETAIL_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth per-channel albedo model on a face mesh (module docstring gives the prior).

    Args:
        vertices: (V, 3) float, millimetres.
        triangles: (F, 3) int, every vertex in some triangle, mesh connected.
        modes_per_channel: eigenfunctions per colour channel, the constant one included.
        mean_colour: (3,) linear RGB; default :func:`skin_albedo_mean`.
        global_tone_fraction: standard deviation of the constant mode as a fraction of the channel mean.
        detail_fraction: standard deviation scale of the non-constant modes, fraction of the channel mean.

    Returns:
        mean: (V, 3) linear RGB in [0, 1], the same colour at every vertex.
        basis: (V, 3, 3 * modes_per_channel) per standard deviation; mode ``3 k + c``
            is eigenfunction ``k`` in colour channel ``c`` (zero in the other
            channels), so truncating the basis keeps the lowest frequencies of all channels.
    """
    if modes_per_channel < 1:
        raise ValueError("modes_per_channel must be at least 1")
    mean_colour = skin_albedo_mean() if mean_colour is None else np.asarray(mean_colour, dtype=np.float64)
    eigenvalues, eigenfunctions, _ = laplacian_eigenfunctions(vertices, triangles, modes_per_channel)
    standard_deviations = albedo_standard_deviations(eigenvalues, mean_colour, global_tone_fraction, detail_fraction)
    n_vertices = eigenfunctions.shape[0]
    mean = np.broadcast_to(mean_colour, (n_vertices, 3)).copy()
    basis = np.zeros((n_vertices, 3, 3 * modes_per_channel))
    for k in range(modes_per_channel):
        for channel in range(3):
            basis[:, channel, 3 * k + channel] = eigenfunctions[:, k] * standard_deviations[k, channel]
    return mean, basis


def albedo_standard_deviations(
    eigenvalues: np.ndarray,
    mean_colour: np.ndarray,
    global_tone_fraction: float = DEFAULT_GLOBAL_TONE_FRACTION,
    detail_fraction: float = DEFAULT_DETAIL_FRACTION,
) -> np.ndarray:
    """Prior standard deviation (K, 3) of each eigenfunction (K,) in each channel (formula in the module docstring)."""
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    mean_colour = np.asarray(mean_colour, dtype=np.float64)
    sigmas = np.empty((len(eigenvalues), 3))
    sigmas[0] = global_tone_fraction * mean_colour
    if len(eigenvalues) > 1:
        reference = eigenvalues[1]
        falloff = 1.0 / np.sqrt(1.0 + eigenvalues[1:] / reference)
        sigmas[1:] = detail_fraction * falloff[:, None] * mean_colour[None, :]
    return sigmas

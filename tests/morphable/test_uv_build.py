"""UV rasterisation: pixel location, exactness on linear functions, normals, and sampling the ICT UV-3DMM at its vertices."""

from __future__ import annotations

import numpy as np
import torch

from lsqface.morphable.flatten import flatten
from lsqface.morphable.uv_build import locate_pixels, rasterisation_matrix, vertex_normals
from lsqface.morphable.uv_model import sample_albedo, sample_normal, sample_shape


def test_locate_pixels_barycentrics_reproduce_the_pixel_centre():
    generator = np.random.default_rng(0)
    inner = generator.uniform(0.2, 0.8, size=(1, 2))
    uv = np.concatenate([[[0, 0], [1, 0], [1, 1], [0, 1]], inner])
    triangles = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    size = 17
    triangle_index, barycentric = locate_pixels(uv, triangles, size)
    assert np.all(triangle_index >= 0)
    rows, columns = np.mgrid[0:size, 0:size]
    rebuilt = np.einsum("ijk,ijkd->ijd", barycentric, uv[triangles[triangle_index]]) * (size - 1)
    np.testing.assert_allclose(rebuilt, np.stack([columns, rows], axis=-1), atol=1e-9)
    assert barycentric.min() >= 0


def test_rasterising_a_linear_function_is_exact_outside_the_holes(ict_model):
    flattening = flatten(ict_model)
    size = 64
    matrix, mask = rasterisation_matrix(flattening, size)
    assert mask.all()
    coefficients = np.array([[2.0, -1.0], [0.5, 3.0], [-4.0, 0.25]])
    values = flattening.vertex_uv @ coefficients.T + np.array([1.0, 2.0, 3.0])  # (V, 3), linear in (u, v)
    image = (matrix @ values).reshape(size, size, 3)
    rows, columns = np.mgrid[0:size, 0:size] / (size - 1)
    expected = np.stack([columns, rows], axis=-1) @ coefficients.T + np.array([1.0, 2.0, 3.0])
    # Fan pixels take ring means, which are not the linear function at the auxiliary vertex.
    triangle_index, _ = locate_pixels(flattening.uv, flattening.triangles, size)
    face = triangle_index < flattening.filled.n_face_triangles
    assert face.mean() > 0.98  # the narrow area's eye and mouth fans cover about 1.3 % of the square
    np.testing.assert_allclose(image[face], expected[face], atol=1e-9)


def test_vertex_normals_of_a_sphere_point_outwards():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    normals = vertex_normals(np.asarray(sphere.vertices), np.asarray(sphere.faces))
    radial = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-12)
    assert np.min(np.sum(normals * radial, axis=1)) > 0.999


def _lipschitz_bound(uv_pixels: np.ndarray, triangles: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Per vertex, an upper estimate of the largest gradient norm (value units per pixel) of the
    piecewise-linear map within 2 pixels of it: (V, M) for values (V, M, K).

    Each pixel cell gets the largest gradient of the triangles with a vertex in it or covering its
    centre; a 5 x 5 maximum filter then covers the 4 pixel centres a bilinear sample reads.
    """
    import scipy.ndimage

    a, b, c = (uv_pixels[triangles[:, k]] for k in range(3))
    edges = np.stack([b - a, c - a], axis=1)  # (F, 2, 2)
    inverse = np.linalg.inv(edges)
    differences = np.stack([values[triangles[:, 1]] - values[triangles[:, 0]], values[triangles[:, 2]] - values[triangles[:, 0]]], axis=1)
    gradients = np.einsum("fij,fjmk->fimk", inverse, differences)  # (F, 2, M, K)
    norms = np.sqrt((gradients**2).sum(axis=(1, 3)))  # (F, M): Frobenius >= operator norm
    cells = np.zeros((size * size, norms.shape[1]))
    corner_cells = np.clip(np.floor(uv_pixels[triangles]).astype(int), 0, size - 1)  # (F, 3, 2)
    cell_ids = (corner_cells[..., 1] * size + corner_cells[..., 0]).T.ravel()  # corner-major (3 F,)
    order = np.argsort(cell_ids, kind="stable")
    sorted_ids = cell_ids[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_ids[1:] != sorted_ids[:-1]]))
    cells[sorted_ids[starts]] = np.maximum.reduceat(np.tile(norms, (3, 1))[order], starts, axis=0)
    cells = cells.reshape(size, size, -1)
    triangle_index, _ = locate_pixels(uv_pixels / (size - 1), triangles, size)
    cells = np.maximum(cells, norms[triangle_index])
    cells = scipy.ndimage.maximum_filter(cells, size=(5, 5, 1), mode="nearest")
    vertex_cell = np.clip(np.floor(uv_pixels).astype(int), 0, size - 1)
    return cells[vertex_cell[:, 1], vertex_cell[:, 0]]


def test_sampling_at_each_vertex_returns_its_values(ict_uv_model):
    """Bilinear sampling of the rasterised images at a vertex's own (u, v) returns that vertex's values.

    The images hold the piecewise-linear interpolant at pixel centres; a bilinear sample is a convex
    combination of 4 pixel centres within sqrt(2) pixels, so its error is at most sqrt(2) times the
    interpolant's largest gradient (per pixel) near the vertex. Tiny, folded-in regions (ICT's nostrils
    map to a few pixels) have huge gradients and so get a loose bound; smooth regions a tight one.
    Every vertex is included, the outer rim too (it lies on the border pixels).
    """
    uv_model = ict_uv_model
    model = uv_model.model
    flattening = flatten(model)
    size = uv_model.size
    uv = torch.from_numpy(flattening.vertex_uv)[None].to(torch.float64)
    images = uv_model.to(dtype=torch.float64)
    shape_mean, shape_basis = sample_shape(images, uv)
    albedo_mean, albedo_basis = sample_albedo(images, uv)

    # Shape: the mean and every mode (identity then expression) as (V, M, 3).
    shape_values = np.concatenate([model.shape_mean[:, None], model.shape_basis.transpose(0, 2, 1)], axis=1)
    sampled = np.concatenate([shape_mean[0, :, None].numpy(), shape_basis[0].permute(0, 2, 1).numpy()], axis=1)
    filled_values = flattening.filled.extend(shape_values)
    bound = _lipschitz_bound(flattening.uv * (size - 1), flattening.triangles, filled_values, size)
    error = np.linalg.norm(sampled - shape_values, axis=2)  # (V, M)
    # float32 storage adds a relative rounding of about 1e-7 of the value.
    assert np.all(error <= np.sqrt(2) * bound[: model.n_vertices] + 1e-5 * (1 + np.abs(shape_values).max()))
    # And the bound is not vacuous: most vertices are accurate to a small fraction of the mode scale.
    mode_scale = np.abs(model.shape_basis).max(axis=(0, 1))
    assert np.median(error[:, 1:] / mode_scale) < 0.02

    albedo_values = np.concatenate([model.albedo_mean[:, None], model.albedo_basis.transpose(0, 2, 1)], axis=1)
    sampled_albedo = np.concatenate([albedo_mean[0, :, None].numpy(), albedo_basis[0].permute(0, 2, 1).numpy()], axis=1)
    albedo_bound = _lipschitz_bound(flattening.uv * (size - 1), flattening.triangles, flattening.filled.extend(albedo_values), size)
    albedo_error = np.linalg.norm(sampled_albedo - albedo_values, axis=2)
    assert np.all(albedo_error <= np.sqrt(2) * albedo_bound[: model.n_vertices] + 1e-6)

    normals = sample_normal(images, uv)[0].numpy()
    expected = vertex_normals(model.shape_mean, model.triangles)
    cosine = np.sum(normals * expected, axis=1)
    assert np.median(cosine) > 0.99


def test_uv_model_layout_and_mask(ict_uv_model):
    uv_model = ict_uv_model
    size, model = uv_model.size, uv_model.model
    assert uv_model.shape_images.shape == (3 + 3 * model.n_shape, size, size)
    assert uv_model.albedo_images.shape == (3 + 3 * model.n_albedo, size, size)
    assert all(t.dtype == torch.float32 for t in (uv_model.shape_images, uv_model.albedo_images, uv_model.normal_image, uv_model.mask_image))
    assert torch.all(uv_model.mask_image == 1)  # the rim is pinned to the square, so the filled mesh covers it
    torch.testing.assert_close(uv_model.normal_image.norm(dim=0), torch.ones(size, size), atol=1e-5, rtol=0)
    # Channel 3 + 3 n + c is coordinate c of mode n: the first pixel agrees with the rasterisation matrix.
    matrix, _ = rasterisation_matrix(flatten(model), size)
    row = matrix[size * 7 + 5]
    expected = np.asarray(row @ model.shape_basis.reshape(model.n_vertices, -1)).reshape(3, model.n_shape)
    torch.testing.assert_close(
        uv_model.shape_images[3:, 7, 5].reshape(model.n_shape, 3).double(), torch.from_numpy(expected.T.copy()), atol=1e-4, rtol=1e-5
    )

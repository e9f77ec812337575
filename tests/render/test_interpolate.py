import numpy as np
import pytest
import torch

from lsqface.render.interpolate import barycentrics_differentiable, face_normals, interpolate, vertex_normals
from lsqface.render.rasterize import RenderError, rasterize


def small_mesh(dtype=torch.float64):
    """Two overlapping triangles and a third one, in a 9 x 10 image: (1, 7, 3), (3, 3)."""
    vertices = torch.tensor(
        [
            [
                [1.2, 0.7, 2.0],
                [8.6, 1.9, 2.5],
                [3.1, 8.3, 1.5],
                [5.2, 2.2, 1.0],
                [9.7, 6.8, 3.0],
                [4.4, 8.9, 1.2],
                [0.3, 5.1, 4.0],
            ]
        ],
        dtype=dtype,
    )
    triangles = torch.tensor([[0, 1, 2], [3, 5, 4], [0, 2, 6]])
    return vertices, triangles


def test_differentiable_barycentrics_equal_rasteriser_barycentrics():
    vertices, triangles = small_mesh()
    fragments = rasterize(vertices, triangles, 9, 10)
    torch.testing.assert_close(barycentrics_differentiable(vertices, fragments, triangles), fragments.barycentrics)


def test_interpolating_positions_gives_pixel_centres_and_zero_background():
    vertices, triangles = small_mesh()
    fragments = rasterize(vertices, triangles, 9, 10)
    values = interpolate(vertices, fragments, vertices, triangles)  # (1, 9, 10, 3)
    rows, columns = torch.nonzero(fragments.mask[0], as_tuple=True)
    assert rows.numel() > 20
    torch.testing.assert_close(values[0, rows, columns, 0], columns.double() + 0.5)
    torch.testing.assert_close(values[0, rows, columns, 1], rows.double() + 0.5)
    torch.testing.assert_close(values[0, rows, columns, 2], fragments.depth[0, rows, columns])
    assert torch.all(values[0][~fragments.mask[0]] == 0)


def test_interpolate_without_vertices_uses_fragment_barycentrics():
    vertices, triangles = small_mesh()
    colours = torch.rand(1, 7, 4, dtype=torch.float64)
    fragments = rasterize(vertices, triangles, 9, 10)
    torch.testing.assert_close(
        interpolate(colours, fragments, None, triangles), interpolate(colours, fragments, vertices, triangles)
    )


def test_gradcheck_attributes_and_vertex_positions():
    vertices, triangles = small_mesh()
    fragments = rasterize(vertices, triangles, 9, 10)
    attributes = torch.rand(1, 7, 2, dtype=torch.float64, requires_grad=True)
    positions = vertices.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda attributes, positions: interpolate(attributes, fragments, positions, triangles),
        (attributes, positions),
    )
    assert torch.autograd.gradcheck(
        lambda positions: barycentrics_differentiable(positions, fragments, triangles), (positions,)
    )


def test_gradient_moves_pixel_values_as_finite_differences_of_the_geometry():
    # Independent of autograd: moving a vertex a little (no pixel changes triangle) changes the
    # interpolated value at a pixel as predicted by the gradient.
    vertices, triangles = small_mesh()
    colours = torch.rand(1, 7, 1, dtype=torch.float64)
    fragments = rasterize(vertices, triangles, 9, 10)
    positions = vertices.clone().requires_grad_(True)
    image = interpolate(colours, fragments, positions, triangles)
    image[0, 4, 4, 0].backward()
    step = 1e-5
    moved = vertices.clone()
    moved[0, 2, 0] += step
    moved_fragments = rasterize(moved, triangles, 9, 10)
    assert torch.equal(moved_fragments.triangle_id, fragments.triangle_id)
    difference = (interpolate(colours, moved_fragments, None, triangles) - image.detach())[0, 4, 4, 0] / step
    torch.testing.assert_close(positions.grad[0, 2, 0], difference, rtol=1e-4, atol=1e-8)


def test_face_normals_match_numpy_cross_product():
    generator = torch.Generator().manual_seed(0)
    vertices = torch.rand(2, 6, 3, generator=generator, dtype=torch.float64)
    triangles = torch.tensor([[0, 1, 2], [3, 4, 5], [1, 3, 5]])
    corners = vertices.numpy()[:, triangles.numpy()]
    expected = np.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0])
    np.testing.assert_allclose(face_normals(vertices, triangles, unit=False).numpy(), expected)
    np.testing.assert_allclose(
        face_normals(vertices, triangles).numpy(), expected / np.linalg.norm(expected, axis=-1, keepdims=True)
    )


def uv_sphere(rings: int = 24, segments: int = 48):
    """Unit sphere, triangles counter-clockwise seen from outside: (V, 3), (F, 3)."""
    polar = torch.linspace(0, np.pi, rings + 1, dtype=torch.float64)[1:-1]
    azimuth = torch.arange(segments, dtype=torch.float64) * 2 * np.pi / segments
    polar, azimuth = torch.meshgrid(polar, azimuth, indexing="ij")
    ring_points = torch.stack(
        (torch.sin(polar) * torch.cos(azimuth), torch.sin(polar) * torch.sin(azimuth), torch.cos(polar)), -1
    ).reshape(-1, 3)
    points = torch.cat((torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), ring_points,
                        torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)))
    south = points.shape[0] - 1
    triangles = []
    for segment in range(segments):
        following = (segment + 1) % segments
        triangles.append([0, 1 + segment, 1 + following])
        for ring in range(rings - 3):
            a, b = 1 + ring * segments + segment, 1 + ring * segments + following
            c, d = a + segments, b + segments
            triangles += [[a, c, d], [a, d, b]]
        last = 1 + (rings - 2) * segments
        triangles.append([south, last + following, last + segment])
    return points, torch.tensor(triangles)


def test_vertex_normals_of_a_sphere_are_radial_and_differentiable():
    points, triangles = uv_sphere()
    normals = vertex_normals((points * 3.0)[None], triangles)[0]
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(points.shape[0], dtype=torch.float64))
    cosine = (normals * points).sum(-1)
    assert cosine.min() > 0.995  # outward (a flipped winding would give -1), radial up to the UV grid
    small_points, small_triangles = uv_sphere(5, 6)
    positions = (small_points + 0.05 * torch.rand(small_points.shape, dtype=torch.float64))[None]
    assert torch.autograd.gradcheck(
        lambda positions: vertex_normals(positions, small_triangles), (positions.requires_grad_(True),)
    )


def test_batch_mismatch_raises_render_error():
    vertices, triangles = small_mesh()
    fragments = rasterize(vertices, triangles, 9, 10)
    with pytest.raises(RenderError):
        interpolate(torch.rand(2, 7, 3), fragments, None, triangles)


def test_vertex_normals_are_the_three_corner_sums_bit_for_bit():
    """vertex_normals sums the corners with one index_add over a vertex-major layout: the very sums of
    adding each corner's triangles in turn along the vertex dimension (the code before), bit for bit."""
    generator = torch.Generator().manual_seed(2)
    vertices = torch.randn(3, 40, 3, generator=generator, dtype=torch.float64) * 50
    triangles = torch.randint(0, 40, (90, 3), generator=generator)
    weighted = face_normals(vertices, triangles, unit=False)
    expected = vertices.new_zeros(vertices.shape)
    for corner in range(3):
        expected = expected.index_add(1, triangles[:, corner], weighted)
    expected = torch.nn.functional.normalize(expected, dim=-1, eps=1e-12)
    assert torch.equal(vertex_normals(vertices, triangles), expected)
    assert torch.equal(face_normals(vertices, triangles, unit=False), torch.linalg.cross(
        vertices[:, triangles][:, :, 1] - vertices[:, triangles][:, :, 0], vertices[:, triangles][:, :, 2] - vertices[:, triangles][:, :, 0]))

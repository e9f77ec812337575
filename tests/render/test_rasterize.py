import numpy as np
import pytest
import torch

from lsqface.render.rasterize import RenderError, rasterize


def brute_force(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int, cull_backfaces=False):
    """Loop over pixels, solve each triangle's barycentric system, keep the nearest (float64)."""
    triangle_id = -np.ones((height, width), dtype=np.int64)
    barycentrics = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    for row in range(height):
        for column in range(width):
            centre = np.array([column + 0.5, row + 0.5])
            for index, (a, b, c) in enumerate(triangles):
                v0, v1, v2 = vertices[a], vertices[b], vertices[c]
                system = np.array([[v1[0] - v0[0], v2[0] - v0[0]], [v1[1] - v0[1], v2[1] - v0[1]]])
                determinant = np.linalg.det(system)
                if determinant == 0 or (cull_backfaces and determinant > 0):
                    continue
                second, third = np.linalg.solve(system, centre - v0[:2])
                weights = np.array([1.0 - second - third, second, third])
                if (weights < 0).any():
                    continue
                z = weights @ np.array([v0[2], v1[2], v2[2]])
                if z < depth[row, column]:
                    depth[row, column] = z
                    triangle_id[row, column] = index
                    barycentrics[row, column] = weights
    return triangle_id, barycentrics, depth


def random_mesh(generator: np.random.Generator, height: int, width: int, face_count: int = 16):
    """Overlapping triangles of random size and winding, partly outside the image, plus degenerate ones."""
    vertex_count = 3 * face_count
    centres = np.repeat(generator.uniform(0, [width, height], size=(face_count, 2)), 3, axis=0)
    radius = np.repeat(generator.choice([1.5, 4.0, 12.0], size=face_count), 3)[:, None]
    xy = centres + generator.uniform(-1, 1, size=(vertex_count, 2)) * radius
    z = generator.uniform(1.0, 10.0, size=(vertex_count, 1))
    vertices = np.concatenate([xy, z], axis=1)
    triangles = np.arange(vertex_count).reshape(face_count, 3)
    # Alternate windings: even triangles clockwise on screen, odd ones counter-clockwise.
    first, second = xy[triangles[:, 1]] - xy[triangles[:, 0]], xy[triangles[:, 2]] - xy[triangles[:, 0]]
    clockwise = first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0] > 0
    flip = clockwise != (np.arange(face_count) % 2 == 0)
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    # Degenerate triangles: a repeated vertex and three exactly collinear vertices.
    vertices = np.concatenate([vertices, [[1.0, 1.0, 0.5], [2.0, 2.0, 0.5], [4.0, 4.0, 0.5]]])
    triangles = np.concatenate([triangles, [[0, 0, 1], [vertex_count, vertex_count + 1, vertex_count + 2]]])
    return vertices, triangles


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cull_backfaces", [False, True])
def test_matches_brute_force_reference(seed, cull_backfaces):
    generator = np.random.default_rng(seed)
    height, width = 11, 13
    vertices, triangles = random_mesh(generator, height, width)
    expected_id, expected_barycentrics, expected_depth = brute_force(
        vertices, triangles, height, width, cull_backfaces
    )
    fragments = rasterize(
        torch.from_numpy(vertices)[None], torch.from_numpy(triangles), height, width, cull_backfaces=cull_backfaces
    )
    assert (expected_id >= 0).sum() > 15  # the case is not trivially empty
    np.testing.assert_array_equal(fragments.triangle_id[0].numpy(), expected_id)
    np.testing.assert_allclose(fragments.barycentrics[0].numpy(), expected_barycentrics, atol=1e-6)
    np.testing.assert_allclose(fragments.depth[0].numpy(), expected_depth, atol=1e-6)


def test_small_chunks_and_batch_give_same_result():
    generator = np.random.default_rng(7)
    meshes = [random_mesh(generator, 16, 16, face_count=10) for _ in range(2)]
    triangles = torch.from_numpy(meshes[0][1])
    vertices = torch.from_numpy(np.stack([meshes[0][0], meshes[1][0]]))
    together = rasterize(vertices, triangles, 16, 16, max_candidates=40)
    for index in range(2):
        alone = rasterize(vertices[index : index + 1], triangles, 16, 16)
        torch.testing.assert_close(together.triangle_id[index], alone.triangle_id[0])
        torch.testing.assert_close(together.barycentrics[index], alone.barycentrics[0])
        torch.testing.assert_close(together.depth[index], alone.depth[0])


def test_square_of_two_triangles_covers_exactly_its_pixels():
    # Square [2, 6] x [3, 5]: pixel centres j + 0.5 in [2, 6] -> columns 2..5, rows 3..4.
    vertices = torch.tensor([[[2.0, 3.0, 1.0], [6.0, 3.0, 1.0], [6.0, 5.0, 1.0], [2.0, 5.0, 1.0]]])
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fragments = rasterize(vertices, triangles, 8, 9)
    expected = torch.zeros(8, 9, dtype=torch.bool)
    expected[3:5, 2:6] = True
    torch.testing.assert_close(fragments.mask[0], expected)
    assert torch.all(fragments.depth[0][expected] == 1.0)
    assert torch.all(torch.isinf(fragments.depth[0][~expected]))
    torch.testing.assert_close(fragments.barycentrics[0].sum(-1), expected.to(torch.float32))


def test_edges_through_pixel_centres_are_inclusive_and_without_cracks():
    # A regular grid whose vertices and edges (including diagonals) pass through pixel centres.
    side = 5
    coordinates = 1.5 + 2.0 * torch.arange(side, dtype=torch.float64)
    y, x = torch.meshgrid(coordinates, coordinates, indexing="ij")
    vertices = torch.stack((x, y, torch.ones_like(x)), -1).reshape(1, -1, 3)
    index = torch.arange(side * side).reshape(side, side)
    a, b = index[:-1, :-1].reshape(-1), index[:-1, 1:].reshape(-1)
    c, d = index[1:, :-1].reshape(-1), index[1:, 1:].reshape(-1)
    triangles = torch.cat((torch.stack((a, b, d), 1), torch.stack((a, d, c), 1)))
    fragments = rasterize(vertices, triangles, 12, 12)
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[1:10, 1:10] = True  # centres 1.5 .. 9.5 inclusive
    torch.testing.assert_close(fragments.mask[0], expected)


def test_jittered_mesh_has_no_holes():
    generator = torch.Generator().manual_seed(3)
    side = 9
    coordinates = torch.linspace(2.25, 29.75, side, dtype=torch.float64)
    y, x = torch.meshgrid(coordinates, coordinates, indexing="ij")
    jitter = (torch.rand(side, side, 2, generator=generator, dtype=torch.float64) - 0.5) * 2.0
    jitter[[0, -1]] = 0
    jitter[:, [0, -1]] = 0
    positions = torch.stack((x + jitter[..., 0], y + jitter[..., 1]), -1).reshape(-1, 2)
    vertices = torch.cat((positions, torch.rand(side * side, 1, generator=generator, dtype=torch.float64)), -1)
    index = torch.arange(side * side).reshape(side, side)
    a, b = index[:-1, :-1].reshape(-1), index[:-1, 1:].reshape(-1)
    c, d = index[1:, :-1].reshape(-1), index[1:, 1:].reshape(-1)
    triangles = torch.cat((torch.stack((a, b, d), 1), torch.stack((c, a, d), 1)))  # mixed windings
    for dtype in (torch.float64, torch.float32):
        fragments = rasterize(vertices[None].to(dtype), triangles, 32, 32)
        expected = torch.zeros(32, 32, dtype=torch.bool)
        expected[2:30, 2:30] = True  # centres 2.5 .. 29.5 lie inside [2.25, 29.75]
        torch.testing.assert_close(fragments.mask[0], expected)


def test_triangle_much_larger_than_image_covers_it():
    vertices = torch.tensor(
        [[[-1e4, -1e4, 5.0], [5e4, -1e4, 5.0], [-1e4, 5e4, 5.0], [3.0, 3.0, 1.0], [9.0, 3.0, 1.0], [3.0, 9.0, 1.0]]]
    )
    triangles = torch.tensor([[0, 1, 2], [3, 4, 5]])
    fragments = rasterize(vertices, triangles, 20, 24)
    assert fragments.mask.all()
    near = fragments.triangle_id[0] == 1
    assert 10 < int(near.sum()) < 30
    torch.testing.assert_close(fragments.depth[0][~near], torch.full_like(fragments.depth[0][~near], 5.0))


def test_backface_culling_keeps_counter_clockwise_on_screen():
    # Counter-clockwise as displayed (y down): cross(v1 - v0, v2 - v0) < 0.
    counter_clockwise = torch.tensor([[[1.0, 1.0, 1.0], [1.0, 7.0, 1.0], [7.0, 7.0, 1.0]]])
    clockwise = counter_clockwise[:, [0, 2, 1]]
    triangles = torch.tensor([[0, 1, 2]])
    assert rasterize(counter_clockwise, triangles, 8, 8, cull_backfaces=True).mask.any()
    assert not rasterize(clockwise, triangles, 8, 8, cull_backfaces=True).mask.any()
    assert rasterize(clockwise, triangles, 8, 8).mask.sum() == rasterize(counter_clockwise, triangles, 8, 8).mask.sum()


def test_bad_inputs_raise_render_error():
    vertices = torch.zeros(1, 3, 3)
    with pytest.raises(RenderError):
        rasterize(vertices[0], torch.tensor([[0, 1, 2]]), 4, 4)
    with pytest.raises(RenderError):
        rasterize(vertices, torch.tensor([[0, 1, 3]]), 4, 4)
    with pytest.raises(RenderError):
        rasterize(vertices, torch.tensor([[0, 1, 2]]), 0, 4)


def test_negative_depths_keep_the_nearest():
    generator = np.random.default_rng(11)
    vertices, triangles = random_mesh(generator, 10, 10)
    vertices[:, 2] -= 5.5  # depths in [-4.5, 4.5]: the z-test key must order negative floats too
    expected_id, _, expected_depth = brute_force(vertices, triangles, 10, 10)
    fragments = rasterize(torch.from_numpy(vertices)[None], torch.from_numpy(triangles), 10, 10)
    assert (expected_depth < 0).any() and (expected_depth[np.isfinite(expected_depth)] > 0).any()
    np.testing.assert_array_equal(fragments.triangle_id[0].numpy(), expected_id)


def test_float32_agrees_with_float64_on_a_face_sized_image():
    generator = torch.Generator().manual_seed(5)
    # 400 small overlapping triangles (up to 12 pixels across) scattered over the image.
    centres = torch.rand(2, 400, 1, 3, generator=generator, dtype=torch.float64) * torch.tensor([96.0, 80.0, 1.0])
    offsets = (torch.rand(2, 400, 3, 3, generator=generator, dtype=torch.float64) - 0.5) * torch.tensor([12.0, 12.0, 0.2])
    vertices = (centres + offsets).reshape(2, 1200, 3)
    triangles = torch.arange(1200).reshape(400, 3)
    exact = rasterize(vertices, triangles, 80, 96)
    single = rasterize(vertices.float(), triangles, 80, 96)
    agree = (exact.triangle_id == single.triangle_id).double().mean()
    assert agree > 0.999
    same = exact.triangle_id == single.triangle_id
    torch.testing.assert_close(single.barycentrics[same].double(), exact.barycentrics[same], atol=1e-4, rtol=0)


def _camera_triangles(depths):
    """Triangles of a camera (focal 10 px, centre (16, 16)) projected as the pictures project a mesh."""
    camera = torch.tensor(depths, dtype=torch.float64)
    projected = 10.0 * camera[..., :2] / camera[..., 2:3] + 16.0
    return torch.cat([projected, camera[..., 2:3]], dim=-1)[None]


def test_near_plane_drops_triangles_crossing_or_behind_it():
    in_front = [[-3.0, -3.0, 10.0], [3.0, -3.0, 10.0], [0.0, 3.0, 10.0]]
    crossing = [[-3.0, -3.0, 10.0], [3.0, -3.0, -0.2], [0.0, 3.0, 10.0]]  # one corner behind the camera
    behind = [[-3.0, -3.0, -10.0], [3.0, -3.0, -10.0], [0.0, 3.0, -10.0]]
    triangles = torch.tensor([[0, 1, 2]])
    # Without a near plane the crossing triangle's corner wraps through infinity to the far side of
    # the picture, so it covers several times what it covers in front, and the one behind is drawn mirrored.
    covered = rasterize(_camera_triangles(in_front), triangles, 32, 32).mask.sum()
    assert rasterize(_camera_triangles(crossing), triangles, 32, 32).mask.sum() > 3 * covered
    assert rasterize(_camera_triangles(behind), triangles, 32, 32).mask.any()
    for corners in (crossing, behind):
        assert not rasterize(_camera_triangles(corners), triangles, 32, 32, near=1.0).mask.any()
    kept = rasterize(_camera_triangles(in_front), triangles, 32, 32, near=1.0)
    assert torch.equal(kept.triangle_id, rasterize(_camera_triangles(in_front), triangles, 32, 32).triangle_id)
    assert kept.mask.any()


def test_near_plane_keeps_the_rest_of_a_mesh():
    # Two triangles: one in front, one with a corner nearer than the plane; only the second goes.
    vertices = _camera_triangles([[-3.0, -3.0, 10.0], [3.0, -3.0, 10.0], [0.0, 3.0, 10.0],
                                  [-1.0, -1.0, 0.5], [1.0, -1.0, 5.0], [0.0, 1.0, 5.0]])
    fragments = rasterize(vertices, torch.tensor([[0, 1, 2], [3, 4, 5]]), 32, 32, near=1.0)
    assert set(fragments.triangle_id.unique().tolist()) == {-1, 0}

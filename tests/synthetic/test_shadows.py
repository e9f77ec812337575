"""Shadow maps: the light's frame, and which points a directional light reaches past an occluder."""

import torch

from lsqface.synthetic.shadows import light_frame, light_visibility


def square(centre_z: float, half: float, offset: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    x, y = offset
    return torch.tensor([[x - half, y - half, centre_z], [x + half, y - half, centre_z],
                         [x + half, y + half, centre_z], [x - half, y + half, centre_z]], dtype=torch.float64)


TWO_TRIANGLES = torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_light_frame_is_a_rotation_whose_last_row_is_the_direction():
    directions = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0),
                                                           dtype=torch.float64), dim=1)
    directions[0] = torch.tensor([0.0, 0.0, 1.0])  # on an axis, too
    frame = light_frame(directions)
    torch.testing.assert_close(frame @ frame.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(64, 3, 3))
    torch.testing.assert_close(torch.linalg.det(frame), torch.ones(64, dtype=torch.float64))
    torch.testing.assert_close(frame[:, 2], directions)


def test_a_square_in_front_of_a_wall_shadows_the_wall_behind_it_only():
    """Light travelling along +z (or slanted): a wall at z = 100 and a small square at z = 50 in front of it.
    Wall points behind the square (along the light) are dark, the rest of the wall and the square lit."""
    vertices = torch.cat([square(100.0, 100.0), square(50.0, 20.0)])[None]
    triangles = torch.cat([TWO_TRIANGLES, TWO_TRIANGLES + 4])
    for direction in ([0.0, 0.0, 1.0], [0.3, -0.2, 1.0]):
        d = torch.nn.functional.normalize(torch.tensor([direction], dtype=torch.float64), dim=1)
        grid = torch.linspace(-80, 80, 33, dtype=torch.float64)
        wall = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).reshape(-1, 2)
        wall = torch.cat([wall, torch.full((len(wall), 1), 100.0, dtype=torch.float64)], 1)
        on_square = torch.tensor([[0.0, 0.0, 50.0], [15.0, -15.0, 50.0]], dtype=torch.float64)
        points = torch.cat([wall, on_square])[None]
        lit = light_visibility(vertices, triangles, d, points, resolution=128)[0]
        # Where the ray from each wall point back towards the light crosses z = 50.
        back = wall[:, :2] - 50.0 * d[0, :2] / d[0, 2]
        texel = 200.0 / (128 - 2) * 1.2  # the map spans the wall (200 mm across, more when slanted)
        inside = (back.abs() < 20.0 - 2 * texel).all(dim=1)   # two texels inside the square's shadow
        outside = (back.abs() > 20.0 + 2 * texel).any(dim=1)  # two texels outside it
        assert inside.sum() > 10 and outside.sum() > 100
        assert (lit[:-2][inside] == 0).all() and (lit[:-2][outside] == 1).all()
        assert (lit[-2:] == 1).all()  # the square itself does not shadow itself
    # On the edge itself the filter sees half shadow: the edge lies where it should, within a texel.
    edge = torch.tensor([[[20.0, 0.0, 100.0], [0.0, -20.0, 100.0]]], dtype=torch.float64)
    straight = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    half = light_visibility(vertices, triangles, straight, edge, resolution=128)[0]
    assert ((half > 0.2) & (half < 0.8)).all(), half


def test_nothing_in_the_way_is_lit_everywhere():
    vertices = square(100.0, 100.0)[None]
    points = torch.tensor([[[0.0, 0.0, 100.0], [60.0, 30.0, 100.0], [0.0, 0.0, 20.0]]], dtype=torch.float64)
    lit = light_visibility(vertices, TWO_TRIANGLES, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), points)
    torch.testing.assert_close(lit, torch.ones(1, 3, dtype=torch.float64))


def sphere(radius: float, centre_z: float, rings: int = 48, segments: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """A UV sphere: (V, 3) vertices and (F, 3) triangles."""
    theta = torch.linspace(0, torch.pi, rings + 1, dtype=torch.float64)[:, None]
    phi = torch.linspace(0, 2 * torch.pi, segments + 1, dtype=torch.float64)[None, :-1]
    points = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos().expand(-1, segments)], -1)
    vertices = radius * points.reshape(-1, 3) + torch.tensor([0.0, 0.0, centre_z], dtype=torch.float64)
    triangles = []
    for ring in range(rings):
        for segment in range(segments):
            a, b = ring * segments + segment, ring * segments + (segment + 1) % segments
            triangles += [[a, b, a + segments], [b, b + segments, a + segments]]
    return vertices, torch.tensor(triangles)


def test_a_convex_surface_slanted_to_the_light_does_not_shadow_itself():
    """A sphere lit along +z has nothing between its lit half and the light: every point of that half
    that the light reaches at more than a grazing angle is lit, however slanted."""
    vertices, triangles = sphere(80.0, 500.0)
    normals = torch.nn.functional.normalize(vertices - torch.tensor([0.0, 0.0, 500.0], dtype=torch.float64), dim=1)
    light = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    facing = -(normals @ light[0])
    lit = light_visibility(vertices[None], triangles, light, vertices[None], normals=normals[None], resolution=128)[0]
    assert (lit[facing > 0.2] == 1).all() and lit[facing > 0.05].mean() > 0.99
    # The far half lies behind the near one along the light: in shadow.
    assert (lit[facing < -0.3] == 0).all()


def test_absent_vertices_are_left_out_of_the_map():
    """NaN vertices (accessories a face does not have) neither cast shadows nor widen the map."""
    vertices = torch.cat([square(100.0, 100.0), square(50.0, 20.0)])[None]
    triangles = torch.cat([TWO_TRIANGLES, TWO_TRIANGLES + 4])
    absent = torch.full((1, 4, 3), float("nan"), dtype=torch.float64)
    points = torch.tensor([[[0.0, 0.0, 100.0], [19.0, 0.0, 100.0], [60.0, 30.0, 100.0]]], dtype=torch.float64)
    light = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    expected = light_visibility(vertices, triangles, light, points)
    found = light_visibility(torch.cat([vertices, absent], dim=1), torch.cat([triangles, TWO_TRIANGLES + 8]), light,
                             points)
    torch.testing.assert_close(found, expected, rtol=0, atol=0)

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
        inside = (back.abs() < 20.0 - 4.0).all(dim=1)   # well inside the square's shadow
        outside = (back.abs() > 20.0 + 4.0).any(dim=1)  # well outside it
        assert inside.sum() > 10 and outside.sum() > 100
        assert (lit[:-2][inside] == 0).all() and (lit[:-2][outside] == 1).all()
        assert (lit[-2:] == 1).all()  # the square itself does not shadow itself


def test_nothing_in_the_way_is_lit_everywhere():
    vertices = square(100.0, 100.0)[None]
    points = torch.tensor([[[0.0, 0.0, 100.0], [60.0, 30.0, 100.0], [0.0, 0.0, 20.0]]], dtype=torch.float64)
    lit = light_visibility(vertices, TWO_TRIANGLES, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), points)
    torch.testing.assert_close(lit, torch.ones(1, 3, dtype=torch.float64))

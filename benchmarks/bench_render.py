"""Benchmark of the torch rasteriser and attribute interpolation on a face-sized mesh.

Run:  python benchmarks/bench_render.py [--threads N]

Times are the minimum over repeats (the least disturbed by other processes).

Prints, for each case, the time of ``rasterize`` and of ``interpolate`` (colour,
with gradients to vertices and colours, forward + backward), the share of the
rasteriser, and as an in-run reference the time of one square float32 matmul
with as many output values as the rendered image (B*H*W*3), with the ratio.

The mesh is the ICT-FaceKit face region (vertices 0..9408 of
generic_neutral_mesh.obj, quads split into triangles) when
/tmp/ict/FaceXModel is present, else a randomly perturbed grid of the same size.
"""

from __future__ import annotations

import math
import pathlib
import argparse
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lsqface.render import interpolate, rasterize  # noqa: E402
from timing import best_time  # noqa: E402

ICT_MESH = pathlib.Path("/tmp/ict/FaceXModel/generic_neutral_mesh.obj")
FACE_VERTEX_COUNT = 9409


def load_ict_face(path: pathlib.Path):
    """Face region of the ICT neutral mesh: (V, 3) float32 centimetres, (F, 3) int64."""
    positions, triangles = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            positions.append([float(value) for value in line.split()[1:4]])
        elif line.startswith("f "):
            corners = [int(token.split("/")[0]) - 1 for token in line.split()[1:]]
            if max(corners) < FACE_VERTEX_COUNT:
                for k in range(1, len(corners) - 1):
                    triangles.append([corners[0], corners[k], corners[k + 1]])
    return torch.tensor(positions[:FACE_VERTEX_COUNT]), torch.tensor(triangles)


def grid_mesh(vertex_count: int = 9409, generator=None):
    """A jittered square grid in [-1, 1]^2 with a bump for depth: (V, 3), (F, 3)."""
    side = int(math.isqrt(vertex_count))
    u, v = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    jitter = (torch.rand(side, side, 2, generator=generator) - 0.5) * (1.0 / side)
    x, y = u + jitter[..., 0], v + jitter[..., 1]
    z = 1.0 - 0.5 * (x**2 + y**2)
    positions = torch.stack((x, y, z), dim=-1).reshape(-1, 3)
    index = torch.arange(side * side).reshape(side, side)
    a, b = index[:-1, :-1].reshape(-1), index[:-1, 1:].reshape(-1)
    c, d = index[1:, :-1].reshape(-1), index[1:, 1:].reshape(-1)
    triangles = torch.cat((torch.stack((a, b, d), 1), torch.stack((a, d, c), 1)))
    return positions, triangles


def to_image_space(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Orthographic view filling 90% of a size x size image, y down, nearer = smaller z: (V, 3)."""
    xy = positions[:, :2]
    centre = (xy.amax(0) + xy.amin(0)) / 2
    scale = 0.9 * size / (xy.amax(0) - xy.amin(0)).max()
    image_xy = (xy - centre) * scale * torch.tensor([1.0, -1.0]) + size / 2
    depth = positions[:, 2].amax() - positions[:, 2] + 1.0
    return torch.cat((image_xy, depth[:, None]), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    if ICT_MESH.exists():
        positions, triangles = load_ict_face(ICT_MESH)
        source = f"ICT-FaceKit face region ({ICT_MESH})"
    else:
        positions, triangles = grid_mesh()
        source = "jittered grid (ICT-FaceKit not found)"
    print(f"mesh: {source}: {positions.shape[0]} vertices, {triangles.shape[0]} triangles")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32")
    header = (
        f"{'case':>18} {'rasterize s':>12} {'interp f+b s':>13} {'raster share':>13} "
        f"{'matmul ref s':>13} {'total/matmul':>13} {'covered px':>11}"
    )
    print(header)
    for batch, size, repeats in ((1, 64, 10), (1, 128, 10), (8, 128, 5), (1, 512, 3), (1, 1024, 3)):
        vertices = to_image_space(positions, size)[None].repeat(batch, 1, 1)
        # Small per-image shifts so the batch is not eight copies of one picture.
        vertices[..., :2] = vertices[..., :2] + torch.randn(batch, 1, 2) * 0.02 * size
        colours = torch.rand(batch, positions.shape[0], 3)
        fragments = rasterize(vertices, triangles, size, size)

        def run_interpolate():
            vertices_with_grad = vertices.clone().requires_grad_(True)
            colours_with_grad = colours.clone().requires_grad_(True)
            image = interpolate(colours_with_grad, fragments, vertices_with_grad, triangles)
            image.sum().backward()

        raster_time = best_time(lambda: rasterize(vertices, triangles, size, size), repeats)
        interpolate_time = best_time(run_interpolate, repeats)
        side = int(math.isqrt(batch * size * size * 3))
        left, right = torch.rand(side, side), torch.rand(side, side)
        matmul_time = best_time(lambda: torch.matmul(left, right), repeats)
        total = raster_time + interpolate_time
        print(
            f"{f'B={batch} {size}x{size}':>18} {raster_time:12.4f} {interpolate_time:13.4f} "
            f"{raster_time / total:13.0%} {matmul_time:13.4f} {total / matmul_time:13.1f} "
            f"{int(fragments.mask.sum()):11d}"
        )
    print(f"matmul ref: one ({side}x{side}) @ ({side}x{side}) float32 for the last row; each row uses n x n with n*n ~ B*H*W*3.")


if __name__ == "__main__":
    main()

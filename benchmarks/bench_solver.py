"""Benchmark of the least-squares layer: forward and forward+backward of the geometric and photometric solves.

Each time is printed as a ratio to the bound measured in the same run: one
batched matmul forming Phi^T Omega Phi at that size, i.e. torch.bmm of
(B, n, 3P) x (B, 3P, n) with n the number of unknowns (12 + N for geometry,
27 + N_alb for photometry), and beside torch.linalg.lstsq on the explicitly
stacked weighted system. Then the float32 error: noise-free samples from a
known camera, shape and lighting, solved in float32 and in float64.

Run:  python benchmarks/bench_solver.py [--batch 8] [--samples 10000] [--repeats 3] [--precision float64]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lsqface.lighting.sh import constant_lighting
from lsqface.solver.camera import Camera, compose_inverse_camera, decompose_camera, project, to_camera
from lsqface.solver.geometry import GeometryRegularisation, solve_geometry
from lsqface.solver.photometry import PhotometryRegularisation, inverse_shading, solve_photometry

SIZES = {"ICT-FaceKit": (153, 99), "BFM 2017": (299, 199)}


def interleaved_best(functions, repeats: int) -> list[float]:
    """Best time of each function over ``repeats`` rounds, each round running every function once."""
    for function in functions:
        function()  # warm up
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def geometry_inputs(batch, samples, count, dtype, generator):
    pixels = torch.rand(batch, samples, 2, generator=generator, dtype=dtype) * 224
    depth = 1 + 0.1 * torch.rand(batch, samples, generator=generator, dtype=dtype)
    confidence = torch.rand(batch, samples, generator=generator, dtype=dtype)
    mean = torch.randn(batch, samples, 3, generator=generator, dtype=dtype) * 50
    basis = torch.randn(batch, samples, 3, count, generator=generator, dtype=dtype)
    return pixels, depth, confidence, mean, basis


def photometry_inputs(batch, samples, count, dtype, generator):
    colours = 0.2 + torch.rand(batch, samples, 3, generator=generator, dtype=dtype)
    normals = torch.nn.functional.normalize(torch.randn(batch, samples, 3, generator=generator, dtype=dtype), dim=-1)
    confidence = torch.rand(batch, samples, generator=generator, dtype=dtype)
    mean = torch.rand(batch, samples, 3, generator=generator, dtype=dtype)
    basis = 0.05 * torch.randn(batch, samples, 3, count, generator=generator, dtype=dtype)
    return colours, normals, confidence, mean, basis


def time_solves(batch, samples, dtype, repeats):
    generator = torch.Generator().manual_seed(0)
    print(f"\nLoad average before timing: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other work on the machine inflates times)")
    print(f"\nTimes for B={batch} x P={samples} samples, {str(dtype).replace('torch.', '')}, {torch.get_num_threads()} threads "
          "(best of %d; ratio = time / bound)" % repeats)
    header = f"{'model':<12}{'solve':<12}{'bound ms':>10}{'forward ms':>12}{'ratio':>7}{'fwd+bwd ms':>12}{'ratio':>7}{'lstsq ms':>10}{'ratio':>7}"
    print(header)
    for name, (count, albedo_count) in SIZES.items():
        geometry = [t.requires_grad_() for t in geometry_inputs(batch, samples, count, dtype, generator)]
        regularisation = GeometryRegularisation()

        def geometry_forward():
            with torch.no_grad():
                solve_geometry(*geometry, regularisation, (224, 224))

        def geometry_backward():
            fit = solve_geometry(*geometry, regularisation, (224, 224))
            (fit.inverse_camera.sum() + fit.camera_centre.sum() + fit.shape_coefficients.sum()).backward()

        photometry = [t.requires_grad_() for t in photometry_inputs(batch, samples, albedo_count, dtype, generator)]
        photometric_regularisation = PhotometryRegularisation()

        def photometry_forward():
            with torch.no_grad():
                solve_photometry(*photometry, photometric_regularisation)

        def photometry_backward():
            fit = solve_photometry(*photometry, photometric_regularisation)
            (fit.inverse_lighting.sum() + fit.albedo_coefficients.sum()).backward()

        for solve, unknowns, forward, backward in (
            ("geometric", 12 + count, geometry_forward, geometry_backward),
            ("photometric", 27 + albedo_count, photometry_forward, photometry_backward),
        ):
            left = torch.randn(batch, unknowns, 3 * samples, dtype=dtype)
            right = torch.randn(batch, 3 * samples, unknowns, dtype=dtype)
            system = torch.randn(batch, 3 * samples + unknowns, unknowns, dtype=dtype)
            target = torch.randn(batch, 3 * samples + unknowns, 1, dtype=dtype)
            # Interleaved, best of each: the machine's load varies over seconds, so the bound and the
            # solve are timed back to back in every round rather than in separate blocks.
            bound, forward_time, backward_time, lstsq = interleaved_best(
                [lambda: torch.bmm(left, right), forward, backward, lambda: torch.linalg.lstsq(system, target)], repeats
            )
            print(
                f"{name:<12}{solve:<12}{bound * 1e3:>10.1f}{forward_time * 1e3:>12.1f}{forward_time / bound:>7.2f}"
                f"{backward_time * 1e3:>12.1f}{backward_time / bound:>7.2f}{lstsq * 1e3:>10.1f}{lstsq / bound:>7.2f}"
            )
            del left, right, system, target


def precision_errors(batch, samples):
    """Relative errors against the truth of float32 and float64 solves of noise-free samples."""
    generator = torch.Generator().manual_seed(1)
    print(f"\nPrecision: noise-free samples, B={batch} x P={samples}, relative error |x - x_true| / |x_true| (worst over the batch)")
    print("(f64+0.5px: float64 with Gaussian noise of 0.5 pixel on the sample positions, for scale)")
    print(f"{'model':<12}{'dtype':<10}{'P':>10}{'q':>10}{'m':>10}{'R':>10}{'K':>10}{'l':>10}{'h':>10}")
    for name, (count, albedo_count) in SIZES.items():
        double = torch.float64
        # A rotation from axis-angle (Rodrigues), composed with the frontal half turn about x.
        axis = torch.nn.functional.normalize(torch.randn(batch, 3, generator=generator, dtype=double), dim=-1)
        angle = 0.5 * torch.rand(batch, generator=generator, dtype=double)
        cross = torch.zeros(batch, 3, 3, dtype=double)
        cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
        cross = cross - cross.transpose(1, 2)
        rotation = torch.eye(3, dtype=double) + torch.sin(angle)[:, None, None] * cross + (1 - torch.cos(angle))[:, None, None] * cross @ cross
        rotation = rotation @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=double))
        intrinsics = torch.tensor([[500.0, 0, 112.0], [0, 500.0, 112.0], [0, 0, 1]], dtype=double).expand(batch, 3, 3)
        translation = torch.tensor([0.0, 0.0, 600.0], dtype=double).expand(batch, 3)
        camera = Camera(intrinsics, rotation, translation, torch.full((batch,), 0.01, dtype=double))
        inverse_camera, camera_centre = compose_inverse_camera(camera)
        mean = torch.randn(batch, samples, 3, generator=generator, dtype=double) * torch.tensor([60.0, 80.0, 30.0], dtype=double)
        basis = torch.randn(batch, samples, 3, count, generator=generator, dtype=double) * (20.0 / (1 + torch.arange(count, dtype=double)) ** 0.5)
        shape = torch.randn(batch, count, generator=generator, dtype=double)
        points = mean + torch.einsum("bpcn,bn->bpc", basis, shape)
        pixels = project(points, intrinsics, rotation, translation)
        depth = camera.depth_scale[:, None] * to_camera(points, rotation, translation)[..., 2]
        confidence = torch.rand(batch, samples, generator=generator, dtype=double)
        normals = torch.nn.functional.normalize(torch.randn(batch, samples, 3, generator=generator, dtype=double), dim=-1)
        lighting = constant_lighting(1.0).expand(batch, 3, 9) + 0.1 * torch.randn(batch, 3, 9, generator=generator, dtype=double)
        albedo_mean = 0.3 + 0.3 * torch.rand(batch, samples, 3, generator=generator, dtype=double)
        albedo_basis = 0.02 * torch.randn(batch, samples, 3, albedo_count, generator=generator, dtype=double)
        albedo_coefficients = torch.randn(batch, albedo_count, generator=generator, dtype=double)
        albedo = albedo_mean + torch.einsum("bpcn,bn->bpc", albedo_basis, albedo_coefficients)
        colours = albedo / inverse_shading(normals, lighting)

        def relative(actual, expected):
            return ((actual.double() - expected).flatten(1).norm(dim=1) / expected.flatten(1).norm(dim=1)).max().item()

        noisy_pixels = pixels + 0.5 * torch.randn(pixels.shape, generator=generator, dtype=double)
        for label, dtype, pixel_input in (
            ("float32", torch.float32, pixels),
            ("float64", torch.float64, pixels),
            ("f64+0.5px", torch.float64, noisy_pixels),
        ):
            def cast(t):
                return t.to(dtype)

            zero = GeometryRegularisation(inverse_camera=0.0, camera_centre=0.0, shape=0.0)
            geometry = solve_geometry(cast(pixel_input), cast(depth), cast(confidence), cast(mean), cast(basis), zero, (224, 224))
            fitted = decompose_camera(geometry.inverse_camera, geometry.camera_centre)
            photometry = solve_photometry(
                cast(colours), cast(normals), cast(confidence), cast(albedo_mean), cast(albedo_basis), PhotometryRegularisation(0.0, None, 0.0)
            )
            errors = [
                relative(geometry.inverse_camera, inverse_camera),
                relative(geometry.camera_centre, camera_centre),
                relative(geometry.shape_coefficients, shape),
                relative(fitted.rotation, rotation),
                relative(fitted.intrinsics, intrinsics),
                relative(photometry.inverse_lighting, lighting),
                relative(photometry.albedo_coefficients, albedo_coefficients),
            ]
            print(f"{name:<12}{label:<10}" + "".join(f"{e:>10.1e}" for e in errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("float32", "float64", "both"), default="both")
    arguments = parser.parse_args()
    precision_errors(arguments.batch, arguments.samples)
    dtypes = {"float32": [torch.float32], "float64": [torch.float64], "both": [torch.float64, torch.float32]}[arguments.precision]
    for dtype in dtypes:
        time_solves(arguments.batch, arguments.samples, dtype, arguments.repeats)


if __name__ == "__main__":
    main()

"""Per-image latency of each stage of the reconstruct path on the CPU, and images per second.

Stages: pre-processing (read, frame, softplus), network (narrow and regular
U-Net at the input size), sampling, geometric solve, photometric solve (split
by the profiler labels inside ``lsqface.solver.fit``), the rest of
``reconstruct_from_maps`` (mesh, landmarks), rendering (the overlay picture)
and export (OBJ with texture, PLY, JSON). Every stage is also printed as a
ratio to the narrow network's forward time measured in the same run.

The least-squares stages run on the true maps of synthetic faces (the oracle),
because an untrained network's maps give a meaningless mesh; the solve's cost
does not depend on the values. The network runs with random weights: its cost
does not depend on them either.

With ``--checkpoint`` (a file, or ``default`` for the shipped model) the
checkpoint's network joins the table at its own input size and with its own
solver settings, and the whole ``Reconstructor`` call on the demo photo
(read, frame, network, fit, mesh) is timed end to end twice: with the
checkpoint's inference settings (robust passes, rotation ensemble, re-framing)
and as the paper's single pass, with their ratio.

Run:  python benchmarks/bench_reconstruct.py [--size 128] [--threads 2] [--repeats 5]
                                            [--samples 10000] [--precision float64|float32]
      python benchmarks/bench_reconstruct.py --checkpoint default
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import matplotlib.cbook
import torch
from torch.profiler import ProfilerActivity, profile

from lsqface.data.images import read_image
from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.morphable.cache import load_uv_model
from lsqface.nets.unet import UNet, UNetConfig
from lsqface.outputs.save import save_reconstruction
from lsqface.render import render_mesh
from lsqface.config import from_dict
from lsqface.nets.checkpoint import load_checkpoint, network_from_checkpoint
from lsqface.reconstruct import (ReconstructConfig, Reconstructor, default_checkpoint, frame_image, network_input,
                                 reconstruct_from_maps)
from lsqface.solver.fit import SolverConfig
from timing import best_time

LABELS = ("lsqface.sampling", "lsqface.geometric_solve", "lsqface.photometric_solve")


def solve_stages(uv_model, faces, repeats: int, config: ReconstructConfig) -> dict[str, float]:
    """Seconds per call of each labelled stage and of the whole reconstruct_from_maps, best of ``repeats``."""
    def run():
        return reconstruct_from_maps(uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence, config=config)

    run()
    best: dict[str, float] = {}
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            start = time.perf_counter()
            run()
            total = time.perf_counter() - start
        times = {event.key: event.cpu_time_total / 1e6 / event.count for event in profiler.key_averages() if event.key in LABELS}
        times["total"] = total
        for key, value in times.items():
            best[key] = min(best.get(key, float("inf")), value)
    best["mesh and landmarks"] = best["total"] - sum(best[label] for label in LABELS)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="network input size (default 128)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=10000, help="pixels sampled per image (default 10000, the paper's)")
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64", help="dtype of the solves")
    parser.add_argument("--checkpoint", default=None, help="also time this checkpoint's network and whole path "
                        "('default': the shipped model); sets the size and solver settings")
    args = parser.parse_args()
    config = ReconstructConfig(input_size=args.size, solver=SolverConfig(sample_count=args.samples, precision=args.precision))
    payload = None
    if args.checkpoint is not None:
        checkpoint_path = default_checkpoint() if args.checkpoint == "default" else args.checkpoint
        payload = load_checkpoint(checkpoint_path)
        config = ReconstructConfig(input_size=int(payload["input_size"]),
                                   solver=from_dict(SolverConfig, payload.get("solver_config", {})))
        args.size, args.samples, args.precision = config.input_size, config.solver.sample_count, config.solver.precision
    torch.set_num_threads(args.threads)
    size = args.size
    uv_model = load_uv_model()
    photo_path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)

    def preprocess():
        framed, _ = frame_image(read_image(photo_path), size)
        return network_input(framed[None])

    rows: dict[str, float] = {"pre-processing": best_time(preprocess, args.repeats)}
    networks = {}
    for variant in ("narrow", "regular"):
        network = UNet(UNetConfig(variant=variant)).eval()
        networks[variant] = network
        image = torch.rand(1, 3, size, size)
        with torch.no_grad():
            rows[f"network ({variant})"] = best_time(lambda: network(image), args.repeats)
    if payload is not None:
        network = network_from_checkpoint(payload).eval()
        networks["checkpoint"] = network
        image = torch.rand(1, 3, size, size)
        with torch.no_grad():
            rows["network (checkpoint)"] = best_time(lambda: network(image), args.repeats)

    faces = generate_faces(uv_model, [0], SyntheticConfig(size=size))
    stages = solve_stages(uv_model, faces, args.repeats, config)
    rows["sampling"] = stages["lsqface.sampling"]
    rows["geometric solve"] = stages["lsqface.geometric_solve"]
    rows["photometric solve"] = stages["lsqface.photometric_solve"]
    rows["mesh and landmarks"] = stages["mesh and landmarks"]
    result = reconstruct_from_maps(uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence, config=config)
    vertices = result.image_vertices().float()
    colours = result.colour.float()
    triangles = result.triangles
    rows[f"rendering ({size} px)"] = best_time(lambda: render_mesh(vertices, triangles, colours, size, size), args.repeats)
    scale = 512 / size
    big = vertices * torch.tensor([scale, scale, 1.0])
    rows["rendering (512 px photo)"] = best_time(lambda: render_mesh(big, triangles, colours, 512, 512), args.repeats)
    photo = faces.image[0].permute(1, 2, 0).numpy()
    with tempfile.TemporaryDirectory() as folder:
        rows["export (obj, ply, json)"] = best_time(
            lambda: save_reconstruction(result, 0, photo, folder, "face", ("obj", "ply", "json")), args.repeats
        )

    reference = rows["network (narrow)"]
    print(f"lsqface reconstruct, per image, batch 1, {size} px input, {args.threads} threads, best of {args.repeats}, "
          f"{args.samples} samples, {args.precision} solves")
    print(f"{'stage':32s} {'ms':>9s} {'x narrow net':>13s}")
    for name, seconds in rows.items():
        print(f"{name:32s} {1000 * seconds:9.1f} {seconds / reference:13.2f}")
    core = ("pre-processing", "sampling", "geometric solve", "photometric solve", "mesh and landmarks")
    for variant in networks:
        path = sum(rows[name] for name in core) + rows[f"network ({variant})"]
        print(f"whole path, {variant} U-Net (no rendering or export): {1000 * path:.1f} ms per image (goal: < 50 ms narrow)")
    if payload is not None:
        # The checkpoint's own settings (robust passes, rotation ensemble, re-framing), against the
        # paper's single pass: one forward pass, one geometric and one photometric solve.
        shipped = Reconstructor.from_checkpoint(checkpoint_path, uv_model=uv_model)
        single = Reconstructor(shipped.network, uv_model, dataclasses.replace(
            shipped.config, rotation_ensemble=1, refine_passes=0,
            solver=dataclasses.replace(shipped.config.solver, robust_iterations=0)))
        photo = read_image(photo_path)
        with torch.no_grad():
            times = {name: best_time(lambda: reconstructor([photo]), args.repeats)
                     for name, reconstructor in (("single", single), ("shipped", shipped))}
        settings = shipped.config
        print(f"Reconstructor on the demo photo (frame, network, fit, mesh; no pictures): "
              f"{1000 * times['shipped']:.1f} ms with the checkpoint's settings ({settings.rotation_ensemble} turned "
              f"copies, {settings.solver.robust_iterations} robust passes, {settings.refine_passes} re-framing passes), "
              f"{1000 * times['single']:.1f} ms as a single pass; ratio {times['shipped'] / times['single']:.2f}")

    print("\nimages per second (network + least squares + mesh; pre-processing excluded)")
    for batch in (1, 16):
        batch_faces = generate_faces(uv_model, list(range(batch)), SyntheticConfig(size=size))
        solve = best_time(lambda: reconstruct_from_maps(
            uv_model, batch_faces.image, batch_faces.correspondence, batch_faces.depth, batch_faces.confidence, config=config),
            max(1, args.repeats // 2))
        for variant, network in networks.items():
            image = torch.rand(batch, 3, size, size)
            with torch.no_grad():
                forward = best_time(lambda: network(image), max(1, args.repeats // 2))
            print(f"batch {batch:2d}, {variant:7s}: {batch / (forward + solve):7.1f} images/s "
                  f"(network {1000 * forward / batch:.1f} ms, solve {1000 * solve / batch:.1f} ms per image)")


if __name__ == "__main__":
    main()

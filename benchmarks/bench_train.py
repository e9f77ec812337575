"""Training speed and memory on the CPU: images per second, where the time goes, largest batch in 8 GB.

For the narrow and the regular U-Net at 64, 128 and 256 px input (10,000 pixel samples, or
every pixel when there are fewer; ICT UV-3DMM at 320 px; 2 threads), one unsupervised
training step (network -> least squares -> fitted mesh -> render -> losses -> backward ->
Adam) is timed, and its parts are timed alone, each forward plus backward:

- network: the U-Net on the batch with a dummy loss on its maps (the reference: the
  network's own cost, which every other number is compared with);
- solves: the least-squares layer (sampling, geometric and photometric solves) on fixed maps;
- rendering: fitted mesh, rasterisation, interpolation and the photometric loss on a fixed fit.

Memory: each configuration runs in a fresh process at batch 1 and batch 2, which report
their peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the
step. Peak per image = peak(2) - peak(1); the largest batch in 8 GB is
1 + (8 GiB - peak(1)) / (peak per image). This counts everything the process holds
(Python, torch, the UV-3DMM), so it is an upper bound of what a batch needs.

Run: ``python benchmarks/bench_train.py`` (about 10 minutes on 2 cores); ``--quick`` for
64 and 128 px only, ``--sizes 256`` for chosen sizes. The parts are timed separately, so
their shares need not add up to 100 % exactly (the step also has Adam, the losses' glue
and the statistics; timings on a shared machine vary).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPEATS = 3


def _time(function, repeats=REPEATS):
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def child(variant: str, size: int, batch: int) -> dict:
    import dataclasses

    import torch

    torch.set_num_threads(2)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lsqface.morphable.cache import load_uv_model
    from lsqface.nets.unet import UNetConfig
    from lsqface.reconstruct import fitted_mesh, network_input
    from lsqface.solver.fit import SolverConfig, fit
    from lsqface.train.config import DataConfig, MainTrainConfig, TrainConfig
    from lsqface.train.losses import photometric_loss
    from lsqface.train.trainer import Trainer

    uv_model = load_uv_model(size=320)
    config = TrainConfig(
        input_size=size, uv_size=320, network=UNetConfig(variant=variant),
        solver=SolverConfig(sample_count=min(10000, size * size)),
        data=DataConfig(synthetic_pool=batch), train=MainTrainConfig(batch_size=batch, camera_centre_steps=0),
    )
    trainer = Trainer(config, "train", "/tmp/lsqface-bench-train", uv_model)
    images, _ = trainer.images.images(list(range(batch)))
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731

    step = _time(lambda: trainer.train_step([images]))
    rss_after_step = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def network_only():
        maps = trainer.network(network_input(images))
        (maps.logits.square().mean()).backward()

    with torch.no_grad():
        maps = trainer.network(network_input(images))
    fixed = {name: getattr(maps, name).detach() for name in ("correspondence", "depth", "confidence")}

    def solve_only():
        leaves = {name: value.clone().requires_grad_(True) for name, value in fixed.items()}
        result = fit(uv_model, images, leaves["correspondence"], leaves["depth"], leaves["confidence"], config.solver, generator())
        (result.shape_coefficients.square().sum() + result.albedo_coefficients.square().sum()
         + result.translation.square().sum()).backward()

    result = fit(uv_model, images, fixed["correspondence"], fixed["depth"], fixed["confidence"], config.solver, generator())
    result = dataclasses.replace(result, **{name: getattr(result, name).detach().requires_grad_(True) for name in (
        "rotation", "translation", "intrinsics", "identity_coefficients", "expression_coefficients",
        "albedo_coefficients", "inverse_lighting")})

    def render_only():
        mesh = fitted_mesh(uv_model, result)
        loss, _, _ = photometric_loss(images, mesh.image_vertices, mesh.colour, trainer.triangles, 0.25)
        loss.sum().backward()

    return {
        "variant": variant, "size": size, "batch": batch,
        "step": step, "network": _time(network_only), "solves": _time(solve_only), "rendering": _time(render_only),
        "peak_bytes": rss_after_step,
    }


def run(variant: str, size: int, batch: int) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", variant, str(size), str(batch)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    sizes = (64, 128) if "--quick" in sys.argv else (64, 128, 256)
    if "--sizes" in sys.argv:
        sizes = tuple(int(size) for size in sys.argv[sys.argv.index("--sizes") + 1].split(","))
    gib = 1024 ** 3
    print("Unsupervised training step on the CPU (2 threads), batch 2; times per step, shares of the step")
    print(f"{'network':>8} {'size':>5} {'images/s':>9} {'step s':>7} {'network':>8} {'solves':>7} {'render':>7} "
          f"{'step/network':>12} {'peak GiB b1':>11} {'GiB/image':>9} {'batch in 8 GB':>13}")
    for variant in ("narrow", "regular"):
        for size in sizes:
            one, two = run(variant, size, 1), run(variant, size, 2)
            per_image = max(two["peak_bytes"] - one["peak_bytes"], 1)
            largest = 1 + int((8 * gib - one["peak_bytes"]) // per_image)
            step = two["step"]
            print(f"{variant:>8} {size:>5} {2 / step:>9.2f} {step:>7.2f} {two['network'] / step:>8.0%} "
                  f"{two['solves'] / step:>7.0%} {two['rendering'] / step:>7.0%} {step / two['network']:>12.2f} "
                  f"{one['peak_bytes'] / gib:>11.2f} {per_image / gib:>9.3f} {largest:>13d}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()

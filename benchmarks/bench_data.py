"""Synthetic training data: what one batch costs, against the network step that consumes it.

A true-map training step (configs/default.toml) draws a batch of fresh synthetic faces over
natural backgrounds, then runs the U-Net forward and backward on it. This times, in the same run
and with the same batch size and input size (CPU time of this process, one torch thread, median of
``--repeats`` batches after one warm-up, fresh faces every batch):

- network: the U-Net's forward and backward on the batch with a dummy loss (the reference every
  other line is a ratio to);
- data: ``TrainingImages.images_and_true_maps``, the trainer's own call (faces, backgrounds, maps);
- data, backgrounds decoded every time: the same with the background photo cache off
  (``BackgroundSampler(cache_bytes=0)``), what the cache saves;
- generate_faces: the face renderer alone;
- shape and albedo products, per face: the three basis products (identity, expression, albedo)
  as one matrix-vector product per face;
- shape and albedo products, batched: the same products as one matrix product per basis for the
  whole batch (``lsqface.morphable.model.basis_products``, what ``generate_faces`` uses: the bases
  are read once per batch instead of once per face).

Run: ``python benchmarks/bench_data.py [--config configs/default.toml] [--repeats 10]`` (about a
minute). Not a test: timings on a shared machine vary; the ratios are what counts.
"""

from __future__ import annotations

import argparse

from timing import median_cpu_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.toml", help="training TOML file (default configs/default.toml)")
    parser.add_argument("--repeats", type=int, default=10, help="timed batches per line (default 10)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from lsqface.data.synthetic import generate_faces
    from lsqface.morphable.cache import load_uv_model
    from lsqface.morphable.model import basis_products
    from lsqface.nets.unet import UNet
    from lsqface.train.config import load_train_config
    from lsqface.train.data import TrainingImages, synthetic_config

    torch.set_num_threads(args.threads)
    config = load_train_config(args.config)
    batch, size = config.train.batch_size, config.input_size
    uv_model = load_uv_model(size=config.uv_size)
    model = uv_model.model
    counter = iter(range(10**9))

    def positions() -> list[int]:
        first = next(counter) * batch
        return list(range(first, first + batch))

    cached = TrainingImages(config.data, size, uv_model, seed=config.seed)
    uncached = TrainingImages(config.data, size, uv_model, seed=config.seed)
    if uncached.backgrounds is not None:
        uncached.backgrounds.cache_bytes = 0
    network = UNet(config.network)
    images = cached.images_and_true_maps(positions())[0]

    def network_step() -> None:
        network.zero_grad(set_to_none=True)
        maps = network(images)
        (maps.correspondence.mean() + maps.depth.mean() + maps.confidence.mean()).backward()

    faces_config = synthetic_config(config.data, size, False)
    bases = [torch.as_tensor(basis, dtype=torch.float64)
             for basis in (model.identity_basis, model.expression_basis, model.albedo_basis)]
    coefficients = [torch.randn(batch, basis.shape[-1], dtype=torch.float64) for basis in bases]

    def per_face() -> None:
        for basis, values in zip(bases, coefficients):
            for row in values:
                basis @ row

    def batched() -> None:
        for basis, values in zip(bases, coefficients):
            basis_products(basis, values)

    timers = {
        "network forward + backward (reference)": network_step,
        "data: TrainingImages.images_and_true_maps": lambda: cached.images_and_true_maps(positions()),
        "data, backgrounds decoded every time": lambda: uncached.images_and_true_maps(positions()),
        "generate_faces": lambda: generate_faces(uv_model, positions(), faces_config),
        "shape and albedo products, per face": per_face,
        "shape and albedo products, batched": batched,
    }
    print(f"{args.config}: batch {batch}, {size} px, {args.threads} thread(s), background {config.data.background}, "
          f"{model.n_vertices} vertices; "
          f"median CPU time of {args.repeats} batches")
    reference = None
    for name, function in timers.items():
        seconds = median_cpu_time(function, args.repeats)
        reference = seconds if reference is None else reference
        print(f"{name:45s} {seconds * 1e3:8.1f} ms  {seconds / reference:5.2f} x network")


if __name__ == "__main__":
    main()

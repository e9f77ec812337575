"""Work in one training step of a config: seconds on this CPU, counted GFLOP, ATen calls.

The figures behind the estimate of CelebA training on one GPU (docs/training.md): a GPU
does the counted FLOPs (convolutions and matrix products) in milliseconds, so
a step there is bound by the number of kernel launches, about one per ATen
call. The data source is replaced by synthetic faces (a small pool) so the
step runs without CelebA; the network, input size, sample count and batch
size are the config's. Each stage's step is also printed as a ratio to the
pretraining step measured in the same run.

Run:  python benchmarks/profile_step.py [--config configs/paper.toml] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from lsqface.morphable.cache import load_uv_model
from lsqface.train.config import load_train_config
from lsqface.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/paper.toml", help="training TOML file (default configs/paper.toml)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_train_config(args.config)
    data = dataclasses.replace(config.data, source="synthetic", root="", synthetic_pool=8, background="procedural")
    config = dataclasses.replace(config, data=data)
    uv_model = load_uv_model(None, size=config.uv_size)
    reference = None
    print(f"{args.config}, {args.threads} thread(s), one step after two warm-up steps")
    for stage in ("pretrain", "train"):
        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(config, stage, folder, uv_model)
            for _ in range(2):
                trainer.train_step()
            with profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
                start = time.perf_counter()
                trainer.train_step()
                seconds = time.perf_counter() - start
        events = profiler.key_averages()
        flops = sum(event.flops for event in events if event.flops)
        calls = sum(event.count for event in events if event.key.startswith("aten::"))
        reference = seconds if reference is None else reference
        print(f"{stage:8s}: {seconds:6.2f} s/step ({seconds / reference:.2f} x pretraining), "
              f"{flops / 1e9:6.1f} GFLOP counted, {calls} ATen calls")


if __name__ == "__main__":
    main()

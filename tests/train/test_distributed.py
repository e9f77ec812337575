"""Two gloo processes train like one process on the same global batch.

On the CPU, batch norm cannot be synchronised (torch's SyncBatchNorm runs only on GPUs), so
each process normalises with its own share of the batch. The single-process reference
therefore splits the same global batch into the same two micro-batches
(``micro_batches = 2``): each micro-batch sees exactly what one process sees (images, pixel
samples, batch-norm statistics), gradients add up the same way, and the adaptive statistics
are summed before the update. What differs is only the order of floating-point sums (DDP's
bucketed all-reduce averages; the reference accumulates), so parameters agree to float32
rounding rather than bit for bit.
"""

import dataclasses
import socket

import torch
import torch.multiprocessing as mp

from lsqface.train.config import load_train_config
from lsqface.train.distributed import finish, initialise
from lsqface.train.trainer import Trainer
from tests.conftest import REPOSITORY_ROOT

TINY = REPOSITORY_ROOT / "configs" / "tiny.toml"
STEPS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, world_size, port, uv_model, config, folder):
    torch.set_num_threads(1)
    context = initialise(rank, world_size, "cpu", init_method=f"tcp://127.0.0.1:{port}")
    try:
        trainer = Trainer(config, "train", folder, uv_model, context)
        for _ in range(STEPS):
            trainer.train_step()
        state = {"parameters": {name: value.detach().clone() for name, value in trainer.network.named_parameters()},
                 "adaptive": trainer.adaptive.weight.clone()}
        torch.save(state, f"{folder}/rank{rank}.pt")
    finally:
        finish(context)


def test_two_processes_equal_one_process_on_the_same_global_batch(ict_uv_model, tmp_path):
    config = load_train_config(TINY)  # global batch 2, one image per process
    mp.spawn(_worker, args=(2, _free_port(), ict_uv_model, config, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]

    torch.set_num_threads(1)
    single = Trainer(dataclasses.replace(config, micro_batches=2), "train", tmp_path / "single", ict_uv_model)
    for _ in range(STEPS):
        single.train_step()
    # Both processes hold identical parameters and adaptive weights.
    for name, value in ranks[0]["parameters"].items():
        assert torch.equal(value, ranks[1]["parameters"][name]), name
    assert torch.equal(ranks[0]["adaptive"], ranks[1]["adaptive"])
    moved = 0.0
    for name, value in single.network.named_parameters():
        distributed = ranks[0]["parameters"][name]
        # Adam moves every parameter by about the learning rate per step; float32 rounding of the
        # gradient sums changes that by far less.
        assert torch.allclose(distributed, value.detach(), rtol=1e-5, atol=1e-6), (name, float((distributed - value).abs().max()))
        moved = max(moved, float((value.detach() - distributed).abs().max()))
    assert torch.allclose(ranks[0]["adaptive"], single.adaptive.weight, rtol=1e-6, atol=0)
    assert moved < 1e-6

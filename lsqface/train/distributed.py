"""Several processes, one training run: DistributedDataParallel under torchrun.

``torchrun --nproc_per_node=N -m lsqface train --config FILE`` starts N
processes; torchrun tells each its rank through the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which the command line
reads with :func:`context_from_environment`. Processes use NCCL on GPUs
(one GPU each, ``cuda:LOCAL_RANK``) and gloo on CPUs. Each process trains on
its share of every global batch (lsqface.train.data.batch_positions); DDP
averages gradients; the adaptive-regularisation statistics are summed over
processes before every update (:func:`all_reduce_sum`), so all processes hold
identical weights; only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the run.

    Attributes:
        rank: this process's index, 0 .. world_size - 1.
        world_size: number of processes.
        local_rank: index on this machine (picks the GPU).
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def context_from_environment(device: str | None = None) -> DistributedContext:
    """Join the process group torchrun describes in the environment (single process if it does not).

    Args:
        device: "cpu", "cuda" or None (CUDA when available).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    device_name = f"cuda:{local_rank}" if use_cuda else "cpu"
    if world_size > 1:
        return initialise(rank, world_size, device_name, local_rank)
    return DistributedContext(0, 1, 0, device_name)


def initialise(rank: int, world_size: int, device: str = "cpu", local_rank: int | None = None,
               init_method: str | None = None) -> DistributedContext:
    """Initialise the default process group (NCCL for CUDA, gloo for CPU) and return the context.

    ``init_method`` (e.g. "tcp://127.0.0.1:PORT") overrides the MASTER_ADDR/MASTER_PORT environment.
    """
    local_rank = rank if local_rank is None else local_rank
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                **({"init_method": init_method} if init_method else {}))
    return DistributedContext(rank, world_size, local_rank, device)


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (the tensor itself in a single process)."""
    if not context.distributed:
        return tensor
    device = torch.device(context.device)
    reduced = tensor.to(device).clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def broadcast_flag(flag: bool, context: DistributedContext) -> bool:
    """True if ``flag`` is True on any process (e.g. a non-finite loss anywhere skips the step everywhere)."""
    if not context.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    return bool(all_reduce_sum(value, context).item() > 0)


def finish(context: DistributedContext) -> None:
    """Leave the process group."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()

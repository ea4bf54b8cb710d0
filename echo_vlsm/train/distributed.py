"""Several processes (``torchrun --nproc_per_node N``) with one code path.

Without torchrun everything here is a no-op for a single process. Under torchrun the process
group is set up from its environment (NCCL on GPUs, gloo on CPUs), each process takes
``cuda:LOCAL_RANK``, the training set is split with a ``DistributedSampler``, and only rank 0
writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from echo_vlsm.device import resolve_device

__all__ = ["Dist", "all_reduce_sum", "barrier", "broadcast_object", "init_distributed",
           "resolve_device", "shutdown"]


@dataclass(frozen=True)
class Dist:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # this process created the process group (and destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``PORT``), or describe a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return Dist(0, 1, 0, dev)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def all_reduce_sum(d: Dist, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (in place; returned for convenience)."""
    if d.active:
        if dist.get_backend() == "gloo" and tensor.device.type != "cpu":  # pragma: no cover
            cpu = tensor.cpu()
            dist.all_reduce(cpu)
            tensor.copy_(cpu)
        else:
            dist.all_reduce(tensor)
    return tensor


def broadcast_object(d: Dist, obj):
    """Rank 0's ``obj`` on every process."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

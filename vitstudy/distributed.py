"""torchrun set-up, as timm keeps it apart in ``timm.utils.distributed``.

torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; without them this is a single process and every helper is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: its rank, how many processes there are, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device | None = None) -> Dist:
    """Join the torchrun process group when launched by torchrun; pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank=rank, world_size=world_size, device=device)


def all_reduce_sum(values: torch.Tensor, world: Dist) -> torch.Tensor:
    """``values`` summed over every process, in place (unchanged in a single process)."""
    if world.world_size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(world: Dist) -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if world.world_size > 1:
        dist.barrier()

"""Data-parallel training under ``torchrun`` (DDP): NCCL on GPUs, gloo on CPUs.

Outside torchrun everything here is a no-op, so the same loop runs single-process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn

from seg.engine.device import resolve_device


@dataclass
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init() -> DistContext:
    """Join the process group torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    if not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend=backend)
    return ctx


def pick_device(name: str, ctx: DistContext) -> torch.device:
    """``auto`` -> this rank's GPU when there is one, else the CPU (see ``seg.engine.device``)."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and ctx.enabled:
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def mean_across(value: float, ctx: DistContext, device: torch.device) -> float:
    """Average a scalar over ranks (the logged loss is the global one)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return float(t.item() / ctx.world_size)


def main_first(ctx: DistContext, fn: Callable[[], object]) -> None:
    """Run ``fn`` on rank 0 while the other ranks wait (one writer for shared files)."""
    if ctx.is_main:
        fn()
    if ctx.enabled:
        tdist.barrier()


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (a no-op outside torchrun)."""
    if ctx.enabled:
        tdist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()

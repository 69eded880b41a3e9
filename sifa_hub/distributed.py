"""Process placement for training and evaluation: one process, or one rank of a ``torchrun`` DDP job.

``with distributed_context("auto") as ctx:`` joins the process group that ``torchrun`` describes in the
environment (gloo on CPU, NCCL on GPU) and leaves it on exit when it created it; with one process it only picks the
device. Everything collective in the package (checkpoints, evaluation counts, BN broadcasts) goes through
:class:`DistContext`, so single-process code paths need no ``if distributed`` of their own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .utils.runtime import resolve_device

__all__ = ["DistContext", "distributed_context", "setup_distributed", "unwrap_model"]


@dataclass
class DistContext:
    """Process placement: ``rank`` of ``world_size`` processes, the device this process uses.

    Attributes:
        rank: global rank (0 for one process).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        device: where this process computes.
        owns_group: whether :func:`setup_distributed` created the process group (and so tears it down).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes shared files and prints)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op for one process)."""
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of ``values`` over ranks (a float64 copy on the CPU; ``values`` itself for one process)."""
        if not self.distributed:
            return values
        reduced = values.to(self.device, dtype=torch.float64)
        dist.all_reduce(reduced)
        return reduced.cpu()

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` for one process)."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics): the model's state is rank 0's."""
        if self.distributed:
            for buf in model.buffers():
                dist.broadcast(buf, 0)


def setup_distributed(device: str | torch.device = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (a no-op for one process).

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (this rank's GPU) or ``"cuda:N"``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


@contextlib.contextmanager
def distributed_context(device: str | torch.device = "auto") -> Iterator[DistContext]:
    """:func:`setup_distributed` for the ``with`` block; the process group it created is destroyed on exit."""
    ctx = setup_distributed(device)
    try:
        yield ctx
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside ``DistributedDataParallel`` and other wrappers exposing ``.module``/``.model``."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif getattr(model, "is_training_wrapper", False):
            model = model.model  # type: ignore[assignment]
        else:
            return model

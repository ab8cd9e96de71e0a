"""Data-parallel helpers for `torchrun` (DistributedDataParallel; gloo on CPU, nccl on CUDA).

Outside torchrun every helper is the identity, so the trainer has one code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op when WORLD_SIZE is absent or 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(t: torch.Tensor, di: DistInfo) -> torch.Tensor:
    """Concatenate every process's tensor along dim 0, keeping the autograd graph (gradients flow back to the
    process that owns each row)."""
    if not di.enabled:
        return t
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(t.contiguous()), dim=0)


@torch.no_grad()
def gather(t: torch.Tensor, di: DistInfo) -> torch.Tensor:
    if not di.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(di.world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_sum(t: torch.Tensor, di: DistInfo) -> torch.Tensor:
    if not di.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def broadcast_flag(flag: bool, di: DistInfo, device: torch.device | str = "cpu") -> bool:
    """True on every process if any process says so (used for cooperative stop and early stopping)."""
    if not di.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)

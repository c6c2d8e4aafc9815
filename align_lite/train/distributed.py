"""Where a run executes: the process group, the device, the precision and the random state.

Launch with ``torchrun`` and :func:`init_distributed` joins the process group from the
environment (``env://``), NCCL on GPUs, gloo on CPUs; without ``torchrun`` (no ``WORLD_SIZE``) the
same code runs as one process. The random-state helpers let a checkpoint restore every generator
(:func:`get_rng_state` / :func:`set_rng_state`) and let gradient accumulation replay a
micro-batch's dropout exactly (:func:`fork_rng` / :func:`join_rng`).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """This process's place in the run: its rank among ``world_size`` processes, its GPU."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group (and will destroy it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the ``torchrun`` process group if the environment describes one (``env://``)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (this process's GPU, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; a GPU
    that is not there is a one-line ValueError."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA GPU is visible to PyTorch here (torch.cuda.is_available() "
                         "is False); use device 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 on a GPU that has it, else fp16 on a GPU, fp32 on the CPU."""
    if precision != "auto":
        if precision in ("fp16",) and device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def get_rng_state(device: torch.device) -> dict[str, Any]:
    """Every generator a run draws from: Python's, NumPy's, torch's (and CUDA's on a GPU)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def fork_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch (and CUDA) generator states, which drive dropout and drop-path."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def join_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Rewind the generators to a :func:`fork_rng` state (to replay the same dropout)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def barrier(info: DistInfo) -> None:
    """Wait for every process (a no-op in a one-process run)."""
    if info.enabled:
        dist.barrier()


__all__ = ["DistInfo", "barrier", "fork_rng", "get_rng_state", "init_distributed", "join_rng", "resolve_device",
           "resolve_precision", "set_rng_state"]

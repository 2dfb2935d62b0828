"""Process-group helpers for DistributedDataParallel under ``torchrun``.

The trainer works unchanged in one process; under ``torchrun`` (environment variables
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) it joins the process
group (gloo on CPU, nccl on CUDA). A group initialised by the caller beforehand (e.g. with a
``FileStore``) is used as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_object",
    "all_reduce_sum",
    "any_flag",
    "barrier",
    "broadcast_object",
    "dist_info",
    "init_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Parameters
    ----------
    rank : int
        Global rank (0 in a single process).
    world_size : int
        Number of processes.
    local_rank : int
        Rank on this machine (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Describe the current process group (single process when none is initialised).

    Returns
    -------
    DistInfo
        Rank, world size and local rank.
    """
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return DistInfo()


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by the ``torchrun`` environment, if any.

    Parameters
    ----------
    device_type : str
        ``cpu`` (gloo backend) or ``cuda`` (nccl backend).

    Returns
    -------
    DistInfo
        The resulting placement (single process when ``WORLD_SIZE`` is unset or 1).
    """
    if dist.is_available() and dist.is_initialized():
        return dist_info()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, init_method="env://")
    return dist_info()


def barrier() -> None:
    """Wait for all processes (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place and return it (identity in a single process).

    Parameters
    ----------
    values : torch.Tensor
        Tensor on the backend's device.

    Returns
    -------
    torch.Tensor
        The summed tensor.
    """
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_flag(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is set on any process (e.g. a stop signal received by one rank).

    Parameters
    ----------
    flag : bool
        This process's flag.
    device : torch.device
        Device for the collective (CUDA under nccl).

    Returns
    -------
    bool
        The OR over processes.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every process (a one-element list in a single process).

    Parameters
    ----------
    obj : Any
        This process's object.

    Returns
    -------
    list
        One entry per rank.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send an object from ``src`` to every process.

    Parameters
    ----------
    obj : Any
        The object (ignored on other ranks).
    src : int
        Sending rank.

    Returns
    -------
    Any
        The object from ``src``.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]

"""Process-group helpers for DistributedDataParallel under ``torchrun``.

The trainer works unchanged in one process; under ``torchrun`` (environment variables
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) it joins the process
group (gloo on CPU, nccl on CUDA). A group initialised by the caller beforehand (e.g. with a
``FileStore``) is used as is.

The stage commands join the group before any work (:func:`init_for_device`), so the workflows
around the trainer can let rank 0 alone write run files (:func:`is_main`) and run shared
preparation once (:func:`main_first`: rank 0 fills the preprocessing cache, the others wait and
then read it). Collectives time out after ``DUIN_DIST_TIMEOUT_S`` seconds (default 7200: rank 0
may preprocess a large dataset while the others wait at a barrier).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
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
    "init_for_device",
    "is_main",
    "main_first",
]

#: Environment variable: seconds a collective (e.g. a barrier) waits for the other ranks.
TIMEOUT_ENV = "DUIN_DIST_TIMEOUT_S"
_DEFAULT_TIMEOUT_S = 7200.0


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
    dist.init_process_group(backend=backend, init_method="env://", timeout=_timeout())
    return dist_info()


def _timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw else _DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: must be > 0")
    return datetime.timedelta(seconds=seconds)


def init_for_device(device: str) -> DistInfo:
    """Join the ``torchrun`` process group for a configured ``trainer.device``, if any.

    Parameters
    ----------
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``auto`` means CUDA when available), as in
        :class:`duin.config.TrainerConfig`.

    Returns
    -------
    DistInfo
        The placement (single process outside ``torchrun``).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return init_distributed("cuda" if device.startswith("cuda") else "cpu")


def is_main() -> bool:
    """True on the process that writes run files (rank 0, or the only process).

    Returns
    -------
    bool
        Whether this process is rank 0.
    """
    return dist_info().is_main


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (all at once).

    For work whose result rank 0 stores where the others find it, e.g. a content-keyed cache:
    the other ranks wait at a barrier until rank 0 has left the block, then reuse what it
    wrote instead of racing it. A no-op wrapper in a single process.

    Yields
    ------
    None
    """
    if not dist_info().is_main:
        barrier()
    yield
    if dist_info().is_main:
        barrier()


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

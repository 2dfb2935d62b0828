"""Running a stage command as one of several ``torchrun`` processes.

``torchrun --nproc-per-node N -m duin pretrain-vqvae ...`` starts N copies of the command with
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set. Each copy joins the process group
before any work (:func:`torchrun_session`), so the workflows can let rank 0 alone write and run
shared preparation once. Rank 0 holds the run directory's lock and prints; the other ranks run
quietly (errors only). Outside ``torchrun`` all of this is a plain single process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from duin.cli.options import apply_quiet
from duin.utils.lock import run_lock

if TYPE_CHECKING:  # pragma: no cover
    from duin.training.distributed import DistInfo

__all__ = ["echo_main", "torchrun_session"]


@contextlib.contextmanager
def torchrun_session(device: str, out: Path) -> Iterator[DistInfo]:
    """Join the ``torchrun`` process group (if any) and hold ``out``'s lock on rank 0.

    Parameters
    ----------
    device : str
        The run's ``trainer.device`` (selects gloo or nccl).
    out : pathlib.Path
        The run directory.

    Yields
    ------
    DistInfo
        This process's rank and the world size.
    """
    import torch.distributed as dist  # torch is imported when a command runs, not for --help

    from duin.training.distributed import init_for_device

    joined_here = not (dist.is_available() and dist.is_initialized())
    info = init_for_device(device)
    if not info.is_main:
        # One progress display and one log, rank 0's: every rank trains the same model on the
        # same data, so the others would repeat its messages.
        apply_quiet(True)
        logging.getLogger("duin").setLevel(logging.ERROR)
    try:
        with run_lock(out) if info.is_main else contextlib.nullcontext():
            yield info
    finally:
        if info.enabled and joined_here:
            dist.destroy_process_group()


def echo_main(message: str) -> None:
    """Print ``message`` on rank 0 only (every rank computes the same thing).

    Parameters
    ----------
    message : str
        Text for stdout.
    """
    from duin.training.distributed import is_main

    if is_main():
        typer.echo(message)

"""The codex under torch.distributed: 2 gloo ranks == 1 process on the concatenated batch."""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from duin.models.config import QuantizerConfig
from duin.models.quantizer import NormEMAVectorQuantizer

WORLD = 2
N_STEPS = 4
BATCH = 6  # per step, split in two halves of 3 across the ranks


def _batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return [torch.randn(BATCH, 5, 12, generator=gen) for _ in range(N_STEPS)]


def _run(init_mode: str, rank: int | None) -> dict[str, torch.Tensor]:
    """Train a small quantizer; ``rank=None`` is the single process on full batches."""
    torch.manual_seed(0)
    config = QuantizerConfig(n_codes=24, d_code=6, init_mode=init_mode, decay=0.9)
    vq = NormEMAVectorQuantizer(12, config).train()
    for batch in _batches():
        if rank is not None:
            half = BATCH // WORLD
            batch = batch[rank * half : (rank + 1) * half]
        vq(batch)
    return {"codebook": vq.codebook.clone(), "counts": vq.counts.clone(), "initted": vq.initted}


def _worker(rank: int, store_path: str, out_dir: str, init_mode: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, WORLD)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
    )
    try:
        result = _run(init_mode, rank)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("init_mode", ["accumulate", "first_batch"])
def test_two_ranks_match_single_process(tmp_path: Path, init_mode: str) -> None:
    context = mp.spawn(
        _worker,
        args=(str(tmp_path / "store"), str(tmp_path), init_mode),
        nprocs=WORLD,
        join=False,
    )
    deadline = time.monotonic() + 180.0
    while not context.join(timeout=5.0):  # raises if a worker failed
        if time.monotonic() > deadline:  # pragma: no cover - only on a stuck machine
            for process in context.processes:
                process.kill()
            pytest.fail("distributed quantizer workers timed out")
    single = _run(init_mode, None)
    assert bool(single["initted"])
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["codebook"], single["codebook"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["counts"], single["counts"], rtol=1e-5, atol=1e-6)

"""Deterministic, resumable, sharded batch order (:class:`EpochBatchSampler`) and the small
helpers that move batches to the device and read their size and scalar outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from duin.training.trainer.hooks import Batch
from duin.utils.seeding import derive_seed

# ---------------------------------------------------------------------------------------------
# Deterministic, resumable, sharded batch order
# ---------------------------------------------------------------------------------------------


class EpochBatchSampler:
    """Index batches whose order is a pure function of ``(seed, epoch)``, sharded over ranks.

    The trainer's ``DistributedSampler``: each epoch draws a permutation from a
    ``torch.Generator`` seeded with ``derive_seed(seed, "train-order", epoch)`` (a reshuffle per
    epoch, the same on every rank), pads it (repeating its head) to a multiple of
    ``world_size`` so every rank gets the same number of batches, and cuts it into global
    batches of ``world_size * micro_batch`` (the last may be shorter); rank ``r`` takes the
    ``r``-th contiguous block of each. The ranks' batches concatenated in rank order are thus
    exactly the batches of one process with ``micro_batch * world_size`` (what the all-gathers
    of the codex see), and a dataset whose length divides by ``world_size`` needs no padding.
    ``set_epoch(epoch, start=k)`` skips the first ``k`` batches without touching the data.

    Parameters
    ----------
    n_samples : int
        Dataset length.
    micro_batch : int
        Samples per batch on this rank.
    seed : int
        Run seed.
    shuffle : bool
        Permute (train) or keep order (evaluation).
    rank, world_size : int
        Shard of this process.
    """

    def __init__(
        self,
        n_samples: int,
        micro_batch: int,
        *,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n_samples <= 0:
            raise ValueError("the training dataset is empty")
        if micro_batch <= 0:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        self.n_samples = n_samples
        self.micro_batch = micro_batch
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    @property
    def shard_size(self) -> int:
        """Samples per rank per epoch (after padding)."""
        return math.ceil(self.n_samples / self.world_size)

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.micro_batch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and the first batch to yield.

        Parameters
        ----------
        epoch : int
            Zero-based epoch.
        start : int
            Number of batches already consumed in this epoch (resume).
        """
        self.epoch = epoch
        self.start = start

    def batches(self) -> list[list[int]]:
        """All batches of the current epoch for this rank (including skipped ones)."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "train-order", self.epoch))
            order = torch.randperm(self.n_samples, generator=gen).tolist()
        else:
            order = list(range(self.n_samples))
        total = self.shard_size * self.world_size
        while len(order) < total:
            order.extend(order[: total - len(order)])
        step = self.micro_batch * self.world_size
        batches = []
        for start in range(0, total, step):
            group = order[start : start + step]  # a multiple of world_size long
            size = len(group) // self.world_size
            batches.append(group[self.rank * size : (self.rank + 1) * size])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start :]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_device(v, device, non_blocking) for v in obj)
    return obj


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        if "x" in batch and isinstance(batch["x"], torch.Tensor):
            return int(batch["x"].shape[0])
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.ndim:
                return int(value.shape[0])
    if isinstance(batch, list | tuple) and batch:
        return _batch_size(batch[0])
    return 1


def _scalar_outputs(out: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The 0-dim floating tensors of a model output (logged as averaged metrics)."""
    return {
        k: v.detach()
        for k, v in out.items()
        if isinstance(v, torch.Tensor) and v.ndim == 0 and v.is_floating_point()
    }


def _count_outputs(out: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The 1-dim ``counts/<name>`` outputs (histograms summed over an epoch, e.g. code usage)."""
    return {
        k: v.detach().to(torch.float64)
        for k, v in out.items()
        if k.startswith("counts/") and isinstance(v, torch.Tensor) and v.ndim == 1
    }


def _add_counts(totals: dict[str, torch.Tensor], counts: Mapping[str, torch.Tensor]) -> None:
    """Add histograms ``counts`` into ``totals`` in place."""
    for k, v in counts.items():
        prev = totals.get(k)
        totals[k] = v if prev is None else prev + v


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"trainer.device={name!r} but CUDA is not available")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _as_dataset(data: Any, what: str) -> tuple[Dataset, Callable | None, int | None]:
    """Accept a map-style Dataset or a DataLoader (whose dataset and collate_fn are reused)."""
    if isinstance(data, DataLoader):
        dataset, collate, batch = data.dataset, data.collate_fn, data.batch_size
    else:
        dataset, collate, batch = data, None, None
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
        raise TypeError(
            f"{what} must be a map-style Dataset (with __len__ and __getitem__) or a DataLoader "
            f"over one, got {type(dataset).__name__}"
        )
    return dataset, collate, batch


class _DeviceLoader:
    """Iterate a loader and move each batch to the device (what evaluate_fn receives)."""

    def __init__(self, loader: Iterable[Batch], device: torch.device) -> None:
        self.loader = loader
        self.device = device

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield _to_device(batch, self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

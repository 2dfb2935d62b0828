"""One dataset over several subjects' datasets, for multi-subject ("poms") pretraining.

Each part is one subject's dataset (items ``{"x": (C_s, T), "subject": 0, ...}``, e.g. a
:class:`~duin.data.datasets.PretrainDataset` built for that subject alone, with its own
normalisation and its own leak-free windows). :class:`SubjectPool` concatenates them, zero-pads
``x`` to the widest subject (the models mask the padding: the VQ-VAE's reconstruction loss
covers only each subject's real channels, and zero rows add nothing through a subject layer)
and replaces ``subject`` by the part's position, which is the model's subject index. A shuffling
sampler over the pool then mixes subjects within a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["SubjectPool"]


class SubjectPool(Dataset):
    """Concatenation of per-subject datasets with subject indices and channel padding.

    Parameters
    ----------
    parts : sequence of Dataset
        One dataset per subject, in subject-index order; items hold ``x`` float32
        ``(C_s, n_times)`` (same ``n_times`` for every part).
    n_channels : int, optional
        Pad ``x`` to this many channels (default: the widest part's).
    """

    def __init__(self, parts: Sequence[Dataset], n_channels: int | None = None) -> None:
        if not parts:
            raise ValueError("SubjectPool needs at least one subject's dataset")
        self.parts = list(parts)
        self.sizes = [len(p) for p in self.parts]  # type: ignore[arg-type]
        if min(self.sizes) < 1:
            empty = [i for i, n in enumerate(self.sizes) if n < 1]
            raise ValueError(f"SubjectPool: the datasets of subject indices {empty} are empty")
        self.subject_channels = [int(p[0]["x"].shape[0]) for p in self.parts]
        widest = max(self.subject_channels)
        self.n_channels = widest if n_channels is None else int(n_channels)
        if self.n_channels < widest:
            raise ValueError(
                f"SubjectPool: n_channels={self.n_channels} is below the widest subject's {widest}"
            )
        self._starts = np.cumsum([0, *self.sizes])  # part p holds items [starts[p], starts[p+1])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """``(subject index, item index inside that subject's dataset)`` of pooled item ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"SubjectPool index {i} out of range [0, {len(self)})")
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        return part, i - int(self._starts[part])

    def __getitem__(self, i: int) -> dict[str, Any]:
        part, j = self.locate(int(i))
        item = dict(self.parts[part][j])
        x = item["x"]  # (C_s, T)
        item["x"] = F.pad(x, (0, 0, 0, self.n_channels - x.shape[0]))  # (n_channels, T)
        item["subject"] = torch.tensor(part, dtype=torch.int64)
        return item

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch (crop and augmentation stream) to every subject's dataset."""
        for p in self.parts:
            set_epoch = getattr(p, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)

"""``python -m duin`` with the MAE's masks keyed by each sample's content (a test helper).

By default :class:`duin.models.duin.DuINMAE` draws its masks from the global RNG stream of each
process, so N ``torchrun`` processes draw other masks than one process does for the same
samples (statistically alike, not bitwise). Run through this script (``python
duin_keyed_masks.py pretrain-mae ...`` or ``torchrun ... duin_keyed_masks.py pretrain-mae ...``),
every sample's mask is a function of its signal only, so a distributed run and a single
process can be compared exactly. Everything else is the real ``duin`` command.
"""

from __future__ import annotations

import hashlib

import torch

from duin.cli import main
from duin.models.duin import DuINMAE

_forward = DuINMAE.forward


def keyed_mask(model: DuINMAE, x: torch.Tensor) -> torch.Tensor:
    """The mask :meth:`DuINMAE.random_mask` would draw, with noise seeded by each sample."""
    n_tokens = model.config.n_tokens
    keep = int(n_tokens * (1 - model.config.mask_ratio))
    rows = []
    for sample in x.detach().cpu().contiguous():
        digest = hashlib.sha256(sample.numpy().tobytes()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:7], "little"))
        rows.append(torch.rand(n_tokens, generator=gen))
    kept = torch.stack(rows).argsort(dim=1)[:, :keep]
    mask = torch.ones(x.shape[0], n_tokens, dtype=torch.bool)
    return mask.scatter_(1, kept, False).to(x.device)


def forward(self: DuINMAE, x: torch.Tensor, subject=None, mask=None, **kwargs):
    if mask is None:
        mask = keyed_mask(self, x)
    return _forward(self, x, subject, mask, **kwargs)


if __name__ == "__main__":
    DuINMAE.forward = forward  # type: ignore[method-assign]
    main()

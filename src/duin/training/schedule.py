"""Learning-rate schedule: linear warm-up then cosine decay (duin-reference §3.1).

Per-epoch (the reference): for epoch ``e < W``, ``lr = lr_max * (e + 1) / W``; otherwise
``lr = lr_min + (lr_max - lr_min) * 0.5 * (1 + cos(pi * (e - W) / (E - W)))``. The last epoch
sits slightly above ``lr_min``. The per-step variant evaluates the same curve at fractional
epochs ``t = step / steps_per_epoch``, with the warm-up reaching ``lr_max`` on its last step.
"""

from __future__ import annotations

import math

__all__ = ["lr_at_epoch", "lr_at_step"]


def lr_at_epoch(epoch: int, *, lr_max: float, lr_min: float, warmup: int, epochs: int) -> float:
    """Learning rate for a whole epoch (set once at the start of the epoch).

    Parameters
    ----------
    epoch : int
        Zero-based epoch index.
    lr_max, lr_min : float
        Peak and final learning rates.
    warmup : int
        Warm-up epochs ``W``.
    epochs : int
        Total epochs ``E``.

    Returns
    -------
    float
        The learning rate.
    """
    if epoch < warmup:
        return lr_max * (epoch + 1) / warmup
    if epochs <= warmup:
        return lr_max
    progress = (epoch - warmup) / (epochs - warmup)
    return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at_step(
    step: int,
    *,
    steps_per_epoch: int,
    lr_max: float,
    lr_min: float,
    warmup: int,
    epochs: int,
) -> float:
    """Learning rate for one optimizer step (per-step schedule option).

    Parameters
    ----------
    step : int
        Zero-based global optimizer step.
    steps_per_epoch : int
        Optimizer steps per epoch.
    lr_max, lr_min : float
        Peak and final learning rates.
    warmup : int
        Warm-up length in epochs.
    epochs : int
        Total epochs.

    Returns
    -------
    float
        The learning rate.
    """
    warmup_steps = warmup * steps_per_epoch
    total_steps = epochs * steps_per_epoch
    if step < warmup_steps:
        return lr_max * (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return lr_max
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

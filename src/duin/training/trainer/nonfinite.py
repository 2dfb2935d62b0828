"""The trainer's guard against NaN/Inf losses and gradients (``trainer.on_nonfinite``).

``stop`` (default) ends the run with one line naming the step, the stage and the loss term, and
writes nothing, so ``checkpoints/last`` stays the last good checkpoint. ``skip`` drops the
optimizer step of the offending (accumulation) group and continues, up to
``trainer.max_nonfinite_skips`` skipped steps per run; the count is part of the resume state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from duin.training import distributed as ddp_utils

logger = logging.getLogger("duin.training.trainer")


class NonFiniteLossError(FloatingPointError):
    """A NaN/Inf loss or gradient stopped training (``trainer.on_nonfinite: stop``)."""


def nonfinite_terms(out: Mapping[str, Any], loss: torch.Tensor) -> list[str]:
    """Names of the non-finite scalar outputs (``loss`` last) or ``[]`` when ``loss`` is finite.

    Parameters
    ----------
    out : Mapping[str, Tensor]
        The forward's outputs.
    loss : Tensor
        Its scalar ``loss``; the one value synchronised per micro-batch.

    Returns
    -------
    list of str
        Empty when the loss is finite; else the offending terms, e.g. ``["recon", "loss"]``.
    """
    if bool(torch.isfinite(loss.detach()).all()):
        return []
    terms = [
        k
        for k, v in out.items()
        if k != "loss"
        and isinstance(v, torch.Tensor)
        and v.dim() == 0
        and v.is_floating_point()
        and not bool(torch.isfinite(v.detach()))
    ]
    return [*terms, "loss"]


class _NonFiniteMixin:
    """Decide, at each optimizer step, whether a non-finite group stops or is skipped."""

    def _stage_name(self) -> str:
        name = type(self.config).__name__ if self.config is not None else ""
        stage = name.removesuffix("RunConfig").lower()
        return stage if stage and stage != "run" else self.run_dir.name

    def _grads_finite(self, grad_norm: torch.Tensor | None) -> bool:
        if self.scaler.is_enabled():
            return True  # fp16 loss scaling handles inf gradients itself (skips and rescales)
        if grad_norm is None:
            grads = [p.grad for p in self.raw_model.parameters() if p.grad is not None]
            if not grads:
                return True
            grad_norm = nn.utils.get_total_norm(grads)
        return bool(torch.isfinite(grad_norm))

    def _skip_nonfinite_step(
        self, bad_terms: list[str], grad_norm: torch.Tensor | None, epoch: int
    ) -> bool:
        """True when this optimizer step must be skipped; raises under ``stop``.

        Parameters
        ----------
        bad_terms : list of str
            Non-finite loss terms seen in this accumulation group (empty if none).
        grad_norm : Tensor or None
            The clipped gradient's norm, when clipping computed it.
        epoch : int
            Zero-based epoch, for the message.
        """
        what = f"loss term {'/'.join(bad_terms)!r}" if bad_terms else None
        if what is None and not self._grads_finite(grad_norm):
            what = "gradient"
        flag = torch.tensor([0.0 if what is None else 1.0], device=self.device)
        if self.dist.enabled:
            flag = ddp_utils.all_reduce_sum(flag)
        if float(flag.item()) == 0.0:
            return False
        what = what or "value on another rank"
        step = self.global_step + 1
        where = f"at step {step} (epoch {epoch}) of stage {self._stage_name()}"
        last = self.ckpt_dir / "last"
        kept = f"last good checkpoint: {last}" if last.is_dir() else "no checkpoint written yet"
        if self.cfg.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"non-finite {what} {where}; stopped ({kept}); set trainer.on_nonfinite=skip "
                "to skip such steps"
            )
        self.nonfinite_skips += 1
        if self.nonfinite_skips > self.cfg.max_nonfinite_skips:
            raise NonFiniteLossError(
                f"non-finite {what} {where}: more than trainer.max_nonfinite_skips="
                f"{self.cfg.max_nonfinite_skips} steps skipped; stopped ({kept})"
            )
        if self.dist.is_main:
            logger.warning(
                "non-finite %s %s: optimizer step skipped (%d/%d)",
                what,
                where,
                self.nonfinite_skips,
                self.cfg.max_nonfinite_skips,
            )
        self.optimizer.zero_grad(set_to_none=True)
        return True

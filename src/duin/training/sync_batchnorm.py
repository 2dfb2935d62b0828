"""BatchNorm synchronised over all ranks on any backend (torch's SyncBatchNorm is GPU-only).

Under DistributedDataParallel every rank sees ``1 / world_size`` of the global batch. A plain
BatchNorm normalises with the statistics of that shard, so N processes train a different model
than one process on the same global batch. :class:`DistributedBatchNorm` all-reduces the
per-channel sums (mean, then squared deviations) so that training-mode statistics, the output
and the gradients are those of the global batch, and the running statistics are identical on
every rank. It uses plain ``all_reduce`` (gloo or nccl), two small collectives per layer and
forward pass. In eval mode, or outside a process group, it is an ordinary BatchNorm, and its
state dict is a BatchNorm's (checkpoints do not change).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistributedBatchNorm", "convert_distributed_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum over ranks is that sum of grads."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)  # type: ignore[no-any-return]


class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over ``(batch, channels, ...)`` whose training statistics span all ranks.

    Parameters
    ----------
    num_features : int
        Channels.
    eps, momentum, affine, track_running_stats
        As for :class:`torch.nn.BatchNorm1d`.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"expected at least 2-D input (batch, channels, ...), got {input.dim()}-D"
            )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise ``input (batch, channels, ...)``; global-batch statistics in training.

        Parameters
        ----------
        input : torch.Tensor
            ``(batch, num_features, ...)``.

        Returns
        -------
        torch.Tensor
            Same shape and dtype.
        """
        synced = (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        )
        if not synced:
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        x = input.float()  # statistics in float32 also under autocast, as F.batch_norm
        n_local = x.new_tensor([x.numel() // channels])
        # Two passes (mean, then squared deviations) as in Welford-based F.batch_norm: the
        # one-pass E[x^2] - E[x]^2 loses precision when |mean| >> std.
        packed = _all_reduce_sum(torch.cat([x.sum(dims), n_local]))
        count = packed[-1].detach()
        mean = packed[:channels] / count
        centred = x - mean.reshape(shape)
        var = _all_reduce_sum((centred * centred).sum(dims)) / count  # biased, for normalising
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), float(count))
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
        if self.momentum is None:  # cumulative moving average
            factor = 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
        else:
            factor = self.momentum
        unbiased = var * (count / max(count - 1.0, 1.0))
        self.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)  # type: ignore[union-attr]
        self.running_var.mul_(1.0 - factor).add_(unbiased, alpha=factor)  # type: ignore[union-attr]


def convert_distributed_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a :class:`DistributedBatchNorm`.

    Parameters
    ----------
    module : nn.Module
        A model (changed in place; its weights, buffers and state-dict keys are kept).

    Returns
    -------
    nn.Module
        ``module`` (or the replacement when ``module`` itself is a BatchNorm).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, DistributedBatchNorm | nn.SyncBatchNorm
    ):
        new = DistributedBatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            device=module.weight.device if module.affine else None,
        )
        with torch.no_grad():
            if module.affine:
                new.weight.copy_(module.weight)
                new.bias.copy_(module.bias)
                new.weight.requires_grad_(module.weight.requires_grad)
                new.bias.requires_grad_(module.bias.requires_grad)
            if module.track_running_stats:
                new.running_mean.copy_(module.running_mean)  # type: ignore[union-attr]
                new.running_var.copy_(module.running_var)  # type: ignore[union-attr]
                new.num_batches_tracked.copy_(module.num_batches_tracked)  # type: ignore[union-attr]
        new.train(module.training)
        return new
    for name, child in module.named_children():
        replacement = convert_distributed_batchnorm(child)
        if replacement is not child:
            module.add_module(name, replacement)
    return module

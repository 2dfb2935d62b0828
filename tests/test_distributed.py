"""Pieces of the distributed setup, without the CLI: the trainer's sampler hands each rank a
contiguous block of the one-process batch, and :class:`DistributedBatchNorm` over two gloo
processes computes what one BatchNorm computes on the concatenated batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from duin.training.distributed import main_first
from duin.training.sync_batchnorm import DistributedBatchNorm, convert_distributed_batchnorm
from duin.training.trainer import EpochBatchSampler

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")


@pytest.mark.parametrize("n_samples", [24, 23, 5])
def test_rank_batches_concatenate_to_the_one_process_batches(n_samples):
    one = EpochBatchSampler(n_samples, 8, seed=3)
    one.set_epoch(4)
    ranks = []
    for rank in range(2):
        sampler = EpochBatchSampler(n_samples, 4, seed=3, rank=rank, world_size=2)
        sampler.set_epoch(4)
        ranks.append(sampler.batches())
    assert len(ranks[0]) == len(ranks[1]) == len(one.batches())
    assert [len(b) for b in ranks[0]] == [len(b) for b in ranks[1]]  # equal work
    joined = [a + b for a, b in zip(*ranks, strict=True)]
    if n_samples % 2 == 0:
        assert joined == one.batches()
    else:  # the order is padded by repeating its head once, to an even length
        flat = [i for b in joined for i in b]
        assert flat == [i for b in one.batches() for i in b] + [flat[0]]


def _bn_worker(rank: int, init_file: str, x: torch.Tensor, grad: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = convert_distributed_batchnorm(nn.Sequential(nn.BatchNorm1d(3, momentum=0.3)))
        assert isinstance(model[0], DistributedBatchNorm)
        with torch.no_grad():
            model[0].weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
            model[0].bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
        half = x.shape[0] // 2
        mine = x[rank * half : (rank + 1) * half].clone().requires_grad_(True)
        for _ in range(2):  # two steps: running statistics accumulate
            y = model(mine)
        (y * grad[rank * half : (rank + 1) * half]).sum().backward()
        with main_first():
            pass  # every rank passes the barrier pair
        gathered = [torch.empty_like(y) for _ in range(2)]
        dist.all_gather(gathered, y.detach())
        grads = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(grads, mine.grad)
        weight_grad = model[0].weight.grad.clone()
        dist.all_reduce(weight_grad)
        if rank == 0:
            out["y"] = torch.cat(gathered)
            out["x_grad"] = torch.cat(grads)
            out["weight_grad"] = weight_grad
            out["running_mean"] = model[0].running_mean.clone()
            out["running_var"] = model[0].running_var.clone()
    finally:
        dist.destroy_process_group()


def test_distributed_batchnorm_equals_batchnorm_on_the_whole_batch(tmp_path):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 5, generator=gen) * 3 + 7  # |mean| >> std: the two-pass variance
    grad = torch.randn(8, 3, 5, generator=gen)
    out = mp.Manager().dict()
    mp.spawn(_bn_worker, args=(str(tmp_path / "init"), x, grad, out), nprocs=2, join=True)

    bn = nn.BatchNorm1d(3, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    whole = x.clone().requires_grad_(True)
    for _ in range(2):
        y = bn(whole)
    (y * grad).sum().backward()
    torch.testing.assert_close(out["y"], y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["x_grad"], whole.grad, rtol=1e-4, atol=1e-5)
    # DDP would average parameter gradients over the 2 ranks; here they are summed
    torch.testing.assert_close(out["weight_grad"], bn.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["running_mean"], bn.running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["running_var"], bn.running_var, rtol=1e-5, atol=1e-6)


def test_distributed_batchnorm_is_a_batchnorm_outside_a_process_group():
    plain = nn.BatchNorm1d(4)
    converted = convert_distributed_batchnorm(nn.Sequential(nn.BatchNorm1d(4)))[0]
    x = torch.randn(6, 4, 3)
    torch.testing.assert_close(converted(x), plain(x))
    assert converted.state_dict().keys() == plain.state_dict().keys()
    torch.testing.assert_close(converted.running_var, plain.running_var)

"""Unit tests of the shared Du-IN layers (subject layer, tokenizer, time table, transformer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from duin.models.layers import (
    MultiHeadAttention,
    PatchTokenizer,
    ReconstructionHead,
    SubjectLayer,
    TransformerStack,
    fast_dropout,
    sinusoid_table,
)


def test_sinusoid_table_formula() -> None:
    table = sinusoid_table(40, 160)
    assert table.shape == (40, 160) and table.dtype == torch.float32
    pos, i = 7, 3
    omega = 10000.0 ** (-2 * i / 160)
    assert table[pos, 2 * i].item() == pytest.approx(math.sin(pos * omega), abs=1e-7)
    assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos * omega), abs=1e-7)
    assert torch.equal(table[0, 1::2], torch.ones(80))


def test_subject_layer_matches_explicit_per_subject_matmul() -> None:
    torch.manual_seed(0)
    layer = SubjectLayer(n_subjects=3, d_in=5, d_out=4)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(6, 5, 50)
    subject = torch.tensor([0, 2, 1, 1, 0, 2])
    out = layer(x, subject)
    assert out.shape == (6, 4, 50)
    for b in range(6):
        s = int(subject[b])
        expected = x[b].t() @ layer.weight[s] + layer.bias[s]  # (T, d_out)
        torch.testing.assert_close(out[b], expected.t(), rtol=1e-5, atol=1e-6)


def test_subject_layer_single_subject_fast_path() -> None:
    layer = SubjectLayer(1, 3, 2)
    x = torch.randn(2, 3, 10)
    expected = torch.einsum("bct,cj->bjt", x, layer.weight[0]) + layer.bias[0][:, None]
    torch.testing.assert_close(layer(x, torch.zeros(2, dtype=torch.int64)), expected)


def test_patch_tokenizer_patches_are_independent_and_time_major() -> None:
    torch.manual_seed(0)
    tok = PatchTokenizer(16, 100, [128, 128, 16], [19, 3, 3], [10, 1, 1]).eval()
    h = torch.randn(2, 16, 400)
    out = tok(h)
    assert out.shape == (2, 4, 160)
    # Changing patch 2 must change only token 2.
    h2 = h.clone()
    h2[:, :, 200:300] += 1.0
    diff = (tok(h2) - out).abs().amax(dim=(0, 2))
    assert diff[2] > 0 and diff[[0, 1, 3]].max() == 0
    # Time-major flattening: feature t * 16 + c is conv output channel c at step t.
    z = h[:1, :, 100:200]
    for conv, norm in zip(tok.convs, tok.norms, strict=True):
        z = norm(conv(z))
    torch.testing.assert_close(out[0, 1], z[0].t().reshape(-1))


def _reference_attention(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    h, d = mha.n_heads, mha.d_head
    wq, wk, wv = mha.qkv.weight.chunk(3)
    bq, bk, bv = mha.qkv.bias.chunk(3)
    q = mha.norm_q((x @ wq.t() + bq).view(b, n, h, d)).transpose(1, 2)
    k = mha.norm_k((x @ wk.t() + bk).view(b, n, h, d)).transpose(1, 2)
    v = (x @ wv.t() + bv).view(b, n, h, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) * (d**-0.5)
    weights = scores.exp() / scores.exp().sum(-1, keepdim=True)  # the reference's naive softmax
    out = (weights @ v).transpose(1, 2).reshape(b, n, h * d)
    return mha.proj(out)


def test_attention_matches_naive_math_in_eval_and_without_dropout() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, 8, attn_dropout=0.2).eval()
    with torch.no_grad():
        for p in mha.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(mha(x), _reference_attention(mha, x), rtol=1e-5, atol=1e-5)
    mha.train()
    mha.attn_dropout = 0.0
    torch.testing.assert_close(mha(x), _reference_attention(mha, x), rtol=1e-5, atol=1e-5)


def test_attention_dropout_active_only_in_training() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, 8, attn_dropout=0.5)
    x = torch.randn(2, 6, 32)
    assert not torch.allclose(mha(x), mha.eval()(x))


def test_fast_dropout_statistics() -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = fast_dropout(x, 0.2)
    assert abs((y == 0).float().mean().item() - 0.2) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert set(torch.unique(y).tolist()) <= {0.0, 1.25}
    assert fast_dropout(x, 0.2, training=False) is x


def test_transformer_stack_init_rescales_per_block() -> None:
    torch.manual_seed(0)
    stack = TransformerStack(4, 160, 8, 64, 320, 0.2, 0.2)
    for index, block in enumerate(stack.blocks):
        expected = 0.02 / math.sqrt(2 * (index + 1))
        assert block.attn.qkv.weight.std().item() == pytest.approx(expected, rel=0.05)
        assert block.ffn.fc1.weight.std().item() == pytest.approx(expected, rel=0.05)
        assert torch.count_nonzero(block.attn.qkv.bias) == 0
        assert torch.equal(block.norm_attn.weight, torch.ones(160))


def test_transformer_block_is_post_norm() -> None:
    torch.manual_seed(0)
    stack = TransformerStack(1, 16, 2, 8, 32, 0.0, 0.0).eval()
    block = stack.blocks[0]
    x = torch.randn(2, 5, 16)
    h = F.layer_norm(x + block.attn(x), (16,), block.norm_attn.weight, block.norm_attn.bias)
    y = F.layer_norm(h + block.ffn(h), (16,), block.norm_ffn.weight, block.norm_ffn.bias)
    out, all_outputs = stack(x, return_all=True)
    torch.testing.assert_close(out, y)
    assert len(all_outputs) == 1


@pytest.mark.parametrize(
    ("kernels", "strides", "n_tokens"),
    [([3, 3, 10, 9, 19], [1, 1, 10, 1, 10], 40), ([4, 5], [2, 5], 7)],
)
def test_reconstruction_head_length(kernels: list[int], strides: list[int], n_tokens: int) -> None:
    head = ReconstructionHead(24, [8] * (len(kernels) - 1) + [4], kernels, strides, d_out=3)
    out = head(torch.randn(2, n_tokens, 24))
    assert out.shape == (2, 3, n_tokens * int(np.prod(strides)))

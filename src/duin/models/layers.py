"""Building blocks of Du-IN: subject layer, patch tokenizer, time table, transformer stack.

All layers follow the reference specification (``duin-reference.md`` §2.1-2.4, §2.6):

- :class:`SubjectLayer`: a dense per-subject linear map ``C -> d_out`` plus a per-subject shift,
  applied at every time step (one batched matmul, the subject matrices gathered by index).
- :class:`PatchTokenizer`: each ``patch_len`` patch is processed on its own by
  Conv1d -> BN -> Conv1d -> BN -> Conv1d -> BN (no activation), then flattened time-major
  (feature ``t * n_filters + c``) into one token.
- :func:`sinusoid_table`: the fixed sin/cos table, computed in float64 and cast (bit-exact with
  the reference's numpy table).
- :class:`TransformerBlock` / :class:`TransformerStack`: post-norm blocks, fused Q/K/V projection,
  QK-LayerNorm shared across heads, ``scaled_dot_product_attention``, ReLU FFN.
- :class:`ReconstructionHead`: the VQ-VAE's transposed-conv regression head.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FeedForward",
    "MultiHeadAttention",
    "PatchTokenizer",
    "ReconstructionHead",
    "SubjectLayer",
    "TransformerBlock",
    "TransformerStack",
    "fast_dropout",
    "fold_front_end",
    "sinusoid_table",
    "trunc_normal_",
]


def trunc_normal_(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """Truncated normal init with the reference's bounds (+-2 absolute: effectively untruncated).

    Parameters
    ----------
    tensor : torch.Tensor
        Tensor filled in place.
    std : float
        Standard deviation.

    Returns
    -------
    torch.Tensor
        ``tensor``.
    """
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0, b=2.0)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout with the mask drawn by ``uniform_ >= p`` (same distribution as
    :func:`torch.nn.functional.dropout`, about twice as fast on CPU as its Bernoulli sampler).

    Parameters
    ----------
    x : torch.Tensor
        Input.
    p : float
        Drop probability.
    training : bool
        Identity when False or ``p == 0``.

    Returns
    -------
    torch.Tensor
        ``x * mask / (1 - p)``.
    """
    if not training or p == 0.0:
        return x
    keep = torch.empty_like(x).uniform_().ge_(p).mul_(1.0 / (1.0 - p))
    return x * keep


class SubjectLayer(nn.Module):
    """Per-subject linear map over channels: ``y[b, :, t] = W_s^T x[b, :, t] + shift_s``.

    Parameters
    ----------
    n_subjects : int
        Number of subjects.
    d_in, d_out : int
        Input and output channels.

    Notes
    -----
    ``weight[s]`` is the reference's ``W_s`` of shape ``(d_in, d_out)`` (row-major reshape of the
    reference column ``W.weight[:, s]``); ``bias[s]`` is its shift vector.
    """

    def __init__(self, n_subjects: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.n_subjects, self.d_in, self.d_out = n_subjects, d_in, d_out
        self.weight = nn.Parameter(torch.empty(n_subjects, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(n_subjects, d_out))
        trunc_normal_(self.weight)

    def forward(self, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """Map ``x (batch, d_in, n_times)`` to ``(batch, d_out, n_times)``.

        Parameters
        ----------
        x : torch.Tensor
            Channels-first signals.
        subject : torch.Tensor
            int64 subject index per sample ``(batch,)``.

        Returns
        -------
        torch.Tensor
            ``(batch, d_out, n_times)``.
        """
        if self.n_subjects == 1:
            # Single subject: one shared matrix, a plain (faster) matmul.
            w = self.weight[0]  # (d_in, d_out)
            return torch.matmul(w.t(), x) + self.bias[0][:, None]
        w = self.weight[subject]  # (B, d_in, d_out)
        return torch.bmm(w.transpose(1, 2), x) + self.bias[subject][:, :, None]


class PatchTokenizer(nn.Module):
    """Conv stack applied to each non-overlapping patch independently (no activations).

    Parameters
    ----------
    d_in : int
        Input channels (``d_neural``).
    patch_len : int
        Samples per patch.
    filters, kernels, strides : list of int
        Conv stack; padding ``(kernel - 1) // 2`` on both sides, BatchNorm after each conv.
    """

    def __init__(
        self,
        d_in: int,
        patch_len: int,
        filters: list[int],
        kernels: list[int],
        strides: list[int],
    ) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        channels = d_in
        for n_out, k, s in zip(filters, kernels, strides, strict=True):
            self.convs.append(nn.Conv1d(channels, n_out, k, stride=s, padding=(k - 1) // 2))
            self.norms.append(nn.BatchNorm1d(n_out, eps=1e-5, momentum=0.1))
            channels = n_out
        self.d_out = channels * (patch_len // math.prod(strides))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Tokenize ``h (batch, d_in, n_times)`` into ``(batch, n_tokens, d_model)``.

        Parameters
        ----------
        h : torch.Tensor
            Subject-layer output, channels-first.

        Returns
        -------
        torch.Tensor
            Tokens; feature index ``t * n_filters + c`` (time-major inside the patch).
        """
        batch, channels, n_times = h.shape
        n_tokens = n_times // self.patch_len
        # (B, C, L, P) -> (B, L, C, P) -> (B*L, C, P): every patch is its own sequence.
        z = h.reshape(batch, channels, n_tokens, self.patch_len).transpose(1, 2)
        z = z.reshape(batch * n_tokens, channels, self.patch_len)
        # Under autocast the convolutions stay float32: on CPU oneDNN's bf16 kernels for these
        # small patch convolutions (and their BatchNorm backward) are slower than fp32.
        with torch.autocast(h.device.type, enabled=False):
            z = z.to(self.convs[0].weight.dtype)
            for conv, norm in zip(self.convs, self.norms, strict=True):
                z = norm(conv(z))
        # (B*L, F, S) -> (B*L, S, F) -> (B, L, S*F)
        return z.transpose(1, 2).reshape(batch, n_tokens, self.d_out)


def sinusoid_table(n_positions: int, d_model: int) -> torch.Tensor:
    """The fixed sin/cos time table, ``(n_positions, d_model)`` float32.

    ``PE[p, 2i] = sin(p * w_i)``, ``PE[p, 2i + 1] = cos(p * w_i)``, ``w_i = 10000^(-2i / d)``,
    computed in float64 and cast to float32 (bit-identical to the reference table).

    Parameters
    ----------
    n_positions : int
        Number of tokens.
    d_model : int
        Token width (even).

    Returns
    -------
    torch.Tensor
        The table.
    """
    position = np.arange(n_positions, dtype=np.float64)[:, None]
    omega = 10000.0 ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.zeros((n_positions, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(position * omega)
    table[:, 1::2] = np.cos(position * omega)[:, : d_model // 2]
    return torch.from_numpy(table.astype(np.float32))


class MultiHeadAttention(nn.Module):
    """Self-attention with a fused Q/K/V projection and QK-LayerNorm shared across heads.

    Parameters
    ----------
    d_model : int
        Token width.
    n_heads, d_head : int
        Heads and head width (feature ``h * d_head + d`` of the projections belongs to head h).
    attn_dropout : float
        Dropout on the attention weights (training only).
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, attn_dropout: float) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.attn_dropout = attn_dropout
        self.scale = d_head**-0.5
        # Rows [0, H*Dh) = Q, [H*Dh, 2H*Dh) = K, [2H*Dh, 3H*Dh) = V (the converter concatenates
        # the reference's W_q, W_k, W_v in this order).
        self.qkv = nn.Linear(d_model, 3 * n_heads * d_head)
        self.norm_q = nn.LayerNorm(d_head, eps=1e-5)
        self.norm_k = nn.LayerNorm(d_head, eps=1e-5)
        self.proj = nn.Linear(n_heads * d_head, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over ``x (batch, n_tokens, d_model)``; returns the same shape."""
        batch, n_tokens, _ = x.shape
        shape = (batch, n_tokens, self.n_heads, self.d_head)
        # split (not indexing) so that the backward is a cat, not zero-filled full-size buffers.
        q, k, v = self.qkv(x).split(self.n_heads * self.d_head, dim=-1)
        # Transpose before the LayerNorm: its (contiguous) output is then already head-major.
        q = self.norm_q(q.view(shape).transpose(1, 2))  # (B, H, L, Dh)
        k = self.norm_k(k.view(shape).transpose(1, 2))
        v = v.view(shape).transpose(1, 2)
        if self.training and self.attn_dropout > 0.0:
            # Same math as SDPA's reference path, with the faster dropout sampler. Softmax and
            # dropout in float32 (under bf16 autocast the CPU bf16 softmax is ~10x slower).
            scores = torch.matmul(q, k.transpose(-2, -1))
            weights = torch.softmax(scores.float() * self.scale, dim=-1)
            weights = fast_dropout(weights, self.attn_dropout)
            out = torch.matmul(weights.to(scores.dtype), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, L, Dh)
        out = out.transpose(1, 2).reshape(batch, n_tokens, self.n_heads * self.d_head)
        return self.proj(out)


class FeedForward(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear (no output dropout, as the reference)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``x (..., d_model)``."""
        return self.fc2(fast_dropout(F.relu(self.fc1(x)), self.dropout, self.training))


class TransformerBlock(nn.Module):
    """Post-norm block: ``h = LN(x + MHA(x)); y = LN(h + FFN(h))``.

    Parameters
    ----------
    d_model, n_heads, d_head, d_ff : int
        Widths.
    attn_dropout, ff_dropout : float
        Dropout on the attention weights and on the FFN hidden layer.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int,
        d_ff: int,
        attn_dropout: float,
        ff_dropout: float,
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_heads, d_head, attn_dropout)
        self.norm_attn = nn.LayerNorm(d_model, eps=1e-5)
        self.ffn = FeedForward(d_model, d_ff, ff_dropout)
        self.norm_ffn = nn.LayerNorm(d_model, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``x (batch, n_tokens, d_model)``."""
        h = self.norm_attn(x + self.attn(x))
        return self.norm_ffn(h + self.ffn(h))


class TransformerStack(nn.Module):
    """A sequence of :class:`TransformerBlock` (no final norm).

    Linear weights get trunc-normal(0.02) divided by ``sqrt(2 (l + 1))`` for block ``l``, biases
    zero, LayerNorms one/zero (reference §2.9).
    """

    def __init__(
        self,
        n_blocks: int,
        d_model: int,
        n_heads: int,
        d_head: int,
        d_ff: int,
        attn_dropout: float,
        ff_dropout: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_head, d_ff, attn_dropout, ff_dropout)
            for _ in range(n_blocks)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise as the reference does (see class docstring)."""
        for index, block in enumerate(self.blocks):
            rescale = 1.0 / math.sqrt(2.0 * (index + 1))
            for module in block.modules():
                if isinstance(module, nn.Linear):
                    trunc_normal_(module.weight)
                    with torch.no_grad():
                        module.weight.mul_(rescale)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

    def forward(
        self, x: torch.Tensor, return_all: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run all blocks over ``x (batch, n_tokens, d_model)``.

        Parameters
        ----------
        x : torch.Tensor
            Input tokens (time table already added).
        return_all : bool
            Also return every block's output.

        Returns
        -------
        torch.Tensor or (torch.Tensor, list of torch.Tensor)
            The last block's output, optionally with all block outputs.
        """
        outputs = []
        for block in self.blocks:
            x = block(x)
            if return_all:
                outputs.append(x)
        return (x, outputs) if return_all else x


class ReconstructionHead(nn.Module):
    """The VQ-VAE regression head: transposed convs over the whole token sequence + a Linear.

    The token sequence ``(batch, n_tokens, d_model)`` is read as a channels-first signal with
    ``d_model`` channels; no activations. Padding per layer is ``ceil((k - s) / 2)`` with
    output padding ``2p - (k - s)``, so each layer multiplies the length by its stride exactly.

    Parameters
    ----------
    d_model : int
        Token width.
    filters, kernels, strides : list of int
        Transposed-conv stack (the last filter count is the output width before the Linear).
    d_out : int
        Output channels of the final time-wise Linear (``d_neural``).
    """

    def __init__(
        self,
        d_model: int,
        filters: list[int],
        kernels: list[int],
        strides: list[int],
        d_out: int,
    ) -> None:
        super().__init__()
        self.deconvs = nn.ModuleList()
        channels = d_model
        for n_out, k, s in zip(filters, kernels, strides, strict=True):
            padding = math.ceil((k - s) / 2)
            self.deconvs.append(
                nn.ConvTranspose1d(
                    channels,
                    n_out,
                    k,
                    stride=s,
                    padding=padding,
                    output_padding=2 * padding - (k - s),
                )
            )
            channels = n_out
        self.linear = nn.Linear(channels, d_out)
        trunc_normal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, n_tokens, d_model)`` to ``(batch, d_out, n_tokens * prod(strides))``."""
        z = tokens.transpose(1, 2)  # (B, D, L)
        for deconv in self.deconvs:
            z = deconv(z)
        # The Linear acts on channels at every time step: a 1x1 conv on channels-first data.
        return F.conv1d(z, self.linear.weight[:, :, None], self.linear.bias)


@torch.no_grad()
def fold_front_end(
    subject_layer: SubjectLayer,
    tokenizer: PatchTokenizer,
    time_table: torch.Tensor,
    compose_subject_layer: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference-time front end as one affine map per patch.

    With BatchNorm in eval mode the patch tokenizer has no nonlinearity, so each token is an
    affine function of its ``(d_neural, patch_len)`` patch: ``token = patch @ weight + bias``
    (the time table is in ``bias``). With ``compose_subject_layer`` (single subject only) the
    subject layer, also affine, is folded in too and the map reads the raw
    ``(n_channels, patch_len)`` patch. The tokenizer's map is found in float64 by pushing the
    unit basis of one patch through a copy of it, then cast to the modules' dtype; results
    equal the layer-by-layer path up to float rounding.

    Parameters
    ----------
    subject_layer : SubjectLayer
        Per-subject channel mixing.
    tokenizer : PatchTokenizer
        Conv/BatchNorm stack (its running statistics are used).
    time_table : torch.Tensor
        ``(n_tokens, d_model)`` table added to the tokens.
    compose_subject_layer : bool
        Fold the (single) subject's channel mixing into the map.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``weight (n_in * patch_len, d_model)`` (patch flattened row-major, ``c * patch_len + p``;
        ``n_in`` = ``n_channels`` when composed, else ``d_neural``) and
        ``bias (n_subjects, n_tokens, d_model)``.
    """
    dtype, device = time_table.dtype, time_table.device
    tokenizer64 = copy.deepcopy(tokenizer).to(torch.float64).eval()
    d_neural, patch = subject_layer.d_out, tokenizer.patch_len
    n_in = d_neural * patch
    # Row 0: the zero patch (gives the offset); rows 1..n_in: unit patches.
    basis = torch.cat([torch.zeros(1, n_in), torch.eye(n_in)]).to(device, torch.float64)
    out = tokenizer64(basis.reshape(n_in + 1, d_neural, patch))[:, 0]  # (n_in + 1, d_model)
    token_map = (out[1:] - out[:1]).reshape(d_neural, patch, -1)  # (d, p, D)
    offset = out[0].expand(subject_layer.n_subjects, -1)  # (S, D)
    table = time_table.to(torch.float64)
    if not compose_subject_layer:
        weight = token_map.flatten(0, 1)  # (d*P, D)
        return weight.to(dtype), (offset[:, None, :] + table[None]).to(dtype)
    if subject_layer.n_subjects != 1:
        raise ValueError("the subject layer can only be folded in for a single-subject model")
    # h[d, p] = sum_c W[c, d] x[c, p] + b[d], so token = sum_{c,p} x[c, p] (W token_map)[c, p].
    mix = subject_layer.weight[0].detach().to(torch.float64)  # (C, d)
    shift = subject_layer.bias[0].detach().to(torch.float64)  # (d,)
    weight = torch.einsum("cd,dpo->cpo", mix, token_map).flatten(0, 1)  # (C*P, D)
    offset = offset + torch.einsum("d,dpo->o", shift, token_map)[None]
    return weight.to(dtype), (offset[:, None, :] + table[None]).to(dtype)

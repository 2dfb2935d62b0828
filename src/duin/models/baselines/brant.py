"""Brant baseline: per-channel patch tokens, temporal then spatial transformer, masked patches.

Zhang, Yuan, Yang, Chen, Wang, Li. "Brant: Foundation Model for Intracranial Neural Signal".
NeurIPS 2023.

Channel level: every channel is cut into 1-s patches (200 samples at 200 Hz: 3 s -> 3 patches).
Each patch is embedded by a LaBraM-style conv stack (filters 96/96/96, kernels 9/9/3, strides
5/5/1, GroupNorm + GELU -> 96 x 8 = 768-d; the Du-IN paper's "Brant-Tiny" change) plus a Linear
embedding of its log power in 8 frequency bands, and a learned patch-position embedding. A
temporal encoder (8 blocks over the patches of each channel) is followed by a spatial encoder
(4 blocks over the channels of each patch); 16 heads x 48, FFN 2048. Classifier: flatten
(channels x patches x 768) -> MLP(128) -> classes.

Pretraining (``brant_pretrain``): 40% of the patches of each channel are replaced by a learned
mask embedding (after the patch embedding); a Linear head reconstructs the raw patches and the
loss is the MSE on the masked patches.

Differences from the original: Brant is a ~500M-parameter model (much wider) with its own patch
length and sampling rate; the Du-IN paper shrinks it ("Brant-Tiny", 69.35M) and swaps in the
conv embedding. The blocks here are the shared Du-IN blocks (post-norm, QK-LayerNorm, ReLU) and
the 8 band edges are our choice (0.5-4-8-13-30-50-70-90-100 Hz).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from duin.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    BaselineModel,
    ChannelPatchConfig,
    ChannelPatchEmbedding,
    check_mask,
    learned_embedding,
    masked_mean,
    random_token_mask,
    replace_masked,
    to_patches,
    transformer_stack,
)
from duin.models.registry import register_model

__all__ = ["Brant", "BrantConfig", "BrantPretrain", "BrantPretrainConfig"]


@dataclass
class BrantConfig(ChannelPatchConfig):
    """Brant encoder and classifier (defaults: the Du-IN paper's Brant-Tiny settings).

    Parameters
    ----------
    conv_filters, conv_kernels, conv_strides : list of int
        Patch conv embedding (96/96/96, 9/9/3, 5/5/1); ``patch_len`` (200 = 1 s),
        ``norm_groups`` (4) and ``max_patches`` (16) as :class:`ChannelPatchConfig`.
    band_edges : list of float
        Edges (Hz) of the power bands (8 bands).
    temporal_blocks, spatial_blocks : int
        Blocks of the temporal and spatial encoders (8, 4).
    n_heads, d_head, d_ff : int
        16 heads x 48, FFN 2048.
    attn_dropout, ff_dropout : float
        Transformer dropouts (0.1, 0.1).
    """

    # CPU variant: 16 conv filters (128-d tokens), 2 + 1 blocks (about 1M instead of 69M).
    QUICK: ClassVar[dict[str, Any]] = {
        "conv_filters": [16, 16, 16],
        "temporal_blocks": 2,
        "spatial_blocks": 1,
        "n_heads": 4,
        "d_head": 32,
        "d_ff": 256,
    }

    conv_filters: list[int] = field(default_factory=lambda: [96, 96, 96])
    conv_kernels: list[int] = field(default_factory=lambda: [9, 9, 3])
    conv_strides: list[int] = field(default_factory=lambda: [5, 5, 1])
    band_edges: list[float] = field(
        default_factory=lambda: [0.5, 4.0, 8.0, 13.0, 30.0, 50.0, 70.0, 90.0, 100.0]
    )
    temporal_blocks: int = 8
    spatial_blocks: int = 4
    n_heads: int = 16
    d_head: int = 48
    d_ff: int = 2048
    attn_dropout: float = 0.1
    ff_dropout: float = 0.1

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        self.check_positive_ints("temporal_blocks", "spatial_blocks", "n_heads", "d_head", "d_ff")
        self.check_probabilities("attn_dropout", "ff_dropout")
        edges = self.band_edges
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(
                f"{type(self).__name__}.band_edges must be increasing with at least 2 entries"
            )


class BrantBackbone(nn.Module):
    """Patch + band-power embedding, temporal encoder, spatial encoder."""

    def __init__(self, config: BrantConfig) -> None:
        super().__init__()
        self.patch_len = config.patch_len
        self.patch_embed = ChannelPatchEmbedding(config)
        d = config.d_model
        # Band masks over the rfft bins of one patch (bin spacing sfreq / patch_len).
        freqs = torch.fft.rfftfreq(config.patch_len, d=1.0 / BrantConfig.target_sfreq)
        edges = list(config.band_edges)
        bands = torch.stack(
            [((freqs >= lo) & (freqs < hi)).float() for lo, hi in itertools.pairwise(edges)]
        )  # (n_bands, n_bins)
        self.register_buffer(
            "bands", bands / bands.sum(1, keepdim=True).clamp(min=1), persistent=False
        )
        self.power_embed = nn.Linear(len(edges) - 1, d)
        self.position = learned_embedding(config.max_patches, d)
        self.temporal = transformer_stack(config, config.temporal_blocks, d)
        self.spatial = transformer_stack(config, config.spatial_blocks, d)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, C, N, P)`` patches -> ``(B, C, N, d_model)`` (conv + band power)."""
        power = torch.fft.rfft(patches, dim=-1).abs().pow(2) @ self.bands.t()  # (B, C, N, bands)
        return self.patch_embed(patches) + self.power_embed(torch.log(power + 1e-6))

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, C, N, D)`` -> temporal (over N) then spatial (over C) encoders, same shape."""
        batch, n_channels, n_patches, d = tokens.shape
        h = tokens + self.position[:n_patches]
        h = self.temporal(h.reshape(batch * n_channels, n_patches, d))
        h = h.reshape(batch, n_channels, n_patches, d).transpose(1, 2)  # (B, N, C, D)
        h = self.spatial(h.reshape(batch * n_patches, n_channels, d))
        return h.reshape(batch, n_patches, n_channels, d).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, n_patches, d_model)``."""
        return self.encode(self.embed(to_patches(x, self.patch_len)))


@register_model("brant", BrantConfig)
class Brant(BaselineClassifier):
    """Brant word classifier: flatten (channels x patches x 768) -> MLP."""

    config_class: ClassVar[type[BaselineConfig]] = BrantConfig
    config: BrantConfig

    def __init__(self, config: BrantConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = BrantBackbone(cfg)
        self.build_head(cfg.n_channels * cfg.n_patches * cfg.d_model)


@dataclass
class BrantPretrainConfig(BrantConfig):
    """Brant masked patch reconstruction (4-s crops by default).

    Parameters
    ----------
    mask_ratio : float
        Fraction of each channel's patches masked (0.4).
    """

    n_times: int = 4000
    mask_ratio: float = 0.4

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        self.check_probabilities("mask_ratio", open_interval=True)
        if self.n_patches < 2:
            raise ValueError(f"{type(self).__name__}: masking needs at least 2 patches per window")


@register_model("brant_pretrain", BrantPretrainConfig)
class BrantPretrain(BaselineModel):
    """Brant masked patch modelling (MSE on the raw masked patches)."""

    config_class: ClassVar[type[BaselineConfig]] = BrantPretrainConfig
    config: BrantPretrainConfig

    def __init__(self, config: BrantPretrainConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = BrantBackbone(cfg)
        self.mask_embedding = learned_embedding(cfg.d_model)
        self.recon_head = nn.Linear(cfg.d_model, cfg.patch_len)

    def forward(
        self,
        x: torch.Tensor,
        subject: torch.Tensor | int | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mask patches of ``x (batch, n_channels, n_times)`` and reconstruct them.

        Parameters
        ----------
        mask : torch.Tensor, optional
            bool ``(batch, n_channels, n_patches)``, True = masked. Default: random per channel.

        Returns
        -------
        dict of torch.Tensor
            ``loss``, ``reconstruction`` ``(batch, n_channels, n_patches, patch_len)``,
            ``mask``, ``features``.
        """
        cfg = self.config
        signal = self.prepare(x, subject)
        patches = to_patches(signal, cfg.patch_len)  # (B, C, N, P)
        batch, n_channels, n_patches, _ = patches.shape
        if mask is None:
            mask = random_token_mask(batch * n_channels, n_patches, cfg.mask_ratio, signal.device)
            mask = mask.reshape(batch, n_channels, n_patches)
        check_mask(mask, (batch, n_channels, n_patches))
        tokens = replace_masked(self.backbone.embed(patches), mask, self.mask_embedding)
        features = self.backbone.encode(tokens)
        recon = self.recon_head(features)
        loss = masked_mean((recon - patches).pow(2).mean(dim=-1), mask)  # over (B, C, N)
        return {"loss": loss, "reconstruction": recon, "mask": mask, "features": features}

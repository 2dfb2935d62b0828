"""EEG-Conformer baseline: a shallow conv front end followed by a transformer.

Song, Zheng, Liu, Gao. "EEG Conformer: Convolutional Transformer for EEG Decoding and
Visualization". IEEE Transactions on Neural Systems and Rehabilitation Engineering, 2023.

Region level: the spatial conv mixes all channels. Input resampled to 250 Hz (3 s -> 750
samples). Front end (as the original "patch embedding"): temporal Conv2d (1 x 25, 128 filters)
-> spatial Conv2d (C x 1) -> BatchNorm -> ELU -> AvgPool (1 x 75, stride 15) -> Dropout ->
1 x 1 conv to ``d_model`` = 128, giving 44 tokens for 3 s. Fixed sin/cos time table, 4
transformer blocks, flatten -> MLP(128) -> classes (the Du-IN paper's head).

Differences: the original uses 40 filters/width 40, 6 blocks of 10 heads (pre-norm, GELU)
without a time table, and a fully connected head; the Du-IN paper's version (reproduced here) uses width 128,
its own post-norm QK-LayerNorm blocks (8 heads x 64, FFN 256) and its flatten MLP head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from duin.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    conv_out_len,
    transformer_stack,
)
from duin.models.layers import sinusoid_table
from duin.models.registry import register_model

__all__ = ["EEGConformer", "EEGConformerConfig"]


@dataclass
class EEGConformerConfig(BaselineConfig):
    """EEG-Conformer (defaults: the Du-IN paper's settings).

    Parameters
    ----------
    n_filters : int
        Temporal/spatial conv filters (128).
    temporal_kernel : int
        Temporal conv kernel in samples at 250 Hz (25).
    pool_kernel, pool_stride : int
        Average pooling over time (75, 15).
    front_dropout : float
        Dropout after the pooling (0.5, as the original).
    d_model : int
        Token width (128).
    n_blocks, n_heads, d_head, d_ff : int
        Transformer: 4 blocks, 8 heads x 64, FFN 256.
    attn_dropout, ff_dropout : float
        Transformer dropouts (0.2, 0.2 as Du-IN's blocks).
    """

    target_sfreq: ClassVar[float] = 250.0
    # CPU variant: the original EEG-Conformer's width (40 filters, 40-d tokens), 2 blocks.
    QUICK: ClassVar[dict[str, Any]] = {
        "n_filters": 40,
        "d_model": 40,
        "n_blocks": 2,
        "n_heads": 4,
        "d_head": 16,
        "d_ff": 80,
    }

    n_filters: int = 128
    temporal_kernel: int = 25
    pool_kernel: int = 75
    pool_stride: int = 15
    front_dropout: float = 0.5
    d_model: int = 128
    n_blocks: int = 4
    n_heads: int = 8
    d_head: int = 64
    d_ff: int = 256
    attn_dropout: float = 0.2
    ff_dropout: float = 0.2

    @property
    def n_tokens(self) -> int:
        """Tokens after conv + pooling (44 for 3 s)."""
        n = conv_out_len(self.n_resampled, self.temporal_kernel)
        return conv_out_len(n, self.pool_kernel, self.pool_stride)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_positive_ints("n_filters", "temporal_kernel", "pool_kernel", "pool_stride")
        self.check_positive_ints("d_model", "n_blocks", "n_heads", "d_head", "d_ff")
        self.check_probabilities("front_dropout", "attn_dropout", "ff_dropout")
        if self.d_model % 2:
            raise ValueError(f"{owner}.d_model must be even (sin/cos table)")
        if self.n_tokens < 1:
            raise ValueError(f"{owner}: n_times={self.n_times} is too short for the front end")


class EEGConformerBackbone(nn.Module):
    """Conv front end + time table + transformer: ``(B, C, T) -> (B, n_tokens, d_model)``."""

    def __init__(self, config: EEGConformerConfig) -> None:
        super().__init__()
        f = config.n_filters
        self.front = nn.Sequential(
            nn.Conv2d(1, f, (1, config.temporal_kernel)),
            nn.Conv2d(f, f, (config.n_channels, 1)),
            nn.BatchNorm2d(f),
            nn.ELU(),
            nn.AvgPool2d((1, config.pool_kernel), (1, config.pool_stride)),
            nn.Dropout(config.front_dropout),
            nn.Conv2d(f, config.d_model, (1, 1)),
        )
        self.register_buffer(
            "time_table", sinusoid_table(config.n_tokens, config.d_model), persistent=False
        )
        # Not a TokenEncoder: the stack sits directly under ``encoder`` (state-dict keys
        # ``encoder.blocks.*``), which saved checkpoints rely on.
        self.encoder = transformer_stack(config, config.n_blocks, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(batch, n_tokens, d_model)``."""
        h = self.front(x[:, None])  # (B, D, 1, L)
        tokens = h.squeeze(2).transpose(1, 2)  # (B, L, D)
        return self.encoder(tokens + self.time_table)  # type: ignore[return-value]


@register_model("eeg_conformer", EEGConformerConfig)
class EEGConformer(BaselineClassifier):
    """EEG-Conformer word classifier (no pretraining)."""

    config_class: ClassVar[type[BaselineConfig]] = EEGConformerConfig
    config: EEGConformerConfig

    def __init__(self, config: EEGConformerConfig | None = None) -> None:
        super().__init__(config)
        self.backbone = EEGConformerBackbone(self.config)
        self.build_head(self.config.n_tokens * self.config.d_model)

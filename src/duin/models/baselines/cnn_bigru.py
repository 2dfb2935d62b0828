"""CNN-BiGRU baseline: a strided temporal conv followed by a bidirectional GRU.

Moses, Metzger, Liu, Anumanchipalli, Makin, Sun, Chartier, Dougherty, Liu, Abrams,
Tu-Chan, Ganguly, Chang. "Neuroprosthesis for Decoding Speech in a Paralyzed Person with
Anarthria". New England Journal of Medicine, 2021 (the word classifier's conv + bidirectional
GRU architecture).

Region level: the conv mixes all channels. Input resampled to 30 Hz (3 s -> 90 samples, roughly
the high-gamma envelope rate of the original). Conv1d(C -> 128, kernel 5, stride 3) + BatchNorm,
a 2-layer bidirectional GRU (hidden 128, dropout 0.2 between layers), the output at the last
time step (256-d) -> MLP(128) -> classes, as in the Du-IN paper's version.

Differences from the original: the original classifies high-gamma features of ECoG with an
ensemble of models and a language model; here a single network on the resampled raw signal.
The Du-IN paper trains it 500 epochs at a constant lr 1e-3 (a trainer setting, not a config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from duin.models.baselines.common import BaselineClassifier, BaselineConfig, conv_out_len
from duin.models.registry import register_model

__all__ = ["CNNBiGRU", "CNNBiGRUConfig"]


@dataclass
class CNNBiGRUConfig(BaselineConfig):
    """CNN-BiGRU (defaults: the Du-IN paper's settings).

    Parameters
    ----------
    conv_filters, conv_kernel, conv_stride : int
        The temporal conv (128, 5, 3).
    gru_hidden : int
        GRU hidden size per direction (128).
    gru_layers : int
        Stacked bidirectional GRU layers (2).
    gru_dropout : float
        Dropout between GRU layers (0.2).
    """

    target_sfreq: ClassVar[float] = 30.0
    QUICK: ClassVar[dict[str, Any]] = {"conv_filters": 64, "gru_hidden": 64}

    conv_filters: int = 128
    conv_kernel: int = 5
    conv_stride: int = 3
    gru_hidden: int = 128
    gru_layers: int = 2
    gru_dropout: float = 0.2

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_positive_ints(
            "conv_filters", "conv_kernel", "conv_stride", "gru_hidden", "gru_layers"
        )
        self.check_probabilities("gru_dropout")
        if conv_out_len(self.n_resampled, self.conv_kernel, self.conv_stride) < 1:
            raise ValueError(f"{owner}: n_times={self.n_times} is too short for the conv")


class CNNBiGRUBackbone(nn.Module):
    """Conv + BN + 2-layer BiGRU: ``(B, C, T) -> (B, 2 * gru_hidden)`` (last time step)."""

    def __init__(self, config: CNNBiGRUConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            config.n_channels, config.conv_filters, config.conv_kernel, stride=config.conv_stride
        )
        self.norm = nn.BatchNorm1d(config.conv_filters)
        self.gru = nn.GRU(
            config.conv_filters,
            config.gru_hidden,
            num_layers=config.gru_layers,
            batch_first=True,
            dropout=config.gru_dropout if config.gru_layers > 1 else 0.0,
            bidirectional=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Last-step output ``(batch, 2 * gru_hidden)``."""
        h = self.norm(self.conv(x)).transpose(1, 2)  # (B, L, F)
        out, _ = self.gru(h)  # (B, L, 2H)
        return out[:, -1]


@register_model("cnn_bigru", CNNBiGRUConfig)
class CNNBiGRU(BaselineClassifier):
    """CNN-BiGRU word classifier (no pretraining)."""

    config_class: ClassVar[type[BaselineConfig]] = CNNBiGRUConfig
    config: CNNBiGRUConfig

    def __init__(self, config: CNNBiGRUConfig | None = None) -> None:
        super().__init__(config)
        self.backbone = CNNBiGRUBackbone(self.config)
        self.build_head(2 * self.config.gru_hidden)

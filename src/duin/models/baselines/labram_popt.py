"""LaBraM-PopT baseline: LaBraM's backbone with channels identified by their 3-D position.

Chau et al. "Population Transformer: Learning Population-level Representations of Neural
Activity". ICLR 2025 (PopT); the Du-IN paper's Table 2 row "LaBraM-PopT".

LaBraM adds a learned embedding per *input slot* to every token of a channel, which means
nothing across subjects (slot 3 is a different electrode in every implant). PopT instead
encodes where the electrode is: each coordinate (x, y, z, metres) is encoded with sines and
cosines at ``position_freqs`` geometric wavelengths between ``min_wavelength`` and
``max_wavelength`` (``(3 * 2 * position_freqs,)`` per channel), and a learned Linear maps that to
the token width; the result replaces LaBraM's channel embedding. Everything else (patch
embedding, time table, transformer, flatten head) is :mod:`duin.models.baselines.labram`'s.

The coordinates are part of the configuration (``channel_positions``, one ``[x, y, z]`` per
input channel in input order), so a saved model carries its montage; the benchmark fills them
from the data (BIDS ``electrodes.tsv``, the simulator) and refuses data without them.

Differences from the paper: the Du-IN paper pretrains LaBraM-PopT on all 12 subjects; here it is
trained per subject from scratch (no pretraining stages), like the other rows of the
benchmark's per-subject protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from duin.models.baselines.common import BaselineClassifier, BaselineConfig
from duin.models.baselines.labram import LaBraMBackbone, LaBraMConfig
from duin.models.registry import register_model

__all__ = ["CoordinateEncoding", "LaBraMPopT", "LaBraMPopTConfig", "MissingCoordinatesError"]


class MissingCoordinatesError(ValueError):
    """A LaBraM-PopT model was asked for without electrode coordinates."""


@dataclass
class LaBraMPopTConfig(LaBraMConfig):
    """LaBraM-PopT classifier: :class:`LaBraMConfig` plus the electrode positions.

    Parameters
    ----------
    channel_positions : list of [float, float, float] or None
        Position of each input channel in metres, in input order (``None`` only as a
        placeholder: the model refuses to be built without them).
    position_freqs : int
        Sin/cos frequencies per axis (8).
    min_wavelength, max_wavelength : float
        Shortest and longest encoded wavelength in metres (5 mm: neighbouring contacts;
        0.5 m: larger than a head).
    """

    QUICK: ClassVar[dict[str, Any]] = dict(LaBraMConfig.QUICK)

    channel_positions: list[list[float]] | None = None
    position_freqs: int = 8
    min_wavelength: float = 0.005
    max_wavelength: float = 0.5

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_positive_ints("position_freqs")
        if not 0 < self.min_wavelength < self.max_wavelength:
            raise ValueError(
                f"{owner}: need 0 < min_wavelength < max_wavelength, got "
                f"{self.min_wavelength} and {self.max_wavelength}"
            )
        if self.channel_positions is None:
            return
        positions = self.channel_positions
        if len(positions) != self.n_channels or any(len(p) != 3 for p in positions):
            raise ValueError(
                f"{owner}.channel_positions must hold one [x, y, z] per channel "
                f"({self.n_channels}), got {len(positions)} entries"
            )
        if not all(math.isfinite(float(v)) for p in positions for v in p):
            raise ValueError(f"{owner}.channel_positions must be finite numbers (metres)")


class CoordinateEncoding(nn.Module):
    """PopT position of each channel: sin/cos of its coordinates, then a learned Linear.

    Parameters
    ----------
    d_model : int
        Output width.
    n_freqs : int
        Frequencies per axis.
    min_wavelength, max_wavelength : float
        Wavelength range (same unit as the coordinates).
    """

    def __init__(
        self, d_model: int, n_freqs: int, min_wavelength: float, max_wavelength: float
    ) -> None:
        super().__init__()
        wavelengths = torch.logspace(
            math.log10(min_wavelength), math.log10(max_wavelength), n_freqs, dtype=torch.float64
        )
        self.register_buffer("omega", (2 * math.pi / wavelengths).float(), persistent=False)
        self.proj = nn.Linear(3 * 2 * n_freqs, d_model)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """``(n_channels, 3)`` positions -> ``(n_channels, d_model)``."""
        angles = positions[:, :, None] * self.omega  # (C, 3, F)
        features = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (C, 3, 2F)
        return self.proj(features.flatten(1))  # (C, d_model)


class LaBraMPopTBackbone(LaBraMBackbone):
    """:class:`LaBraMBackbone` whose channel term is the :class:`CoordinateEncoding`."""

    def __init__(self, config: LaBraMPopTConfig) -> None:
        if config.channel_positions is None:
            raise MissingCoordinatesError(
                "labram_popt needs electrode coordinates (channel_positions, one [x, y, z] in "
                "metres per channel)"
            )
        super().__init__(config)
        del self.channel_embedding  # the per-slot table is what PopT replaces
        positions = torch.tensor(config.channel_positions, dtype=torch.float32)  # (C, 3)
        self.register_buffer("channel_positions", positions, persistent=False)
        self.position_encoding = CoordinateEncoding(
            config.d_model, config.position_freqs, config.min_wavelength, config.max_wavelength
        )

    def channel_term(self) -> torch.Tensor:
        """``(n_channels, d_model)`` encoding of the electrode positions."""
        return self.position_encoding(self.channel_positions)


@register_model("labram_popt", LaBraMPopTConfig)
class LaBraMPopT(BaselineClassifier):
    """LaBraM-PopT word classifier: flatten (channels x patches x 200) -> MLP.

    Raises
    ------
    MissingCoordinatesError
        If ``config.channel_positions`` is ``None``.
    """

    config_class: ClassVar[type[BaselineConfig]] = LaBraMPopTConfig
    config: LaBraMPopTConfig

    def __init__(self, config: LaBraMPopTConfig | None = None) -> None:
        super().__init__(config)
        self.backbone = LaBraMPopTBackbone(self.config)
        self.build_head(self.config.n_tokens * self.config.d_model)

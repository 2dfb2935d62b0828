"""DeWave baseline (encoder only): strided conv tokens and a transformer.

Duan, Zhou, Wang, Wang, Lin. "DeWave: Discrete Encoding of EEG Waves for EEG to Text
Translation". NeurIPS 2023.

Region level: the first conv mixes all channels. Input resampled to 500 Hz (3 s -> 1500
samples). Five Conv1d (128 filters, kernels 9/3/3/3/3, strides 3/2/2/2/2, BatchNorm, no
activation, no padding) give 30 tokens (about 1500 / 48); fixed sin/cos time table; 6
transformer blocks (8 heads x 64, FFN 512); flatten -> MLP(128) -> classes, as the Du-IN
paper's code (no pretraining).

Differences: the original DeWave learns a discrete codex (VQ) of EEG waves and decodes text
with a language model; the Du-IN paper keeps only the wave encoder and trains it supervised.
Its text says "6 Conformer + 6 Transformer layers" (and Table 2 lists 5.70M parameters), but
its code wires in only transformer blocks; ``n_blocks`` (default 6, the code) can be raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from duin.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    ConvTransformer,
    StridedConvTokenizer,
)
from duin.models.registry import register_model

__all__ = ["DeWave", "DeWaveConfig"]


@dataclass
class DeWaveConfig(BaselineConfig):
    """DeWave encoder + classifier (defaults: the Du-IN paper's code).

    Parameters
    ----------
    conv_filters, conv_kernels, conv_strides : list of int
        The conv front end (5 x 128 filters, kernels 9/3/3/3/3, strides 3/2/2/2/2).
    n_blocks, n_heads, d_head, d_ff : int
        Transformer: 6 blocks, 8 heads x 64, FFN 512 (width = last conv filter count).
    attn_dropout, ff_dropout : float
        Transformer dropouts (0.2, 0.2).
    """

    target_sfreq: ClassVar[float] = 500.0
    QUICK: ClassVar[dict[str, Any]] = {
        "conv_filters": [64] * 5,
        "n_blocks": 2,
        "n_heads": 4,
        "d_head": 16,
        "d_ff": 128,
    }

    conv_filters: list[int] = field(default_factory=lambda: [128] * 5)
    conv_kernels: list[int] = field(default_factory=lambda: [9, 3, 3, 3, 3])
    conv_strides: list[int] = field(default_factory=lambda: [3, 2, 2, 2, 2])
    n_blocks: int = 6
    n_heads: int = 8
    d_head: int = 64
    d_ff: int = 512
    attn_dropout: float = 0.2
    ff_dropout: float = 0.2

    @property
    def d_model(self) -> int:
        """Token width (last conv filter count)."""
        return self.conv_filters[-1]

    @property
    def n_tokens(self) -> int:
        """Tokens per window (30 for 3 s)."""
        return StridedConvTokenizer.out_len(self.n_resampled, self.conv_kernels, self.conv_strides)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_int_lists("conv_filters", "conv_kernels", "conv_strides")
        self.check_positive_ints("n_blocks", "n_heads", "d_head", "d_ff")
        self.check_probabilities("attn_dropout", "ff_dropout")
        if self.d_model % 2:
            raise ValueError(f"{owner}.conv_filters[-1] must be even (sin/cos table)")
        if self.n_tokens < 1:
            raise ValueError(f"{owner}: n_times={self.n_times} is too short for the convs")


@register_model("dewave", DeWaveConfig)
class DeWave(BaselineClassifier):
    """DeWave-encoder word classifier (no pretraining)."""

    config_class: ClassVar[type[BaselineConfig]] = DeWaveConfig
    config: DeWaveConfig

    def __init__(self, config: DeWaveConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        tokenizer = StridedConvTokenizer(
            cfg.n_channels, list(cfg.conv_filters), list(cfg.conv_kernels), list(cfg.conv_strides)
        )
        self.backbone = ConvTransformer(tokenizer, cfg)
        self.build_head(cfg.n_tokens * cfg.d_model)

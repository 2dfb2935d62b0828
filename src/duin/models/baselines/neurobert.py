"""Neuro-BERT baseline: strided-conv tokens, transformer, masked-signal pretraining.

Wu, Li, Yang, Sawan. "Neuro-BERT: Rethinking Masked Autoencoding for Self-Supervised
Neurological Pretraining". IEEE Journal of Biomedical and Health Informatics, 2024.

Region level: the conv mixes all channels. Input resampled to 400 Hz (3 s -> 1200 samples).
Conv1d(C -> 128, kernel 40, stride 40) gives 30 tokens (0.1 s each, like Du-IN); fixed sin/cos
time table; 4 transformer blocks (8 heads x 64, FFN 512); flatten -> MLP(128) -> classes.

Pretraining (``neurobert_pretrain``), the Du-IN paper's version: 50% of the tokens (after the
conv, before the time table) are replaced by a learned mask embedding (one view); a
transposed-conv regression head (the shared :class:`~duin.models.layers.ReconstructionHead`)
maps the encoder output back to the resampled signal, and the loss is the MSE over the
samples of the masked tokens (``loss_on_masked_only``; else over all samples).

Differences from the original: the original predicts the Fourier amplitude and phase of the
masked input ("Fourier inversion prediction"); the Du-IN paper reconstructs the raw signal,
which is what is done here. Blocks are Du-IN's (post-norm, QK-LayerNorm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from duin.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    BaselineModel,
    StridedConvTokenizer,
    TokenEncoder,
    check_positive_int,
    check_probability,
    random_token_mask,
)
from duin.models.layers import ReconstructionHead, trunc_normal_
from duin.models.registry import register_model

__all__ = ["NeuroBERT", "NeuroBERTConfig", "NeuroBERTPretrain", "NeuroBERTPretrainConfig"]


@dataclass
class NeuroBERTConfig(BaselineConfig):
    """Neuro-BERT encoder and classifier (defaults: the Du-IN paper's settings).

    Parameters
    ----------
    patch_len : int
        Conv kernel = stride in samples at 400 Hz (40 = 0.1 s).
    d_model : int
        Token width (128).
    n_blocks, n_heads, d_head, d_ff : int
        Transformer: 4 blocks, 8 heads x 64, FFN 512.
    attn_dropout, ff_dropout : float
        Transformer dropouts (0.2, 0.2).
    """

    target_sfreq: ClassVar[float] = 400.0
    QUICK: ClassVar[dict[str, Any]] = {
        "d_model": 64,
        "n_blocks": 2,
        "n_heads": 4,
        "d_head": 16,
        "d_ff": 128,
    }

    patch_len: int = 40
    d_model: int = 128
    n_blocks: int = 4
    n_heads: int = 8
    d_head: int = 64
    d_ff: int = 512
    attn_dropout: float = 0.2
    ff_dropout: float = 0.2

    @property
    def n_tokens(self) -> int:
        """Tokens per window (30 for 3 s)."""
        return self.n_resampled // self.patch_len

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        for name in ("patch_len", "d_model", "n_blocks", "n_heads", "d_head", "d_ff"):
            check_positive_int(owner, name, getattr(self, name))
        check_probability(owner, "attn_dropout", self.attn_dropout)
        check_probability(owner, "ff_dropout", self.ff_dropout)
        if self.d_model % 2:
            raise ValueError(f"{owner}.d_model must be even (sin/cos table)")
        if self.n_resampled % self.patch_len:
            raise ValueError(
                f"{owner}: {self.n_resampled} resampled samples are not a multiple of "
                f"patch_len={self.patch_len}"
            )


class NeuroBERTBackbone(nn.Module):
    """Conv tokens + time table + transformer."""

    def __init__(self, config: NeuroBERTConfig) -> None:
        super().__init__()
        p = config.patch_len
        self.tokenizer = StridedConvTokenizer(
            config.n_channels, [config.d_model], [p], [p], batch_norm=False
        )
        self.encoder = TokenEncoder(
            config.n_tokens,
            config.d_model,
            config.n_blocks,
            config.n_heads,
            config.d_head,
            config.d_ff,
            config.attn_dropout,
            config.ff_dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T) -> (B, n_tokens, d_model)``."""
        return self.encoder(self.tokenizer(x))


@register_model("neurobert", NeuroBERTConfig)
class NeuroBERT(BaselineClassifier):
    """Neuro-BERT word classifier: encoder -> flatten (30 x 128) -> MLP."""

    config_class: ClassVar[type[BaselineConfig]] = NeuroBERTConfig
    config: NeuroBERTConfig

    def __init__(self, config: NeuroBERTConfig | None = None) -> None:
        super().__init__(config or NeuroBERTConfig())
        self.backbone = NeuroBERTBackbone(self.config)
        self.build_head(self.config.n_tokens * self.config.d_model)


@dataclass
class NeuroBERTPretrainConfig(NeuroBERTConfig):
    """Neuro-BERT masked reconstruction (4-s crops by default).

    Parameters
    ----------
    mask_ratio : float
        Fraction of tokens replaced by the mask embedding (0.5).
    decoder_filters, decoder_kernels, decoder_strides : list of int
        Transposed-conv regression head; strides multiply to ``patch_len``.
    loss_on_masked_only : bool
        MSE over the masked tokens' samples (True) or over the whole window.
    """

    QUICK: ClassVar[dict[str, Any]] = {
        **NeuroBERTConfig.QUICK,
        "decoder_filters": [64, 64, 64],
    }

    n_times: int = 4000
    mask_ratio: float = 0.5
    decoder_filters: list[int] = field(default_factory=lambda: [128, 128, 128])
    decoder_kernels: list[int] = field(default_factory=lambda: [3, 10, 8])
    decoder_strides: list[int] = field(default_factory=lambda: [1, 10, 4])
    loss_on_masked_only: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        check_probability(owner, "mask_ratio", self.mask_ratio, open_interval=True)
        n = len(self.decoder_filters)
        for name in ("decoder_filters", "decoder_kernels", "decoder_strides"):
            values = getattr(self, name)
            if not isinstance(values, list) or len(values) != n or n == 0:
                raise ValueError(f"{owner}.{name} must be a list of {n} positive integers")
            for v in values:
                check_positive_int(owner, f"{name}[]", v)
        prod = 1
        for k, s in zip(self.decoder_kernels, self.decoder_strides, strict=True):
            prod *= s
            if k < s:
                raise ValueError(f"{owner}.decoder_kernels: kernel {k} < stride {s}")
        if prod != self.patch_len:
            raise ValueError(f"{owner}.decoder_strides must multiply to patch_len={self.patch_len}")


@register_model("neurobert_pretrain", NeuroBERTPretrainConfig)
class NeuroBERTPretrain(BaselineModel):
    """Neuro-BERT masked-signal modelling (one masked view, raw-signal regression)."""

    config_class: ClassVar[type[BaselineConfig]] = NeuroBERTPretrainConfig
    config: NeuroBERTPretrainConfig

    def __init__(self, config: NeuroBERTPretrainConfig | None = None) -> None:
        super().__init__(config or NeuroBERTPretrainConfig())
        cfg = self.config
        self.backbone = NeuroBERTBackbone(cfg)
        self.mask_embedding = nn.Parameter(torch.zeros(cfg.d_model))
        trunc_normal_(self.mask_embedding)
        self.recon_head = ReconstructionHead(
            cfg.d_model,
            list(cfg.decoder_filters),
            list(cfg.decoder_kernels),
            list(cfg.decoder_strides),
            cfg.n_channels,
        )

    def forward(
        self,
        x: torch.Tensor,
        subject: torch.Tensor | int | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mask tokens of ``x (batch, n_channels, n_times)`` and reconstruct the signal.

        Parameters
        ----------
        mask : torch.Tensor, optional
            bool ``(batch, n_tokens)``, True = masked. Default: random, ``mask_ratio``.

        Returns
        -------
        dict of torch.Tensor
            ``loss`` (MSE), ``reconstruction`` ``(batch, n_channels, n_resampled)``, ``mask``,
            ``features`` (encoder output).
        """
        cfg = self.config
        signal = self.prepare(x, subject)  # (B, C, T')
        batch = signal.shape[0]
        if mask is None:
            mask = random_token_mask(batch, cfg.n_tokens, cfg.mask_ratio, signal.device)
        elif mask.shape != (batch, cfg.n_tokens) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape ({batch}, {cfg.n_tokens})")
        tokens = self.backbone.tokenizer(signal)
        tokens = torch.where(mask[:, :, None], self.mask_embedding.to(tokens.dtype), tokens)
        features = self.backbone.encoder(tokens)
        recon = self.recon_head(features)  # (B, C, n_tokens * patch_len)
        target = signal[:, :, : recon.shape[-1]]
        err = (recon - target).pow(2)
        if cfg.loss_on_masked_only:
            weight = mask.repeat_interleave(cfg.patch_len, dim=1)[:, None, :].to(err.dtype)
            loss = (err * weight).sum() / (weight.sum() * err.shape[1]).clamp(min=1.0)
        else:
            loss = F.mse_loss(recon, target)
        return {"loss": loss, "reconstruction": recon, "mask": mask, "features": features}

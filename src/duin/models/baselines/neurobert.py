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

from duin.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    BaselineModel,
    ConvTransformer,
    StridedConvTokenizer,
    check_mask,
    learned_embedding,
    masked_mean,
    random_token_mask,
    replace_masked,
)
from duin.models.layers import ReconstructionHead
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
        self.check_positive_ints("patch_len", "d_model", "n_blocks", "n_heads", "d_head", "d_ff")
        self.check_probabilities("attn_dropout", "ff_dropout")
        if self.d_model % 2:
            raise ValueError(f"{owner}.d_model must be even (sin/cos table)")
        if self.n_resampled % self.patch_len:
            raise ValueError(
                f"{owner}: {self.n_resampled} resampled samples are not a multiple of "
                f"patch_len={self.patch_len}"
            )


def neurobert_backbone(config: NeuroBERTConfig) -> ConvTransformer:
    """One conv token per ``patch_len`` samples (kernel = stride, no BatchNorm) + transformer."""
    p = config.patch_len
    tokenizer = StridedConvTokenizer(
        config.n_channels, [config.d_model], [p], [p], batch_norm=False
    )
    return ConvTransformer(tokenizer, config)


@register_model("neurobert", NeuroBERTConfig)
class NeuroBERT(BaselineClassifier):
    """Neuro-BERT word classifier: encoder -> flatten (30 x 128) -> MLP."""

    config_class: ClassVar[type[BaselineConfig]] = NeuroBERTConfig
    config: NeuroBERTConfig

    def __init__(self, config: NeuroBERTConfig | None = None) -> None:
        super().__init__(config)
        self.backbone = neurobert_backbone(self.config)
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
        self.check_probabilities("mask_ratio", open_interval=True)
        self.check_int_lists("decoder_filters", "decoder_kernels", "decoder_strides")
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
        super().__init__(config)
        cfg = self.config
        self.backbone = neurobert_backbone(cfg)
        self.mask_embedding = learned_embedding(cfg.d_model)
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
        check_mask(mask, (batch, cfg.n_tokens))
        tokens = replace_masked(self.backbone.tokenizer(signal), mask, self.mask_embedding)
        features = self.backbone.encoder(tokens)
        recon = self.recon_head(features)  # (B, C, n_tokens * patch_len)
        target = signal[:, :, : recon.shape[-1]]
        if cfg.loss_on_masked_only:
            masked_samples = mask.repeat_interleave(cfg.patch_len, dim=1)[:, None, :]  # (B, 1, T')
            loss = masked_mean((recon - target).pow(2), masked_samples)
        else:
            loss = F.mse_loss(recon, target)
        return {"loss": loss, "reconstruction": recon, "mask": mask, "features": features}

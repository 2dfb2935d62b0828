"""LaBraM baseline: channel-patch tokens, a Fourier-spectrum VQ tokenizer, masked code modelling.

Jiang, Zhao, Lu. "Large Brain Model for Learning Generic Representations with Tremendous EEG
Data in BCI". ICLR 2024.

Channel level: every channel is cut into 1-s patches (200 samples at 200 Hz: 10 channels x 3 s
-> 30 tokens), each embedded by a temporal conv stack (filters 8/8/8, kernels 15/3/3, strides
8/1/1, GroupNorm + GELU -> 8 x 25 = 200-d), plus a learned channel embedding (one row per input
channel) and a learned patch-time embedding. LaBraM-Base transformer: 12 blocks, 10 heads x 20,
FFN 800, over all channel x time tokens together. Classifier (the Du-IN paper's): flatten
(30 x 200) -> MLP(128) -> classes.

Pretraining has two stages (like Du-IN):

1. ``labram_tokenizer``: an encoder of the same structure, the shared normalised EMA vector
   quantizer (codex 8192 x 64), a 3-block decoder and two Linear heads predicting the Fourier
   amplitude and phase of every patch (each z-scored per patch); loss = MSE(amplitude) +
   MSE(phase) + the quantizer's commitment loss.
2. ``labram_pretrain``: masked code prediction with symmetric masking: 50% of the tokens are
   replaced by a mask embedding in one view and the complement in the other; a Linear head
   predicts the frozen tokenizer's code of each token from the view in which it was hidden
   (cross-entropy over all tokens). Attach the tokenizer with :meth:`set_target_tokenizer`
   or pass ``targets``.

Differences from the original: LaBraM uses a pre-norm block with layer scale, a class token,
mean pooling and a 10-20 electrode embedding; here the shared Du-IN blocks (post-norm,
QK-LayerNorm, ReLU), a learned per-input-channel embedding (sEEG has no standard montage) and
the Du-IN paper's flatten head. The Du-IN paper's code description lists 8 blocks; App. B says
LaBraM-Base "at original settings" (12 blocks), which also matches Table 2's 6.85M better.
LaBraM-PopT (channel positions from 3-D coordinates instead of the per-channel table) is
:mod:`duin.models.baselines.labram_popt`.
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
    ChannelPatchConfig,
    ChannelPatchEmbedding,
    check_mask,
    learned_embedding,
    random_token_mask,
    replace_masked,
    to_patches,
    transformer_stack,
    zscore,
)
from duin.models.config import QuantizerConfig
from duin.models.layers import trunc_normal_
from duin.models.quantizer import NormEMAVectorQuantizer
from duin.models.registry import register_model

__all__ = [
    "LaBraM",
    "LaBraMConfig",
    "LaBraMPretrain",
    "LaBraMPretrainConfig",
    "LaBraMTokenizer",
    "LaBraMTokenizerConfig",
]

# CPU variant: LaBraM-Base tokens (200-d) with 4 blocks; codex 1024 x 32.
_QUICK_ENCODER: dict[str, Any] = {"n_blocks": 4}
_QUICK_CODES = 1024


@dataclass
class LaBraMConfig(ChannelPatchConfig):
    """LaBraM encoder and classifier (defaults: LaBraM-Base as used by the Du-IN paper).

    The patch fields are :class:`ChannelPatchConfig`'s (1-s patches; conv embedding 8/8/8,
    15/3/3, 8/1/1; 4 GroupNorm groups; a 16-row learned time embedding).

    Parameters
    ----------
    n_blocks, n_heads, d_head, d_ff : int
        Transformer: 12 blocks, 10 heads x 20, FFN 800.
    attn_dropout, ff_dropout : float
        Transformer dropouts (0.0, 0.0 as LaBraM).
    """

    QUICK: ClassVar[dict[str, Any]] = dict(_QUICK_ENCODER)

    n_blocks: int = 12
    n_heads: int = 10
    d_head: int = 20
    d_ff: int = 800
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0

    @property
    def n_tokens(self) -> int:
        """Tokens per window (channels x patches, channel-major)."""
        return self.n_channels * self.n_patches

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        self.check_positive_ints("n_blocks", "n_heads", "d_head", "d_ff")
        self.check_probabilities("attn_dropout", "ff_dropout")


class LaBraMBackbone(nn.Module):
    """Patch conv embedding + channel/time embeddings + transformer over all tokens."""

    def __init__(self, config: LaBraMConfig) -> None:
        super().__init__()
        self.patch_len = config.patch_len
        self.patch_embed = ChannelPatchEmbedding(config)
        d = config.d_model
        self.channel_embedding = learned_embedding(config.n_channels, d)
        self.time_embedding = learned_embedding(config.max_patches, d)
        self.encoder = transformer_stack(config, config.n_blocks, d)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> patch embeddings ``(B, C, N, d_model)`` (no position terms)."""
        return self.patch_embed(to_patches(x, self.patch_len))

    def channel_term(self) -> torch.Tensor:
        """What identifies each channel, added to its tokens: ``(n_channels, d_model)``."""
        return self.channel_embedding

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Add channel/time embeddings to ``(B, C, N, D)`` and run the transformer; same shape."""
        batch, n_channels, n_patches, d = tokens.shape
        h = tokens + self.channel_term()[:, None] + self.time_embedding[None, :n_patches]
        h = self.encoder(h.reshape(batch, n_channels * n_patches, d))
        return h.reshape(batch, n_channels, n_patches, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, n_patches, d_model)``."""
        return self.encode(self.tokenize(x))


@register_model("labram", LaBraMConfig)
class LaBraM(BaselineClassifier):
    """LaBraM word classifier: flatten (channels x patches x 200) -> MLP."""

    config_class: ClassVar[type[BaselineConfig]] = LaBraMConfig
    config: LaBraMConfig

    def __init__(self, config: LaBraMConfig | None = None) -> None:
        super().__init__(config)
        self.backbone = LaBraMBackbone(self.config)
        self.build_head(self.config.n_tokens * self.config.d_model)


# ---------------------------------------------------------------------------- stage 1
@dataclass
class LaBraMTokenizerConfig(LaBraMConfig):
    """LaBraM neural tokenizer (VQ of Fourier amplitude and phase; 4-s crops by default).

    Parameters
    ----------
    quantizer : QuantizerConfig
        The codex (8192 x 64, the shared normalised EMA quantizer).
    n_decoder_blocks : int
        Decoder transformer blocks (3).
    """

    _nested: ClassVar[dict[str, type]] = {"quantizer": QuantizerConfig}
    QUICK: ClassVar[dict[str, Any]] = {
        **_QUICK_ENCODER,
        "n_decoder_blocks": 1,
        "quantizer": {"n_codes": _QUICK_CODES, "d_code": 32},
    }

    n_times: int = 4000
    quantizer: QuantizerConfig = field(
        default_factory=lambda: QuantizerConfig(n_codes=8192, d_code=64)
    )
    n_decoder_blocks: int = 3

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        if not isinstance(self.quantizer, QuantizerConfig):
            raise ValueError(f"{type(self).__name__}.quantizer must be a QuantizerConfig")
        self.quantizer.validate()
        self.check_positive_ints("n_decoder_blocks")


@register_model("labram_tokenizer", LaBraMTokenizerConfig)
class LaBraMTokenizer(BaselineModel):
    """LaBraM stage 1: encoder -> codex -> decoder -> Fourier amplitude and phase of each patch."""

    config_class: ClassVar[type[BaselineConfig]] = LaBraMTokenizerConfig
    config: LaBraMTokenizerConfig

    def __init__(self, config: LaBraMTokenizerConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        d = cfg.d_model
        self.backbone = LaBraMBackbone(cfg)
        self.quantizer = NormEMAVectorQuantizer(d, cfg.quantizer)
        self.decoder = transformer_stack(cfg, cfg.n_decoder_blocks, d)
        n_bins = cfg.patch_len // 2 + 1
        self.amplitude_head = nn.Linear(d, n_bins)
        self.phase_head = nn.Linear(d, n_bins)

    def forward(
        self, x: torch.Tensor, subject: torch.Tensor | int | None = None
    ) -> dict[str, torch.Tensor]:
        """Quantise the tokens of ``x (batch, n_channels, n_times)`` and predict their spectra.

        Returns
        -------
        dict of torch.Tensor
            ``loss`` = ``loss_amplitude + loss_phase + loss_vq``, its parts, ``codes`` int64
            ``(batch, n_channels * n_patches)``, ``features`` (encoder output
            ``(batch, n_channels, n_patches, d_model)``).
        """
        signal = self.prepare(x, subject)
        patches = to_patches(signal, self.config.patch_len)  # (B, C, N, P)
        batch, n_channels, n_patches, d = (*patches.shape[:3], self.config.d_model)
        features = self.backbone(signal)
        vq = self.quantizer(features.reshape(batch, n_channels * n_patches, d))
        h = self.decoder(vq["out"])  # (B, C*N, D)
        spectrum = torch.fft.rfft(patches, dim=-1).reshape(batch, n_channels * n_patches, -1)
        loss_amp = F.mse_loss(self.amplitude_head(h), zscore(spectrum.abs()))
        loss_phase = F.mse_loss(self.phase_head(h), zscore(torch.angle(spectrum)))
        loss = loss_amp + loss_phase + vq["loss"]
        return {
            "loss": loss,
            "loss_amplitude": loss_amp,
            "loss_phase": loss_phase,
            "loss_vq": vq["loss"],
            "codes": vq["codes"],
            "features": features,
        }

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Code of every token, int64 ``(batch, n_channels * n_patches)``; never updates the codex."""
        return self._tokenize_resampled(self.prepare(x, subject))

    @torch.no_grad()
    def _tokenize_resampled(self, signal: torch.Tensor) -> torch.Tensor:
        features = self.backbone(signal)
        _, z = self.quantizer.project(features.flatten(1, 2))
        return self.quantizer.nearest(z)


# ---------------------------------------------------------------------------- stage 2
@dataclass
class LaBraMPretrainConfig(LaBraMConfig):
    """LaBraM masked code modelling (4-s crops by default).

    Parameters
    ----------
    n_codes : int
        Codex size of the target tokenizer (8192).
    mask_ratio : float
        Fraction of tokens hidden in the first view (0.5; the second view hides the rest).
    """

    QUICK: ClassVar[dict[str, Any]] = {**_QUICK_ENCODER, "n_codes": _QUICK_CODES}

    n_times: int = 4000
    n_codes: int = 8192
    mask_ratio: float = 0.5

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        self.check_positive_ints("n_codes")
        self.check_probabilities("mask_ratio", open_interval=True)
        if self.n_tokens < 2:
            raise ValueError(f"{type(self).__name__}: masking needs at least 2 tokens per window")


@register_model("labram_pretrain", LaBraMPretrainConfig)
class LaBraMPretrain(BaselineModel):
    """LaBraM stage 2: symmetric masked code prediction against a frozen tokenizer."""

    config_class: ClassVar[type[BaselineConfig]] = LaBraMPretrainConfig
    config: LaBraMPretrainConfig

    def __init__(
        self, config: LaBraMPretrainConfig | None = None, tokenizer: LaBraMTokenizer | None = None
    ) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = LaBraMBackbone(cfg)
        self.mask_embedding = learned_embedding(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_codes)
        trunc_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Outside the module tree: not trained, not saved, not switched to train mode.
        self._target: list[LaBraMTokenizer] = []
        if tokenizer is not None:
            self.set_target_tokenizer(tokenizer)

    def set_target_tokenizer(self, tokenizer: LaBraMTokenizer) -> None:
        """Attach a trained :class:`LaBraMTokenizer` as the frozen target (eval, no gradients).

        Raises
        ------
        ValueError
            If its codex size, channels, patch length or sampling differ from this model's.
        """
        if not isinstance(tokenizer, LaBraMTokenizer):
            raise ValueError(
                f"the target tokenizer must be a LaBraMTokenizer, got {type(tokenizer)}"
            )
        mine, theirs = self.config, tokenizer.config
        for name, a, b in (
            ("n_codes", mine.n_codes, theirs.quantizer.n_codes),
            ("n_channels", mine.n_channels, theirs.n_channels),
            ("patch_len", mine.patch_len, theirs.patch_len),
            ("sfreq", mine.sfreq, theirs.sfreq),
        ):
            if a != b:
                raise ValueError(
                    f"target tokenizer mismatch: {name}={a} here, {b} in the tokenizer"
                )
        tokenizer.eval()
        for p in tokenizer.parameters():
            p.requires_grad_(False)
        tokenizer.quantizer.freeze()
        self._target = [tokenizer]

    def _apply(self, fn: Any, recurse: bool = True) -> LaBraMPretrain:  # type: ignore[override]
        super()._apply(fn, recurse)
        if self._target:
            self._target[0]._apply(fn)
        return self

    def forward(
        self,
        x: torch.Tensor,
        subject: torch.Tensor | int | None = None,
        mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict the codes of both complementary views of ``x (batch, n_channels, n_times)``.

        Parameters
        ----------
        mask : torch.Tensor, optional
            bool ``(batch, n_tokens)``, True = hidden in view 0 (channel-major tokens).
        targets : torch.Tensor, optional
            int64 ``(batch, n_tokens)`` codes; default: from the attached tokenizer.

        Returns
        -------
        dict of torch.Tensor
            ``loss`` (cross-entropy over all tokens), ``logits`` ``(batch, n_tokens, n_codes)``,
            ``targets``, ``mask``, ``accuracy``, ``features``.
        """
        cfg = self.config
        signal = self.prepare(x, subject)
        batch, n_tokens = signal.shape[0], cfg.n_tokens
        if mask is None:
            mask = random_token_mask(batch, n_tokens, cfg.mask_ratio, signal.device)
        check_mask(mask, (batch, n_tokens))
        if targets is None:
            if not self._target:
                raise ValueError(
                    "LaBraMPretrain needs targets: pass targets= or attach a LaBraMTokenizer "
                    "with set_target_tokenizer()"
                )
            targets = self._target[0]._tokenize_resampled(signal)
        elif targets.shape != (batch, n_tokens) or targets.dtype != torch.int64:
            raise ValueError(f"targets must be int64 of shape ({batch}, {n_tokens})")
        tokens = self.backbone.tokenize(signal)  # (B, C, N, D)
        hidden = mask.reshape(tokens.shape[:3])  # (B, C, N): view 0 hides these, view 1 the rest
        views = torch.cat(
            [
                replace_masked(tokens, hidden, self.mask_embedding),
                replace_masked(tokens, ~hidden, self.mask_embedding),
            ]
        )
        enc = self.backbone.encode(views)  # (2B, C, N, D)
        features = torch.where(hidden[..., None], enc[:batch], enc[batch:])
        features = features.reshape(batch, n_tokens, -1)
        logits = self.head(features)
        loss = F.cross_entropy(logits.reshape(-1, cfg.n_codes), targets.reshape(-1))
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return {
            "loss": loss,
            "logits": logits,
            "targets": targets,
            "mask": mask,
            "accuracy": accuracy,
            "features": features,
        }

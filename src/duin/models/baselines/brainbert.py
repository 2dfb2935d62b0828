"""BrainBERT baseline: per-channel spectrogram transformer with masked-spectrogram pretraining.

Wang, Subramaniam, Yaari, Kreiman, Katz, Cases, Barbu. "BrainBERT: Self-supervised
representation learning for intracranial recordings". ICLR 2023.

Channel level: every channel is encoded on its own. At 1000 Hz (no resampling), each channel's
STFT magnitude (Hann window ``n_fft`` = 200 samples, hop 19: 40 bins of 5 Hz up to 195 Hz,
158 frames for 3 s) is log-compressed and z-scored per frequency over time; each frame is a
token, linearly embedded to 768-d, plus a fixed sin/cos time table, through 6 transformer
blocks (12 heads x 64, FFN 3072). Classifier (the Du-IN paper's): per channel, the mean of the
tokens within +-5 of the centre frame; the channels' vectors are concatenated (10 x 768) ->
MLP(128) -> classes; gradients into the encoder are scaled by 0.1 (``encoder_grad_scale``).

Pretraining (``brainbert_pretrain``): random time spans (``time_mask_ratio`` of the frames in
spans of ``time_mask_span``) and one random frequency band per channel (up to
``freq_mask_max`` bins) of the spectrogram are zeroed; a Linear head reconstructs the
spectrogram and the loss is the L1 error on the masked entries.

Differences from the original: the original STFT works at 2048 Hz (its data) and adds a
"content-aware" loss term; blocks here are the shared Du-IN blocks (post-norm, QK-LayerNorm,
ReLU FFN) instead of BERT's GELU blocks. The Du-IN paper's App. B lists STFT
nperseg/noverlap 1600/1400, which at 1000 Hz would give only 8 frames for 3 s, inconsistent
with the ~160 frames x 40 bins its code uses; the defaults here follow the latter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from duin.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    BaselineModel,
    TokenEncoder,
    check_mask,
    masked_mean,
    scale_gradient,
    zscore,
)
from duin.models.registry import register_model

__all__ = ["BrainBERT", "BrainBERTConfig", "BrainBERTPretrain", "BrainBERTPretrainConfig"]


@dataclass
class BrainBERTConfig(BaselineConfig):
    """BrainBERT encoder and classifier (defaults: the Du-IN paper's settings).

    Parameters
    ----------
    n_fft, hop_length : int
        STFT window and hop in samples at 1000 Hz (200, 19).
    n_freq : int
        Frequency bins kept, from 0 Hz (40).
    d_model, n_blocks, n_heads, d_head, d_ff : int
        Transformer: width 768, 6 blocks, 12 heads x 64, FFN 3072.
    attn_dropout, ff_dropout : float
        Transformer dropouts (0.1, 0.1 as BERT).
    pool_half_width : int
        Classifier: mean over frames ``centre +- pool_half_width`` (5).
    encoder_grad_scale : float
        Classifier: gradient scale into the encoder (0.1).
    """

    # CPU variant: width 128, 2 blocks (about 0.6M parameters instead of 43.6M).
    QUICK: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_blocks": 2,
        "n_heads": 4,
        "d_head": 32,
        "d_ff": 256,
    }

    n_fft: int = 200
    hop_length: int = 19
    n_freq: int = 40
    d_model: int = 768
    n_blocks: int = 6
    n_heads: int = 12
    d_head: int = 64
    d_ff: int = 3072
    attn_dropout: float = 0.1
    ff_dropout: float = 0.1
    pool_half_width: int = 5
    encoder_grad_scale: float = 0.1

    @property
    def n_frames(self) -> int:
        """STFT frames (tokens) per channel (centred frames: ``1 + n_times // hop``)."""
        return 1 + self.n_resampled // self.hop_length

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_positive_ints("n_fft", "hop_length", "n_freq", "d_model", "n_blocks")
        self.check_positive_ints("n_heads", "d_head", "d_ff")
        self.check_probabilities("attn_dropout", "ff_dropout")
        if self.n_freq > self.n_fft // 2 + 1:
            raise ValueError(f"{owner}.n_freq must be <= n_fft // 2 + 1 = {self.n_fft // 2 + 1}")
        if self.n_fft > self.n_resampled:
            raise ValueError(f"{owner}.n_fft ({self.n_fft}) exceeds the window length")
        if self.d_model % 2:
            raise ValueError(f"{owner}.d_model must be even (sin/cos table)")
        if not isinstance(self.pool_half_width, int) or self.pool_half_width < 0:
            raise ValueError(f"{owner}.pool_half_width must be an integer >= 0")
        if not 0.0 <= self.encoder_grad_scale <= 1.0:
            raise ValueError(f"{owner}.encoder_grad_scale must be in [0, 1]")


class Spectrogram(nn.Module):
    """Log-magnitude STFT, z-scored per frequency over time: ``(B, C, T) -> (B, C, L, F)``."""

    def __init__(self, n_fft: int, hop_length: int, n_freq: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.n_freq = n_fft, hop_length, n_freq
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spectrogram tokens ``(batch, n_channels, n_frames, n_freq)``."""
        batch, n_channels, n_times = x.shape
        spec = torch.stft(
            x.reshape(batch * n_channels, n_times),
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            return_complex=True,
        )  # (B*C, n_fft//2+1, L)
        z = zscore(torch.log(spec[:, : self.n_freq].abs() + 1e-6))  # over frames
        return z.transpose(1, 2).reshape(batch, n_channels, -1, self.n_freq)


class BrainBERTBackbone(nn.Module):
    """Spectrogram -> Linear embedding -> time table -> transformer, per channel."""

    def __init__(self, config: BrainBERTConfig) -> None:
        super().__init__()
        self.spectrogram = Spectrogram(config.n_fft, config.hop_length, config.n_freq)
        self.embed = nn.Linear(config.n_freq, config.d_model)
        self.encoder = TokenEncoder(config.n_frames, config)

    def encode(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, C, L, F)`` spectrogram -> ``(B, C, L, d_model)``."""
        batch, n_channels, n_frames, n_freq = spec.shape
        tokens = self.embed(spec.reshape(batch * n_channels, n_frames, n_freq))
        return self.encoder(tokens).reshape(batch, n_channels, n_frames, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, n_frames, d_model)``."""
        return self.encode(self.spectrogram(x))


@register_model("brainbert", BrainBERTConfig)
class BrainBERT(BaselineClassifier):
    """BrainBERT word classifier (channel-level tokens, centre-window pooling)."""

    config_class: ClassVar[type[BaselineConfig]] = BrainBERTConfig
    config: BrainBERTConfig

    def __init__(self, config: BrainBERTConfig | None = None) -> None:
        super().__init__(config)
        self.backbone = BrainBERTBackbone(self.config)
        self.build_head(self.config.n_channels * self.config.d_model)

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel centre-window means ``(batch, n_channels, d_model)``."""
        cfg = self.config
        h = self.backbone(x)  # (B, C, L, D)
        centre = cfg.n_frames // 2
        lo = max(0, centre - cfg.pool_half_width)
        hi = min(cfg.n_frames, centre + cfg.pool_half_width + 1)
        return scale_gradient(h[:, :, lo:hi].mean(dim=2), cfg.encoder_grad_scale)


@dataclass
class BrainBERTPretrainConfig(BrainBERTConfig):
    """BrainBERT masked-spectrogram pretraining (4-s crops by default).

    Parameters
    ----------
    time_mask_ratio : float
        Fraction of frames masked, in contiguous spans (0.15).
    time_mask_span : int
        Frames per span (5).
    freq_mask_max : int
        Width of the random frequency band masked per channel, drawn in ``[0, freq_mask_max]``
        (8).
    """

    n_times: int = 4000
    time_mask_ratio: float = 0.15
    time_mask_span: int = 5
    freq_mask_max: int = 8

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_probabilities("time_mask_ratio", open_interval=True)
        self.check_positive_ints("time_mask_span")
        if not isinstance(self.freq_mask_max, int) or not 0 <= self.freq_mask_max < self.n_freq:
            raise ValueError(f"{owner}.freq_mask_max must be an integer in [0, n_freq)")


@register_model("brainbert_pretrain", BrainBERTPretrainConfig)
class BrainBERTPretrain(BaselineModel):
    """BrainBERT masked-spectrogram reconstruction (L1 on the masked entries)."""

    config_class: ClassVar[type[BaselineConfig]] = BrainBERTPretrainConfig
    config: BrainBERTPretrainConfig

    def __init__(self, config: BrainBERTPretrainConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = BrainBERTBackbone(cfg)
        self.recon_head = nn.Linear(cfg.d_model, cfg.n_freq)

    def random_mask(self, batch: int, n_channels: int, device: torch.device) -> torch.Tensor:
        """Bool mask ``(batch, n_channels, n_frames, n_freq)``, True = masked (global RNG)."""
        cfg = self.config
        n_frames, n_freq = cfg.n_frames, cfg.n_freq
        m = batch * n_channels
        span = min(cfg.time_mask_span, n_frames)
        n_spans = max(1, round(cfg.time_mask_ratio * n_frames / span))
        starts = torch.randint(0, n_frames - span + 1, (m, n_spans), device=device)
        frames = torch.arange(n_frames, device=device)
        time_mask = (
            (frames[None, None] >= starts[..., None])
            & (frames[None, None] < starts[..., None] + span)
        ).any(1)
        widths = torch.randint(0, cfg.freq_mask_max + 1, (m, 1), device=device)
        lows = (torch.rand(m, 1, device=device) * (n_freq - widths + 1)).long()
        bins = torch.arange(n_freq, device=device)
        freq_mask = (bins[None] >= lows) & (bins[None] < lows + widths)  # (m, F)
        mask = time_mask[:, :, None] | freq_mask[:, None, :]
        return mask.reshape(batch, n_channels, n_frames, n_freq)

    def forward(
        self,
        x: torch.Tensor,
        subject: torch.Tensor | int | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mask the spectrogram of ``x (batch, n_channels, n_times)`` and reconstruct it.

        Parameters
        ----------
        mask : torch.Tensor, optional
            bool ``(batch, n_channels, n_frames, n_freq)``, True = masked.

        Returns
        -------
        dict of torch.Tensor
            ``loss`` (L1 on masked entries), ``reconstruction`` and ``target`` spectrograms,
            ``mask``, ``features`` ``(batch, n_channels, n_frames, d_model)``.
        """
        cfg = self.config
        signal = self.prepare(x, subject)
        spec = self.backbone.spectrogram(signal)  # (B, C, L, F)
        shape = (signal.shape[0], cfg.n_channels, cfg.n_frames, cfg.n_freq)
        if mask is None:
            mask = self.random_mask(signal.shape[0], cfg.n_channels, signal.device)
        check_mask(mask, shape)
        features = self.backbone.encode(spec.masked_fill(mask, 0.0))
        recon = self.recon_head(features)
        loss = masked_mean((recon - spec).abs(), mask)
        return {
            "loss": loss,
            "reconstruction": recon,
            "target": spec,
            "mask": mask,
            "features": features,
        }

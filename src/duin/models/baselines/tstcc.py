"""TS-TCC baseline: conv encoder + temporal and contextual contrasting.

Eldele, Ragab, Chen, Wu, Kwoh, Li, Guan. "Time-Series Representation Learning via Temporal and
Contextual Contrasting". IJCAI 2021.

Region level: the first conv mixes all channels. Input resampled to 400 Hz (3 s -> 1200
samples). Encoder: three blocks Conv1d -> BatchNorm -> ReLU -> MaxPool (-> Dropout on the
first), 32/64/128 filters, kernels 25/8/8, pools 10/2/2 (the Du-IN paper's App. B settings;
the original sets the first kernel per dataset and pools by 2). 3 s gives 30 tokens of 128-d; the
classifier is a linear head on the flattened 3840-d features (as the paper's TS-TCC).

Pretraining (``tstcc_pretrain``): a weak view (random scaling) and a strong view (segment
permutation + jitter) of the input. *Temporal contrasting*: an autoregressive summary ``c_t`` of
the first ``t + 1`` tokens of one view (a class token read out of a small transformer) predicts
the next ``n_future`` tokens of the other view with one Linear per step, scored by InfoNCE
against the other samples of the batch (both directions). *Contextual contrasting*: NT-Xent
between projected contexts of the two views (temperature 0.2). Loss
``= tc_weight * (L_tc_weak + L_tc_strong) + cc_weight * L_cc`` (1, 0.7).

Differences from the original: the context transformer is the shared Du-IN block (post-norm,
QK-LayerNorm, ReLU FFN) rather than the original pre-norm GELU block; InfoNCE is averaged over
samples and steps; the predicted horizon and the augmentation strengths are config values
(``n_future``, ``scale_*``, ``jitter_sigma``, ``max_segments``), not tuned for sEEG.
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
    conv_out_len,
    learned_embedding,
)
from duin.models.layers import TransformerStack
from duin.models.registry import register_model

__all__ = ["TSTCC", "TSTCCConfig", "TSTCCPretrain", "TSTCCPretrainConfig"]


@dataclass
class TSTCCConfig(BaselineConfig):
    """TS-TCC encoder and classifier (defaults: the Du-IN paper's settings).

    Parameters
    ----------
    filters, kernels, pools : list of int
        The three conv blocks (32/64/128, 25/8/8, 10/2/2).
    dropout : float
        Dropout after the first block (0.35).
    """

    target_sfreq: ClassVar[float] = 400.0
    QUICK: ClassVar[dict[str, Any]] = {}  # the paper's size (0.32M) already suits a CPU

    head_hidden: list[int] = field(default_factory=list)
    filters: list[int] = field(default_factory=lambda: [32, 64, 128])
    kernels: list[int] = field(default_factory=lambda: [25, 8, 8])
    pools: list[int] = field(default_factory=lambda: [10, 2, 2])
    dropout: float = 0.35

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_int_lists("filters", "kernels", "pools", length=3)
        self.check_probabilities("dropout")
        if self.n_tokens < 1:
            raise ValueError(f"{owner}: n_times={self.n_times} is too short for the conv encoder")

    @property
    def n_tokens(self) -> int:
        """Time steps after the encoder (30 for 3 s)."""
        n = self.n_resampled
        for k, p in zip(self.kernels, self.pools, strict=True):
            n = conv_out_len(n, k, 1, k // 2)
            n = n // p
        return n


class TSTCCEncoder(nn.Module):
    """Three Conv1d -> BN -> ReLU -> MaxPool blocks: ``(B, C, T) -> (B, n_tokens, filters[-1])``."""

    def __init__(self, config: TSTCCConfig) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        d_in = config.n_channels
        for i, (f, k, p) in enumerate(
            zip(config.filters, config.kernels, config.pools, strict=True)
        ):
            layers: list[nn.Module] = [
                nn.Conv1d(d_in, f, k, stride=1, padding=k // 2, bias=False),
                nn.BatchNorm1d(f),
                nn.ReLU(),
                nn.MaxPool1d(p, p),
            ]
            if i == 0:
                layers.append(nn.Dropout(config.dropout))
            blocks.append(nn.Sequential(*layers))
            d_in = f
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(batch, n_tokens, filters[-1])``."""
        return self.blocks(x).transpose(1, 2)


@register_model("tstcc", TSTCCConfig)
class TSTCC(BaselineClassifier):
    """TS-TCC classifier: conv encoder -> flatten (30 x 128) -> linear head."""

    config_class: ClassVar[type[BaselineConfig]] = TSTCCConfig
    config: TSTCCConfig

    def __init__(self, config: TSTCCConfig | None = None) -> None:
        super().__init__(config)
        self.backbone = TSTCCEncoder(self.config)
        self.build_head(self.config.n_tokens * self.config.filters[-1])


@dataclass
class TSTCCPretrainConfig(TSTCCConfig):
    """TS-TCC contrastive pretraining (4-s crops by default).

    Parameters
    ----------
    n_future : int
        Future tokens predicted by temporal contrasting (6).
    d_context : int
        Width of the context transformer (100, as the original).
    context_blocks, context_heads, context_d_ff : int
        Context transformer: 4 blocks, 4 heads, FFN 64.
    d_project : int
        Output width of the contextual projection head (32; hidden = d_context // 2).
    temperature : float
        NT-Xent temperature (0.2).
    scale_mean, scale_sigma : float
        Weak view: per-(sample, channel) scaling factor ~ N(scale_mean, scale_sigma) (2, 1.1).
    jitter_sigma : float
        Strong view: additive Gaussian noise std (0.8, on z-scored inputs).
    max_segments : int
        Strong view: split into 1..max_segments pieces and permute them (8).
    tc_weight, cc_weight : float
        Loss weights (1.0, 0.7).
    """

    QUICK: ClassVar[dict[str, Any]] = {"context_blocks": 2}

    n_times: int = 4000
    n_future: int = 6
    d_context: int = 100
    context_blocks: int = 4
    context_heads: int = 4
    context_d_ff: int = 64
    d_project: int = 32
    temperature: float = 0.2
    scale_mean: float = 2.0
    scale_sigma: float = 1.1
    jitter_sigma: float = 0.8
    max_segments: int = 8
    tc_weight: float = 1.0
    cc_weight: float = 0.7

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_positive_ints("n_future", "d_context", "context_blocks", "context_heads")
        self.check_positive_ints("context_d_ff", "d_project", "max_segments")
        if self.n_future >= self.n_tokens:
            raise ValueError(
                f"{owner}.n_future ({self.n_future}) must be < the token count ({self.n_tokens})"
            )
        if self.d_context % self.context_heads:
            raise ValueError(f"{owner}.d_context must be divisible by context_heads")
        if self.temperature <= 0:
            raise ValueError(f"{owner}.temperature must be > 0")


def _weak_view(x: torch.Tensor, mean: float, sigma: float) -> torch.Tensor:
    """Per-(sample, channel) scaling by N(mean, sigma) factors (``x (B, C, T)``)."""
    return x * (mean + sigma * torch.randn(x.shape[0], x.shape[1], 1, device=x.device))


def _strong_view(x: torch.Tensor, sigma: float, max_segments: int) -> torch.Tensor:
    """Random segment permutation then additive jitter (``x (B, C, T)``)."""
    batch, _, n_times = x.shape
    out = torch.empty_like(x)
    n_segments = torch.randint(1, max_segments + 1, (batch,))
    for b in range(batch):
        n = int(n_segments[b])
        if n > 1:
            cuts = torch.randperm(n_times - 1)[: n - 1].add_(1).sort().values.tolist()
            bounds = [0, *cuts, n_times]
            pieces = [x[b, :, bounds[i] : bounds[i + 1]] for i in range(n)]
            out[b] = torch.cat([pieces[i] for i in torch.randperm(n).tolist()], dim=-1)
        else:
            out[b] = x[b]
    return out + sigma * torch.randn_like(out)


@register_model("tstcc_pretrain", TSTCCPretrainConfig)
class TSTCCPretrain(BaselineModel):
    """TS-TCC self-supervised model: temporal + contextual contrasting of two augmented views."""

    config_class: ClassVar[type[BaselineConfig]] = TSTCCPretrainConfig
    config: TSTCCPretrainConfig

    def __init__(self, config: TSTCCPretrainConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        d_token = cfg.filters[-1]
        self.backbone = TSTCCEncoder(cfg)
        self.context_in = nn.Linear(d_token, cfg.d_context)
        self.context_token = learned_embedding(cfg.d_context)
        self.context = TransformerStack(
            cfg.context_blocks,
            cfg.d_context,
            cfg.context_heads,
            cfg.d_context // cfg.context_heads,
            cfg.context_d_ff,
            0.0,
            0.0,
        )
        self.predictors = nn.ModuleList(
            nn.Linear(cfg.d_context, d_token) for _ in range(cfg.n_future)
        )
        self.projection = nn.Sequential(
            nn.Linear(cfg.d_context, cfg.d_context // 2),
            nn.BatchNorm1d(cfg.d_context // 2),
            nn.ReLU(),
            nn.Linear(cfg.d_context // 2, cfg.d_project),
        )

    def _context(self, tokens: torch.Tensor) -> torch.Tensor:
        """Summary of ``tokens (B, t, d_token)`` read from a leading context token: ``(B, d_context)``."""
        h = self.context_in(tokens)
        lead = self.context_token.expand(h.shape[0], 1, -1)
        return self.context(torch.cat([lead, h], dim=1))[:, 0]  # type: ignore[index]

    def _temporal_loss(
        self, z_from: torch.Tensor, z_to: torch.Tensor, t: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of predicting ``z_to[:, t+1 : t+1+K]`` from the context of ``z_from[:, : t+1]``."""
        context = self._context(z_from[:, : t + 1])  # (B, d_context)
        losses = []
        for k, predictor in enumerate(self.predictors):
            target = z_to[:, t + 1 + k]  # (B, d_token)
            scores = target @ predictor(context).t()  # (B, B): row i = true sample i
            labels = torch.arange(scores.shape[0], device=scores.device)
            losses.append(F.cross_entropy(scores, labels))
        return torch.stack(losses).mean(), context

    def _nt_xent(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """NT-Xent between two batches of projections ``(B, d)`` (positives = same sample)."""
        z = F.normalize(torch.cat([a, b]), dim=-1)  # (2B, d)
        sim = z @ z.t() / self.config.temperature
        n = a.shape[0]
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(sim, target)

    def forward(
        self, x: torch.Tensor, subject: torch.Tensor | int | None = None
    ) -> dict[str, torch.Tensor]:
        """Contrastive losses on two random views of ``x (batch, n_channels, n_times)``.

        Returns
        -------
        dict of torch.Tensor
            ``loss``, ``loss_temporal``, ``loss_contextual``, ``features`` (weak-view tokens
            ``(batch, n_tokens, d_token)``).
        """
        cfg = self.config
        x = self.prepare(x, subject)
        if x.shape[0] < 2:
            raise ValueError("TSTCCPretrain needs a batch of at least 2 samples (contrastive)")
        z_weak = self.backbone(_weak_view(x, cfg.scale_mean, cfg.scale_sigma))
        z_strong = self.backbone(_strong_view(x, cfg.jitter_sigma, cfg.max_segments))
        t = int(torch.randint(0, cfg.n_tokens - cfg.n_future, (1,)))
        loss_w, ctx_w = self._temporal_loss(z_weak, z_strong, t)
        loss_s, ctx_s = self._temporal_loss(z_strong, z_weak, t)
        loss_tc = loss_w + loss_s
        loss_cc = self._nt_xent(self.projection(ctx_w), self.projection(ctx_s))
        loss = cfg.tc_weight * loss_tc + cfg.cc_weight * loss_cc
        return {
            "loss": loss,
            "loss_temporal": loss_tc,
            "loss_contextual": loss_cc,
            "features": z_weak,
        }

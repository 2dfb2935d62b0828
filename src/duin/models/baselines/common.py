"""Shared pieces of the baseline models: config bases, input checks, resampling, heads, masking
helpers, transfer, and the encoder blocks several baselines build on.

Conventions shared by every baseline (the Du-IN tensor contract):

- Input ``x`` float32 ``(batch, n_channels, n_times)`` at ``sfreq`` (1000 Hz) and ``subject``
  int64 ``(batch,)``. Each model resamples internally to its own rate with :class:`Resample`
  (FFT resampling, the same result as :func:`scipy.signal.resample`, which is what the paper's
  loaders apply). Baselines have no subject layer: all subjects share the weights, so
  ``subject`` is only validated (it must be in ``[0, n_subjects)``).
- Classifiers (``<name>``) return ``logits (batch, n_classes)``, ``features`` (what the head
  reads) and, when ``labels`` are given, ``loss`` (cross-entropy on the logits; the paper code's
  sigmoid-then-CE quirk is not reproduced for baselines).

How pretraining is exposed (one uniform way for every self-supervised baseline):

- Each self-supervised baseline has a **separate registered pretraining model**
  ``<name>_pretrain`` (TS-TCC, Neuro-BERT, BrainBERT, Brant, LaBraM). It is called exactly like
  a classifier, ``model(x=..., subject=...)``, and returns a dict with ``loss`` (plus its parts,
  e.g. ``loss_temporal``), so the generic trainer can run it unchanged. Pretraining configs
  default to 4-s crops (``n_times=4000``), as the paper pretrains baselines on 4-s samples.
- Classifier and pretraining model hold the shared encoder under the same attribute,
  ``backbone``; :func:`transfer_backbone` copies it (weights and BatchNorm statistics) from a
  pretrained model into a classifier, checking shapes. Backbones are built so that their state
  does not depend on ``n_times`` (fixed sinusoid tables are non-persistent buffers, learned
  position tables have a ``max_*`` size), so 4-s pretraining transfers to 3-s fine-tuning.
- LaBraM needs two pretraining stages, like Du-IN: ``labram_tokenizer`` (VQ of Fourier
  amplitude/phase) and ``labram_pretrain`` (masked code prediction, with the frozen tokenizer
  attached by ``set_target_tokenizer``, the same pattern as :class:`~duin.models.duin.DuINMAE`).

Quick (CPU) variants are config values, not classes: every config class has ``QUICK``, a dict of
overrides, and ``quick(**overrides)`` returning the reduced config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from duin.models.config import (
    _check_int_list,
    _check_positive_int,
    _check_probability,
    _ConfigBase,
)
from duin.models.layers import TransformerStack, sinusoid_table, trunc_normal_

__all__ = [
    "BaselineClassifier",
    "BaselineConfig",
    "BaselineModel",
    "ChannelPatchConfig",
    "ChannelPatchEmbedding",
    "ConvTransformer",
    "MLPHead",
    "Resample",
    "StridedConvTokenizer",
    "TokenEncoder",
    "check_mask",
    "conv_out_len",
    "fft_resample",
    "learned_embedding",
    "masked_mean",
    "random_token_mask",
    "replace_masked",
    "scale_gradient",
    "to_patches",
    "transfer_backbone",
    "transformer_stack",
    "zscore",
]

_C = TypeVar("_C", bound="BaselineConfig")


# ---------------------------------------------------------------------------- configs
@dataclass
class BaselineConfig(_ConfigBase):
    """Fields shared by every baseline: input geometry, subjects, classification head.

    Parameters
    ----------
    n_channels : int
        Input channels (10 selected channels in the paper).
    n_subjects : int
        Valid subject indices (weights are shared across subjects).
    n_times : int
        Samples per input window at ``sfreq`` (3000 = 3 s for classification).
    sfreq : float
        Input sampling rate in Hz (1000).
    n_classes : int
        Number of words (61). Ignored by pretraining models.
    head_hidden : list of int
        Hidden widths of the MLP head (``[128]`` as the paper's ``LabelCLSHead``; ``[]`` = linear).
    head_dropout : float
        Dropout before each head Linear (0).
    """

    QUICK: ClassVar[dict[str, Any]] = {}
    target_sfreq: ClassVar[float] = 1000.0

    n_channels: int = 10
    n_subjects: int = 1
    n_times: int = 3000
    sfreq: float = 1000.0
    n_classes: int = 61
    head_hidden: list[int] = field(default_factory=lambda: [128])
    head_dropout: float = 0.0

    @property
    def n_resampled(self) -> int:
        """Samples per window after resampling to the model's own rate."""
        return int(round(self.n_times * self.target_sfreq / self.sfreq))

    def check_positive_ints(self, *names: str) -> None:
        """Raise ValueError unless each named field is a positive integer."""
        for name in names:
            _check_positive_int(type(self).__name__, name, getattr(self, name))

    def check_probabilities(self, *names: str, open_interval: bool = False) -> None:
        """Raise ValueError unless each named field is in ``[0, 1)`` (``(0, 1)`` if open)."""
        for name in names:
            _check_probability(
                type(self).__name__, name, getattr(self, name), open_interval=open_interval
            )

    def check_int_lists(self, *names: str, length: int | None = None) -> None:
        """Raise ValueError unless the named fields are non-empty lists of positive integers of
        one common length (``length`` if given, else the first list's)."""
        for name in names:
            values = getattr(self, name)
            _check_int_list(type(self).__name__, name, values, length)
            length = len(values)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        owner = type(self).__name__
        self.check_positive_ints("n_channels", "n_subjects", "n_times", "n_classes")
        if (
            not isinstance(self.sfreq, int | float)
            or isinstance(self.sfreq, bool)
            or self.sfreq <= 0
        ):
            raise ValueError(f"{owner}.sfreq must be a positive number, got {self.sfreq!r}")
        exact = self.n_times * self.target_sfreq / self.sfreq
        if abs(exact - round(exact)) > 1e-6:
            raise ValueError(
                f"{owner}.n_times ({self.n_times}) at {self.sfreq} Hz does not resample to a whole "
                f"number of samples at the model's {self.target_sfreq} Hz"
            )
        if not isinstance(self.head_hidden, list | tuple):
            raise ValueError(f"{owner}.head_hidden must be a list of positive integers")
        for width in self.head_hidden:
            _check_positive_int(owner, "head_hidden[]", width)
        self.check_probabilities("head_dropout")

    @classmethod
    def quick(cls: type[_C], **overrides: Any) -> _C:
        """The size-reduced CPU variant: ``QUICK`` overrides (then ``overrides``) on the defaults.

        Returns
        -------
        BaselineConfig
            A validated config.
        """
        data = {**dataclasses.asdict(cls()), **cls.QUICK, **overrides}  # type: ignore[call-overload]
        return cls.from_dict(data)


@dataclass
class ChannelPatchConfig(BaselineConfig):
    """Fields of the channel-level patch models (Brant, LaBraM): 1-s patches of every channel,
    each embedded by a :class:`ChannelPatchEmbedding`, with a learned table of patch positions.

    Parameters
    ----------
    patch_len : int
        Samples per patch at the model's rate (200 = 1 s at 200 Hz).
    conv_filters, conv_kernels, conv_strides : list of int
        Patch conv embedding (LaBraM's 8/8/8, 15/3/3, 8/1/1).
    norm_groups : int
        GroupNorm groups of the patch embedding (4).
    max_patches : int
        Rows of the learned patch-position table (16).
    """

    target_sfreq: ClassVar[float] = 200.0

    patch_len: int = 200
    conv_filters: list[int] = field(default_factory=lambda: [8, 8, 8])
    conv_kernels: list[int] = field(default_factory=lambda: [15, 3, 3])
    conv_strides: list[int] = field(default_factory=lambda: [8, 1, 1])
    norm_groups: int = 4
    max_patches: int = 16

    @property
    def n_patches(self) -> int:
        """Patches per channel (3 for 3 s)."""
        return self.n_resampled // self.patch_len

    @property
    def d_model(self) -> int:
        """Token width: ``conv_filters[-1]`` x the patch length after the convs."""
        n = self.patch_len
        for k, s in zip(self.conv_kernels, self.conv_strides, strict=True):
            n = conv_out_len(n, k, s, k // 2)
        return self.conv_filters[-1] * n

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        owner = type(self).__name__
        self.check_positive_ints("patch_len", "norm_groups", "max_patches")
        self.check_int_lists("conv_filters", "conv_kernels", "conv_strides")
        if any(f % self.norm_groups for f in self.conv_filters):
            raise ValueError(f"{owner}.norm_groups must divide every conv filter count")
        if not 1 <= self.n_patches <= self.max_patches:
            raise ValueError(
                f"{owner}: {self.n_patches} patches per window (n_times={self.n_times}) must be "
                f"in 1..max_patches={self.max_patches}"
            )


# ---------------------------------------------------------------------------- resampling
def fft_resample(x: torch.Tensor, n_out: int) -> torch.Tensor:
    """Resample the last axis of real ``x`` to ``n_out`` samples by Fourier truncation/padding.

    Same result as :func:`scipy.signal.resample` (no window): the real spectrum is cut (or zero
    padded) to ``n_out // 2 + 1`` bins; an even-length Nyquist bin is doubled when it folds
    (down-sampling) or halved when it splits (up-sampling); the result is scaled by
    ``n_out / n_in``.

    Parameters
    ----------
    x : torch.Tensor
        ``(..., n_in)`` real signal.
    n_out : int
        Output length.

    Returns
    -------
    torch.Tensor
        ``(..., n_out)``, same dtype as ``x``.
    """
    n_in = x.shape[-1]
    if n_out == n_in:
        return x
    spectrum = torch.fft.rfft(x.double() if x.dtype == torch.float64 else x.float(), dim=-1)
    n_keep = min(n_in, n_out)
    out = spectrum.new_zeros(*spectrum.shape[:-1], n_out // 2 + 1)
    n_bins = n_keep // 2 + 1
    out[..., :n_bins] = spectrum[..., :n_bins]
    if n_keep % 2 == 0:
        # The Nyquist bin of the shorter length: both halves fold into it, or it splits in two.
        out[..., n_keep // 2] *= 2.0 if n_out < n_in else 0.5
    y = torch.fft.irfft(out, n=n_out, dim=-1) * (n_out / n_in)
    return y.to(x.dtype)


class Resample(nn.Module):
    """Parameter-free FFT resampling of ``(batch, n_channels, n_in)`` to ``n_out`` samples.

    Parameters
    ----------
    n_in, n_out : int
        Input and output lengths (e.g. 3000 at 1000 Hz -> 750 at 250 Hz).
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Resample the last axis."""
        return fft_resample(x, self.n_out)

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}"


# ---------------------------------------------------------------------------- small helpers
def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient flowing back into ``x`` by ``scale``."""
    if scale == 1.0:
        return x
    return x * scale + x.detach() * (1.0 - scale)


def random_token_mask(
    batch: int, n_tokens: int, ratio: float, device: torch.device
) -> torch.Tensor:
    """Per-sample random mask ``(batch, n_tokens)`` bool with ``max(1, round(ratio * n))`` True.

    Uses torch's global RNG (uniform noise, argsort).
    """
    n_mask = min(n_tokens - 1, max(1, int(round(ratio * n_tokens))))
    order = torch.rand(batch, n_tokens, device=device).argsort(dim=1)
    mask = torch.zeros(batch, n_tokens, dtype=torch.bool, device=device)
    return mask.scatter_(1, order[:, :n_mask], True)


def learned_embedding(*shape: int) -> nn.Parameter:
    """A learned table or vector of ``shape``, initialised trunc-normal (std 0.02)."""
    return nn.Parameter(trunc_normal_(torch.zeros(*shape)))


def check_mask(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Return ``mask`` if it is bool of ``shape``; else raise ValueError naming the shape."""
    if mask.shape != shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool of shape {shape}")
    return mask


def replace_masked(tokens: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``tokens (..., d)`` with the positions where ``mask (...)`` is True replaced by ``fill (d,)``."""
    return torch.where(mask[..., None], fill.to(tokens.dtype), tokens)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the True entries of ``mask`` (broadcast to its shape); 0 if none."""
    weight = mask.to(values.dtype).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def zscore(x: torch.Tensor) -> torch.Tensor:
    """Standardise over the last axis (std clamped at 1e-5)."""
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp(min=1e-5)


def conv_out_len(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a 1-D conv/pool."""
    return (n + 2 * padding - kernel) // stride + 1


def to_patches(x: torch.Tensor, patch_len: int) -> torch.Tensor:
    """``(batch, n_channels, n_times)`` -> ``(batch, n_channels, n_patches, patch_len)``."""
    batch, n_channels, n_times = x.shape
    n_patches = n_times // patch_len
    return x[:, :, : n_patches * patch_len].reshape(batch, n_channels, n_patches, patch_len)


class MLPHead(nn.Module):
    """Flatten -> [Dropout -> Linear -> ReLU] * len(hidden) -> Dropout -> Linear(n_classes).

    Parameters
    ----------
    d_in : int
        Flattened feature width.
    hidden : list of int
        Hidden widths (``[128]`` in the paper; ``[]`` = a linear head).
    n_classes : int
        Output classes.
    dropout : float
        Dropout before each Linear.
    """

    def __init__(self, d_in: int, hidden: list[int], n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = d_in
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU()]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, n_classes)]
        self.layers = nn.Sequential(*layers)
        for module in self.layers:
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features (batch, ...)`` -> logits ``(batch, n_classes)``."""
        return self.layers(features.flatten(1))


# ---------------------------------------------------------------------------- base classes
class BaselineModel(nn.Module):
    """Base of every baseline: holds the config, validates inputs, resamples.

    Subclasses set ``config_class`` and build ``self.backbone``.

    Parameters
    ----------
    config : BaselineConfig, optional
        Validated here; default: ``config_class()`` (the paper's settings).
    """

    registry_name: ClassVar[str] = ""
    config_class: ClassVar[type[BaselineConfig]] = BaselineConfig

    def __init__(self, config: BaselineConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else self.config_class()
        config.validate()
        self.config = config
        self.resample = Resample(config.n_times, config.n_resampled)

    def check_inputs(
        self, x: torch.Tensor, subject: torch.Tensor | int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``(x, subject)``; raise ValueError naming what was expected.

        Parameters
        ----------
        x : torch.Tensor
            float ``(batch, n_channels, n_times)``.
        subject : torch.Tensor, int or None
            int64 ``(batch,)``; an int applies to the whole batch; ``None`` means subject 0 and
            is allowed only for single-subject configs.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            ``x`` float32 and ``subject`` int64 ``(batch,)``.
        """
        cfg = self.config
        name = type(self).__name__
        expected = f"(batch, n_channels={cfg.n_channels}, n_times={cfg.n_times})"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: x must be a torch.Tensor {expected}, got {type(x).__name__}")
        if x.ndim != 3:
            raise ValueError(f"{name}: x must have 3 dimensions {expected}, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: x must be floating point, got dtype {x.dtype}")
        batch, n_channels, n_times = x.shape
        if n_channels != cfg.n_channels or n_times != cfg.n_times:
            raise ValueError(
                f"{name}: x has shape {tuple(x.shape)} but the model expects {expected} "
                f"({cfg.n_times / cfg.sfreq:g} s at {cfg.sfreq:g} Hz)"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: x contains NaN or Inf values")
        if subject is None:
            if cfg.n_subjects != 1:
                raise ValueError(f"{name}: subject is required for {cfg.n_subjects} subjects")
            subject = 0
        if isinstance(subject, int):
            subject = torch.full((batch,), subject, dtype=torch.int64, device=x.device)
        if (
            not isinstance(subject, torch.Tensor)
            or subject.dtype.is_floating_point
            or subject.dtype == torch.bool
        ):
            raise ValueError(f"{name}: subject must be an int64 tensor of shape ({batch},)")
        if subject.shape != (batch,):
            raise ValueError(
                f"{name}: subject must have shape ({batch},), got {tuple(subject.shape)}"
            )
        if batch and (int(subject.min()) < 0 or int(subject.max()) >= cfg.n_subjects):
            raise ValueError(
                f"{name}: subject indices must be in 0..{cfg.n_subjects - 1}, "
                f"got {sorted(set(subject.tolist()))}"
            )
        return x.float(), subject.to(dtype=torch.int64, device=x.device)

    def prepare(self, x: torch.Tensor, subject: torch.Tensor | int | None) -> torch.Tensor:
        """Check inputs and resample: ``(batch, n_channels, n_resampled)``."""
        x, _ = self.check_inputs(x, subject)
        return self.resample(x)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"name={self.registry_name!r}"


class BaselineClassifier(BaselineModel):
    """A backbone (``features(x) -> (batch, ...)``) followed by an :class:`MLPHead`.

    Subclasses build ``self.backbone`` and call :meth:`build_head` with the feature width.
    """

    def build_head(self, d_features: int) -> None:
        """Create ``self.head`` for flattened features of width ``d_features``."""
        cfg = self.config
        self.head = MLPHead(d_features, list(cfg.head_hidden), cfg.n_classes, cfg.head_dropout)

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """Features the head reads from resampled ``x``; subclasses override."""
        return self.backbone(x)

    def forward(
        self,
        x: torch.Tensor,
        subject: torch.Tensor | int | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Classify trials.

        Parameters
        ----------
        x : torch.Tensor
            float32 ``(batch, n_channels, n_times)`` at ``sfreq``.
        subject : torch.Tensor
            int64 ``(batch,)``.
        labels : torch.Tensor, optional
            int64 ``(batch,)``; adds ``loss`` (cross-entropy).

        Returns
        -------
        dict of torch.Tensor
            ``logits (batch, n_classes)``, ``features`` and optionally ``loss``.
        """
        features = self.extract(self.prepare(x, subject))
        logits = self.head(features)
        out = {"logits": logits, "features": features}
        if labels is not None:
            if labels.shape != (x.shape[0],) or labels.dtype != torch.int64:
                raise ValueError(
                    f"{type(self).__name__}: labels must be int64 of shape ({x.shape[0]},), "
                    f"got {labels.dtype} {tuple(labels.shape)}"
                )
            out["loss"] = F.cross_entropy(logits, labels)
        return out


def transfer_backbone(src: nn.Module, dst: nn.Module) -> None:
    """Copy ``src.backbone`` (weights and BatchNorm statistics) into ``dst.backbone``.

    Parameters
    ----------
    src, dst : nn.Module
        E.g. a ``neurobert_pretrain`` model and a ``neurobert`` classifier.

    Raises
    ------
    ValueError
        If either has no backbone, or a tensor's name or shape differs (naming it).
    """
    for model in (src, dst):
        if not isinstance(getattr(model, "backbone", None), nn.Module):
            raise ValueError(f"{type(model).__name__} has no 'backbone' module to transfer")
    src_state = src.backbone.state_dict()
    dst_state = dst.backbone.state_dict()
    if set(src_state) != set(dst_state):
        diff = sorted(set(src_state) ^ set(dst_state))
        raise ValueError(f"cannot transfer backbone: different structure (keys {diff[:5]})")
    for key, value in src_state.items():
        if value.shape != dst_state[key].shape:
            raise ValueError(
                f"cannot transfer backbone.{key}: source shape {tuple(value.shape)} != "
                f"destination shape {tuple(dst_state[key].shape)}"
            )
    dst.backbone.load_state_dict(src_state)


def transformer_stack(config: Any, n_blocks: int, d_model: int) -> TransformerStack:
    """A shared :class:`~duin.models.layers.TransformerStack` of ``n_blocks`` x ``d_model``
    with the config's ``n_heads``, ``d_head``, ``d_ff``, ``attn_dropout`` and ``ff_dropout``."""
    return TransformerStack(
        n_blocks, d_model, config.n_heads, config.d_head, config.d_ff,
        config.attn_dropout, config.ff_dropout,
    )  # fmt: skip


class TokenEncoder(nn.Module):
    """Fixed sin/cos time table + :func:`transformer_stack` of the config's ``n_blocks`` x
    ``d_model``.

    The table is a non-persistent buffer sized for ``n_tokens``, so the state dict does not
    depend on the window length (pretraining and fine-tuning lengths may differ).

    Parameters
    ----------
    n_tokens : int
        Tokens per window.
    config : BaselineConfig
        Any config with ``d_model``, ``n_blocks`` and the :func:`transformer_stack` fields.
    """

    def __init__(self, n_tokens: int, config: Any) -> None:
        super().__init__()
        self.register_buffer(
            "time_table", sinusoid_table(n_tokens, config.d_model), persistent=False
        )
        self.stack = transformer_stack(config, config.n_blocks, config.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(batch, n_tokens, d_model)`` -> same shape."""
        return self.stack(tokens + self.time_table)  # type: ignore[return-value]


class StridedConvTokenizer(nn.Module):
    """Conv1d (+ BatchNorm) stack over the whole signal, channels mixed by the first conv.

    ``(batch, d_in, n_times) -> (batch, n_tokens, filters[-1])``; no padding, no activation
    (as the Du-IN paper's Neuro-BERT and DeWave front ends).

    Parameters
    ----------
    d_in : int
        Input channels.
    filters, kernels, strides : list of int
        One conv per entry.
    batch_norm : bool
        BatchNorm1d after each conv.
    """

    def __init__(
        self,
        d_in: int,
        filters: list[int],
        kernels: list[int],
        strides: list[int],
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for f, k, s in zip(filters, kernels, strides, strict=True):
            layers.append(nn.Conv1d(d_in, f, k, stride=s))
            if batch_norm:
                layers.append(nn.BatchNorm1d(f))
            d_in = f
        self.layers = nn.Sequential(*layers)

    @staticmethod
    def out_len(n: int, kernels: list[int], strides: list[int]) -> int:
        """Token count for ``n`` input samples."""
        for k, s in zip(kernels, strides, strict=True):
            n = conv_out_len(n, k, s)
        return n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(batch, n_tokens, filters[-1])``."""
        return self.layers(x).transpose(1, 2)


class ConvTransformer(nn.Module):
    """Region-level backbone: a :class:`StridedConvTokenizer` then a :class:`TokenEncoder`.

    ``(batch, n_channels, n_times) -> (batch, n_tokens, d_model)`` (Neuro-BERT, DeWave).

    Parameters
    ----------
    tokenizer : StridedConvTokenizer
        The conv front end (last filter count = ``config.d_model``).
    config : BaselineConfig
        Any config with ``n_tokens`` and the :class:`TokenEncoder` fields.
    """

    def __init__(self, tokenizer: StridedConvTokenizer, config: Any) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.encoder = TokenEncoder(config.n_tokens, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(batch, n_tokens, d_model)``."""
        return self.encoder(self.tokenizer(x))


class ChannelPatchEmbedding(nn.Module):
    """LaBraM-style temporal conv embedding of single-channel patches (channel-level tokens).

    Each patch of ``patch_len`` samples of one channel is embedded on its own by
    Conv1d -> GroupNorm -> GELU blocks (padding ``k // 2``), flattened time-major
    (feature ``t * filters[-1] + f``) into ``config.d_model``.

    Parameters
    ----------
    config : ChannelPatchConfig
        ``patch_len``, ``conv_filters``, ``conv_kernels``, ``conv_strides``, ``norm_groups``.
    """

    def __init__(self, config: ChannelPatchConfig) -> None:
        super().__init__()
        self.patch_len, self.d_model = config.patch_len, config.d_model
        layers: list[nn.Module] = []
        d_in = 1
        for f, k, s in zip(
            config.conv_filters, config.conv_kernels, config.conv_strides, strict=True
        ):
            layers += [
                nn.Conv1d(d_in, f, k, stride=s, padding=k // 2),
                nn.GroupNorm(config.norm_groups, f),
                nn.GELU(),
            ]
            d_in = f
        self.layers = nn.Sequential(*layers)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(..., patch_len)`` -> ``(..., d_model)``."""
        lead = patches.shape[:-1]
        z = self.layers(patches.reshape(-1, 1, self.patch_len))  # (M, F, S)
        return z.transpose(1, 2).reshape(*lead, self.d_model)

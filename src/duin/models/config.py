"""Typed configurations of the Du-IN models (pure dataclasses, no torch import).

The defaults are the paper's values (reference ``params/duin_params.py`` for the dataset
``seeg_he2023xuanwu``): 10 channels of one subject, 100-sample patches, 16 latent channels,
160-d tokens, 8 post-norm transformer blocks of 8 heads x 64, a 2048 x 64 codex.

Every config has ``validate()``, which raises :class:`ValueError` naming the bad field, and
``to_dict()`` / ``from_dict()`` for JSON round trips (used by checkpoints and by the pipeline's
YAML configs, which embed these dataclasses).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

__all__ = [
    "ClassifierConfig",
    "DuINConfig",
    "MAEConfig",
    "QuantizerConfig",
    "VQVAEConfig",
]

_T = TypeVar("_T", bound="_ConfigBase")


def _check_positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def _check_int_list(owner: str, name: str, value: Any, length: int | None = None) -> None:
    if not isinstance(value, list | tuple) or len(value) == 0:
        raise ValueError(f"{owner}.{name} must be a non-empty list of positive integers")
    for item in value:
        _check_positive_int(owner, f"{name}[]", item)
    if length is not None and len(value) != length:
        raise ValueError(f"{owner}.{name} must have {length} entries, got {len(value)}")


def _check_probability(owner: str, name: str, value: Any, *, open_interval: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value < 1.0
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1)"
        raise ValueError(f"{owner}.{name} must be in {interval}, got {value!r}")


class _ConfigBase:
    """Shared dict round trip for the model configs."""

    _nested: ClassVar[dict[str, type]] = {}

    def __post_init__(self) -> None:
        # Nested configs may be given as plain dicts (YAML, JSON, keyword overrides).
        for key, sub in self._nested.items():
            value = getattr(self, key)
            if isinstance(value, dict):
                setattr(self, key, sub.from_dict(value))  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
        """Build from a dict, rejecting unknown keys with a ValueError that names them.

        Parameters
        ----------
        data : dict
            Field values; nested configs may be given as dicts.

        Returns
        -------
        config
            A validated config.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
        kwargs = dict(data)
        for key, sub in cls._nested.items():
            if key in kwargs and isinstance(kwargs[key], dict):
                kwargs[key] = sub.from_dict(kwargs[key])  # type: ignore[attr-defined]
        config = cls(**kwargs)
        config.validate()  # type: ignore[attr-defined]
        return config


@dataclass
class QuantizerConfig(_ConfigBase):
    """The normalised EMA vector quantizer (the codex).

    Parameters
    ----------
    n_codes : int
        Codex size (2048).
    d_code : int
        Code dimension after the projection (64).
    beta : float
        Commitment loss weight (1.0).
    decay : float
        EMA decay of the code vectors (0.99).
    kmeans_init : bool
        Initialise the codex with spherical k-means on the first token embeddings.
    kmeans_iters : int
        k-means iterations (10).
    init_mode : str
        ``"accumulate"`` (clean default): collect at least ``n_codes`` vectors across training
        batches, then run k-means with distinct initial centres. ``"first_batch"`` (reference
        parity): k-means on the first batch, centres drawn with replacement when the batch has
        fewer vectors than codes (so some codes start as duplicates and stay dead).
    dead_code_restart : bool
        Replace codes whose usage EMA falls below ``dead_code_threshold`` with random vectors of
        the current batch (off by default; the reference has no restart).
    dead_code_threshold : float
        Usage-EMA threshold for a restart.
    track_counts_in_eval : bool
        Also update the ``counts`` usage EMA in eval-mode forwards, as the reference does
        (off by default so that evaluation never mutates a model).
    warmup_steps : int
        Training forwards that bypass quantisation before the codex is initialised (0 = the
        reference: quantise from the first step). During the warm-up the model is a plain
        autoencoder: the decoder receives the projected vectors themselves, there is no
        commitment loss and no EMA, so the encoder learns input-specific tokens; k-means then
        initialises the codex from those. Without it, short runs on data whose reconstruction
        gradient is at first mostly common to all tokens align every token onto one code
        within tens of steps (see docs/pretraining.md).
    """

    n_codes: int = 2048
    d_code: int = 64
    beta: float = 1.0
    decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 10
    init_mode: str = "accumulate"
    dead_code_restart: bool = False
    dead_code_threshold: float = 1e-3
    track_counts_in_eval: bool = False
    warmup_steps: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        owner = "quantizer"
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(
                f"{owner}.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}"
            )
        if self.warmup_steps and not self.kmeans_init:
            raise ValueError(f"{owner}.warmup_steps needs kmeans_init (the codex is set after it)")
        _check_positive_int(owner, "n_codes", self.n_codes)
        _check_positive_int(owner, "d_code", self.d_code)
        _check_positive_int(owner, "kmeans_iters", self.kmeans_iters)
        if not isinstance(self.beta, int | float) or self.beta < 0:
            raise ValueError(f"{owner}.beta must be >= 0, got {self.beta!r}")
        _check_probability(owner, "decay", self.decay, open_interval=True)
        if self.init_mode not in ("accumulate", "first_batch"):
            raise ValueError(
                f"{owner}.init_mode must be 'accumulate' or 'first_batch', got {self.init_mode!r}"
            )
        if not isinstance(self.dead_code_threshold, int | float) or self.dead_code_threshold < 0:
            raise ValueError(f"{owner}.dead_code_threshold must be >= 0")


@dataclass
class DuINConfig(_ConfigBase):
    """Fields shared by every Du-IN model: inputs, subject layer, tokenizer, encoder.

    Parameters
    ----------
    n_channels : int
        Input channels (the maximum over subjects when ``subject_channels`` is given).
    n_subjects : int
        Number of subjects (one subject-layer matrix each).
    subject_channels : list of int or None
        Real channel count of each subject; inputs are zero-padded to ``n_channels``.
        ``None`` means every subject has ``n_channels``.
    n_times : int
        Samples per input window (a multiple of ``patch_len``); fixes the token count.
    patch_len : int
        Samples per token (100 = 0.1 s at 1000 Hz).
    d_neural : int
        Latent channels after the subject layer (16).
    tokenizer_filters, tokenizer_kernels, tokenizer_strides : list of int
        The conv stack of the patch tokenizer (no activations, BatchNorm after each conv).
    n_blocks : int
        Encoder transformer blocks (8).
    n_heads, d_head : int
        Attention heads and head width (8 x 64).
    d_ff : int
        Feed-forward hidden width (320).
    attn_dropout : float
        Dropout on the attention weights (0.2).
    ff_dropout : float
        Dropout on the FFN hidden layer (0.2).
    """

    n_channels: int = 10
    n_subjects: int = 1
    subject_channels: list[int] | None = None
    n_times: int = 4000
    patch_len: int = 100
    d_neural: int = 16
    tokenizer_filters: list[int] = field(default_factory=lambda: [128, 128, 16])
    tokenizer_kernels: list[int] = field(default_factory=lambda: [19, 3, 3])
    tokenizer_strides: list[int] = field(default_factory=lambda: [10, 1, 1])
    n_blocks: int = 8
    n_heads: int = 8
    d_head: int = 64
    d_ff: int = 320
    attn_dropout: float = 0.2
    ff_dropout: float = 0.2

    @property
    def n_tokens(self) -> int:
        """Tokens per window (``n_times // patch_len``)."""
        return self.n_times // self.patch_len

    @property
    def tokenizer_steps(self) -> int:
        """Positions per patch after the strided convs (10)."""
        return self.patch_len // math.prod(self.tokenizer_strides)

    @property
    def d_model(self) -> int:
        """Token width: last tokenizer filter count x positions per patch (160)."""
        return self.tokenizer_filters[-1] * self.tokenizer_steps

    @property
    def channels_per_subject(self) -> list[int]:
        """Real channel count of each subject."""
        if self.subject_channels is None:
            return [self.n_channels] * self.n_subjects
        return list(self.subject_channels)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        owner = type(self).__name__
        for name in ("n_channels", "n_subjects", "n_times", "patch_len", "d_neural"):
            _check_positive_int(owner, name, getattr(self, name))
        for name in ("n_blocks", "n_heads", "d_head", "d_ff"):
            _check_positive_int(owner, name, getattr(self, name))
        _check_int_list(owner, "tokenizer_filters", self.tokenizer_filters)
        n_conv = len(self.tokenizer_filters)
        _check_int_list(owner, "tokenizer_kernels", self.tokenizer_kernels, n_conv)
        _check_int_list(owner, "tokenizer_strides", self.tokenizer_strides, n_conv)
        if self.n_times % self.patch_len:
            raise ValueError(
                f"{owner}.n_times ({self.n_times}) must be a multiple of patch_len ({self.patch_len})"
            )
        if self.patch_len % math.prod(self.tokenizer_strides):
            raise ValueError(
                f"{owner}.patch_len ({self.patch_len}) must be divisible by the product of "
                f"tokenizer_strides {self.tokenizer_strides}"
            )
        if self.subject_channels is not None:
            _check_int_list(owner, "subject_channels", self.subject_channels, self.n_subjects)
            if max(self.subject_channels) != self.n_channels:
                raise ValueError(
                    f"{owner}.subject_channels: the largest entry ({max(self.subject_channels)}) "
                    f"must equal n_channels ({self.n_channels}); inputs are zero-padded to it"
                )
        _check_probability(owner, "attn_dropout", self.attn_dropout)
        _check_probability(owner, "ff_dropout", self.ff_dropout)


@dataclass
class VQVAEConfig(DuINConfig):
    """Stage 1: the VQ-VAE neural tokenizer (encoder -> codex -> decoder -> signal).

    Parameters
    ----------
    quantizer : QuantizerConfig
        The codex.
    n_decoder_blocks : int
        Decoder transformer blocks (4, same block shape as the encoder).
    decoder_filters, decoder_kernels, decoder_strides : list of int
        Transposed-conv regression head (no activations); strides must multiply to
        ``patch_len`` so that the output has ``n_times`` samples.
    recon_loss_weight, vq_loss_weight : float
        Loss weights (1, 1).
    power_loss_weight : float
        Weight of an extra target the paper does not have (0 = the paper's VQ-VAE): from the
        decoder output, predict each patch's log band power per channel in ``power_bands``.
        The waveform loss cannot encode random-phase high-gamma activity (its MSE-optimal
        reconstruction is zero), so without this target the codex carries only the
        phase-locked low frequencies (docs/pretraining.md, section 7).
    power_bands : list of [int, int]
        Band edges as FFT bins ``[lo, hi)`` of one patch: bin ``k`` is ``k * sfreq / patch_len``
        Hz (10 Hz at 1 kHz with 100-sample patches), so the default is 10-30, 30-70 and
        70-170 Hz.
    """

    _nested: ClassVar[dict[str, type]] = {"quantizer": QuantizerConfig}

    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    n_decoder_blocks: int = 4
    decoder_filters: list[int] = field(default_factory=lambda: [128, 128, 128, 128, 16])
    decoder_kernels: list[int] = field(default_factory=lambda: [3, 3, 10, 9, 19])
    decoder_strides: list[int] = field(default_factory=lambda: [1, 1, 10, 1, 10])
    recon_loss_weight: float = 1.0
    vq_loss_weight: float = 1.0
    power_loss_weight: float = 0.0
    power_bands: list[list[int]] = field(default_factory=lambda: [[1, 3], [3, 7], [7, 17]])

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        if not (isinstance(self.power_loss_weight, int | float) and self.power_loss_weight >= 0):
            raise ValueError(
                f"VQVAEConfig.power_loss_weight must be >= 0, got {self.power_loss_weight!r}"
            )
        n_bins = self.patch_len // 2 + 1
        for band in self.power_bands:
            ok = isinstance(band, list | tuple) and len(band) == 2
            if (
                not ok
                or not all(isinstance(b, int) for b in band)
                or not 0 <= band[0] < band[1] <= n_bins
            ):
                raise ValueError(
                    f"VQVAEConfig.power_bands: {band!r} is not [lo, hi) with 0 <= lo < hi <= "
                    f"{n_bins} (FFT bins of a {self.patch_len}-sample patch)"
                )
        if not isinstance(self.quantizer, QuantizerConfig):
            raise ValueError("VQVAEConfig.quantizer must be a QuantizerConfig")
        self.quantizer.validate()
        _check_positive_int("VQVAEConfig", "n_decoder_blocks", self.n_decoder_blocks)
        n = len(self.decoder_filters)
        _check_int_list("VQVAEConfig", "decoder_filters", self.decoder_filters)
        _check_int_list("VQVAEConfig", "decoder_kernels", self.decoder_kernels, n)
        _check_int_list("VQVAEConfig", "decoder_strides", self.decoder_strides, n)
        if math.prod(self.decoder_strides) != self.patch_len:
            raise ValueError(
                f"VQVAEConfig.decoder_strides {self.decoder_strides} must multiply to "
                f"patch_len ({self.patch_len})"
            )
        for k, s in zip(self.decoder_kernels, self.decoder_strides, strict=True):
            if k < s:
                raise ValueError(
                    f"VQVAEConfig.decoder_kernels: kernel {k} is shorter than its stride {s}"
                )


@dataclass
class MAEConfig(DuINConfig):
    """Stage 2: masked code modelling over two complementary views.

    Parameters
    ----------
    n_codes : int
        Codex size of the target tokenizer (the head predicts one of these per token).
    mask_ratio : float
        Fraction of tokens hidden in the first view, in (0, 1) (0.5).
    loss_weight : float
        Weight of the cross-entropy (1).
    """

    n_codes: int = 2048
    mask_ratio: float = 0.5
    loss_weight: float = 1.0

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        _check_positive_int("MAEConfig", "n_codes", self.n_codes)
        _check_probability("MAEConfig", "mask_ratio", self.mask_ratio, open_interval=True)
        keep = int(self.n_tokens * (1 - self.mask_ratio))
        if keep <= 0 or keep >= self.n_tokens:
            raise ValueError(
                f"MAEConfig.mask_ratio {self.mask_ratio} leaves {keep} of {self.n_tokens} tokens "
                "visible; both views need at least one visible and one hidden token"
            )


@dataclass
class ClassifierConfig(DuINConfig):
    """Stage 3: the word classifier (encoder -> flatten -> MLP).

    Parameters
    ----------
    n_classes : int
        Number of words (61).
    head_hidden : list of int
        Hidden widths of the MLP head (``[128]``, ReLU after each).
    head_dropout : float
        Dropout before each head Linear (0 in the paper).
    loss : str
        ``"ce"`` (default): cross-entropy on the logits. ``"reference"``: the paper code's
        cross-entropy on ``sigmoid(logits)``.
    quantize_features : bool
        The paper's ``vqvae+vq`` variant: encoder output -> frozen codex from a VQ-VAE -> head.
    quantizer : QuantizerConfig
        Codex shape used when ``quantize_features`` is on.
    """

    _nested: ClassVar[dict[str, type]] = {"quantizer": QuantizerConfig}

    n_times: int = 3000
    n_classes: int = 61
    head_hidden: list[int] = field(default_factory=lambda: [128])
    head_dropout: float = 0.0
    loss: str = "ce"
    quantize_features: bool = False
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        super().validate()
        _check_positive_int("ClassifierConfig", "n_classes", self.n_classes)
        if not isinstance(self.head_hidden, list | tuple):
            raise ValueError("ClassifierConfig.head_hidden must be a list of positive integers")
        for width in self.head_hidden:
            _check_positive_int("ClassifierConfig", "head_hidden[]", width)
        _check_probability("ClassifierConfig", "head_dropout", self.head_dropout)
        if self.loss not in ("ce", "reference"):
            raise ValueError(
                f"ClassifierConfig.loss must be 'ce' or 'reference', got {self.loss!r}"
            )
        if not isinstance(self.quantizer, QuantizerConfig):
            raise ValueError("ClassifierConfig.quantizer must be a QuantizerConfig")
        self.quantizer.validate()

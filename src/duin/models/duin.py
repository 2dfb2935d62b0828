"""The three Du-IN models: :class:`DuINVQVAE`, :class:`DuINMAE` and :class:`DuINClassifier`.

All take ``x`` float32 ``(batch, n_channels, n_times)`` and ``subject`` int64 ``(batch,)`` and
return dicts of named tensors. They share the front end (reference §2.1-2.4):

    x -> subject layer (C -> d_neural) -> patch tokenizer (B, L, d_model) -> + time table
      -> encoder (post-norm transformer stack)

Multi-subject inputs with different channel counts are zero-padded to ``n_channels`` (the
largest subject), as in the reference; a batch whose subjects all have ``k < n_channels``
channels may also be passed with ``k`` channels and is padded here.
"""

from __future__ import annotations

import abc
import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from duin.models.config import ClassifierConfig, DuINConfig, MAEConfig, VQVAEConfig
from duin.models.layers import (
    PatchTokenizer,
    ReconstructionHead,
    SubjectLayer,
    TransformerStack,
    fold_front_end,
    sinusoid_table,
    trunc_normal_,
)
from duin.models.quantizer import NormEMAVectorQuantizer

__all__ = [
    "DuINClassifier",
    "DuINMAE",
    "DuINModel",
    "DuINVQVAE",
    "band_log_power",
    "optimizer_param_groups",
    "transfer_encoder",
]


def optimizer_param_groups(
    model: nn.Module, weight_decay: float, *, reference: bool = False
) -> list[dict[str, Any]]:
    """AdamW parameter groups: no decay for tensors with ``ndim <= 1`` or names ending ``.bias``.

    Frozen tensors (``requires_grad=False``) are left out (reference §3.1).

    Parameters
    ----------
    model : nn.Module
        Any model.
    weight_decay : float
        Decay of the first group.
    reference : bool
        Also decay the subject layers' 2-D shift matrices, as the reference does (it stores
        them as a Linear ``weight``). Default: they are biases and are not decayed.

    Returns
    -------
    list of dict
        ``[{"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0}]``.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_bias = name.endswith(".bias") or param.ndim <= 1
        if reference and param.ndim >= 2 and name.endswith("subject_layer.bias"):
            is_bias = False
        (no_decay if is_bias else decay).append(param)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class DuINModel(nn.Module):
    """Shared front end: subject layer, patch tokenizer, time table, encoder.

    Parameters
    ----------
    config : DuINConfig
        Model configuration (validated here).
    """

    registry_name: ClassVar[str] = ""
    config_class: ClassVar[type[DuINConfig]] = DuINConfig
    #: In eval mode, run subject layer + tokenizer as one folded affine map (same function).
    use_folded_front_end: ClassVar[bool] = True

    def __init__(self, config: DuINConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.subject_layer = SubjectLayer(config.n_subjects, config.n_channels, config.d_neural)
        self.tokenizer = PatchTokenizer(
            config.d_neural,
            config.patch_len,
            list(config.tokenizer_filters),
            list(config.tokenizer_kernels),
            list(config.tokenizer_strides),
        )
        self.register_buffer(
            "time_table", sinusoid_table(config.n_tokens, config.d_model), persistent=False
        )
        self.encoder = TransformerStack(
            config.n_blocks,
            config.d_model,
            config.n_heads,
            config.d_head,
            config.d_ff,
            config.attn_dropout,
            config.ff_dropout,
        )
        self.register_buffer(
            "subject_channels",
            torch.tensor(config.channels_per_subject, dtype=torch.int64),
            persistent=False,
        )

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self, x: torch.Tensor, subject: torch.Tensor | int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate and normalise ``(x, subject)``; raise ValueError naming what was expected.

        Parameters
        ----------
        x : torch.Tensor
            float ``(batch, n_channels, n_times)``.
        subject : torch.Tensor, int or None
            int64 ``(batch,)`` subject indices; an int applies to the whole batch; ``None`` is
            allowed for single-subject models.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            ``x`` as float32 ``(batch, n_channels, n_times)`` (zero-padded to ``n_channels`` if
            needed) and ``subject`` int64 ``(batch,)`` on ``x``'s device.
        """
        cfg = self.config
        expected = f"(batch, n_channels={cfg.n_channels}, n_times={cfg.n_times})"
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"x must be a torch.Tensor of shape {expected}, got {type(x).__name__}"
            )
        if x.ndim != 3:
            raise ValueError(f"x must have 3 dimensions {expected}, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        batch, n_channels, n_times = x.shape
        if n_times % cfg.patch_len:
            raise ValueError(
                f"x has n_times={n_times}, which is not a multiple of patch_len={cfg.patch_len}"
            )
        if n_times != cfg.n_times:
            raise ValueError(
                f"x has n_times={n_times} ({n_times // cfg.patch_len} tokens) but the model is "
                f"configured for n_times={cfg.n_times} ({cfg.n_tokens} tokens)"
            )
        subject = self._check_subject(subject, batch, x.device)
        if n_channels != cfg.n_channels:
            own = self.subject_channels[subject]
            if cfg.subject_channels is None or bool((own != n_channels).any()):
                raise ValueError(
                    f"x has {n_channels} channels but subject(s) "
                    f"{sorted(set(subject.tolist()))} expect "
                    f"{sorted(set(own.tolist()))} (model n_channels={cfg.n_channels})"
                )
            x = F.pad(x, (0, 0, 0, cfg.n_channels - n_channels))
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf values")
        return x.to(self.time_table.dtype), subject

    def _check_subject(
        self, subject: torch.Tensor | int | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        n_subjects = self.config.n_subjects
        if subject is None:
            if n_subjects != 1:
                raise ValueError(
                    f"subject is required (int64 (batch,)) for a model of {n_subjects} subjects"
                )
            return torch.zeros(batch, dtype=torch.int64, device=device)
        if isinstance(subject, int):
            subject = torch.full((batch,), subject, dtype=torch.int64, device=device)
        if not isinstance(subject, torch.Tensor):
            raise ValueError(f"subject must be an int64 tensor of shape ({batch},)")
        if subject.dtype.is_floating_point or subject.dtype == torch.bool:
            raise ValueError(
                f"subject must be an integer tensor (int64), got dtype {subject.dtype}"
            )
        if subject.shape != (batch,):
            raise ValueError(
                f"subject must have shape (batch,) = ({batch},), got {tuple(subject.shape)}"
            )
        if batch and (int(subject.min()) < 0 or int(subject.max()) >= n_subjects):
            bad = subject[(subject < 0) | (subject >= n_subjects)][0].item()
            raise ValueError(
                f"unknown subject index {bad}: the model has {n_subjects} subject(s) "
                f"(valid indices 0..{n_subjects - 1})"
            )
        return subject.to(device=device, dtype=torch.int64)

    # ------------------------------------------------------------------ front end
    def embed(self, x: torch.Tensor, subject: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Subject layer + tokenizer on checked inputs.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            Subject-layer output ``(batch, d_neural, n_times)`` and tokens
            ``(batch, n_tokens, d_model)`` (before the time table).
        """
        x_h = self.subject_layer(x, subject)
        return x_h, self.tokenizer(x_h)

    def front_end_fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode subject layer + tokenizer + time table as one affine map (cached).

        See :func:`~duin.models.layers.fold_front_end`. The cache is rebuilt whenever a weight,
        BatchNorm statistic, dtype or device changes (tensor versions and storage are checked).

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            ``weight (n_in * patch_len, d_model)`` and ``bias (n_subjects, n_tokens, d_model)``
            (``n_in`` is ``n_channels`` when the subject layer is folded in, see
            :meth:`fold_includes_subject_layer`, else ``d_neural``).
        """
        tensors = [
            *self.subject_layer.parameters(),
            *self.tokenizer.parameters(),
            *self.tokenizer.buffers(),
            self.time_table,
        ]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        cached = self.__dict__.get("_fold_cache")
        if cached is None or cached[0] != key:
            # Plain tensors even when first called under inference_mode (usable with autograd).
            with torch.inference_mode(False):
                fold = fold_front_end(
                    self.subject_layer,
                    self.tokenizer,
                    self.time_table,
                    compose_subject_layer=self.fold_includes_subject_layer,
                )
            cached = (key, fold)
            self.__dict__["_fold_cache"] = cached
        return cached[1]

    @property
    def fold_includes_subject_layer(self) -> bool:
        """Whether the folded map also contains the subject layer: for a single subject with
        fewer channels than ``d_neural`` (then one matmul on raw patches is the cheapest)."""
        return self.config.n_subjects == 1 and self.config.n_channels < self.config.d_neural

    def _inference_fold(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The folded front end when it applies (eval mode and enabled), else None.

        Not while gradients must reach the front end (an eval-mode training step, dropouts
        off): the fold is a constant, so its weights would silently get no gradient.
        """
        if self.training or not self.use_folded_front_end:
            return None
        if torch.is_grad_enabled() and any(
            p.requires_grad
            for p in (*self.subject_layer.parameters(), *self.tokenizer.parameters())
        ):
            return None
        return self.front_end_fold()

    def embed_folded(
        self, x: torch.Tensor, subject: torch.Tensor, fold: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Encoder input ``(batch, n_tokens, d_model)`` from checked inputs with the folded map.

        Equals ``embed(x, subject)[1] + time_table`` in eval mode: one matmul per patch instead
        of three convolutions and three BatchNorms (and the subject layer, when folded in).
        """
        weight, bias = fold
        if not self.fold_includes_subject_layer:
            x = self.subject_layer(x, subject)  # (B, d_neural, T)
        batch, n_rows, n_times = x.shape
        patch = self.config.patch_len
        n_tokens = n_times // patch
        # (B, R, L, P) -> (B, L, R, P) -> (B, L, R*P): one row per patch, row-major.
        patches = x.reshape(batch, n_rows, n_tokens, patch).transpose(1, 2)
        patches = patches.reshape(batch, n_tokens, n_rows * patch)
        return torch.matmul(patches, weight) + bias[subject]

    def encoder_input(
        self,
        x: torch.Tensor,
        subject: torch.Tensor,
        fold: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Tokens plus time table ``(batch, n_tokens, d_model)`` from checked inputs."""
        if fold is not None:
            return self.embed_folded(x, subject, fold)
        return self.embed(x, subject)[1] + self.time_table

    def encode(
        self, tokens: torch.Tensor, return_all: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Add the time table to ``tokens (batch, n_tokens, d_model)`` and run the encoder."""
        return self.encoder(tokens + self.time_table, return_all=return_all)

    def features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Encoder output ``(batch, n_tokens, d_model)`` for raw inputs."""
        x, subject = self.check_inputs(x, subject)
        enc_in = self.encoder_input(x, subject, self._inference_fold())
        return self.encoder(enc_in)  # type: ignore[return-value]

    # ------------------------------------------------------------------ execution
    @abc.abstractmethod
    def _compute(self, *args: Any) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        """The model's tensor computation on checked inputs; each Du-IN model defines it."""

    def _run(self, *args: Any) -> dict[str, torch.Tensor]:
        """Run the tensor computation (after the input checks), compiled if enabled."""
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            return self._compute(*args)
        if self.__dict__.get("_compiled_ok"):
            return compiled(*args)
        try:
            out = compiled(*args)
        except Exception as err:  # e.g. no C++ toolchain: fall back to eager once, loudly
            warnings.warn(f"torch.compile failed ({err!r}); running eagerly", stacklevel=3)
            self.__dict__["_compiled"] = None
            return self._compute(*args)
        self.__dict__["_compiled_ok"] = True
        return out

    def enable_compile(self, enabled: bool = True, **compile_kwargs: Any) -> DuINModel:
        """Compile the tensor computation with :func:`torch.compile` (input checks stay eager).

        If compilation fails on the first call the model warns and runs eagerly.

        Parameters
        ----------
        enabled : bool
            False restores eager execution.
        **compile_kwargs
            Passed to :func:`torch.compile` (e.g. ``mode="max-autotune"``).

        Returns
        -------
        DuINModel
            ``self``.
        """
        self.__dict__["_compiled_ok"] = False
        self.__dict__["_compiled"] = (
            torch.compile(self._compute, **compile_kwargs) if enabled else None
        )
        return self

    # ------------------------------------------------------------------ utilities
    def channel_contributions(self, subject: int) -> torch.Tensor:
        """Channel contribution score of one subject: ``mean_j |W_s[c, j]|`` (reference §2.1).

        Correct for any number of subjects (the reference's reshape is only right for one).

        Parameters
        ----------
        subject : int
            Subject index.

        Returns
        -------
        torch.Tensor
            ``(n_channels_of_subject,)`` float32 scores (padding channels excluded).
        """
        if not 0 <= int(subject) < self.config.n_subjects:
            raise ValueError(
                f"unknown subject index {subject}: valid indices 0..{self.config.n_subjects - 1}"
            )
        n_real = self.config.channels_per_subject[int(subject)]
        weight = self.subject_layer.weight[int(subject), :n_real]  # (C_s, d_neural)
        return weight.detach().abs().mean(dim=1)

    def param_groups(self, weight_decay: float, *, reference: bool = False) -> list[dict]:
        """AdamW parameter groups (see :func:`optimizer_param_groups`)."""
        return optimizer_param_groups(self, weight_decay, reference=reference)

    def extra_repr(self) -> str:
        return f"name={self.registry_name!r}"


class DuINVQVAE(DuINModel):
    """Stage 1 neural tokenizer: encoder -> codex -> decoder -> signal reconstruction.

    Parameters
    ----------
    config : VQVAEConfig, optional
        Defaults to the paper's configuration.
    """

    registry_name: ClassVar[str] = "duin_vqvae"
    config_class: ClassVar[type[DuINConfig]] = VQVAEConfig
    config: VQVAEConfig

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__(config or VQVAEConfig())
        cfg = self.config
        self.quantizer = NormEMAVectorQuantizer(cfg.d_model, cfg.quantizer)
        self.decoder = TransformerStack(
            cfg.n_decoder_blocks,
            cfg.d_model,
            cfg.n_heads,
            cfg.d_head,
            cfg.d_ff,
            cfg.attn_dropout,
            cfg.ff_dropout,
        )
        self.recon_head = ReconstructionHead(
            cfg.d_model,
            list(cfg.decoder_filters),
            list(cfg.decoder_kernels),
            list(cfg.decoder_strides),
            cfg.d_neural,
        )
        self.desubject_layer = SubjectLayer(cfg.n_subjects, cfg.d_neural, cfg.n_channels)
        # Only with the (non-paper) band-power target, so the paper's state dict is unchanged.
        self.power_head: nn.Linear | None = None
        if cfg.power_loss_weight > 0:
            self.power_head = nn.Linear(cfg.d_model, cfg.n_channels * len(cfg.power_bands))
            trunc_normal_(self.power_head.weight)
            nn.init.zeros_(self.power_head.bias)

    def default_channel_mask(self, subject: torch.Tensor) -> torch.Tensor:
        """``(batch, n_channels)`` bool, True for each subject's real channels."""
        arange = torch.arange(self.config.n_channels, device=subject.device)
        return arange[None, :] < self.subject_channels[subject][:, None]

    def forward(
        self,
        x: torch.Tensor,
        subject: torch.Tensor | int | None = None,
        channel_mask: torch.Tensor | None = None,
        return_intermediates: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Encode, quantise, decode and score the reconstruction.

        Parameters
        ----------
        x : torch.Tensor
            float32 ``(batch, n_channels, n_times)``.
        subject : torch.Tensor
            int64 ``(batch,)``.
        channel_mask : torch.Tensor, optional
            bool ``(batch, n_channels)``, True = real channel (weights of the reconstruction
            loss). Default: each subject's real channels.
        return_intermediates : bool
            Also return every intermediate tensor (for parity checks and analysis).

        Returns
        -------
        dict of torch.Tensor
            ``reconstruction`` ``(batch, n_channels, n_times)``, ``codes`` int64
            ``(batch, n_tokens)``, ``features`` (encoder output ``(batch, n_tokens, d_model)``),
            ``loss`` = ``recon_loss_weight * loss_recon + vq_loss_weight * loss_vq``,
            ``loss_recon``, ``loss_vq``.
        """
        x, subject = self.check_inputs(x, subject)
        cfg = self.config
        if channel_mask is None:
            channel_mask = self.default_channel_mask(subject)
        elif channel_mask.shape != (x.shape[0], cfg.n_channels):
            raise ValueError(
                f"channel_mask must have shape (batch, n_channels) = "
                f"({x.shape[0]}, {cfg.n_channels}), got {tuple(channel_mask.shape)}"
            )
        return self._run(x, subject, channel_mask, return_intermediates)

    def _compute(
        self,
        x: torch.Tensor,
        subject: torch.Tensor,
        channel_mask: torch.Tensor,
        return_intermediates: bool,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        x_h, tokens = self.embed(x, subject)
        enc_in = tokens + self.time_table
        if return_intermediates:
            enc_out, enc_blocks = self.encoder(enc_in, return_all=True)
        else:
            enc_out = self.encoder(enc_in)
        vq = self.quantizer(enc_out)
        dec_in = vq["out"] + self.time_table
        dec_out = self.decoder(dec_in)
        head_out = self.recon_head(dec_out)  # (B, d_neural, n_times)
        reconstruction = self.desubject_layer(head_out, subject)  # (B, C, T)
        # Per (sample, channel) MSE over time, then a channel-mask weighted mean.
        mse = (reconstruction - x).pow(2).mean(dim=2)  # (B, C)
        weight = channel_mask.to(mse.dtype)
        loss_recon = (mse * weight).sum() / (weight.sum() + 1e-12)
        loss_vq = vq["loss"]
        loss = cfg.recon_loss_weight * loss_recon + cfg.vq_loss_weight * loss_vq
        out = {
            "reconstruction": reconstruction,
            "codes": vq["codes"],
            "features": enc_out,
            "loss": loss,
            "loss_recon": loss_recon,
            "loss_vq": loss_vq,
        }
        if self.power_head is not None:
            loss_power = self._power_loss(dec_out, x, weight)
            out["loss_power"] = loss_power
            out["loss"] = loss + cfg.power_loss_weight * loss_power
        if return_intermediates:
            out.update(
                x_h=x_h,
                tokens=tokens,
                enc_in=enc_in,
                enc_blocks=torch.stack(enc_blocks),
                enc_out=enc_out,
                vq_pre=vq["pre"],
                vq_z=vq["z"],
                vq_codes=vq["z_q"],
                vq_st=vq["z_st"],
                vq_ln=vq["ln"],
                vq_out=vq["out"],
                dec_in=dec_in,
                dec_out=dec_out,
                head_out=head_out,
            )
        return out

    def _power_loss(
        self, dec_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Masked MSE between predicted and actual standardised log band power per patch."""
        cfg = self.config
        batch, n_channels, _ = x.shape
        target = band_log_power(x, cfg.patch_len, cfg.power_bands)  # (B, C, L, n_bands)
        # Standardise per channel and band over the batch's real channels (padding excluded) so
        # every band weighs the same whatever its absolute power (high gamma is ~1 % of the
        # variance).
        w = weight[:, :, None, None]  # (B, C, 1, 1)
        n = (w.sum(0, keepdim=True) * target.shape[2]).clamp_min(1.0)  # (1, C, 1, 1)
        mean = (target * w).sum((0, 2), keepdim=True) / n
        var = ((target - mean).pow(2) * w).sum((0, 2), keepdim=True) / n
        target = (target - mean) / (var.sqrt() + 1e-6)
        assert self.power_head is not None
        pred = self.power_head(dec_out)  # (B, L, C * n_bands)
        pred = pred.view(batch, -1, n_channels, len(cfg.power_bands)).transpose(1, 2)
        mse = (pred - target).pow(2).mean(dim=(2, 3))  # (B, C)
        return (mse * weight).sum() / (weight.sum() + 1e-12)

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Code index of every token, int64 ``(batch, n_tokens)``; never changes the codex.

        Runs in the module's current mode (put it in ``eval()`` for deterministic codes).
        """
        x, subject = self.check_inputs(x, subject)
        return self._tokenize_checked(x, subject)

    @torch.no_grad()
    def _tokenize_checked(self, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        enc_out = self.encoder(self.encoder_input(x, subject, self._inference_fold()))
        _, z = self.quantizer.project(enc_out)
        return self.quantizer.nearest(z)

    @torch.no_grad()
    def quantize(
        self, x: torch.Tensor, subject: torch.Tensor | int | None = None
    ) -> dict[str, torch.Tensor]:
        """Quantised embeddings without updating the codex: ``codes`` and ``embeddings``."""
        x, subject = self.check_inputs(x, subject)
        enc_out = self.encoder(self.encoder_input(x, subject, self._inference_fold()))
        vq = self.quantizer(enc_out, update=False)
        return {"codes": vq["codes"], "embeddings": vq["out"]}


class DuINMAE(DuINModel):
    """Stage 2: masked code prediction over two complementary views (one fused encoder batch).

    Parameters
    ----------
    config : MAEConfig, optional
        Defaults to the paper's configuration.
    tokenizer : DuINVQVAE, optional
        Frozen VQ-VAE giving the target codes (see :meth:`set_target_tokenizer`).

    Notes
    -----
    The target tokenizer is held outside the module tree: it is not trained, not switched to
    training mode, and not part of the state dict or of checkpoints written by
    :func:`duin.save_model` (reattach it after :func:`duin.load_model`). It follows
    ``.to(device)`` / ``.double()`` calls on the MAE.
    """

    registry_name: ClassVar[str] = "duin_mae"
    config_class: ClassVar[type[DuINConfig]] = MAEConfig
    config: MAEConfig

    def __init__(self, config: MAEConfig | None = None, tokenizer: DuINVQVAE | None = None) -> None:
        super().__init__(config or MAEConfig())
        cfg = self.config
        self.mask_embedding = nn.Parameter(torch.empty(cfg.d_model))
        trunc_normal_(self.mask_embedding)
        self.head = nn.Linear(cfg.d_model, cfg.n_codes)
        trunc_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Held outside the module tree: not trained, not saved, not switched to train mode.
        self._target: list[DuINVQVAE] = []
        if tokenizer is not None:
            self.set_target_tokenizer(tokenizer)

    @property
    def target_tokenizer(self) -> DuINVQVAE | None:
        """The frozen VQ-VAE giving the targets, if any."""
        return self._target[0] if self._target else None

    def set_target_tokenizer(self, tokenizer: DuINVQVAE) -> None:
        """Attach a VQ-VAE as the frozen target tokenizer (eval mode, no gradients).

        Raises
        ------
        ValueError
            If its codex size, token count, channels or subjects differ from this model's.
        """
        if not isinstance(tokenizer, DuINVQVAE):
            raise ValueError(f"the target tokenizer must be a DuINVQVAE, got {type(tokenizer)}")
        mine, theirs = self.config, tokenizer.config
        checks = {
            "n_codes": (mine.n_codes, theirs.quantizer.n_codes),
            "n_times": (mine.n_times, theirs.n_times),
            "n_channels": (mine.n_channels, theirs.n_channels),
            "n_subjects": (mine.n_subjects, theirs.n_subjects),
        }
        for name, (a, b) in checks.items():
            if a != b:
                raise ValueError(f"target tokenizer mismatch: MAE {name}={a}, VQ-VAE has {b}")
        tokenizer.eval()
        for p in tokenizer.parameters():
            p.requires_grad_(False)
        tokenizer.quantizer.freeze()
        self._target = [tokenizer.to(self.time_table.device)]

    def _apply(self, fn: Any, recurse: bool = True) -> DuINMAE:  # type: ignore[override]
        super()._apply(fn, recurse)
        if self._target:
            self._target[0]._apply(fn)
        return self

    def random_mask(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """Random mask ``(batch, n_tokens)`` bool, True = hidden in view 0.

        Per sample, the ``int(n_tokens * (1 - mask_ratio))`` positions with the smallest
        uniform noise are kept (torch's global RNG), the others hidden.
        """
        n_tokens = self.config.n_tokens
        keep = int(n_tokens * (1 - self.config.mask_ratio))
        noise = torch.rand(batch, n_tokens, device=device)
        kept = noise.argsort(dim=1)[:, :keep]
        mask = torch.ones(batch, n_tokens, dtype=torch.bool, device=device)
        return mask.scatter_(1, kept, False)

    def forward(
        self,
        x: torch.Tensor,
        subject: torch.Tensor | int | None = None,
        mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        return_intermediates: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Predict the codes of both complementary views.

        Parameters
        ----------
        x : torch.Tensor
            float32 ``(batch, n_channels, n_times)``.
        subject : torch.Tensor
            int64 ``(batch,)``.
        mask : torch.Tensor, optional
            bool ``(batch, n_tokens)``, True = hidden in view 0 (view 1 hides the rest).
            Default: :meth:`random_mask`.
        targets : torch.Tensor, optional
            int64 ``(batch, n_tokens)`` code indices. Default: from the target tokenizer.
        return_intermediates : bool
            Also return ``tokens``, ``views`` ``(2, batch, n_tokens, d_model)`` and
            ``enc_views`` (encoder output per view).

        Returns
        -------
        dict of torch.Tensor
            ``logits`` ``(batch, n_tokens, n_codes)`` (each position from the view in which it
            was hidden), ``targets``, ``mask``, ``features`` (encoder output merged the same
            way), ``loss`` (cross-entropy averaged over all positions).
        """
        x, subject = self.check_inputs(x, subject)
        cfg = self.config
        batch = x.shape[0]
        if mask is None:
            mask = self.random_mask(batch, x.device)
        elif mask.shape != (batch, cfg.n_tokens) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be bool of shape (batch, n_tokens) = ({batch}, {cfg.n_tokens}), "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        if targets is None:
            tokenizer = self.target_tokenizer
            if tokenizer is None:
                raise ValueError(
                    "DuINMAE needs targets: pass targets= or attach a VQ-VAE with "
                    "set_target_tokenizer()"
                )
            targets = tokenizer._tokenize_checked(x, subject)
        elif targets.shape != (batch, cfg.n_tokens) or targets.dtype != torch.int64:
            raise ValueError(
                f"targets must be int64 of shape (batch, n_tokens) = ({batch}, {cfg.n_tokens}), "
                f"got {targets.dtype} {tuple(targets.shape)}"
            )
        return self._run(x, subject, mask, targets, return_intermediates)

    def _compute(
        self,
        x: torch.Tensor,
        subject: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
        return_intermediates: bool,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        batch = x.shape[0]
        _, tokens = self.embed(x, subject)  # (B, L, D)
        hidden = mask[:, :, None]
        fill = self.mask_embedding.to(tokens.dtype)
        view0 = torch.where(hidden, fill, tokens)
        view1 = torch.where(hidden, tokens, fill)
        # Both views in one encoder batch (2B): one pass, shared weights, independent dropout.
        enc = self.encode(torch.cat([view0, view1], dim=0))
        enc0, enc1 = enc[:batch], enc[batch:]  # type: ignore[index]
        # The head is per token, so merging before it is exact and halves its cost.
        features = torch.where(hidden, enc0, enc1)
        logits = self.head(features)  # (B, L, n_codes)
        loss = cfg.loss_weight * F.cross_entropy(
            logits.reshape(-1, cfg.n_codes), targets.reshape(-1)
        )
        out = {
            "logits": logits,
            "targets": targets,
            "mask": mask,
            "features": features,
            "loss": loss,
        }
        if return_intermediates:
            out.update(
                tokens=tokens,
                views=torch.stack([view0, view1]),
                enc_views=torch.stack([enc0, enc1]),
            )
        return out


class DuINClassifier(DuINModel):
    """Stage 3 word classifier: encoder -> (optional frozen codex) -> flatten -> MLP head.

    Parameters
    ----------
    config : ClassifierConfig, optional
        Defaults to the paper's configuration (61 words, 3000 samples).

    Notes
    -----
    ``loss="ce"`` (default) is the cross-entropy of the logits. ``loss="reference"`` reproduces
    the paper code, which applies a sigmoid and then a softmax cross-entropy to the sigmoid
    outputs: its loss is bounded in about [3.14, 5.10] for 61 classes and nearly flat in the
    logits. Predictions (argmax) are the same either way.
    """

    registry_name: ClassVar[str] = "duin_cls"
    config_class: ClassVar[type[DuINConfig]] = ClassifierConfig
    config: ClassifierConfig

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__(config or ClassifierConfig())
        cfg = self.config
        self.quantizer: NormEMAVectorQuantizer | None = None
        if cfg.quantize_features:
            self.quantizer = NormEMAVectorQuantizer(cfg.d_model, cfg.quantizer).freeze()
        layers: list[nn.Module] = []
        width = cfg.n_tokens * cfg.d_model
        for hidden in cfg.head_hidden:
            layers += [nn.Dropout(cfg.head_dropout), nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers += [nn.Dropout(cfg.head_dropout), nn.Linear(width, cfg.n_classes)]
        self.head = nn.Sequential(*layers)
        for module in self.head:
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self,
        x: torch.Tensor,
        subject: torch.Tensor | int | None = None,
        labels: torch.Tensor | None = None,
        return_intermediates: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Classify trials.

        Parameters
        ----------
        x : torch.Tensor
            float32 ``(batch, n_channels, n_times)``.
        subject : torch.Tensor
            int64 ``(batch,)``.
        labels : torch.Tensor, optional
            int64 ``(batch,)`` class indices; adds ``loss``.
        return_intermediates : bool
            Also return ``x_h``, ``tokens``, ``enc_in``, ``enc_out``, ``hidden`` (last hidden
            layer of the head) and ``probs`` (sigmoid of the logits, the reference output).

        Returns
        -------
        dict of torch.Tensor
            ``logits`` ``(batch, n_classes)`` (head output, before any sigmoid/softmax),
            ``features`` ``(batch, n_tokens, d_model)`` (what the head reads: the encoder
            output, or its quantised version with ``quantize_features``), and ``loss``.
        """
        x, subject = self.check_inputs(x, subject)
        if labels is not None:
            self._check_labels(labels, x.shape[0])
        fold = None if return_intermediates else self._inference_fold()
        return self._run(x, subject, labels, return_intermediates, fold)

    def _compute(
        self,
        x: torch.Tensor,
        subject: torch.Tensor,
        labels: torch.Tensor | None,
        return_intermediates: bool,
        fold: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        if fold is not None:
            x_h = tokens = None
            enc_in = self.embed_folded(x, subject, fold)
        else:
            x_h, tokens = self.embed(x, subject)
            enc_in = tokens + self.time_table
        enc_out = self.encoder(enc_in)
        features = enc_out
        if self.quantizer is not None:
            features = self.quantizer(enc_out, update=False)["out"]
        flat = features.flatten(1)  # token-major: index l * d_model + d
        hidden = self.head[:-2](flat) if return_intermediates else None
        logits = self.head(flat)
        out = {"logits": logits, "features": features}
        if labels is not None:
            out["loss"] = self._loss(logits, labels)
        if return_intermediates:
            out.update(
                x_h=x_h,
                tokens=tokens,
                enc_in=enc_in,
                enc_out=enc_out,
                hidden=hidden,  # type: ignore[dict-item]
                probs=torch.sigmoid(logits),
            )
        return out

    @staticmethod
    def _check_labels(labels: torch.Tensor, batch: int) -> None:
        if labels.shape != (batch,) or labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be int64 of shape (batch,) = ({batch},), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The configured classification loss (see class notes).

        Parameters
        ----------
        logits : torch.Tensor
            ``(batch, n_classes)`` head output.
        labels : torch.Tensor
            int64 ``(batch,)``.

        Returns
        -------
        torch.Tensor
            0-d loss.
        """
        self._check_labels(labels, logits.shape[0])
        return self._loss(logits, labels)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "reference":
            return F.cross_entropy(torch.sigmoid(logits), labels)
        return F.cross_entropy(logits, labels)


def band_log_power(x: torch.Tensor, patch_len: int, bands: list[list[int]]) -> torch.Tensor:
    """Log mean power of each patch in FFT-bin bands.

    Parameters
    ----------
    x : torch.Tensor
        ``(batch, n_channels, n_times)``, ``n_times`` a multiple of ``patch_len``.
    patch_len : int
        Samples per patch (one token).
    bands : list of [int, int]
        ``[lo, hi)`` rFFT bins of one patch.

    Returns
    -------
    torch.Tensor
        ``(batch, n_channels, n_tokens, n_bands)``, no gradient.
    """
    with torch.no_grad():
        patches = x.float().unflatten(-1, (-1, patch_len))  # (B, C, L, patch_len)
        power = torch.fft.rfft(patches, dim=-1).abs().pow(2)  # (B, C, L, patch_len // 2 + 1)
        per_band = [power[..., lo:hi].mean(-1) for lo, hi in bands]
        return torch.stack(per_band, dim=-1).clamp_min(1e-12).log()


#: The modules :func:`transfer_encoder` copies from a pretrained model.
TRANSFERRED_MODULES = ("subject_layer", "tokenizer", "encoder")


def transfer_encoder(src: DuINModel, dst: DuINModel, include_quantizer: bool = False) -> None:
    """Copy subject layer, tokenizer (with BatchNorm statistics) and encoder from ``src`` to ``dst``.

    Parameters
    ----------
    src, dst : DuINModel
        Any two Du-IN models (e.g. VQ-VAE -> MAE, MAE -> classifier).
    include_quantizer : bool
        Also copy the codex and its projections (``src`` must be a VQ-VAE and ``dst`` a VQ-VAE or
        a classifier with ``quantize_features=True``).

    Raises
    ------
    ValueError
        If a tensor's shape differs (e.g. different channel or subject counts), naming it.
    """
    names = list(TRANSFERRED_MODULES)
    if include_quantizer:
        if getattr(src, "quantizer", None) is None:
            raise ValueError(f"{type(src).__name__} has no quantizer to transfer")
        if getattr(dst, "quantizer", None) is None:
            raise ValueError(
                f"{type(dst).__name__} has no quantizer (for a classifier set quantize_features=True)"
            )
        names.append("quantizer")
    for name in names:
        src_state = getattr(src, name).state_dict()
        dst_module = getattr(dst, name)
        dst_state = dst_module.state_dict()
        if set(src_state) != set(dst_state):
            missing = sorted(set(src_state) ^ set(dst_state))
            raise ValueError(f"cannot transfer {name}: different structure (keys {missing[:5]})")
        for key, value in src_state.items():
            if value.shape != dst_state[key].shape:
                raise ValueError(
                    f"cannot transfer {name}.{key}: source shape {tuple(value.shape)} != "
                    f"destination shape {tuple(dst_state[key].shape)} (different channel count, "
                    "subject count or architecture?)"
                )
        dst_module.load_state_dict(src_state)

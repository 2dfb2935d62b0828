"""The three Du-IN stages as thin task definitions over the generic :class:`Trainer`.

Each stage is a typed run configuration (``optim``/``trainer`` from :mod:`duin.config`, a
``model`` section from :mod:`duin.models.config`, a ``data`` section defined here) plus a
function that builds the model, wires the hand-off from the previous stage and calls
:meth:`Trainer.fit`:

1. :func:`train_vqvae`: the VQ-VAE neural tokenizer on unlabelled pretraining crops.
2. :func:`train_mae`: masked code modelling; a frozen VQ-VAE (tokenizer + codex, eval mode)
   gives the target code of every token (reference §2.7).
3. :func:`train_classifier`: the word classifier. The paper's variants are configurations,
   not code paths (:data:`VARIANTS`): ``scratch``; ``vqvae`` (encoder initialised from the
   VQ-VAE); ``vqvae+vq`` (encoder and frozen codex from the VQ-VAE, the head reads quantised
   tokens); ``mae`` (encoder from the MAE); ``poms`` (encoder from one subject's cut of a
   multi-subject MAE, :func:`duin.models.subjects.extract_subject`). Nothing is frozen except
   the codex in ``vqvae+vq``.

Model selection is leak-free by default: the trainer keeps the best validation epoch (ties keep
the earliest) and the test split is evaluated once, on that checkpoint
(:func:`evaluate_classifier`). With ``protocol: reference`` the test split is also evaluated
every epoch and :func:`select_epoch` reproduces the paper code's choice (highest validation
accuracy rounded to 4 decimals, ties broken by the highest *test* accuracy), which leaks test
information into the selection; reports say so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from duin.config import ConfigError, RunConfig, load_config
from duin.data.preprocess import PreprocessConfig
from duin.data.simulate import SimulationConfig
from duin.evaluation.metrics import codex_usage
from duin.models.config import ClassifierConfig, MAEConfig, VQVAEConfig
from duin.models.duin import (
    TRANSFERRED_MODULES,
    DuINClassifier,
    DuINMAE,
    DuINModel,
    DuINVQVAE,
    optimizer_param_groups,
    transfer_encoder,
)
from duin.models.registry import load_state_checked, save_model
from duin.training.trainer import Batch, Trainer, TrainResult

__all__ = [
    "ARCHITECTURE_FIELDS",
    "STAGE_CONFIGS",
    "VARIANTS",
    "ClsRunConfig",
    "DataConfig",
    "MAERunConfig",
    "VQVAERunConfig",
    "build_classifier",
    "classifier_evaluate_fn",
    "code_counts",
    "codex_count_metrics",
    "evaluate_classifier",
    "load_stage_config",
    "load_weights",
    "mae_evaluate_fn",
    "predict_logits",
    "select_epoch",
    "train_classifier",
    "train_mae",
    "train_vqvae",
]

logger = logging.getLogger(__name__)

#: Classifier initialisations of the paper's Table 2 (``cls.variant``).
VARIANTS: tuple[str, ...] = ("scratch", "vqvae", "vqvae+vq", "mae", "poms")

#: Model fields that must equal those of the checkpoint an encoder is transferred from.
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "n_channels",
    "n_subjects",
    "subject_channels",
    "patch_len",
    "d_neural",
    "tokenizer_filters",
    "tokenizer_kernels",
    "tokenizer_strides",
    "n_blocks",
    "n_heads",
    "d_head",
    "d_ff",
)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where the data come from and how trials and pretraining crops are made.

    Parameters
    ----------
    source : str or None
        A BIDS root, a released Du-IN root or a directory written by ``duin simulate``
        (auto-detected). ``None``: simulate a corpus in memory from ``simulation``.
    subjects : list of str or None
        Subjects to use (default: all).
    n_channels : int or None
        Keep the top-k channels of each subject by contribution score (paper: 10); the ranking
        model is trained on training trials only. ``None``: keep every channel.
    channels : dict or None
        Explicit channel list per subject (``{"01": ["A4-A5", ...]}``), in input order; skips the
        ranking.
    selection_epochs : int or None
        Epochs of the channel-ranking classifier (default: the ``cls`` recipe's epochs).
    preprocess : PreprocessConfig or None
        Filters, notch, resampling and re-referencing (paper defaults). ``None`` skips
        preprocessing; the released layout is already preprocessed and is never re-filtered.
    trial_offset : float
        Start of the trial window relative to each event onset, in seconds.
    split : tuple of float
        Train/validation/test fractions of each word's trials.
    train_trials_per_word : int or None
        Label budget: fine-tune (and rank channels) on only the first this-many training trials
        of each word, in recording order; validation and test trials are unchanged. ``None``:
        every training trial.
    shift : float
        Maximum random time shift (seconds) of training trials (augmentation; 0 = off).
    pretrain_data : {"auto", "rest", "all"}
        Recordings cut into pretraining crops: ``rest`` = recordings without events (non-task);
        ``all`` = every recording, including the task runs with the validation and test trials
        of the run's split (+- 1 s) cut out, so pretraining sees the training trials' signal,
        unlabelled, and never a held-out trial (the paper's "w/ DD" pretrains on the test trials
        too); ``auto`` = ``rest`` when there is any, else ``all``.
    pretrain_window : float
        Pretraining recordings are cut into windows of this many seconds; each epoch draws one
        random crop of ``model.n_times`` samples per window (paper: 8 s).
    pretrain_step : float or None
        Start-to-start distance of the pretraining windows in seconds (paper: 4 s, i.e. 8-s
        windows with 4 s overlap, twice the windows per epoch). ``None``: back-to-back windows.
    max_pretrain_windows : int or None
        Use at most this many windows per subject (evenly spaced; ``None`` = all).
    simulation : SimulationConfig
        Corpus simulated when ``source`` is ``None``.
    """

    source: str | None = None
    subjects: list[str] | None = None
    n_channels: int | None = 10
    channels: dict[str, list[str]] | None = None
    selection_epochs: int | None = None
    preprocess: PreprocessConfig | None = field(default_factory=PreprocessConfig)
    trial_offset: float = 0.0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    train_trials_per_word: int | None = None
    shift: float = 0.3
    pretrain_data: Literal["auto", "rest", "all"] = "auto"
    pretrain_window: float = 8.0
    pretrain_step: float | None = None
    max_pretrain_windows: int | None = None
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        if self.n_channels is not None and self.n_channels < 1:
            raise ValueError(f"n_channels must be >= 1 or null (all), got {self.n_channels}")
        if self.selection_epochs is not None and self.selection_epochs < 1:
            raise ValueError(f"selection_epochs must be >= 1, got {self.selection_epochs}")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or self.split[0] <= 0:
            raise ValueError(f"split must be 3 fractions (train > 0, val, test), got {self.split}")
        if not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must sum to 1, got {self.split}")
        if self.train_trials_per_word is not None and self.train_trials_per_word < 1:
            raise ValueError(
                f"train_trials_per_word must be >= 1 or null (all), got {self.train_trials_per_word}"
            )
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0 seconds, got {self.shift}")
        if self.pretrain_window <= 0:
            raise ValueError(f"pretrain_window must be > 0 seconds, got {self.pretrain_window}")
        if self.pretrain_step is not None and self.pretrain_step <= 0:
            raise ValueError(f"pretrain_step must be > 0 seconds or null, got {self.pretrain_step}")
        if self.max_pretrain_windows is not None and self.max_pretrain_windows < 1:
            raise ValueError(f"max_pretrain_windows must be >= 1, got {self.max_pretrain_windows}")
        if self.preprocess is not None:
            self.preprocess.validate()
        self.simulation.validate()


@dataclass
class VQVAERunConfig(RunConfig):
    """Stage 1 run: ``model`` is a :class:`~duin.models.config.VQVAEConfig`.

    ``model.n_channels`` and ``model.n_subjects`` are set from the data (one subject per run, or
    every subject of a multi-subject run, :mod:`duin.workflows.pooled`).
    """

    model: VQVAEConfig = field(default_factory=VQVAEConfig)  # type: ignore[assignment]
    data: DataConfig = field(default_factory=DataConfig)  # type: ignore[assignment]


@dataclass
class MAERunConfig(RunConfig):
    """Stage 2 run: ``model`` is a :class:`~duin.models.config.MAEConfig`.

    ``n_codes``, ``n_times``, ``n_channels`` and ``n_subjects`` follow the VQ-VAE checkpoint.
    """

    model: MAEConfig = field(default_factory=MAEConfig)  # type: ignore[assignment]
    data: DataConfig = field(default_factory=DataConfig)  # type: ignore[assignment]
    #: Refuse a VQ-VAE whose codex perplexity on the MAE's training crops is below this (its
    #: targets would be nearly constant and the MAE would learn nothing); 0 disables the check.
    min_codex_perplexity: float = 8.0

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        super().validate()
        if self.min_codex_perplexity < 0:
            raise ValueError(f"min_codex_perplexity must be >= 0, got {self.min_codex_perplexity}")


@dataclass
class ClsRunConfig(RunConfig):
    """Stage 3 run: ``model`` is a :class:`~duin.models.config.ClassifierConfig`.

    Parameters
    ----------
    variant : {"scratch", "vqvae", "vqvae+vq", "mae", "poms"}
        Initialisation (see :data:`VARIANTS`); every variant but ``scratch`` needs an init
        checkpoint (``poms``: a multi-subject MAE run).
    seeds : list of int or None
        Seeds to run per subject (each changes split, init, order and augmentation; the paper
        uses 42, 0, 1, 2, 3, 4). ``None``: just ``seed``.
    pretrained_lr_scale : float
        Multiplies the learning rate of the parameters copied from the init checkpoint (subject
        layer, tokenizer, encoder); the new head keeps the scheduled LR. 1 = the paper (one LR
        for all). No effect on ``scratch``.
    pretrained_frozen_epochs : int
        Keep the copied parameters fixed (LR 0) for this many first epochs, so the random head
        is fitted on the pretrained features before their first update (linear-probe then
        fine-tune). 0 = the paper. No effect on ``scratch``.
    """

    model: ClassifierConfig = field(default_factory=ClassifierConfig)  # type: ignore[assignment]
    data: DataConfig = field(default_factory=DataConfig)  # type: ignore[assignment]
    variant: Literal["scratch", "vqvae", "vqvae+vq", "mae", "poms"] = "scratch"
    seeds: list[int] | None = None
    pretrained_lr_scale: float = 1.0
    pretrained_frozen_epochs: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        super().validate()
        if self.pretrained_lr_scale < 0:
            raise ValueError(f"pretrained_lr_scale must be >= 0, got {self.pretrained_lr_scale}")
        if not 0 <= self.pretrained_frozen_epochs < self.optim.epochs:
            raise ValueError(
                f"pretrained_frozen_epochs must be in [0, optim.epochs={self.optim.epochs}), "
                f"got {self.pretrained_frozen_epochs}"
            )
        if self.seeds is not None:
            if not self.seeds:
                raise ValueError("seeds must be a non-empty list or null")
            if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds must be distinct non-negative ints, got {self.seeds}")
        if self.trainer.selection_metric.split("/")[0] not in ("val", "train"):
            raise ValueError(
                f"trainer.selection_metric must be a val/* (or train/*) metric, got "
                f"{self.trainer.selection_metric!r}: the test split never drives selection"
            )

    @property
    def run_seeds(self) -> list[int]:
        """The seeds to run."""
        return list(self.seeds) if self.seeds else [self.seed]


#: Stage name -> run-config class.
STAGE_CONFIGS: dict[str, type[RunConfig]] = {
    "vqvae": VQVAERunConfig,
    "mae": MAERunConfig,
    "cls": ClsRunConfig,
}


def load_stage_config(
    stage: str, path: str | Path | None = "quick", overrides: Sequence[str] = ()
) -> RunConfig:
    """Load and validate one stage's configuration (file section + ``--set`` overrides).

    Parameters
    ----------
    stage : {"vqvae", "mae", "cls"}
        The stage section.
    path : str, pathlib.Path or None
        YAML file or packaged config name (``quick``, ``paper``); None = dataclass defaults.
    overrides : sequence of str
        ``key=value`` strings, e.g. ``optim.lr=1e-4``. A key starting with a stage name
        (``vqvae.model.power_loss_weight=0``) applies to that stage only and is skipped for the
        others, so one list can configure every stage (the demo, ``duin bench``-style).

    Returns
    -------
    RunConfig
        A :class:`VQVAERunConfig`, :class:`MAERunConfig` or :class:`ClsRunConfig`.

    Raises
    ------
    ConfigError
        Unknown key (with the valid keys) or impossible value, before any work.
    """
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGE_CONFIGS)}")
    own = []
    for item in overrides:
        head, dot, rest = item.partition(".")
        if dot and head in STAGE_CONFIGS:
            if head == stage:
                own.append(rest)
        else:
            own.append(item)
    return load_config(path, own, cls=STAGE_CONFIGS[stage], section=stage)


# ---------------------------------------------------------------------------------------------
# Checkpoint helpers
# ---------------------------------------------------------------------------------------------


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load ``model.safetensors`` of a checkpoint directory into ``model`` (names checked).

    Parameters
    ----------
    model : nn.Module
        The model to fill (any device).
    directory : pathlib.Path
        Checkpoint directory.
    """
    from safetensors.torch import load_file

    from duin.utils.integrity import verify_manifest

    verify_manifest(directory)
    state = load_file(str(Path(directory) / "model.safetensors"), device="cpu")
    load_state_checked(model, state, source=str(directory))


def _save(model: nn.Module, directory: Path) -> None:
    save_model(model, directory)


def param_groups_fn(
    reference: bool, pretrained: Mapping[str, Any] | None = None
) -> Callable[[nn.Module, float], list[dict[str, Any]]]:
    """The trainer's ``param_groups_fn``: decay/no-decay groups (the reference's with ``reference``).

    Parameters
    ----------
    reference : bool
        Decay the subject layers' shift matrices as the reference code does.
    pretrained : mapping, optional
        Extra group settings (``lr_scale``, ``frozen_epochs``) for the parameters of
        :data:`TRANSFERRED_MODULES`, which then get their own decay/no-decay groups.
    """

    def groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        out = optimizer_param_groups(model, weight_decay, reference=reference)
        if pretrained:
            ids = {
                id(p)
                for name in TRANSFERRED_MODULES
                if hasattr(model, name)
                for p in getattr(model, name).parameters()
            }
            split = []
            for g in out:
                split.append({**g, "params": [p for p in g["params"] if id(p) not in ids]})
                split.append(
                    {**g, **pretrained, "params": [p for p in g["params"] if id(p) in ids]}
                )
            out = split
        return [g for g in out if g["params"]]

    return groups


def model_config(cfg: Any, cls: type, **overrides: Any) -> Any:
    """A model configuration of class ``cls`` from ``cfg`` (dataclass or dict) plus ``overrides``."""
    data = dataclasses.asdict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    data.update(overrides)
    return cls.from_dict(data)


def _log_model(name: str, model: nn.Module) -> None:
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("%s: %s trainable parameters", name, f"{n:,}")


def _fit(
    model: nn.Module,
    cfg: Any,
    train_data: Dataset,
    val_data: Dataset | None,
    run_dir: str | Path,
    *,
    resume: bool,
    quiet: bool,
    **extra: Any,
) -> TrainResult:
    """Train a stage model with the one trainer and the stage's shared settings.

    ``extra`` holds the stage-specific trainer arguments (``evaluate_fn``, ``monitor_data``, or a
    replacement ``trainer`` config).
    """
    settings: dict[str, Any] = {
        "optim": cfg.optim,
        "trainer": cfg.trainer,
        "seed": cfg.seed,
        "config": cfg,
        "param_groups_fn": param_groups_fn(cfg.protocol == "reference"),
        "save_model_fn": _save,
        "load_weights_fn": load_weights,
    }
    settings.update(extra)
    trainer = Trainer(
        model, train_data, val_data, run_dir=run_dir, resume=resume, quiet=quiet, **settings
    )
    return trainer.fit()


# ---------------------------------------------------------------------------------------------
# Evaluation functions used by the trainer
# ---------------------------------------------------------------------------------------------


def classifier_evaluate_fn(model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
    """Validation metrics of a classifier: ``loss``, ``top1``, ``top5``.

    Parameters
    ----------
    model : nn.Module
        The classifier (eval mode, no grad; set by the trainer).
    batches : iterable of dict
        Batches with ``x``, ``subject``, ``labels``.

    Returns
    -------
    dict
        Sample-weighted loss and top-1/top-5 accuracies.
    """
    loss_sum, n, hit1, hit5 = 0.0, 0, 0, 0
    for batch in batches:
        out = model(**batch)
        labels = batch["labels"]
        k = min(5, out["logits"].shape[1])
        top = out["logits"].topk(k, dim=1).indices
        hit1 += int((top[:, 0] == labels).sum())
        hit5 += int((top == labels[:, None]).any(dim=1).sum())
        loss_sum += float(out["loss"]) * len(labels)
        n += len(labels)
    n = max(n, 1)
    return {"loss": loss_sum / n, "top1": hit1 / n, "top5": hit5 / n}


def codex_count_metrics(counts: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Trainer ``count_metrics_fn``: codex health from the ``counts/codes`` histogram.

    Parameters
    ----------
    counts : Mapping[str, torch.Tensor]
        Summed ``counts/<name>`` outputs of an epoch or a validation pass.

    Returns
    -------
    dict
        ``codex_perplexity`` and ``codes_used`` (see :func:`duin.evaluation.metrics.codex_usage`).
    """
    hist = counts.get("counts/codes")
    return {} if hist is None else codex_usage(hist)


def code_counts(codes: torch.Tensor, n_codes: int) -> torch.Tensor:
    """``(n_codes,)`` histogram of code indices ``codes`` (any shape)."""
    return torch.bincount(codes.reshape(-1), minlength=n_codes)


def _forward_counting(codes_key: str, n_codes: int):
    """``forward_fn`` adding the histogram of ``out[codes_key]`` as ``counts/codes``.

    The VQ-VAE counts its own ``codes``, the MAE the ``targets`` of its frozen tokenizer.
    """

    def forward(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        out = dict(model(**batch))
        out["counts/codes"] = code_counts(out[codes_key], n_codes)
        return out

    return forward


def mae_evaluate_fn(model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
    """Validation metrics of the MAE: ``loss``, token ``top1`` (masked-code accuracy) and the
    health of its targets (``codex_perplexity``, ``codes_used``).

    Parameters
    ----------
    model : nn.Module
        The MAE with its target tokenizer attached.
    batches : iterable of dict
        Batches with ``x`` and ``subject``.

    Returns
    -------
    dict
        Sample-weighted loss and token accuracy over all positions.
    """
    loss_sum, n, hit, tokens = 0.0, 0, 0, 0
    hist: torch.Tensor | None = None
    for batch in batches:
        out = model(**batch)
        b = out["targets"].shape[0]
        loss_sum += float(out["loss"]) * b
        n += b
        hit += int((out["logits"].argmax(-1) == out["targets"]).sum())
        tokens += out["targets"].numel()
        batch_hist = code_counts(out["targets"], out["logits"].shape[-1])
        hist = batch_hist if hist is None else hist + batch_hist
    metrics = {"loss": loss_sum / max(n, 1), "top1": hit / max(tokens, 1)}
    if hist is not None:
        metrics.update(codex_usage(hist))
    return metrics


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def train_vqvae(
    cfg: VQVAERunConfig,
    train_data: Dataset,
    val_data: Dataset | None,
    run_dir: str | Path,
    *,
    n_channels: int,
    subject_channels: Sequence[int] | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> TrainResult:
    """Stage 1: train the VQ-VAE tokenizer on pretraining crops of one subject (or several).

    Parameters
    ----------
    cfg : VQVAERunConfig
        Run configuration.
    train_data, val_data : Dataset
        Items ``{"x": (n_channels, n_times) float32, "subject": int64}``.
    run_dir : str or pathlib.Path
        Trainer run directory.
    n_channels : int
        Input channels (overrides ``cfg.model.n_channels``).
    subject_channels : sequence of int, optional
        Real channel count of each subject of a multi-subject model, in subject-index order
        (``n_channels`` is then their maximum). Default: one subject.
    resume : bool
        Continue an interrupted run.
    quiet : bool
        Hide progress bars.

    Returns
    -------
    TrainResult
        ``checkpoints/last`` is the tokenizer used downstream (reference §3.3).
    """
    torch.manual_seed(cfg.seed)
    subjects: dict[str, Any] = {"n_subjects": 1, "subject_channels": None}
    if subject_channels is not None:
        subjects = {"n_subjects": len(subject_channels), "subject_channels": list(subject_channels)}
    model_cfg = model_config(cfg.model, VQVAEConfig, n_channels=n_channels, **subjects)
    model = DuINVQVAE(model_cfg)
    _log_model("VQ-VAE", model)
    return _fit(
        model,
        cfg,
        train_data,
        val_data,
        run_dir,
        resume=resume,
        quiet=quiet,
        forward_fn=_forward_counting("codes", model_cfg.quantizer.n_codes),
        count_metrics_fn=codex_count_metrics,
    )


def train_mae(
    cfg: MAERunConfig,
    tokenizer: DuINVQVAE,
    train_data: Dataset,
    val_data: Dataset | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
) -> TrainResult:
    """Stage 2: masked code modelling with targets from a frozen VQ-VAE.

    Parameters
    ----------
    cfg : MAERunConfig
        Run configuration; ``n_codes``, ``n_times``, ``n_channels`` and ``n_subjects`` are
        taken from ``tokenizer``.
    tokenizer : DuINVQVAE
        The stage-1 model (put in eval mode and frozen here).
    train_data, val_data : Dataset
        Pretraining crops ``{"x", "subject"}``.
    run_dir : str or pathlib.Path
        Trainer run directory.
    resume, quiet : bool
        See :func:`train_vqvae`.

    Returns
    -------
    TrainResult
        ``checkpoints/last`` holds the encoder used by the classifier.
    """
    tc = tokenizer.config
    torch.manual_seed(cfg.seed)
    model_cfg = model_config(
        cfg.model,
        MAEConfig,
        n_codes=tc.quantizer.n_codes,
        n_times=tc.n_times,
        n_channels=tc.n_channels,
        n_subjects=tc.n_subjects,
        subject_channels=tc.subject_channels,
    )
    model = DuINMAE(model_cfg)
    model.set_target_tokenizer(tokenizer)
    _log_model("MAE", model)
    return _fit(
        model,
        cfg,
        train_data,
        val_data,
        run_dir,
        resume=resume,
        quiet=quiet,
        evaluate_fn=mae_evaluate_fn,
        forward_fn=_forward_counting("targets", model_cfg.n_codes),
        count_metrics_fn=codex_count_metrics,
    )


def build_classifier(
    model_cfg: ClassifierConfig,
    *,
    n_channels: int,
    variant: str = "scratch",
    init: DuINModel | None = None,
) -> DuINClassifier:
    """Build the stage-3 classifier of one paper variant.

    Parameters
    ----------
    model_cfg : ClassifierConfig
        Classifier configuration (head, loss, ``n_times``, ``n_classes``).
    n_channels : int
        Input channels.
    variant : {"scratch", "vqvae", "vqvae+vq", "mae", "poms"}
        Initialisation.
    init : DuINModel, optional
        The pretrained model for every variant but ``scratch`` (a VQ-VAE for ``vqvae`` and
        ``vqvae+vq``, an MAE for ``mae``, the subject's single-subject cut of the pooled MAE
        for ``poms``). Its architecture fields (:data:`ARCHITECTURE_FIELDS`)
        replace those of ``model_cfg``.

    Returns
    -------
    DuINClassifier
        Subject layer, tokenizer (with BatchNorm statistics) and encoder copied from ``init``;
        for ``vqvae+vq`` also the frozen codex; a fresh head.

    Raises
    ------
    ValueError
        Unknown variant, a missing or wrong-kind ``init``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    overrides: dict[str, Any] = {"n_channels": n_channels, "n_subjects": 1}
    if variant == "scratch":
        if init is not None:
            raise ValueError("variant 'scratch' takes no init checkpoint")
    else:
        expected = DuINMAE if variant in ("mae", "poms") else DuINVQVAE
        if init is None:
            raise ValueError(
                f"variant {variant!r} needs an init checkpoint (a {expected.__name__})"
            )
        if not isinstance(init, expected):
            raise ValueError(
                f"variant {variant!r} needs a {expected.__name__} checkpoint, got "
                f"{type(init).__name__}"
            )
        src = init.config
        overrides = {name: getattr(src, name) for name in ARCHITECTURE_FIELDS}
        if variant == "vqvae+vq":
            overrides["quantize_features"] = True
            overrides["quantizer"] = dataclasses.asdict(src.quantizer)  # type: ignore[attr-defined]
    model = DuINClassifier(model_config(model_cfg, ClassifierConfig, **overrides))
    if init is not None:
        transfer_encoder(init, model, include_quantizer=variant == "vqvae+vq")
    return model


def train_classifier(
    cfg: ClsRunConfig,
    model: DuINClassifier,
    train_data: Dataset,
    val_data: Dataset,
    run_dir: str | Path,
    *,
    test_data: Dataset | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> TrainResult:
    """Stage 3: fine-tune a classifier; select the best epoch on validation data.

    Parameters
    ----------
    cfg : ClsRunConfig
        Run configuration (``seed`` is this run's seed).
    model : DuINClassifier
        From :func:`build_classifier` (create it after seeding for reproducible init).
    train_data, val_data : Dataset
        Trials ``{"x", "subject", "labels"}``; training items may be augmented.
    run_dir : str or pathlib.Path
        Trainer run directory.
    test_data : Dataset, optional
        Only with ``protocol: reference``: evaluated every epoch (``test/*`` in
        ``metrics.jsonl``) for the paper's tie-break, with a weights snapshot per epoch.
    resume, quiet : bool
        See :func:`train_vqvae`.

    Returns
    -------
    TrainResult
        With ``checkpoints/best`` (clean protocol) or per-epoch snapshots (reference).
    """
    trainer_cfg = cfg.trainer
    monitor = None
    if cfg.protocol == "reference":
        if test_data is None:
            raise ValueError("protocol 'reference' evaluates the test split every epoch: pass it")
        monitor = {"test": test_data}
        trainer_cfg = dataclasses.replace(trainer_cfg, snapshot_every_epochs=1, keep_last=None)
    elif test_data is not None:
        raise ValueError(
            "protocol 'clean' never shows the test split to the trainer; evaluate it once "
            "after training with evaluate_classifier()"
        )
    _log_model(f"classifier ({cfg.variant})", model)
    extra: dict[str, Any] = {}
    if cfg.variant != "scratch" and (
        cfg.pretrained_lr_scale != 1.0 or cfg.pretrained_frozen_epochs > 0
    ):
        settings = {
            "lr_scale": cfg.pretrained_lr_scale,
            "frozen_epochs": cfg.pretrained_frozen_epochs,
        }
        extra["param_groups_fn"] = param_groups_fn(cfg.protocol == "reference", settings)
    return _fit(
        model,
        cfg,
        train_data,
        val_data,
        run_dir,
        resume=resume,
        quiet=quiet,
        trainer=trainer_cfg,
        **extra,
        evaluate_fn=classifier_evaluate_fn,
        monitor_data=monitor,
    )


def select_epoch(
    history: Sequence[Mapping[str, Any]],
    protocol: str = "clean",
    metric: str = "val/top1",
    mode: str = "max",
) -> dict[str, Any]:
    """Pick the reported epoch from ``metrics.jsonl`` records.

    Parameters
    ----------
    history : sequence of dict
        Epoch records (``epoch``, ``val/top1``, optionally ``test/top1``).
    protocol : {"clean", "reference"}
        ``clean``: best ``metric`` (ties keep the earliest epoch; the trainer's choice).
        ``reference``: highest ``val/top1`` rounded to 4 decimals, ties broken by the highest
        ``test/top1`` (the paper code; leaks test information), then the earliest epoch.
    metric : str
        Selection metric of the clean protocol.
    mode : {"max", "min"}
        Whether higher or lower is better (clean protocol).

    Returns
    -------
    dict
        ``epoch``, ``rule`` (a sentence for reports) and ``n_tied`` (epochs tied on validation).
    """
    records = [r for r in history if metric in r or "val/top1" in r]
    if not records:
        raise ValueError(f"no epoch records with {metric!r} to select from")
    if protocol == "reference":
        best_val = max(round(float(r["val/top1"]), 4) for r in records)
        tied = [r for r in records if round(float(r["val/top1"]), 4) == best_val]
        if any("test/top1" not in r for r in tied):
            raise ValueError("protocol 'reference' needs test/top1 in every epoch record")
        best = max(tied, key=lambda r: (float(r["test/top1"]), -int(r["epoch"])))
        rule = (
            "highest validation top-1 (rounded to 4 decimals); ties broken by the highest "
            "TEST top-1 (the paper code's rule: test information leaks into selection)"
        )
        return {"epoch": int(best["epoch"]), "rule": rule, "n_tied": len(tied)}
    sign = 1.0 if mode == "max" else -1.0
    values = [sign * float(r[metric]) for r in records]
    top = max(values)
    tied = [r for r, v in zip(records, values, strict=True) if v == top]
    best = min(tied, key=lambda r: int(r["epoch"]))
    rule = f"{'highest' if mode == 'max' else 'lowest'} {metric}; ties keep the earliest epoch"
    return {"epoch": int(best["epoch"]), "rule": rule, "n_tied": len(tied)}


@torch.inference_mode()
def predict_logits(
    model: nn.Module, x: np.ndarray | torch.Tensor, *, subject: int = 0, batch_size: int = 64
) -> np.ndarray:
    """Classifier logits for trials, in eval mode.

    Parameters
    ----------
    model : nn.Module
        A :class:`DuINClassifier`.
    x : array-like
        float32 ``(n_trials, n_channels, n_times)`` (normalised like the training data).
    subject : int
        Subject index.
    batch_size : int
        Trials per forward pass.

    Returns
    -------
    numpy.ndarray
        ``(n_trials, n_classes)`` float32 logits.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(np.asarray(x[start : start + batch_size]), dtype=torch.float32)
            sb = torch.full((len(xb),), subject, dtype=torch.int64)
            out.append(model(xb.to(device), sb.to(device))["logits"].float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        n_classes = getattr(getattr(model, "config", None), "n_classes", 0)
        return np.zeros((0, n_classes), dtype=np.float32)
    return np.concatenate(out)


def evaluate_classifier(
    model: nn.Module,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    subject: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """All test metrics of a classifier on one set of trials (evaluated once).

    Parameters
    ----------
    model : nn.Module
        The selected classifier.
    x : numpy.ndarray
        ``(n_trials, n_channels, n_times)`` normalised trials.
    labels : numpy.ndarray
        ``(n_trials,)`` int64 labels.
    subject : int
        Subject index.
    batch_size : int
        Trials per forward pass.

    Returns
    -------
    dict
        :func:`duin.evaluation.metrics.classification_metrics` (``top1``, ``top5``,
        ``balanced_accuracy``, ``cross_entropy``, ``confusion``, ...).
    """
    from duin.evaluation.metrics import classification_metrics

    logits = predict_logits(model, x, subject=subject, batch_size=batch_size)
    return classification_metrics(logits, np.asarray(labels, dtype=np.int64))


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (helper shared by the pipeline)."""
    from duin.utils.io import atomic_write_json

    atomic_write_json(path, json.loads(json.dumps(payload, default=_json_default)))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

"""Stages 1 and 2 over several subjects at once: one multi-subject ("poms") VQ-VAE and MAE.

``duin pretrain-vqvae --subjects all`` (or ``--subjects 01,02``) trains ONE model over the
subjects: a subject layer per subject (channel counts may differ: inputs are zero-padded to the
widest subject and the VQ-VAE's reconstruction loss is masked to each subject's real channels),
and one shared tokenizer, transformer and codex. Every subject keeps its own pretraining windows
(:func:`duin.workflows.prepare.pretrain_sets`: its own z-score statistics, and with
``pretrain_data: all`` no window overlaps any of its validation/test trials); the windows of all
subjects form one training set (:class:`~duin.data.pooled.SubjectPool`), so batches mix
subjects. ``duin pretrain-mae --subjects ...`` does the same on top of a pooled VQ-VAE, and
``duin finetune --variant poms --init MAE_RUN`` starts each subject's (single-subject)
classifier from that subject's cut of the pooled MAE (:func:`subject_models`).

Run directory of a pooled stage ``RUN``::

    RUN/config.yaml            resolved configuration
    RUN/channels.json          {"channels": {subject: [names]}, ...}: the subjects in
                               subject-index order (index 0 first), each with its channels in
                               input order; the model's subject_channels are their lengths
    RUN/data.json              data description, "pooled": true, "subjects" (index order) and
                               per-subject pretraining windows/codex health
    RUN/pooled/                the one trainer run: checkpoints/last (used downstream),
                               metrics.jsonl, TensorBoard events

(a per-subject run has ``RUN/sub-XX/`` directories instead; :func:`duin.workflows.rundir.
is_pooled_run` tells them apart).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duin.data.pooled import SubjectPool
from duin.training.stages import DataConfig, MAERunConfig, VQVAERunConfig, train_mae, train_vqvae
from duin.workflows.codex import DEFAULT_MIN_CODEX_PERPLEXITY, check_mae_targets, codex_health
from duin.workflows.prepare import (
    PreparedData,
    check_pretraining_split,
    prepare_data,
    pretrain_sets,
    resolve_channels,
)
from duin.workflows.pretrain import _split_for
from duin.workflows.rundir import (
    POOLED_DIR,
    cache_dir,
    check_kind,
    is_pooled_run,
    pooled_checkpoint_dir,
    read_channels,
    start_run,
    write_channels,
    write_data_info,
)

if TYPE_CHECKING:  # pragma: no cover
    from duin.models.duin import DuINModel

__all__ = [
    "pooled_pretrain_sets",
    "pretrain_mae_pooled",
    "pretrain_vqvae_pooled",
    "subject_models",
]

logger = logging.getLogger(__name__)


def pooled_pretrain_sets(
    prepared: PreparedData,
    data: DataConfig,
    channels: dict[str, list[str]],
    *,
    n_times: int,
    seed: int,
    protocol: str,
) -> tuple[SubjectPool, SubjectPool, dict[str, dict[str, Any]]]:
    """Train/val pretraining crops of every subject, pooled in subject-index order.

    Parameters
    ----------
    prepared : PreparedData
        The data.
    data : DataConfig
        Pretraining-window settings.
    channels : dict
        Subject -> channels, in subject-index order (the pool's subjects).
    n_times : int
        Samples per crop.
    seed : int
        Seed of the trial split (whose held-out trials the windows avoid) and of the crops.
    protocol : str
        ``clean`` or ``reference`` (the split rule).

    Returns
    -------
    (SubjectPool, SubjectPool, dict)
        Training and validation crops (items ``{"x": (n_channels, n_times), "subject"}``,
        ``n_channels`` = the widest subject) and each subject's window summary.
    """
    trains, vals, infos = [], [], {}
    for subject, names in channels.items():
        split = _split_for(prepared, subject, data, seed, protocol)
        train, val, info = pretrain_sets(
            prepared, subject, data, n_times=n_times, seed=seed, channels=names, split=split
        )
        trains.append(train)
        vals.append(val)
        infos[subject] = info
    return SubjectPool(trains), SubjectPool(vals), infos


def _pool_channels(prepared: PreparedData, channels: dict[str, list[str]]) -> dict[str, list[str]]:
    if len(prepared.subjects) < 2:
        logger.warning(
            "--subjects: only one subject (%s); the pooled model is a single-subject model",
            ", ".join(prepared.subjects),
        )
    return {s: list(channels[s]) for s in prepared.subjects}


def pretrain_vqvae_pooled(
    cfg: VQVAERunConfig,
    out: str | Path,
    *,
    selection: Any = None,
    prepared: PreparedData | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> Path:
    """Stage 1 over every subject of ``cfg.data``: one multi-subject VQ-VAE.

    Parameters
    ----------
    cfg : VQVAERunConfig
        Stage configuration (``data.subjects`` picks the subjects; ``None`` = all).
    out : str or pathlib.Path
        Run directory (layout in the module docstring).
    selection : ClsRunConfig, optional
        Classifier recipe of the per-subject channel ranking (when ``data.n_channels`` asks
        for one).
    prepared, cache, resume, quiet
        See :func:`duin.workflows.pretrain.pretrain_vqvae`.

    Returns
    -------
    pathlib.Path
        The run directory.
    """
    from duin.models.registry import load_model

    out = Path(out)
    start_run(out, cfg, resume)
    prepared = prepared or prepare_data(cfg.data, cache_dir(out, cache), quiet=quiet)
    chosen = resolve_channels(prepared, cfg.data, selection, out, seed=cfg.seed, quiet=quiet)
    channels = _pool_channels(prepared, chosen)
    train, val, infos = pooled_pretrain_sets(
        prepared,
        cfg.data,
        channels,
        n_times=cfg.model.n_times,
        seed=cfg.seed,
        protocol=cfg.protocol,
    )
    logger.info(
        "pooled VQ-VAE: %d subjects, %d training windows (%s)",
        len(channels),
        len(train),
        ", ".join(f"sub-{s}: {i['n_train_windows']}" for s, i in infos.items()),
    )
    fit = train_vqvae(
        cfg,
        train,
        val,
        out / POOLED_DIR,
        n_channels=train.n_channels,
        subject_channels=train.subject_channels,
        resume=resume,
        quiet=quiet,
    )
    health = codex_health(load_model(fit.last_dir), val)
    logger.info(
        "pooled VQ-VAE: codex perplexity %.1f, %d of %d codes used (validation crops)",
        health["codex_perplexity"],
        health["codes_used"],
        cfg.model.quantizer.n_codes,
    )
    if health["codex_perplexity"] < DEFAULT_MIN_CODEX_PERPLEXITY:
        logger.warning(
            "the pooled VQ-VAE codex collapsed (perplexity %.1f < %g): MAE targets will be "
            "nearly constant. Train longer or on more non-task signal",
            health["codex_perplexity"],
            DEFAULT_MIN_CODEX_PERPLEXITY,
        )
    write_data_info(
        out,
        prepared,
        {
            "stage": "vqvae",
            "pooled": True,
            "subjects": list(channels),
            "pretraining": infos,
            **{f"{k}_val": v for k, v in health.items()},
        },
    )
    return out


def pretrain_mae_pooled(
    cfg: MAERunConfig,
    out: str | Path,
    vqvae_run: str | Path,
    *,
    prepared: PreparedData | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    force: bool = False,
) -> Path:
    """Stage 2 over the subjects of a pooled VQ-VAE: one multi-subject MAE.

    Parameters
    ----------
    cfg : MAERunConfig
        Stage configuration; ``data.subjects`` must select the VQ-VAE run's subjects.
    out : str or pathlib.Path
        Run directory (layout in the module docstring).
    vqvae_run : str or pathlib.Path
        A :func:`pretrain_vqvae_pooled` run (its ``channels.json`` fixes subject order and
        channels).
    prepared, cache, resume, quiet, force
        See :func:`duin.workflows.pretrain.pretrain_mae`.

    Returns
    -------
    pathlib.Path
        The run directory.

    Raises
    ------
    ValueError
        ``vqvae_run`` is not a pooled VQ-VAE run, or the data hold other subjects.
    CodexCollapsedError
        The codex perplexity on the training crops is below ``cfg.min_codex_perplexity``.
    """
    from duin.models.duin import DuINVQVAE
    from duin.models.registry import load_model

    out, vqvae_run = Path(out), Path(vqvae_run)
    if not is_pooled_run(vqvae_run):
        raise ValueError(
            f"{vqvae_run}: not a multi-subject VQ-VAE run (no {POOLED_DIR}/checkpoints); "
            "train it with 'duin pretrain-vqvae --subjects ...'"
        )
    ckpt = pooled_checkpoint_dir(vqvae_run)
    check_kind(ckpt, ("duin_vqvae",), "pretrain-mae --vqvae")
    channels = read_channels(vqvae_run)  # subject-index order
    check_pretraining_split(vqvae_run, cfg.data, [cfg.seed], cfg.protocol)
    start_run(out, cfg, resume)
    prepared = prepared or prepare_data(cfg.data, cache_dir(out, cache), quiet=quiet)
    if list(prepared.subjects) != list(channels):
        raise ValueError(
            f"the pooled VQ-VAE {vqvae_run} was trained on subjects {list(channels)}, the data "
            f"hold {prepared.subjects}: a pooled MAE needs the same subjects (data.subjects)"
        )
    tokenizer = load_model(ckpt)
    if not isinstance(tokenizer, DuINVQVAE):
        raise ValueError(f"{ckpt} holds a {type(tokenizer).__name__}, not a VQ-VAE")
    write_channels(out, channels, method=f"from {vqvae_run}", seed=None)
    train, val, infos = pooled_pretrain_sets(
        prepared,
        cfg.data,
        channels,
        n_times=tokenizer.config.n_times,
        seed=cfg.seed,
        protocol=cfg.protocol,
    )
    health = check_mae_targets(
        tokenizer,
        train,
        ckpt,
        "pooled MAE",
        min_perplexity=cfg.min_codex_perplexity,
        force=force,
    )
    train_mae(cfg, tokenizer, train, val, out / POOLED_DIR, resume=resume, quiet=quiet)
    write_data_info(
        out,
        prepared,
        {
            "stage": "mae",
            "pooled": True,
            "subjects": list(channels),
            "vqvae_run": str(vqvae_run),
            "pretraining": infos,
            **{f"vqvae_{k}": v for k, v in health.items()},
        },
    )
    return out


def subject_models(run: str | Path, subjects: Sequence[str]) -> dict[str, DuINModel]:
    """Each subject's single-subject cut of a pooled run's model (``finetune --variant poms``).

    Parameters
    ----------
    run : str or pathlib.Path
        A pooled pretraining run (layout in the module docstring).
    subjects : sequence of str
        Subjects wanted (each must be one of the run's).

    Returns
    -------
    dict
        Subject -> model with ``n_subjects=1`` and the subject's channel count
        (:func:`duin.models.subjects.extract_subject`).

    Raises
    ------
    ValueError
        A subject the run was not trained on.
    """
    from duin.models.registry import load_model
    from duin.models.subjects import extract_subject

    run = Path(run)
    order = list(read_channels(run))  # subject-index order
    missing = [s for s in subjects if s not in order]
    if missing:
        raise ValueError(f"{run} was pretrained on subjects {order}, not on {missing}")
    pooled = load_model(pooled_checkpoint_dir(run))
    return {s: extract_subject(pooled, order.index(s)) for s in subjects}  # type: ignore[arg-type]

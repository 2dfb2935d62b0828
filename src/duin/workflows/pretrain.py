"""Stages 1 and 2: the VQ-VAE codex and the masked-code model (MAE), one per subject.

Reads the data (:mod:`duin.workflows.prepare`) and, for the MAE, the VQ-VAE run's
``channels.json`` and ``sub-XX/checkpoints/last``. Writes a run directory: ``config.yaml``,
``channels.json`` (plus the channel ranking when stage 1 ranked them), ``data.json`` and one
trainer run per subject in ``sub-XX/`` (checkpoints, ``metrics.jsonl``, TensorBoard events).
"""

from __future__ import annotations

import logging
from pathlib import Path

from duin.data.splits import Split, split_protocol, split_trials
from duin.training.stages import (
    ClsRunConfig,
    DataConfig,
    MAERunConfig,
    VQVAERunConfig,
    train_mae,
    train_vqvae,
)
from duin.workflows.codex import (
    DEFAULT_MIN_CODEX_PERPLEXITY,
    check_mae_targets,
    codex_health,
)
from duin.workflows.prepare import (
    PreparedData,
    check_pretraining_split,
    prepare_data,
    pretrain_sets,
    resolve_channels,
)
from duin.workflows.rundir import (
    cache_dir,
    check_kind,
    checkpoint_dir,
    read_channels,
    start_run,
    write_channels,
    write_data_info,
)

__all__ = ["pretrain_mae", "pretrain_vqvae"]

logger = logging.getLogger(__name__)


def pretrain_vqvae(
    cfg: VQVAERunConfig,
    out: str | Path,
    *,
    selection: ClsRunConfig | None = None,
    prepared: PreparedData | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> Path:
    """Stage 1 for every subject: choose channels, then train one VQ-VAE per subject.

    Parameters
    ----------
    cfg : VQVAERunConfig
        Stage configuration.
    out : str or pathlib.Path
        Run directory (``out/sub-XX`` per subject; ``checkpoints/last`` is used downstream).
    selection : ClsRunConfig, optional
        Classifier recipe for the channel ranking (when ``data.n_channels`` asks for one).
    prepared : PreparedData, optional
        Already prepared data (the demo shares it between stages).
    cache : str or pathlib.Path, optional
        Preprocessing cache (default ``out/cache``).
    resume : bool
        Continue an interrupted run.
    quiet : bool
        Hide progress bars.

    Returns
    -------
    pathlib.Path
        The run directory.
    """
    out = Path(out)
    start_run(out, cfg, resume)
    prepared = prepared or prepare_data(cfg.data, cache_dir(out, cache), quiet=quiet)
    channels = resolve_channels(prepared, cfg.data, selection, out, seed=cfg.seed, quiet=quiet)
    infos = {}
    for subject in prepared.subjects:
        split = _split_for(prepared, subject, cfg.data, cfg.seed, cfg.protocol)
        train, val, info = pretrain_sets(
            prepared,
            subject,
            cfg.data,
            n_times=cfg.model.n_times,
            seed=cfg.seed,
            channels=channels[subject],
            split=split,
        )
        infos[subject] = info
        logger.info("VQ-VAE sub-%s: %d training windows", subject, info["n_train_windows"])
        fit = train_vqvae(
            cfg,
            train,
            val,
            out / f"sub-{subject}",
            n_channels=len(channels[subject]),
            resume=resume,
            quiet=quiet,
        )
        from duin.models.registry import load_model

        health = codex_health(load_model(fit.last_dir), val if val is not None else train)
        info.update({f"{k}_val": v for k, v in health.items()})
        logger.info(
            "VQ-VAE sub-%s: codex perplexity %.1f, %d of %d codes used (validation crops)",
            subject,
            health["codex_perplexity"],
            health["codes_used"],
            cfg.model.quantizer.n_codes,
        )
        if health["codex_perplexity"] < DEFAULT_MIN_CODEX_PERPLEXITY:
            logger.warning(
                "sub-%s: the VQ-VAE codex collapsed (perplexity %.1f < %g): MAE targets will be "
                "nearly constant. Train longer or on more non-task signal",
                subject,
                health["codex_perplexity"],
                DEFAULT_MIN_CODEX_PERPLEXITY,
            )
    write_data_info(out, prepared, {"stage": "vqvae", "pretraining": infos})
    return out


def _split_for(
    prepared: PreparedData, subject: str, data: DataConfig, seed: int, protocol: str
) -> Split | None:
    """The trial split whose held-out trials pretraining on task runs must avoid."""
    try:
        sfreq = prepared.sfreq(subject)
        trials = prepared.trials(subject, data.trial_offset, data.trial_offset + 3000 / sfreq)
    except ValueError:
        return None
    if not trials:
        return None
    return split_trials(
        trials,
        seed=seed,
        ratios=tuple(data.split),  # type: ignore[arg-type]
        protocol=split_protocol(protocol),
    )


def pretrain_mae(
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
    """Stage 2 for every subject, with targets from the frozen stage-1 VQ-VAE.

    Parameters
    ----------
    cfg : MAERunConfig
        Stage configuration.
    out : str or pathlib.Path
        Run directory.
    vqvae_run : str or pathlib.Path
        Run directory of :func:`pretrain_vqvae` (its channels and ``sub-XX/checkpoints/last``).
    prepared, cache, resume, quiet
        See :func:`pretrain_vqvae`.
    force : bool
        Train even when a VQ-VAE's codex perplexity is below ``cfg.min_codex_perplexity``.

    Returns
    -------
    pathlib.Path
        The run directory.

    Raises
    ------
    CodexCollapsedError
        A subject's VQ-VAE codex perplexity on the MAE's training crops is below
        ``cfg.min_codex_perplexity`` (and ``force`` is not set); nothing is trained.
    """
    from duin.models.duin import DuINVQVAE
    from duin.models.registry import load_model

    out = Path(out)
    vqvae_run = Path(vqvae_run)
    channels_all = read_channels(vqvae_run)
    check_pretraining_split(vqvae_run, cfg.data, [cfg.seed], cfg.protocol)
    # Check the hand-off before any work: every subject has a tokenizer of the right shape.
    tokenizers = {}
    wanted = cfg.data.subjects or sorted(channels_all)
    for subject in map(str, wanted):  # fail before any data work
        check_kind(checkpoint_dir(vqvae_run, subject), ("duin_vqvae",), "pretrain-mae --vqvae")
    start_run(out, cfg, resume)
    prepared = prepared or prepare_data(cfg.data, cache_dir(out, cache), quiet=quiet)
    for subject in prepared.subjects:
        if subject not in channels_all:
            raise ValueError(f"{vqvae_run} has no VQ-VAE for subject {subject!r}")
        tok = load_model(checkpoint_dir(vqvae_run, subject))
        if not isinstance(tok, DuINVQVAE):
            raise ValueError(
                f"{vqvae_run}: sub-{subject} holds a {type(tok).__name__}, not a VQ-VAE"
            )
        tokenizers[subject] = tok
    write_channels(
        out, {s: channels_all[s] for s in prepared.subjects}, method=f"from {vqvae_run}", seed=None
    )
    infos, sets = {}, {}
    for subject in prepared.subjects:  # check every codex before training any MAE
        tok = tokenizers[subject]
        split = _split_for(prepared, subject, cfg.data, cfg.seed, cfg.protocol)
        train, val, info = pretrain_sets(
            prepared,
            subject,
            cfg.data,
            n_times=tok.config.n_times,
            seed=cfg.seed,
            channels=channels_all[subject],
            split=split,
        )
        health = check_mae_targets(
            tok,
            train,
            checkpoint_dir(vqvae_run, subject),
            f"MAE sub-{subject}",
            min_perplexity=cfg.min_codex_perplexity,
            force=force,
        )
        info.update({f"vqvae_{k}": v for k, v in health.items()})
        infos[subject], sets[subject] = info, (train, val)
    for subject in prepared.subjects:
        train, val = sets[subject]
        train_mae(
            cfg, tokenizers[subject], train, val, out / f"sub-{subject}", resume=resume, quiet=quiet
        )
    write_data_info(
        out, prepared, {"stage": "mae", "vqvae_run": str(vqvae_run), "pretraining": infos}
    )
    return out

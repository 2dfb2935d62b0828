"""The training commands: ``select-channels``, ``pretrain-vqvae``, ``pretrain-mae``, ``finetune``,
``evaluate`` and ``predict``.

Every command validates its whole configuration (file + ``--set`` overrides) before any work,
so a typo or an impossible value fails in a second with the valid choices listed. The training
commands also run as N ``torchrun`` processes (:mod:`duin.cli.launch`, docs/scaling.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from duin.cli.launch import echo_main, torchrun_session
from duin.cli.options import (
    CacheOption,
    ConfigOption,
    DataOption,
    OutOption,
    PrecisionOption,
    QuietOption,
    ResumeOption,
    SeedOption,
    SetOption,
    apply_quiet,
    selection_config,
    stage_config,
    state,
    with_precision,
)
from duin.config import ConfigError

__all__ = [
    "COMMANDS",
    "evaluate_cmd",
    "finetune_cmd",
    "predict_cmd",
    "pretrain_mae_cmd",
    "pretrain_vqvae_cmd",
    "select_channels_cmd",
]


def echo_report(report: dict[str, Any], run_dir: Path) -> None:
    """Print a fine-tuning report's table and where its ``report.md`` is."""
    from duin.workflows.evaluate import format_table

    typer.echo(format_table(report))
    typer.echo(f"report: {run_dir / 'report.md'}")


#: ``--subjects`` of the pretraining commands: one multi-subject model instead of one per subject.
SubjectsOption = Annotated[
    str | None,
    typer.Option(
        "--subjects",
        metavar="all|ID,ID,...",
        help="Train ONE multi-subject (poms) model over these subjects ('all': every subject "
        "of the data); checkpoints in OUT/pooled/checkpoints.",
    ),
]


def with_subjects(set_: list[str] | None, subjects: str | None) -> list[str] | None:
    """``--set`` items plus ``data.subjects`` from a ``--subjects`` list (``all`` adds nothing).

    Parameters
    ----------
    set_ : list of str or None
        The command's ``--set`` items.
    subjects : str or None
        ``--subjects``: ``all`` or comma-separated subject ids.

    Returns
    -------
    list of str or None
        The items to resolve the configuration with.
    """
    if subjects is None or subjects.strip() == "all":
        return set_
    ids = [s.strip().removeprefix("sub-") for s in subjects.split(",") if s.strip()]
    if not ids:
        raise ConfigError(f"invalid --subjects {subjects!r}: 'all' or a list such as 01,02")
    return [*(set_ or []), f"data.subjects={json.dumps(ids)}"]


def select_channels_cmd(
    out: OutOption,
    k: Annotated[
        int | None, typer.Option("--k", "-k", help="Channels to keep (default data.n_channels).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    seed: SeedOption = None,
    data: DataOption = None,
    cache: CacheOption = None,
    quiet: QuietOption = False,
) -> None:
    """Rank channels by contribution (Du-IN from scratch, training trials only); keep the top k.

    Writes channel_ranking.json/.csv, channels.json and a plot per subject (on the electrode
    coordinates when the data have them).
    """
    from duin.workflows.prepare import prepare_data, select_channels

    cfg = stage_config("cls", config, set_, seed, data)
    if k is not None and k < 1:
        raise ConfigError(f"invalid --k {k}: must be >= 1")
    with torchrun_session(cfg.trainer.device, out):
        prepared = prepare_data(cfg.data, cache or out / "cache", quiet=apply_quiet(quiet))
        chosen = select_channels(prepared, cfg, out, k=k, quiet=state().quiet)
        for subject, names in chosen.items():
            echo_main(f"sub-{subject}: {', '.join(names)}")
        echo_main(f"ranking: {out / 'channel_ranking.csv'}")


def pretrain_vqvae_cmd(
    out: OutOption,
    config: ConfigOption = None,
    set_: SetOption = None,
    seed: SeedOption = None,
    data: DataOption = None,
    cache: CacheOption = None,
    resume: ResumeOption = False,
    precision: PrecisionOption = None,
    quiet: QuietOption = False,
    subjects: SubjectsOption = None,
) -> None:
    """Stage 1: select channels (training trials only) and train a VQ-VAE codex per subject
    (or one over several subjects with --subjects)."""
    set_ = with_subjects(with_precision(set_, precision), subjects)
    from duin.workflows.pooled import pretrain_vqvae_pooled
    from duin.workflows.pretrain import pretrain_vqvae

    cfg = stage_config("vqvae", config, set_, seed, data)
    selection = selection_config(config, set_, seed, data)
    train = pretrain_vqvae if subjects is None else pretrain_vqvae_pooled
    where = "sub-*" if subjects is None else "pooled"
    with torchrun_session(cfg.trainer.device, out):
        run = train(
            cfg, out, selection=selection, cache=cache, resume=resume, quiet=apply_quiet(quiet)
        )
        echo_main(f"VQ-VAE run: {run} (checkpoints: {run}/{where}/checkpoints/last)")


def pretrain_mae_cmd(
    out: OutOption,
    vqvae: Annotated[
        Path,
        typer.Option("--vqvae", metavar="RUN", help="Run directory of 'duin pretrain-vqvae'."),
    ],
    config: ConfigOption = None,
    set_: SetOption = None,
    seed: SeedOption = None,
    data: DataOption = None,
    cache: CacheOption = None,
    resume: ResumeOption = False,
    precision: PrecisionOption = None,
    quiet: QuietOption = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Train even on a VQ-VAE whose codex perplexity is below min_codex_perplexity.",
        ),
    ] = False,
    subjects: SubjectsOption = None,
) -> None:
    """Stage 2: masked code modelling with targets from the frozen stage-1 VQ-VAE (one MAE
    over several subjects with --subjects, on a --subjects VQ-VAE)."""
    set_ = with_subjects(with_precision(set_, precision), subjects)
    from duin.workflows.pooled import pretrain_mae_pooled
    from duin.workflows.pretrain import pretrain_mae
    from duin.workflows.rundir import is_pooled_run

    cfg = stage_config("mae", config, set_, seed, data)
    if not (vqvae / "channels.json").is_file():
        raise FileNotFoundError(f"{vqvae}: not a 'duin pretrain-vqvae' run (no channels.json)")
    if subjects is None and is_pooled_run(vqvae):
        raise ConfigError(f"{vqvae} is a multi-subject VQ-VAE run: pass --subjects all (or a list)")
    train = pretrain_mae if subjects is None else pretrain_mae_pooled
    where = "sub-*" if subjects is None else "pooled"
    with torchrun_session(cfg.trainer.device, out):
        run = train(
            cfg, out, vqvae, cache=cache, resume=resume, quiet=apply_quiet(quiet), force=force
        )
        echo_main(f"MAE run: {run} (checkpoints: {run}/{where}/checkpoints/last)")


def finetune_cmd(
    out: OutOption,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            metavar="RUN",
            help="Pretraining run (MAE or VQ-VAE) whose encoder initialises the classifier.",
        ),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant",
            help="scratch, vqvae, vqvae+vq, mae or poms (default: the config's, or the --init "
            "kind).",
        ),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    seed: SeedOption = None,
    data: DataOption = None,
    cache: CacheOption = None,
    resume: ResumeOption = False,
    precision: PrecisionOption = None,
    quiet: QuietOption = False,
) -> None:
    """Stage 3: fine-tune the word classifier per subject and seed; test once; write the report."""
    set_ = with_precision(set_, precision)
    from duin.training.stages import VARIANTS
    from duin.workflows.finetune import finetune

    items = list(set_ or [])
    if variant is not None:
        if variant not in VARIANTS:
            raise ConfigError(
                f"invalid --variant {variant!r}; valid choices: {', '.join(VARIANTS)}"
            )
        items.append(f"variant={variant}")
    cfg = stage_config("cls", config, items, seed, data)
    if init is not None and not init.exists():
        raise FileNotFoundError(f"--init: not found: {init}")
    if init is None and cfg.variant != "scratch":
        if variant is None:
            if not state().quiet:
                typer.echo(
                    f"no --init: training from scratch (the config's variant {cfg.variant!r} "
                    "needs a pretraining run)",
                    err=True,
                )
            cfg = stage_config("cls", config, [*items, "variant=scratch"], seed, data)
        else:
            raise ConfigError(f"--variant {variant} needs --init RUN (a pretraining run)")
    with torchrun_session(cfg.trainer.device, out):
        report = finetune(
            cfg, out, init, variant, cache=cache, resume=resume, quiet=apply_quiet(quiet)
        )
        from duin.training.distributed import is_main

        if is_main():
            echo_report(report, out)


def evaluate_cmd(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A 'duin finetune' run directory.")],
) -> None:
    """Rebuild report.json / report.md of a fine-tuning run and print the table."""
    from duin.workflows.evaluate import evaluate

    report = evaluate(run)
    echo_report(report, run)


def predict_cmd(
    ckpt: Annotated[
        Path,
        typer.Argument(
            metavar="CKPT", help="A finetune run (sub-XX/seed-N directory or checkpoint)."
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", metavar="DIR", help="Dataset with the recording(s) to decode."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="CSV", help="Write the CSV here.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Words per event.")] = 5,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Subject to read (default: the model's).")
    ] = None,
) -> None:
    """Decode every event of a recording: CSV of the top-k words and their probabilities."""
    from duin.workflows.predict import predict

    if top_k < 1:
        raise ConfigError(f"invalid --top-k {top_k}: must be >= 1")
    text = predict(ckpt, data, top_k, out_csv=out, subject=subject)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {out} ({text.count(chr(10)) - 1} rows)")


#: Command name -> function.
COMMANDS = {
    "select-channels": select_channels_cmd,
    "pretrain-vqvae": pretrain_vqvae_cmd,
    "pretrain-mae": pretrain_mae_cmd,
    "finetune": finetune_cmd,
    "evaluate": evaluate_cmd,
    "predict": predict_cmd,
}

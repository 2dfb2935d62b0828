"""The product commands of ``duin``: simulate, inspect, the three stages, evaluate, demo, predict.

:func:`register` adds them to a typer app (``duin.cli.app`` in the installed command)::

    from duin.commands import register
    register(app)

Every command validates its whole configuration (file + ``--set`` overrides) before any work,
so a typo or an impossible value fails in a second with the valid choices listed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from duin.cli import (
    ConfigOption,
    OutOption,
    ResumeOption,
    SeedOption,
    SetOption,
    app,
    cli_errors,
    resolve_config,
    state,
)
from duin.config import ConfigError, apply_overrides, from_dict, load_yaml

__all__ = ["COMMANDS", "register"]

logger = logging.getLogger("duin.commands")

# ------------------------------------------------------------------------------ shared options

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        "-d",
        metavar="DIR",
        help="BIDS root, released Du-IN root or 'duin simulate' directory (auto-detected). "
        "Default: simulate the corpus of the config's data.simulation section.",
    ),
]
CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache",
        metavar="DIR",
        help="Cache of preprocessed recordings (content-keyed, shareable). Default: OUT/cache.",
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars; warnings and errors only.")
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        metavar="fp32|bf16|fp16",
        help="Training precision (sets trainer.precision): fp32 (default), bf16 autocast "
        "(CPU/CUDA) or fp16 with gradient scaling (CUDA only).",
    ),
]
DEFAULT_CONFIG = "quick"


def _with_precision(set_: Sequence[str] | None, precision: str | None) -> list[str]:
    """``--set`` items plus ``trainer.precision`` from ``--precision`` (which wins)."""
    items = list(set_ or [])
    if precision is not None:
        items.append(f"trainer.precision={precision}")
    return items


def _quiet(flag: bool) -> bool:
    """Combine the command's ``--quiet`` with the global one."""
    if flag and not state().quiet:
        from duin.utils.logs import setup_logging

        state().quiet = True
        setup_logging(quiet=True, debug=state().debug)
    return state().quiet


def _stage_config(
    stage: str,
    config: str | None,
    set_: Sequence[str] | None,
    seed: int | None,
    data: Path | None,
) -> Any:
    """Resolve one stage's configuration (file, ``--set``, ``--data``, ``--seed``)."""
    from duin.training.stages import STAGE_CONFIGS

    items = list(set_ or [])
    if data is not None:
        items.append(f"data.source={json.dumps(str(data))}")
    if seed is not None and stage == "cls":
        items.append("seeds=null")
    return resolve_config(
        config or DEFAULT_CONFIG, items, stage=stage, seed=seed, cls=STAGE_CONFIGS[stage]
    )


def _selection_config(
    config: str | None, set_: Sequence[str] | None, seed: int | None, data: Path | None
) -> Any:
    """The classifier recipe used to rank channels: the ``cls`` section, shared overrides only."""
    shared = [s for s in (set_ or []) if s.split("=", 1)[0].split(".")[0] in ("data", "protocol")]
    return _stage_config("cls", config, shared, seed, data)


def _echo_report(report: dict[str, Any], run_dir: Path) -> None:
    from duin.pipeline import format_table

    typer.echo(format_table(report))
    typer.echo(f"report: {run_dir / 'report.md'}")


# ------------------------------------------------------------------------------------ commands


def simulate_cmd(
    out: OutOption,
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="Output layout: bids, released or npz (fastest)."),
    ] = "bids",
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="Start from a simulator preset: tiny, small or paper."),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
) -> None:
    """Simulate a realistic sEEG word-reading corpus (with its oracle accuracy) to disk.

    The base is the data.simulation section of --config (default: quick), or --preset;
    --set takes simulator fields, e.g. --set n_words=20 --set difficulty=2.
    """
    from duin.data.simulate import PRESETS, SimulationConfig, simulate_to_disk

    _quiet(quiet)
    if format not in ("bids", "released", "npz"):
        raise ConfigError(f"invalid --format {format!r}; valid choices: bids, released, npz")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"invalid --preset {preset!r}; valid choices: {', '.join(PRESETS)}")
        base = {**SimulationConfig().to_dict(), **PRESETS[preset]}
    else:
        from duin.config import builtin_config_path

        raw = load_yaml(builtin_config_path(config or DEFAULT_CONFIG))
        base = {
            **SimulationConfig().to_dict(),
            **((raw.get("data") or {}).get("simulation") or {}),
        }
    items = list(set_ or [])
    if seed is not None:
        items.append(f"seed={seed}")
    sim = from_dict(SimulationConfig, apply_overrides(base, items))
    path = simulate_to_disk(out, format, sim)
    truth = json.loads((path / "simulation.json").read_text(encoding="utf-8"))
    oracle = ", ".join(f"sub-{k}: {100 * v:.1f} %" for k, v in truth["oracle_accuracy"].items())
    typer.echo(
        f"wrote {path} ({format}); {sim.n_words} words, chance {100 / sim.n_words:.2f} %, "
        f"oracle accuracy {oracle}"
    )


def inspect_cmd(
    source: Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory.")],
    subject: Annotated[
        list[str] | None, typer.Option("--subject", help="Only this subject (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Summarise any readable dataset: BIDS root, released Du-IN root or simulated directory."""
    from duin.pipeline import inspect_source

    summary = inspect_source(source, subject)
    if as_json:
        typer.echo(json.dumps(summary, indent=1, ensure_ascii=False))
        return
    typer.echo(f"{summary['source']}: {summary['kind']}, {len(summary['subjects'])} subject(s)")
    for name, info in summary["subjects"].items():
        typer.echo(
            f"  sub-{name}: {info['n_recordings']} recording(s) ({info['n_task_recordings']} with "
            f"events), {info['hours']:.2f} h, channels {info['n_channels']}, "
            f"{info['n_events']} events / {info['n_labels']} labels"
        )
        for line in info["recordings"]:
            typer.echo(f"    - {line}")
    if "oracle_accuracy" in summary:
        oracle = ", ".join(f"{k}: {100 * v:.1f} %" for k, v in summary["oracle_accuracy"].items())
        typer.echo(f"  simulated: chance {100 * summary['chance']:.2f} %, oracle {oracle}")


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
) -> None:
    """Stage 1: select channels (training trials only) and train a VQ-VAE codex per subject."""
    set_ = _with_precision(set_, precision)
    from duin.pipeline import pretrain_vqvae

    cfg = _stage_config("vqvae", config, set_, seed, data)
    selection = _selection_config(config, set_, seed, data)
    run = pretrain_vqvae(
        cfg, out, selection=selection, cache=cache, resume=resume, quiet=_quiet(quiet)
    )
    typer.echo(f"VQ-VAE run: {run} (checkpoints: {run}/sub-*/checkpoints/last)")


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
) -> None:
    """Stage 2: masked code modelling with targets from the frozen stage-1 VQ-VAE."""
    set_ = _with_precision(set_, precision)
    from duin.pipeline import pretrain_mae

    cfg = _stage_config("mae", config, set_, seed, data)
    if not (vqvae / "channels.json").is_file():
        raise FileNotFoundError(f"{vqvae}: not a 'duin pretrain-vqvae' run (no channels.json)")
    run = pretrain_mae(cfg, out, vqvae, cache=cache, resume=resume, quiet=_quiet(quiet))
    typer.echo(f"MAE run: {run} (checkpoints: {run}/sub-*/checkpoints/last)")


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
            help="scratch, vqvae, vqvae+vq or mae (default: the config's, or the --init kind).",
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
    set_ = _with_precision(set_, precision)
    from duin.pipeline import finetune
    from duin.training.stages import VARIANTS

    items = list(set_ or [])
    if variant is not None:
        if variant not in VARIANTS:
            raise ConfigError(
                f"invalid --variant {variant!r}; valid choices: {', '.join(VARIANTS)}"
            )
        items.append(f"variant={variant}")
    cfg = _stage_config("cls", config, items, seed, data)
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
            cfg = _stage_config("cls", config, [*items, "variant=scratch"], seed, data)
        else:
            raise ConfigError(f"--variant {variant} needs --init RUN (a pretraining run)")
    report = finetune(cfg, out, init, variant, cache=cache, resume=resume, quiet=_quiet(quiet))
    _echo_report(report, out)


def evaluate_cmd(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A 'duin finetune' run directory.")],
) -> None:
    """Rebuild report.json / report.md of a fine-tuning run and print the table."""
    from duin.pipeline import evaluate

    report = evaluate(run)
    _echo_report(report, run)


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
    from duin.pipeline import prepare_data, select_channels

    cfg = _stage_config("cls", config, set_, seed, data)
    if k is not None and k < 1:
        raise ConfigError(f"invalid --k {k}: must be >= 1")
    prepared = prepare_data(cfg.data, cache or out / "cache", quiet=_quiet(quiet))
    chosen = select_channels(prepared, cfg, out, k=k, quiet=state().quiet)
    for subject, names in chosen.items():
        typer.echo(f"sub-{subject}: {', '.join(names)}")
    typer.echo(f"ranking: {out / 'channel_ranking.csv'}")


def demo_cmd(
    out: OutOption = Path("duin-demo"),
    config: ConfigOption = None,
    set_: SetOption = None,
    seed: SeedOption = None,
    precision: PrecisionOption = None,
    quiet: QuietOption = False,
) -> None:
    """Simulate a small corpus, run VQ-VAE -> MAE -> classifier and print ours vs chance vs oracle."""
    set_ = _with_precision(set_, precision)
    import time

    from duin.pipeline import run_demo
    from duin.training.stages import load_stage_config

    for stage in ("vqvae", "mae", "cls"):  # validate every section before any work
        load_stage_config(
            stage,
            config or DEFAULT_CONFIG,
            [*(set_ or []), *([f"seed={seed}"] if seed is not None else [])],
        )
    t0 = time.perf_counter()
    report = run_demo(
        out, config=config or DEFAULT_CONFIG, overrides=set_ or (), seed=seed, quiet=_quiet(quiet)
    )
    typer.echo(report["table"])
    typer.echo(f"wall time {time.perf_counter() - t0:.0f} s; run directory: {report['run_dir']}")


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
    from duin.pipeline import predict

    if top_k < 1:
        raise ConfigError(f"invalid --top-k {top_k}: must be >= 1")
    text = predict(ckpt, data, top_k, out_csv=out, subject=subject)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {out} ({text.count(chr(10)) - 1} rows)")


def export_cmd(
    ckpt: Annotated[
        Path,
        typer.Argument(
            metavar="CKPT",
            help="A classifier checkpoint directory or a finetune run's sub-XX/seed-N directory.",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="FILE", help="Output file (.onnx or .pt).")
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="onnx (inputs x, subject; output logits) or torchscript."
        ),
    ] = "onnx",
) -> None:
    """Export a trained classifier for deployment (ONNX / TorchScript, dynamic batch)."""
    from duin.export import export_model

    path = export_model(ckpt, fmt.lower(), out)
    typer.echo(
        f"wrote {path} ({fmt.lower()}; inputs x (batch, channels, times) float32, "
        "subject (batch,) int64; output logits)"
    )


#: Command name -> function.
COMMANDS: dict[str, Callable[..., None]] = {
    "simulate": simulate_cmd,
    "inspect": inspect_cmd,
    "pretrain-vqvae": pretrain_vqvae_cmd,
    "pretrain-mae": pretrain_mae_cmd,
    "finetune": finetune_cmd,
    "evaluate": evaluate_cmd,
    "select-channels": select_channels_cmd,
    "demo": demo_cmd,
    "predict": predict_cmd,
    "export": export_cmd,
}


def register(app: typer.Typer) -> None:
    """Add the product commands to a typer app (with the shared one-line error handling).

    Parameters
    ----------
    app : typer.Typer
        The ``duin`` app (or a test app).
    """
    existing = {c.name for c in app.registered_commands}
    for name, fn in COMMANDS.items():
        if name not in existing:  # idempotent: safe when cli.py already registered them
            app.command(name)(cli_errors(fn))
    from duin.bench import register_bench  # the benchmark runner lives beside the pipeline

    register_bench(app)


register(app)

"""``duin simulate`` and ``duin inspect``: make and look at datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from duin.cli.options import (
    DEFAULT_CONFIG,
    ConfigOption,
    OutOption,
    QuietOption,
    SeedOption,
    SetOption,
    apply_quiet,
)
from duin.config import ConfigError, apply_overrides, from_dict, load_yaml

__all__ = ["COMMANDS", "inspect_cmd", "simulate_cmd"]


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

    apply_quiet(quiet)
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
    from duin.workflows.prepare import inspect_source

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


#: Command name -> function.
COMMANDS = {"simulate": simulate_cmd, "inspect": inspect_cmd}

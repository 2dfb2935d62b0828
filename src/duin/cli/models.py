"""``duin show-config`` and ``duin convert-reference``: configurations and model files."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from duin.cli.options import (
    ConfigOption,
    OutOption,
    SeedOption,
    SetOption,
    overrides_to_kwargs,
    resolve_config,
)
from duin.config import STAGES

__all__ = ["COMMANDS", "convert_reference_cmd", "show_config_cmd"]


class ReferenceModel(str, enum.Enum):
    """Reference checkpoint kinds."""

    vqvae = "vqvae"
    mae = "mae"
    cls = "cls"


def show_config_cmd(
    stage: Annotated[
        str | None,
        typer.Option("--stage", help=f"Stage section to resolve: {', '.join(STAGES)}."),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    seed: SeedOption = None,
) -> None:
    """Print the resolved, validated configuration as YAML."""
    from duin.config import config_to_yaml

    resolved = resolve_config(config, set_, stage=stage, seed=seed)
    typer.echo(config_to_yaml(resolved), nl=False)


def convert_reference_cmd(
    model: Annotated[
        ReferenceModel,
        typer.Option("--model", "-m", case_sensitive=False, help="Which reference model."),
    ],
    weights: Annotated[
        list[Path],
        typer.Option(
            "--weights",
            "-w",
            metavar="FILE",
            help="Reference weights (.pth state dict or .npz), repeatable; merged in order.",
        ),
    ],
    out: OutOption,
    set_: SetOption = None,
) -> None:
    """Convert the paper code's weights into a duin checkpoint (model.safetensors + config.json)."""
    for file in weights:
        if not file.is_file():
            raise FileNotFoundError(f"weights file not found: {file}")
    overrides = overrides_to_kwargs(set_)
    from duin.models.convert import convert_reference

    target = weights[0] if len(weights) == 1 else list(weights)
    path = convert_reference(model.value, target, out, **overrides)
    typer.echo(f"wrote {path}")


#: Command name -> function.
COMMANDS = {"show-config": show_config_cmd, "convert-reference": convert_reference_cmd}

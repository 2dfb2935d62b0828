"""``duin show-config``, ``duin convert-reference`` and ``duin export``: configurations and model
files."""

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

__all__ = ["COMMANDS", "convert_reference_cmd", "export_cmd", "show_config_cmd"]


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
    from duin.workflows.export import export_model

    path = export_model(ckpt, fmt.lower(), out)
    typer.echo(
        f"wrote {path} ({fmt.lower()}; inputs x (batch, channels, times) float32, "
        "subject (batch,) int64; output logits)"
    )


#: Command name -> function.
COMMANDS = {
    "show-config": show_config_cmd,
    "convert-reference": convert_reference_cmd,
    "export": export_cmd,
}

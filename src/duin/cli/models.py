"""``duin show-config``, ``duin convert-reference``, ``duin export`` and ``duin verify``:
configurations and model files."""

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

__all__ = ["COMMANDS", "convert_reference_cmd", "export_cmd", "show_config_cmd", "verify_cmd"]


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


def verify_cmd(
    path: Annotated[
        Path, typer.Argument(metavar="RUN_OR_CKPT", help="Run, checkpoint or cache directory.")
    ],
) -> None:
    """Check every file of a run or checkpoint against the SHA-256 recorded when it was written."""
    from duin.utils.integrity import IntegrityError
    from duin.workflows.verify import verify_path

    report = verify_path(path)
    for problem in report.problems:
        typer.echo(f"FAIL {problem}", err=True)
    if report.problems:
        first = report.problems[0]
        raise IntegrityError(path, f"{len(report.problems)} problem(s); first: {first}")
    if not report.ok:
        raise IntegrityError(path, "nothing to verify here (no manifest.json or cache sidecar)")
    typer.echo(f"ok: {report.n_files} files in {len(report.directories)} directories match")


#: Command name -> function.
COMMANDS = {
    "show-config": show_config_cmd,
    "convert-reference": convert_reference_cmd,
    "export": export_cmd,
    "verify": verify_cmd,
}

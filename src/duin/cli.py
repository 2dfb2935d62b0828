"""The ``duin`` command.

Commands are registered with :func:`command`, which wraps them so that user errors
(``ValueError`` incl. :class:`duin.config.ConfigError`, ``FileNotFoundError`` and other
``OSError``, ``TypeError``, ``FloatingPointError`` such as a diverged loss) print one line ``duin: error: ...`` and exit with status 1 (a traceback only with
``--debug``); an interrupted training run exits with ``128 + signal`` after saving a checkpoint.

Shared options are reusable ``Annotated`` types (:data:`ConfigOption`, :data:`SetOption`,
:data:`OutOption`, :data:`SeedOption`, :data:`ResumeOption`) and :func:`resolve_config` turns
them into a validated stage configuration *before* any work starts. A new command looks like::

    @command("finetune")
    def finetune(config: ConfigOption = None, set_: SetOption = None, out: OutOption = ...,
                 seed: SeedOption = None, resume: ResumeOption = False) -> None:
        cfg = resolve_config(config, set_, stage="cls", seed=seed)
        ...
"""

from __future__ import annotations

import enum
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from duin import __version__
from duin.config import STAGES, ConfigError, RunConfig, load_config, parse_override
from duin.utils.logs import setup_logging

__all__ = [
    "CliState",
    "ConfigOption",
    "OutOption",
    "ResumeOption",
    "SeedOption",
    "SetOption",
    "app",
    "cli_errors",
    "command",
    "main",
    "overrides_to_kwargs",
    "resolve_config",
    "stage_config_class",
    "state",
]

logger = logging.getLogger("duin.cli")
F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="duin",
    help=(
        "Du-IN speech decoding from intracranial (sEEG/ECoG) recordings: pretrain a VQ-VAE "
        "codex and a masked-code model, fine-tune a word classifier, read a leak-free report."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class CliState:
    """Global options of the current invocation.

    Parameters
    ----------
    quiet : bool
        Hide progress bars and info messages.
    debug : bool
        Show tracebacks and debug messages.
    """

    quiet: bool = False
    debug: bool = False


_STATE = CliState()


def state() -> CliState:
    """The global options (``--quiet``, ``--debug``) of the running command.

    Returns
    -------
    CliState
        The shared state object.
    """
    return _STATE


def stage_config_class(stage: str | None) -> type:
    """The configuration dataclass of a stage (``duin.training.stages.STAGE_CONFIGS``).

    Parameters
    ----------
    stage : str or None
        ``vqvae``, ``mae``, ``cls``, or None for the generic :class:`duin.config.RunConfig`.

    Returns
    -------
    type
        A :class:`duin.config.RunConfig` subclass with typed ``model``/``data`` sections.
    """
    if stage is None:
        return RunConfig
    if stage not in STAGES:
        raise ConfigError(f"unknown stage '{stage}'; valid stages: {', '.join(STAGES)}")
    try:
        from duin.training.stages import STAGE_CONFIGS
    except ImportError:  # pragma: no cover - stages not available
        return RunConfig
    return STAGE_CONFIGS.get(stage, RunConfig)


# --------------------------------------------------------------------------- shared options

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE|NAME",
        help="YAML config file, or a packaged one: 'quick' (minutes on a CPU) or 'paper'.",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set optim.lr=3e-4 (repeatable; YAML values).",
    ),
]
OutOption = Annotated[
    Path,
    typer.Option("--out", "-o", metavar="DIR", help="Output (run) directory."),
]
SeedOption = Annotated[
    int | None,
    typer.Option("--seed", help="Seed for splits, initialisation, data order and masking."),
]
ResumeOption = Annotated[
    bool,
    typer.Option("--resume", help="Continue the interrupted run in --out exactly."),
]


def resolve_config(
    config: str | Path | None,
    overrides: Sequence[str] | None,
    *,
    stage: str | None = None,
    seed: int | None = None,
    cls: type | None = None,
) -> Any:
    """Load and validate the configuration of a command from its shared options.

    Parameters
    ----------
    config : str, pathlib.Path or None
        ``--config`` value (file or packaged name); None uses the dataclass defaults.
    overrides : sequence of str or None
        ``--set`` values.
    stage : str, optional
        Stage section to use (``vqvae``, ``mae``, ``cls``).
    seed : int, optional
        ``--seed``; applied last, so it wins over files and ``--set``.
    cls : type, optional
        Config dataclass (default: :func:`stage_config_class` of the stage).

    Returns
    -------
    dataclass
        The validated configuration.
    """
    target = cls or stage_config_class(stage)
    items = list(overrides or [])
    if seed is not None:
        items.append(f"seed={seed}")
    return load_config(config, items, cls=target, section=stage)


def overrides_to_kwargs(overrides: Sequence[str] | None) -> dict[str, Any]:
    """Turn ``--set a.b=c`` values into nested keyword arguments ``{"a": {"b": c}}``.

    Parameters
    ----------
    overrides : sequence of str or None
        ``KEY=VALUE`` strings.

    Returns
    -------
    dict
        Nested keyword arguments.
    """
    out: dict[str, Any] = {}
    for text in overrides or []:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"invalid override {text!r}: '{part}' was already set")
            node = child
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------- error handling

_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, TypeError, ArithmeticError)


def cli_errors(fn: F) -> F:
    """Wrap a command so user errors become one line on stderr and exit status 1.

    Parameters
    ----------
    fn : callable
        The command function.

    Returns
    -------
    callable
        The wrapped function (same signature, for typer).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from duin.training.trainer import TrainingInterrupted

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except TrainingInterrupted as exc:
            typer.echo(f"duin: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _STATE.debug:
                raise
            typer.echo("duin: interrupted", err=True)
            raise typer.Exit(130) from None
        except _USER_ERRORS as exc:
            if _STATE.debug:
                raise
            message = str(exc) or type(exc).__name__
            typer.echo(f"duin: error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a ``duin`` sub-command with the shared error handling.

    Parameters
    ----------
    name : str, optional
        Command name (default: the function name with dashes).
    **kwargs
        Passed to ``typer.Typer.command`` (``help``, ...).

    Returns
    -------
    callable
        Decorator.
    """

    def decorate(fn: F) -> F:
        app.command(name, **kwargs)(cli_errors(fn))
        return fn

    return decorate


# ------------------------------------------------------------------------------ global options


def _version(value: bool) -> None:
    if value:
        typer.echo(f"duin {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars; warnings and errors only.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and debug messages.")
    ] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Du-IN speech decoding from intracranial recordings."""
    _STATE.quiet = quiet
    _STATE.debug = debug
    setup_logging(quiet=quiet, debug=debug)


# ------------------------------------------------------------------------------------ commands


class ReferenceModel(str, enum.Enum):
    """Reference checkpoint kinds."""

    vqvae = "vqvae"
    mae = "mae"
    cls = "cls"


@command("show-config")
def show_config(
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


@command("convert-reference")
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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``duin`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).
    """
    app(args=list(argv) if argv is not None else sys.argv[1:], prog_name="duin")


# The product commands (simulate, pretrain-*, finetune, demo, ...) live in duin.commands, which
# imports the option helpers above and registers its commands on `app` when it is imported.
# Imported last (and as a module, not a name) so that either module may be imported first.
import duin.commands  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``duin`` typer app: global options, the one-line error handling, command registration.

Commands are plain functions in the command-group modules (:mod:`duin.cli.data`,
:mod:`duin.cli.train`, :mod:`duin.cli.demo`, :mod:`duin.cli.bench`, :mod:`duin.cli.models`,
:mod:`duin.cli.stream`);
:func:`register` adds them to an app wrapped by :func:`cli_errors`, so that user errors
(``ValueError`` incl. :class:`duin.config.ConfigError`, ``FileNotFoundError`` and other
``OSError``, ``TypeError``, ``FloatingPointError`` such as a diverged loss) print one line
``duin: error: ...`` and exit with status 1 (a traceback only with ``--debug``); an
interrupted training run exits with ``128 + signal`` after saving a checkpoint.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, TypeVar

import typer

from duin._version import __version__
from duin.cli import bench, data, demo, models, stream, train
from duin.cli.options import state
from duin.utils.logs import setup_logging

__all__ = ["COMMANDS", "app", "cli_errors", "main", "register"]

logger = logging.getLogger("duin.cli")
F = TypeVar("F", bound=Callable[..., Any])

_GROUPS = (models, data, train, demo, bench, stream)
_HELP_ORDER = (
    "show-config",
    "convert-reference",
    "verify",
    "simulate",
    "inspect",
    "pretrain-vqvae",
    "pretrain-mae",
    "finetune",
    "evaluate",
    "select-channels",
    "demo",
    "predict",
    "stream",
    "export",
    "bench",
)
#: Command name -> function, in ``duin --help`` order.
COMMANDS: dict[str, Callable[..., None]] = {
    name: fn
    for name in _HELP_ORDER
    for group in _GROUPS
    for n, fn in group.COMMANDS.items()
    if n == name
}

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
            if state().debug:
                raise
            typer.echo("duin: interrupted", err=True)
            raise typer.Exit(130) from None
        except _USER_ERRORS as exc:
            if state().debug:
                raise
            message = str(exc) or type(exc).__name__
            typer.echo(f"duin: error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def register(target: typer.Typer, names: Iterable[str] | None = None) -> None:
    """Add commands to a typer app, with the shared one-line error handling.

    Parameters
    ----------
    target : typer.Typer
        The ``duin`` app (or a test app).
    names : iterable of str, optional
        Command names (default all of :data:`COMMANDS`); already registered ones are skipped.
    """
    existing = {c.name for c in target.registered_commands}
    for name in names if names is not None else COMMANDS:
        if name not in COMMANDS:
            raise ValueError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
        if name not in existing:
            target.command(name)(cli_errors(COMMANDS[name]))


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
    state().quiet = quiet
    state().debug = debug
    setup_logging(quiet=quiet, debug=debug)


register(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``duin`` console script and of ``python -m duin``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).
    """
    app(args=list(argv) if argv is not None else sys.argv[1:], prog_name="duin")

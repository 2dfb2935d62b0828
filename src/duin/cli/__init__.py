"""The ``duin`` command (typer), also run by ``python -m duin``.

- :mod:`~duin.cli.app`: the app, global options, error handling, :func:`register`, :func:`main`
- :mod:`~duin.cli.options`: shared options and :func:`resolve_config`
- one module per command group: :mod:`~duin.cli.data` (simulate, inspect),
  :mod:`~duin.cli.train` (select-channels, pretrain-vqvae, pretrain-mae, finetune, evaluate,
  predict), :mod:`~duin.cli.demo`, :mod:`~duin.cli.bench`, :mod:`~duin.cli.models`
  (show-config, convert-reference, export)

The CLI imports the workflows (:mod:`duin.workflows`); no workflow imports the CLI.
"""

from duin.cli.app import COMMANDS, app, cli_errors, main, register
from duin.cli.options import overrides_to_kwargs, resolve_config, state

__all__ = [
    "COMMANDS",
    "app",
    "cli_errors",
    "main",
    "overrides_to_kwargs",
    "register",
    "resolve_config",
    "state",
]

"""Options shared by the ``duin`` commands, the global ``--quiet``/``--debug`` state, and
:func:`resolve_config`, which turns ``--config``/``--set``/``--seed`` into a validated stage
configuration *before* any work starts.

Shared options are reusable ``Annotated`` types (:data:`ConfigOption`, :data:`SetOption`,
:data:`OutOption`, :data:`SeedOption`, :data:`ResumeOption`, :data:`DataOption`,
:data:`CacheOption`, :data:`QuietOption`). A new command looks like::

    def finetune(config: ConfigOption = None, set_: SetOption = None, out: OutOption = ...,
                 seed: SeedOption = None, resume: ResumeOption = False) -> None:
        cfg = resolve_config(config, set_, stage="cls", seed=seed)
        ...
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from duin.config import STAGES, ConfigError, RunConfig, load_config, parse_override
from duin.utils.logs import setup_logging

__all__ = [
    "DEFAULT_CONFIG",
    "CacheOption",
    "CliState",
    "ConfigOption",
    "DataOption",
    "OutOption",
    "PrecisionOption",
    "QuietOption",
    "ResumeOption",
    "SeedOption",
    "SetOption",
    "apply_quiet",
    "overrides_to_kwargs",
    "resolve_config",
    "selection_config",
    "stage_config",
    "stage_config_class",
    "state",
    "with_precision",
]

#: The packaged recipe the product commands use without ``--config``.
DEFAULT_CONFIG = "quick"


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


def apply_quiet(flag: bool) -> bool:
    """Combine a command's ``--quiet`` with the global one.

    Parameters
    ----------
    flag : bool
        The command's ``--quiet``.

    Returns
    -------
    bool
        Whether the command runs quietly.
    """
    if flag and not _STATE.quiet:
        _STATE.quiet = True
        setup_logging(quiet=True, debug=_STATE.debug)
    return _STATE.quiet


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
    from duin.training.stages import STAGE_CONFIGS

    return STAGE_CONFIGS.get(stage, RunConfig)


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


def with_precision(set_: Sequence[str] | None, precision: str | None) -> list[str]:
    """``--set`` items plus ``trainer.precision`` from ``--precision`` (which wins).

    Parameters
    ----------
    set_ : sequence of str or None
        The command's ``--set KEY=VALUE`` items.
    precision : str or None
        The command's ``--precision`` (None: not given).

    Returns
    -------
    list of str
        The overrides to resolve the configuration with.
    """
    items = list(set_ or [])
    if precision is not None:
        items.append(f"trainer.precision={precision}")
    return items


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


def stage_config(
    stage: str,
    config: str | None,
    set_: Sequence[str] | None,
    seed: int | None,
    data: Path | None,
) -> Any:
    """Resolve one stage's configuration (file, ``--set``, ``--data``, ``--seed``).

    Parameters
    ----------
    stage : str
        ``vqvae``, ``mae`` or ``cls``.
    config, set_, seed, data
        The command's ``--config`` (default :data:`DEFAULT_CONFIG`), ``--set``, ``--seed`` and
        ``--data``; with ``--seed``, the ``cls`` stage runs that one seed.

    Returns
    -------
    dataclass
        The validated stage configuration.
    """
    from duin.training.stages import STAGE_CONFIGS

    items = list(set_ or [])
    if data is not None:
        items.append(f"data.source={json.dumps(str(data))}")
    if seed is not None and stage == "cls":
        items.append("seeds=null")
    return resolve_config(
        config or DEFAULT_CONFIG, items, stage=stage, seed=seed, cls=STAGE_CONFIGS[stage]
    )


def selection_config(
    config: str | None, set_: Sequence[str] | None, seed: int | None, data: Path | None
) -> Any:
    """The classifier recipe used to rank channels: the ``cls`` section, shared overrides only.

    Parameters
    ----------
    config, set_, seed, data
        As :func:`stage_config`; only ``--set data.*`` and ``protocol`` values apply.

    Returns
    -------
    dataclass
        The validated ``cls`` configuration.
    """
    shared = [s for s in (set_ or []) if s.split("=", 1)[0].split(".")[0] in ("data", "protocol")]
    return stage_config("cls", config, shared, seed, data)


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

"""Typed run configuration: dataclasses, YAML files and ``--set a.b=c`` overrides.

Dataclasses are the source of truth. Any (nested) dataclass can be built from a plain dict with
:func:`from_dict`, which checks every key and value against the field types and then runs each
dataclass's ``validate()`` method, so a typo or an impossible value fails before any work with a
message naming the key::

    unknown key 'optim.lrr'; valid keys under 'optim': lr, lr_min, ... (did you mean 'lr'?)

Configuration files hold shared top-level keys (``seed``) and one section per stage
(``vqvae``, ``mae``, ``cls``); :func:`load_config` merges the shared keys with one section,
applies overrides and returns a validated dataclass. Stage configs extend :class:`RunConfig` with
typed ``model`` and ``data`` fields (e.g. a ``duin.models.config`` dataclass)::

    @dataclass
    class ClsRunConfig(RunConfig):
        model: ClassifierConfig = field(default_factory=ClassifierConfig)
        data: WordTrialsConfig = field(default_factory=WordTrialsConfig)

The optimiser defaults follow the paper's recipe tables (Zheng et al. 2024, Tables 5-7):
AdamW, betas ``(0.9, 0.99)``, eps ``1e-8``. The reference code uses betas ``(0.9, 0.999)``;
``configs/paper.yaml`` follows the paper, and parity runs can set ``optim.betas=[0.9,0.999]``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "STAGES",
    "ConfigError",
    "OptimConfig",
    "RunConfig",
    "TrainerConfig",
    "apply_overrides",
    "builtin_config_path",
    "config_to_yaml",
    "from_dict",
    "load_config",
    "load_yaml",
    "parse_override",
    "parse_scalar",
    "save_config",
    "to_dict",
]

T = TypeVar("T")

#: Stage sections a configuration file may hold.
STAGES: tuple[str, ...] = ("vqvae", "mae", "cls")

_BUILTIN_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A configuration file, section, key or value is invalid."""


# ---------------------------------------------------------------------------------------------
# YAML with YAML-1.2 style floats: PyYAML (YAML 1.1) reads ``3e-4`` as a string, which surprises
# everyone who types a learning rate; we read it as a float.
# ---------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe loader with YAML-1.2 scalars: ``1e-4`` is a float, only true/false are booleans.

    (YAML 1.1 reads ``off``/``no``/``on``/``yes`` as booleans, so ``amp: off`` would be False.)
    """


_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
_Loader.yaml_implicit_resolvers = {
    key: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")
    ]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with safe loading and YAML-1.2 floats.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    Any
        The parsed document (``{}`` for an empty file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    return {} if data is None else data


def parse_scalar(text: str) -> Any:
    """Parse one override value with YAML scalar semantics (``3e-4``, ``true``, ``null``, ``[1,2]``).

    Parameters
    ----------
    text : str
        The value as typed on the command line.

    Returns
    -------
    Any
        The parsed value; text that is not valid YAML is returned unchanged as a string.
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a parsed value.

    Parameters
    ----------
    text : str
        The override.

    Returns
    -------
    (list of str, Any)
        Key path and value.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"invalid override {text!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    parts = key.split(".")
    if any(not part for part in parts):
        raise ConfigError(f"invalid override key {key!r}: empty component")
    return parts, parse_scalar(value)


# ---------------------------------------------------------------------------------------------
# dataclass <-> dict
# ---------------------------------------------------------------------------------------------


def to_dict(obj: Any) -> Any:
    """Convert a (nested) dataclass into plain dicts/lists/scalars for YAML or JSON.

    Parameters
    ----------
    obj : Any
        A dataclass instance, or a container/scalar.

    Returns
    -------
    Any
        Plain data; tuples become lists and paths become strings.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def _bad(path: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(
        f"invalid value for '{path}': expected {_type_name(tp)}, got {value!r} "
        f"({type(value).__name__})"
    )


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert (list->tuple, int->float, ...)."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"invalid value for '{path}': {value!r}; valid choices: {choices}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise _bad(path, tp, value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, path=path)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, list | tuple):
            raise _bad(path, tp, value)
        item_tp = args[0] if args else Any
        return [_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, list | tuple):
            raise _bad(path, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(
                f"invalid value for '{path}': expected {len(args)} items, got {len(value)}"
            )
        if not args:
            return tuple(value)
        return tuple(
            _convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _bad(path, tp, value)
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _convert(val_tp, v, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _bad(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _bad(path, tp, value)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _bad(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _bad(path, tp, value)
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise _bad(path, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _bad(path, tp, value)
    return value  # unknown annotation form: accept as is


def _unknown_key_error(cls: type, path: str, key: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    where = f"under '{path}'" if path else "at the top level"
    msg = f"unknown key '{_join(path, key)}'; valid keys {where}: {', '.join(names)}"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        msg += f" (did you mean '{close[0]}'?)"
    return ConfigError(msg)


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, path: str = "") -> T:
    """Build a dataclass from a plain mapping, checking keys, types and values.

    Missing keys keep their defaults; nested dataclass fields accept mappings (partial ones
    merge into the field's default). After construction, every dataclass's ``validate()``
    method (when defined) runs; a ``ValueError`` it raises is re-raised as
    :class:`ConfigError` prefixed with the section path.

    Parameters
    ----------
    cls : type
        Any dataclass type (including ``duin.models.config`` classes).
    data : Mapping or None
        Field values; None means all defaults.
    path : str
        Dotted location of this section, used in error messages.

    Returns
    -------
    cls
        A validated instance.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        where = f"'{path}'" if path else "the configuration"
        raise ConfigError(f"{where} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key not in fields:
            raise _unknown_key_error(cls, path, key)
        tp = hints.get(key, Any)
        sub = _join(path, key)
        default = _field_default(fields[key])
        # A partial mapping for a nested dataclass field merges into that field's default, so
        # the default model/data config of a stage survives a file that sets one key of it.
        if (
            isinstance(value, Mapping)
            and dataclasses.is_dataclass(default)
            and not isinstance(default, type)
        ):
            merged = _deep_merge(to_dict(default), value)
            kwargs[key] = from_dict(type(default), merged, path=sub)
        else:
            kwargs[key] = _convert(tp, value, sub)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None
    _run_validate(obj, path)
    return obj


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _run_validate(obj: Any, path: str) -> None:
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            prefix = f"invalid config '{path}'" if path else "invalid config"
            raise ConfigError(f"{prefix}: {exc}") from None


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, the rest replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a plain nested dict (keys are checked later by from_dict).

    Parameters
    ----------
    data : Mapping
        Plain configuration data.
    overrides : sequence of str
        ``KEY=VALUE`` strings; values use YAML scalar semantics.

    Returns
    -------
    dict
        A new dict with the overrides applied.
    """
    out = copy.deepcopy(dict(data))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"invalid override {text!r}: '{where}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def builtin_config_path(name: str | Path) -> Path:
    """Resolve a config argument: an existing file, or the name of a packaged config.

    Parameters
    ----------
    name : str or pathlib.Path
        A path, or ``quick`` / ``paper`` (with or without ``.yaml``) for the packaged files.

    Returns
    -------
    pathlib.Path
        The file to read.
    """
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and (_BUILTIN_DIR / f"{stem}.yaml").is_file():
        return _BUILTIN_DIR / f"{stem}.yaml"
    available = ", ".join(sorted(p.stem for p in _BUILTIN_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"config file not found: {name} (packaged configs: {available})")


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    cls: type[T] | None = None,
    section: str | None = None,
) -> T:
    """Load, merge, override and validate a run configuration.

    Parameters
    ----------
    path : str, pathlib.Path or None
        YAML file or packaged config name (``quick``, ``paper``); None uses the defaults of
        ``cls``.
    overrides : sequence of str
        ``a.b=c`` strings applied after the file (YAML scalar semantics).
    cls : type, optional
        Target dataclass (default :class:`RunConfig`).
    section : str, optional
        Stage section (``vqvae``, ``mae``, ``cls``) to merge over the file's top-level keys.
        Without it the file must not contain stage sections other than as ignored siblings.

    Returns
    -------
    cls
        The validated configuration.
    """
    target: type = RunConfig if cls is None else cls
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        file = builtin_config_path(path)
        source = str(file)
        loaded = load_yaml(file)
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{file}: expected a mapping at the top level")
        raw = dict(loaded)
    shared = {k: v for k, v in raw.items() if k not in STAGES}
    if section is not None:
        if section not in STAGES:
            raise ConfigError(f"unknown stage '{section}'; valid stages: {', '.join(STAGES)}")
        stage = raw.get(section) or {}
        if not isinstance(stage, Mapping):
            raise ConfigError(f"{source}: section '{section}' must be a mapping")
        merged = _deep_merge(shared, stage)
    else:
        merged = shared
    merged = apply_overrides(merged, overrides)
    try:
        return from_dict(target, merged)
    except ConfigError as err:
        if path is None:
            raise
        where = f"{source} with --set overrides" if overrides else source
        raise ConfigError(f"{where}: {err}") from None


def config_to_yaml(config: Any) -> str:
    """Render a dataclass config (or plain data) as YAML.

    Parameters
    ----------
    config : Any
        Dataclass instance or plain data.

    Returns
    -------
    str
        YAML text that :func:`load_config` reads back to an equal config.
    """
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def save_config(config: Any, path: str | Path) -> Path:
    """Write a config as YAML atomically.

    Parameters
    ----------
    config : Any
        Dataclass instance or plain data.
    path : str or pathlib.Path
        Destination file.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    from duin.utils.io import atomic_write_text

    return atomic_write_text(path, config_to_yaml(config))


# ---------------------------------------------------------------------------------------------
# Run-level dataclasses
# ---------------------------------------------------------------------------------------------


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (AdamW + linear warm-up + cosine decay).

    Defaults are the paper's CLS recipe (Table 7); ``configs/paper.yaml`` sets each stage.

    Parameters
    ----------
    lr : float
        Peak learning rate ``lr_max`` reached at the end of warm-up.
    lr_min : float
        Final learning rate of the cosine decay.
    weight_decay : float
        AdamW decoupled weight decay (applied only to the "decay" parameter group).
    betas : tuple of float
        AdamW betas. Paper tables: (0.9, 0.99); the reference code uses (0.9, 0.999).
    eps : float
        AdamW epsilon.
    warmup_epochs : int
        Linear warm-up length in epochs.
    epochs : int
        Total number of epochs.
    batch_size : int
        Global batch per optimizer step (split over processes and accumulation steps).
    grad_clip : float or None
        Max global gradient norm; None disables clipping (the reference does not clip).
    grad_accum_steps : int
        Micro-batches per optimizer step; a memory knob that keeps the effective batch.
    schedule : {"epoch", "step"}
        Set the LR once per epoch (reference) or every optimizer step.
    """

    lr: float = 2e-4
    lr_min: float = 5e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    warmup_epochs: int = 20
    epochs: int = 200
    batch_size: int = 32
    grad_clip: float | None = None
    grad_accum_steps: int = 1
    schedule: Literal["epoch", "step"] = "epoch"

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(self.lr_min >= 0, f"lr_min must be >= 0, got {self.lr_min}")
        _require(self.lr_min <= self.lr, f"lr_min ({self.lr_min}) must be <= lr ({self.lr})")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(
            all(0.0 <= b < 1.0 for b in self.betas), f"betas must be in [0, 1), got {self.betas}"
        )
        _require(self.eps > 0, f"eps must be > 0, got {self.eps}")
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(
            0 <= self.warmup_epochs <= self.epochs,
            f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}",
        )
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(
            self.grad_clip is None or self.grad_clip > 0,
            f"grad_clip must be > 0 or null (off), got {self.grad_clip}",
        )
        _require(
            self.grad_accum_steps >= 1,
            f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}",
        )


@dataclass
class TrainerConfig:
    """Mechanics of the training loop (not part of the scientific recipe).

    Parameters
    ----------
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    precision : {"fp32", "bf16", "fp16"}
        Numeric precision of training (:mod:`duin.training.precision`): ``fp32`` (default,
        parity with the reference), ``bf16`` autocast (CPU and CUDA), ``fp16`` autocast with a
        gradient scaler (CUDA only).
    compile : bool
        Compile the model's tensor computation with :func:`torch.compile` (models that support
        it; falls back to eager execution, with a warning, when compilation fails).
    amp : {"auto", "off", "bf16", "fp16"} or None
        Deprecated spelling of ``precision`` (configs written before it): ``bf16``/``fp16``
        select that precision when ``precision`` is left at fp32; ``auto``/``off`` mean fp32.
    checkpoint_every_steps : int
        Also write the resumable ``last`` checkpoint every N optimizer steps (0 = epoch ends only).
    snapshot_every_epochs : int
        Keep a weights-only ``epoch-NNNN`` snapshot every N epochs (0 = none; the final epoch is
        always snapshotted when > 0).
    keep_last : int or None
        How many epoch snapshots to keep (None = all).
    early_stopping_patience : int or None
        Stop after this many epochs without improvement of the selection metric (None = off).
    selection_metric : str
        Validation metric that picks the ``best`` checkpoint, e.g. ``val/loss`` or ``val/top1``.
    selection_mode : {"min", "max"}
        Whether lower or higher is better. Ties keep the earliest epoch.
    num_workers : int
        DataLoader worker processes (exact resume is guaranteed with 0, or with datasets whose
        randomness depends only on the sample index and epoch).
    log_every : int
        Log the running training loss every N optimizer steps (0 = epoch summaries only).
    tensorboard : bool
        Write TensorBoard event files under ``tb/``.
    progress : bool
        Show tqdm progress bars (still hidden when stderr is not a terminal).
    find_unused_parameters : bool
        Passed to DistributedDataParallel.
    sync_batchnorm : bool
        Under DDP, normalise BatchNorm layers with the statistics of the global batch (torch's
        SyncBatchNorm on CUDA, as the reference does; an all-reduce version on CPU/gloo), so N
        processes train the same model as one process on the same global batch.
    deterministic : bool
        Use deterministic CUDA kernels (needed for bit-exact resume on GPU; slower).
    on_nonfinite : {"stop", "skip"}
        On a NaN/Inf loss or gradient: stop with a one-line error (``checkpoints/last`` stays the
        last good checkpoint), or skip that optimizer step.
    max_nonfinite_skips : int
        Under ``skip``: how many steps a run may skip before it stops anyway.
    """

    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    amp: Literal["auto", "off", "bf16", "fp16"] | None = None
    checkpoint_every_steps: int = 0
    snapshot_every_epochs: int = 0
    keep_last: int | None = None
    early_stopping_patience: int | None = None
    selection_metric: str = "val/loss"
    selection_mode: Literal["min", "max"] = "min"
    num_workers: int = 0
    log_every: int = 50
    tensorboard: bool = True
    progress: bool = True
    find_unused_parameters: bool = False
    sync_batchnorm: bool = True
    deterministic: bool = False
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_nonfinite_skips: int = 10

    @property
    def resolved_precision(self) -> str:
        """``precision``, or the deprecated ``amp`` request when only that one is set."""
        if self.precision == "fp32" and self.amp in ("bf16", "fp16"):
            return self.amp
        return self.precision

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        _require(
            self.max_nonfinite_skips >= 0,
            f"max_nonfinite_skips must be >= 0, got {self.max_nonfinite_skips}",
        )
        _require(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device) is not None,
            f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        _require(
            not (self.resolved_precision == "fp16" and self.device in ("cpu", "mps")),
            f"precision fp16 needs a CUDA device (device is {self.device}); use bf16 on CPU",
        )
        _require(
            self.checkpoint_every_steps >= 0,
            f"checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}",
        )
        _require(
            self.snapshot_every_epochs >= 0,
            f"snapshot_every_epochs must be >= 0, got {self.snapshot_every_epochs}",
        )
        _require(
            self.keep_last is None or self.keep_last >= 1,
            f"keep_last must be >= 1 or null (keep all), got {self.keep_last}",
        )
        _require(
            self.early_stopping_patience is None or self.early_stopping_patience >= 1,
            f"early_stopping_patience must be >= 1 or null, got {self.early_stopping_patience}",
        )
        _require(bool(self.selection_metric), "selection_metric must not be empty")
        _require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        _require(self.log_every >= 0, f"log_every must be >= 0, got {self.log_every}")


@dataclass
class RunConfig:
    """One training run: seed, optimiser, trainer mechanics, and stage-specific sections.

    Stage configs subclass this and give ``model`` and ``data`` concrete dataclass types; here
    they are free-form mappings so generic tools (and tests) can use the class directly.

    Parameters
    ----------
    seed : int
        Drives splits, initialisation, data order, masking, augmentation.
    protocol : {"clean", "reference"}
        Evaluation protocol: leak-free default, or the paper code's (see reports).
    optim : OptimConfig
        Optimiser and schedule.
    trainer : TrainerConfig
        Loop mechanics.
    model : dict
        Model section (typed in stage configs).
    data : dict
        Data section (typed in stage configs).
    """

    seed: int = 42
    protocol: Literal["clean", "reference"] = "clean"
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        _require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")

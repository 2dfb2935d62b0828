"""Model registry and checkpoints: ``create_model``, ``list_models``, ``save_model``, ``load_model``.

A checkpoint is a directory with ``model.safetensors`` (the state dict) and ``config.json``::

    {"name": "duin_cls", "config": {...}, "duin_version": "0.1.0"}

plus ``manifest.json`` (SHA-256 of each file, written last; :mod:`duin.utils.integrity`), which
``load_model`` verifies. ``save_model`` writes into a temporary sibling directory and renames it
into place, so a checkpoint directory is either complete or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from duin._version import __version__
from duin.models.duin import DuINClassifier, DuINMAE, DuINVQVAE
from duin.utils.integrity import verify_manifest, write_manifest
from duin.utils.io import named_write_error

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "create_model",
    "get_model_class",
    "list_models",
    "load_model",
    "register_model",
    "save_model",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

_REGISTRY: dict[str, tuple[type[nn.Module], type]] = {}
_ALIASES: dict[str, str] = {"vqvae": "duin_vqvae", "mae": "duin_mae", "cls": "duin_cls"}


def register_model(name: str, config_class: type) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a model to the registry.

    Parameters
    ----------
    name : str
        Registry name (also written to checkpoints).
    config_class : type
        Its config dataclass (with ``from_dict``, ``to_dict`` and ``validate``); the model is built
        as ``cls(config)``.

    Returns
    -------
    callable
        The decorator.
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = (cls, config_class)
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return decorator


for _cls in (DuINVQVAE, DuINMAE, DuINClassifier):
    register_model(_cls.registry_name, _cls.config_class)(_cls)


def list_models() -> list[str]:
    """Registered model names (aliases ``vqvae``, ``mae``, ``cls`` are accepted too)."""
    return sorted(_REGISTRY)


def get_model_class(name: str) -> tuple[type[nn.Module], type]:
    """``(model_class, config_class)`` of a registered name or alias."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    return _REGISTRY[key]


def create_model(name: str, config: Any = None, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str
        Registry name or alias, e.g. ``"duin_cls"`` / ``"cls"``.
    config : dataclass or dict, optional
        A full config; ``overrides`` are applied on top.
    **overrides
        Config fields, e.g. ``n_channels=12, n_subjects=3``; nested ``quantizer`` may be a dict.

    Returns
    -------
    nn.Module
        The model (training mode, fresh initialisation).
    """
    model_cls, config_cls = get_model_class(name)
    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, dict):
        data = dict(config)
    elif isinstance(config, config_cls):
        data = config.to_dict()
    else:
        raise ValueError(f"config for {name!r} must be a {config_cls.__name__} or a dict")
    if "quantizer" in overrides and isinstance(overrides["quantizer"], dict):
        merged = dict(data.get("quantizer") or {})
        merged.update(overrides.pop("quantizer"))
        data["quantizer"] = merged
    data.update(overrides)
    return model_cls(config_cls.from_dict(data))


def _model_name(model: nn.Module) -> str:
    name = getattr(model, "registry_name", "")
    if name not in _REGISTRY:
        raise ValueError(f"{type(model).__name__} is not a registered model; cannot save it")
    return name


def save_model(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a checkpoint directory (atomic: temp directory, then rename).

    Parameters
    ----------
    model : nn.Module
        A registered model (with ``.config``).
    path : str or Path
        Target directory; replaced if it exists.

    Returns
    -------
    Path
        The checkpoint directory.
    """
    from safetensors.torch import save_file

    name = _model_name(model)
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"name": name, "config": model.config.to_dict(), "duin_version": __version__}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        raise named_write_error(err, path) from err
    try:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"name": name})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        write_manifest(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise named_write_error(err, path) from err
        raise
    return path


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint directory, in eval mode.

    Parameters
    ----------
    path : str or Path
        Directory with ``model.safetensors`` and ``config.json``.
    map_location : str or torch.device
        Device of the returned model.

    Returns
    -------
    nn.Module
        The model, ``eval()``.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        If the config is malformed or a tensor's shape or name does not match the config.
    duin.utils.integrity.IntegrityError
        If a file differs from the SHA-256 recorded in the checkpoint's ``manifest.json``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for file in (config_path, weights_path):
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {file}")
    verify_manifest(path)
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or "name" not in meta or "config" not in meta:
        raise ValueError(f"{config_path}: expected keys 'name' and 'config'")
    model = create_model(meta["name"], meta["config"])
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights_path}: cannot read safetensors ({err})") from err
    load_state_checked(model, state, source=str(weights_path))
    return model.to(map_location).eval()


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with ValueErrors naming missing, unexpected or mis-shaped tensors."""
    expected = model.state_dict()
    # Keys a module writes only in some states (e.g. the quantizer's k-means pool mid-init).
    optional = {
        f"{name}.{key}" if name else key
        for name, module in model.named_modules()
        for key in getattr(module, "optional_state_keys", ())
    }
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected) - optional)
    if missing or unexpected:
        raise ValueError(
            f"{source}: tensors do not match the config: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)} but the config "
                f"expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)


# Baselines register themselves on import; imported last so the decorator above exists.
import duin.models.baselines  # noqa: E402,F401

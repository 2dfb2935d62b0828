"""The trainer's types, run-directory file names, its result and interruption types, and its
pluggable defaults (parameter groups, saving/loading weights, the forward call).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from duin.config import to_dict

Batch = dict[str, Any]
ForwardFn = Callable[[nn.Module, Batch], Mapping[str, torch.Tensor]]
EvaluateFn = Callable[[nn.Module, Iterable[Batch]], Mapping[str, float]]
CountMetricsFn = Callable[[Mapping[str, torch.Tensor]], Mapping[str, float]]
ParamGroupsFn = Callable[[nn.Module, float], list[dict[str, Any]]]
SaveModelFn = Callable[[nn.Module, Path], Any]
LoadWeightsFn = Callable[[nn.Module, Path], Any]

_STATE_VERSION = 1
_STATE_FILE = "trainer_state.json"
_OPTIM_FILE = "optimizer.pt"
_WEIGHTS_FILE = "model.safetensors"


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT/SIGTERM after writing a complete, resumable checkpoint.

    Parameters
    ----------
    signum : int
        The signal received.
    run_dir : pathlib.Path
        The run directory to resume.
    """

    def __init__(self, signum: int, run_dir: Path) -> None:
        self.signum = int(signum)
        self.run_dir = Path(run_dir)
        name = signal.Signals(self.signum).name
        super().__init__(
            f"training interrupted by {name}; resumable checkpoint in {self.run_dir} "
            "(run the same command with --resume)"
        )

    @property
    def exit_code(self) -> int:
        """Conventional shell exit status ``128 + signal``."""
        return 128 + self.signum


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Parameters
    ----------
    run_dir : pathlib.Path
        The run directory.
    epochs_completed : int
        Number of finished epochs.
    global_step : int
        Number of optimizer steps taken.
    best_epoch : int or None
        Zero-based epoch with the best selection metric (None without validation).
    best_metric : float or None
        Its value.
    stopped_early : bool
        True when early stopping ended the run.
    history : list of dict
        The ``metrics.jsonl`` records (on rank 0; empty on other ranks).
    """

    run_dir: Path
    epochs_completed: int
    global_step: int
    best_epoch: int | None
    best_metric: float | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_dir(self) -> Path:
        """Resumable checkpoint of the final state."""
        return self.run_dir / "checkpoints" / "last"

    @property
    def best_dir(self) -> Path:
        """Weights of the best epoch."""
        return self.run_dir / "checkpoints" / "best"


# ---------------------------------------------------------------------------------------------
# Pluggable defaults
# ---------------------------------------------------------------------------------------------


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as in the reference: no decay for ndim <= 1 tensors and ``*.bias``.

    Frozen parameters are left out.

    Parameters
    ----------
    model : nn.Module
        The model.
    weight_decay : float
        Decay of the "decay" group.

    Returns
    -------
    list of dict
        Optimizer parameter groups (empty groups omitted).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def default_save_model(model: nn.Module, directory: Path) -> None:
    """Write ``model.safetensors`` (all parameters and persistent buffers) and ``config.json``.

    Registered duin models (with a ``registry_name``) are written with
    ``duin.models.registry.save_model`` so that ``duin.load_model`` rebuilds them. Other modules
    get a plain safetensors file and a ``config.json`` with the class name and ``model.config``
    (when the model has one).

    Parameters
    ----------
    model : nn.Module
        The model (not wrapped in DDP).
    directory : pathlib.Path
        Existing directory to write into.
    """
    if getattr(model, "registry_name", ""):
        # A registered duin model: write the checkpoint duin.load_model reads.
        from duin.models.registry import save_model as registry_save

        registry_save(model, directory)
        return
    from safetensors.torch import save_model

    save_model(model, str(directory / _WEIGHTS_FILE))
    config = getattr(model, "config", None)
    payload: dict[str, Any] = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    if config is not None:
        payload["config"] = to_dict(config)
    (directory / "config.json").write_text(json.dumps(payload, indent=2) + "\n")


def default_load_weights(model: nn.Module, directory: Path) -> None:
    """Load ``model.safetensors`` from a checkpoint directory into ``model`` (strict).

    Parameters
    ----------
    model : nn.Module
        The model to fill (on its current device).
    directory : pathlib.Path
        Checkpoint directory.
    """
    from safetensors.torch import load_model

    from duin.utils.integrity import verify_manifest

    verify_manifest(directory)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    load_model(model, str(directory / _WEIGHTS_FILE), strict=True, device=str(device))


def default_forward(model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor]:
    """Call ``model(**batch)`` (e.g. ``model(x=..., subject=..., labels=...)``).

    Parameters
    ----------
    model : nn.Module
        The (possibly DDP-wrapped) model.
    batch : dict
        Batch already on the model's device.

    Returns
    -------
    Mapping[str, torch.Tensor]
        The model's outputs, with a scalar ``loss``.
    """
    return model(**batch)

"""One generic training loop for every stage and baseline.

:class:`Trainer` trains any ``nn.Module`` whose forward returns a dict with a scalar ``loss``
(plus optional scalar diagnostics, averaged into the logs). It provides:

- AdamW with decay / no-decay parameter groups (pluggable), linear warm-up + cosine LR set per
  epoch as the reference does (or per step), gradient clipping and accumulation, precision
  fp32 | bf16 | fp16 (:mod:`duin.training.precision`);
- validation every epoch and best-epoch selection on validation metrics only (ties keep the
  earliest epoch; test data never enter the trainer), optional early stopping;
- ``metrics.jsonl`` (one JSON line per epoch), TensorBoard events, tqdm bars, ``logging``;
- atomic checkpoints (``checkpoints/last`` resumable, ``checkpoints/best`` weights only) and
  **exact resume**: a run killed at any point (even SIGKILL) and resumed ends with bit-identical
  weights and metrics to an uninterrupted run with the same seed (on CPU, and on CUDA with
  ``deterministic=True`` kernels). Data order is a pure function of ``(seed, epoch)``; the
  position inside the epoch, all RNG states, optimizer/scaler state and partial-epoch statistics
  are checkpointed;
- SIGINT/SIGTERM: the current optimizer step finishes, a complete checkpoint is written and
  :class:`TrainingInterrupted` is raised (exit code ``128 + signal``);
- DistributedDataParallel under ``torchrun`` (gloo on CPU, nccl on CUDA) with deterministic
  sharding; only rank 0 writes files; training statistics are all-reduced.

Run directory layout::

    run_dir/
      config.yaml        resolved configuration (when given)
      env.json           versions, git hash, seed, host, device, world size
      metrics.jsonl      one record per epoch: epoch, step, lr, train/*, val/*, best_epoch
      train.log          log messages of rank 0
      tb/                TensorBoard events
      checkpoints/
        last/            model.safetensors, config.json, optimizer.pt, trainer_state.json
        best/            model.safetensors, config.json, best.json (weights only)
        epoch-NNNN/      optional weights-only snapshots
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from duin.config import OptimConfig, TrainerConfig, config_to_yaml, load_yaml, to_dict
from duin.training import distributed as ddp_utils
from duin.training import precision as precision_lib
from duin.training.optim import build_adamw
from duin.training.schedule import lr_at_epoch, lr_at_step
from duin.utils.env import env_info
from duin.utils.io import atomic_dir, atomic_write_json, atomic_write_text, recover_dir
from duin.utils.seeding import derive_seed, get_rng_state, seed_everything, set_rng_state

__all__ = [
    "Batch",
    "EpochBatchSampler",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "default_forward",
    "default_load_weights",
    "default_param_groups",
    "default_save_model",
]

logger = logging.getLogger(__name__)

#: A batch: a dict of tensors (``x`` (batch, n_channels, n_times), ``subject`` (batch,), ...).
Batch = dict[str, Any]
ForwardFn = Callable[[nn.Module, Batch], Mapping[str, torch.Tensor]]
EvaluateFn = Callable[[nn.Module, Iterable[Batch]], Mapping[str, float]]
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

    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    load_model(model, str(directory / _WEIGHTS_FILE), strict=True, device=str(device))


def default_forward(model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor]:
    """Call ``model(**batch)`` (e.g. ``model(x=..., subject=..., label=...)``).

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


# ---------------------------------------------------------------------------------------------
# Deterministic, resumable, sharded batch order
# ---------------------------------------------------------------------------------------------


class EpochBatchSampler:
    """Index batches whose order is a pure function of ``(seed, epoch)``, sharded over ranks.

    Each epoch draws a permutation from a ``torch.Generator`` seeded with
    ``derive_seed(seed, "train-order", epoch)``, pads it (repeating its head) to a multiple of
    ``world_size`` so every rank gets the same number of batches, takes every ``world_size``-th
    index from ``rank``, and cuts it into ``micro_batch`` chunks (the last may be shorter).
    ``set_epoch(epoch, start=k)`` skips the first ``k`` batches without touching the data.

    Parameters
    ----------
    n_samples : int
        Dataset length.
    micro_batch : int
        Samples per batch on this rank.
    seed : int
        Run seed.
    shuffle : bool
        Permute (train) or keep order (evaluation).
    rank, world_size : int
        Shard of this process.
    """

    def __init__(
        self,
        n_samples: int,
        micro_batch: int,
        *,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n_samples <= 0:
            raise ValueError("the training dataset is empty")
        if micro_batch <= 0:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        self.n_samples = n_samples
        self.micro_batch = micro_batch
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    @property
    def shard_size(self) -> int:
        """Samples per rank per epoch (after padding)."""
        return math.ceil(self.n_samples / self.world_size)

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.micro_batch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and the first batch to yield.

        Parameters
        ----------
        epoch : int
            Zero-based epoch.
        start : int
            Number of batches already consumed in this epoch (resume).
        """
        self.epoch = epoch
        self.start = start

    def batches(self) -> list[list[int]]:
        """All batches of the current epoch for this rank (including skipped ones)."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "train-order", self.epoch))
            order = torch.randperm(self.n_samples, generator=gen).tolist()
        else:
            order = list(range(self.n_samples))
        total = self.shard_size * self.world_size
        while len(order) < total:
            order.extend(order[: total - len(order)])
        shard = order[self.rank : total : self.world_size]
        return [shard[i : i + self.micro_batch] for i in range(0, len(shard), self.micro_batch)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start :]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_device(v, device, non_blocking) for v in obj)
    return obj


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        if "x" in batch and isinstance(batch["x"], torch.Tensor):
            return int(batch["x"].shape[0])
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.ndim:
                return int(value.shape[0])
    if isinstance(batch, list | tuple) and batch:
        return _batch_size(batch[0])
    return 1


def _scalar_outputs(out: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The 0-dim floating tensors of a model output (logged as averaged metrics)."""
    return {
        k: v.detach()
        for k, v in out.items()
        if isinstance(v, torch.Tensor) and v.ndim == 0 and v.is_floating_point()
    }


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"trainer.device={name!r} but CUDA is not available")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _as_dataset(data: Any, what: str) -> tuple[Dataset, Callable | None, int | None]:
    """Accept a map-style Dataset or a DataLoader (whose dataset and collate_fn are reused)."""
    if isinstance(data, DataLoader):
        dataset, collate, batch = data.dataset, data.collate_fn, data.batch_size
    else:
        dataset, collate, batch = data, None, None
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
        raise TypeError(
            f"{what} must be a map-style Dataset (with __len__ and __getitem__) or a DataLoader "
            f"over one, got {type(dataset).__name__}"
        )
    return dataset, collate, batch


class _DeviceLoader:
    """Iterate a loader and move each batch to the device (what evaluate_fn receives)."""

    def __init__(self, loader: Iterable[Batch], device: torch.device) -> None:
        self.loader = loader
        self.device = device

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield _to_device(batch, self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class Trainer:
    """Train a model with validation, selection, logging, checkpoints and exact resume.

    Parameters
    ----------
    model : nn.Module
        Returns a dict with a scalar ``loss`` (other 0-dim float outputs are averaged and logged
        as ``train/<name>``). Create it after seeding for reproducible initialisation.
    train_data : Dataset or DataLoader
        Map-style dataset of dict samples (e.g. ``{"x": (n_channels, n_times) float32,
        "subject": int64, "label": int64}``). A DataLoader contributes its dataset and
        ``collate_fn``; batching, order and sharding always come from the trainer.
    val_data : Dataset or DataLoader, optional
        Validation data, evaluated every epoch in full on every rank. A DataLoader is used as
        is; a Dataset is read in order.
    run_dir : str or pathlib.Path
        Run directory (created). See the module docstring for its layout.
    optim : OptimConfig, optional
        Optimiser and schedule (default: ``OptimConfig()``).
    trainer : TrainerConfig, optional
        Loop mechanics (default: ``TrainerConfig()``).
    seed : int
        Run seed: data order, dropout/augmentation streams (per rank).
    config : Any, optional
        The resolved run configuration (dataclass or dict) written to ``config.yaml``; on resume
        it must equal the saved one.
    evaluate_fn : callable, optional
        ``evaluate_fn(model, batches) -> {name: float}`` computed on validation data, with the
        model in eval mode under ``torch.no_grad()`` and batches already on the model's device.
        Names are logged as ``val/<name>``. Default: sample-weighted means of the scalar outputs
        of ``forward_fn`` (``val/loss``, ...).
    forward_fn : callable, optional
        ``forward_fn(model, batch) -> outputs`` for training steps and the default validation
        (default ``model(**batch)``). It must call the module (not ``model.module``) so DDP
        synchronises gradients.
    param_groups_fn : callable, optional
        ``param_groups_fn(model, weight_decay) -> groups`` (e.g.
        ``duin.models.optimizer_param_groups``); default :func:`default_param_groups`.
        A group's optional ``lr_scale`` multiplies the scheduled LR.
    save_model_fn : callable, optional
        ``save_model_fn(model, directory)`` writing ``model.safetensors`` (state-dict keys) and
        ``config.json`` (e.g. ``duin.models.registry.save_model``); default
        :func:`default_save_model`.
    load_weights_fn : callable, optional
        ``load_weights_fn(model, directory)`` restoring weights written by ``save_model_fn``
        into the existing model; default :func:`default_load_weights`.
    collate_fn : callable, optional
        Batch collation (default ``torch.utils.data.default_collate``).
    monitor_data : Mapping[str, Dataset or DataLoader], optional
        Extra sets evaluated each epoch with the same evaluator and logged as
        ``<name>/<metric>``; never used for selection or stopping.
    resume : bool
        Continue the run in ``run_dir`` from ``checkpoints/last`` (a fresh start if none).
        Without it, a run directory that already holds a run is an error.
    quiet : bool
        Hide progress bars.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset | DataLoader,
        val_data: Dataset | DataLoader | None = None,
        *,
        run_dir: str | os.PathLike,
        optim: OptimConfig | None = None,
        trainer: TrainerConfig | None = None,
        seed: int = 42,
        config: Any = None,
        evaluate_fn: EvaluateFn | None = None,
        forward_fn: ForwardFn | None = None,
        param_groups_fn: ParamGroupsFn | None = None,
        save_model_fn: SaveModelFn | None = None,
        load_weights_fn: LoadWeightsFn | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        monitor_data: Mapping[str, Dataset | DataLoader] | None = None,
        resume: bool = False,
        quiet: bool = False,
    ) -> None:
        self.optim_cfg = optim if optim is not None else OptimConfig()
        self.cfg = trainer if trainer is not None else TrainerConfig()
        self.optim_cfg.validate()
        self.cfg.validate()
        self.model = model
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.seed = int(seed)
        self.config = config
        self.evaluate_fn = evaluate_fn
        self.forward_fn = forward_fn or default_forward
        self.param_groups_fn = param_groups_fn or default_param_groups
        self.save_model_fn = save_model_fn or default_save_model
        self.load_weights_fn = load_weights_fn or default_load_weights
        self.resume = resume
        self.quiet = quiet
        self.train_dataset, loader_collate, _ = _as_dataset(train_data, "train_data")
        self.collate_fn = collate_fn or loader_collate or default_collate
        self.val_data = val_data
        self.monitor_data = dict(monitor_data or {})
        if self.val_data is not None and not isinstance(self.val_data, DataLoader):
            _as_dataset(self.val_data, "val_data")
        self._stop_signal: int | None = None

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        train_data: Dataset | DataLoader,
        val_data: Dataset | DataLoader | None,
        config: Any,
        *,
        run_dir: str | os.PathLike,
        **kwargs: Any,
    ) -> Trainer:
        """Build a trainer from a :class:`duin.config.RunConfig` (or a subclass).

        Parameters
        ----------
        model, train_data, val_data
            As for :class:`Trainer`.
        config : RunConfig
            Supplies ``optim``, ``trainer`` and ``seed``; written to ``config.yaml``.
        run_dir : str or pathlib.Path
            Run directory.
        **kwargs
            Other :class:`Trainer` arguments (``evaluate_fn``, ``resume``, ...).

        Returns
        -------
        Trainer
            The trainer.
        """
        return cls(
            model,
            train_data,
            val_data,
            run_dir=run_dir,
            optim=config.optim,
            trainer=config.trainer,
            seed=config.seed,
            config=config,
            **kwargs,
        )

    # ----------------------------------------------------------------------------- setup

    def _setup(self) -> None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = _resolve_device(self.cfg.device, local_rank)
        self.dist = ddp_utils.init_distributed(self.device.type)
        if self.device.type == "cuda" and self.cfg.device == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        world, accum = self.dist.world_size, self.optim_cfg.grad_accum_steps
        if self.optim_cfg.batch_size % (world * accum) != 0:
            raise ValueError(
                f"optim.batch_size={self.optim_cfg.batch_size} must be divisible by "
                f"world_size ({world}) x grad_accum_steps ({accum})"
            )
        self.micro_batch = self.optim_cfg.batch_size // (world * accum)
        self.precision = self.cfg.resolved_precision
        self.amp_dtype = precision_lib.autocast_dtype(self.precision, self.device)
        if self.cfg.deterministic:
            # cuBLAS needs this before its first call to be deterministic.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        model = self.model.to(self.device)
        if self.cfg.compile and hasattr(model, "enable_compile"):
            model.enable_compile()  # eager fallback inside the model if compilation fails
        if (
            self.dist.enabled
            and self.device.type == "cuda"
            and self.cfg.sync_batchnorm
            and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        ):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.raw_model = model
        if self.dist.enabled:
            self.train_model: nn.Module = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.cfg.find_unused_parameters,
            )
        else:
            self.train_model = model
        groups = self.param_groups_fn(model, self.optim_cfg.weight_decay)
        self.optimizer = build_adamw(
            groups,
            lr=self.optim_cfg.lr,
            betas=self.optim_cfg.betas,
            eps=self.optim_cfg.eps,
            weight_decay=self.optim_cfg.weight_decay,
            device=self.device,
        )
        self.scaler = precision_lib.grad_scaler(self.precision, self.device)
        self.sampler = EpochBatchSampler(
            len(self.train_dataset),  # type: ignore[arg-type]
            self.micro_batch,
            seed=self.seed,
            shuffle=True,
            rank=self.dist.rank,
            world_size=world,
        )
        self.n_micro = len(self.sampler)
        self.steps_per_epoch = math.ceil(self.n_micro / accum)

    def _make_train_loader(self, epoch: int) -> DataLoader:
        # A dedicated generator keeps DataLoader start-up from consuming the global RNG (which
        # would make a resumed epoch diverge) and makes worker seeds a function of the epoch.
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "loader", epoch))
        return DataLoader(
            self.train_dataset,
            batch_sampler=self.sampler,  # type: ignore[arg-type]
            collate_fn=self.collate_fn,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=gen,
        )

    def _make_eval_loader(self, data: Any) -> Iterable[Batch]:
        if isinstance(data, DataLoader):
            return data
        dataset, collate, _ = _as_dataset(data, "evaluation data")
        sampler = EpochBatchSampler(
            len(dataset),  # type: ignore[arg-type]
            self.optim_cfg.batch_size // self.optim_cfg.grad_accum_steps,
            seed=self.seed,
            shuffle=False,
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,  # type: ignore[arg-type]
            collate_fn=collate or self.collate_fn,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(0),
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        return precision_lib.autocast(self.precision, self.device)

    # ------------------------------------------------------------------------ run dir

    def _prepare_run_dir(self) -> dict[str, Any] | None:
        """Create the run directory; return the saved trainer state when resuming."""
        if self.dist.is_main and self.ckpt_dir.is_dir():
            # Finish or undo directory swaps interrupted by a kill; drop half-written temps.
            for name in ("last", "best"):
                recover_dir(self.ckpt_dir / name)
            for trash in self.ckpt_dir.glob(".trash-*"):
                name = trash.name[len(".trash-") :].rsplit("-", 1)[0]
                recover_dir(self.ckpt_dir / name)
            # Every other hidden entry is a temporary of an unfinished write (ours or a
            # save_model_fn's own temp directory).
            for leftover in self.ckpt_dir.glob(".*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        ddp_utils.barrier()
        last = self.ckpt_dir / "last" if (self.ckpt_dir / "last").is_dir() else None
        if last is not None and not self.resume:
            raise FileExistsError(
                f"run directory {self.run_dir} already holds a run (checkpoints/last); "
                "resume it with --resume or choose another --out"
            )
        if self.config is not None:
            saved = self.run_dir / "config.yaml"
            if last is not None and saved.is_file():
                self._check_same_config(saved)
        if last is None:
            if self.dist.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "metrics.jsonl").write_text("")
                # Without checkpoints/last nothing here is resumable: start from a clean slate
                # (e.g. after a kill before the first checkpoint).
                for stale in (self.run_dir / "tb", self.ckpt_dir):
                    if stale.is_dir():
                        shutil.rmtree(stale)
                if self.config is not None:
                    atomic_write_text(self.run_dir / "config.yaml", config_to_yaml(self.config))
            ddp_utils.barrier()
            return None
        state = json.loads((last / _STATE_FILE).read_text())
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"{last / _STATE_FILE}: unsupported trainer state version")
        return state

    def _check_same_config(self, saved_path: Path) -> None:
        saved = _flatten(load_yaml(saved_path))
        current = _flatten(to_dict(self.config))
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if diff:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff[:5])
            raise ValueError(
                f"cannot resume {self.run_dir}: the configuration differs from its config.yaml "
                f"({shown}); an exact resume needs the same configuration"
            )

    def _write_env(self, resumed_step: int | None) -> None:
        if not self.dist.is_main:
            return
        info = env_info(
            seed=self.seed,
            device=str(self.device),
            precision=self.precision,
            world_size=self.dist.world_size,
            resumed_from_step=resumed_step,
        )
        atomic_write_json(self.run_dir / "env.json", info)

    # --------------------------------------------------------------------- checkpoints

    def _save_last(self, epoch: int, batch_pos: int) -> None:
        """Write the resumable checkpoint (collective under DDP; rank 0 writes)."""
        # Per-rank state: RNG streams and this rank's partial-epoch statistics.
        per_rank = ddp_utils.all_gather_object(
            {
                "rng": get_rng_state(),
                "train_sums": {k: float(v) for k, v in self.train_sums.items()},
                "train_count": self.train_count,
                "log_sum": None if self._log_sum is None else float(self._log_sum),
                "log_n": self._log_n,
            }
        )
        if self.dist.is_main:
            metrics_file = self.run_dir / "metrics.jsonl"
            if self._metrics_handle is not None:
                self._metrics_handle.flush()
            state = {
                "version": _STATE_VERSION,
                "epoch": epoch,
                "batch_in_epoch": batch_pos,
                "global_step": self.global_step,
                "finished": self.finished,
                "stopped_early": self.stopped_early,
                "best_metric": self.best_metric,
                "best_epoch": self.best_epoch,
                "epochs_without_improvement": self.bad_epochs,
                "metrics_offset": metrics_file.stat().st_size if metrics_file.exists() else 0,
                "seed": self.seed,
                "world_size": self.dist.world_size,
                "n_train_samples": self.sampler.n_samples,
                "micro_batch": self.micro_batch,
                "grad_accum_steps": self.optim_cfg.grad_accum_steps,
                "ranks": per_rank,
            }
            with atomic_dir(self.ckpt_dir / "last") as tmp:
                self.save_model_fn(self.raw_model, tmp)
                torch.save(
                    {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()},
                    tmp / _OPTIM_FILE,
                )
                (tmp / _STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
        ddp_utils.barrier()

    def _save_weights(self, name: str, info: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with atomic_dir(self.ckpt_dir / name) as tmp:
            self.save_model_fn(self.raw_model, tmp)
            (tmp / f"{name.split('-')[0]}.json").write_text(json.dumps(info, indent=2) + "\n")

    def _prune_snapshots(self) -> None:
        if not self.dist.is_main or self.cfg.keep_last is None:
            return
        snapshots = sorted(self.ckpt_dir.glob("epoch-[0-9]*"))
        for old in snapshots[: -self.cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def _load_last(self, state: dict[str, Any]) -> None:
        last = self.ckpt_dir / "last"
        if state.get("world_size", 1) != self.dist.world_size:
            raise ValueError(
                f"cannot resume {self.run_dir}: it was trained with world_size="
                f"{state.get('world_size')} and now runs with {self.dist.world_size}"
            )
        now = {
            "n_train_samples": self.sampler.n_samples,
            "micro_batch": self.micro_batch,
            "grad_accum_steps": self.optim_cfg.grad_accum_steps,
        }
        for key, value in now.items():
            if state.get(key, value) != value:
                raise ValueError(
                    f"cannot resume {self.run_dir}: it was trained with {key}={state[key]} and "
                    f"now runs with {key}={value}; an exact resume needs the same data and batching"
                )
        self.load_weights_fn(self.raw_model, last)
        blob = torch.load(last / _OPTIM_FILE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scaler.load_state_dict(blob["scaler"])
        self.global_step = int(state["global_step"])
        self.finished = bool(state.get("finished", False))
        self.stopped_early = bool(state.get("stopped_early", False))
        self.best_metric = state["best_metric"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = int(state["epochs_without_improvement"])
        mine = state["ranks"][self.dist.rank]
        self.train_sums = {
            k: torch.tensor(v, dtype=torch.float64, device=self.device)
            for k, v in mine["train_sums"].items()
        }
        self.train_count = int(mine["train_count"])
        log_sum = mine["log_sum"]
        self._log_sum = (
            None
            if log_sum is None
            else torch.tensor(log_sum, dtype=torch.float64, device=self.device)
        )
        self._log_n = int(mine["log_n"])
        set_rng_state(mine["rng"])
        # Records written after this checkpoint (by the killed process) are dropped; they will
        # be recomputed identically.
        if self.dist.is_main:
            metrics_file = self.run_dir / "metrics.jsonl"
            with open(metrics_file, "a+b") as handle:
                handle.truncate(int(state["metrics_offset"]))

    # ------------------------------------------------------------------------- signals

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum
            logger.warning(
                "%s received: finishing the current step and writing a checkpoint "
                "(press Ctrl-C again to abort without one)",
                signal.Signals(signum).name,
            )

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _stop_requested(self) -> bool:
        return ddp_utils.any_flag(self._stop_signal is not None, self._flag_device)

    def _interrupt(self) -> TrainingInterrupted:
        signum = self._stop_signal if self._stop_signal is not None else signal.SIGTERM
        return TrainingInterrupted(signum, self.run_dir)

    # ---------------------------------------------------------------------- evaluation

    def _evaluate(self, data: Any) -> dict[str, float]:
        loader = _DeviceLoader(self._make_eval_loader(data), self.device)
        model = self.raw_model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self._autocast():
                if self.evaluate_fn is not None:
                    metrics = dict(self.evaluate_fn(model, loader))
                    for k, v in metrics.items():
                        if not isinstance(v, int | float | torch.Tensor) or (
                            isinstance(v, torch.Tensor) and v.numel() != 1
                        ):
                            raise TypeError(
                                f"evaluate_fn returned a non-scalar for {k!r} "
                                f"({type(v).__name__}); it must return scalar metrics"
                            )
                    return {k: float(v) for k, v in metrics.items()}
                sums: dict[str, torch.Tensor] = {}
                count = 0
                for batch in loader:
                    n = _batch_size(batch)
                    for k, v in _scalar_outputs(self.forward_fn(model, batch)).items():
                        sums[k] = sums.get(k, 0) + v.double() * n
                    count += n
                return {k: float(v.item()) / max(count, 1) for k, v in sums.items()}
        finally:
            model.train(was_training)

    # ----------------------------------------------------------------------- logging

    def _open_logs(self, resumed_step: int | None) -> None:
        self._metrics_handle = None
        self._tb = None
        self._log_handler: logging.Handler | None = None
        if not self.dist.is_main:
            return
        self._metrics_handle = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        handler = logging.FileHandler(self.run_dir / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        duin_logger = logging.getLogger("duin")
        duin_logger.addHandler(handler)
        # train.log always gets INFO; without a configured level nothing else changes (the
        # root logger's last-resort handler still shows warnings only).
        self._restore_level = duin_logger.level
        if duin_logger.level == logging.NOTSET:
            duin_logger.setLevel(logging.INFO)
        self._log_handler = handler
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events logged after the checkpoint by a killed process.
            purge = None if resumed_step is None else resumed_step + 1
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge)

    def _close_logs(self) -> None:
        if self._metrics_handle is not None:
            self._metrics_handle.close()
            self._metrics_handle = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._log_handler is not None:
            logging.getLogger("duin").removeHandler(self._log_handler)
            logging.getLogger("duin").setLevel(self._restore_level)
            self._log_handler.close()
            self._log_handler = None

    def _write_record(self, record: dict[str, Any]) -> None:
        if self._metrics_handle is not None:
            self._metrics_handle.write(json.dumps(record) + "\n")
            self._metrics_handle.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("epoch", "step", "best_epoch") and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, record["step"])
            self._tb.flush()

    def _read_history(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # ------------------------------------------------------------------------- schedule

    def _set_lr(self, epoch: int) -> float:
        o = self.optim_cfg
        if o.schedule == "step":
            lr = lr_at_step(
                self.global_step,
                steps_per_epoch=self.steps_per_epoch,
                lr_max=o.lr,
                lr_min=o.lr_min,
                warmup=o.warmup_epochs,
                epochs=o.epochs,
            )
        else:
            lr = lr_at_epoch(
                epoch, lr_max=o.lr, lr_min=o.lr_min, warmup=o.warmup_epochs, epochs=o.epochs
            )
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    # ----------------------------------------------------------------------------- fit

    def fit(self) -> TrainResult:
        """Train (or resume) until the last epoch, early stopping or a stop signal.

        Returns
        -------
        TrainResult
            Summary, with the epoch records.

        Raises
        ------
        TrainingInterrupted
            After SIGINT/SIGTERM, once a resumable checkpoint is written.
        FileExistsError
            ``run_dir`` already holds a run and ``resume`` is False.
        """
        self._setup()
        self._flag_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.global_step = 0
        self.finished = False
        self.stopped_early = False
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.train_sums: dict[str, torch.Tensor] = {}
        self.train_count = 0
        self._log_sum: torch.Tensor | None = None
        self._log_n = 0
        self._metrics_handle = None
        state = self._prepare_run_dir()
        start_epoch, start_batch = 0, 0
        if state is None:
            seed_everything(derive_seed(self.seed, "trainer", self.dist.rank))
        else:
            self._load_last(state)
            start_epoch, start_batch = int(state["epoch"]), int(state["batch_in_epoch"])
        self._epochs_done = start_epoch
        if self.finished:
            logger.info("%s is already complete; nothing to do", self.run_dir)
            return self._result()
        self._write_env(None if state is None else self.global_step)
        self._open_logs(None if state is None else self.global_step)
        if state is not None and self.dist.is_main:
            logger.info(
                "resuming %s at epoch %d, batch %d (step %d)",
                self.run_dir,
                start_epoch,
                start_batch,
                self.global_step,
            )
        try:
            with self._signal_handlers():
                self._train(start_epoch, start_batch)
        finally:
            self._close_logs()
        return self._result()

    def _result(self) -> TrainResult:
        history = self._read_history() if self.dist.is_main else []
        return TrainResult(
            run_dir=self.run_dir,
            epochs_completed=self._epochs_done,
            global_step=self.global_step,
            best_epoch=self.best_epoch,
            best_metric=self.best_metric,
            stopped_early=self.stopped_early,
            history=history,
        )

    def _train(self, start_epoch: int, start_batch: int) -> None:
        o, c = self.optim_cfg, self.cfg
        accum = o.grad_accum_steps
        show_bar = c.progress and not self.quiet and self.dist.is_main and sys.stderr.isatty()
        for epoch in range(start_epoch, o.epochs):
            batch_start = start_batch if epoch == start_epoch else 0
            if batch_start == 0:
                self.train_sums, self.train_count = {}, 0
            self.sampler.set_epoch(epoch, batch_start)
            # Datasets with per-epoch randomness (crops, shifts) derive it from (seed, epoch,
            # index), so a resumed epoch fetches exactly the same samples.
            set_data_epoch = getattr(self.train_dataset, "set_epoch", None)
            if callable(set_data_epoch):
                set_data_epoch(epoch)
            loader = self._make_train_loader(epoch)
            lr = self._set_lr(epoch)
            self.train_model.train()
            self.optimizer.zero_grad(set_to_none=True)
            progress = None
            if show_bar:
                from tqdm.auto import tqdm

                progress = tqdm(
                    total=self.n_micro,
                    initial=batch_start,
                    desc=f"epoch {epoch + 1}/{o.epochs}",
                    leave=False,
                    dynamic_ncols=True,
                )
            for micro, batch in enumerate(loader, start=batch_start):
                group_start = (micro // accum) * accum
                group_size = min(accum, self.n_micro - group_start)
                last_in_group = micro + 1 == group_start + group_size
                batch = _to_device(batch, self.device, non_blocking=True)
                n = _batch_size(batch)
                sync = (
                    contextlib.nullcontext()
                    if last_in_group or not self.dist.enabled
                    else self.train_model.no_sync()  # type: ignore[operator]
                )
                with sync:
                    with self._autocast():
                        out = self.forward_fn(self.train_model, batch)
                    if "loss" not in out:
                        raise KeyError(
                            f"the model output has no 'loss' (keys: {', '.join(out)}); "
                            "training needs a scalar loss"
                        )
                    loss = out["loss"]
                    self.scaler.scale(loss.float() / group_size).backward()
                for k, v in _scalar_outputs(out).items():
                    prev = self.train_sums.get(k)
                    term = v.double() * n
                    self.train_sums[k] = term if prev is None else prev + term
                self.train_count += n
                term = loss.detach().double() * n
                self._log_sum = term if self._log_sum is None else self._log_sum + term
                self._log_n += n
                if progress is not None:
                    progress.update(1)
                if not last_in_group:
                    continue
                # ---- optimizer step
                if o.schedule == "step":
                    lr = self._set_lr(epoch)
                grad_norm = None
                if o.grad_clip is not None:
                    self.scaler.unscale_(self.optimizer)
                    grad_norm = nn.utils.clip_grad_norm_(self.raw_model.parameters(), o.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.global_step += 1
                batch_pos = micro + 1
                if (
                    c.log_every
                    and self.global_step % c.log_every == 0
                    and self._log_sum is not None
                ):
                    running = float(ddp_utils.all_reduce_sum(self._log_sum.clone()).item())
                    total = float(
                        ddp_utils.all_reduce_sum(
                            torch.tensor(
                                [float(self._log_n)], device=self.device, dtype=torch.float64
                            )
                        ).item()
                    )
                    running /= max(total, 1.0)
                    if not math.isfinite(running):
                        raise FloatingPointError(
                            f"non-finite training loss ({running}) at epoch {epoch}, "
                            f"step {self.global_step}"
                        )
                    if self._tb is not None:
                        self._tb.add_scalar("train_step/loss", running, self.global_step)
                        self._tb.add_scalar("train_step/lr", lr, self.global_step)
                        if grad_norm is not None:
                            self._tb.add_scalar(
                                "train_step/grad_norm", float(grad_norm), self.global_step
                            )
                    if progress is not None:
                        progress.set_postfix(loss=f"{running:.4g}", lr=f"{lr:.3g}")
                    logger.debug("step %d loss %.6g lr %.4g", self.global_step, running, lr)
                    self._log_sum, self._log_n = None, 0
                stop = self._stop_requested()
                mid_epoch = batch_pos < self.n_micro
                due = c.checkpoint_every_steps and self.global_step % c.checkpoint_every_steps == 0
                if mid_epoch and (stop or due):
                    self._save_last(epoch, batch_pos)
                if stop and mid_epoch:
                    if progress is not None:
                        progress.close()
                    raise self._interrupt()
            if progress is not None:
                progress.close()
            if self._end_epoch(epoch, lr):
                break
            if self._stop_requested():
                raise self._interrupt()
        self.finished = True
        if self.dist.is_main:
            logger.info(
                "training done: %d steps; best epoch %s (%s = %s)",
                self.global_step,
                self.best_epoch,
                self.cfg.selection_metric,
                self.best_metric,
            )
        self._save_last(self._epochs_done, 0)

    def _end_epoch(self, epoch: int, lr: float) -> bool:
        """Validate, log, select, snapshot and checkpoint. Returns True to stop early."""
        c = self.cfg
        # Train statistics: sample-weighted means over all ranks.
        names = sorted(self.train_sums)
        packed = torch.stack(
            [self.train_sums[k].to(torch.float64) for k in names]
            + [torch.tensor(float(self.train_count), dtype=torch.float64, device=self.device)]
        )
        packed = ddp_utils.all_reduce_sum(packed)
        total = float(packed[-1].item())
        record: dict[str, Any] = {"epoch": epoch, "step": self.global_step, "lr": lr}
        for i, k in enumerate(names):
            record[f"train/{k}"] = float(packed[i].item()) / max(total, 1.0)
        if not math.isfinite(record.get("train/loss", 0.0)):
            raise FloatingPointError(
                f"non-finite training loss at epoch {epoch} (step {self.global_step})"
            )
        # Under DDP without SyncBatchNorm, running statistics drift apart per rank: take rank 0's
        # so every rank evaluates (and saves) the same model.
        if self.dist.enabled:
            for buf in self.raw_model.buffers():
                torch.distributed.broadcast(buf, src=0)
        if self.val_data is not None:
            for k, v in self._evaluate(self.val_data).items():
                record[k if "/" in k else f"val/{k}"] = v
        for name, data in self.monitor_data.items():
            for k, v in self._evaluate(data).items():
                record[f"{name}/{k}"] = v
        value = record.get(c.selection_metric)
        if value is None and self.val_data is not None:
            available = ", ".join(sorted(k for k in record if "/" in k))
            raise ValueError(
                f"trainer.selection_metric={c.selection_metric!r} is not among the epoch "
                f"metrics: {available}"
            )
        improved = False
        if value is not None and math.isfinite(value):
            if self.best_metric is None:
                improved = True
            elif c.selection_mode == "max":
                improved = value > self.best_metric
            else:
                improved = value < self.best_metric
        if improved:
            self.best_metric, self.best_epoch, self.bad_epochs = float(value), epoch, 0
            self._save_weights(
                "best",
                {
                    "epoch": epoch,
                    "step": self.global_step,
                    "metric": c.selection_metric,
                    "value": float(value),
                },
            )
        else:
            self.bad_epochs += 1
        record["best_epoch"] = self.best_epoch
        if self.dist.is_main:
            self._write_record(record)
            shown = ", ".join(
                f"{k} {v:.4g}" for k, v in record.items() if "/" in k and isinstance(v, float)
            )
            logger.info("epoch %d/%d: %s", epoch + 1, self.optim_cfg.epochs, shown)
        last_epoch = epoch + 1 == self.optim_cfg.epochs
        if c.snapshot_every_epochs and ((epoch + 1) % c.snapshot_every_epochs == 0 or last_epoch):
            self._save_weights(f"epoch-{epoch:04d}", {"epoch": epoch, "step": self.global_step})
            self._prune_snapshots()
        self.stopped_early = (
            c.early_stopping_patience is not None
            and value is not None
            and self.bad_epochs >= c.early_stopping_patience
        )
        self._epochs_done = epoch + 1
        self.train_sums, self.train_count = {}, 0
        if self.stopped_early:
            logger.info(
                "early stopping after epoch %d: no improvement of %s for %d epochs",
                epoch + 1,
                c.selection_metric,
                self.bad_epochs,
            )
            return True
        if not last_epoch:
            self._save_last(epoch + 1, 0)
        return False

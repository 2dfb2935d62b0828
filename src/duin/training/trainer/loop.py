"""The training loop: :class:`Trainer` (setup, data loaders, precision, signals, evaluation, LR
schedule, epochs and steps, best-epoch selection).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from duin.config import OptimConfig, TrainerConfig
from duin.training import distributed as ddp_utils
from duin.training import precision as precision_lib
from duin.training.optim import build_adamw
from duin.training.schedule import lr_at_epoch, lr_at_step
from duin.training.sync_batchnorm import convert_distributed_batchnorm
from duin.training.trainer.batching import (
    EpochBatchSampler,
    _add_counts,
    _as_dataset,
    _batch_size,
    _count_outputs,
    _DeviceLoader,
    _resolve_device,
    _scalar_outputs,
    _to_device,
)
from duin.training.trainer.checkpointing import _RunDirMixin
from duin.training.trainer.hooks import (
    Batch,
    CountMetricsFn,
    EvaluateFn,
    ForwardFn,
    LoadWeightsFn,
    ParamGroupsFn,
    SaveModelFn,
    TrainingInterrupted,
    TrainResult,
    default_forward,
    default_load_weights,
    default_param_groups,
    default_save_model,
)
from duin.training.trainer.logs import _LogsMixin
from duin.training.trainer.nonfinite import _NonFiniteMixin, nonfinite_terms
from duin.utils.lock import run_lock
from duin.utils.seeding import derive_seed, seed_everything

logger = logging.getLogger(__name__)


class Trainer(_RunDirMixin, _LogsMixin, _NonFiniteMixin):
    """Train a model with validation, selection, logging, checkpoints and exact resume.

    Parameters
    ----------
    model : nn.Module
        Returns a dict with a scalar ``loss`` (other 0-dim float outputs are averaged and logged
        as ``train/<name>``). Create it after seeding for reproducible initialisation.
    train_data : Dataset or DataLoader
        Map-style dataset of dict samples (e.g. ``{"x": (n_channels, n_times) float32,
        "subject": int64, "labels": int64}``). A DataLoader contributes its dataset and
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
    count_metrics_fn : callable, optional
        ``count_metrics_fn(counts) -> {name: float}``. Outputs named ``counts/<name>`` (1-dim
        histograms, e.g. codex usage) are summed over each epoch (training, all ranks) or
        validation pass and turned into metrics by this function, logged as ``train/<name>``
        and ``val/<name>``. Default: count outputs are ignored.
    param_groups_fn : callable, optional
        ``param_groups_fn(model, weight_decay) -> groups`` (e.g.
        ``duin.models.optimizer_param_groups``); default :func:`default_param_groups`.
        A group's optional ``lr_scale`` multiplies the scheduled LR; its optional
        ``frozen_epochs`` holds the group's LR at 0 for that many first epochs.
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
        count_metrics_fn: CountMetricsFn | None = None,
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
        self.count_metrics_fn = count_metrics_fn
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
            and self.cfg.sync_batchnorm
            and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        ):
            # Global-batch statistics, so N processes train the model one process would on
            # the same global batch. torch's fused SyncBatchNorm is CUDA-only; elsewhere
            # (gloo on CPU) the all-reduce version.
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                model = convert_distributed_batchnorm(model)
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
                counts: dict[str, torch.Tensor] = {}
                count = 0
                for batch in loader:
                    n = _batch_size(batch)
                    out = self.forward_fn(model, batch)
                    for k, v in _scalar_outputs(out).items():
                        sums[k] = sums.get(k, 0) + v.double() * n
                    _add_counts(counts, _count_outputs(out))
                    count += n
                metrics = {k: float(v.item()) / max(count, 1) for k, v in sums.items()}
                metrics.update(self._count_metrics(counts, reduce=False))
                return metrics
        finally:
            model.train(was_training)

    def _count_metrics(self, counts: Mapping[str, torch.Tensor], reduce: bool) -> dict[str, float]:
        """Metrics of summed ``counts/*`` histograms (all-reduced over ranks when ``reduce``)."""
        if self.count_metrics_fn is None or not counts:
            return {}
        if reduce:
            counts = {k: ddp_utils.all_reduce_sum(v.clone()) for k, v in sorted(counts.items())}
        return {k: float(v) for k, v in self.count_metrics_fn(counts).items()}

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
            frozen = epoch < group.get("frozen_epochs", 0)
            group["lr"] = 0.0 if frozen else lr * group.get("lr_scale", 1.0)
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
        duin.utils.lock.RunLockedError
            Another live process is training in ``run_dir`` (its ``duin.lock``).
        """
        self._setup()
        lock = run_lock(self.run_dir) if self.dist.is_main else contextlib.nullcontext()
        with lock:
            return self._fit()

    def _fit(self) -> TrainResult:
        self._flag_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.global_step = 0
        self.finished = False
        self.stopped_early = False
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.nonfinite_skips = 0
        self.train_sums: dict[str, torch.Tensor] = {}
        self.train_counts: dict[str, torch.Tensor] = {}
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
                self.train_sums, self.train_count, self.train_counts = {}, 0, {}
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
                if micro == group_start:
                    group_bad: list[str] = []
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
                bad_terms = nonfinite_terms(out, loss)
                group_bad = group_bad or bad_terms
                if not bad_terms:  # a skipped group's NaN must not poison the epoch statistics
                    for k, v in _scalar_outputs(out).items():
                        prev = self.train_sums.get(k)
                        term = v.double() * n
                        self.train_sums[k] = term if prev is None else prev + term
                    _add_counts(self.train_counts, _count_outputs(out))
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
                if self._skip_nonfinite_step(group_bad, grad_norm, epoch):
                    continue
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
        for k, v in self._count_metrics(self.train_counts, reduce=True).items():
            record[f"train/{k}"] = v
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
        self.train_sums, self.train_count, self.train_counts = {}, 0, {}
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

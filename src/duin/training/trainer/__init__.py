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

Modules: :mod:`~duin.training.trainer.hooks` (types, result, pluggable defaults),
:mod:`~duin.training.trainer.batching` (batch order and device helpers),
:mod:`~duin.training.trainer.checkpointing` (run directory, checkpoints, resume state),
:mod:`~duin.training.trainer.logs` (metrics.jsonl, TensorBoard, train.log),
:mod:`~duin.training.trainer.nonfinite` (NaN/Inf losses: stop or skip) and
:mod:`~duin.training.trainer.loop` (:class:`Trainer`).
"""

from duin.training.trainer.batching import EpochBatchSampler
from duin.training.trainer.hooks import (
    Batch,
    TrainingInterrupted,
    TrainResult,
    default_forward,
    default_load_weights,
    default_param_groups,
    default_save_model,
)
from duin.training.trainer.loop import Trainer

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

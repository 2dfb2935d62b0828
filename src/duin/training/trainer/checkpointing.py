"""The trainer's run directory: creation, the configuration check on resume, ``env.json``,
atomic checkpoints (``checkpoints/last``, ``best``, snapshots) and exact resume state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from duin.config import config_to_yaml, load_yaml, to_dict
from duin.training import distributed as ddp_utils
from duin.training.trainer.batching import _flatten
from duin.training.trainer.hooks import _OPTIM_FILE, _STATE_FILE, _STATE_VERSION
from duin.utils.env import env_info
from duin.utils.integrity import verify_manifest, write_manifest
from duin.utils.io import atomic_dir, atomic_write_json, atomic_write_text, recover_dir
from duin.utils.seeding import get_rng_state, set_rng_state


class _RunDirMixin:
    """The trainer's run directory: creation, config check, env.json, checkpoints, resume."""

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
        verify_manifest(last)
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
                "train_counts": {k: v.tolist() for k, v in self.train_counts.items()},
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
                "nonfinite_skips": self.nonfinite_skips,
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
                write_manifest(tmp)  # last: covers weights, optimizer and trainer state
        ddp_utils.barrier()

    def _save_weights(self, name: str, info: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with atomic_dir(self.ckpt_dir / name) as tmp:
            self.save_model_fn(self.raw_model, tmp)
            (tmp / f"{name.split('-')[0]}.json").write_text(json.dumps(info, indent=2) + "\n")
            write_manifest(tmp)

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
        self.nonfinite_skips = int(state.get("nonfinite_skips", 0))
        mine = state["ranks"][self.dist.rank]
        self.train_sums = {
            k: torch.tensor(v, dtype=torch.float64, device=self.device)
            for k, v in mine["train_sums"].items()
        }
        self.train_count = int(mine["train_count"])
        self.train_counts = {
            k: torch.tensor(v, dtype=torch.float64, device=self.device)
            for k, v in mine.get("train_counts", {}).items()
        }
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

"""A tiny, fully deterministic training run for the trainer tests (run as a script).

The model has dropout and BatchNorm and the dataset adds random noise on every fetch, so the
run consumes the global RNG in the model and in data loading: exact resume must restore it.

Usage: python tiny_training.py RUN_DIR [--resume] [--kill-at-forward N] [--kill-in-save N]
       [--sleep S] [--epochs E] [--accum K] [--schedule epoch|step] [--ddp-dump]
       [--plain] [--n-train N]

``--plain`` drops the randomness (no noise, dropout or BatchNorm), so that runs with different
numbers of processes on the same global batches compute the same gradients.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from torch import nn
from torch.utils.data import Dataset

torch.set_num_threads(1)

from duin.config import OptimConfig, RunConfig, TrainerConfig  # noqa: E402
from duin.training.trainer import (  # noqa: E402
    Trainer,
    TrainingInterrupted,
    default_save_model,
)
from duin.utils.seeding import seed_everything  # noqa: E402

N_CHANNELS, N_TIMES, N_CLASSES = 3, 16, 4


class NoisyTrials(Dataset):
    """Fixed random trials; each fetch adds fresh noise (an augmentation using the global RNG)."""

    def __init__(self, n: int, seed: int, noise: float = 0.1) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.noise = noise
        self.x = torch.randn(n, N_CHANNELS, N_TIMES, generator=gen)
        self.label = torch.randint(0, N_CLASSES, (n,), generator=gen)
        self.x += self.label[:, None, None].float() * 0.5

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "x": self.x[i] + self.noise * torch.randn(N_CHANNELS, N_TIMES)
            if self.noise
            else self.x[i],
            "subject": torch.tensor(0),
            "label": self.label[i],
        }


class TinyNet(nn.Module):
    """Conv + BatchNorm + dropout classifier returning a dict with ``loss``."""

    def __init__(self, kill_at_forward: int = 0, sleep: float = 0.0, plain: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(N_CHANNELS, 8, 3, padding=1)
        self.norm = nn.Identity() if plain else nn.BatchNorm1d(8)
        self.drop = nn.Identity() if plain else nn.Dropout(0.3)
        self.head = nn.Linear(8 * N_TIMES, N_CLASSES)
        self.kill_at_forward = kill_at_forward
        self.sleep = sleep
        self.calls = 0

    def forward(self, x, subject, label=None):
        self.calls += 1
        if self.kill_at_forward and self.calls == self.kill_at_forward:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.sleep:
            time.sleep(self.sleep)
        h = self.drop(torch.relu(self.norm(self.conv(x))))
        logits = self.head(h.flatten(1))
        out = {"logits": logits}
        if label is not None:
            out["loss"] = nn.functional.cross_entropy(logits, label)
            out["acc"] = (logits.argmax(1) == label).float().mean()
        return out


def evaluate(model, batches):
    correct = total = 0
    loss = 0.0
    for batch in batches:
        out = model(**batch)
        correct += int((out["logits"].argmax(1) == batch["label"]).sum())
        loss += float(out["loss"]) * len(batch["label"])
        total += len(batch["label"])
    return {"top1": correct / total, "loss": loss / total}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at-forward", type=int, default=0)
    parser.add_argument("--kill-in-save", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--schedule", default="epoch")
    parser.add_argument("--ddp-dump", action="store_true")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--n-train", type=int, default=36)
    args = parser.parse_args()

    config = RunConfig(
        seed=7,
        optim=OptimConfig(
            lr=1e-2,
            lr_min=1e-4,
            weight_decay=0.05,
            warmup_epochs=1,
            epochs=args.epochs,
            batch_size=8,
            grad_accum_steps=args.accum,
            grad_clip=1.0,
            schedule=args.schedule,
        ),
        trainer=TrainerConfig(
            device="cpu",
            checkpoint_every_steps=2,
            snapshot_every_epochs=1,
            keep_last=2,
            selection_metric="val/top1",
            selection_mode="max",
            log_every=1,
        ),
    )
    seed_everything(config.seed)
    model = TinyNet(args.kill_at_forward, args.sleep, plain=args.plain)
    saves = {"n": 0}

    def save_model(m, directory):
        saves["n"] += 1
        if args.kill_in_save and saves["n"] == args.kill_in_save:
            (directory / "model.safetensors").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        default_save_model(m, directory)

    trainer = Trainer(
        model,
        NoisyTrials(args.n_train, seed=1, noise=0.0 if args.plain else 0.1),
        NoisyTrials(12, seed=2, noise=0.0 if args.plain else 0.1),
        run_dir=args.run_dir,
        optim=config.optim,
        trainer=config.trainer,
        seed=config.seed,
        config=config,
        evaluate_fn=evaluate,
        save_model_fn=save_model,
        resume=args.resume,
        quiet=True,
    )
    try:
        result = trainer.fit()
    except TrainingInterrupted as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    if args.ddp_dump:
        from safetensors.torch import save_file

        rank = int(os.environ.get("RANK", "0"))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(args.run_dir / f"rank{rank}.safetensors"))
    print(f"done best_epoch={result.best_epoch} steps={result.global_step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A tiny VQ-VAE or MAE stage run for the resume tests (run as a script; SIGKILLs itself).

The stage functions of :mod:`duin.training.stages` build and train the model, as ``duin
pretrain-vqvae`` / ``pretrain-mae`` do. The VQ-VAE codex has 64 codes and k-means pools 16
token vectors per training batch (``init_mode="accumulate"``), so its initialisation spans
the first 4 training steps; a checkpoint is written after every step, so a kill in those steps
resumes from a checkpoint with a partly filled pool. The MAE masks at random (torch RNG) and
takes its targets from a fixed VQ-VAE.

Usage: python tiny_pretraining.py {vqvae,mae} RUN_DIR [--resume] [--kill-at-forward N]
``--kill-at-forward N`` SIGKILLs the process at the N-th forward of the trained model
(training and validation forwards, counted from the start of this process).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from torch.utils.data import Dataset

torch.set_num_threads(1)

from duin.models.config import MAEConfig, VQVAEConfig  # noqa: E402
from duin.models.duin import DuINMAE, DuINVQVAE  # noqa: E402
from duin.training.stages import (  # noqa: E402
    MAERunConfig,
    VQVAERunConfig,
    train_mae,
    train_vqvae,
)

N_CHANNELS, N_TIMES = 3, 400  # 4 tokens per crop
TINY = {"n_times": N_TIMES, "n_blocks": 1, "n_heads": 2, "d_head": 8, "d_ff": 16}
TINY["tokenizer_filters"] = [8, 8, 4]
VQVAE = {
    **TINY,
    "n_decoder_blocks": 1,
    "decoder_filters": [8, 8, 8, 8, 4],
    "quantizer": {"n_codes": 64, "d_code": 4, "init_mode": "accumulate"},
}


class Crops(Dataset):
    """Fixed random pretraining crops."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, N_CHANNELS, N_TIMES, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "subject": torch.tensor(0)}


def _settings(cfg):
    return dataclasses.replace(
        cfg,
        seed=5,
        optim=dataclasses.replace(cfg.optim, epochs=3, warmup_epochs=1, batch_size=4),
        trainer=dataclasses.replace(
            cfg.trainer,
            device="cpu",
            tensorboard=False,
            progress=False,
            log_every=1,
            checkpoint_every_steps=1,
        ),
    )


def _kill_at(model_type: type, n: int) -> None:
    calls = {"n": 0}

    def hook(module, args):
        if type(module) is model_type:
            calls["n"] += 1
            if calls["n"] == n:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.nn.modules.module.register_module_forward_pre_hook(hook)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=("vqvae", "mae"))
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at-forward", type=int, default=0)
    args = parser.parse_args()
    train, val = Crops(24, seed=1), Crops(8, seed=2)
    if args.stage == "vqvae":
        if args.kill_at_forward:
            _kill_at(DuINVQVAE, args.kill_at_forward)
        cfg = dataclasses.replace(_settings(VQVAERunConfig()), model=VQVAEConfig.from_dict(VQVAE))
        train_vqvae(
            cfg, train, val, args.run_dir, n_channels=N_CHANNELS, resume=args.resume, quiet=True
        )
    else:
        torch.manual_seed(0)
        fixed = {**VQVAE, "n_channels": N_CHANNELS, "quantizer": {"n_codes": 64, "d_code": 4}}
        tokenizer = DuINVQVAE(VQVAEConfig.from_dict({**fixed}))
        tokenizer.quantizer.initted.fill_(True)  # a fixed random codex
        if args.kill_at_forward:
            _kill_at(DuINMAE, args.kill_at_forward)
        cfg = dataclasses.replace(_settings(MAERunConfig()), model=MAEConfig.from_dict(TINY))
        train_mae(cfg, tokenizer, train, val, args.run_dir, resume=args.resume, quiet=True)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

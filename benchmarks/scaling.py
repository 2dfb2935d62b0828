"""Training throughput of each stage in one process, and what it means in device-hours.

For each packaged recipe (``quick``, ``paper``) and stage (``vqvae``, ``mae``, ``cls``) the
stage's model is built from the recipe exactly as the stage command builds it (model sizes,
``n_times``, ``data.n_channels`` inputs, the recipe's batch size, AdamW over the trainer's
parameter groups), and full training steps (forward + backward + optimizer step, train mode,
the recipe's precision) are timed on random input: the median over ``--steps`` steps after
``--warmup``. Data loading, validation and checkpoints are not included (they are a few % of
an epoch in the recipes' runs).

The samples/s turn into device-hours with the recipe's own epochs and data cut:
``pretraining samples / epoch = hours of signal x 3600 / data.pretrain_step`` per subject (one
crop per window; ``pretrain_window`` when the step is null; at most ``max_pretrain_windows``), and ``classifier samples / epoch = trials x split[0]`` per subject and seed.
Under N processes the ideal is N times the throughput; the all-reduce of gradients, the codex
statistics and BatchNorm statistics costs extra (not in these numbers).

Writes ``benchmarks/results/scaling.json`` and prints a table. Run on an otherwise idle
machine, one thread (``OMP_NUM_THREADS=1``: one core per process, as under ``torchrun`` on a
CPU node) or on a GPU (``--device cuda``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/scaling.py             # quick and paper sizes
    python benchmarks/scaling.py --quick                        # smoke run (2 steps each)
    python benchmarks/scaling.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from duin.models.config import ClassifierConfig, MAEConfig, VQVAEConfig
from duin.models.duin import DuINClassifier, DuINMAE, DuINVQVAE
from duin.training.optim import build_adamw
from duin.training.precision import autocast
from duin.training.stages import load_stage_config, model_config, param_groups_fn

RECIPES = ("quick", "paper")
STAGES = ("vqvae", "mae", "cls")
RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"


def build_step(recipe: str, stage: str, device: torch.device, precision: str | None) -> Any:
    """One training step of ``stage`` under ``recipe`` on random input, and its batch size."""
    cfg = load_stage_config(stage, recipe)
    n_channels = cfg.data.n_channels or 10
    torch.manual_seed(0)
    if stage == "vqvae":
        model: Any = DuINVQVAE(
            model_config(cfg.model, VQVAEConfig, n_channels=n_channels, n_subjects=1)
        )
        model.quantizer.initted.fill_(True)  # a run past its k-means start
    elif stage == "mae":
        vq_cfg = load_stage_config("vqvae", recipe)
        tokenizer = DuINVQVAE(
            model_config(vq_cfg.model, VQVAEConfig, n_channels=n_channels, n_subjects=1)
        )
        tokenizer.quantizer.initted.fill_(True)
        tc = tokenizer.config
        model = DuINMAE(
            model_config(
                cfg.model,
                MAEConfig,
                n_codes=tc.quantizer.n_codes,
                n_times=tc.n_times,
                n_channels=tc.n_channels,
                n_subjects=1,
            )
        )
        model.set_target_tokenizer(tokenizer)
    else:
        model = DuINClassifier(
            model_config(cfg.model, ClassifierConfig, n_channels=n_channels, n_subjects=1)
        )
    model = model.to(device).train()
    batch = cfg.optim.batch_size
    x = torch.randn(batch, n_channels, model.config.n_times, device=device)
    subject = torch.zeros(batch, dtype=torch.int64, device=device)
    kwargs: dict[str, Any] = {}
    if stage == "cls":
        kwargs["labels"] = torch.randint(0, model.config.n_classes, (batch,), device=device)
    groups = param_groups_fn(cfg.protocol == "reference")(model, cfg.optim.weight_decay)
    optimizer = build_adamw(
        groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, device=device
    )
    mode = precision or cfg.trainer.resolved_precision

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(mode, device):
            loss = model(x, subject, **kwargs)["loss"]
        loss.float().backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step, batch, cfg, mode


def time_steps(step: Any, warmup: int, steps: int) -> float:
    """Median seconds per call of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def epoch_samples(cfg: Any, stage: str, hours: float) -> float:
    """Samples per epoch for one subject (pretraining: per ``hours`` of signal)."""
    data = cfg.data
    if stage == "cls":
        sim = data.simulation
        return sim.n_words * sim.trials_per_word * data.split[0]
    step = data.pretrain_step if data.pretrain_step is not None else data.pretrain_window
    windows = hours * 3600.0 / step
    if data.max_pretrain_windows is not None:
        windows = min(windows, data.max_pretrain_windows)
    return windows


def device_hours(samples_per_s: float, cfg: Any, stage: str, hours: float, subjects: int) -> float:
    """Device-hours of one stage's full recipe for ``subjects`` subjects (classifier: x seeds).

    Parameters
    ----------
    samples_per_s : float
        Measured training throughput of one device.
    cfg : RunConfig
        The stage's recipe (epochs, data cut, seeds).
    stage : str
        ``vqvae``, ``mae`` or ``cls``.
    hours : float
        Hours of pretraining signal per subject.
    subjects : int
        Subjects (one model each).

    Returns
    -------
    float
        Hours on one device.
    """
    runs = subjects * (len(cfg.run_seeds) if stage == "cls" else 1)
    samples = epoch_samples(cfg, stage, hours) * cfg.optim.epochs * runs
    return samples / samples_per_s / 3600.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    rows = []
    for recipe in RECIPES:
        for stage in STAGES:
            step, batch, cfg, mode = build_step(recipe, stage, device, args.precision)
            seconds = time_steps(step, args.warmup, args.steps)
            sps = batch / seconds
            rows.append(
                {
                    "recipe": recipe,
                    "stage": stage,
                    "batch": batch,
                    "precision": mode,
                    "s_per_step": seconds,
                    "samples_per_s": sps,
                    "epochs": cfg.optim.epochs,
                    "device_hours_per_subject": device_hours(
                        sps, cfg, stage, args.hours, subjects=1
                    ),
                }
            )
            print(
                f"{recipe:6s} {stage:6s} batch {batch:3d} {mode}: {sps:8.1f} samples/s "
                f"({seconds * 1e3:.0f} ms/step)",
                flush=True,
            )
    return {
        "rows": rows,
        "hours_per_subject": args.hours,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "quick": args.quick,
        "steps": args.steps,
        "warmup": args.warmup,
        "note": args.note,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default=None, help="fp32 | bf16 | fp16 (default: recipe)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--hours", type=float, default=15.0, help="pretraining h per subject")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps, no JSON")
    parser.add_argument("--note", default="", help="measuring conditions, stored in the JSON")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
    payload = run(args)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

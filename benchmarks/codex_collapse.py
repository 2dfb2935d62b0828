"""Why short VQ-VAE runs collapse, and what the autoencoder warm-up changes.

Trains the quick recipe's VQ-VAE (2 blocks, 128 x 32 codex, beta 0.02) directly on 4-s crops of
one simulated subject's non-task signal (the 10 most informative bipolar channels, z-scored),
with the same AdamW / warm-up + cosine schedule per step, for each combination of
simulator background (the current default and the previous ``1/f^1.6`` without a knee) and
quantizer warm-up (0 = the paper's behaviour, and ``--warmup`` steps). Per step it records the
mean cosine similarity between the tokens' unit codex vectors ``z`` (1 = every token points the
same way) and the codes one batch uses; at the end, validation reconstruction loss, codex
perplexity and codes used on 64 fixed validation crops.

Run: ``python benchmarks/codex_collapse.py`` (about 2 minutes on an idle 2-core machine); writes
``benchmarks/results/codex_collapse.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from duin.data.preprocess import PreprocessConfig, preprocess
from duin.data.simulate import SimulationConfig, simulate
from duin.evaluation.metrics import codex_usage
from duin.models.config import QuantizerConfig, VQVAEConfig
from duin.models.duin import DuINVQVAE

RESULTS = Path(__file__).resolve().parent / "results" / "codex_collapse.json"
QUICK_MODEL = dict(
    n_blocks=2,
    n_heads=4,
    d_head=32,
    d_ff=160,
    tokenizer_filters=[64, 64, 16],
    n_decoder_blocks=1,
    decoder_filters=[32, 32, 32, 32, 16],
)
N_TIMES = 4000


def non_task_signal(spectral_exponent: float, spectral_knee: float, hours: float) -> np.ndarray:
    """``(10, n_times)`` z-scored bipolar non-task signal of the 10 most informative channels."""
    corpus = simulate(
        SimulationConfig(
            seed=42,
            n_words=61,
            trials_per_word=2,
            pretrain_hours=hours,
            difficulty=0.25,
            compute_baseline=False,
            oracle_trials_per_word=1,
            spectral_exponent=spectral_exponent,
            spectral_knee=spectral_knee,
        )
    )
    subject = corpus.subjects[0]
    parts = []
    for rec in subject.pretrain:
        pre = preprocess(rec, PreprocessConfig())
        names = subject.informative_among(pre.ch_names)[:10]
        parts.append(pre.signals[[pre.ch_names.index(c) for c in names]].astype(np.float32))
    x = np.concatenate(parts, axis=1)
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def crops(x: np.ndarray, n: int, rng: np.random.Generator) -> torch.Tensor:
    starts = rng.integers(0, x.shape[1] - N_TIMES, n)
    return torch.from_numpy(np.stack([x[:, s : s + N_TIMES] for s in starts]))


def run(x: np.ndarray, warmup: int, steps: int, batch: int, lr: float, seed: int) -> dict:
    """Train one VQ-VAE; per-step alignment and batch code use, final validation health."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_val = 60 * 1000
    train, val = x[:, :-n_val], x[:, -n_val:]
    quantizer = QuantizerConfig(n_codes=128, d_code=32, beta=0.02, warmup_steps=warmup)
    model = DuINVQVAE(VQVAEConfig(n_channels=10, quantizer=quantizer, **QUICK_MODEL))
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=lr, betas=(0.9, 0.99))
    val_x = crops(val, 64, np.random.default_rng(123))
    subject = torch.zeros(batch, dtype=torch.long)
    ramp = max(1, steps // 10)
    trace = []
    for step in range(steps):
        if step < ramp:
            step_lr = lr * (step + 1) / ramp
        else:
            step_lr = 5e-5 + (lr - 5e-5) * 0.5 * (
                1 + math.cos(math.pi * (step - ramp) / (steps - ramp))
            )
        for group in opt.param_groups:
            group["lr"] = step_lr
        model.train()
        out = model(crops(train, batch, rng), subject)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        with torch.no_grad():
            z = model.quantizer.project(out["features"].detach())[1].reshape(-1, quantizer.d_code)
            trace.append(
                {
                    "step": step,
                    "z_mean_cos": round(float((z @ z.t()).mean()), 4),
                    "batch_codes_used": int(out["codes"].unique().numel()),
                    "quantizing": bool(model.quantizer.initted),
                }
            )
    model.eval()
    with torch.no_grad():
        out = model(val_x, torch.zeros(len(val_x), dtype=torch.long))
    health = codex_usage(torch.bincount(out["codes"].reshape(-1), minlength=128))
    return {"val_recon": float(out["loss_recon"]), **health, "trace": trace}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--hours", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    t0 = time.time()
    defaults = SimulationConfig()
    backgrounds = {
        f"1/f^{defaults.spectral_exponent:g}, knee {defaults.spectral_knee:g} Hz (default)": (
            defaults.spectral_exponent,
            defaults.spectral_knee,
        ),
        "1/f^1.6, knee 0.3 Hz (previous default)": (1.6, 0.3),
    }
    results = {}
    for name, (exponent, knee) in backgrounds.items():
        x = non_task_signal(exponent, knee, args.hours)
        for warmup in (0, args.warmup):
            key = f"{name}; warmup_steps={warmup}"
            results[key] = run(x, warmup, args.steps, args.batch, args.lr, args.seed)
            r = results[key]
            at = {s: r["trace"][min(s, args.steps - 1)] for s in (0, 20, args.steps - 1)}
            print(
                f"{key:<62} z cos {at[0]['z_mean_cos']:.2f}->{at[20]['z_mean_cos']:.2f}->"
                f"{at[args.steps - 1]['z_mean_cos']:.2f}  val recon {r['val_recon']:.3f}  "
                f"perplexity {r['codex_perplexity']:.1f}  codes {r['codes_used']:.0f}/128"
            )
    out = {
        "command": "python benchmarks/codex_collapse.py",
        "args": vars(args) | {"out": None},
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - t0, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {out['seconds']} s")


if __name__ == "__main__":
    main()

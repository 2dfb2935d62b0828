"""The end-to-end demo over several seeds: Du-IN (mae) vs Du-IN (scratch) on the same splits.

Runs :func:`duin.workflows.demo.run_demo` (the packaged quick recipe unless ``--config``) once
per seed, each into ``OUT/seed-N`` (a finished seed is read back, not rerun), and writes
``benchmarks/results/demo.json``: per seed the test top-1 of both classifiers, the codex health
and the wall time of each stage; over seeds the mean ± SE of both and of their difference.

Run: ``python benchmarks/demo_seeds.py --seeds 42 0 1 --out runs/demo-seeds``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from duin.workflows.codex import pretraining_health
from duin.workflows.demo import run_demo

RESULTS = Path(__file__).resolve().parent / "results" / "demo.json"


def _top1(run: Path) -> float:
    return float(json.loads((run / "report.json").read_text())["summary"]["top1"]["mean"])


def one_seed(out: Path, seed: int, config: str | None, overrides: list[str]) -> dict:
    """Run (or read back) the demo for one seed."""
    if not (out / "cls-scratch" / "report.json").is_file():
        run_demo(out, config=config, overrides=overrides, seed=seed, quiet=True)
    timings = json.loads((out / "timings.json").read_text())
    return {
        "mae_top1": _top1(out / "cls"),
        "scratch_top1": _top1(out / "cls-scratch"),
        "pretraining": pretraining_health(out / "vqvae", out / "mae"),
        "timings_s": timings,
    }


def mean_se(values: list[float]) -> list[float]:
    """``[mean, standard error]`` (sample SD / sqrt(n); 0 for one value)."""
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return [float(v.mean()), se]


def paired_summary(mae: list[float], scratch: list[float]) -> dict:
    """Mean ± SE of both classifiers and of their paired difference, and how often mae >= scratch."""
    diff = [m - s for m, s in zip(mae, scratch, strict=True)]
    return {
        "mae_top1": mean_se(mae),
        "scratch_top1": mean_se(scratch),
        "mae_minus_scratch": mean_se(diff),
        "mae_at_least_scratch": f"{sum(d >= 0 for d in diff)}/{len(diff)}",
    }


def write_result(path: Path, command: str, seeds: dict, summary: dict) -> None:
    """Write a results JSON: the command, date, machine, per-seed rows and the summary."""
    result = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.node()}",
        "seeds": seeds,
        "summary": summary,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1])
    parser.add_argument("--out", type=Path, default=Path("runs/demo-seeds"))
    parser.add_argument("--config", default=None, help="config file (default: quick)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    seeds = {
        s: one_seed(args.out / f"seed-{s}", s, args.config, args.overrides) for s in args.seeds
    }
    summary = paired_summary(
        [r["mae_top1"] for r in seeds.values()], [r["scratch_top1"] for r in seeds.values()]
    )
    for s, r in seeds.items():
        health = next(iter(r["pretraining"].values()))
        print(
            f"seed {s}: mae {100 * r['mae_top1']:.2f} %  scratch {100 * r['scratch_top1']:.2f} %  "
            f"codex perplexity {health['codex_perplexity']:.1f}  "
            f"total {r['timings_s']['total_s']:.0f} s"
        )
    print(json.dumps(summary))
    command = "python benchmarks/demo_seeds.py " + " ".join(
        ["--seeds", *map(str, args.seeds), *(f"--set {o}" for o in args.overrides)]
    )
    write_result(args.results, command, seeds, summary)


if __name__ == "__main__":
    main()

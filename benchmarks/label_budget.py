"""Accuracy vs labelled trials per word: Du-IN (mae) and Du-IN (scratch) from the same demo runs.

For each demo run directory (``duin demo`` or ``benchmarks/demo_seeds.py`` output: its ``mae``
run, ``cache`` and ``cls`` run) and each label budget, fine-tunes the classifier twice, from
the demo's MAE and from random weights, on only the first N training trials of each word
(``data.train_trials_per_word``), with the demo's own seed, split, channels and recipe. Only
the labelled budget varies: the pretrained encoder, the channels (chosen on the demo's
training trials) and the validation and test trials are the same at every budget, so each
demo seed gives a paired curve. The demo's own two classifiers are the full-budget point.

Writes ``benchmarks/results/label_budget.json`` (per seed and budget the test top-1 of both;
per budget mean ± SE over seeds of both and of their difference) and a plot beside it.

Run: ``python benchmarks/label_budget.py runs/demo-seeds/seed-42 runs/demo-seeds/seed-0
runs/demo-seeds/seed-1 --budgets 2 4 8``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from demo_seeds import paired_summary, write_result
from duin.training.stages import load_stage_config
from duin.workflows.finetune import finetune
from duin.workflows.prepare import prepare_data
from duin.workflows.rundir import read_channels, write_channels

RESULTS = Path(__file__).resolve().parent / "results" / "label_budget.json"
VARIANTS = ("mae", "scratch")


def _top1(run: Path) -> float:
    return float(json.loads((run / "report.json").read_text())["summary"]["top1"]["mean"])


def one_budget(demo: Path, out: Path, budget: int, variant: str) -> float:
    """Fine-tune one classifier of ``demo`` on ``budget`` training trials per word (or read it)."""
    run = out / f"k{budget}-{variant}"
    if not (run / "report.json").is_file():
        cfg = load_stage_config(
            "cls", demo / "cls" / "config.yaml", [f"data.train_trials_per_word={budget}"]
        )
        run.mkdir(parents=True, exist_ok=True)
        write_channels(run, read_channels(demo / "cls"), method="the demo's", seed=cfg.seed)
        prepared = prepare_data(cfg.data, demo / "cache", quiet=True)
        init = demo / "mae" if variant == "mae" else None
        finetune(cfg, run, init, variant, prepared=prepared, quiet=True)
    return _top1(run)


def plot(summary: dict, full: int | None, path: Path) -> None:
    """Mean ± SE test top-1 of both classifiers against the label budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = list(summary)
    xs = [full if b == "all" else int(b) for b in budgets]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for variant, colour in zip(VARIANTS, ("C0", "C1"), strict=True):
        mean = [100 * summary[b][f"{variant}_top1"][0] for b in budgets]
        se = [100 * summary[b][f"{variant}_top1"][1] for b in budgets]
        ax.errorbar(
            xs, mean, yerr=se, marker="o", capsize=3, color=colour, label=f"Du-IN ({variant})"
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("labelled training trials per word")
    ax.set_ylabel("test top-1 (%)")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demos", type=Path, nargs="+", help="demo run directories (one per seed)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--out", type=Path, default=Path("runs/label-budget"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    seeds: dict[str, dict[str, dict[str, float]]] = {}
    full_budget = None
    for demo in args.demos:
        seed = load_stage_config("cls", demo / "cls" / "config.yaml").seed
        rows = {
            str(k): {f"{v}_top1": one_budget(demo, args.out / demo.name, k, v) for v in VARIANTS}
            for k in args.budgets
        }
        rows["all"] = {"mae_top1": _top1(demo / "cls"), "scratch_top1": _top1(demo / "cls-scratch")}
        result = json.loads(next((demo / "cls").glob("sub-*/seed-*/result.json")).read_text())
        n_train = sum(c["train"] for c in result["split"]["counts"].values())
        full_budget = round(n_train / result["n_classes"])
        seeds[str(seed)] = rows
        print(
            f"seed {seed}: "
            + "  ".join(
                f"k={k} mae {100 * r['mae_top1']:.2f} scratch {100 * r['scratch_top1']:.2f}"
                for k, r in rows.items()
            )
        )
    summary = {}
    for k in [*map(str, args.budgets), "all"]:
        summary[k] = paired_summary(
            [r[k]["mae_top1"] for r in seeds.values()],
            [r[k]["scratch_top1"] for r in seeds.values()],
        )
        print(f"k={k}: " + json.dumps(summary[k]))
    command = "python benchmarks/label_budget.py " + " ".join(
        [*map(str, args.demos), "--budgets", *map(str, args.budgets)]
    )
    write_result(args.results, command, seeds, summary)
    plot(summary, full_budget, args.results.with_suffix(".png"))


if __name__ == "__main__":
    main()

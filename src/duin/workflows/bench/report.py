"""Benchmark results: aggregate finished cells and render ``bench.json``, ``bench.md``, ``bench.png``.

Reads each cell's ``sub-XX/seed-N/result.json`` and ``cell.json``; writes ``bench.json``,
``bench.md`` and ``bench.png`` per entry and, for a grid, the comparison of the entries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from duin.utils.io import atomic_write_json, atomic_write_text
from duin.workflows.bench.plan import (
    DUIN_MODELS,
    PAPER_TABLE2,
    BaselineSettings,
    BenchEntry,
    BenchPlan,
)

__all__ = [
    "collect_entry",
    "render_bench_markdown",
    "render_grid_markdown",
    "write_entry_outputs",
    "write_grid",
]


def _model_info(name: str) -> dict[str, Any]:
    from duin.models.baselines import BASELINES

    if name in BASELINES:
        info = BASELINES[name]
        return {
            "family": "baseline",
            "token_level": info.token_level,
            "pretrained": info.pretrained,
            "reference": info.reference,
            "paper_parameters": info.paper_params,
        }
    return {
        "family": "duin",
        "token_level": "region",
        "pretrained": DUIN_MODELS[name] != "scratch",
        "reference": "Zheng et al., NeurIPS 2024",
        # Table 2: the pooled model carries one subject layer per subject
        "paper_parameters": "5.18M" if name == "duin_poms" else "4.38M",
    }


def collect_entry(
    entry: BenchEntry, root: Path, subjects: list[str], oracle: Any
) -> dict[str, Any]:
    """Aggregate the cells of one entry into the ``bench.json`` dictionary."""
    from duin.evaluation.report import build_report
    from duin.models.baselines import BASELINES

    settings = entry.settings
    models: dict[str, Any] = {}
    protocol, n_classes = None, None
    for name in settings.models:
        runs, walls, params = [], [], None
        pretrained = _model_info(name)["pretrained"]
        for subject in subjects:
            for seed in settings.seeds:
                cell = root / "cells" / name / f"sub-{subject}_seed-{seed}"
                result = cell / f"sub-{subject}" / f"seed-{seed}" / "result.json"
                if not result.is_file():
                    continue
                r = json.loads(result.read_text())
                protocol, n_classes = r["protocol"], r["n_classes"]
                runs.append(
                    {
                        "subject": r["subject"],
                        "seed": r["seed"],
                        "metrics": r["metrics"],
                        "run_dir": str(cell.relative_to(root)),
                    }
                )
                if "pretrained" in r:  # baselines record whether they were pretrained
                    pretrained = bool(r["pretrained"])
                meta = json.loads((cell / "cell.json").read_text())
                walls.append(float(meta.get("wall_s") or 0.0))
                params = params or meta.get("n_parameters")
        if not runs:
            continue
        report = build_report(runs, protocol=protocol, n_classes=n_classes, title=name)
        paper = PAPER_TABLE2.get(name)
        if (
            name in BASELINES
            and settings.baselines.get(name, BaselineSettings()).pretrained is False
        ):
            paper = None  # not the paper's setting
        models[name] = {
            **_model_info(name),
            "pretrained": pretrained,
            "n_parameters": params,
            "paper_top1": None if paper is None else {"mean": paper[0], "se": paper[1]},
            "summary": report["summary"],
            "subjects": report["subjects"],
            "runs": report["runs"],
            "wall_s": round(sum(walls), 1),
        }
    if not models:
        raise ValueError(f"{root}: no finished cells to report")
    oracle = {s: oracle[s] for s in subjects if oracle and s in oracle} or None
    return {
        "title": settings.name + (f" [{entry.name}]" if entry.name else ""),
        "entry": entry.name or None,
        "overrides": entry.overrides,
        "protocol": protocol,
        "n_classes": n_classes,
        "chance": 1.0 / n_classes,
        "oracle_accuracy": oracle,
        "oracle_mean": None if not oracle else sum(oracle.values()) / len(oracle),
        "aggregation": (
            "per subject: mean and population SD over seeds; overall: mean of subject means ± "
            "SE = population SD of subject means / sqrt(n_subjects) (the paper's Table 2)"
        ),
        "subjects": subjects,
        "seeds": list(settings.seeds),
        "models": models,
        "channels_per_subject": entry.stages["cls"].data.n_channels,
        "recipe": settings.recipe,
        "baseline_size": settings.baseline_size,
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _params(n: int | None) -> str:
    return "" if not n else f"{n / 1e6:.2f}M"


def render_bench_markdown(bench: Mapping[str, Any]) -> str:
    """Markdown of one benchmark: summary table, per-subject table, chance and ceiling.

    Parameters
    ----------
    bench : Mapping
        A ``bench.json`` dictionary.

    Returns
    -------
    str
        Markdown text.
    """
    models = bench["models"]
    oracle = bench.get("oracle_accuracy") or {}
    lines = [
        f"# {bench['title']}",
        "",
        f"- Protocol: `{bench['protocol']}`; {bench['n_classes']} words, chance "
        f"{100 * bench['chance']:.2f} %",
    ]
    if bench.get("oracle_mean") is not None:
        shown = ", ".join(f"sub-{k}: {100 * v:.2f} %" for k, v in sorted(oracle.items()))
        lines.append(
            f"- Simulator oracle ceiling: {100 * bench['oracle_mean']:.2f} % (mean; {shown})"
        )
    lines += [
        f"- Subjects {', '.join(bench['subjects'])}; seeds {bench['seeds']}; "
        f"channels per subject: {bench.get('channels_per_subject') or 'all'}",
        f"- Aggregation: {bench['aggregation']}",
        "",
        "| Model | Tokens | Pretrained | Params | Top-1 % (mean ± SE) | Top-5 % | Bal. acc. % "
        "| CE | Paper Table 2 % | Wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        s = m["summary"]
        paper = m.get("paper_top1")
        paper_text = "" if paper is None else f"{paper['mean']:.2f} ± {paper['se']:.2f}"
        ce = s.get("cross_entropy", {}).get("mean")
        lines.append(
            f"| {name} | {m['token_level']} | {'yes' if m['pretrained'] else 'no'} "
            f"| {_params(m.get('n_parameters'))} "
            f"| **{_pct(s['top1']['mean'])} ± {_pct(s['top1']['se'])}** "
            f"| {_pct(s.get('top5', {}).get('mean'))} "
            f"| {_pct(s.get('balanced_accuracy', {}).get('mean'))} "
            f"| {'n/a' if ce is None else f'{ce:.3f}'} | {paper_text} | {m['wall_s']:.0f} |"
        )
    chance_row = f"| chance | | | | {100 * bench['chance']:.2f} | | | | 1.64 | |"
    lines.append(chance_row)
    if bench.get("oracle_mean") is not None:
        lines.append(f"| simulator oracle | | | | {100 * bench['oracle_mean']:.2f} | | | | | |")
    if len(bench["subjects"]) == 1:
        lines += [
            "",
            "One subject: the SE across subjects is 0 by definition; the per-subject table below "
            "gives the SD over seeds.",
        ]
    region = [(n, m) for n, m in models.items() if m["token_level"] == "region"]
    channel = [(n, m) for n, m in models.items() if m["token_level"] == "channel"]
    if region and channel:
        best_r = max(region, key=lambda nm: nm[1]["summary"]["top1"]["mean"])
        best_c = max(channel, key=lambda nm: nm[1]["summary"]["top1"]["mean"])
        lines += [
            "",
            f"Region-level vs channel-level tokens: best region-level {best_r[0]} "
            f"{_pct(best_r[1]['summary']['top1']['mean'])} % vs best channel-level {best_c[0]} "
            f"{_pct(best_c[1]['summary']['top1']['mean'])} % (paper: 62.70 vs 12.42).",
        ]
    subjects = bench["subjects"]
    lines += [
        "",
        "Per subject: top-1 % (mean ± SD over seeds)",
        "",
        "| Model | " + " | ".join(f"sub-{s}" for s in subjects) + " |",
        "|---|" + "---:|" * len(subjects),
    ]
    for name, m in models.items():
        by = {e["subject"]: e["metrics"]["top1"] for e in m["subjects"]}
        cells = [
            f"{_pct(by[s]['mean'])} ± {_pct(by[s]['sd'])}" if s in by else "" for s in subjects
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if oracle:
        lines.append(
            "| oracle | "
            + " | ".join(_pct(oracle.get(s)) if s in oracle else "" for s in subjects)
            + " |"
        )
    lines.append("")
    return "\n".join(lines)


def write_entry_outputs(bench: Mapping[str, Any], root: Path) -> None:
    from duin.evaluation.plots import plot_bars

    atomic_write_json(root / "bench.json", json.loads(json.dumps(bench, default=str)))
    atomic_write_text(root / "bench.md", render_bench_markdown(bench))
    models = bench["models"]
    plot_bars(
        {n: 100 * m["summary"]["top1"]["mean"] for n, m in models.items()},
        root / "bench.png",
        errors={n: 100 * m["summary"]["top1"]["se"] for n, m in models.items()},
        ylabel="top-1 accuracy (%)",
        chance=100 * bench["chance"],
        ceiling=None if bench.get("oracle_mean") is None else 100 * bench["oracle_mean"],
        title=bench["title"],
    )


def render_grid_markdown(grid: Mapping[str, Any]) -> str:
    """Markdown comparing the entries of a grid (rows) for every model (columns).

    Parameters
    ----------
    grid : Mapping
        The top-level ``bench.json`` of a grid.

    Returns
    -------
    str
        Markdown text.
    """
    models = grid["models"]
    lines = [
        f"# {grid['title']}",
        "",
        f"Top-1 % (mean ± SE over subjects). Chance {100 * grid['chance']:.2f} %"
        + (
            f"; simulator oracle {100 * grid['oracle_mean']:.2f} %"
            if grid.get("oracle_mean") is not None
            else ""
        )
        + ".",
        "",
        "| Entry | Overrides | " + " | ".join(models) + " |",
        "|---|---|" + "---:|" * len(models),
    ]
    for name, e in grid["entries"].items():
        sets = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in e["overrides"].items())
        cells = []
        for model in models:
            m = e["models"].get(model)
            if m is None:
                cells.append("")
            elif m.get("seeds_sd") is not None and m["n_seeds"] > 1:
                cells.append(
                    f"{_pct(m['top1']['mean'])} (SD {_pct(m['seeds_sd'])} over "
                    f"{m['n_seeds']} seeds)"
                )
            else:
                cells.append(f"{_pct(m['top1']['mean'])} ± {_pct(m['top1']['se'])}")
        lines.append(f"| {name} | {sets} | " + " | ".join(cells) + " |")
    lines += ["", "Per-entry details: `<entry>/bench.md`.", ""]
    return "\n".join(lines)


def write_grid(plan: BenchPlan, results: Mapping[str, Mapping[str, Any]], out: Path) -> dict:
    from duin.evaluation.plots import plot_bars

    models: list[str] = []
    for bench in results.values():
        models += [m for m in bench["models"] if m not in models]
    first = next(iter(results.values()))
    grid = {
        "title": plan.entries[0].settings.name,
        "source": plan.source,
        "quick": plan.quick,
        "chance": first["chance"],
        "oracle_mean": first.get("oracle_mean"),
        "models": models,
        "entries": {
            name: {
                "overrides": bench["overrides"],
                "models": {
                    m: {
                        "top1": v["summary"]["top1"],
                        # one subject: the SE across subjects is 0; keep the spread over seeds
                        "seeds_sd": v["subjects"][0]["metrics"]["top1"]["sd"]
                        if len(v["subjects"]) == 1
                        else None,
                        "n_seeds": max(e["metrics"]["top1"]["n_seeds"] for e in v["subjects"]),
                    }
                    for m, v in bench["models"].items()
                },
                "bench": f"{name}/bench.json",
            }
            for name, bench in results.items()
        },
    }
    atomic_write_json(out / "bench.json", grid)
    atomic_write_text(out / "bench.md", render_grid_markdown(grid))
    values, errors = {}, {}
    for name, bench in results.items():
        for m, v in bench["models"].items():
            label = name if len(models) == 1 else f"{name}:{m}"
            values[label] = 100 * v["summary"]["top1"]["mean"]
            errors[label] = 100 * v["summary"]["top1"]["se"]
    plot_bars(
        values,
        out / "bench.png",
        errors=errors,
        ylabel="top-1 accuracy (%)",
        chance=100 * grid["chance"],
        ceiling=None if grid["oracle_mean"] is None else 100 * grid["oracle_mean"],
        title=grid["title"],
    )
    return grid

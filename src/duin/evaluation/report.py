"""Evaluation reports: ``report.json`` (machine-readable) and ``report.md`` (for people).

A report collects one result per (subject, seed) run, aggregates every metric the paper's way
(per subject: mean ± SD over seeds; overall: mean of subject means ± SE, see
:mod:`duin.evaluation.metrics`), and states the evaluation protocol, the chance level and, for
simulated data, the simulator's oracle accuracy so scores can be read against the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from duin._version import __version__
from duin.evaluation.metrics import aggregate_runs
from duin.utils.io import atomic_write_json, atomic_write_text

__all__ = ["PROTOCOLS", "RunResult", "build_report", "render_markdown", "write_report"]

#: What each evaluation protocol means (written into every report).
PROTOCOLS: dict[str, str] = {
    "clean": (
        "leak-free (duin default): normalisation statistics, channel selection and the best "
        "epoch use training/validation data only; validation ties keep the earliest epoch; the "
        "test split is evaluated once, on the selected checkpoint"
    ),
    "reference": (
        "the paper code's protocol, for comparison: z-scoring over all trials and best "
        "validation epoch with ties broken by test accuracy, so test information leaks into "
        "model selection (duin-reference §5.3)"
    ),
}

# Metrics shown as percentages in the Markdown table.
_PERCENT_PREFIXES = ("top", "acc", "balanced_accuracy", "oracle")


@dataclass
class RunResult:
    """Test metrics of one run (one subject, one seed).

    Parameters
    ----------
    subject : str
        Subject id.
    seed : int
        Run seed.
    metrics : Mapping[str, float]
        Scalar test metrics, e.g. ``{"top1": 0.62, "cross_entropy": 3.37}``.
    run_dir : str, optional
        Where the run lives.
    """

    subject: str
    seed: int
    metrics: Mapping[str, float]
    run_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _as_run(run: RunResult | Mapping[str, Any]) -> RunResult:
    if isinstance(run, RunResult):
        return run
    try:
        return RunResult(
            subject=str(run["subject"]),
            seed=int(run["seed"]),
            metrics=dict(run["metrics"]),
            run_dir=run.get("run_dir"),
        )
    except KeyError as exc:
        raise ValueError(
            f"a run result needs 'subject', 'seed' and 'metrics'; missing {exc}"
        ) from None


def _scalar_names(runs: Sequence[RunResult]) -> list[str]:
    names: list[str] = []
    for run in runs:
        for key, value in run.metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key not in names:
                names.append(key)
    return names


def build_report(
    runs: Sequence[RunResult | Mapping[str, Any]],
    *,
    protocol: Literal["clean", "reference"],
    n_classes: int,
    primary_metric: str = "top1",
    oracle_accuracy: float | Mapping[str, float] | None = None,
    title: str = "duin evaluation",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Aggregate run results into the report dictionary written as ``report.json``.

    Parameters
    ----------
    runs : sequence of RunResult or dict
        One entry per (subject, seed).
    protocol : {"clean", "reference"}
        Which evaluation protocol produced the results.
    n_classes : int
        Number of classes (chance level = 1 / n_classes).
    primary_metric : str
        Headline metric (must be present in every run).
    oracle_accuracy : float or Mapping[str, float], optional
        Simulator ceiling, overall or per subject (simulated data only).
    title : str
        Report title.
    extra : Mapping, optional
        Additional JSON-serialisable context (model, config, data source, ...).

    Returns
    -------
    dict
        The report.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    results = [_as_run(r) for r in runs]
    if not results:
        raise ValueError("no run results to report")
    seen: set[tuple[str, int]] = set()
    for run in results:
        if (run.subject, run.seed) in seen:
            raise ValueError(f"duplicate result for subject {run.subject!r}, seed {run.seed}")
        seen.add((run.subject, run.seed))
        if primary_metric not in run.metrics:
            raise ValueError(
                f"run (subject {run.subject!r}, seed {run.seed}) lacks the primary metric "
                f"{primary_metric!r}; it has: {', '.join(run.metrics)}"
            )
    names = _scalar_names(results)
    summary: dict[str, Any] = {}
    per_subject: dict[str, dict[str, Any]] = {}
    for name in names:
        values: dict[str, dict[int, float]] = {}
        for run in results:
            if name in run.metrics:
                values.setdefault(run.subject, {})[run.seed] = float(run.metrics[name])
        agg = aggregate_runs(values)
        summary[name] = {
            "mean": agg.mean,
            "se": agg.se,
            "sd_subjects": agg.sd,
            "n_subjects": agg.n_subjects,
        }
        for s in agg.subjects:
            entry = per_subject.setdefault(s.subject, {"subject": s.subject, "metrics": {}})
            entry["metrics"][name] = {
                "mean": s.mean,
                "sd": s.sd,
                "n_seeds": s.n_seeds,
                "values": {str(k): v for k, v in sorted(s.values.items())},
            }
    report: dict[str, Any] = {
        "title": title,
        "protocol": protocol,
        "protocol_description": PROTOCOLS[protocol],
        "primary_metric": primary_metric,
        "n_classes": int(n_classes),
        "chance": 1.0 / n_classes,
        "aggregation": (
            "per subject: mean and population SD over seeds; overall: mean of subject means "
            "± SE = population SD of subject means / sqrt(n_subjects) (as in the paper's Table 2)"
        ),
        "n_subjects": len(per_subject),
        "seeds": sorted({r.seed for r in results}),
        "summary": summary,
        "subjects": [per_subject[k] for k in sorted(per_subject)],
        "runs": [
            {"subject": r.subject, "seed": r.seed, "metrics": dict(r.metrics), "run_dir": r.run_dir}
            for r in results
        ],
    }
    if oracle_accuracy is not None:
        if isinstance(oracle_accuracy, Mapping):
            report["oracle_accuracy"] = {str(k): float(v) for k, v in oracle_accuracy.items()}
        else:
            report["oracle_accuracy"] = float(oracle_accuracy)
    if extra:
        report["extra"] = dict(extra)

    report["duin_version"] = __version__
    return report


def _fmt(name: str, value: float, *, percent: bool | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if percent is None:
        percent = name.startswith(_PERCENT_PREFIXES)
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """Render a report dictionary as Markdown (summary line + per-subject table).

    Parameters
    ----------
    report : Mapping
        Output of :func:`build_report`.

    Returns
    -------
    str
        Markdown text.
    """
    names = list(report["summary"])
    primary = report["primary_metric"]
    names = [primary] + [n for n in names if n != primary]
    head = report["summary"][primary]
    pct = primary.startswith(_PERCENT_PREFIXES)
    unit = " %" if pct else ""
    lines = [
        f"# {report['title']}",
        "",
        f"**{primary}: {_fmt(primary, head['mean'])} ± {_fmt(primary, head['se'])}{unit}** "
        f"(mean ± SE over {head['n_subjects']} subject(s); seeds {report['seeds']})",
        "",
        f"- Protocol: `{report['protocol']}`: {report['protocol_description']}",
        f"- Chance level: {100 * report['chance']:.2f} % (1/{report['n_classes']})",
    ]
    oracle = report.get("oracle_accuracy")
    if isinstance(oracle, float):
        lines.append(f"- Oracle accuracy (simulator ceiling): {100 * oracle:.2f} %")
    elif isinstance(oracle, Mapping):
        shown = ", ".join(f"{k}: {100 * v:.2f} %" for k, v in sorted(oracle.items()))
        lines.append(f"- Oracle accuracy (simulator ceiling): {shown}")
    lines += [f"- Aggregation: {report['aggregation']}", ""]
    header = [
        "Subject",
        "Seeds",
        *(f"{n}{' (%)' if n.startswith(_PERCENT_PREFIXES) else ''}" for n in names),
    ]
    if isinstance(oracle, Mapping):
        header.append("oracle (%)")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for subject in report["subjects"]:
        metrics = subject["metrics"]
        n_seeds = max(m["n_seeds"] for m in metrics.values())
        cells = [subject["subject"], str(n_seeds)]
        for name in names:
            m = metrics.get(name)
            cells.append("" if m is None else f"{_fmt(name, m['mean'])} ± {_fmt(name, m['sd'])}")
        if isinstance(oracle, Mapping):
            value = oracle.get(subject["subject"])
            cells.append("" if value is None else f"{100 * value:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**mean ± SE**", ""]
    for name in names:
        s = report["summary"][name]
        cells.append(f"**{_fmt(name, s['mean'])} ± {_fmt(name, s['se'])}**")
    if isinstance(oracle, Mapping):
        cells.append("")
    lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per-subject cells: mean ± SD over seeds.", ""]
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    runs: Sequence[RunResult | Mapping[str, Any]],
    *,
    protocol: Literal["clean", "reference"],
    n_classes: int,
    primary_metric: str = "top1",
    oracle_accuracy: float | Mapping[str, float] | None = None,
    title: str = "duin evaluation",
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Build a report and write ``report.json`` and ``report.md`` atomically into ``out_dir``.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Directory (created if needed).
    runs, protocol, n_classes, primary_metric, oracle_accuracy, title, extra
        See :func:`build_report`.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        Paths of ``report.json`` and ``report.md``.
    """
    report = build_report(
        runs,
        protocol=protocol,
        n_classes=n_classes,
        primary_metric=primary_metric,
        oracle_accuracy=oracle_accuracy,
        title=title,
        extra=extra,
    )
    out = Path(out_dir)
    json_path = atomic_write_json(out / "report.json", report)
    md_path = atomic_write_text(out / "report.md", render_markdown(report))
    return json_path, md_path

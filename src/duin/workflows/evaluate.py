"""The report of a fine-tuning run, and its plain-text table.

Reads ``sub-XX/seed-N/result.json`` (and ``data.json``, ``channels.json``) of a
:func:`duin.workflows.finetune.finetune` run; writes ``report.json`` and ``report.md``
(mean ± SD over seeds per subject, mean ± SE over subjects, chance and, on simulated data, the
oracle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from duin.workflows.rundir import CHANNELS_FILE, RESULT_FILE, read_channels

__all__ = ["evaluate", "format_table"]


def evaluate(run_dir: str | Path) -> dict[str, Any]:
    """(Re)build ``report.json`` / ``report.md`` of a fine-tuning run from its per-run results.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        A :func:`finetune` run directory.

    Returns
    -------
    dict
        The report: per-subject top-1, top-5, balanced accuracy and cross-entropy (mean ± SD
        over seeds), mean ± SE over subjects, protocol, chance and (simulated data) the oracle.
    """
    from duin.evaluation.report import write_report

    run_dir = Path(run_dir)
    paths = sorted(run_dir.glob(f"sub-*/seed-*/{RESULT_FILE}"))
    if not paths:
        raise FileNotFoundError(
            f"{run_dir}: no sub-*/seed-*/{RESULT_FILE}; is it a finished 'duin finetune' run?"
        )
    results = [json.loads(p.read_text()) for p in paths]
    protocols = {r["protocol"] for r in results}
    n_classes = {r["n_classes"] for r in results}
    if len(protocols) != 1 or len(n_classes) != 1:
        raise ValueError(f"{run_dir}: runs mix protocols {protocols} or class counts {n_classes}")
    protocol = protocols.pop()
    n_cls = n_classes.pop()
    oracle = {
        r["subject"]: r["oracle_accuracy"] for r in results if r.get("oracle_accuracy") is not None
    }
    data_info = {}
    if (run_dir / "data.json").is_file():
        data_info = json.loads((run_dir / "data.json").read_text())
    channels = read_channels(run_dir) if (run_dir / CHANNELS_FILE).is_file() else {}
    rules = sorted({r["selection_rule"] for r in results})
    extra = {
        "variant": sorted({r["variant"] for r in results}),
        "data_source": data_info.get("source"),
        "data_kind": data_info.get("kind"),
        "channels": channels,
        "selection_rule": rules,
        "selected_epochs": {f"{r['subject']}/{r['seed']}": r["selected_epoch"] for r in results},
        "split_protocol": sorted({r["split"]["protocol"] for r in results}),
        "normalization": sorted({r["split"]["normalization"] for r in results}),
    }
    runs = [
        {
            "subject": r["subject"],
            "seed": r["seed"],
            "metrics": r["metrics"],
            "run_dir": str(Path(p).parent.relative_to(run_dir)),
        }
        for r, p in zip(results, paths, strict=True)
    ]
    title = f"duin: Du-IN word classification ({', '.join(extra['variant'])})"
    write_report(
        run_dir,
        runs,
        protocol=protocol,  # type: ignore[arg-type]
        n_classes=n_cls,
        oracle_accuracy=oracle or None,
        title=title,
        extra=extra,
    )
    report = json.loads((run_dir / "report.json").read_text())
    return report


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of a report: ours vs chance vs the oracle, per subject and overall.

    Parameters
    ----------
    report : Mapping
        From :func:`evaluate`.

    Returns
    -------
    str
        The table.
    """
    oracle = report.get("oracle_accuracy") or {}
    chance = 100 * report["chance"]
    lines = [
        f"{'subject':<10}{'top-1 %':>10}{'top-5 %':>10}{'bal.acc %':>11}{'chance %':>10}"
        f"{'oracle %':>10}",
    ]
    for subject in report["subjects"]:
        m = subject["metrics"]
        o = oracle.get(subject["subject"]) if isinstance(oracle, Mapping) else oracle
        lines.append(
            f"{subject['subject']:<10}{100 * m['top1']['mean']:>10.2f}"
            f"{100 * m.get('top5', {}).get('mean', float('nan')):>10.2f}"
            f"{100 * m.get('balanced_accuracy', {}).get('mean', float('nan')):>11.2f}"
            f"{chance:>10.2f}{'' if o is None else f'{100 * o:.2f}':>10}"
        )
    s = report["summary"]
    lines.append(
        f"{'mean±SE':<10}{100 * s['top1']['mean']:>6.2f}±{100 * s['top1']['se']:<4.1f}"
        f"{100 * s.get('top5', {}).get('mean', float('nan')):>9.2f}"
        f"{100 * s.get('balanced_accuracy', {}).get('mean', float('nan')):>11.2f}{chance:>10.2f}"
    )
    lines.append(
        f"protocol: {report['protocol']}; {report['n_classes']} classes (chance "
        f"{chance:.2f} %); {report['n_subjects']} subject(s), seeds {report['seeds']}"
    )
    return "\n".join(lines)

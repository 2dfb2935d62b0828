"""Decision latency of ``duin stream``: a simulated recording replayed through LSL, decoded live.

A paper-size Du-IN classifier (61 words, 10 bipolar channels, 3-s windows at 1000 Hz; random
weights: latency does not depend on them) decodes a simulated 2 kHz recording (one subject,
61 words) that is replayed through a real LSL outlet on this machine at each ``--speed``.
The decoder runs the paper's preprocessing (0.5-200 Hz band-pass, 50 Hz notch and harmonics,
2000 -> 1000 Hz, bipolar), zero-phase with the default look-ahead, exactly as ``duin stream``.

Latency is measured per decision from the arrival of the last sample (or marker) the decision
needs to the decision (the ``latency_ms`` column). Also reported: samples lost (gaps in the
timestamps) and the look-ahead. Targets (issue 11, 2 cores): p95 <= 50 ms, median <= 20 ms.

Prints a table, writes ``benchmarks/results/stream_latency.json`` and
``docs/stream_latency.png``. Full measurement (about 13 minutes: a 10-minute recording at
speed 1, then at speed 4)::

    OMP_NUM_THREADS=1 python benchmarks/stream_latency.py --minutes 10 --speed 1 4

``--quick``: a 1-minute recording (about 1.5 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duin.data.preprocess import PreprocessConfig, spatial_map
from duin.data.simulate import SimulationConfig, simulate
from duin.models.registry import create_model, save_model
from duin.utils.io import atomic_write_text
from duin.workflows.stream import Classifier, replay_recordings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "stream_latency.json"
PLOT = ROOT / "docs" / "stream_latency.png"


def make_classifier(rec: Any, n_channels: int = 10) -> Classifier:
    """A paper-size classifier on the first ``n_channels`` bipolar channels of ``rec``."""
    config = PreprocessConfig()
    channels = spatial_map(rec, config).ch_names[:n_channels]
    model = create_model("duin_cls", n_channels=n_channels, n_classes=61).eval()
    with tempfile.TemporaryDirectory() as tmp:  # round trip through a checkpoint, as in use
        ckpt = save_model(model, Path(tmp) / "ckpt")
        from duin.models.registry import load_model

        model = load_model(ckpt).eval()
    return Classifier(
        model=model,
        subject=rec.subject,
        channels=channels,
        labels=[f"word{i}" for i in range(61)],
        tmin=0.0,
        n_times=3000,
        sfreq=1000.0,
        preprocess=config,
        mean=np.zeros(n_channels),
        std=np.full(n_channels, 1e-5),
    )


def summarize(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat)
    return {
        "n": int(a.size),
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="recording length")
    parser.add_argument("--speed", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--quick", action="store_true", help="a 1-minute recording")
    parser.add_argument("--note", default="", help="conditions to record (e.g. machine load)")
    args = parser.parse_args()
    minutes = 1.0 if args.quick else args.minutes
    torch.set_num_threads(1)

    sim = SimulationConfig(
        seed=0, n_words=61, trials_per_word=int(np.ceil(minutes * 60 / 3.2 / 61)) + 1,
        blocks_per_run=1000, pretrain_hours=0.0, oracle_trials_per_word=1,
        compute_baseline=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    rec = simulate(sim).subjects[0].task_runs[0]
    rec = rec.crop(0.0, min(rec.duration, minutes * 60))
    print(
        f"simulated {rec.duration:.0f} s, {rec.n_channels} contacts at {rec.sfreq:g} Hz, "
        f"{len(rec.events)} events in {time.perf_counter() - t0:.0f} s"
    )
    clf = make_classifier(rec)
    runs = {}
    for speed in args.speed:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = replay_recordings(clf, [rec], Path(tmp) / "out.csv", speed=speed, quiet=True)
            wall = time.perf_counter() - t0
        runs[f"{speed:g}"] = {
            "speed": speed,
            "wall_s": wall,
            "decisions": res.n_decisions,
            "skipped": res.n_skipped,
            "samples_missing": res.n_missing,
            "lookahead_ms": res.lookahead_ms,
            "latency": summarize(res.latencies_ms),
            "model_forward": summarize(res.model_ms),
            "latencies_ms": [round(x, 3) for x in res.latencies_ms],
        }
        lat = runs[f"{speed:g}"]["latency"]
        fwd = runs[f"{speed:g}"]["model_forward"]
        print(
            f"speed {speed:g}: {res.n_decisions} decisions, {res.n_skipped} skipped, "
            f"{res.n_missing} samples missing; latency median {lat['median_ms']:.1f} ms, "
            f"p95 {lat['p95_ms']:.1f} ms, max {lat['max_ms']:.1f} ms (model forward median "
            f"{fwd['median_ms']:.1f} ms)"
        )
    report = {
        "benchmark": "duin stream decision latency (replay through LSL on this machine)",
        "conditions": {
            "recording_s": rec.duration,
            "contacts": rec.n_channels,
            "sfreq_in": rec.sfreq,
            "classifier": "duin_cls, paper size, 10 bipolar channels, 61 words, 3-s windows",
            "preprocess": "paper's: 0.5-200 Hz, 50 Hz notch + harmonics, 1000 Hz, bipolar, "
            "zero-phase with the default look-ahead",
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "note": args.note,
        },
        "targets": {"median_ms": 20.0, "p95_ms": 50.0},
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(report, indent=2) + "\n")
    plot(runs, PLOT)
    print(f"wrote {RESULTS.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")


def plot(runs: dict[str, Any], path: Path) -> None:
    """Histogram of decision latencies per speed, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    top = max(max(r["latencies_ms"]) for r in runs.values())
    bins = np.linspace(0, max(60.0, top * 1.05), 60)
    for key, r in runs.items():
        lat = r["latency"]
        ax.hist(
            r["latencies_ms"], bins=bins, alpha=0.55,
            label=f"speed {key}: median {lat['median_ms']:.1f}, p95 {lat['p95_ms']:.1f} ms",
        )  # fmt: skip
    for x, name in ((20, "median target"), (50, "p95 target")):
        ax.axvline(x, color="k", ls="--", lw=0.8)
        ax.text(x, ax.get_ylim()[1] * 0.95, f" {name}", fontsize=7, va="top", rotation=90)
    ax.set_xlabel("decision latency (ms)")
    ax.set_ylabel("decisions")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

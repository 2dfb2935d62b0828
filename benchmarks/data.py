"""Throughput and memory of the data side: simulator, preprocessing, cached datasets.

Measures, on one core (``torch.set_num_threads(1)``):

- simulator speed: a 100-channel, 2 kHz non-task recording streamed to a ``.npy`` memmap, in
  channel-hours generated per minute (target: 1 h of 100 channels in < 2 min, i.e. >= 50);
- preprocessing throughput (``duin.data.preprocess.preprocess``: band-pass, notch, 2000 -> 1000
  Hz, bipolar) of that recording, memmap to memmap; skipped when the module is missing;
- dataset throughput: pretraining crops (4000 samples, 10 channels) and word trials (3000
  samples, with the +-300 shift) per second from the memory-mapped cache;
- peak memory (``tracemalloc`` peak of Python/numpy allocations, and the process's maximum
  RSS) for a short and a 4x longer recording: bounded streaming means the peak does not grow
  with the length (memmapped pages are the OS page cache, not the process's heap).

Prints a table and writes ``benchmarks/results/data.json``. Full run: 1-hour and 4-hour
recordings (needs ~25 GB of free disk in ``--tmpdir``, ~15 min); ``--quick``: 1 and 4 minutes.
Run on an idle machine.

Usage::

    python benchmarks/data.py --quick
    python benchmarks/data.py [--tmpdir /big/disk]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duin.data.datasets import PretrainDataset, TrialDataset, build_cache
from duin.data.simulate import SimulationConfig, simulate, simulate_rest
from duin.data.splits import pretrain_windows, split_trials

RESULTS = Path(__file__).resolve().parent / "results" / "data.json"


def measure(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """Run ``fn`` and return (result, seconds, tracemalloc peak bytes)."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def max_rss_mb() -> float:
    """Maximum resident set size of this process so far (MB, Linux units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_recording(config: SimulationConfig, seconds: float, tmp: Path) -> dict[str, Any]:
    """Simulate, preprocess and cache one recording of ``seconds``; time and memory of each."""
    out: dict[str, Any] = {"seconds": seconds}
    rec, t_sim, peak_sim = measure(
        lambda: simulate_rest(config, seconds, out_path=tmp / f"raw_{int(seconds)}.npy")
    )
    ch_hours = rec.n_channels * seconds / 3600
    out["simulate"] = {
        "n_channels": rec.n_channels,
        "wall_s": t_sim,
        "channel_hours_per_min": ch_hours / (t_sim / 60),
        "minutes_per_hour_of_100_channels": (t_sim / 60) / (ch_hours / 100),
        "tracemalloc_peak_mb": peak_sim / 2**20,
        "max_rss_mb": max_rss_mb(),
    }
    try:
        from duin.data.preprocess import PreprocessConfig, preprocess
    except ImportError:
        out["preprocess"] = {"skipped": "duin.data.preprocess is not available"}
        return out
    cfg = PreprocessConfig()
    pre, t_pre, peak_pre = measure(
        lambda: preprocess(rec, cfg, out_path=tmp / f"pre_{int(seconds)}.npy")
    )
    out["preprocess"] = {
        "wall_s": t_pre,
        "input_samples_per_s": rec.n_channels * rec.n_times / t_pre,
        "channel_hours_per_min": ch_hours / (t_pre / 60),
        "tracemalloc_peak_mb": peak_pre / 2**20,
        "max_rss_mb": max_rss_mb(),
        "output": f"{pre.n_channels} x {pre.n_times} at {pre.sfreq:g} Hz",
    }
    # cache the first 10 bipolar channels (like a channel selection)
    selection = pre.ch_names[:10]
    index, t_cache, peak_cache = measure(
        lambda: build_cache([pre], tmp / f"cache_{int(seconds)}", None, channels=selection)
    )
    out["cache"] = {"wall_s": t_cache, "tracemalloc_peak_mb": peak_cache / 2**20}
    out["_index"] = index
    return out


def bench_datasets(index: Any, n_samples: int, tmp: Path, quick: bool) -> dict[str, Any]:
    """Samples per second from the cache: pretraining crops and (simulated) word trials."""
    windows = pretrain_windows(index.spans(), None, length=8.0)
    crops = PretrainDataset(index, windows, crop_len=4000, seed=0)
    n = min(n_samples, len(crops))
    _, t_crop, _ = measure(lambda: [crops[i] for i in range(n)])
    # word trials from a small simulated corpus (raw -> preprocess -> cache)
    corpus = simulate(
        preset="tiny", seed=0, n_words=61 if not quick else 16, trials_per_word=4, pretrain_hours=0
    )
    try:
        from duin.data.preprocess import PreprocessConfig

        pre_cfg: Any = PreprocessConfig()
    except ImportError:
        pre_cfg = None
    task_index = build_cache(corpus.recordings, tmp / "task_cache", pre_cfg)
    trials = task_index.trials()
    split = split_trials(trials, seed=0)
    data = TrialDataset(task_index, split.train, max_shift=300, seed=0)
    m = min(n_samples, len(data))
    _, t_trial, _ = measure(lambda: [data[i] for i in range(m)])
    return {
        "pretrain_crops_per_s": n / t_crop,
        "pretrain_crop_shape": list(crops[0]["x"].shape),
        "trials_per_s": m / t_trial,
        "trial_shape": list(data[0]["x"].shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1- and 4-minute recordings")
    parser.add_argument("--tmpdir", type=Path, default=None, help="scratch directory (big)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    unit = 60.0 if args.quick else 3600.0
    # ~100 contacts: 10 shafts x 10 contacts
    config = SimulationConfig(n_shafts=10, contacts_per_shaft=(10, 10), seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="duin-bench-data-", dir=args.tmpdir))
    results: dict[str, Any] = {
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
    }
    try:
        short = bench_recording(config, 1 * unit, tmp)
        index = short.pop("_index")
        results["datasets"] = bench_datasets(index, 200 if args.quick else 2000, tmp, args.quick)
        for path in tmp.glob("*.npy"):  # free disk before the long recording
            path.unlink()
        long = bench_recording(config, 4 * unit, tmp)
        long.pop("_index")
        results["recordings"] = [short, long]
        growth = {
            stage: long[stage]["tracemalloc_peak_mb"]
            / max(short[stage]["tracemalloc_peak_mb"], 1e-9)
            for stage in ("simulate", "preprocess", "cache")
            if "tracemalloc_peak_mb" in long.get(stage, {})
        }
        results["peak_memory_growth_4x_length"] = growth
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(results, indent=1))
    tmp_out.replace(args.out)

    label = "min" if args.quick else "h"
    rows = []
    for rec in results["recordings"]:
        length = f"{rec['seconds'] / unit:g} {label}"
        sim = rec["simulate"]
        rows.append(
            (
                f"simulate {length} x {sim['n_channels']} ch",
                f"{sim['channel_hours_per_min']:.1f} ch-h/min",
                f"{sim['tracemalloc_peak_mb']:.1f} MB",
            )
        )
        pre = rec["preprocess"]
        if "skipped" in pre:
            rows.append((f"preprocess {length}", "skipped", pre["skipped"]))
        else:
            rows.append(
                (
                    f"preprocess {length}",
                    f"{pre['channel_hours_per_min']:.1f} ch-h/min",
                    f"{pre['tracemalloc_peak_mb']:.1f} MB",
                )
            )
        if "cache" in rec:
            rows.append(
                (
                    f"cache 10 ch {length}",
                    f"{rec['cache']['wall_s']:.2f} s",
                    f"{rec['cache']['tracemalloc_peak_mb']:.1f} MB",
                )
            )
    d = results["datasets"]
    rows.append(("pretrain crops (10 x 4000)", f"{d['pretrain_crops_per_s']:.0f} /s", ""))
    rows.append(
        (f"word trials {tuple(d['trial_shape'])} +shift", f"{d['trials_per_s']:.0f} /s", "")
    )
    for stage, ratio in results["peak_memory_growth_4x_length"].items():
        rows.append((f"peak-memory ratio 4x length: {stage}", f"{ratio:.2f}x", "(1.0 = bounded)"))
    width = max(len(r[0]) for r in rows)
    print(f"{'what'.ljust(width)}  {'throughput':>18}  peak (tracemalloc)")
    for what, value, peak in rows:
        print(f"{what.ljust(width)}  {value:>18}  {peak}")
    print(f"max RSS {max_rss_mb():.0f} MB; results in {args.out}")


if __name__ == "__main__":
    main()

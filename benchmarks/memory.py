"""Peak resident memory of ``duin simulate`` and of preprocessing against the recording length.

For each ``H``, in fresh processes under ``/usr/bin/time -v`` ("Maximum resident set size"):

1. ``python -m duin simulate --format npz --preset PRESET --set pretrain_hours=H``;
2. preprocessing that corpus into the dataset cache as training does
   (:func:`duin.data.datasets.build_cache` with the paper's :class:`PreprocessConfig`: band-pass,
   notch, 2 kHz -> 1 kHz, bipolar), dominated by the ``H``-hour non-task recording.

Each peak is reported with its ratio to the shortest run. Flat memory means the ratio stays
near 1 (target <= 1.25 from 0.5 h to 8 h, peak <= 1.5 GB): recordings are streamed through
files block by block, so memory does not depend on their length.

Writes ``benchmarks/results/memory.json``. Full run (needs ~``H`` x 2.5 GB of free disk for the
small preset's ~40 channels at 2 kHz, in ``--tmpdir``: the corpus, the filtering scratch file and
the cache; tens of minutes on an idle machine)::

    OMP_NUM_THREADS=1 python benchmarks/memory.py --hours 0.5 2 8

Quick check (a minute)::

    python benchmarks/memory.py --quick --out /tmp/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "memory.json"
_TIME = "/usr/bin/time"


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` under ``/usr/bin/time -v`` with one thread; return its peak RSS (MB) and wall time (s).

    Raises
    ------
    RuntimeError
        The command failed or GNU time printed no peak.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([_TIME, "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if match is None:
        raise RuntimeError(f"no 'Maximum resident set size' in {_TIME} output")
    return round(int(match.group(1)) / 1024, 1), round(wall, 1)


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _shown(cmd: list[str], paths: dict[Path, str]) -> str:
    text = " ".join(["/usr/bin/time -v python", *cmd[1:]])
    text = text.replace(str(Path(__file__).resolve()), "benchmarks/memory.py")
    for path, name in paths.items():
        text = text.replace(str(path), name)
    return text


def measure(
    preset: str, hours: float, tmpdir: Path, extra: list[str], preprocess: bool = True
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Simulate once, then preprocess the corpus into a cache, each in a fresh process.

    Parameters
    ----------
    preset : str
        Simulator preset.
    hours : float
        Non-task hours per subject (``pretrain_hours``).
    tmpdir : Path
        Where the corpus and cache are written (removed afterwards).
    extra : list of str
        More ``--set`` overrides, e.g. ``["n_subjects=1"]``.
    preprocess : bool
        Also measure preprocessing.

    Returns
    -------
    tuple of dict
        The simulator's and preprocessing's ``hours``, ``peak_rss_mb``, ``wall_s``,
        ``bytes_written``, ``command`` (preprocessing's is ``None`` when not measured).
    """
    work = Path(tempfile.mkdtemp(prefix="duin-mem-", dir=tmpdir))
    corpus, cache = work / "corpus", work / "cache"
    names = {corpus: "OUT", cache: "CACHE"}
    try:
        cmd = [sys.executable, "-m", "duin", "--quiet", "simulate", "--format", "npz"]
        cmd += ["--preset", preset, "--out", str(corpus)]
        for item in [f"pretrain_hours={hours}", *extra]:
            cmd += ["--set", item]
        peak, wall = peak_rss(cmd)
        sim = {"hours": hours, "peak_rss_mb": peak, "wall_s": wall}
        sim |= {"bytes_written": _size(corpus), "command": _shown(cmd, names)}
        pre = None
        if preprocess:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--build-cache"]
            cmd += [str(corpus), str(cache)]
            peak, wall = peak_rss(cmd)
            pre = {"hours": hours, "peak_rss_mb": peak, "wall_s": wall}
            pre |= {"bytes_written": _size(cache), "command": _shown(cmd, names)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sim, pre


def build_cache_from(corpus: Path, cache: Path) -> None:
    """Preprocess a ``duin simulate --format npz`` corpus into a dataset cache (the measured job)."""
    from duin.data.datasets import build_cache
    from duin.data.preprocess import PreprocessConfig
    from duin.data.simulate.io import read_simulated

    build_cache(read_simulated(corpus), cache, PreprocessConfig())


def _ratios(rows: list[dict[str, Any]]) -> float:
    base = rows[0]["peak_rss_mb"]
    for row in rows:
        row["ratio_to_first"] = round(row["peak_rss_mb"] / base, 3)
    return max(r["ratio_to_first"] for r in rows)


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    print(title)
    print(f"{'hours':>6} {'peak RSS MB':>12} {'ratio':>6} {'wall s':>8} {'GB written':>11}")
    for row in rows:
        print(
            f"{row['hours']:>6.3g} {row['peak_rss_mb']:>12.1f} {row['ratio_to_first']:>6.2f} "
            f"{row['wall_s']:>8.1f} {row['bytes_written'] / 1e9:>11.2f}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse options, run every length, print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[0.5, 2.0, 8.0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tmpdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--quick", action="store_true", help="tiny preset, 2 and 8 minutes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-preprocess", action="store_true", help="the simulator only")
    parser.add_argument(
        "--build-cache", nargs=2, type=Path, metavar=("CORPUS", "CACHE"), help=argparse.SUPPRESS
    )  # the measured child process
    args = parser.parse_args(argv)
    if args.build_cache is not None:
        build_cache_from(*args.build_cache)
        return {}
    if not Path(_TIME).is_file():
        raise SystemExit(f"{_TIME} not found (GNU time is needed for the peak RSS)")
    preset, hours = args.preset, args.hours
    if args.quick:
        preset, hours = "tiny", [2 / 60, 8 / 60]
    pairs = [measure(preset, h, args.tmpdir, args.sets, not args.no_preprocess) for h in hours]
    sim = [s for s, _ in pairs]
    pre = [p for _, p in pairs if p is not None]
    result: dict[str, Any] = {
        "benchmark": "peak RSS vs non-task hours: duin simulate --format npz, then preprocessing "
        "into the dataset cache",
        "preset": preset,
        "sets": args.sets,
        "simulate": {"runs": sim, "max_ratio": _ratios(sim)},
    }
    _table("duin simulate --format npz", sim)
    if pre:
        result["preprocess"] = {
            "config": "PreprocessConfig() (0.5-200 Hz, 50 Hz notch, 2 kHz -> 1 kHz, bipolar)",
            "runs": pre,
            "max_ratio": _ratios(pre),
        }
        _table("preprocessing into the cache (build_cache)", pre)
    result |= {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_average_at_end": list(os.getloadavg()),
        "quick": bool(args.quick),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

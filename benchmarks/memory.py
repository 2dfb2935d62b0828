"""Peak resident memory of ``duin simulate --format npz`` against the non-task length.

Runs ``/usr/bin/time -v python -m duin simulate --format npz --preset PRESET --set
pretrain_hours=H`` once per ``H`` in a fresh process, reads "Maximum resident set size", and
reports each peak and its ratio to the shortest run. Flat memory means the ratio stays near 1
(target <= 1.25 from 0.5 h to 8 h, peak <= 1.5 GB): recordings are streamed to disk block by
block, so memory does not depend on their length.

Writes ``benchmarks/results/memory.json``. Full run (needs ~``H`` x 0.7 GB of free disk per
hour for the small preset's 100 channels at 2 kHz, in ``--tmpdir``; tens of minutes on an idle
machine)::

    python benchmarks/memory.py --hours 0.5 2 8

Quick check (minutes)::

    python benchmarks/memory.py --quick
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


def measure(preset: str, hours: float, tmpdir: Path, extra: list[str]) -> dict[str, Any]:
    """Simulate once in a fresh process and return its peak RSS and wall time.

    Parameters
    ----------
    preset : str
        Simulator preset.
    hours : float
        Non-task hours per subject (``pretrain_hours``).
    tmpdir : Path
        Where the corpus is written (removed afterwards).
    extra : list of str
        More ``--set`` overrides, e.g. ``["n_subjects=1"]``.

    Returns
    -------
    dict
        ``hours``, ``peak_rss_mb``, ``wall_s``, ``bytes_written``, ``command``.
    """
    out = Path(tempfile.mkdtemp(prefix="duin-mem-", dir=tmpdir)) / "corpus"
    sets = [f"pretrain_hours={hours}", *extra]
    cmd = [sys.executable, "-m", "duin", "--quiet", "simulate", "--format", "npz"]
    cmd += ["--preset", preset, "--out", str(out)]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([_TIME, "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if match is None:
            raise RuntimeError(f"no 'Maximum resident set size' in {_TIME} output")
        written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return {
        "hours": hours,
        "peak_rss_mb": round(int(match.group(1)) / 1024, 1),
        "wall_s": round(wall, 1),
        "bytes_written": written,
        "command": " ".join(["/usr/bin/time -v python", *cmd[1:]]).replace(str(out), "OUT"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse options, run every length, print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[0.5, 2.0, 8.0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tmpdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--quick", action="store_true", help="tiny preset, 2 and 8 minutes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not Path(_TIME).is_file():
        raise SystemExit(f"{_TIME} not found (GNU time is needed for the peak RSS)")
    preset, hours = args.preset, args.hours
    if args.quick:
        preset, hours = "tiny", [2 / 60, 8 / 60]
    rows = [measure(preset, h, args.tmpdir, args.sets) for h in hours]
    base = rows[0]["peak_rss_mb"]
    for row in rows:
        row["ratio_to_first"] = round(row["peak_rss_mb"] / base, 3)
    print(f"{'hours':>6} {'peak RSS MB':>12} {'ratio':>6} {'wall s':>8} {'GB written':>11}")
    for row in rows:
        print(
            f"{row['hours']:>6.3g} {row['peak_rss_mb']:>12.1f} {row['ratio_to_first']:>6.2f} "
            f"{row['wall_s']:>8.1f} {row['bytes_written'] / 1e9:>11.2f}"
        )
    result = {
        "benchmark": "duin simulate --format npz peak RSS vs non-task hours",
        "preset": preset,
        "sets": args.sets,
        "runs": rows,
        "max_ratio": max(r["ratio_to_first"] for r in rows),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "quick": bool(args.quick),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

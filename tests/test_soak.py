"""Soak: ``kill -9`` a tiny ``duin finetune`` at 20 random points in a row, resuming each time.

The final weights, metrics and report must equal those of an uninterrupted run, and no
temporary file, trash directory or lock may be left behind. Slow (about 20 process starts);
run with ``pytest -m slow tests/test_soak.py -s``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

N_KILLS = int(os.environ.get("DUIN_SOAK_KILLS", "20"))

TINY = """
seed: 5
optim: {batch_size: 8}
trainer: {device: cpu, log_every: 0, progress: false, tensorboard: false,
          checkpoint_every_steps: 1}
model: {n_blocks: 1, n_heads: 2, d_head: 16, d_ff: 32, tokenizer_filters: [16, 16, 8]}
data:
  n_channels: null
cls:
  variant: scratch
  optim: {epochs: 12, warmup_epochs: 1, lr: 1.0e-3, lr_min: 1.0e-4}
  trainer: {selection_metric: val/top1, selection_mode: max}
  model: {n_times: 1000, head_hidden: [16]}
"""


def _finetune(out: Path, cfg: Path, data: Path, cache: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = ["finetune", "--out", out, "--config", cfg, "--data", data, "--cache", cache]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "duin",
            "--quiet",
            *map(str, args),
            *(["--resume"] if resume else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _leftovers(root: Path) -> list[str]:
    """Hidden entries (temporaries, trash, stale locks) and lock files under ``root``."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith(".") or p.name == "duin.lock" or p.name.endswith(".tmp")
    )


def test_twenty_kill9_resume_cycles_end_bit_equal(tmp_path):
    from duin.data.simulate import SimulationConfig, simulate_to_disk

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    data = simulate_to_disk(
        tmp_path / "data",
        "npz",
        SimulationConfig(
            seed=5,
            n_words=4,
            trials_per_word=10,
            blocks_per_run=1,
            n_shafts=2,
            contacts_per_shaft=(6, 6),
            pretrain_hours=0.0,
            oracle_trials_per_word=2,
            compute_baseline=False,
        ),
    )
    start = time.perf_counter()
    ref = _finetune(tmp_path / "ref", cfg, data, tmp_path / "ref-cache", resume=False)
    output = ref.communicate(timeout=600)[0]
    ref_wall = time.perf_counter() - start
    assert ref.returncode == 0, output

    # Kill points: the process start-up (imports) plus a random share of the training work, so
    # the N kills are spread over the whole run (start-up, cache, epochs, checkpoint writes).
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import duin.cli, duin.workflows.finetune"], check=True)
    startup = time.perf_counter() - start
    work = max(ref_wall - startup, 1.0)
    rng = random.Random(1234)
    out, cache = tmp_path / "soak", tmp_path / "soak-cache"
    killed, finished_early, delays = 0, 0, []
    for _ in range(N_KILLS):
        proc = _finetune(out, cfg, data, cache, resume=True)
        delay = startup * rng.uniform(0.5, 1.0) + rng.uniform(0.0, 2 * work / N_KILLS)
        deadline = time.perf_counter() + delay
        while proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
            delays.append(round(delay, 2))
        else:
            finished_early += 1
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode in (0, -signal.SIGKILL), output
    final = _finetune(out, cfg, data, cache, resume=True)
    output = final.communicate(timeout=600)[0]
    assert final.returncode == 0, output
    print(
        f"\nsoak: reference run {ref_wall:.1f} s (start-up {startup:.1f} s); {killed} kill -9 "
        f"at random points "
        f"(delays {delays}), {finished_early} runs finished before their kill"
    )

    run, ref_run = out / "sub-01" / "seed-5", tmp_path / "ref" / "sub-01" / "seed-5"
    for name in ("last", "best"):
        got = load_file(str(run / "checkpoints" / name / "model.safetensors"))
        want = load_file(str(ref_run / "checkpoints" / name / "model.safetensors"))
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert (run / "metrics.jsonl").read_text() == (ref_run / "metrics.jsonl").read_text()
    got_result, want_result = (
        {k: v for k, v in json.loads((r / "result.json").read_text()).items() if "time" not in k}
        for r in (run, ref_run)
    )
    assert got_result == want_result
    assert _leftovers(out) == [] and _leftovers(cache) == []
    assert killed >= N_KILLS // 2  # most cycles really interrupted a running process

"""Soak: ``kill -9`` a tiny ``duin finetune`` at 20 random points in a row, resuming each time.

The final weights, metrics and report must equal those of an uninterrupted run, every kill must
land inside a running process, and no temporary file, trash directory or lock may be left
behind. Slow (about 20 process starts);
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


def _completed_steps(run: Path) -> int:
    """Optimizer steps in a run's last checkpoint (0 before the first one)."""
    try:
        state = json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    except (OSError, ValueError):  # not written yet, or being replaced right now
        return 0
    return int(state["global_step"])


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

    # Kill points follow the run's own progress (the steps in its last checkpoint), so that
    # every kill lands inside a running process however fast or slow the machine is. About a
    # quarter of the cycles are killed during start-up (imports, cache, resume): at a random
    # time, or at the latest when the process completes its first step. The others are killed
    # at a random moment of a random later step, at least the second this process runs (so
    # the kill follows its own progress, not the previous checkpoint), spaced so that every
    # cycle fits and none gets within three steps of the end, where a run could finish first.
    ref_run = tmp_path / "ref" / "sub-01" / "seed-5"
    total = _completed_steps(ref_run)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import duin.cli, duin.workflows.finetune"], check=True)
    startup = time.perf_counter() - start
    step_s = max(ref_wall - startup, 1.0) / total
    rng = random.Random(1234)
    kinds = ["startup" if rng.random() < 0.25 else "step" for _ in range(N_KILLS)]
    cap = total - 3
    assert cap >= 2 * kinds.count("step") + kinds.count("startup"), f"only {total} steps"
    out, cache = tmp_path / "soak", tmp_path / "soak-cache"
    run = out / "sub-01" / "seed-5"
    killed, finished_early, points = 0, 0, []
    for i, kind in enumerate(kinds):
        done = _completed_steps(run)
        if kind == "startup":
            target, deadline = done + 1, startup * rng.uniform(0.3, 1.0)
        else:
            n_step, n_startup = kinds[i:].count("step"), kinds[i:].count("startup")
            room = (cap - done - n_startup) // n_step  # steps this cycle may use, >= 2
            target, deadline = done + 2 + rng.randrange(max(1, room - 1)), None
        proc = _finetune(out, cfg, data, cache, resume=True)
        began = time.perf_counter()
        if deadline is not None:
            deadline += began
        while proc.poll() is None:
            done = _completed_steps(run)
            now = time.perf_counter()
            if deadline is None and done >= target - 1:
                deadline = now + rng.uniform(0.0, step_s)  # somewhere inside the target step
            if done >= target or (deadline is not None and now >= deadline):
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
            points.append(f"{kind} {time.perf_counter() - began:.1f}s/{_completed_steps(run)}")
        else:
            finished_early += 1
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode in (0, -signal.SIGKILL), output
    final = _finetune(out, cfg, data, cache, resume=True)
    output = final.communicate(timeout=600)[0]
    assert final.returncode == 0, output
    print(
        f"\nsoak: reference run {ref_wall:.1f} s (start-up {startup:.1f} s, {total} steps); "
        f"{killed} kill -9 (kind, time after start/steps checkpointed: {points}), "
        f"{finished_early} runs finished before their kill"
    )

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
    assert killed == N_KILLS  # every cycle really interrupted a running process

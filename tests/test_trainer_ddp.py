"""The trainer under ``torchrun`` with two CPU processes (gloo): the same result as one process
on the same global batches, same weights on every rank, rank 0 writes the run directory, and a
killed distributed run resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parent / "helpers" / "tiny_training.py"

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _torchrun(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on a free local port
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        str(run_dir),
        "--ddp-dump",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    proc = _torchrun(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_two_ranks_equal_one_process_on_the_same_global_batches(tmp_path):
    # 32 samples, global batch 8: two ranks x 2 accumulated micro-batches of 2, against one
    # process with one batch of 8. Without noise, dropout or BatchNorm the gradients of each
    # step are the same mean over the same 8 samples, so the weights agree to rounding.
    plain = ("--plain", "--n-train", "32")
    ddp = _torchrun(tmp_path / "ddp", *plain)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), str(tmp_path / "one"), "--ddp-dump", "--accum", "1"]
    one = subprocess.run([*cmd, *plain], capture_output=True, text=True, env=env, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    single = load_file(str(tmp_path / "one" / "rank0.safetensors"))
    earlier = load_file(str(tmp_path / "one" / "checkpoints" / "epoch-0001" / "model.safetensors"))
    for rank in (0, 1):
        got = load_file(str(tmp_path / "ddp" / f"rank{rank}.safetensors"))
        assert got.keys() == single.keys()
        for name, tensor in single.items():
            torch.testing.assert_close(got[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    assert any(not torch.equal(earlier[n], single[n]) for n in single)  # it kept training
    steps = [json.loads(line)["step"] for line in (tmp_path / "ddp/metrics.jsonl").open()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "one/metrics.jsonl").open()]


def test_two_ranks_end_with_identical_weights(ddp_run):
    rank0 = load_file(str(ddp_run / "rank0.safetensors"))
    rank1 = load_file(str(ddp_run / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    saved = load_file(str(ddp_run / "checkpoints" / "last" / "model.safetensors"))
    for name, tensor in saved.items():
        assert torch.equal(tensor, rank0[name]), name


def test_rank_zero_writes_one_complete_run_dir(ddp_run):
    records = [json.loads(line) for line in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    # 36 samples, global batch 8 over 2 ranks x 2 accumulation steps: 5 steps per epoch.
    assert records[-1]["step"] == 15
    env = json.loads((ddp_run / "env.json").read_text())
    assert env["world_size"] == 2
    state = json.loads((ddp_run / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["finished"] and len(state["ranks"]) == 2


def test_killed_distributed_run_resumes_exactly(tmp_path, ddp_run):
    run_dir = tmp_path / "run"
    killed = _torchrun(run_dir, "--kill-at-forward", "9")
    assert killed.returncode != 0
    assert (run_dir / "checkpoints" / "last" / "trainer_state.json").is_file()
    resumed = _torchrun(run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "metrics.jsonl").read_text() == (ddp_run / "metrics.jsonl").read_text()
    for rank in (0, 1):
        got = load_file(str(run_dir / f"rank{rank}.safetensors"))
        want = load_file(str(ddp_run / f"rank{rank}.safetensors"))
        for name in want:
            assert torch.equal(got[name], want[name]), (rank, name)

"""SIGKILL a VQ-VAE and an MAE stage run (also while the codex pools vectors for k-means), resume,
and get the weights, codebook and metrics of the uninterrupted run, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parent / "helpers" / "tiny_pretraining.py"


def _run(stage: str, run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), stage, str(run_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / which / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for stage in ("vqvae", "mae"):
        run_dir = tmp_path_factory.mktemp(stage) / "run"
        proc = _run(stage, run_dir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[stage] = run_dir
    return runs


def _assert_same_run(reference: Path, resumed: Path) -> None:
    for which in ("last", "best"):
        want, got = _weights(reference, which), _weights(resumed, which)
        assert got.keys() == want.keys(), which
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), (which, name)
        a = (reference / "checkpoints" / which / "model.safetensors").read_bytes()
        assert (resumed / "checkpoints" / which / "model.safetensors").read_bytes() == a
    assert (resumed / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


def test_vqvae_killed_during_codex_init_and_training_resumes_exactly(tmp_path, uninterrupted):
    # 24 crops, batch 4: 6 training steps + 2 validation forwards per epoch, 3 epochs, a
    # checkpoint after every step. The codex (64 codes) pools 16 vectors per step: k-means runs
    # at step 4. The first kill lands at step 3, the checkpoint of step 2 holds 32 pooled vectors.
    run_dir = tmp_path / "run"
    proc = _run("vqvae", run_dir, "--kill-at-forward", "3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    mid_init = _weights(run_dir)
    assert not bool(mid_init["quantizer.initted"])
    assert mid_init["quantizer.kmeans_pool"].shape == (32, 4)
    for args in (("--kill-at-forward", "5"), ("--kill-at-forward", "9")):  # validation, epoch 1
        proc = _run("vqvae", run_dir, "--resume", *args)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    proc = _run("vqvae", run_dir, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(uninterrupted["vqvae"], run_dir)
    final = _weights(run_dir)
    assert bool(final["quantizer.initted"]) and "quantizer.kmeans_pool" not in final
    # k-means and the EMA changed the codebook from its random start
    assert not torch.equal(final["quantizer.codebook"], mid_init["quantizer.codebook"])


def test_mae_killed_mid_epoch_resumes_exactly(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    # 6 training + 2 validation forwards per epoch: the kill lands in epoch 1, step 9.
    proc = _run("mae", run_dir, "--kill-at-forward", "11")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    proc = _run("mae", run_dir, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(uninterrupted["mae"], run_dir)

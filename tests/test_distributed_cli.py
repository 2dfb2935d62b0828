"""The stage commands under ``torchrun``: two gloo processes through the CLI against one process
on the same global batch (``optim.batch_size`` 8 = 2 processes x 4).

What makes the two runs the same computation, and which settings these tests fix for it:

- batches: the trainer's sampler hands rank ``r`` the ``r``-th contiguous half of each global
  batch of one process, so DDP's gradient mean and the codex's all-gathered k-means pool and
  all-reduced EMA statistics see the one-process batch in its order. Each training set here
  has an even size, so no rank pads its last batch;
- BatchNorm: ``trainer.sync_batchnorm`` (default on) normalises with global-batch statistics
  (:mod:`duin.training.sync_batchnorm` on CPU). Off, each rank normalises its half alone;
- dropout: each rank draws its masks from its own RNG stream, so ``model.attn_dropout`` and
  ``model.ff_dropout`` are 0 here (``cls.model.head_dropout`` is 0 by default);
- MAE masks: also per-rank RNG streams; ``pretrain-mae`` runs through
  ``tests/helpers/duin_keyed_masks.py``, which draws each sample's mask from its own content
  (the real command otherwise);
- ``optim.eps`` 1e-4: the conv biases right before a BatchNorm have an exactly-zero gradient;
  what they receive is float rounding noise, which depends on how the sums are split between
  processes, and AdamW with eps 1e-8 divides it by its own RMS into steps of ~lr. Those
  biases (and through BatchNorm's running means, the eval-mode outputs) then drift apart by
  ~1e-3 in 10 steps; a larger eps leaves such noise-sized updates noise-sized.

With these, losses per epoch, the codex and every weight agree within 1e-5 of their scale.
Shuffling (per epoch), crops and shift augmentation are functions of (seed, epoch, sample),
the same in any number of processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.tiny_recipe import tiny_recipe, tiny_simulation

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

KEYED_MASKS = Path(__file__).resolve().parent / "helpers" / "duin_keyed_masks.py"
TOL = 1e-5

SIMULATION = tiny_simulation(
    seed=5, n_words=4, contacts_per_shaft=[6, 6], pretrain_hours=0.04, oracle_trials_per_word=2
)
TINY = tiny_recipe(
    SIMULATION,
    epochs={"vqvae": 3, "mae": 3, "cls": 3},
    protocol="clean",
    optim={"eps": 1e-4},
    model={"attn_dropout": 0.0, "ff_dropout": 0.0},
    mae={"min_codex_perplexity": 1.0},
    cls={"variant": "scratch"},
)


def _command(nproc: int, program: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, *program]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",  # what the `torchrun` script runs
        "--standalone",  # rendezvous on a free local port
        "--nproc-per-node",
        str(nproc),
        *program,
    ]


def duin(nproc: int, *args: object, script: Path | None = None, **popen) -> subprocess.Popen:
    """Start ``duin ARGS`` in ``nproc`` processes (``-m duin``, or a script wrapping it)."""
    program = [str(script)] if script is not None else ["-m", "duin"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        _command(nproc, [*program, *map(str, args)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **popen,
    )


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def run_ok(nproc: int, *args: object, script: Path | None = None) -> str:
    proc = duin(nproc, *args, script=script)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    from duin.data.simulate import SimulationConfig, simulate_to_disk

    root = tmp_path_factory.mktemp("dist")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY)
    data = simulate_to_disk(root / "data", "npz", SimulationConfig(**SIMULATION))
    return {"root": root, "config": cfg, "data": data}


def common(corpus: dict[str, Path], cache: str) -> list[object]:
    root = corpus["root"]
    return ["--config", corpus["config"], "--data", corpus["data"], "--cache", root / cache]


@pytest.fixture(scope="module")
def vqvae_runs(corpus) -> dict[int, Path]:
    runs = {}
    for nproc in (1, 2):
        runs[nproc] = corpus["root"] / f"vq-{nproc}"
        # Separate caches: the 2-process run builds its own (rank 0 fills it, rank 1 reads it).
        run_ok(nproc, "pretrain-vqvae", "--out", runs[nproc], *common(corpus, f"cache-{nproc}"))
    return runs


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(one: Path, two: Path) -> None:
    """Per-epoch metrics and final weights of two trainer runs agree within TOL of scale."""
    state = json.loads((two / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["micro_batch"] == 4
    assert state["n_train_samples"] % 2 == 0  # no padding: the same global batches
    assert json.loads((two / "env.json").read_text())["world_size"] == 2
    a, b = records(one), records(two)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == list(range(len(a)))
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key, value in ra.items():
            if isinstance(value, float):
                assert rb[key] == pytest.approx(value, rel=TOL, abs=TOL), (ra["epoch"], key)
            else:
                assert rb[key] == value, (ra["epoch"], key)
    wa = load_file(str(one / "checkpoints" / "last" / "model.safetensors"))
    wb = load_file(str(two / "checkpoints" / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name, tensor in wa.items():
        if not tensor.is_floating_point():
            assert torch.equal(tensor, wb[name]), name
            continue
        scale = max(1.0, float(tensor.abs().max()))
        diff = float((tensor.double() - wb[name].double()).abs().max())
        assert diff <= TOL * scale, (name, diff)


def test_pretrain_vqvae_two_processes_equal_one(vqvae_runs):
    one, two = vqvae_runs[1] / "sub-01", vqvae_runs[2] / "sub-01"
    assert_same_training(one, two)
    codex_1 = load_file(str(one / "checkpoints/last/model.safetensors"))["quantizer.codebook"]
    codex_2 = load_file(str(two / "checkpoints/last/model.safetensors"))["quantizer.codebook"]
    torch.testing.assert_close(codex_2, codex_1, rtol=0, atol=TOL)
    # the codex trained (not its initial random unit vectors) and is used
    assert records(two)[-1]["train/codes_used"] >= 2
    # rank 0 alone wrote the run directory: one lock-free, complete set of files
    files = sorted(p.relative_to(vqvae_runs[2]).as_posix() for p in vqvae_runs[2].rglob("*"))
    assert not [f for f in files if f.endswith("duin.lock") or "/." in f], files
    assert (vqvae_runs[2] / "channels.json").is_file() and (vqvae_runs[2] / "data.json").is_file()


def test_pretrain_mae_two_processes_equal_one(corpus, vqvae_runs):
    runs = {}
    for nproc in (1, 2):
        runs[nproc] = corpus["root"] / f"mae-{nproc}"
        run_ok(
            nproc,
            "pretrain-mae",
            "--out",
            runs[nproc],
            "--vqvae",
            vqvae_runs[1],  # one tokenizer for both: only the MAE's training is compared
            *common(corpus, "cache-1"),
            script=KEYED_MASKS,
        )
    assert_same_training(runs[1] / "sub-01", runs[2] / "sub-01")
    assert records(runs[2] / "sub-01")[-1]["val/top1"] > 0


@pytest.fixture(scope="module")
def finetune_runs(corpus) -> dict[int, Path]:
    runs = {}
    for nproc in (1, 2):
        runs[nproc] = corpus["root"] / f"cls-{nproc}"
        output = run_ok(nproc, "finetune", "--out", runs[nproc], *common(corpus, "cache-1"))
        assert output.count("report:") == 1  # printed by rank 0 only
    return runs


def test_finetune_two_processes_equal_one(finetune_runs):
    one, two = (finetune_runs[n] / "sub-01" / "seed-5" for n in (1, 2))
    assert_same_training(one, two)
    r1 = json.loads((one / "result.json").read_text())
    r2 = json.loads((two / "result.json").read_text())
    assert r2["selected_epoch"] == r1["selected_epoch"]
    assert r2["confusion"] == r1["confusion"]
    for key, value in r1["metrics"].items():
        assert r2["metrics"][key] == pytest.approx(value, rel=TOL, abs=TOL), key
    report = json.loads((finetune_runs[2] / "report.json").read_text())
    assert report["n_classes"] == 4


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_killed_two_process_finetune_resumes_exactly(corpus, finetune_runs):
    """SIGKILL both ranks (and torchrun) mid-run, resume: the uninterrupted 2-process result."""
    out = corpus["root"] / "cls-killed"
    args = ["finetune", "--out", out, *common(corpus, "cache-1")]
    # A checkpoint after every step, so the kill lands after some checkpoint, mid-epoch.
    args += ["--set", "trainer.checkpoint_every_steps=1"]
    reference = finetune_runs[2]
    proc = duin(2, *args)
    state = out / "sub-01" / "seed-5" / "checkpoints" / "last" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:  # checkpoints/last is swapped atomically: absent for an instant
            if json.loads(state.read_text())["global_step"] >= 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[0][-4000:]
    workers = children(proc.pid)  # torchrun starts each worker in a session of its own
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (out / "sub-01" / "seed-5" / "result.json").exists()  # killed mid-training
    resumed = duin(2, *args, "--resume")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-4000:]
    got, want = out / "sub-01" / "seed-5", reference / "sub-01" / "seed-5"
    # checkpoint_every_steps changes nothing but when checkpoints are written
    assert (got / "metrics.jsonl").read_text() == (want / "metrics.jsonl").read_text()
    wa = load_file(str(got / "checkpoints" / "last" / "model.safetensors"))
    wb = load_file(str(want / "checkpoints" / "last" / "model.safetensors"))
    for name, tensor in wb.items():
        assert torch.equal(wa[name], tensor), name
    assert (
        json.loads((got / "result.json").read_text())["metrics"]
        == json.loads((want / "result.json").read_text())["metrics"]
    )

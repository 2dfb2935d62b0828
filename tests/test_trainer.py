"""The generic trainer: schedule, parameter groups, data order, selection, exact resume."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from duin.config import OptimConfig, RunConfig, TrainerConfig
from duin.training.schedule import lr_at_epoch, lr_at_step
from duin.training.trainer import (
    EpochBatchSampler,
    Trainer,
    default_param_groups,
)
from duin.utils.io import atomic_dir, recover_dir

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "helpers" / "tiny_training.py"


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 1.0e-5), (19, 2.0e-4), (110, 1.025e-4), (199, 5.015e-6)],
)
def test_epoch_schedule_matches_reference_cls_values(epoch, expected):
    lr = lr_at_epoch(epoch, lr_max=2e-4, lr_min=5e-6, warmup=20, epochs=200)
    assert lr == pytest.approx(expected, rel=1e-3)


def test_epoch_schedule_pretraining_first_epochs():
    assert lr_at_epoch(0, lr_max=3e-4, lr_min=5e-5, warmup=40, epochs=400) == pytest.approx(7.5e-6)
    assert lr_at_epoch(0, lr_max=3e-4, lr_min=5e-5, warmup=80, epochs=800) == pytest.approx(3.75e-6)
    # The cosine starts at lr_max right after warm-up and ends just above lr_min.
    assert lr_at_epoch(40, lr_max=3e-4, lr_min=5e-5, warmup=40, epochs=400) == pytest.approx(3e-4)
    last = lr_at_epoch(399, lr_max=3e-4, lr_min=5e-5, warmup=40, epochs=400)
    assert 5e-5 < last < 5.01e-5


def test_step_schedule_follows_the_epoch_curve():
    kw = {"lr_max": 1e-3, "lr_min": 1e-5, "warmup": 2, "epochs": 10}
    lrs = [lr_at_step(s, steps_per_epoch=5, **kw) for s in range(50)]
    assert lrs[9] == pytest.approx(1e-3)  # end of warm-up
    assert all(a < b for a, b in itertools.pairwise(lrs[:10]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[30] == pytest.approx(lr_at_epoch(6, **kw))
    assert lrs[-1] > 1e-5


# ------------------------------------------------------------------ parameter groups


def test_default_param_groups_exclude_bias_norm_and_frozen():
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    model[2].weight.requires_grad_(False)
    groups = default_param_groups(model, 0.05)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert len(no_decay["params"]) == 4  # linear biases + LayerNorm weight/bias


# ------------------------------------------------------------------------ data order


def test_epoch_batch_sampler_is_deterministic_resumable_and_sharded():
    sampler = EpochBatchSampler(10, 3, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    again = EpochBatchSampler(10, 3, seed=5)
    again.set_epoch(2)
    assert list(again) == full
    again.set_epoch(2, start=2)
    assert list(again) == full[2:]
    again.set_epoch(3)
    assert list(again) != full
    assert sorted(i for b in full for i in b) == list(range(10))

    shards = []
    for rank in range(3):
        s = EpochBatchSampler(10, 2, seed=5, rank=rank, world_size=3)
        s.set_epoch(1)
        shards.append([i for b in s for i in b])
    assert len({len(s) for s in shards}) == 1  # equal work per rank (padded)
    assert set().union(*map(set, shards)) == set(range(10))


# ------------------------------------------------------------------- in-process runs


class _Regression(Dataset):
    def __init__(self, n: int = 16) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, 4, generator=gen)
        self.y = self.x.sum(dim=(1, 2), keepdim=False)[:, None]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "subject": torch.tensor(0), "target": self.y[i]}


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 1)

    def forward(self, x, subject, target):
        pred = self.fc(x.flatten(1))
        return {"loss": ((pred - target) ** 2).mean(), "pred": pred}


def _fit(tmp_path: Path, name: str, **kw):
    optim = kw.pop(
        "optim", OptimConfig(lr=1e-2, lr_min=1e-3, warmup_epochs=1, epochs=3, batch_size=8)
    )
    trainer_cfg = kw.pop("trainer", TrainerConfig(device="cpu", tensorboard=False, log_every=1))
    torch.manual_seed(0)
    model = kw.pop("model", None) or _Linear()
    trainer = Trainer(
        model,
        _Regression(),
        kw.pop("val", _Regression(8)),
        run_dir=tmp_path / name,
        optim=optim,
        trainer=trainer_cfg,
        seed=3,
        quiet=True,
        **kw,
    )
    return model, trainer.fit()


def test_run_dir_layout_and_refusal_to_overwrite(tmp_path):
    config = RunConfig(seed=3)
    _, result = _fit(tmp_path, "run", config=config)
    run = tmp_path / "run"
    for rel in ("config.yaml", "env.json", "metrics.jsonl", "train.log"):
        assert (run / rel).is_file(), rel
    for rel in ("model.safetensors", "config.json", "optimizer.pt", "trainer_state.json"):
        assert (run / "checkpoints" / "last" / rel).is_file(), rel
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 3 and env["device"] == "cpu" and "torch" in env
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert {"lr", "train/loss", "val/loss", "best_epoch", "step"} <= set(records[0])
    assert result.history == records
    assert result.global_step == 6  # 16 samples / batch 8 x 3 epochs
    with pytest.raises(FileExistsError, match="--resume"):
        _fit(tmp_path, "run", config=config)
    # Resuming a finished run is a no-op that reports the same result.
    _, again = _fit(tmp_path, "run", config=config, resume=True)
    assert again.history == records and again.best_epoch == result.best_epoch
    with pytest.raises(ValueError, match="seed"):
        _fit(tmp_path, "run", config=RunConfig(seed=4), resume=True)


def test_from_config_uses_the_run_config(tmp_path):
    config = RunConfig(
        seed=9,
        optim=OptimConfig(lr=1e-2, lr_min=1e-3, warmup_epochs=1, epochs=2, batch_size=4),
        trainer=TrainerConfig(device="cpu", tensorboard=False),
    )
    torch.manual_seed(0)
    trainer = Trainer.from_config(
        _Linear(), _Regression(), _Regression(8), config, run_dir=tmp_path / "r", quiet=True
    )
    result = trainer.fit()
    assert result.global_step == 8 and result.epochs_completed == 2
    assert "seed: 9" in (tmp_path / "r" / "config.yaml").read_text()


def test_selection_ties_keep_earliest_epoch_and_early_stopping(tmp_path):
    calls = []

    def constant(model, batches):
        calls.append(1)
        return {"score": 0.5}

    trainer_cfg = TrainerConfig(
        device="cpu",
        tensorboard=False,
        selection_metric="val/score",
        selection_mode="max",
        early_stopping_patience=2,
    )
    optim = OptimConfig(lr=1e-2, lr_min=1e-3, warmup_epochs=1, epochs=10, batch_size=8)
    _, result = _fit(tmp_path, "ties", evaluate_fn=constant, trainer=trainer_cfg, optim=optim)
    assert result.best_epoch == 0
    assert result.stopped_early and len(result.history) == 3
    assert json.loads((tmp_path / "ties/checkpoints/best/best.json").read_text())["epoch"] == 0


def test_unknown_selection_metric_lists_available(tmp_path):
    cfg = TrainerConfig(device="cpu", tensorboard=False, selection_metric="val/top1")
    with pytest.raises(ValueError, match=r"val/top1.*val/loss"):
        _fit(tmp_path, "bad", trainer=cfg)


def test_gradient_accumulation_keeps_the_effective_batch(tmp_path):
    base = OptimConfig(lr=1e-2, lr_min=1e-3, warmup_epochs=1, epochs=2, batch_size=8)

    def fit(name: str, **optim):
        sizes: list[int] = []

        def forward(model, batch):
            if model.training:  # validation batches go through forward_fn too
                sizes.append(len(batch["x"]))
            return model(**batch)

        model, result = _fit(
            tmp_path, name, optim=dataclasses.replace(base, **optim), forward_fn=forward
        )
        return model, result, sizes

    m1, r1, sizes1 = fit("a1")
    m2, r2, sizes2 = fit("a2", grad_accum_steps=2)
    # 16 samples, 2 epochs: batch 8 in one forward, or in two forwards of 4 each.
    assert sizes1 == [8] * 4
    assert sizes2 == [4] * 8
    assert r1.global_step == r2.global_step == 4  # one optimizer step per 8 samples
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)
    # Stepping after every 4 samples instead is a different optimisation, far from both.
    m3, r3, _ = fit("a3", batch_size=4)
    assert r3.global_step == 8
    pairs = zip(m2.parameters(), m3.parameters(), strict=True)
    gap = max((a - b).abs().max().item() for a, b in pairs)
    assert gap > 1e-3


def test_batch_size_must_split_over_accumulation(tmp_path):
    optim = OptimConfig(
        lr=1e-2, lr_min=1e-3, warmup_epochs=1, epochs=1, batch_size=8, grad_accum_steps=3
    )
    with pytest.raises(ValueError, match="divisible"):
        _fit(tmp_path, "div", optim=optim)


def test_missing_loss_is_a_clear_error(tmp_path):
    class NoLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 1)

        def forward(self, x, subject, target):
            return {"pred": self.fc(x.flatten(1))}

    with pytest.raises(KeyError, match="no 'loss'"):
        _fit(tmp_path, "noloss", model=NoLoss(), val=None)


def test_atomic_dir_swap_recovers_after_interruption(tmp_path):
    target = tmp_path / "last"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("killed")
    assert (target / "a").read_text() == "old"
    assert not list(tmp_path.glob(".tmp-*"))
    # A kill between the two renames of a swap leaves only the trash copy: it is restored.
    os.replace(target, tmp_path / ".trash-last-123")
    assert recover_dir(target) == target and (target / "a").read_text() == "old"


# ------------------------------------------------------- exact resume (subprocesses)


def _run(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _final_state(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    last = run_dir / "checkpoints" / "last"
    state = json.loads((last / "trainer_state.json").read_text())
    for rank in state["ranks"]:
        rank.pop("rng")
    return {
        "weights": (last / "model.safetensors").read_bytes(),
        "tensors": load_file(str(last / "model.safetensors")),
        "best": (run_dir / "checkpoints" / "best" / "model.safetensors").read_bytes(),
        "metrics": (run_dir / "metrics.jsonl").read_text(),
        "state": state,
    }


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = _run(run_dir)
    assert proc.returncode == 0, proc.stderr
    return _final_state(run_dir)


def _assert_same(reference: dict, run_dir: Path) -> None:
    got = _final_state(run_dir)
    for name, tensor in reference["tensors"].items():
        assert torch.equal(tensor, got["tensors"][name]), name
    assert got["weights"] == reference["weights"]
    assert got["best"] == reference["best"]
    assert got["metrics"] == reference["metrics"]
    assert got["state"] == reference["state"]
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert not list((run_dir / "checkpoints").glob(".trash-*"))


def test_sigkill_at_any_point_then_resume_is_bit_identical(tmp_path, reference_run):
    # 36 samples, batch 8 = 2 micro-batches of 4: 9 training forwards + 3 validation
    # forwards per epoch; a checkpoint every 2 steps. Kills land mid-accumulation after a
    # mid-epoch checkpoint, inside validation of a later epoch, and while a checkpoint
    # directory is half written.
    run_dir = tmp_path / "run"
    kills = [
        ("--kill-at-forward", "7"),
        ("--resume", "--kill-at-forward", "9"),
        ("--resume", "--kill-in-save", "3"),
    ]
    for args in kills:
        proc = _run(run_dir, *args)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    proc = _run(run_dir, "--resume")
    assert proc.returncode == 0, proc.stderr
    _assert_same(reference_run, run_dir)
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert "resuming" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_stop_signal_writes_a_checkpoint_and_exits_nonzero(tmp_path, reference_run, sig):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(run_dir), "--sleep", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (metrics.is_file() and metrics.stat().st_size):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert f"interrupted by {signal.Signals(sig).name}" in stderr
    state = json.loads((run_dir / "checkpoints/last/trainer_state.json").read_text())
    assert not state["finished"] and state["global_step"] >= 5
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    proc2 = _run(run_dir, "--resume")
    assert proc2.returncode == 0, proc2.stderr
    _assert_same(reference_run, run_dir)


@pytest.mark.slow
def test_step_schedule_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    assert _run(ref, "--schedule", "step", "--epochs", "2", "--accum", "1").returncode == 0
    run_dir = tmp_path / "run"
    args = ("--schedule", "step", "--epochs", "2", "--accum", "1")
    assert _run(run_dir, *args, "--kill-at-forward", "14").returncode == -signal.SIGKILL
    assert _run(run_dir, *args, "--resume").returncode == 0
    _assert_same(_final_state(ref), run_dir)
    lrs = [json.loads(line)["lr"] for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(lr) for lr in lrs)


# ------------------------------------------------ a registered Du-IN model end to end


class _Trials(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, 200, generator=gen)
        self.label = torch.randint(0, 3, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i):
        return {"x": self.x[i], "subject": torch.tensor(0), "label": self.label[i]}


def test_duin_classifier_crash_and_resume_with_registry_checkpoints(tmp_path):
    from duin.models import registry
    from duin.models.duin import optimizer_param_groups

    class Crash(RuntimeError):
        pass

    def run(name: str, crash_at: int = 0, resume: bool = False):
        torch.manual_seed(0)
        model = registry.create_model(
            "duin_cls", n_channels=4, n_times=200, n_classes=3, n_blocks=1
        )
        calls = {"n": 0}

        def forward(m, batch):
            calls["n"] += 1
            if crash_at and calls["n"] == crash_at:
                raise Crash
            return m(batch["x"], batch["subject"], labels=batch["label"])

        trainer = Trainer(
            model,
            _Trials(24, 1),
            _Trials(8, 2),
            run_dir=tmp_path / name,
            optim=OptimConfig(lr=1e-3, lr_min=1e-4, warmup_epochs=1, epochs=2, batch_size=8),
            trainer=TrainerConfig(device="cpu", tensorboard=False, checkpoint_every_steps=2),
            seed=1,
            forward_fn=forward,
            param_groups_fn=optimizer_param_groups,
            resume=resume,
            quiet=True,
        )
        return trainer.fit()

    reference = run("ref")
    with pytest.raises(Crash):
        run("crashed", crash_at=5)  # epoch 1, after the checkpoint at step 4
    resumed = run("crashed", resume=True)
    assert resumed.history == reference.history
    for sub in ("last", "best"):
        a = (tmp_path / "ref/checkpoints" / sub / "model.safetensors").read_bytes()
        b = (tmp_path / "crashed/checkpoints" / sub / "model.safetensors").read_bytes()
        assert a == b, sub
    model = registry.load_model(resumed.best_dir)  # the checkpoints are duin checkpoints
    assert type(model).__name__ == "DuINClassifier"

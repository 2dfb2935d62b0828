"""The stage commands: --help, fail-fast validation, and SIGTERM during finetune."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from duin.cli import COMMANDS, register
from duin.training.trainer import Trainer
from helpers.tiny_recipe import tiny_recipe, tiny_simulation

SIMULATION = tiny_simulation(
    seed=5, n_words=4, contacts_per_shaft=[6, 6], pretrain_hours=0.0, oracle_trials_per_word=2
)
TINY = tiny_recipe(SIMULATION, epochs={"cls": 40}, cls={"variant": "scratch"})


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    result = CliRunner().invoke(make_app(), [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["finetune", "--set", "optim.lrr=1"], "valid keys under 'optim': lr, lr_min"),
        (["finetune", "--set", "optim.lr=-1"], "lr must be > 0"),
        (["pretrain-vqvae", "--set", "model.n_times=3050"], "multiple of patch_len"),
        (["pretrain-vqvae", "--set", "data.pretrain_data=some"], "valid choices: 'auto', 'rest'"),
        (["finetune", "--set", "variant=best"], "valid choices: 'scratch', 'vqvae'"),
        (["finetune", "--variant", "best"], "valid choices: scratch, vqvae, vqvae+vq, mae"),
        (["finetune", "--variant", "mae"], "needs --init"),
        (["finetune", "--init", "/nonexistent/run"], "not found"),
        (["select-channels", "--set", "data.n_channels=0"], "n_channels must be >= 1"),
        (["demo", "--set", "model.n_blocks=0"], "n_blocks must be a positive integer"),
        (["simulate", "--set", "n_wordz=3"], "did you mean 'n_words'"),
        (["simulate", "--format", "edf"], "valid choices: bids, released, npz"),
        (["finetune", "--data", "/nonexistent/data"], "data source not found"),
    ],
)
def test_bad_values_fail_fast_with_choices(tmp_path, monkeypatch, args, needle):
    def no_training(self):
        raise AssertionError("training started before the bad value was rejected")

    monkeypatch.setattr(Trainer, "fit", no_training)
    out = tmp_path / "run"
    result = CliRunner().invoke(make_app(), [*args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert needle in result.output, result.output
    assert "Traceback" not in result.output
    # rejected before any simulation or training: at most the resolved config is written
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []
    assert set(written) <= {"config.yaml"}, written


def test_mae_needs_a_vqvae_run(tmp_path):
    result = CliRunner().invoke(
        make_app(), ["pretrain-mae", "--out", str(tmp_path / "m"), "--vqvae", str(tmp_path)]
    )
    assert result.exit_code == 1 and "not a 'duin pretrain-vqvae' run" in result.output


def _duin(*args: object, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(  # `python -m duin`, as `torchrun -m duin` runs it
        [sys.executable, "-m", "duin", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kw,
    )


def test_sigterm_during_finetune_leaves_resumable_run(tmp_path):
    import duin
    from duin.data.simulate import SimulationConfig, simulate_to_disk

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    data = simulate_to_disk(tmp_path / "data", "npz", SimulationConfig(**SIMULATION))
    out = tmp_path / "cls"
    args = ["finetune", "--out", out, "--config", cfg, "--data", data, "--cache", tmp_path / "c"]
    proc = _duin(*args)
    run = out / "sub-01" / "seed-5"
    state = run / "checkpoints" / "last" / "trainer_state.json"
    deadline = time.time() + 120
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "--resume" in output
    # the last complete checkpoint loads, and the run is not reported as finished
    model = duin.load_model(run / "checkpoints" / "last")
    assert type(model).__name__ == "DuINClassifier"
    done = json.loads(state.read_text())
    assert not done["finished"]
    assert not (out / "report.json").exists()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) < 40

    proc = _duin(*args, "--resume")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(40))
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"] == "clean" and report["n_classes"] == 4
    assert Path(run / "result.json").is_file()

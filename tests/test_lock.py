"""One writer per run directory: ``duin.lock`` with pid and host."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from duin.cli import app
from duin.utils.lock import LOCK_FILE, RunLockedError, run_lock


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(directory, **info):
    directory.mkdir(parents=True, exist_ok=True)
    info = {"host": socket.gethostname(), "started": None, "time": "then", **info}
    (directory / LOCK_FILE).write_text(json.dumps(info))


def test_lock_holds_pid_and_host_and_is_released(tmp_path):
    with run_lock(tmp_path / "run") as path:
        info = json.loads(path.read_text())
        assert info["host"] == socket.gethostname() and isinstance(info["pid"], int)
        with run_lock(tmp_path / "run"):  # re-entrant in one process
            pass
        assert path.is_file()
    assert not path.exists()
    assert not (tmp_path / "run").exists()  # created for the lock only: removed with it


def test_second_writer_is_refused_naming_the_holder(tmp_path, live_pid):
    _plant(tmp_path / "run", pid=live_pid)
    with pytest.raises(RunLockedError, match=rf"in use by another duin run \(pid {live_pid} on"):
        with run_lock(tmp_path / "run"):
            pass
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == live_pid


def test_other_process_cannot_take_a_held_lock(tmp_path):
    code = (
        "import sys; from duin.utils.lock import run_lock, RunLockedError\n"
        "try:\n    run_lock(sys.argv[1]).__enter__()\n"
        "except RunLockedError as e:\n    print(e); sys.exit(3)\n"
    )
    with run_lock(tmp_path / "run"):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True
        )
    assert proc.returncode == 3, proc.stderr
    assert "in use" in proc.stdout


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_warning(tmp_path, dead_pid, caplog):
    _plant(tmp_path / "run", pid=dead_pid)
    with caplog.at_level(logging.WARNING), run_lock(tmp_path / "run") as path:
        assert json.loads(path.read_text())["pid"] != dead_pid
    assert "stale lock" in caplog.text and str(dead_pid) in caplog.text


def test_reused_pid_is_stale_but_other_host_is_not(tmp_path, live_pid):
    _plant(tmp_path / "a", pid=live_pid, started="1")  # same pid, another process start time
    with run_lock(tmp_path / "a"):
        pass
    _plant(tmp_path / "b", pid=1, host="elsewhere.example")
    with pytest.raises(RunLockedError, match=r"elsewhere\.example"):
        with run_lock(tmp_path / "b"):
            pass


def test_cli_second_run_into_the_same_out_fails_in_one_line(tmp_path, live_pid):
    _plant(tmp_path / "out", pid=live_pid)
    args = ["finetune", "--variant", "scratch", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "duin: error:" in lines[0] and str(live_pid) in lines[0]


def test_trainer_takes_the_lock(tmp_path, live_pid):
    import torch

    from duin.config import OptimConfig, TrainerConfig
    from duin.training.trainer import Trainer

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.ones(2)}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            return {"loss": (x * self.w).sum()}

    _plant(tmp_path / "run", pid=live_pid)
    trainer = Trainer(
        Model(),
        Data(),
        run_dir=tmp_path / "run",
        optim=OptimConfig(epochs=1, batch_size=2, warmup_epochs=0),
        trainer=TrainerConfig(device="cpu", tensorboard=False),
        quiet=True,
    )
    with pytest.raises(RunLockedError):
        trainer.fit()
    (tmp_path / "run" / LOCK_FILE).unlink()
    trainer.fit()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_directory_created_only_for_the_lock_is_removed(tmp_path):
    with pytest.raises(RuntimeError), run_lock(tmp_path / "new"):
        raise RuntimeError("failed before writing anything")
    assert not (tmp_path / "new").exists()
    with run_lock(tmp_path / "kept"):
        (tmp_path / "kept" / "config.yaml").write_text("x")
    assert (tmp_path / "kept" / "config.yaml").is_file()

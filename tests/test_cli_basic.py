"""The ``duin`` command: help, version, one-line errors, config validation before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from duin import __version__
from duin.cli import app, overrides_to_kwargs, resolve_config

runner = CliRunner()


def test_help_lists_global_options_and_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for text in ("--quiet", "--version", "--debug", "convert-reference", "show-config"):
        assert text in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"duin {__version__}"


def test_console_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-c", "from duin.cli import main; main(['--version'])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"duin {__version__}"


def test_python_dash_m_duin_runs_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "duin", "show-config", "--stage", "cls", "--set", "seed=7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "seed: 7" in proc.stdout


def test_config_typo_fails_before_work_with_valid_keys():
    result = runner.invoke(app, ["show-config", "--stage", "cls", "--set", "optim.lrr=1"])
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.count("\n") == 0  # one line, no traceback
    assert line.startswith("duin: error: unknown key 'optim.lrr'")
    assert "valid keys under 'optim': lr, lr_min," in line
    assert "did you mean 'lr'" in line


def test_bad_value_and_bad_config_file_are_one_line_errors(tmp_path):
    result = runner.invoke(app, ["show-config", "--stage", "mae", "--set", "optim.lr=-1"])
    assert result.exit_code == 1 and "lr must be > 0" in result.output
    result = runner.invoke(app, ["show-config", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "config file not found" in result.output
    result = runner.invoke(app, ["show-config", "--stage", "cls", "--set", "trainer.amp=fp8"])
    assert result.exit_code == 1 and "'auto', 'off', 'bf16', 'fp16'" in result.output


def test_debug_shows_the_exception():
    result = runner.invoke(app, ["--debug", "show-config", "--set", "optim.lrr=1"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ValueError)


def test_show_config_resolves_packaged_stage_with_seed():
    result = runner.invoke(
        app, ["show-config", "--config", "paper", "--stage", "vqvae", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "seed: 3" in result.output
    assert "epochs: 400" in result.output and "batch_size: 64" in result.output


def test_resolve_config_and_override_kwargs():
    cfg = resolve_config("quick", ["optim.epochs=2"], stage="cls", seed=5)
    assert cfg.seed == 5 and cfg.optim.epochs == 2 and cfg.optim.lr == pytest.approx(1e-3)
    assert overrides_to_kwargs(["loss=ce", "quantizer.init_mode=first_batch", "n=3"]) == {
        "loss": "ce",
        "quantizer": {"init_mode": "first_batch"},
        "n": 3,
    }


def test_convert_reference_validates_arguments(tmp_path):
    result = runner.invoke(
        app,
        [
            "convert-reference",
            "--model",
            "mae",
            "--weights",
            str(tmp_path / "no.pth"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1
    assert "weights file not found" in result.output
    result = runner.invoke(
        app, ["convert-reference", "--model", "bert", "--weights", "x", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2  # usage error from the option parser
    result = runner.invoke(app, ["convert-reference", "--model", "cls", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--weights" in result.output


def test_convert_reference_parity_weights(parity_dir, tmp_path):
    out = tmp_path / "vqvae"
    result = runner.invoke(
        app,
        [
            "convert-reference",
            "--model",
            "vqvae",
            "-w",
            str(parity_dir / "vqvae_state.npz"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()

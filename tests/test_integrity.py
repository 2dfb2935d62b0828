"""Integrity manifests: tampered checkpoints, trainer state and cache files are refused or rebuilt."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from duin.cli import app
from duin.data.datasets import build_cache
from duin.data.recording import Event, Recording
from duin.models.registry import create_model, load_model, save_model
from duin.utils.integrity import (
    MANIFEST_FILE,
    IntegrityError,
    file_sha256,
    verify_manifest,
    write_manifest,
)


def _tiny_cls():
    return create_model("duin_cls", n_channels=4, n_subjects=1, n_classes=3, n_times=400)


def _zero_payload_bytes(path: Path, n: int = 64) -> None:
    """Zero ``n`` bytes in the middle of a safetensors file's tensor payload (after its header)."""
    raw = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    start = 8 + header_len
    middle = start + (len(raw) - start) // 2
    assert len(raw) - middle > n
    before = bytes(raw[middle : middle + n])
    raw[middle : middle + n] = bytes(n)
    assert bytes(raw[middle : middle + n]) != before  # the payload really changed
    path.write_bytes(bytes(raw))


def test_checkpoint_with_64_zeroed_payload_bytes_is_refused(tmp_path):
    torch.manual_seed(0)
    ckpt = save_model(_tiny_cls(), tmp_path / "ckpt")
    manifest = json.loads((ckpt / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    load_model(ckpt)  # intact: loads
    _zero_payload_bytes(ckpt / "model.safetensors")
    with pytest.raises(IntegrityError, match=r"model\.safetensors") as info:
        load_model(ckpt)
    assert isinstance(info.value, ValueError)
    assert info.value.path == ckpt / "model.safetensors"


def test_tampered_config_and_missing_file_are_named(tmp_path):
    ckpt = save_model(_tiny_cls(), tmp_path / "ckpt")
    config = ckpt / "config.json"
    config.write_text(config.read_text().replace('"n_classes": 3', '"n_classes": 3 '))
    with pytest.raises(IntegrityError, match=r"config\.json"):
        load_model(ckpt)
    ckpt = save_model(_tiny_cls(), tmp_path / "ckpt2")
    (ckpt / "config.json").unlink()
    (ckpt / "config.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"config\.json"):
        verify_manifest(ckpt)


def test_manifest_rejects_paths_outside_and_garbage(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x")
    write_manifest(tmp_path)
    assert verify_manifest(tmp_path) == 1
    (tmp_path / MANIFEST_FILE).write_text(
        json.dumps({"format": "duin-manifest", "algorithm": "sha256", "files": {"../x": "0" * 64}})
    )
    with pytest.raises(IntegrityError, match="outside"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("not json")
    with pytest.raises(IntegrityError, match=MANIFEST_FILE):
        verify_manifest(tmp_path)


def test_old_checkpoint_without_manifest_loads_with_a_warning(tmp_path, caplog):
    ckpt = save_model(_tiny_cls(), tmp_path / "ckpt")
    (ckpt / MANIFEST_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        load_model(ckpt)
    assert "not integrity-checked" in caplog.text
    with pytest.raises(IntegrityError, match="missing"):
        verify_manifest(ckpt, required=True)


def _recording() -> Recording:
    rng = np.random.default_rng(0)
    return Recording(
        signals=rng.normal(0, 1e-5, (3, 20_000)).astype(np.float32),
        sfreq=1000.0,
        ch_names=["A1", "A2", "A3"],
        subject="01",
        run="1",
        task="words",
        events=[Event(1.0, 3.0, "w0")],
        provenance={"source": "integrity test"},
    )


def test_corrupted_cache_entry_is_rebuilt_after_saying_so(tmp_path, caplog):
    first = build_cache([_recording()], tmp_path)
    npy = first.entries[0].path
    good = file_sha256(npy)
    raw = bytearray(npy.read_bytes())
    raw[-64:] = bytes(64)
    npy.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        second = build_cache([_recording()], tmp_path)
    assert second.n_built == 1 and second.n_reused == 0
    assert "integrity" in caplog.text and npy.name in caplog.text
    assert file_sha256(npy) == good
    # a sidecar edited by hand is caught too
    sidecar = npy.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["sfreq"] = 999.0
    sidecar.write_text(json.dumps(meta))
    assert build_cache([_recording()], tmp_path).n_built == 1
    assert build_cache([_recording()], tmp_path).n_reused == 1


def test_verify_command(tmp_path):
    runner = CliRunner()
    ckpt = save_model(_tiny_cls(), tmp_path / "run" / "sub-01" / "checkpoints" / "last")
    build_cache([_recording()], tmp_path / "run" / "cache")
    result = runner.invoke(app, ["verify", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "ok: 4 files in 2 directories" in result.output
    _zero_payload_bytes(ckpt / "model.safetensors")
    result = runner.invoke(app, ["verify", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "model.safetensors" in result.output and "does not match" in result.output
    result = runner.invoke(app, ["verify", str(tmp_path / "nothing")])
    assert result.exit_code == 1


class _Data(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        x = torch.full((4,), float(i))
        return {"x": x, "target": x.sum(0, keepdim=True)}


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x, target):
        return {"loss": ((self.fc(x) - target) ** 2).mean()}


def _trainer(run_dir: Path, epochs: int, resume: bool):
    from duin.config import OptimConfig, TrainerConfig
    from duin.training.trainer import Trainer

    torch.manual_seed(0)
    return Trainer(
        _Linear(),
        _Data(),
        run_dir=run_dir,
        optim=OptimConfig(lr=1e-3, epochs=epochs, batch_size=4, warmup_epochs=0),
        trainer=TrainerConfig(device="cpu", tensorboard=False),
        resume=resume,
        quiet=True,
    )


@pytest.mark.parametrize("victim", ["trainer_state.json", "optimizer.pt", "model.safetensors"])
def test_tampered_trainer_checkpoint_is_refused_on_resume(tmp_path, victim):
    run = tmp_path / "run"
    _trainer(run, epochs=1, resume=False).fit()
    last = run / "checkpoints" / "last"
    assert {"optimizer.pt", "trainer_state.json"} <= set(
        json.loads((last / MANIFEST_FILE).read_text())["files"]
    )
    raw = bytearray((last / victim).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (last / victim).write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=victim):
        _trainer(run, epochs=2, resume=True).fit()


def test_channel_selection_file_is_integrity_checked(tmp_path):
    from duin.workflows.rundir import read_channels, write_channels

    write_channels(tmp_path, {"01": ["A1", "A2"]}, method="test", seed=0)
    assert read_channels(tmp_path) == {"01": ["A1", "A2"]}
    path = tmp_path / "channels.json"
    path.write_text(path.read_text().replace('"A2"', '"A3"'))
    with pytest.raises(IntegrityError, match=r"channels\.json"):
        read_channels(tmp_path)

"""Full disk and read-only output: a clear error naming the file, and no half-written file."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
import torch

from duin.models.registry import create_model, load_model, save_model
from duin.utils.io import atomic_dir, atomic_write_json


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def _entries(directory):
    return sorted(p.name for p in directory.iterdir())


def test_full_disk_keeps_the_old_file_and_names_the_new_one(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"v": 1})
    monkeypatch.setattr("duin.utils.io.os.fsync", _no_space)
    with pytest.raises(OSError, match=r"cannot write .*report\.json: the disk is full") as info:
        atomic_write_json(target, {"v": 2})
    assert info.value.errno == errno.ENOSPC
    assert "\n" not in str(info.value)
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert _entries(tmp_path) == ["report.json"]


def _tiny():
    return create_model("duin_cls", n_channels=4, n_subjects=1, n_classes=3, n_times=400)


def test_full_disk_while_saving_a_checkpoint_leaves_the_old_one(tmp_path, monkeypatch):
    torch.manual_seed(0)
    old = _tiny()
    save_model(old, tmp_path / "ckpt")
    monkeypatch.setattr("safetensors.torch.save_file", _no_space)
    with pytest.raises(OSError, match=r"cannot write .*ckpt: the disk is full"):
        save_model(_tiny(), tmp_path / "ckpt")
    assert _entries(tmp_path) == ["ckpt"]
    loaded = load_model(tmp_path / "ckpt")
    assert torch.equal(loaded.state_dict()["head.4.weight"], old.state_dict()["head.4.weight"])


def test_full_disk_inside_an_atomic_directory(tmp_path, monkeypatch):
    with atomic_dir(tmp_path / "last") as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(OSError, match=r"cannot write .*last: the disk is full"):
        with atomic_dir(tmp_path / "last") as tmp:
            (tmp / "a.txt").write_text("new")
            torch.save({"x": 1}, tmp / "optimizer.pt")
            _no_space()
    assert _entries(tmp_path) == ["last"]
    assert (tmp_path / "last" / "a.txt").read_text() == "old"


def test_read_only_output_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "mkstemp", _read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", _read_only)
    with pytest.raises(OSError, match=r"cannot write .*x\.json: the file system is read-only"):
        atomic_write_json(tmp_path / "x.json", {})
    with pytest.raises(OSError, match=r"cannot write .*ckpt: the file system is read-only"):
        save_model(_tiny(), tmp_path / "ckpt")
    assert _entries(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_by_permissions(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"cannot write .*ckpt: no permission"):
            save_model(_tiny(), locked / "ckpt")
        assert _entries(locked) == []
    finally:
        locked.chmod(0o755)


def test_cli_reports_a_read_only_output_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from duin.cli import app

    monkeypatch.setattr(tempfile, "mkstemp", _read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", _read_only)
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(tmp_path / "sim"), "--preset", "tiny"]
    )
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("duin: error:") and "read-only" in lines[-1], result.output


def test_npy_block_writer_matches_numpy_and_cleans_up_on_a_full_disk(tmp_path, monkeypatch):
    import numpy as np

    from duin.utils.npy import NpyBlockWriter

    data = np.random.default_rng(0).normal(size=(5, 1003)).astype(np.float32)
    writer = NpyBlockWriter(tmp_path / "a.npy", data.shape)
    for start in range(0, 1003, 100):
        writer[:, start : start + 100] = data[:, start : start + 100]
    assert np.array_equal(writer.finish(), data)
    assert _entries(tmp_path) == ["a.npy"]
    writer = NpyBlockWriter(tmp_path / "b.npy", data.shape)
    monkeypatch.setattr("duin.utils.npy.os.pwrite", _no_space)
    with pytest.raises(OSError, match=r"cannot write .*b\.npy: the disk is full"):
        writer[:, 0:100] = data[:, :100]
    assert _entries(tmp_path) == ["a.npy"]

"""The paper's pretraining files: writer, reader, our pipeline on them, the paper's harness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from duin.data.readers.released import (
    load_pickle,
    read_released_pretrain,
    released_pretrain_dir,
)
from duin.data.recording import Event, Recording, RecordingError
from duin.data.splits import pretrain_windows
from duin.data.words import WORDS
from duin.data.writers import write_released, write_released_pretrain

REPO = Path(__file__).resolve().parents[1]
SFREQ = 1000.0
NAMES = ["SM1", "SM2", "SM3", "TI1", "TI2"]


def rest(seconds: float, run: str = "1", subject: str = "01", seed: int = 0) -> Recording:
    """A non-task recording in volts with per-channel offsets and gains."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    gain = np.array([1.0, 2.0, 0.5, 3.0, 1.5])[:, None] * 2e-5
    offset = np.arange(len(NAMES))[:, None] * 1e-5
    x = (rng.standard_normal((len(NAMES), n)) * gain + offset).astype(np.float32)
    return Recording(x, SFREQ, list(NAMES), subject, task="rest", run=run)


def task(n_trials: int = 4, subject: str = "01") -> Recording:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((len(NAMES), 3000 * n_trials)) * 3e-5).astype(np.float32)
    events = [Event(3.0 * k, 3.0, WORDS[k]) for k in range(n_trials)]
    return Recording(x, SFREQ, list(NAMES), subject, events=events, task="words", run="1")


def test_pretrain_files_are_the_papers_cut_zscored_and_read_back(tmp_path):
    recs = [rest(30.0, "1", seed=1), rest(21.5, "2", seed=2)]
    root = write_released([task()], tmp_path, pretrain=recs)
    folder = released_pretrain_dir(root, "01")
    assert folder == root / "data" / "seeg.he2023xuanwu" / "01" / "pretrain" / (
        "dataset.default.1000hz"
    )
    assert load_pickle(folder / "info") == {"ch_names": NAMES}
    files = sorted(folder.glob("*.npy"))
    # 8-s windows every 4 s from 0; tails shorter than a window are dropped.
    assert len(files) == (30 - 8) // 4 + 1 + int((21.5 - 8) // 4) + 1 == 10
    meta = json.loads((folder / "normalization.json").read_text())
    assert (meta["window_s"], meta["step_s"]) == (8.0, 4.0)
    signal = np.concatenate([r.signals for r in recs], axis=1).astype(np.float64)
    mean, std = signal.mean(axis=1), signal.std(axis=1)
    np.testing.assert_allclose(meta["mean"], mean, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(meta["std"], std, rtol=1e-9)
    arrays = [np.load(f, allow_pickle=False) for f in files]
    for a in arrays:
        assert a.shape == (2, len(NAMES), 8000) and a.dtype == np.float32
        assert not a[1].any()  # X_n = zeros
    # Window i of recording 1 is samples 4000 i .. 4000 i + 8000, z-scored with the stats.
    expected = (recs[0].signals[:, 4000:12000] - mean[:, None]) / std[:, None]
    np.testing.assert_allclose(arrays[1][0], expected, rtol=1e-5, atol=1e-5)
    # Consecutive windows overlap by 4 s.
    np.testing.assert_array_equal(arrays[0][0][:, 4000:], arrays[1][0][:, :4000])
    # z-scored with the non-task statistics: every window sample of recording 1 fully covers
    # its first 28 s; the union of windows has mean ~0 and SD ~1 per channel.
    z = np.concatenate([arrays[k][0][:, :4000] for k in range(6)], axis=1)
    assert np.abs(z.mean(axis=1)).max() < 0.1
    np.testing.assert_allclose(z.std(axis=1), 1.0, atol=0.1)

    back = read_released_pretrain(root, "01")
    assert len(back) == len(files)
    assert all(r.subject == "01" and not r.events and r.task == "pretrain" for r in back)
    assert back[0].run == files[0].stem and back[0].sfreq == SFREQ
    np.testing.assert_array_equal(back[3].signals, arrays[3][0])
    picked = read_released_pretrain(root, "01", ch_names=["TI1", "SM2"])
    np.testing.assert_array_equal(picked[0].signals, arrays[0][0][[3, 1]])
    assert read_released_pretrain(root, "02") == []


def test_pretrain_writer_and_reader_refuse_bad_input(tmp_path):
    with pytest.raises(RecordingError, match="has events"):
        write_released_pretrain(task(), tmp_path)
    with pytest.raises(RecordingError, match="sfreq"):
        write_released_pretrain(rest(10.0).replace(sfreq=2000.0), tmp_path)
    with pytest.raises(RecordingError, match="no pretraining recording is 8 s long"):
        write_released_pretrain(rest(7.9), tmp_path)
    other = rest(10.0, "2").replace(ch_names=[n + "x" for n in NAMES])
    with pytest.raises(RecordingError, match="channels differ"):
        write_released_pretrain([rest(10.0), other], tmp_path)
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob(".released.tmp-*"))

    root = write_released_pretrain(rest(12.0), tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_released_pretrain(rest(12.0), root)
    write_released_pretrain(rest(16.0), root, overwrite=True)
    folder = released_pretrain_dir(root, "01")
    assert len(list(folder.glob("*.npy"))) == 3
    with pytest.raises(RecordingError, match="lacks the selected channels"):
        read_released_pretrain(root, "01", ch_names=["nope"])
    np.save(folder / "bad.npy", np.zeros((2, 3, 8000), dtype=np.float32))
    with pytest.raises(RecordingError, match=r"bad\.npy: shape"):
        read_released_pretrain(root, "01")


def test_pipeline_pretrains_on_the_released_pretraining_files(tmp_path):
    from duin.training.stages import DataConfig
    from duin.workflows.prepare import inspect_source, load_recordings

    root = write_released([task()], tmp_path, pretrain=[rest(20.0)])
    loaded = load_recordings(DataConfig(source=str(root)))
    recs = loaded.recordings["01"]
    assert loaded.kind == "released"
    assert [len(r.events) for r in recs] == [4, 0, 0, 0, 0]
    assert [r.n_times for r in recs[1:]] == [8000] * 4  # one recording per 8-s file
    # Our 8-s pretraining windows (one random 4-s crop each per epoch) are exactly the files.
    windows = pretrain_windows(recs[1:], length=8.0)
    assert [(w.start, w.stop) for w in windows] == [(0.0, 8.0)] * 4
    lines = inspect_source(root)["subjects"]["01"]["recordings"]
    assert len(lines) == 2 and lines[1].startswith("4 pretraining files")


def test_paper_window_step_gives_the_files_windows():
    """``data.pretrain_step`` (paper recipe: 4 s) cuts a recording as the writer cuts files."""
    rec = rest(30.0)
    windows = pretrain_windows([rec], length=8.0, step=4.0)
    assert [(w.start, w.stop) for w in windows] == [(4.0 * i, 4.0 * i + 8.0) for i in range(6)]
    back_to_back = pretrain_windows([rec], length=8.0)
    assert [(w.start, w.stop) for w in back_to_back] == [(0.0, 8.0), (8.0, 16.0), (16.0, 30.0)]
    assert [(w.start, w.stop) for w in pretrain_windows([rest(6.0)], length=8.0, step=4.0)] == [
        (0.0, 6.0)
    ]
    with pytest.raises(ValueError, match="step must be > 0"):
        pretrain_windows([rec], length=8.0, step=0.0)


def _harness() -> Path | None:
    env = os.environ.get("DUIN_REFERENCE_CODE")
    code = Path(env) if env else REPO.parent / "shared" / "reference" / "du-in-code"
    harness = code.parent / "harness" / "ref_harness.py"
    return harness if harness.is_file() and (code / "train").is_dir() else None


@pytest.mark.slow
def test_papers_harness_trains_its_vqvae_on_simulated_released_data(tmp_path):
    """The paper's run_vqvae (through the harness) accepts `duin simulate --format released`."""
    harness = _harness()
    if harness is None:
        pytest.skip("the paper's code and harness are not in ../shared/reference")
    pytest.importorskip("einops", reason="the paper's code needs einops")
    from duin.data.simulate import SimulationConfig, simulate_to_disk

    cfg = SimulationConfig.preset("tiny", seed=3, compute_baseline=False)
    root = simulate_to_disk(tmp_path / "sim", "released", cfg)
    channels = load_pickle(released_pretrain_dir(root, "01") / "info")["ch_names"][:10]
    out = tmp_path / "ref"
    cmd = [
        sys.executable,
        str(harness),
        "--data",
        str(root),
        "--subj",
        "01",
        "--stage",
        "vqvae",
        "--epochs-vqvae",
        "1",
        "--seed",
        "42",
        "--out",
        str(out),
        "--channels",
        ",".join(channels),
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    stage = result["stages"]["vqvae"]
    assert stage["epochs"] == 1 and len(stage["per_epoch"]) == 1

"""Readers: arrays, MNE Raw/Epochs, the released layout and BIDS (synthetic inputs, bad input)."""

from __future__ import annotations

import pickle
from pathlib import Path

import mne
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import duin
from duin.data.readers.arrays import read_arrays
from duin.data.readers.bids import read_bids, read_bids_run, read_events_tsv
from duin.data.readers.mne import read_mne
from duin.data.readers.released import list_released_runs, read_released
from duin.data.recording import Event, RecordingError
from duin.data.words import WORDS
from duin.data.writers import write_bids


def test_public_names_are_exported_lazily():
    assert duin.read_arrays is read_arrays
    assert duin.read_mne is read_mne
    assert duin.read_released is read_released
    assert duin.read_bids is read_bids


def test_data_io_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; import duin.data.readers.bids, duin.data.readers.mne, "
        "duin.data.readers.arrays, duin.data.readers.released, duin.data.writers, "
        "duin.data.preprocess; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------- arrays
def test_read_arrays_units_time_axis_and_events():
    x = np.arange(20, dtype=np.float64).reshape(10, 2)  # time-major, microvolts
    rec = read_arrays(
        x,
        100.0,
        ["a", "b"],
        {"onset": [0.01, 0.05], "label": ["吃", "喝"], "duration": [0.02, 0.0]},
        units="uV",
        time_axis=0,
        ch_regions=["STG", "vSMC"],
        bad_channels=["b"],
    )
    assert rec.signals.shape == (2, 10) and rec.signals.dtype == np.float32
    np.testing.assert_allclose(rec.signals, x.T * 1e-6, rtol=1e-6)
    assert rec.events == [Event(0.01, 0.02, "吃"), Event(0.05, 0.0, "喝")]
    assert rec.bad_channels == ["b"] and rec.ch_regions == ["STG", "vSMC"]


def test_read_arrays_keeps_float32_memmap(tmp_path):
    data = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (3, 100))
    data[:] = 1e-6
    rec = read_arrays(data, 10.0, ["a", "b", "c"])
    assert isinstance(rec.signals, np.memmap)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": "furlong"}, "unit"),
        ({"events": [(0.0, 0.0, "banana")], "vocabulary": WORDS}, "banana"),
        ({"events": [(5.0, 0.0, "吃")]}, "outside"),
        ({"events": [("x",)]}, r"events\[0\]"),
        ({"ch_names": ["a"]}, "ch_names"),
    ],
)
def test_read_arrays_bad_input(kwargs, message):
    args = {"signals": np.zeros((2, 10)), "sfreq": 10.0, "ch_names": ["a", "b"], **kwargs}
    with pytest.raises((RecordingError, ValueError), match=message):
        read_arrays(**args)


def test_read_arrays_nan_names_channel():
    x = np.zeros((2, 10))
    x[1, 3] = np.inf
    with pytest.raises(RecordingError, match="'b'"):
        read_arrays(x, 10.0, ["a", "b"])


@settings(max_examples=30, deadline=None)
@given(
    n_channels=st.integers(1, 8),
    n_times=st.integers(2, 300),
    sfreq=st.sampled_from([100.0, 512.0, 1000.0, 2000.0]),
    labels=st.lists(st.sampled_from(WORDS), max_size=5),
    seed=st.integers(0, 1000),
)
def test_read_arrays_round_trip_property(n_channels, n_times, sfreq, labels, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n_channels, n_times)) * 3e-5).astype(np.float32)
    onsets = np.sort(rng.uniform(0, (n_times - 1) / sfreq, len(labels)))
    events = [(float(o), 0.0, lab) for o, lab in zip(onsets, labels, strict=True)]
    names = [f"X{i}" for i in range(n_channels)]
    rec = read_arrays(x, sfreq, names, events, vocabulary=WORDS)
    np.testing.assert_array_equal(rec.signals, x)
    assert sorted(rec.labels) == sorted(labels) and rec.ch_names == names


# ---------------------------------------------------------------------------------------- mne
def _raw(first_samp: int = 0) -> mne.io.RawArray:
    info = mne.create_info(["A1", "A2", "STIM"], 200.0, ["seeg", "seeg", "stim"])
    data = np.random.default_rng(0).standard_normal((3, 2000)) * 1e-5
    raw = mne.io.RawArray(data, info, first_samp=first_samp, verbose="error")
    raw.info["bads"] = ["A2"]
    return raw


@pytest.mark.parametrize("first_samp", [0, 123])
def test_read_mne_raw(first_samp):
    raw = _raw(first_samp)
    raw.set_annotations(
        mne.Annotations([1.0, 2.0, 4.0], [0.5, 0.0, 1.0], ["吃", "New Segment/", "喝"])
    )
    rec = read_mne(raw, subject="07")
    assert rec.ch_names == ["A1", "A2"]  # stim channel left out by default
    np.testing.assert_allclose(rec.signals, raw.get_data(picks=[0, 1]), rtol=1e-6)
    assert rec.events == [Event(1.0, 0.5, "吃"), Event(4.0, 1.0, "喝")]
    assert rec.bad_channels == ["A2"] and rec.subject == "07" and rec.sfreq == 200.0
    assert read_mne(raw, picks=["A1", "STIM"]).ch_names == ["A1", "STIM"]


def test_read_mne_epochs_become_continuous():
    raw = _raw()
    events = np.array([[100, 0, 1], [600, 0, 2], [1100, 0, 1]])
    epochs = mne.Epochs(
        raw, events, {"吃": 1, "喝": 2}, tmin=0.0, tmax=0.995, baseline=None, preload=True,
        verbose="error",
    )  # fmt: skip
    rec = read_mne(epochs)
    assert rec.n_times == 3 * 200
    assert rec.events == [Event(0.0, 1.0, "吃"), Event(1.0, 1.0, "喝"), Event(2.0, 1.0, "吃")]
    np.testing.assert_allclose(rec.signals[:, 200:400], epochs.get_data()[1, :2], rtol=1e-6)


def test_read_mne_errors():
    with pytest.raises(TypeError):
        read_mne(np.zeros(3))
    info = mne.create_info(["M"], 100.0, ["misc"])
    raw = mne.io.RawArray(np.zeros((1, 100)), info, verbose="error")
    with pytest.raises(RecordingError, match="picks"):
        read_mne(raw)
    raw = _raw()
    raw.set_annotations(mne.Annotations([1.0], [0.0], ["banana"]))
    with pytest.raises(ValueError, match="banana"):
        read_mne(raw, vocabulary=WORDS)


# ----------------------------------------------------------------------------------- released
def _write_run(root: Path, subject: str, run: int, names, labels, n_times=3000, seed=0):
    run_dir = root / f"data/seeg.he2023xuanwu/{subject}/word-recitation/run{run}"
    run_dir = run_dir / "dataset.bipolar.default.unaligned"
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    records = [
        {"name": lab, "data_s": rng.standard_normal((len(names), n_times)) * 2e-5} for lab in labels
    ]
    (run_dir / "data").write_bytes(pickle.dumps(records))
    (run_dir / "info").write_bytes(pickle.dumps({"ch_names": list(names)}))
    return records


def test_read_released_concatenates_epochs_and_sorts_runs_numerically(tmp_path):
    names = ["SM8", "SM9", "P4"]
    recs = {}
    for run in (10, 2, 1):
        recs[run] = _write_run(tmp_path, "001", run, names, [WORDS[run], WORDS[0]], seed=run)
    assert list_released_runs(tmp_path, "001") == [1, 2, 10]
    out = read_released(tmp_path, 1)
    assert [r.run for r in out] == ["1", "2", "10"]
    rec = out[2]
    assert rec.sfreq == 1000.0 and rec.n_times == 6000 and rec.ch_names == names
    assert rec.events == [Event(0.0, 3.0, WORDS[10]), Event(3.0, 3.0, WORDS[0])]
    np.testing.assert_allclose(rec.signals[:, 3000:], recs[10][1]["data_s"], rtol=1e-6)
    picked = read_released(tmp_path, "001", runs=[2], ch_names=["P4", "SM8"])[0]
    np.testing.assert_allclose(picked.signals[:, :3000], recs[2][0]["data_s"][[2, 0]], rtol=1e-6)


def test_read_released_bad_input(tmp_path):
    _write_run(tmp_path, "001", 1, ["A1", "A2"], ["吃"])
    _write_run(tmp_path, "001", 2, ["A1", "A3"], ["吃"])
    with pytest.raises(RecordingError, match=r"run2.*ch_names.*differs"):
        read_released(tmp_path, "001")
    with pytest.raises(RecordingError, match=r"info.*'ch_names'.*\['A9'\]"):
        read_released(tmp_path, "001", ch_names=["A1", "A9"])
    assert read_released(tmp_path, "001", ch_names=["A1"])[1].ch_names == ["A1"]
    _write_run(tmp_path, "002", 1, ["A1"], ["吃"])
    _write_run(tmp_path, "002", 2, ["A1"], ["吃"], n_times=1500)
    with pytest.raises(RecordingError, match="sampling rate"):
        read_released(tmp_path, "002")
    _write_run(tmp_path, "003", 1, ["A1"], ["banana"])
    with pytest.raises(ValueError, match=r"data field 'name'.*banana"):
        read_released(tmp_path, "003", vocabulary=WORDS)
    with pytest.raises(FileNotFoundError, match="004"):
        read_released(tmp_path, "004")
    run_dir = tmp_path / "data/seeg.he2023xuanwu/005/word-recitation/run1/x"
    run_dir.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="run1"):
        read_released(tmp_path, "005", variant="x")
    bad = _write_run(tmp_path, "006", 1, ["A1"], ["吃", "喝"])
    bad[1]["data_s"][0, 5] = np.nan
    path = tmp_path / "data/seeg.he2023xuanwu/006/word-recitation/run1"
    path = path / "dataset.bipolar.default.unaligned/data"
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(RecordingError, match=r"record 1 field 'data_s'.*NaN"):
        read_released(tmp_path, "006")
    del bad[1]["name"]
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(RecordingError, match=r"record 1 lacks field 'name'"):
        read_released(tmp_path, "006")


# --------------------------------------------------------------------------------------- bids
def _small_bids(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    recs = [
        read_arrays(
            rng.standard_normal((3, 2000)) * 1e-5,
            1000.0,
            ["A1", "A2", "A3"],
            [(0.5, 1.0, "吃")],
            subject="02",
            task="words",
            run=str(run),
        )
        for run in (1, 2, 10)
    ]
    return write_bids(recs, tmp_path / "bids")


def test_read_bids_returns_runs_in_numeric_order(tmp_path):
    root = _small_bids(tmp_path)
    out = read_bids(root, "02", "words")
    assert [r.run for r in out] == ["1", "2", "10"]
    assert read_bids(root, "sub-02", run=2)[0].run == "2"
    with pytest.raises(RecordingError, match="3 runs match"):
        read_bids_run(root, "02", "words")
    assert read_bids_run(root, "02", "words", run="10").run == "10"


def test_read_bids_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="BIDS root"):
        read_bids(tmp_path / "missing", "01")
    root = _small_bids(tmp_path)
    with pytest.raises(FileNotFoundError, match="sub-03"):
        read_bids(root, "03")
    with pytest.raises(ValueError, match="吃"):
        read_bids(root, "02", run=1, vocabulary=["喝"])
    events = next(root.glob("sub-02/ieeg/*run-1_events.tsv"))
    events.unlink()
    with pytest.raises(FileNotFoundError, match=r"events\.tsv"):
        read_bids(root, "02", run=1, require_events=True)
    # Without events.tsv the BrainVision markers are used.
    assert read_bids(root, "02", run=1)[0].events == [Event(0.5, 1.0, "吃")]
    events.write_text("onset\tduration\ttrial_type\n0.5\tsoon\t吃\n", encoding="utf-8")
    with pytest.raises(RecordingError, match=r"events.tsv: row 2 column 'duration'"):
        read_bids(root, "02", run=1)
    events.write_text("onset\tduration\n0.5\t1\n", encoding="utf-8")
    with pytest.raises(RecordingError, match="trial_type"):
        read_bids(root, "02", run=1)


def test_read_events_tsv_uses_value_and_skips_na(tmp_path):
    path = tmp_path / "x_events.tsv"
    path.write_text("\ufeffonset\tduration\tvalue\n1.0\tn/a\t3\n2.0\t0.5\tn/a\n", encoding="utf-8")
    assert read_events_tsv(path) == [Event(1.0, 0.0, "3")]


def test_read_bids_missing_selected_channel(tmp_path):
    root = _small_bids(tmp_path)
    with pytest.raises(RecordingError, match="A9"):
        read_bids(root, "02", run=1, picks=["A1", "A9"])


# --------------------------------------------------------------------------------- vocabulary
def test_vocabulary_matches_the_reference_label_order():
    from duin.data import words

    assert words.N_WORDS == len(words.WORDS) == 61 and len(set(words.WORDS)) == 61
    assert list(words.WORDS) == sorted(words.WORDS)
    # Spot checks against duin-reference Appendix A.
    for index, word in [(0, "丝瓜"), (1, "你"), (19, "我"), (27, "是"), (51, "醋"), (60, "鱼块")]:
        assert words.WORDS[index] == word and words.word_index(word) == index
    assert words.gloss("醋") == "vinegar"
    assert sum(len(w) == 1 for w in words.WORDS) == 15
    for word in words.WORDS:
        syllables = words.syllables(word)
        assert len(syllables) == len(word)
        for syl in syllables:
            assert syl.initial + syl.final == syl.pinyin and 1 <= syl.tone <= 5 and syl.final
    xin, qing = words.syllables("心情")
    assert (xin.initial, xin.final, xin.tone, qing.initial, qing.final) == (
        "x",
        "in",
        1,
        "q",
        "ing",
    )
    assert words.syllables("吃")[0].initial == "ch"
    with pytest.raises(KeyError, match="banana"):
        words.word_index("banana")

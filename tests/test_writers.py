"""Writers: BIDS (validated by the official bids-validator) and the released layout, round trips."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duin.data.readers.bids import read_bids
from duin.data.readers.released import load_pickle, read_released
from duin.data.recording import Event, Recording, RecordingError
from duin.data.words import WORDS
from duin.data.writers import write_bids, write_released
from helpers.bids_validator import validate

REPO = Path(__file__).resolve().parents[1]


def synthetic(subject: str = "01", run: str | None = "1", n_trials: int = 4, seed: int = 0):
    """Two shafts in two regions, word events back to back (3 s each), one bad contact."""
    rng = np.random.default_rng(seed)
    names = [f"SM{i}" for i in range(1, 5)] + [f"TI'{i}" for i in range(1, 4)]
    sfreq = 1000.0
    x = (rng.standard_normal((len(names), int(3 * sfreq) * n_trials)) * 3e-5).astype(np.float32)
    events = [Event(3.0 * k, 3.0, WORDS[(7 * k + seed) % len(WORDS)]) for k in range(n_trials)]
    coords = np.random.default_rng(99).normal(size=(len(names), 3)) * 0.02  # same every run
    coords[-1] = np.nan  # unknown position
    return Recording(
        x,
        sfreq,
        names,
        subject,
        events=events,
        ch_regions=["vSMC"] * 4 + ["STG"] * 3,
        ch_coords=coords,
        bad_channels=["SM3"],
        task="words",
        run=run,
    )


class _PaperDotDict(dict):
    """What ``utils.DotDict.DotDict`` of the paper's code does: items as attributes."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err


class _PaperUnpickler(pickle.Unpickler):
    """Unpickles as the paper's loaders do, with its DotDict class for ``utils.DotDict``."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("utils.DotDict", "DotDict"):
            return _PaperDotDict
        return super().find_class(module, name)


def assert_same(a: Recording, b: Recording, rtol: float) -> None:
    assert a.ch_names == b.ch_names and a.sfreq == b.sfreq
    np.testing.assert_allclose(b.signals, a.signals, rtol=rtol, atol=0)
    assert [(e.onset, e.duration, e.label) for e in a.events] == [
        (e.onset, e.duration, e.label) for e in b.events
    ]


# ----------------------------------------------------------------------------------------- bids
def test_bids_round_trip_and_validator(tmp_path):
    recs = [synthetic(run="1"), synthetic(run="2", seed=1), synthetic(subject="02", seed=2)]
    root = write_bids(recs, tmp_path / "bids", vocabulary=WORDS)
    back = read_bids(root, "01", "words") + read_bids(root, "02", "words")
    assert [(r.subject, r.run) for r in back] == [("01", "1"), ("01", "2"), ("02", "1")]
    for orig, got in zip(recs, back, strict=True):
        # float32 microvolts: a float32 rounding step (relative 6e-8) each way.
        assert_same(orig, got, rtol=2.5e-7)
        assert got.bad_channels == ["SM3"]
        assert got.ch_regions == orig.ch_regions
        np.testing.assert_allclose(got.ch_coords, orig.ch_coords, rtol=1e-12)
        assert got.task == "words"
    events_tsv = next(root.glob("sub-01/ieeg/*run-1_events.tsv")).read_text(encoding="utf-8")
    assert "trial_type" in events_tsv and recs[0].events[1].label in events_tsv
    channels_tsv = next(root.glob("sub-01/ieeg/*run-1_channels.tsv")).read_text(encoding="utf-8")
    assert "SM3\tSEEG\tµV" in channels_tsv and "\tbad\t" in channels_tsv
    report = validate(root)
    assert report["issues"]["errors"] == [], report["issues"]["errors"]
    assert not list(tmp_path.glob(".bids.tmp-*"))  # staging folder renamed away


def test_bids_writer_refuses_bad_input_and_writes_nothing(tmp_path):
    root = tmp_path / "bids"
    rec = synthetic()
    bad_label = rec.replace(events=[Event(0.0, 1.0, "banana")])
    with pytest.raises(ValueError, match="banana"):
        write_bids([rec, bad_label], root, vocabulary=WORDS)
    with pytest.raises(RecordingError, match="run '1'"):
        write_bids([rec, rec], root)
    with pytest.raises(RecordingError, match="tabs"):
        write_bids(rec.replace(events=[Event(0.0, 1.0, "a\tb")]), root)
    assert not root.exists() and list(tmp_path.iterdir()) == []
    write_bids(rec, root)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_bids(rec, root)
    write_bids(rec.replace(run="7", subject="sub-01"), root, overwrite=True)
    assert [r.run for r in read_bids(root, "01")] == ["7"]


# ------------------------------------------------------------------------------------- released
def test_released_round_trip(tmp_path):
    recs = [synthetic(run="1"), synthetic(run="3", seed=4), synthetic(subject="002", run=None)]
    root = write_released(recs, tmp_path)
    back = read_released(root, "01")
    assert [r.run for r in back] == ["1", "3"]
    for orig, got in zip(recs[:2], back, strict=True):
        assert_same(orig, got, rtol=0)  # float32 -> float64 -> float32 is exact
    assert read_released(root, "002")[0].run == "1"
    # Records and info are the paper's DotDict (its loaders read them by attribute).
    run_dir = root / "data/seeg.he2023xuanwu/01/word-recitation/run1"
    run_dir = run_dir / "dataset.bipolar.default.unaligned"
    with (run_dir / "data").open("rb") as handle:
        records = _PaperUnpickler(handle).load()
    assert type(records[0]) is _PaperDotDict and set(records[0]) == {"name", "data_s"}
    assert records[0].name == recs[0].events[0].label
    assert records[0].data_s.dtype == np.float64 and records[0].data_s.shape == (7, 3000)
    with (run_dir / "info").open("rb") as handle:
        assert _PaperUnpickler(handle).load().ch_names == recs[0].ch_names
    assert load_pickle(run_dir / "info") == {"ch_names": recs[0].ch_names}
    assert not list(root.glob(".released.tmp-*"))


def test_released_epochs_are_cut_at_event_onsets(tmp_path):
    rec = synthetic(n_trials=4).replace(events=[Event(0.5, 0.1, "吃"), Event(7.25, 2.0, "喝")])
    back = read_released(write_released(rec, tmp_path), "01")[0]
    assert back.events == [Event(0.0, 3.0, "吃"), Event(3.0, 3.0, "喝")]
    np.testing.assert_array_equal(back.signals[:, 3000:], rec.signals[:, 7250:10250])


def test_released_writer_refuses_bad_input_and_writes_nothing(tmp_path):
    rec = synthetic()
    short = rec.replace(events=[Event(10.0, 1.0, "吃")])  # needs data up to 13 s, has 12 s
    with pytest.raises(RecordingError, match=r"ends at 12\.000s"):
        write_released([rec.replace(run="2"), short], tmp_path)
    with pytest.raises(RecordingError, match="1000 Hz"):
        write_released(rec.replace(sfreq=2000.0, events=[]), tmp_path)
    with pytest.raises(ValueError, match="banana"):
        write_released(rec.replace(events=[Event(0, 1, "banana")]), tmp_path, vocabulary=WORDS)
    with pytest.raises(RecordingError, match="no events"):
        write_released(rec.replace(events=[]), tmp_path)
    with pytest.raises(RecordingError, match="run 1"):
        write_released([rec, rec], tmp_path)
    assert list(tmp_path.iterdir()) == []
    write_released(rec, tmp_path)
    with pytest.raises(FileExistsError, match="run1"):
        write_released(rec, tmp_path)
    write_released(rec.replace(events=rec.events[:1]), tmp_path, overwrite=True)
    assert len(read_released(tmp_path, "01")[0].events) == 1


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n_channels=st.integers(1, 12),
    labels=st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
    runs=st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True),
    seed=st.integers(0, 10_000),
)
def test_released_round_trip_property(tmp_path_factory, n_channels, labels, runs, seed):
    root = tmp_path_factory.mktemp("released")
    rng = np.random.default_rng(seed)
    recs = []
    for run in runs:
        x = (rng.standard_normal((n_channels, 3000 * len(labels))) * 1e-4).astype(np.float32)
        events = [Event(3.0 * k, 3.0, label) for k, label in enumerate(labels)]
        names = [f"E{i}'" for i in range(n_channels)]
        recs.append(Recording(x, 1000.0, names, "009", events=events, run=str(run)))
    back = read_released(write_released(recs, root, vocabulary=WORDS), "009", vocabulary=WORDS)
    by_run = {int(r.run): r for r in recs}
    assert [int(r.run) for r in back] == sorted(runs)
    for got in back:
        assert_same(by_run[int(got.run)], got, rtol=0)


def test_validator_check_is_not_vacuous(tmp_path):
    root = write_bids(synthetic(), tmp_path / "bids")
    (root / "sub-01" / "ieeg" / "sub-01_notes.txt").write_text("not a BIDS file")
    errors = validate(root)["issues"]["errors"]
    assert any(issue["key"] == "NOT_INCLUDED" for issue in errors)


def test_preprocessed_bipolar_recording_writes_valid_bids_and_released(tmp_path):
    from duin.data.preprocess import PreprocessConfig, preprocess

    rng = np.random.default_rng(5)
    names = [f"SM{i}" for i in range(1, 5)] + [f"TI'{i}" for i in range(1, 4)]
    x = rng.standard_normal((len(names), 2000 * 7)) * 3e-5  # 7 s at 2 kHz
    events = [Event(0.5, 3.0, "吃"), Event(3.5, 3.0, "喝")]
    raw = Recording(x, 2000.0, names, "03", events=events, bad_channels=["TI'2"], run="1")
    rec = preprocess(raw, PreprocessConfig())
    assert rec.ch_names == ["SM1-SM2", "SM2-SM3", "SM3-SM4"] and rec.sfreq == 1000.0
    root = write_bids(rec, tmp_path / "bids")
    assert validate(root)["issues"]["errors"] == []
    assert_same(rec, read_bids(root, "03")[0], rtol=2.5e-7)
    back = read_released(write_released(rec, tmp_path / "released"), "03")[0]
    np.testing.assert_array_equal(back.signals[:, :3000], rec.signals[:, 500:3500])

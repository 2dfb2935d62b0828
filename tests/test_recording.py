"""Recording: validation, transforms, memory-mapped signals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duin.data.recording import Event, Recording, RecordingError


def make(n_channels: int = 4, n_times: int = 1000, sfreq: float = 100.0, **kwargs) -> Recording:
    rng = np.random.default_rng(0)
    kwargs.setdefault("events", [Event(1.0, 0.5, "吃"), Event(0.2, 0.1, "喝")])
    return Recording(
        signals=rng.standard_normal((n_channels, n_times)).astype(np.float32) * 1e-5,
        sfreq=sfreq,
        ch_names=[f"A{i + 1}" for i in range(n_channels)],
        subject="01",
        **kwargs,
    )


def test_basic_properties_and_event_order():
    rec = make()
    assert rec.n_channels == 4 and rec.n_times == 1000 and rec.duration == 10.0
    assert rec.labels == ["喝", "吃"]  # sorted by onset
    assert rec.signals.dtype == np.float32
    assert "4 channels" in rec.summary()


def test_float64_is_converted_and_tuples_become_events():
    rec = Recording(np.zeros((2, 10)), 10.0, ["a", "b"], "s", events=[(0.1, 0.2, "x")])
    assert rec.signals.dtype == np.float32
    assert rec.events == [Event(0.1, 0.2, "x")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"signals": np.zeros(10, dtype=np.float32)}, "2-D"),
        ({"signals": np.zeros((0, 10), dtype=np.float32)}, "empty"),
        ({"sfreq": 0.0}, "sfreq"),
        ({"ch_names": ["A1", "A2", "A3"]}, "ch_names"),
        ({"ch_names": ["A1", "A1", "A2", "A3"]}, "duplicate"),
        ({"ch_regions": ["x"]}, "ch_regions"),
        ({"ch_coords": np.zeros((4, 2))}, "ch_coords"),
        ({"bad_channels": ["Z9"]}, "bad_channels"),
        ({"events": [Event(9.9, 1.0, "late")]}, "outside"),
        ({"events": [Event(-1.0, 0.0, "early")]}, "outside"),
        ({"events": [Event(1.0, -1.0, "neg")]}, "invalid"),
    ],
)
def test_invalid_fields_raise(change, message):
    rec = make()
    with pytest.raises(RecordingError, match=message):
        rec.replace(**change)


def test_nan_is_reported_with_channel_and_sample():
    signals = np.zeros((3, 50), dtype=np.float32)
    signals[1, 17] = np.nan
    with pytest.raises(RecordingError, match=r"'b'.*sample 17"):
        Recording(signals, 10.0, ["a", "b", "c"], "01")


def test_pick_drop_crop():
    rec = make(ch_regions=["r1", "r2", "r3", "r4"], ch_coords=np.eye(4, 3), bad_channels=["A2"])
    picked = rec.pick(["A3", "A2"])
    assert picked.ch_names == ["A3", "A2"] and picked.ch_regions == ["r3", "r2"]
    np.testing.assert_array_equal(picked.signals, rec.signals[[2, 1]])
    assert picked.bad_channels == ["A2"]
    dropped = rec.drop_channels(rec.bad_channels)
    assert "A2" not in dropped.ch_names and dropped.bad_channels == []
    with pytest.raises(RecordingError, match="missing"):
        rec.pick(["nope"])
    cropped = rec.crop(0.5, 2.0)
    assert cropped.n_times == 150 and cropped.events == [Event(0.5, 0.5, "吃")]
    # The original is untouched.
    assert rec.n_times == 1000 and len(rec.events) == 2


def test_memmap_signals_stay_memmapped(tmp_path):
    path = tmp_path / "x.npy"
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(2, 100))
    data[:] = 1e-6
    data.flush()
    rec = Recording(np.load(path, mmap_mode="r"), 10.0, ["a", "b"], "01")
    assert isinstance(rec.signals, np.memmap)


@settings(max_examples=25, deadline=None)
@given(
    n_channels=st.integers(1, 6),
    n_times=st.integers(1, 200),
    sfreq=st.floats(1.0, 5000.0),
    seed=st.integers(0, 2**16),
)
def test_replace_round_trip_keeps_everything(n_channels, n_times, sfreq, seed):
    rng = np.random.default_rng(seed)
    signals = rng.standard_normal((n_channels, n_times)).astype(np.float32)
    onset = float(rng.uniform(0, n_times / sfreq))
    rec = Recording(
        signals, sfreq, [f"c{i}" for i in range(n_channels)], "7", events=[(onset, 0.0, "w")]
    )
    copy = rec.replace()
    np.testing.assert_array_equal(copy.signals, rec.signals)
    assert copy.ch_names == rec.ch_names and copy.events == rec.events

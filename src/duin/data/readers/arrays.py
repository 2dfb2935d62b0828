"""Build a :class:`Recording` from numpy arrays (signals, sampling rate, names, events)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from duin.data.recording import Event, Recording, RecordingError
from duin.data.words import check_labels

__all__ = ["UNIT_SCALES", "parse_events", "read_arrays"]

#: Multiply by these to convert a signal unit to volts.
UNIT_SCALES: dict[str, float] = {
    "V": 1.0,
    "mV": 1e-3,
    "uV": 1e-6,
    "µV": 1e-6,
    "μV": 1e-6,
    "nV": 1e-9,
}

EventsLike = (
    Sequence[Event] | Sequence[tuple[float, float, str]] | Mapping[str, Sequence[Any]] | None
)


def parse_events(events: EventsLike, where: str = "events") -> list[Event]:
    """Normalise events given as Events, ``(onset, duration, label)`` tuples or a column mapping.

    Parameters
    ----------
    events : sequence or mapping or None
        A sequence of :class:`Event` / ``(onset, duration, label)`` tuples, or a mapping with
        equal-length columns ``onset``, ``label`` and optionally ``duration`` (default 0).
    where : str
        Name used in error messages.

    Returns
    -------
    list of Event
    """
    if events is None:
        return []
    if isinstance(events, Mapping):
        for key in ("onset", "label"):
            if key not in events:
                raise RecordingError(f"{where}: mapping lacks column {key!r}")
        onsets = list(events["onset"])
        labels = list(events["label"])
        durations = list(events.get("duration", [0.0] * len(onsets)))
        if not len(onsets) == len(labels) == len(durations):
            raise RecordingError(f"{where}: columns onset/duration/label differ in length")
        return [
            Event(float(o), float(d), str(lab))
            for o, d, lab in zip(onsets, durations, labels, strict=True)
        ]
    out = []
    for i, ev in enumerate(events):
        if isinstance(ev, Event):
            out.append(ev)
            continue
        try:
            onset, duration, label = ev
            out.append(Event(float(onset), float(duration), str(label)))
        except (TypeError, ValueError) as exc:
            raise RecordingError(
                f"{where}[{i}]: expected (onset, duration, label), got {ev!r}"
            ) from exc
    return out


def read_arrays(
    signals: np.ndarray,
    sfreq: float,
    ch_names: Sequence[str],
    events: EventsLike = None,
    *,
    subject: str = "01",
    units: str = "V",
    ch_regions: Sequence[str] | None = None,
    ch_coords: np.ndarray | None = None,
    bad_channels: Iterable[str] = (),
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    vocabulary: Iterable[str] | None = None,
    time_axis: int = 1,
) -> Recording:
    """Wrap arrays in a validated :class:`Recording`.

    Parameters
    ----------
    signals : numpy.ndarray
        ``(n_channels, n_times)`` (or ``(n_times, n_channels)`` with ``time_axis=0``). A float32
        ``numpy.memmap`` in volts is kept as is (no copy).
    sfreq : float
        Sampling rate in Hz.
    ch_names : sequence of str
        One unique name per channel.
    events : sequence or mapping, optional
        See :func:`parse_events`; onsets/durations in seconds.
    subject : str
        Subject identifier.
    units : str
        Unit of ``signals``: one of :data:`UNIT_SCALES` (converted to volts).
    ch_regions : sequence of str, optional
        Anatomical region per channel.
    ch_coords : numpy.ndarray, optional
        ``(n_channels, 3)`` coordinates in metres.
    bad_channels : iterable of str
        Channels marked bad.
    session, task, run : str, optional
        BIDS-style entities.
    vocabulary : iterable of str, optional
        Allowed event labels; others raise.
    time_axis : int
        Axis of ``signals`` that is time (1, or 0 for time-major arrays).

    Returns
    -------
    Recording

    Raises
    ------
    RecordingError
        Unknown unit, inconsistent shapes, NaN/Inf, events outside the recording or labels
        outside ``vocabulary``.
    """
    if units not in UNIT_SCALES:
        raise RecordingError(f"units: unknown unit {units!r}, expected one of {list(UNIT_SCALES)}")
    if time_axis not in (0, 1):
        raise RecordingError(f"time_axis must be 0 or 1, got {time_axis}")
    data = signals if isinstance(signals, np.memmap) else np.asarray(signals)
    if data.ndim != 2:
        raise RecordingError(f"signals: expected a 2-D array, got shape {data.shape}")
    if time_axis == 0:
        data = data.T
    scale = UNIT_SCALES[units]
    keep_as_is = isinstance(data, np.memmap) and data.dtype == np.float32 and scale == 1.0
    if not keep_as_is:
        data = np.ascontiguousarray(data, dtype=np.float64) * scale
        data = data.astype(np.float32)
    parsed = parse_events(events)
    check_labels([ev.label for ev in parsed], vocabulary, "events label")
    return Recording(
        signals=data,
        sfreq=float(sfreq),
        ch_names=list(ch_names),
        subject=subject,
        events=parsed,
        ch_regions=None if ch_regions is None else list(ch_regions),
        ch_coords=None if ch_coords is None else np.asarray(ch_coords, dtype=np.float64),
        bad_channels=list(bad_channels),
        session=session,
        task=task,
        run=run,
        provenance={"source": "arrays", "reader": "read_arrays", "units": units},
    )

"""The one in-memory type every reader returns: a continuous multichannel recording.

A :class:`Recording` holds float32 signals ``(n_channels, n_times)`` in volts with their sampling
rate, channel names, optional anatomical regions and coordinates, bad channels, annotated events
(onset and duration in seconds, a text label) and where the data came from. It is validated on
construction so that everything downstream can trust its shape and contents.

Signals may be a ``numpy.memmap`` so that multi-hour recordings never need to fit in memory;
methods that transform a recording return a new one and never modify the original.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duin.utils.npy import release_pages

__all__ = ["Event", "Recording", "RecordingError"]

# Finite-value checks read the signals in blocks of this many samples so a memory-mapped
# multi-hour recording is never loaded whole.
_CHECK_BLOCK = 1_000_000


class RecordingError(ValueError):
    """A recording (or the file it came from) does not hold what duin expects."""


@dataclass(frozen=True)
class Event:
    """One annotated interval of a recording.

    Parameters
    ----------
    onset : float
        Start, in seconds from the first sample of the recording.
    duration : float
        Length in seconds (0 for an instantaneous marker).
    label : str
        What happened, e.g. the word that was read.
    """

    onset: float
    duration: float
    label: str


@dataclass
class Recording:
    """A continuous multichannel sEEG/ECoG recording.

    Parameters
    ----------
    signals : numpy.ndarray
        float32 array ``(n_channels, n_times)`` in volts (a ``numpy.memmap`` is kept as is).
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str
        Unique channel names, one per row of ``signals``.
    subject : str
        Subject identifier (e.g. ``"01"``).
    events : list of Event
        Annotated intervals, sorted by onset; each must lie within the recording.
    ch_regions : list of str or None
        Anatomical region of each channel (e.g. ``"vSMC"``, ``"STG"``), when known.
    ch_coords : numpy.ndarray or None
        ``(n_channels, 3)`` electrode coordinates in metres, when known (NaN where unknown).
    bad_channels : list of str
        Names of channels marked bad (they stay in ``signals``; selection decides what to use).
    session, task, run : str or None
        Optional BIDS-style entities.
    provenance : dict
        Free-form description of the source (reader, file paths, preprocessing applied).

    Raises
    ------
    RecordingError
        If any field is inconsistent (shapes, names, non-finite values, events outside the
        recording, non-positive sampling rate).
    """

    signals: np.ndarray
    sfreq: float
    ch_names: list[str]
    subject: str
    events: list[Event] = field(default_factory=list)
    ch_regions: list[str] | None = None
    ch_coords: np.ndarray | None = None
    bad_channels: list[str] = field(default_factory=list)
    session: str | None = None
    task: str | None = None
    run: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.signals, np.memmap):
            self.signals = np.asarray(self.signals)
        self.ch_names = [str(name) for name in self.ch_names]
        self.events = sorted(
            (ev if isinstance(ev, Event) else Event(*ev) for ev in self.events),
            key=lambda ev: (ev.onset, ev.label),
        )
        if self.ch_regions is not None:
            self.ch_regions = [str(region) for region in self.ch_regions]
        if self.ch_coords is not None:
            self.ch_coords = np.asarray(self.ch_coords, dtype=np.float64)
        self.bad_channels = [str(name) for name in self.bad_channels]
        self.subject = str(self.subject)
        self.validate(check_finite=True)

    # ------------------------------------------------------------------ validation
    def _where(self) -> str:
        source = self.provenance.get("source")
        return f"recording of subject {self.subject!r}" + (f" ({source})" if source else "")

    def validate(self, check_finite: bool = True) -> None:
        """Check every field; raise :class:`RecordingError` naming the bad one.

        Parameters
        ----------
        check_finite : bool
            Also scan the signals for NaN/Inf (block-wise, so memory stays bounded).
        """
        where = self._where()
        if self.signals.ndim != 2:
            raise RecordingError(
                f"{where}: signals must be 2-D (n_channels, n_times), got shape {self.signals.shape}"
            )
        if self.signals.dtype != np.float32:
            if isinstance(self.signals, np.memmap):
                raise RecordingError(f"{where}: memory-mapped signals must be float32")
            self.signals = self.signals.astype(np.float32)
        n_channels, n_times = self.signals.shape
        if n_channels == 0 or n_times == 0:
            raise RecordingError(f"{where}: signals are empty, shape {self.signals.shape}")
        if not np.isfinite(self.sfreq) or self.sfreq <= 0:
            raise RecordingError(f"{where}: sfreq must be a positive number, got {self.sfreq}")
        if len(self.ch_names) != n_channels:
            raise RecordingError(
                f"{where}: ch_names has {len(self.ch_names)} names for {n_channels} signal rows"
            )
        if len(set(self.ch_names)) != n_channels:
            dupes = sorted({n for n in self.ch_names if self.ch_names.count(n) > 1})
            raise RecordingError(f"{where}: duplicate channel names {dupes}")
        if self.ch_regions is not None and len(self.ch_regions) != n_channels:
            raise RecordingError(
                f"{where}: ch_regions has {len(self.ch_regions)} entries for {n_channels} channels"
            )
        if self.ch_coords is not None and self.ch_coords.shape != (n_channels, 3):
            raise RecordingError(
                f"{where}: ch_coords must have shape ({n_channels}, 3), got {self.ch_coords.shape}"
            )
        unknown_bad = sorted(set(self.bad_channels) - set(self.ch_names))
        if unknown_bad:
            raise RecordingError(f"{where}: bad_channels {unknown_bad} are not in ch_names")
        duration = n_times / self.sfreq
        for ev in self.events:
            if not (np.isfinite(ev.onset) and np.isfinite(ev.duration)) or ev.duration < 0:
                raise RecordingError(f"{where}: event {ev} has an invalid onset or duration")
            # Allow one sample of rounding slack at the end.
            if ev.onset < 0 or ev.onset + ev.duration > duration + 1.0 / self.sfreq:
                raise RecordingError(
                    f"{where}: event {ev.label!r} at {ev.onset:.3f}s (+{ev.duration:.3f}s) lies "
                    f"outside the recording (0 to {duration:.3f}s)"
                )
        if check_finite:
            for start in range(0, n_times, _CHECK_BLOCK):
                block = self.signals[:, start : start + _CHECK_BLOCK]
                finite = bool(np.isfinite(block).all())
                release_pages(self.signals)  # RSS must not grow with a memory-mapped file
                if not finite:
                    bad_rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
                    first = bad_rows[0]
                    col = start + int(np.flatnonzero(~np.isfinite(block[first]))[0])
                    raise RecordingError(
                        f"{where}: signals contain NaN/Inf (channel {self.ch_names[first]!r}, "
                        f"sample {col}); clean or drop them before use"
                    )

    # ------------------------------------------------------------------ properties
    @property
    def n_channels(self) -> int:
        """Number of channels (rows of ``signals``)."""
        return int(self.signals.shape[0])

    @property
    def n_times(self) -> int:
        """Number of samples (columns of ``signals``)."""
        return int(self.signals.shape[1])

    @property
    def duration(self) -> float:
        """Length of the recording in seconds."""
        return self.n_times / self.sfreq

    @property
    def labels(self) -> list[str]:
        """Event labels in onset order."""
        return [ev.label for ev in self.events]

    # ------------------------------------------------------------------ transforms
    def replace(self, **changes: Any) -> Recording:
        """Return a copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def pick(self, ch_names: Sequence[str]) -> Recording:
        """Return the recording restricted to ``ch_names``, in that order.

        Parameters
        ----------
        ch_names : sequence of str
            Channels to keep; every name must exist.

        Returns
        -------
        Recording
            A new recording whose rows follow ``ch_names``.

        Raises
        ------
        RecordingError
            Naming every requested channel the recording does not have.
        """
        missing = [name for name in ch_names if name not in self.ch_names]
        if missing:
            raise RecordingError(
                f"{self._where()}: channels {missing} are missing (the recording has "
                f"{len(self.ch_names)} channels: {self.ch_names[:8]}{'...' if self.n_channels > 8 else ''})"
            )
        index = [self.ch_names.index(name) for name in ch_names]
        return self.replace(
            signals=np.ascontiguousarray(self.signals[index]),
            ch_names=list(ch_names),
            ch_regions=None if self.ch_regions is None else [self.ch_regions[i] for i in index],
            ch_coords=None if self.ch_coords is None else self.ch_coords[index],
            bad_channels=[name for name in self.bad_channels if name in ch_names],
        )

    def drop_channels(self, ch_names: Iterable[str]) -> Recording:
        """Return the recording without ``ch_names`` (e.g. ``rec.drop_channels(rec.bad_channels)``)."""
        drop = set(ch_names)
        return self.pick([name for name in self.ch_names if name not in drop])

    def crop(self, tmin: float, tmax: float) -> Recording:
        """Return the samples in ``[tmin, tmax)`` seconds; events are shifted and clipped to it."""
        if not 0 <= tmin < tmax:
            raise RecordingError(f"{self._where()}: invalid crop window [{tmin}, {tmax})")
        start = int(round(tmin * self.sfreq))
        stop = min(int(round(tmax * self.sfreq)), self.n_times)
        t0, t1 = start / self.sfreq, stop / self.sfreq
        events = [
            Event(ev.onset - t0, ev.duration, ev.label)
            for ev in self.events
            if ev.onset >= t0 and ev.onset + ev.duration <= t1
        ]
        return self.replace(signals=np.array(self.signals[:, start:stop]), events=events)

    def summary(self) -> str:
        """One-paragraph human-readable description (used by ``duin inspect``)."""
        labels = self.labels
        regions = (
            {r: self.ch_regions.count(r) for r in dict.fromkeys(self.ch_regions)}
            if self.ch_regions
            else {}
        )
        parts = [
            f"subject {self.subject}"
            + (f", task {self.task}" if self.task else "")
            + (f", run {self.run}" if self.run else ""),
            f"{self.n_channels} channels x {self.n_times} samples at {self.sfreq:g} Hz "
            f"({self.duration:.1f} s)",
            f"{len(labels)} events, {len(set(labels))} distinct labels",
        ]
        if regions:
            parts.append("regions: " + ", ".join(f"{r} ({n})" for r, n in regions.items()))
        if self.bad_channels:
            parts.append(f"bad channels: {self.bad_channels}")
        return "; ".join(parts)

"""A ring buffer of stream samples addressed by absolute sample index, with its gaps.

Samples are numbered from the first one the stream delivered (index 0). Missing samples
(detected from the timestamps) keep their place in the numbering: they are filled (linear
interpolation, so filters see no step) and recorded as gaps, so that a window which needs
them can be skipped with a reason instead of decoded from made-up data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Gap", "RingBuffer", "find_gaps"]


@dataclass(frozen=True)
class Gap:
    """Samples ``[start, start + n_missing)`` never arrived (their values are interpolated)."""

    start: int
    n_missing: int

    def overlaps(self, start: int, stop: int) -> bool:
        """Whether any missing sample lies in ``[start, stop)``."""
        return self.start < stop and start < self.start + self.n_missing


def find_gaps(timestamps: np.ndarray, previous: float | None, sfreq: float) -> np.ndarray:
    """Missing samples before each received sample, from the timestamp steps.

    Parameters
    ----------
    timestamps : numpy.ndarray
        ``(n,)`` LSL timestamps of the received samples, in seconds.
    previous : float or None
        Timestamp of the sample received just before (None at the start of the stream).
    sfreq : float
        Nominal sampling rate in Hz.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int: how many samples are missing just before each one (a step of more than
        1.5 sample periods; jitter below that is not a gap).
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    steps = np.diff(ts, prepend=ts[0] if previous is None else previous)
    return np.maximum(np.rint(steps * sfreq).astype(np.int64) - 1, 0)


class RingBuffer:
    """The last ``capacity`` samples of ``n_rows`` signals (float64) and their timestamps.

    Parameters
    ----------
    n_rows : int
        Signals per sample.
    capacity : int
        Samples kept.
    """

    def __init__(self, n_rows: int, capacity: int) -> None:
        self.capacity = int(capacity)
        self.data = np.zeros((n_rows, self.capacity))  # (n_rows, capacity)
        self.times = np.zeros(self.capacity)  # (capacity,)
        self.n_written = 0  # absolute index of the next sample
        self.gaps: list[Gap] = []

    @property
    def first(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self.n_written - self.capacity)

    def append(self, block: np.ndarray, times: np.ndarray) -> None:
        """Append ``(n_rows, n)`` samples with their ``(n,)`` timestamps."""
        n = block.shape[1]
        if n >= self.capacity:
            block, times = block[:, -self.capacity :], times[-self.capacity :]
            self.n_written += n - self.capacity
            n = self.capacity
        pos = self.n_written % self.capacity
        head = min(n, self.capacity - pos)
        self.data[:, pos : pos + head] = block[:, :head]
        self.times[pos : pos + head] = times[:head]
        self.data[:, : n - head] = block[:, head:]
        self.times[: n - head] = times[head:]
        self.n_written += n

    def add_gap(self, start: int, n_missing: int) -> None:
        """Record that ``n_missing`` samples from ``start`` on were filled, not received."""
        self.gaps.append(Gap(start, n_missing))
        # gaps older than the buffer can no longer affect a window
        self.gaps = [g for g in self.gaps if g.start + g.n_missing > self.first]

    def get(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` (absolute indices) as a new ``(n_rows, stop - start)`` array."""
        if start < self.first or stop > self.n_written:
            raise IndexError(
                f"samples [{start}, {stop}) are not in the buffer [{self.first}, {self.n_written})"
            )
        idx = np.arange(start, stop) % self.capacity
        return self.data[:, idx]

    def gap_in(self, start: int, stop: int) -> Gap | None:
        """The first gap with a missing sample in ``[start, stop)``, if any."""
        return next((g for g in self.gaps if g.overlaps(start, stop)), None)

    def position(self, timestamp: float, sfreq: float) -> float | None:
        """Fractional sample index of a timestamp (None until a sample at or after it arrived).

        The position is counted from the last sample at or before ``timestamp`` at the nominal
        rate, so it is exact for regularly stamped streams and robust to gaps elsewhere.
        """
        if self.n_written == 0 or self.times[(self.n_written - 1) % self.capacity] < timestamp:
            return None
        idx = np.arange(self.first, self.n_written)
        times = self.times[idx % self.capacity]
        k = int(np.searchsorted(times, timestamp, side="right")) - 1
        if k < 0:  # before the oldest sample held: extrapolate backwards from it
            return float(idx[0] + (timestamp - times[0]) * sfreq)
        return float(idx[k] + (timestamp - times[k]) * sfreq)

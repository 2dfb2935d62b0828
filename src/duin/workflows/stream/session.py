"""``duin stream``: decode a live LSL stream, or replay a recording through LSL and decode it.

One loop serves both: poll the marker and signal inlets, hand chunks to a
:class:`~duin.workflows.stream.online.StreamDecoder`, write each decision as CSV rows (flushed,
so the file can be followed while it grows) and as a JSON sample on the ``duin-words`` outlet.
Ctrl-C ends it cleanly: pending windows whose samples have all arrived are decided, the others
are written as skipped, and the CSV is complete before ``KeyboardInterrupt`` propagates.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from duin.workflows.stream.lsl import Replayer, open_inlet, words_outlet
from duin.workflows.stream.online import STREAM_COLUMNS, Classifier, Decision, StreamDecoder

__all__ = ["StreamResult", "replay", "replay_recordings", "stream"]

logger = logging.getLogger(__name__)


@dataclass
class StreamResult:
    """What a stream session did.

    Parameters
    ----------
    n_decisions, n_skipped : int
        Windows decoded and skipped.
    latencies_ms : list of float
        Latency of each decision.
    model_ms : list of float
        The classifier's forward pass, part of each latency.
    lookahead_ms : float
        Look-ahead of the decoder (0 for causal runs).
    n_missing : int
        Samples that never arrived (gaps in the timestamps).
    interrupted : bool
        Ended by Ctrl-C.
    """

    n_decisions: int = 0
    n_skipped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)
    lookahead_ms: float = 0.0
    n_missing: int = 0
    interrupted: bool = False

    def add(self, dec: StreamDecoder) -> None:
        """Add one decoder's counts."""
        self.n_decisions += dec.n_decisions
        self.n_skipped += dec.n_skipped
        self.latencies_ms.extend(dec.latencies_ms)
        self.model_ms.extend(dec.model_ms)
        self.n_missing += dec.n_missing
        self.lookahead_ms = 1e3 * dec.pre.lookahead / dec.sfreq

    def summary(self) -> str:
        """One line for the terminal."""
        text = f"{self.n_decisions} decision(s), {self.n_skipped} skipped"
        if self.latencies_ms:
            lat = np.asarray(self.latencies_ms)
            text += (
                f"; latency median {np.median(lat):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms, "
                f"max {lat.max():.1f} ms"
            )
        if self.n_missing:
            text += f"; {self.n_missing} sample(s) missing"
        return text + f"; look-ahead {self.lookahead_ms:.0f} ms"


class _Status:
    """A one-line status on a terminal (stderr), refreshed at most 4 times a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def update(self, name: str, dec: StreamDecoder, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self._last < 0.25 and not force):
            return
        self._last = now
        last = f"{dec.latencies_ms[-1]:.1f} ms" if dec.latencies_ms else "-"
        median = f"{np.median(dec.latencies_ms):.1f} ms" if dec.latencies_ms else "-"
        sys.stderr.write(
            f"\r{name}: buffer {100 * dec.fill:3.0f} % | {dec.n_decisions} decisions, "
            f"{dec.n_skipped} skipped | latency last {last}, median {median}   "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _Output:
    """The CSV file (rows flushed as they come) and the ``duin-words`` outlet."""

    def __init__(self, path: Path, subject: str, outlet: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle: IO[str] = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle, lineterminator="\n")
        self.writer.writerow(STREAM_COLUMNS)
        self.subject, self.outlet = subject, outlet

    def write(self, recording: str, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            self.writer.writerows(d.rows(self.subject, recording))
            if d.skipped:
                logger.warning("event %d at %.3f s skipped: %s", d.event, d.onset, d.skipped)
            elif self.outlet is not None:
                self.outlet.push_sample([d.to_json()])
        if decisions:
            self.handle.flush()

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


def _decode(
    dec: StreamDecoder,
    inlet: Any,
    marker_inlet: Any | None,
    out: _Output,
    recording: str,
    *,
    duration: float | None,
    source_done: Callable[[int], bool],
    status: _Status,
    idle_warning_s: float = 2.0,
) -> None:
    """Poll the inlets until the end; every decision goes to ``out``."""
    # one forward pass before the first real one, which pays torch's lazy initialisation
    dec.clf.probabilities(np.zeros((len(dec.clf.channels), dec.clf.n_times)))
    correction = inlet.time_correction(timeout=5.0)
    m_correction = 0.0 if marker_inlet is None else marker_inlet.time_correction(timeout=5.0)
    started, last_data, warned = time.perf_counter(), time.perf_counter(), False
    n_received = 0
    try:
        while True:
            if marker_inlet is not None:
                labels, mts = marker_inlet.pull_chunk(timeout=0.0)
                for label, t in zip(labels, mts, strict=True):
                    dec.mark(t + m_correction, label[0])
            data, ts = inlet.pull_chunk(timeout=0.0, max_samples=4096)
            arrival = time.perf_counter()
            if len(ts):
                if warned:
                    logger.warning("%s: samples are arriving again", recording)
                last_data, warned = arrival, False
                n_received += len(ts)
                out.write(recording, dec.push(np.asarray(data), ts + correction, arrival))
                status.update(recording, dec)
                if source_done(n_received):
                    break
                continue
            if duration is not None and arrival - started >= duration:
                break
            if source_done(n_received):
                break
            if arrival - last_data > idle_warning_s and not warned:
                if n_received:
                    logger.warning(
                        "%s: no samples for %.0f s; waiting (liblsl reconnects when the stream "
                        "comes back, and the gap is reported)",
                        recording,
                        arrival - last_data,
                    )
                else:
                    logger.warning("%s: no samples yet; waiting for the stream", recording)
                warned = True
            time.sleep(0.0005)
    except KeyboardInterrupt:
        out.write(recording, dec.finish(reason="interrupted"))
        status.update(recording, dec, force=True)
        raise
    out.write(recording, dec.finish())
    status.update(recording, dec, force=True)


def stream(
    run: str | Path,
    lsl: str,
    out_csv: str | Path,
    *,
    markers: str | None = None,
    top_k: int = 5,
    duration: float | None = None,
    continuous: float | None = None,
    lookahead: float | None = None,
    bad_channels: Sequence[str] = (),
    timeout: float = 10.0,
    quiet: bool = False,
) -> StreamResult:
    """Decode a live LSL signal stream with a fine-tuned classifier.

    Parameters
    ----------
    run : str or pathlib.Path
        The classifier (a finetune ``sub-XX/seed-N`` directory, as for ``duin predict``).
    lsl : str
        Name of the signal stream (its channel labels must include the classifier's inputs).
    out_csv : str or pathlib.Path
        CSV of decisions (:data:`~duin.workflows.stream.online.STREAM_COLUMNS`).
    markers : str, optional
        Name of a marker stream whose samples are word cues (their text is the true label).
    top_k : int
        Words per decision.
    duration : float, optional
        Stop after this many seconds (default: until Ctrl-C).
    continuous : float, optional
        Decode a window every ``continuous`` seconds instead of after markers.
    lookahead : float, optional
        Seconds after a window before it is decoded (zero-phase runs; default: equal to
        offline filtering).
    bad_channels : sequence of str
        Stream channels to treat as bad.
    timeout : float
        Seconds to wait for the streams to appear.
    quiet : bool
        No status line.

    Returns
    -------
    StreamResult
    """
    if (markers is None) == (continuous is None):
        raise ValueError("give either --markers NAME (decode after cues) or --continuous HOP_S")
    clf = Classifier.load(run)
    inlet, info = open_inlet(lsl, timeout=timeout)
    marker_inlet = (
        None if markers is None else open_inlet(markers, timeout=timeout, strings=True)[0]
    )
    result = StreamResult()
    dec = StreamDecoder(
        clf,
        info.get_channel_names(),
        info.sfreq,
        top_k=top_k,
        lookahead_s=lookahead,
        bad_channels=bad_channels,
        continuous_hop_s=continuous,
        stream=lsl,
    )
    out = _Output(Path(out_csv), clf.subject, words_outlet(lsl))
    status = _Status(not quiet)
    try:
        _decode(
            dec, inlet, marker_inlet, out, lsl,
            duration=duration, source_done=lambda n: False, status=status,
        )  # fmt: skip
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        status.close()
        out.close()
        result.add(dec)
        inlet.close_stream()
        if marker_inlet is not None:
            marker_inlet.close_stream()
    return result


def replay(
    run: str | Path,
    data: str | Path,
    out_csv: str | Path,
    *,
    subject: str | None = None,
    recordings: Sequence[str] | None = None,
    continuous: float | None = None,
    **kwargs: Any,
) -> StreamResult:
    """Replay a dataset's recordings through a real LSL outlet and decode them live.

    Parameters
    ----------
    run : str or pathlib.Path
        The classifier.
    data : str or pathlib.Path
        A dataset directory (BIDS, released or ``duin simulate`` output).
    out_csv : str or pathlib.Path
        CSV of decisions (``recording`` names match ``duin predict``'s).
    subject : str, optional
        Subject to replay (default the classifier's).
    recordings : sequence of str, optional
        Recording names to replay (default every recording with events).
    continuous : float, optional
        As for :func:`stream`.
    **kwargs
        Passed to :func:`replay_recordings` (``speed``, ``top_k``, ``lookahead``, ...).

    Returns
    -------
    StreamResult
    """
    from duin.data.splits import recording_key
    from duin.training.stages import DataConfig
    from duin.workflows.prepare import load_recordings

    clf = Classifier.load(run)
    subject = subject or clf.subject
    loaded = load_recordings(DataConfig(source=str(data), subjects=[subject]), quiet=True)
    recs = [r for r in loaded.recordings[subject] if r.events or continuous is not None]
    if recordings is not None:
        unknown = sorted(set(recordings) - {recording_key(r) for r in recs})
        if unknown:
            raise ValueError(f"replay: recordings {unknown} not found in {data}")
        recs = [r for r in recs if recording_key(r) in set(recordings)]
    if not recs:
        raise ValueError(f"{data}: subject {subject} has no recording with events to replay")
    return replay_recordings(clf, recs, out_csv, continuous=continuous, **kwargs)


def replay_recordings(
    clf: Classifier,
    recs: Sequence[Any],
    out_csv: str | Path,
    *,
    speed: float = 1.0,
    top_k: int = 5,
    continuous: float | None = None,
    lookahead: float | None = None,
    channels: Sequence[str] | None = None,
    drop: tuple[float, float] | None = None,
    outage: tuple[float, float] | None = None,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> StreamResult:
    """Replay recordings one after the other through LSL and decode them (same code path).

    Parameters
    ----------
    clf : Classifier
        The classifier.
    recs : sequence of Recording
        Recordings (volts, events) of the classifier's subject.
    out_csv : str or pathlib.Path
        CSV of decisions.
    speed : float
        Replay speed (1 = real time).
    top_k, continuous, lookahead, quiet
        As for :func:`stream`.
    channels : sequence of str, optional
        Channels to send, in this order (default all): replays with reordered or missing
        channels.
    drop : tuple of float, optional
        ``(start_s, duration_s)`` of each recording not sent (simulated missing samples).
    outage : tuple of float, optional
        ``(start_s, duration_s)`` of each recording during which the signal stream is gone
        (simulated drop-out: the inlet reconnects when it comes back).
    log : callable, optional
        Receives one line per recording.

    Returns
    -------
    StreamResult
    """
    from duin.data.splits import recording_key

    result = StreamResult()
    out = _Output(Path(out_csv), clf.subject, words_outlet(f"replay-{os.getpid()}"))
    status = _Status(not quiet)
    try:
        for rec in recs:
            key = recording_key(rec)
            name = f"duin-replay-{os.getpid()}-{key}"
            player = Replayer(rec, name, speed=speed, channels=channels, drop=drop, outage=outage)
            player.start()
            try:
                player.ready.wait()
                if player.error is not None:
                    raise player.error
                inlet, info = open_inlet(name)
                marker_inlet = None
                if continuous is None:
                    marker_inlet = open_inlet(f"{name}-markers", strings=True)[0]
                dec = StreamDecoder(
                    clf,
                    info.get_channel_names(),
                    info.sfreq,
                    top_k=top_k,
                    lookahead_s=lookahead,
                    bad_channels=[c for c in rec.bad_channels],
                    continuous_hop_s=continuous,
                    stream=name,
                )
                player.go.set()
                try:
                    _decode(
                        dec, inlet, marker_inlet, out, key,
                        duration=None, status=status,
                        source_done=player.finished,
                    )  # fmt: skip
                finally:
                    result.add(dec)
                    # inlets go before the outlets, or liblsl logs a broken connection
                    inlet.close_stream()
                    if marker_inlet is not None:
                        marker_inlet.close_stream()
                    del inlet, marker_inlet
                if player.error is not None:
                    raise player.error
                if log is not None:
                    status.close()
                    log(f"{key}: {dec.n_decisions} decision(s), {dec.n_skipped} skipped")
            finally:
                player.stop.set()
                player.join(timeout=5)
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        status.close()
        out.close()
    return result

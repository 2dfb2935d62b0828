"""Lab Streaming Layer I/O (mne-lsl's bindings to liblsl): find streams, the word outlet, replay.

Only :mod:`mne_lsl.lsl` (the thin liblsl layer) is used, so the decoder sees every sample with
its own timestamp and does its own buffering. On a machine without network, liblsl finds
streams on the loopback interface; ``LSLAPICFG`` may point at an ``lsl_api.cfg`` (see the
README) to keep discovery on this machine.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import numpy as np

from duin.data.recording import Recording

__all__ = ["Replayer", "open_inlet", "words_outlet"]

logger = logging.getLogger(__name__)

#: Name of the marker outlet that carries each decision as JSON.
WORDS_STREAM = "duin-words"
#: How long a replay waits for its consumer to reconnect after a simulated outage.
RECONNECT_TIMEOUT_S = 30.0


def _lsl() -> Any:
    try:
        import mne_lsl.lsl as lsl
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "duin stream needs mne-lsl (it bundles liblsl): pip install 'duin[stream]'"
        ) from exc
    return lsl


def open_inlet(name: str, *, timeout: float = 10.0, strings: bool = False) -> tuple[Any, Any]:
    """Resolve an LSL stream by name and open an inlet on it.

    Parameters
    ----------
    name : str
        The stream's name.
    timeout : float
        Seconds to look for it.
    strings : bool
        Expect a marker stream (string samples) rather than a signal.

    Returns
    -------
    tuple
        ``(StreamInlet, StreamInfo)``; the inlet reconnects by itself if the stream drops out
        and comes back (liblsl's ``recover``).

    Raises
    ------
    OSError
        No such stream appeared within ``timeout`` seconds.
    """
    lsl = _lsl()
    found = lsl.resolve_streams(timeout=timeout, name=name)
    if not found:
        raise OSError(f"no LSL stream named {name!r} found within {timeout:g} s")
    info = found[0]
    if strings != (info.dtype in (str, "string")):
        kind = "a marker stream of strings" if strings else "a numeric signal stream"
        raise ValueError(f"LSL stream {name!r} is not {kind}")
    inlet = lsl.StreamInlet(info, max_buffered=360, recover=True)
    inlet.open_stream(timeout=timeout)
    return inlet, inlet.get_sinfo(timeout=timeout)


def words_outlet(source: str) -> Any:
    """The ``duin-words`` marker outlet (one JSON string per decision)."""
    lsl = _lsl()
    info = lsl.StreamInfo(WORDS_STREAM, "Markers", 1, 0.0, "string", f"duin-words-{source}")
    return lsl.StreamOutlet(info)


class Replayer(threading.Thread):
    """Replays a recording through an LSL outlet, with its events on a marker outlet.

    Samples are stamped on the recording's own time axis (``t0 + k / sfreq``) and pushed when
    their time has come at ``speed`` times real time, so a decoder sees what a live amplifier
    would send, only faster. Each event is pushed as a marker (its label) stamped at its onset.

    Parameters
    ----------
    rec : Recording
        The recording (volts, events).
    name : str
        Stream name; the markers are ``name + "-markers"``.
    speed : float
        Replay speed (1 = real time).
    chunk_s : float
        Signal pushed at once, in seconds of recording.
    channels : list of str, optional
        Channels to send, in this order (default all, in recording order); a way to replay a
        recording with its channels reordered or missing.
    drop : tuple of float, optional
        ``(start_s, duration_s)`` of signal not sent (a simulated drop-out of samples).
    outage : tuple of float, optional
        ``(start_s, duration_s)`` during which the signal outlet is gone (a stream drop-out, as
        when an amplifier's connection is lost): it is closed, its samples are lost, and it
        comes back under the same name and source id, so an inlet that recovers reconnects.
        Sending resumes once a consumer is connected again. The markers are not interrupted.
    autostart : bool
        Start sending once both outlets have a consumer (else when :attr:`go` is set).
    """

    def __init__(
        self,
        rec: Recording,
        name: str,
        *,
        speed: float = 1.0,
        chunk_s: float = 0.01,
        channels: list[str] | None = None,
        drop: tuple[float, float] | None = None,
        outage: tuple[float, float] | None = None,
        autostart: bool = False,
    ) -> None:
        super().__init__(name=f"duin-replay-{name}", daemon=True)
        if not speed > 0:
            raise ValueError(f"--speed must be positive, got {speed}")
        self.rec, self.stream_name, self.speed = rec, name, float(speed)
        self.channels = list(rec.ch_names) if channels is None else list(channels)
        unknown = [c for c in self.channels if c not in rec.ch_names]
        if unknown:
            raise ValueError(f"replay: channels {unknown} are not in the recording")
        self.chunk = max(1, int(round(chunk_s * rec.sfreq)))
        self.drop, self.outage = drop, outage
        self.autostart = autostart
        self.ready = threading.Event()  # outlets exist
        self.go = threading.Event()  # a consumer is connected: start sending
        self.stop = threading.Event()
        self.sent = threading.Event()  # every sample and marker was pushed
        self.done = threading.Event()  # the thread has finished
        self.error: BaseException | None = None
        self.n_sent = 0  # samples pushed so far

    def run(self) -> None:
        """Send the recording (the thread's body); errors are kept in :attr:`error`."""
        try:
            self._run()
        except BaseException as exc:  # reported to the consumer, which re-raises it
            self.error = exc
        finally:
            self.ready.set()
            self.sent.set()
            self.done.set()

    def finished(self, n_received: int) -> bool:
        """Whether everything was sent and ``n_received`` samples is all of it."""
        return self.sent.is_set() and n_received >= self.n_sent

    def _run(self) -> None:
        lsl = _lsl()
        rec = self.rec
        uid = uuid.uuid4().hex[:8]

        def signal_outlet() -> Any:
            info = lsl.StreamInfo(
                self.stream_name, "sEEG", len(self.channels), rec.sfreq, "float32", f"{uid}-signal"
            )
            info.set_channel_names(self.channels)
            return lsl.StreamOutlet(info, chunk_size=self.chunk)

        outlet = signal_outlet()
        minfo = lsl.StreamInfo(
            f"{self.stream_name}-markers", "Markers", 1, 0.0, "string", f"{uid}-markers"
        )
        markers = lsl.StreamOutlet(minfo)
        self.ready.set()
        while not self.go.wait(0.01):
            if self.stop.is_set():
                return
            if self.autostart and outlet.has_consumers and markers.has_consumers:
                break
        rows = [rec.ch_names.index(c) for c in self.channels]
        events = sorted(rec.events, key=lambda ev: ev.onset)
        n = rec.n_times
        dropped = np.zeros(n, dtype=bool)
        spans = {}
        for what, span in (("drop", self.drop), ("outage", self.outage)):
            if span is not None:
                a = int(round(span[0] * rec.sfreq))
                spans[what] = (a, a + max(1, int(round(span[1] * rec.sfreq))))
                dropped[slice(*spans[what])] = True
        gone = spans.get("outage")
        t0, wall0, next_event = lsl.local_clock(), time.perf_counter(), 0
        for start in range(0, n, self.chunk):
            if self.stop.is_set():
                return
            stop = min(n, start + self.chunk)
            delay = wall0 + stop / (rec.sfreq * self.speed) - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            keep = np.flatnonzero(~dropped[start:stop]) + start
            if gone is not None and outlet is not None and stop > gone[0]:
                self._push(outlet, rows, start, stop, keep[keep < gone[0]], t0)
                keep = keep[keep >= gone[1]]
                outlet = None  # the last reference: liblsl destroys it, consumers lose it
                logger.info("replay %s: signal outlet closed (outage)", self.stream_name)
            if outlet is None and len(keep):
                outlet = signal_outlet()  # back under the same source id
                logger.info("replay %s: signal outlet back", self.stream_name)
                waited = time.perf_counter()
                while not outlet.has_consumers:
                    if self.stop.wait(0.01):
                        return
                    if time.perf_counter() - waited > RECONNECT_TIMEOUT_S:
                        raise TimeoutError(
                            f"replay {self.stream_name}: no consumer reconnected within "
                            f"{RECONNECT_TIMEOUT_S:g} s after the outage"
                        )
                gone = None
            self._push(outlet, rows, start, stop, keep, t0)
            while next_event < len(events) and events[next_event].onset * rec.sfreq < stop:
                ev = events[next_event]
                markers.push_sample([ev.label], t0 + ev.onset)
                next_event += 1
        self.sent.set()
        # keep the outlets alive until the consumer has read everything
        while not self.stop.wait(0.05):
            pass

    def _push(
        self, outlet: Any, rows: list[int], start: int, stop: int, keep: np.ndarray, t0: float
    ) -> None:
        """Send samples ``keep`` (indices into the recording, within ``[start, stop)``)."""
        if len(keep):
            x = np.asarray(self.rec.signals[rows, start:stop], dtype=np.float32)[:, keep - start]
            outlet.push_chunk(np.ascontiguousarray(x.T), t0 + keep / self.rec.sfreq)  # (n, C)
            self.n_sent += len(keep)

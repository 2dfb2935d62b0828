"""Online decoding that equals offline: chunked preprocessing with carried state, then decisions.

Everything :func:`duin.data.preprocess.preprocess` does is linear and the same for every channel,
so the spatial map (bipolar / average reference, bad channels) is applied first, to the
classifier's channels only, and the filters then run on those few rows:

- the forward IIR pass runs on each chunk as it arrives, with carried state, started exactly like
  the offline pass (odd extension of the first samples, steady-state initial conditions);
- causal runs (``preprocess.phase: causal``) are finished there;
- zero-phase runs need the backward pass, which starts at the end of the recording offline.
  Online it starts ``lookahead`` samples after the window (steady-state initial conditions);
  its start-up transient decays like the filter's slowest pole, and the default look-ahead is
  where it has fallen below ``1e-5`` of the signal, so the result equals offline filtering to
  float rounding. When the stream ends, the pending windows get the exact offline end
  treatment (odd extension of the last samples);
- polyphase resampling runs on a segment that starts on a multiple of the decimation factor
  with a margin on both sides, so each kept output sample equals the one-shot result.

Then the window is z-scored with the training statistics and classified.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import signal as sps

from duin.data.filtering import BlockFilter
from duin.data.preprocess import (
    PreprocessConfig,
    design_filter,
    parse_contact,
    resample_factors,
    resample_margin,
    spatial_map,
)
from duin.data.recording import Recording
from duin.training.stages import predict_logits
from duin.workflows.predict import PREDICT_COLUMNS, find_classifier_run
from duin.workflows.rundir import TRIAL_DATA_FILE
from duin.workflows.stream.buffer import RingBuffer, find_gaps

__all__ = [
    "STREAM_COLUMNS",
    "Classifier",
    "Decision",
    "OnlinePreprocessor",
    "StreamDecoder",
    "default_lookahead",
    "state_space",
]

logger = logging.getLogger(__name__)

#: Columns of the stream CSV: those of ``duin predict`` plus timing and the reason for a skip.
STREAM_COLUMNS = [*PREDICT_COLUMNS, "latency_ms", "lookahead_ms", "skipped"]
#: Relative size of the backward pass's start-up transient left at the window's end.
LOOKAHEAD_TOLERANCE = 1e-5


@dataclass
class Classifier:
    """A fine-tuned classifier and what its training data looked like (``trial_data.json``).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (eval mode).
    subject : str
        Subject it was trained on.
    channels : list of str
        Input channels, in the model's order (names after preprocessing, e.g. ``"A1-A2"``).
    labels : list of str
        Class index -> word.
    tmin : float
        Window start relative to the cue, in seconds.
    n_times : int
        Window length in samples at ``sfreq``.
    sfreq : float
        Sampling rate of the model's input in Hz.
    preprocess : PreprocessConfig or None
        Preprocessing of the training data (None: the data were already preprocessed).
    mean, std : numpy.ndarray
        ``(n_channels,)`` training normalisation statistics.
    """

    model: torch.nn.Module
    subject: str
    channels: list[str]
    labels: list[str]
    tmin: float
    n_times: int
    sfreq: float
    preprocess: PreprocessConfig | None
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def load(cls, run: str | Path) -> Classifier:
        """Load a classifier from a finetune run (as ``duin predict`` does).

        Parameters
        ----------
        run : str or pathlib.Path
            A ``sub-XX/seed-N`` directory, a checkpoint in it, or a run with one classifier.

        Returns
        -------
        Classifier
        """
        from duin.models.registry import load_model

        ckpt_dir, run_dir = find_classifier_run(Path(run))
        info = json.loads((run_dir / TRIAL_DATA_FILE).read_text())
        model = load_model(ckpt_dir).eval()
        return cls(
            model=model,
            subject=str(info["subject"]),
            channels=list(info["channels"]),
            labels=list(info["labels"]),
            tmin=float(info["tmin"]),
            n_times=int(info["n_times"]),
            sfreq=float(info["sfreq"]),
            preprocess=None
            if info["preprocess"] is None
            else PreprocessConfig(**info["preprocess"]),
            mean=np.asarray(info["normalization"]["mean"], dtype=np.float64),
            std=np.asarray(info["normalization"]["std"], dtype=np.float64),
        )

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Word probabilities ``(n_classes,)`` for one normalised window ``(n_channels, n_times)``."""
        logits = predict_logits(self.model, x[None].astype(np.float32))
        return torch.softmax(torch.from_numpy(logits[0]), dim=0).numpy()


def default_lookahead(sos: np.ndarray, tolerance: float = LOOKAHEAD_TOLERANCE) -> int:
    """Samples after which a filter's free response has decayed to ``tolerance`` of its start.

    Parameters
    ----------
    sos : numpy.ndarray
        ``(n_sections, 6)`` second-order sections.
    tolerance : float
        Relative size of the remaining transient.

    Returns
    -------
    int
        Look-ahead in samples (decay of the slowest pole).
    """
    _, poles, _ = sps.sos2zpk(sos)
    radius = float(np.abs(poles).max()) if len(poles) else 0.0
    if radius <= 0.0:
        return 0
    return int(math.ceil(math.log(tolerance) / math.log(radius)))


def state_space(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """State-space form ``z' = A z + B x`` of ``scipy.signal.sosfilt``'s section cascade.

    The state is sosfilt's ``zi`` flattened section by section (``(n_sections * 2,)``).

    Parameters
    ----------
    sos : numpy.ndarray
        ``(n_sections, 6)`` second-order sections (``a0 = 1``).

    Returns
    -------
    tuple of numpy.ndarray
        ``A`` ``(2 n, 2 n)`` and ``B`` ``(2 n,)``.
    """
    n = 2 * len(sos)

    def step(z: np.ndarray, x: float) -> np.ndarray:  # direct form II transposed, as sosfilt
        z = z.reshape(-1, 2)
        out = np.empty_like(z)
        for k, (b0, b1, b2, _, a1, a2) in enumerate(sos):
            y = b0 * x + z[k, 0]
            out[k] = (b1 * x - a1 * y + z[k, 1], b2 * x - a2 * y)
            x = y
        return out.ravel()

    a = np.stack([step(np.eye(n)[i], 0.0) for i in range(n)], axis=1)
    return a, step(np.zeros(n), 1.0)


def _contacts(channel: str, config: PreprocessConfig) -> list[str]:
    """Stream contacts a preprocessed channel is computed from (for error messages)."""
    if config.reference != "bipolar":
        return [channel]
    if config.bipolar_naming == "first":
        parsed = parse_contact(channel)
        return [channel] if parsed is None else [channel, f"{parsed[0]}{parsed[1] + 1}"]
    for i, char in enumerate(channel):
        if char == "-":
            a, b = parse_contact(channel[:i]), parse_contact(channel[i + 1 :])
            if a is not None and b is not None and a[0] == b[0] and b[1] == a[1] + 1:
                return [channel[:i], channel[i + 1 :]]
    return [channel]


class OnlinePreprocessor:
    """The classifier's preprocessing applied sample by sample to a stream's channels.

    Parameters
    ----------
    clf : Classifier
        Its channels and preprocessing are reproduced.
    ch_names : list of str
        The stream's channels, in stream order (any order; extra channels are ignored).
    sfreq : float
        The stream's sampling rate in Hz.
    bad_channels : list of str
        Stream channels to treat as bad (as in the training recording's ``channels.tsv``).
    lookahead_s : float, optional
        Zero-phase runs: seconds of signal after the window before it is decoded (default
        :func:`default_lookahead`, i.e. equal to offline). Ignored for causal runs.
    stream : str
        The stream's name (for error messages).

    Raises
    ------
    ValueError
        A channel the classifier needs is not in the stream; the sampling rates do not fit.
    """

    def __init__(
        self,
        clf: Classifier,
        ch_names: list[str],
        sfreq: float,
        *,
        bad_channels: list[str] | tuple[str, ...] = (),
        lookahead_s: float | None = None,
        stream: str = "stream",
    ) -> None:
        self.sfreq_in = float(sfreq)
        config = clf.preprocess
        self.config = config
        names = [str(c) for c in ch_names]
        if config is None:
            missing = [c for c in clf.channels if c not in names]
            self._check_missing(missing, missing, stream)
            if abs(self.sfreq_in - clf.sfreq) > 1e-6:
                raise ValueError(
                    f"stream {stream!r} runs at {self.sfreq_in:g} Hz; the classifier was trained "
                    f"on {clf.sfreq:g} Hz data without preprocessing"
                )
            self.rows = [names.index(c) for c in clf.channels]
            self.weights = np.eye(len(self.rows))
            self.sos, self.up, self.down, self.margin = None, 1, 1, 0
        else:
            config.validate(self.sfreq_in)
            probe = Recording(
                signals=np.zeros((len(names), 1), dtype=np.float32),
                sfreq=self.sfreq_in,
                ch_names=names,
                subject=clf.subject,
                bad_channels=[c for c in bad_channels if c in names],
            )
            plan = spatial_map(probe, config)
            missing = [c for c in clf.channels if c not in plan.ch_names]
            contacts = sorted({c for ch in missing for c in _contacts(ch, config)} - set(names))
            self._check_missing(missing, contacts, stream)
            weights = plan.weights[[plan.ch_names.index(c) for c in clf.channels]]
            keep = np.flatnonzero(np.abs(weights).sum(axis=0) > 0)
            self.rows = [plan.used[j] for j in keep]  # stream rows that feed the channels
            self.weights = weights[:, keep]  # (n_channels, n_rows)
            self.sos = design_filter(config, self.sfreq_in)
            self.up, self.down = resample_factors(self.sfreq_in, config.sfreq or self.sfreq_in)
            self.margin = resample_margin(self.up, self.down) if self.up != self.down else 0
        self.sfreq_out = self.sfreq_in * self.up / self.down
        if abs(self.sfreq_out - clf.sfreq) > 1e-6:
            raise ValueError(
                f"stream {stream!r}: preprocessing gives {self.sfreq_out:g} Hz, the classifier "
                f"expects {clf.sfreq:g} Hz"
            )
        self.zero_phase = self.sos is not None and config is not None and config.phase == "zero"
        # the one chunked-filter implementation, shared with offline preprocessing
        self._filter = None if self.sos is None else BlockFilter(self.sos, self.zero_phase)
        self.padlen = 0 if self._filter is None else self._filter.padlen
        if not self.zero_phase:
            self.lookahead = 0
        elif lookahead_s is None:
            self.lookahead = default_lookahead(self.sos)
        else:
            if lookahead_s < 0:
                raise ValueError(f"--lookahead must be >= 0 seconds, got {lookahead_s}")
            self.lookahead = int(round(lookahead_s * self.sfreq_in))
        if self.zero_phase and self.lookahead > 0:
            # The backward pass over the look-ahead only sets the state it enters the window
            # with, and that state is linear in the samples: state = y_ahead @ P + y_last * Q.
            # One matrix product instead of a sequential recursion over the look-ahead.
            a, b = state_space(self.sos)
            powers = np.empty((self.lookahead, len(b)))  # (lookahead, 2 n_sections): A^j B
            powers[0] = b
            for j in range(1, self.lookahead):
                powers[j] = a @ powers[j - 1]
            self._ahead = powers
            self._ahead_start = np.linalg.matrix_power(a, self.lookahead) @ self._filter.zi.ravel()

    @staticmethod
    def _check_missing(missing: list[str], contacts: list[str], stream: str) -> None:
        if missing:
            raise ValueError(
                f"stream {stream!r} lacks channel(s) {', '.join(contacts or missing)} needed by "
                f"the classifier's input(s) {', '.join(missing)}"
            )

    @property
    def started(self) -> bool:
        """Whether the forward pass has started (it needs :attr:`n_start` samples)."""
        return self._filter is None or self._filter.started

    @property
    def n_start(self) -> int:
        """Samples needed before the forward pass can start (the offline odd extension)."""
        return self.padlen + 1

    def spatial(self, x: np.ndarray) -> np.ndarray:
        """Stream samples ``(n_stream_channels, n)`` -> classifier channels ``(n_channels, n)``."""
        return self.weights @ np.asarray(x[self.rows], dtype=np.float64)

    def forward(self, m: np.ndarray) -> np.ndarray:
        """Forward filter pass over the next samples ``(n_channels, n)`` with carried state.

        The first call must hold at least :attr:`n_start` samples (the start of the stream).
        """
        if self._filter is None:
            return m.copy()
        return self._filter.forward(m)

    def backward(self, y: np.ndarray, n_keep: int, tail: np.ndarray | None = None) -> np.ndarray:
        """Zero-phase backward pass over forward output ``y`` ``(n_channels, n)``.

        Parameters
        ----------
        y : numpy.ndarray
            Forward-filtered samples up to the last one the window needs (incl. look-ahead).
        n_keep : int
            Leading samples wanted (the rest is look-ahead).
        tail : numpy.ndarray, optional
            The last :attr:`n_start` spatially mapped input samples when ``y`` ends where the
            stream ended: the backward pass then starts exactly like the offline one (odd
            extension of the end, continued from the current forward state). Without it, it
            starts from steady state on ``y``'s last sample.

        Returns
        -------
        numpy.ndarray
            ``(n_channels, n_keep)`` zero-phase filtered samples.
        """
        bf = self._filter
        if tail is None and y.shape[1] - n_keep == self.lookahead > 0:
            ahead = y[:, n_keep:]
            state = ahead @ self._ahead + ahead[:, -1:] * self._ahead_start  # (C, 2 n_sections)
            state = state.reshape(len(y), -1, 2).transpose(1, 0, 2)  # sosfilt's zi layout
            out, _ = bf.backward(y[:, :n_keep], state)
            return out
        start = bf.steady_state(y[:, -1]) if tail is None else bf.end_state(tail)
        out, _ = bf.backward(y, start)
        return out[:, :n_keep]

    def segment(self, start_out: int, n_out: int) -> tuple[int, int]:
        """Input samples ``[start, stop)`` whose filtered values give outputs ``[start_out, +n_out)``.

        ``start`` is a multiple of the decimation factor (or 0) so resampling is exact.
        """
        if self.up == self.down:
            return start_out, start_out + n_out
        first = start_out * self.down // self.up
        first -= first % self.down
        last = -(-(start_out + n_out) * self.down // self.up)
        last += -last % self.down
        return max(0, first - self.margin), last + self.margin

    def resample(self, g: np.ndarray, seg_start: int, start_out: int, n_out: int) -> np.ndarray:
        """Outputs ``[start_out, start_out + n_out)`` from filtered input starting at ``seg_start``."""
        if self.up == self.down:
            return g[:, start_out - seg_start : start_out - seg_start + n_out]
        r = sps.resample_poly(g, self.up, self.down, axis=-1)
        offset = start_out - seg_start * self.up // self.down
        return r[:, offset : offset + n_out]


@dataclass
class Decision:
    """One decoded (or skipped) window.

    Parameters
    ----------
    event : int
        Marker number in the stream (or window number in continuous mode), from 0.
    onset : float
        Cue time in seconds from the stream's first sample.
    true_label : str
        The marker's text (empty in continuous mode).
    words, probabilities : list
        Top-k words and their probabilities (empty when skipped).
    latency_ms : float or None
        From the arrival of the last sample (or marker) the decision needs to the decision.
    lookahead_ms : float or None
        Signal after the window's end that the decision waited for.
    skipped : str
        Why the window was not decoded (empty when decoded).
    """

    event: int
    onset: float
    true_label: str
    words: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    latency_ms: float | None = None
    lookahead_ms: float | None = None
    skipped: str = ""

    def rows(self, subject: str, recording: str) -> list[list[Any]]:
        """CSV rows (:data:`STREAM_COLUMNS`): one per rank, or one for a skipped window."""
        common = [subject, recording, self.event, f"{self.onset:.3f}", self.true_label]
        timing = [
            "" if self.latency_ms is None else f"{self.latency_ms:.3f}",
            "" if self.lookahead_ms is None else f"{self.lookahead_ms:.1f}",
        ]
        if self.skipped:
            return [[*common, "", "", "", *timing, self.skipped]]
        return [
            [*common, rank, word, f"{p:.6f}", *timing, ""]
            for rank, (word, p) in enumerate(zip(self.words, self.probabilities, strict=True), 1)
        ]

    def to_json(self) -> str:
        """The ``duin-words`` marker: event, onset, top-k words and probabilities."""
        return json.dumps(
            {
                "event": self.event,
                "onset": round(self.onset, 6),
                "words": self.words,
                "probabilities": [round(p, 6) for p in self.probabilities],
                "latency_ms": self.latency_ms,
            },
            ensure_ascii=False,
        )


@dataclass
class _Window:
    event: int
    onset: float
    label: str
    start_out: int  # first output sample (at the classifier's rate)
    seg_start: int  # input samples [seg_start, seg_stop) feed the window
    seg_stop: int
    needed: int  # input samples needed before the decision (incl. look-ahead)
    since: float  # perf_counter when the marker arrived


class StreamDecoder:
    """Turns stream chunks and markers into decisions, equal to offline ``duin predict``.

    Parameters
    ----------
    clf : Classifier
        The classifier.
    ch_names : list of str
        The stream's channel names.
    sfreq : float
        The stream's nominal sampling rate in Hz.
    top_k : int
        Words per decision.
    lookahead_s : float, optional
        See :class:`OnlinePreprocessor`.
    bad_channels : list of str
        Stream channels treated as bad.
    continuous_hop_s : float, optional
        Decode a window every ``continuous_hop_s`` seconds instead of after markers.
    buffer_s : float
        Seconds of signal kept beyond what one decision needs (how late a marker may come).
    stream : str
        Name for messages.
    """

    def __init__(
        self,
        clf: Classifier,
        ch_names: list[str],
        sfreq: float,
        *,
        top_k: int = 5,
        lookahead_s: float | None = None,
        bad_channels: list[str] | tuple[str, ...] = (),
        continuous_hop_s: float | None = None,
        buffer_s: float = 30.0,
        stream: str = "stream",
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if continuous_hop_s is not None and continuous_hop_s <= 0:
            raise ValueError(
                f"--continuous must be a positive hop in seconds, got {continuous_hop_s}"
            )
        self.clf = clf
        self.pre = OnlinePreprocessor(
            clf, ch_names, sfreq, bad_channels=bad_channels, lookahead_s=lookahead_s, stream=stream
        )
        self.top_k = min(top_k, len(clf.labels))
        self.sfreq = float(sfreq)
        n_rows = len(clf.channels)
        span = self.pre.segment(0, clf.n_times)[1] + self.pre.lookahead
        self.ring = RingBuffer(2 * n_rows, span + int(buffer_s * self.sfreq))  # rows: [m; y]
        self._n_rows = n_rows
        self._startup: list[tuple[np.ndarray, np.ndarray]] = []
        self._last: tuple[float, np.ndarray] | None = None  # (timestamp, mapped sample)
        self._markers: list[tuple[float, str, float]] = []  # (timestamp, label, arrival)
        self._windows: list[_Window] = []
        self._n_events = 0
        self.hop = None if continuous_hop_s is None else int(round(continuous_hop_s * clf.sfreq))
        self.n_decisions = 0
        self.n_skipped = 0
        self.n_missing = 0  # samples never received (gaps)
        self.latencies_ms: list[float] = []
        self.model_ms: list[float] = []  # the classifier's share of each latency

    # ---------------------------------------------------------------------------- input
    def push(
        self, data: np.ndarray, timestamps: np.ndarray, arrival: float | None = None
    ) -> list[Decision]:
        """Add samples and return the decisions they complete.

        Parameters
        ----------
        data : numpy.ndarray
            ``(n, n_stream_channels)`` samples, as LSL delivers them.
        timestamps : numpy.ndarray
            ``(n,)`` their timestamps in seconds (clock-corrected).
        arrival : float, optional
            ``time.perf_counter()`` when they arrived (default now).

        Returns
        -------
        list of Decision
        """
        arrival = time.perf_counter() if arrival is None else arrival
        if len(timestamps) == 0:
            return self._decide(arrival, final=False)
        m = self.pre.spatial(np.asarray(data, dtype=np.float64).T)  # (n_channels, n)
        ts = np.asarray(timestamps, dtype=np.float64)
        missing = find_gaps(ts, None if self._last is None else self._last[0], self.sfreq)
        start = 0
        for k in np.flatnonzero(missing):
            self._append(m[:, start:k], ts[start:k])
            self._fill(int(missing[k]), m[:, k], ts[k])
            start = k
        self._append(m[:, start:], ts[start:])
        return self._decide(arrival, final=False)

    def mark(self, timestamp: float, label: str, arrival: float | None = None) -> None:
        """A cue marker at ``timestamp`` (clock-corrected seconds); its window is decoded later."""
        if self.hop is None:
            arrival = time.perf_counter() if arrival is None else arrival
            self._markers.append((float(timestamp), str(label), arrival))

    def finish(self, arrival: float | None = None, reason: str = "") -> list[Decision]:
        """The stream ended: decide every pending window with the samples received.

        Windows whose look-ahead reaches past the end get the offline end treatment, so a
        replayed recording is decoded exactly like ``duin predict`` decodes it.

        Parameters
        ----------
        arrival : float, optional
            ``perf_counter`` of the end (latency reference).
        reason : str
            Appended to the skip reason of windows the stream ended before (e.g. "interrupted").
        """
        arrival = time.perf_counter() if arrival is None else arrival
        if self._startup:  # too short to start the filters
            n = sum(b.shape[1] for b, _ in self._startup)
            logger.warning(
                "the stream ended after %d samples; the filters need %d", n, self.pre.n_start
            )
        return self._decide(arrival, final=True, reason=reason)

    def _append(self, m: np.ndarray, ts: np.ndarray) -> None:
        if m.shape[1] == 0:
            return
        self._last = (float(ts[-1]), m[:, -1].copy())
        if not self.pre.started or self._startup:
            self._startup.append((m, ts))
            if sum(b.shape[1] for b, _ in self._startup) < self.pre.n_start:
                return
            m = np.concatenate([b for b, _ in self._startup], axis=1)
            ts = np.concatenate([t for _, t in self._startup])
            self._startup = []
        y = self.pre.forward(m)
        self.ring.append(np.concatenate([m, y]), ts)

    def _fill(self, n_missing: int, after: np.ndarray, t_after: float) -> None:
        """Fill a gap by linear interpolation up to the next received sample ``after``."""
        start = self.ring.n_written + sum(b.shape[1] for b, _ in self._startup)
        t_before, before = self._last
        self.n_missing += n_missing
        logger.warning(
            "gap in the stream: %d sample(s) missing after %.3f s",
            n_missing,
            start / self.sfreq,
        )
        if n_missing > self.ring.capacity:  # a long drop-out: only the end can matter
            skip = n_missing - self.ring.capacity
            self.ring.n_written += skip
            n_missing -= skip
        w = np.arange(1, n_missing + 1) / (n_missing + 1)
        fill = before[:, None] * (1 - w) + after[:, None] * w
        self.ring.add_gap(start, n_missing)
        self._append(fill, t_before + (t_after - t_before) * w)

    # ------------------------------------------------------------------------- decisions
    def _window(self, event: int, onset: float, label: str, since: float) -> _Window:
        start_out = round((onset + self.clf.tmin) * self.clf.sfreq)
        seg_start, seg_stop = self.pre.segment(start_out, self.clf.n_times)
        return _Window(
            event,
            onset,
            label,
            start_out,
            seg_start,
            seg_stop,
            seg_stop + self.pre.lookahead,
            since,
        )

    def _schedule(self) -> None:
        if self.hop is not None:
            n_out = self.ring.n_written * self.pre.up // self.pre.down
            while True:
                start_out = self._n_events * self.hop
                if start_out + self.clf.n_times > n_out:
                    break
                onset = start_out / self.clf.sfreq - self.clf.tmin
                self._windows.append(self._window(self._n_events, onset, "", 0.0))
                self._n_events += 1
            return
        waiting = []
        for ts, label, since in self._markers:
            pos = self.ring.position(ts, self.sfreq)
            if pos is None:
                waiting.append((ts, label, since))
                continue
            # onsets are snapped to 1e-6 samples so float noise in the timestamps never moves
            # a window by one output sample
            onset = round(pos, 6) / self.sfreq
            self._windows.append(self._window(self._n_events, onset, label, since))
            self._n_events += 1
        self._markers = waiting

    def _decide(self, arrival: float, *, final: bool, reason: str = "") -> list[Decision]:
        self._schedule()
        n = self.ring.n_written
        out, pending = [], []
        for w in self._windows:
            if w.needed > n and not final:
                pending.append(w)
                continue
            out.append(self._decide_one(w, arrival, final, reason))
        self._windows = pending
        return out

    def _skip(self, w: _Window, why: str) -> Decision:
        self.n_skipped += 1
        return Decision(w.event, w.onset, w.label, skipped=why)

    def _decide_one(self, w: _Window, arrival: float, final: bool, reason: str) -> Decision:
        n = self.ring.n_written
        n_out_total = -(-n * self.pre.up // self.pre.down)
        if w.start_out < 0:
            return self._skip(w, "no full window: it starts before the stream's first sample")
        if final and w.start_out + self.clf.n_times > n_out_total:
            why = "no full window: the stream ended before its end"
            return self._skip(w, f"{why} ({reason})" if reason else why)
        if w.seg_start < self.ring.first:
            return self._skip(w, "its samples have left the buffer (the marker came too late)")
        stop = min(w.needed, n)
        # only a gap inside the window skips it: one in the look-ahead (or just before the
        # window) reaches it through the filters' memory, attenuated, across the interpolation
        gap = self.ring.gap_in(w.seg_start, min(w.seg_stop, n))
        if gap is not None:
            return self._skip(
                w,
                f"gap in the stream: {gap.n_missing} sample(s) missing at "
                f"{gap.start / self.sfreq:.3f} s",
            )
        if self.pre.zero_phase:
            y = self.ring.get(w.seg_start, stop)[self._n_rows :]
            tail = None
            if final and stop == n and w.needed > n:
                tail = self.ring.get(n - self.pre.n_start, n)[: self._n_rows]
            g = self.pre.backward(y, min(w.seg_stop, n) - w.seg_start, tail)
        else:
            g = self.ring.get(w.seg_start, min(w.seg_stop, n))[self._n_rows :]
        x = self.pre.resample(g, w.seg_start, w.start_out, self.clf.n_times)
        x = (x - self.clf.mean[:, None]) / self.clf.std[:, None]
        t_model = time.perf_counter()
        p = self.clf.probabilities(x)
        self.model_ms.append(1e3 * (time.perf_counter() - t_model))
        order = np.argsort(-p, kind="stable")[: self.top_k]
        latency = 1e3 * (time.perf_counter() - max(arrival, w.since))
        self.n_decisions += 1
        self.latencies_ms.append(latency)
        window_end = (w.start_out + self.clf.n_times) * self.pre.down / self.pre.up
        return Decision(
            w.event,
            w.onset,
            w.label,
            words=[self.clf.labels[c] for c in order],
            probabilities=[float(p[c]) for c in order],
            latency_ms=latency,
            lookahead_ms=1e3 * max(0.0, stop - window_end) / self.sfreq,
        )

    @property
    def fill(self) -> float:
        """Fraction of the buffer holding samples (for the status line)."""
        return min(1.0, self.ring.n_written / self.ring.capacity)

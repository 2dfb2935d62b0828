"""Torch datasets over a memory-mapped, content-keyed cache of preprocessed recordings.

:func:`build_cache` preprocesses each recording once (filters, notch, resampling, re-reference
via :func:`duin.data.preprocess.preprocess`), keeps the selected channels and stores float32
``(n_channels, n_times)`` ``.npy`` files plus a JSON sidecar (written last, with the SHA-256 of
both; a mismatch on reuse is logged and the entry rebuilt). Files are keyed by a hash of
(source identity, preprocessing fingerprint, channel selection), written to a temporary name
and renamed, so a second build with the same inputs does no work and an interrupted build never
leaves a file that looks complete.

Two datasets read those files without loading them:

- :class:`TrialDataset`: labelled word trials, a fixed window relative to each event onset
  (3 s = 3000 samples at 1 kHz by default), with the optional +-shift augmentation of the
  paper (uniform integer shift in ``[-max_shift, max_shift]``, all channels together, zero
  fill, training only).
- :class:`PretrainDataset`: one random crop (4 s = 4000 samples by default) per window and
  epoch, for the VQ-VAE and MAE stages (unlabelled).

Samples are dicts ``{"x": float32 (n_channels, n_times), "subject": int64 scalar}`` plus, for
trials, ``"labels"``: int64 scalar (the name the models' ``labels`` argument takes). Channels are z-scored with a :class:`ChannelStats` computed on training data
only (:func:`compute_channel_stats`) and zero-padded to the largest subject; ``channel_rows``
then keeps (and orders) the channels a model sees. Randomness comes
from ``(seed, epoch, index)``, so results do not depend on worker processes or fetch order;
call ``set_epoch`` each epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from duin.data.recording import Event, Recording
from duin.data.splits import Trial, Window, recording_key
from duin.utils.integrity import IntegrityError, file_sha256
from duin.utils.npy import NpyBlockWriter, release_pages

__all__ = [
    "CacheEntry",
    "CacheIndex",
    "ChannelStats",
    "PretrainDataset",
    "TrialDataset",
    "build_cache",
    "cache_key",
    "compute_channel_stats",
    "shift_time",
    "verify_cache",
]

log = logging.getLogger(__name__)

_CACHE_VERSION = 1
_COPY_BLOCK = 1 << 16  # samples copied at once when writing the cache


# ---------------------------------------------------------------------------------- cache
def _source_identity(recording: Recording) -> dict[str, Any]:
    """What identifies a recording's content without reading all of it.

    The provenance ``source`` (file path or simulator seed), the entities, shape, rate, channel
    names, events and a hash of a strided subsample of the signals (so two recordings with the
    same name but different data do not collide).
    """
    sig = recording.signals
    step = max(1, recording.n_times // 2048)
    # row by row, releasing the pages each strided read touched: a long memory-mapped
    # recording would otherwise leave ~2048 pages per channel resident
    sample = np.empty((sig.shape[0], len(range(0, recording.n_times, step))), dtype=np.float32)
    for row in range(sig.shape[0]):
        sample[row] = sig[row, ::step]
        release_pages(sig)
    tail = np.ascontiguousarray(sig[:, -min(256, recording.n_times) :], dtype=np.float32)
    digest = hashlib.sha256(sample.tobytes() + tail.tobytes()).hexdigest()[:16]
    return {
        "source": str(recording.provenance.get("source", "")),
        "key": recording_key(recording),
        "shape": list(sig.shape),
        "sfreq": float(recording.sfreq),
        "ch_names": list(recording.ch_names),
        "bad_channels": list(recording.bad_channels),
        "events": [[e.onset, e.duration, e.label] for e in recording.events],
        "data": digest,
    }


def cache_key(
    recording: Recording,
    preprocess_config: Any | None = None,
    channels: Sequence[str] | None = None,
) -> str:
    """Hash of (source identity, preprocessing fingerprint, channel selection).

    Parameters
    ----------
    recording : Recording
        The raw recording.
    preprocess_config : PreprocessConfig or None
        ``None`` means the recording is used as is.
    channels : sequence of str or None
        Channels kept after preprocessing (in this order); ``None`` keeps all.

    Returns
    -------
    str
        24 hex digits.
    """
    payload = {
        "version": _CACHE_VERSION,
        "source": _source_identity(recording),
        "preprocess": None if preprocess_config is None else preprocess_config.fingerprint(),
        "channels": None if channels is None else list(channels),
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@dataclass
class CacheEntry:
    """One cached, preprocessed recording.

    Parameters
    ----------
    key : str
        The cache key (file stem).
    path : Path
        The ``.npy`` file: float32 ``(n_channels, n_times)``.
    recording : str
        :func:`~duin.data.splits.recording_key` of the source recording.
    subject : str
        Subject id.
    run : str or None
        Run id.
    task : str or None
        Task name.
    sfreq : float
        Sampling rate after preprocessing.
    ch_names : list of str
        Channels stored, in order.
    n_times : int
        Samples stored.
    events : list of Event
        Events (seconds).
    """

    key: str
    path: Path
    recording: str
    subject: str
    run: str | None
    task: str | None
    sfreq: float
    ch_names: list[str]
    n_times: int
    events: list[Event] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_times / self.sfreq

    def open(self) -> np.ndarray:
        """Read-only memory map of the signals ``(n_channels, n_times)``."""
        return np.load(self.path, mmap_mode="r")

    def to_json(self) -> dict[str, Any]:
        """Sidecar content."""
        return {
            "key": self.key,
            "recording": self.recording,
            "subject": self.subject,
            "run": self.run,
            "task": self.task,
            "sfreq": self.sfreq,
            "ch_names": self.ch_names,
            "n_times": self.n_times,
            "events": [[e.onset, e.duration, e.label] for e in self.events],
        }

    @classmethod
    def from_json(cls, path: Path, meta: dict[str, Any]) -> CacheEntry:
        """Rebuild from a sidecar (``path`` = the ``.npy`` file)."""
        return cls(
            key=meta["key"],
            path=path,
            recording=meta["recording"],
            subject=meta["subject"],
            run=meta["run"],
            task=meta["task"],
            sfreq=float(meta["sfreq"]),
            ch_names=list(meta["ch_names"]),
            n_times=int(meta["n_times"]),
            events=[Event(float(o), float(d), str(lab)) for o, d, lab in meta["events"]],
        )


@dataclass
class CacheIndex:
    """The cached recordings of one :func:`build_cache` call.

    Parameters
    ----------
    root : Path
        Cache directory.
    entries : list of CacheEntry
        One per input recording, in input order.
    n_built : int
        Entries computed by this call (0 when everything was reused).
    n_reused : int
        Entries found in the cache.
    """

    root: Path
    entries: list[CacheEntry]
    n_built: int = 0
    n_reused: int = 0

    def __post_init__(self) -> None:
        self._by_recording = {e.recording: e for e in self.entries}
        self._maps: dict[str, np.ndarray] = {}

    def __getitem__(self, recording: str) -> CacheEntry:
        try:
            return self._by_recording[recording]
        except KeyError:
            raise KeyError(
                f"recording {recording!r} is not in the cache at {self.root} "
                f"(it has {sorted(self._by_recording)[:5]}...)"
            ) from None

    def signals(self, recording: str) -> np.ndarray:
        """Memory map of one recording (opened once per process)."""
        if recording not in self._maps:
            self._maps[recording] = self[recording].open()
        return self._maps[recording]

    @property
    def subjects(self) -> list[str]:
        """Sorted subject ids."""
        return sorted({e.subject for e in self.entries})

    def spans(self) -> dict[str, tuple[str, float]]:
        """Recording key -> (subject, duration_s), for :func:`~duin.data.splits.pretrain_windows`."""
        return {e.recording: (e.subject, e.duration) for e in self.entries}

    def trials(self, tmin: float = 0.0, tmax: float = 3.0) -> list[Trial]:
        """All labelled events as trials (windows that do not fit the recording are skipped)."""
        out = []
        for e in self.entries:
            for i, ev in enumerate(e.events):
                if ev.onset + tmin >= 0 and ev.onset + tmax <= e.duration + 1e-9:
                    out.append(
                        Trial(e.recording, i, e.subject, e.run, ev.label, ev.onset, tmin, tmax)
                    )
        return out

    def __getstate__(self) -> dict[str, Any]:  # memmaps are reopened in worker processes
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state


def _atomic_json(path: Path, obj: Any) -> None:
    from duin.utils.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, ensure_ascii=False))


def _meta_digest(meta: Mapping[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_sidecar(entry: CacheEntry) -> None:
    """Write ``<key>.json`` last: the entry plus the SHA-256 of the ``.npy`` and of itself."""
    meta = entry.to_json()
    meta["sha256"] = {"npy": file_sha256(entry.path), "meta": _meta_digest(meta)}
    _atomic_json(entry.path.with_suffix(".json"), meta)


def _read_verified_entry(npy: Path, meta_path: Path) -> CacheEntry:
    """A cached entry whose sidecar and ``.npy`` match their recorded SHA-256.

    Raises
    ------
    IntegrityError
        The sidecar is unreadable, lacks hashes, or a file's content changed.
    """
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        digests = meta["sha256"]
        expected_meta, expected_npy = str(digests["meta"]), str(digests["npy"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise IntegrityError(meta_path, f"unreadable cache sidecar ({err!r})") from None
    if _meta_digest(meta) != expected_meta:
        raise IntegrityError(meta_path, "cache sidecar content does not match its sha256")
    if file_sha256(npy) != expected_npy:
        raise IntegrityError(npy, "cached signals do not match the sha256 in their sidecar")
    try:
        return CacheEntry.from_json(npy, meta)
    except (KeyError, TypeError, ValueError) as err:
        raise IntegrityError(meta_path, f"malformed cache sidecar ({err!r})") from None


def _channels_for(
    channels: Sequence[str] | Mapping[str, Sequence[str]] | None, subject: str
) -> list[str] | None:
    if channels is None:
        return None
    if isinstance(channels, Mapping):
        if subject not in channels:
            raise ValueError(f"channel selection has no entry for subject {subject!r}")
        return list(channels[subject])
    return list(channels)


def build_cache(
    recordings: Iterable[Recording],
    cache_dir: str | os.PathLike[str],
    preprocess_config: Any | None = None,
    channels: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
) -> CacheIndex:
    """Preprocess, select channels and store recordings as memory-mappable float32 ``.npy``.

    Parameters
    ----------
    recordings : iterable of Recording
        Raw recordings (keys from :func:`~duin.data.splits.recording_key` must be unique).
    cache_dir : path
        Directory for ``<key>.npy`` + ``<key>.json`` (created).
    preprocess_config : PreprocessConfig, optional
        Passed to :func:`duin.data.preprocess.preprocess`; ``None`` stores the signals as they
        are (e.g. already preprocessed data).
    channels : sequence of str, or mapping subject -> sequence, optional
        Channels to keep after preprocessing (names as preprocessing outputs them, e.g.
        ``"SM8-SM9"``), in this order; default all.

    Returns
    -------
    CacheIndex
        Entries in input order; ``n_built``/``n_reused`` tell what this call did.

    Raises
    ------
    ValueError
        Duplicate recording keys or a channel selection naming missing channels.
    """
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    entries: list[CacheEntry] = []
    n_built = n_reused = 0
    seen: set[str] = set()
    for rec in recordings:
        rkey = recording_key(rec)
        if rkey in seen:
            raise ValueError(f"build_cache: two recordings share the key {rkey!r}")
        seen.add(rkey)
        selection = _channels_for(channels, rec.subject)
        key = cache_key(rec, preprocess_config, selection)
        npy, meta_path = root / f"{key}.npy", root / f"{key}.json"
        if npy.is_file() and meta_path.is_file():
            try:
                entries.append(_read_verified_entry(npy, meta_path))
                n_reused += 1
                continue
            except IntegrityError as err:
                log.warning("cache entry fails its integrity check, rebuilding it: %s", err)
                meta_path.unlink(missing_ok=True)
        entries.append(_build_entry(rec, rkey, key, root, preprocess_config, selection))
        n_built += 1
    return CacheIndex(root=root, entries=entries, n_built=n_built, n_reused=n_reused)


def _build_entry(
    rec: Recording,
    rkey: str,
    key: str,
    root: Path,
    preprocess_config: Any | None,
    selection: list[str] | None,
) -> CacheEntry:
    scratch = None
    try:
        if preprocess_config is not None:
            from duin.data.preprocess import preprocess

            handle, name = tempfile.mkstemp(prefix=f".{key}.pre.", suffix=".npy", dir=root)
            os.close(handle)
            scratch = Path(name)
            rec = preprocess(rec, preprocess_config, out_path=scratch)
        names = rec.ch_names if selection is None else selection
        missing = [c for c in names if c not in rec.ch_names]
        if missing:
            raise ValueError(
                f"{rkey}: selected channels {missing} are not in the "
                f"{'preprocessed ' if preprocess_config is not None else ''}recording "
                f"(it has {rec.ch_names[:10]}{'...' if len(rec.ch_names) > 10 else ''})"
            )
        rows = [rec.ch_names.index(c) for c in names]
        entry = CacheEntry(
            key=key,
            path=root / f"{key}.npy",
            recording=rkey,
            subject=rec.subject,
            run=rec.run,
            task=rec.task,
            sfreq=float(rec.sfreq),
            ch_names=list(names),
            n_times=rec.n_times,
            events=list(rec.events),
        )
        if scratch is not None and rows == list(range(rec.n_channels)):
            # the preprocessed file already holds exactly what we need: no second copy
            rec = None  # type: ignore[assignment]
            os.replace(scratch, entry.path)
            scratch = None
            _write_sidecar(entry)
            return entry
        # Plain-I/O block writes (temp file + rename), not a writable memmap whose touched
        # pages would stay resident: memory does not depend on the recording's length.
        out = NpyBlockWriter(entry.path, (len(rows), rec.n_times))
        contiguous = rows == list(range(rec.n_channels))
        for start in range(0, rec.n_times, _COPY_BLOCK):
            stop = min(start + _COPY_BLOCK, rec.n_times)
            block = rec.signals[:, start:stop] if contiguous else rec.signals[rows, start:stop]
            out[:, start:stop] = block
            del block  # one block alive at a time
            release_pages(rec.signals)
        out.finish()
        # the sidecar is written last: a .npy without its .json is rebuilt next time
        _write_sidecar(entry)
        return entry
    finally:
        if scratch is not None:
            rec = None  # type: ignore[assignment]  # drop the memmap before unlinking
            scratch.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- normalisation
@dataclass
class ChannelStats:
    """Per-subject, per-channel mean and SD used for z-scoring.

    Parameters
    ----------
    mean, std : dict key -> numpy.ndarray
        float64 ``(n_channels,)`` each, keyed by subject (``by="subject"``) or recording key
        (``by="recording"``).
    source : str
        What they were computed on (e.g. ``"train trials"``), for reports.
    by : {"subject", "recording"}
        Granularity of the statistics.
    """

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    source: str = "train"
    by: str = "subject"

    def key_of(self, entry: CacheEntry) -> str:
        """The statistics key of a cached recording."""
        return entry.subject if self.by == "subject" else entry.recording

    def apply(self, key: str, x: np.ndarray) -> np.ndarray:
        """z-score ``x`` ``(n_channels, n_times)`` with the statistics of ``key`` (float32)."""
        if key not in self.mean:
            raise KeyError(f"no normalisation statistics for {self.by} {key!r}")
        mean = self.mean[key].astype(np.float32)[:, None]
        std = self.std[key].astype(np.float32)[:, None]
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "by": self.by,
            "mean": {s: v.tolist() for s, v in self.mean.items()},
            "std": {s: v.tolist() for s, v in self.std.items()},
        }


def compute_channel_stats(
    index: CacheIndex,
    items: Sequence[Trial] | Sequence[Window],
    source: str = "train",
    min_std: float = 1e-12,
    by: str = "subject",
) -> ChannelStats:
    """Per-channel mean/SD over the samples of ``items`` (trial windows or pretraining windows).

    Pass training items only (``split.normalization_trials`` gives the trials the split's
    protocol prescribes); nothing else is read.

    Parameters
    ----------
    index : CacheIndex
        The cache.
    items : sequence of Trial or Window
        Spans to pool, per subject.
    source : str
        Label stored with the statistics.
    min_std : float
        Floor on the SD (flat channels).
    by : {"subject", "recording"}
        Pool per subject (trials) or per recording (the pretraining convention: each
        recording z-scored with its own training statistics).

    Returns
    -------
    ChannelStats
        Population SD (ddof 0), as the reference code computes it.
    """
    if by not in ("subject", "recording"):
        raise ValueError(f"compute_channel_stats: by must be 'subject' or 'recording', got {by!r}")
    acc: dict[str, list[np.ndarray]] = {}
    counts: dict[str, int] = {}
    for item in items:
        entry = index[item.recording]
        group = entry.subject if by == "subject" else entry.recording
        sig = index.signals(item.recording)
        s0 = int(round(item.start * entry.sfreq))
        s1 = min(s0 + int(round((item.stop - item.start) * entry.sfreq)), entry.n_times)
        s0 = max(s0, 0)
        for a in range(s0, s1, _COPY_BLOCK):
            block = np.asarray(sig[:, a : min(a + _COPY_BLOCK, s1)], dtype=np.float64)
            sums = acc.setdefault(group, [np.zeros(block.shape[0]), np.zeros(block.shape[0])])
            if sums[0].shape[0] != block.shape[0]:
                raise ValueError(
                    f"subject {entry.subject!r}: recordings have different channel counts; "
                    "select the same channels in every recording of a subject"
                )
            sums[0] += block.sum(axis=1)
            sums[1] += (block**2).sum(axis=1)
            counts[group] = counts.get(group, 0) + block.shape[1]
    if not counts:
        raise ValueError("compute_channel_stats: no samples (empty item list?)")
    mean, std = {}, {}
    for subject, (s1_, s2_) in acc.items():
        n = counts[subject]
        m = s1_ / n
        mean[subject] = m
        std[subject] = np.sqrt(np.maximum(s2_ / n - m**2, 0.0)) + 0.0
        std[subject] = np.maximum(std[subject], min_std)
    return ChannelStats(mean=mean, std=std, source=source, by=by)


# ---------------------------------------------------------------------------------- datasets
def shift_time(x: np.ndarray, shift: int) -> np.ndarray:
    """Shift ``x`` ``(n_channels, n_times)`` along time, zero-filling what is uncovered.

    A positive ``shift`` delays the signal (its first ``shift`` samples become 0); a negative
    one advances it (the last ``-shift`` samples become 0). Not circular.
    """
    if shift == 0:
        return x
    out = np.zeros_like(x)
    n = x.shape[-1]
    if abs(shift) >= n:
        return out
    if shift > 0:
        out[..., shift:] = x[..., : n - shift]
    else:
        out[..., : n + shift] = x[..., -shift:]
    return out


def _item_rng(seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index), int(stream)])


class _CacheDataset(Dataset):
    """Shared machinery: subject mapping, channel padding, normalisation."""

    def __init__(
        self,
        index: CacheIndex,
        recordings: Iterable[str],
        stats: ChannelStats | None,
        subjects: Sequence[str] | None,
        n_channels: int | None,
        seed: int,
        channel_rows: Sequence[int] | None = None,
    ) -> None:
        self.index = index
        used = sorted(set(recordings))
        self.subjects = list(subjects) if subjects is not None else index.subjects
        self.subject_index = {s: i for i, s in enumerate(self.subjects)}
        widths = {}
        for rkey in used:
            entry = index[rkey]
            if entry.subject not in self.subject_index:
                raise ValueError(f"subject {entry.subject!r} is not in subjects {self.subjects}")
            widths[rkey] = len(entry.ch_names)
        width = max([len(e.ch_names) for e in index.entries] + [0])
        self.n_channels = int(n_channels) if n_channels is not None else width
        too_wide = [k for k, w in widths.items() if w > self.n_channels]
        if too_wide:
            raise ValueError(
                f"recordings {too_wide[:3]} have more than n_channels={self.n_channels}"
            )
        if stats is not None:
            missing = sorted({stats.key_of(index[k]) for k in used} - set(stats.mean))
            if missing:
                raise ValueError(f"normalisation statistics lack {stats.by}s {missing}")
        self.stats = stats
        self.channel_rows = None if channel_rows is None else [int(r) for r in channel_rows]
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream for this epoch (crops, shifts)."""
        self.epoch = int(epoch)

    def _sample(
        self, entry: CacheEntry, start: int, length: int, label: int | None
    ) -> dict[str, torch.Tensor]:
        sig = self.index.signals(entry.recording)
        x = np.asarray(sig[:, start : start + length], dtype=np.float32)  # (C, T)
        if self.stats is not None:
            x = self.stats.apply(self.stats.key_of(entry), x)
        return self._finish(x, entry.subject, label)

    def _finish(self, x: np.ndarray, subject: str, label: int | None) -> dict[str, torch.Tensor]:
        if x.shape[0] < self.n_channels:  # zero-pad channels to the widest subject
            x = np.concatenate([x, np.zeros((self.n_channels - x.shape[0], x.shape[1]), x.dtype)])
        if self.channel_rows is not None:
            x = x[self.channel_rows]  # (len(channel_rows), T)
        sample = {
            "x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "subject": torch.tensor(self.subject_index[subject], dtype=torch.int64),
        }
        if label is not None:
            sample["labels"] = torch.tensor(label, dtype=torch.int64)
        return sample


class TrialDataset(_CacheDataset):
    """Labelled word trials from the cache.

    Parameters
    ----------
    index : CacheIndex
        The cache.
    trials : sequence of Trial
        Trials to serve (e.g. ``split.train``); each uses its own ``[tmin, tmax)`` window.
    labels : sequence of str, optional
        Label order (index = class); default the sorted labels of ``trials`` (for the paper's
        words: code-point order, as :data:`duin.data.words.WORDS`). Pass the same list to the
        train, val and test datasets.
    stats : ChannelStats, optional
        z-score statistics (from training data only); ``None`` leaves signals in volts.
    max_shift : int
        Shift augmentation range in samples (0 = off; the paper: 300 for training).
    seed : int
        Seed of the shift stream.
    subjects : sequence of str, optional
        Subject order for the ``subject`` index; default the cache's sorted subjects.
    n_channels : int, optional
        Pad to this many channels (default: the widest cached recording).
    channel_rows : sequence of int, optional
        After padding, keep only these channel rows, in this order (default all).
    """

    def __init__(
        self,
        index: CacheIndex,
        trials: Sequence[Trial],
        labels: Sequence[str] | None = None,
        stats: ChannelStats | None = None,
        max_shift: int = 0,
        seed: int = 0,
        subjects: Sequence[str] | None = None,
        n_channels: int | None = None,
        channel_rows: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            index, (t.recording for t in trials), stats, subjects, n_channels, seed, channel_rows
        )
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.trials = list(trials)
        self.labels = list(labels) if labels is not None else sorted({t.label for t in trials})
        self.label_index = {lab: i for i, lab in enumerate(self.labels)}
        unknown = sorted({t.label for t in self.trials} - set(self.label_index))
        if unknown:
            raise ValueError(f"trial labels {unknown[:5]} are not in labels")
        self.max_shift = int(max_shift)
        self._spans = []
        for t in self.trials:
            entry = index[t.recording]
            start = int(round(t.start * entry.sfreq))
            length = int(round((t.tmax - t.tmin) * entry.sfreq))
            if start < 0 or start + length > entry.n_times:
                raise ValueError(
                    f"{t.recording}: trial {t.index} window [{t.start:.3f}, {t.stop:.3f}) s is "
                    f"outside the cached recording ({entry.duration:.3f} s)"
                )
            self._spans.append((entry, start, length))

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        entry, start, length = self._spans[i]
        trial = self.trials[i]
        sample = self._sample(entry, start, length, self.label_index[trial.label])
        if self.max_shift:
            rng = _item_rng(self.seed, self.epoch, i, 1)
            shift = int(rng.integers(-self.max_shift, self.max_shift + 1))
            sample["x"] = torch.from_numpy(shift_time(sample["x"].numpy(), shift))
        return sample


class PretrainDataset(_CacheDataset):
    """Random fixed-length crops for self-supervised pretraining.

    One item per window; each fetch draws a crop start uniformly in the window (every start,
    including the last, is reachable), from ``(seed, epoch, index)``.

    Parameters
    ----------
    index : CacheIndex
        The cache.
    windows : sequence of Window
        From :func:`duin.data.splits.pretrain_windows` (they exclude val/test trials).
    crop_len : int
        Samples per crop (4000 = 4 s at 1 kHz).
    stats : ChannelStats, optional
        z-score statistics from training data; ``None`` leaves volts.
    seed : int
        Seed of the crop stream.
    subjects : sequence of str, optional
        Subject order; default the cache's sorted subjects.
    n_channels : int, optional
        Pad to this many channels.
    channel_rows : sequence of int, optional
        After padding, keep only these channel rows, in this order (default all).
    """

    def __init__(
        self,
        index: CacheIndex,
        windows: Sequence[Window],
        crop_len: int = 4000,
        stats: ChannelStats | None = None,
        seed: int = 0,
        subjects: Sequence[str] | None = None,
        n_channels: int | None = None,
        channel_rows: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            index, (w.recording for w in windows), stats, subjects, n_channels, seed, channel_rows
        )
        if crop_len < 1:
            raise ValueError(f"crop_len must be >= 1, got {crop_len}")
        self.crop_len = int(crop_len)
        self.windows = []
        self._spans = []
        for w in windows:
            entry = index[w.recording]
            # sample-exact bounds strictly inside the window (never into an excluded span)
            lo = int(np.ceil(w.start * entry.sfreq - 1e-6))
            hi = min(int(np.floor(w.stop * entry.sfreq + 1e-6)), entry.n_times)
            if hi - lo < self.crop_len:
                continue  # too short for one crop
            self.windows.append(w)
            self._spans.append((entry, lo, hi))
        if not self._spans:
            raise ValueError(
                f"PretrainDataset: no window holds a {self.crop_len}-sample crop "
                f"({len(windows)} windows given)"
            )

    def __len__(self) -> int:
        return len(self._spans)

    def crop_start(self, i: int) -> int:
        """Start sample of item ``i``'s crop in the current epoch."""
        _, lo, hi = self._spans[i]
        rng = _item_rng(self.seed, self.epoch, i, 2)
        return int(rng.integers(lo, hi - self.crop_len + 1))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        entry = self._spans[i][0]
        return self._sample(entry, self.crop_start(i), self.crop_len, None)


def verify_cache(cache_dir: str | os.PathLike[str]) -> int:
    """Check every entry of a cache directory against the SHA-256 in its sidecar.

    Parameters
    ----------
    cache_dir : path
        A :func:`build_cache` directory.

    Returns
    -------
    int
        Number of entries verified.

    Raises
    ------
    IntegrityError
        The first entry whose sidecar or signals do not match (naming the file).
    """
    n = 0
    for npy in sorted(Path(cache_dir).glob("[!.]*.npy")):
        meta_path = npy.with_suffix(".json")
        if meta_path.is_file():
            _read_verified_entry(npy, meta_path)
            n += 1
    return n

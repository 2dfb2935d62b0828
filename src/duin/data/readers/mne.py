"""Read MNE-Python ``Raw`` and ``Epochs`` objects into a :class:`Recording`.

MNE stores electrophysiology in volts, as :class:`Recording` does, so no scaling is applied.
By default only intracranial/EEG data channels are kept (``seeg``, ``ecog``, ``dbs``, ``eeg``);
pass ``picks`` for anything else. ``Epochs`` become one continuous recording made of the epochs
laid end to end, with one event per epoch (its event name as label, its length as duration).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from duin.data.recording import Event, Recording, RecordingError
from duin.data.words import check_labels

__all__ = ["DEFAULT_CH_TYPES", "read_mne"]

#: Channel types kept when ``picks`` is not given.
DEFAULT_CH_TYPES: tuple[str, ...] = ("seeg", "ecog", "dbs", "eeg")
# Annotations with these description prefixes are bookkeeping, not events.
_IGNORED_PREFIXES: tuple[str, ...] = ("New Segment",)
# Samples copied per block when reading a Raw that is not preloaded.
_BLOCK = 1_000_000


def _pick_indices(info: Any, picks: str | Sequence[str] | None, where: str) -> list[int]:
    if picks is None:
        types = [t for t in DEFAULT_CH_TYPES if t in info.get_channel_types()]
        if not types:
            raise RecordingError(
                f"{where}: no channels of types {list(DEFAULT_CH_TYPES)}; pass picks= "
                f"(channel types present: {sorted(set(info.get_channel_types()))})"
            )
        picks = types
    try:
        from mne.io.pick import _picks_to_idx  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - moved in newer MNE
        from mne._fiff.pick import _picks_to_idx  # type: ignore[no-redef]
    try:
        return [int(i) for i in _picks_to_idx(info, picks, exclude=())]
    except ValueError as exc:
        raise RecordingError(f"{where}: invalid picks {picks!r}: {exc}") from exc


def _coords(info: Any, index: list[int]) -> np.ndarray | None:
    locs = np.array([info["chs"][i]["loc"][:3] for i in index], dtype=np.float64)
    known = np.isfinite(locs).all(axis=1) & (np.abs(locs).sum(axis=1) > 0)
    if not known.any():
        return None
    locs[~known] = np.nan
    return locs


def _subject(info: Any, subject: str | None) -> str:
    if subject is not None:
        return str(subject)
    subject_info = info.get("subject_info") or {}
    return str(subject_info.get("his_id") or "01")


def read_mne(
    inst: Any,
    subject: str | None = None,
    *,
    picks: str | Sequence[str] | None = None,
    vocabulary: Iterable[str] | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
) -> Recording:
    """Convert an MNE ``Raw`` or ``Epochs`` object into a :class:`Recording`.

    Parameters
    ----------
    inst : mne.io.BaseRaw or mne.BaseEpochs
        The data (not modified).
    subject : str, optional
        Subject identifier; default ``info["subject_info"]["his_id"]`` or ``"01"``.
    picks : str or sequence of str, optional
        MNE picks (channel names or types); default the data channels of types
        :data:`DEFAULT_CH_TYPES`.
    vocabulary : iterable of str, optional
        Allowed event labels; others raise.
    session, task, run : str, optional
        BIDS-style entities to record.

    Returns
    -------
    Recording
        Signals in volts; events from the annotations (``Raw``; BrainVision "New Segment"
        markers skipped) or one per epoch (``Epochs``); bad channels from ``info["bads"]``;
        coordinates from the channel locations when set (in the montage's frame, metres).

    Raises
    ------
    RecordingError
        No channels selected, labels outside ``vocabulary``, NaN/Inf, events outside the data.
    TypeError
        If ``inst`` is neither Raw nor Epochs.
    """
    import mne

    if isinstance(inst, mne.io.BaseRaw):
        return _read_raw(inst, subject, picks, vocabulary, session, task, run)
    if isinstance(inst, mne.BaseEpochs):
        return _read_epochs(inst, subject, picks, vocabulary, session, task, run)
    raise TypeError(f"read_mne expects an mne Raw or Epochs object, got {type(inst).__name__}")


def _source(inst: Any) -> str:
    filenames = [str(f) for f in (getattr(inst, "filenames", None) or []) if f]
    return filenames[0] if filenames else f"mne.{type(inst).__name__}"


def _read_raw(
    raw: Any,
    subject: str | None,
    picks: str | Sequence[str] | None,
    vocabulary: Iterable[str] | None,
    session: str | None,
    task: str | None,
    run: str | None,
) -> Recording:
    where = _source(raw)
    index = _pick_indices(raw.info, picks, where)
    sfreq = float(raw.info["sfreq"])
    n_times = raw.n_times
    signals = np.empty((len(index), n_times), dtype=np.float32)
    for start in range(0, n_times, _BLOCK):
        stop = min(start + _BLOCK, n_times)
        signals[:, start:stop] = raw.get_data(picks=index, start=start, stop=stop)
    annotations = raw.annotations
    events = []
    if len(annotations):
        # A Raw keeps its annotations on its own time axis (orig_time == meas_date), which
        # starts first_time seconds before the first sample.
        onsets = np.asarray(annotations.onset, dtype=np.float64) - raw.first_time
        for onset, ann in zip(onsets, annotations, strict=True):
            label = str(ann["description"])
            if label.startswith(_IGNORED_PREFIXES):
                continue
            events.append(Event(round(onset * sfreq) / sfreq, float(ann["duration"]), label))
    check_labels([ev.label for ev in events], vocabulary, f"{where} annotations description")
    names = [raw.ch_names[i] for i in index]
    return Recording(
        signals=signals,
        sfreq=sfreq,
        ch_names=names,
        subject=_subject(raw.info, subject),
        events=events,
        ch_coords=_coords(raw.info, index),
        bad_channels=[name for name in raw.info["bads"] if name in names],
        session=session,
        task=task,
        run=run,
        provenance={"source": where, "reader": "read_mne"},
    )


def _read_epochs(
    epochs: Any,
    subject: str | None,
    picks: str | Sequence[str] | None,
    vocabulary: Iterable[str] | None,
    session: str | None,
    task: str | None,
    run: str | None,
) -> Recording:
    where = _source(epochs)
    index = _pick_indices(epochs.info, picks, where)
    sfreq = float(epochs.info["sfreq"])
    n_epochs, n_epoch_times = len(epochs), len(epochs.times)
    if n_epochs == 0:
        raise RecordingError(f"{where}: no epochs")
    code_to_name = {code: name for name, code in epochs.event_id.items()}
    labels = [code_to_name.get(int(code), str(int(code))) for code in epochs.events[:, 2]]
    check_labels(labels, vocabulary, f"{where} event names")
    signals = np.empty((len(index), n_epochs * n_epoch_times), dtype=np.float32)
    batch = max(1, _BLOCK // max(n_epoch_times, 1))
    for start in range(0, n_epochs, batch):
        stop = min(start + batch, n_epochs)
        block = epochs[start:stop].get_data(picks=index)  # (n, n_channels, n_epoch_times)
        signals[:, start * n_epoch_times : stop * n_epoch_times] = np.concatenate(
            list(block), axis=1
        )
    epoch_s = n_epoch_times / sfreq
    events = [Event(k * epoch_s, epoch_s, label) for k, label in enumerate(labels)]
    names = [epochs.ch_names[i] for i in index]
    return Recording(
        signals=signals,
        sfreq=sfreq,
        ch_names=names,
        subject=_subject(epochs.info, subject),
        events=events,
        ch_coords=_coords(epochs.info, index),
        bad_channels=[name for name in epochs.info["bads"] if name in names],
        session=session,
        task=task,
        run=run,
        provenance={"source": where, "reader": "read_mne", "epoch_tmin": float(epochs.tmin)},
    )

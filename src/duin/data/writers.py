"""Write recordings as a BIDS iEEG dataset (via mne-bids) or in the released Du-IN layout.

Both writers check everything first, write into a temporary folder beside the destination and
rename it into place at the end, so an interrupted or failed write never leaves a destination
that looks complete.

BIDS: each Recording becomes one run in BrainVision format, written here as IEEE float32 in
microvolts (float32 keeps ~7 significant digits, far below the noise of any recording) and then
handed to :func:`mne_bids.write_raw_bids`, which copies it into place and writes the sidecars
(``channels.tsv`` with ``status``, ``events.tsv`` with the labels as ``trial_type``,
``ieeg.json``, ``scans.tsv``, ``participants.tsv``, ``dataset_description.json``). Coordinates
and regions go to ``sub-<s>[_ses-<x>]_electrodes.tsv`` (``name x y z size group region``,
metres) with its ``coordsystem.json`` (system ``Other``, units ``m``) and an ``electrodes.json``
describing the ``group`` and ``region`` columns.

Released layout: see :mod:`duin.data.readers.released`; one 3-s epoch (at 1000 Hz) per event.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from duin.data.readers.released import (
    DATASET_DIR,
    DEFAULT_VARIANT,
    PRETRAIN_DIR,
    PRETRAIN_VARIANT,
    TASK_DIR,
)
from duin.data.recording import Recording, RecordingError
from duin.data.words import check_labels

__all__ = [
    "bids_label",
    "write_bids",
    "write_brainvision",
    "write_released",
    "write_released_pretrain",
]

# Samples per block when streaming signals to disk (bounded memory for memory-mapped input).
_BLOCK = 1_000_000


def bids_label(value: str | int | None, default: str | None = None) -> str | None:
    """Turn ``value`` into a BIDS entity label (letters and digits only; ``None`` stays ``None``)."""
    if value is None:
        return default
    label = re.sub(r"[^A-Za-z0-9]", "", str(value))
    if not label:
        raise RecordingError(f"cannot make a BIDS label from {value!r} (no letters or digits)")
    return label


def _shaft(name: str) -> str:
    from duin.data.preprocess import parse_contact

    parsed = parse_contact(name.split("-")[0])
    return parsed[0] if parsed else name


def _escape_bv(text: str) -> str:
    return text.replace(",", r"\1").replace("\n", " ").replace("\r", " ")


def write_brainvision(rec: Recording, vhdr_path: str | PathLike[str]) -> Path:
    """Write ``rec`` as a BrainVision triplet (``.vhdr``/``.vmrk``/``.eeg``), float32 microvolts.

    Events go into the ``.vmrk`` as ``Comment`` markers (position and length in samples).

    Parameters
    ----------
    rec : Recording
        The recording (signals in volts; read block-wise, so a memmap stays on disk).
    vhdr_path : path-like
        Destination ``.vhdr``; the other two files share its stem.

    Returns
    -------
    Path
        The ``.vhdr`` path.
    """
    vhdr = Path(vhdr_path)
    stem = vhdr.stem
    eeg, vmrk = vhdr.with_suffix(".eeg"), vhdr.with_suffix(".vmrk")
    channels = "\n".join(
        f"Ch{i + 1}={_escape_bv(name)},,1,µV" for i, name in enumerate(rec.ch_names)
    )
    vhdr.write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n"
        "; Written by duin\n\n"
        "[Common Infos]\nCodepage=UTF-8\n"
        f"DataFile={stem}.eeg\nMarkerFile={stem}.vmrk\n"
        "DataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
        f"NumberOfChannels={rec.n_channels}\n"
        f"SamplingInterval={1e6 / rec.sfreq!r}\n\n"
        "[Binary Infos]\nBinaryFormat=IEEE_FLOAT_32\n\n"
        "[Channel Infos]\n" + channels + "\n",
        encoding="utf-8",
    )
    markers = ["Mk1=New Segment,,1,1,0"]
    for k, ev in enumerate(rec.events, start=2):
        position = int(round(ev.onset * rec.sfreq)) + 1
        length = max(1, int(round(ev.duration * rec.sfreq)))
        markers.append(f"Mk{k}=Comment,{_escape_bv(ev.label)},{position},{length},0")
    vmrk.write_text(
        "Brain Vision Data Exchange Marker File, Version 1.0\n\n"
        f"[Common Infos]\nCodepage=UTF-8\nDataFile={stem}.eeg\n\n"
        "[Marker Infos]\n" + "\n".join(markers) + "\n",
        encoding="utf-8",
    )
    with eeg.open("wb") as handle:
        for start in range(0, rec.n_times, _BLOCK):
            block = np.asarray(rec.signals[:, start : start + _BLOCK], dtype=np.float64) * 1e6
            # MULTIPLEXED: sample-major, little-endian float32
            handle.write(np.ascontiguousarray(block.T, dtype="<f4").tobytes())
    return vhdr


def _staging_dir(root: Path) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))


def _move_into_place(staging: Path, root: Path, overwrite: bool) -> None:
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"{root}: already exists (pass overwrite=True to replace it)")
        trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, trash / root.name)
        os.replace(staging, root)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, root)


def _write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    lines = ["\t".join(header)]
    lines += ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else repr(float(value))


def _write_electrodes(directory: Path, prefix: str, recordings: Sequence[Recording]) -> None:
    rows: dict[str, tuple] = {}
    for rec in recordings:
        if rec.ch_coords is None and rec.ch_regions is None:
            continue
        for i, name in enumerate(rec.ch_names):
            xyz = rec.ch_coords[i] if rec.ch_coords is not None else np.full(3, np.nan)
            region = rec.ch_regions[i] if rec.ch_regions is not None else "n/a"
            row = (name, *(_fmt(v) for v in xyz), "n/a", _shaft(name), region or "n/a")
            if name in rows and rows[name] != row:
                raise RecordingError(
                    f"recording of subject {rec.subject!r} run {rec.run!r}: channel {name!r} "
                    f"has coordinates/region {row[1:]} but another run has {rows[name][1:]}"
                )
            rows[name] = row
    if not rows:
        return
    # Replaces the all-n/a electrodes.tsv/coordsystem.json that mne-bids writes without a montage.
    base = prefix
    _write_tsv(
        directory / f"{base}_electrodes.tsv",
        ["name", "x", "y", "z", "size", "group", "region"],
        rows.values(),
    )
    (directory / f"{base}_electrodes.json").write_text(
        json.dumps(
            {
                "group": {"Description": "Electrode shaft (contact name without its number)"},
                "region": {"Description": "Anatomical region of the contact or channel"},
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    (directory / f"{base}_coordsystem.json").write_text(
        json.dumps(
            {
                "iEEGCoordinateSystem": "Other",
                "iEEGCoordinateUnits": "m",
                "iEEGCoordinateSystemDescription": (
                    "Coordinates as stored in the duin Recording (metres); frame of the source data"
                ),
            },
            indent=2,
        ),
        encoding="utf-8",
    )


def write_bids(
    recordings: Recording | Sequence[Recording],
    root: str | PathLike[str],
    *,
    ch_type: str = "seeg",
    line_freq: float = 50.0,
    vocabulary: Iterable[str] | None = None,
    default_task: str = "words",
    dataset_name: str = "duin recordings",
    authors: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write recordings as one BIDS iEEG dataset (BrainVision, float32 microvolts).

    Parameters
    ----------
    recordings : Recording or sequence of Recording
        One run each; ``subject``, ``session``, ``task`` and ``run`` become BIDS entities (made
        alphanumeric; a missing task becomes ``default_task``, a missing run the run's index
        among the recordings of the same subject/session/task when there are several).
    root : path-like
        The dataset folder to create.
    ch_type : str
        MNE/BIDS channel type of every channel (``"seeg"`` or ``"ecog"``).
    line_freq : float
        Power-line frequency for ``ieeg.json``.
    vocabulary : iterable of str, optional
        Allowed event labels; others raise before anything is written.
    default_task : str
        Task label for recordings without one.
    dataset_name : str
        ``Name`` in ``dataset_description.json``.
    authors : sequence of str
        ``Authors`` in ``dataset_description.json`` (left out when empty).
    overwrite : bool
        Replace an existing ``root`` (atomically, after the new dataset is complete).

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    FileExistsError
        ``root`` exists and ``overwrite`` is False.
    RecordingError
        Duplicate entities, labels outside ``vocabulary``, inconsistent electrodes across runs.
    """
    import mne
    import mne_bids

    recs = [recordings] if isinstance(recordings, Recording) else list(recordings)
    if not recs:
        raise RecordingError("write_bids: no recordings given")
    root = Path(root)
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root}: already exists (pass overwrite=True to replace it)")

    # Resolve entities and check everything before writing anything.
    groups: dict[tuple, list[Recording]] = {}
    for rec in recs:
        rec.validate(check_finite=False)
        check_labels(rec.labels, vocabulary, f"recording of subject {rec.subject!r} events label")
        bad_text = [label for label in rec.labels if any(c in label for c in "\t\r\n")]
        if bad_text:
            raise RecordingError(
                f"recording of subject {rec.subject!r}: event labels {bad_text[:3]} contain tabs "
                "or line breaks, which events.tsv cannot hold"
            )
        key = (
            bids_label(rec.subject.removeprefix("sub-")),
            bids_label(rec.session.removeprefix("ses-") if rec.session else None),
            bids_label(rec.task, default_task),
        )
        groups.setdefault(key, []).append(rec)
    plan: list[tuple[Recording, dict[str, str | None]]] = []
    for (subject, session, task), members in groups.items():
        seen: set[str | None] = set()
        for i, rec in enumerate(members):
            run = (
                bids_label(rec.run)
                if rec.run is not None
                else (str(i + 1) if len(members) > 1 else None)
            )
            if run in seen:
                raise RecordingError(
                    f"write_bids: two recordings of sub-{subject} ses-{session} task-{task} "
                    f"have run {run!r}"
                )
            seen.add(run)
            plan.append((rec, {"subject": subject, "session": session, "task": task, "run": run}))

    staging = _staging_dir(root)
    scratch = Path(tempfile.mkdtemp(prefix="duin-bv-"))
    try:
        for n, (rec, entities) in enumerate(plan):
            vhdr = write_brainvision(rec, scratch / f"rec{n}.vhdr")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = mne.io.read_raw_brainvision(vhdr, preload=False, verbose="error")
                raw.set_channel_types(dict.fromkeys(raw.ch_names, ch_type), verbose="error")
                raw.info["bads"] = list(rec.bad_channels)
                raw.info["line_freq"] = line_freq
                raw.set_annotations(
                    mne.Annotations(
                        onset=[ev.onset for ev in rec.events],
                        duration=[ev.duration for ev in rec.events],
                        description=[ev.label for ev in rec.events],
                    )
                )
                labels = sorted(set(rec.labels))
                order = list(vocabulary) if vocabulary is not None else labels
                event_id = {label: order.index(label) + 1 for label in labels}
                bids_path = mne_bids.BIDSPath(root=staging, datatype="ieeg", **entities)
                mne_bids.write_raw_bids(
                    raw,
                    bids_path,
                    event_id=event_id if event_id else None,
                    overwrite=False,
                    verbose="error",
                )
        # Electrodes per subject/session (shared by its runs).
        by_prefix: dict[tuple[str, str | None], list[Recording]] = {}
        for rec, entities in plan:
            by_prefix.setdefault((entities["subject"], entities["session"]), []).append(rec)
        for (subject, session), members in by_prefix.items():
            directory = staging / f"sub-{subject}"
            if session:
                directory = directory / f"ses-{session}"
            prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            _write_electrodes(directory / "ieeg", prefix, members)
        description = staging / "dataset_description.json"
        meta = json.loads(description.read_text(encoding="utf-8"))
        meta["Name"] = dataset_name
        meta.pop("Authors", None)
        if authors:
            meta["Authors"] = list(authors)
        description.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        _move_into_place(staging, root, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root


class _DotDict(dict):
    """A record written as the paper's ``utils.DotDict.DotDict`` (see :func:`_dump_records`)."""


class _ReleasedPickler(pickle._Pickler):
    """Writes :class:`_DotDict` as the global ``utils.DotDict.DotDict`` without importing it.

    The paper's loaders read records by attribute (``info.ch_names``, ``record.name``), so
    plain dicts fail there; its ``DotDict`` (a ``dict`` subclass) restores the items through
    ``__setitem__``. duin's restricted unpickler maps that global back to plain dicts.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is not _DotDict:
            super().save_global(obj, name)
            return
        self.save("utils.DotDict")
        self.save("DotDict")
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def _dump_records(obj: Any, handle: Any) -> None:
    """Pickle (protocol 4) ``obj`` with every dict (top level or in a list) as a DotDict."""
    if isinstance(obj, dict):
        obj = _DotDict(obj)
    elif isinstance(obj, list):
        obj = [_DotDict(item) if isinstance(item, dict) else item for item in obj]
    _ReleasedPickler(handle, protocol=4).dump(obj)


def write_released(
    recordings: Recording | Sequence[Recording],
    root: str | PathLike[str],
    *,
    epoch_s: float = 3.0,
    sfreq: float = 1000.0,
    vocabulary: Iterable[str] | None = None,
    variant: str = DEFAULT_VARIANT,
    overwrite: bool = False,
    pretrain: Sequence[Recording] | None = None,
    window_s: float = 8.0,
    step_s: float = 4.0,
) -> Path:
    """Write recordings in the released Du-IN layout (one 3-s epoch per event).

    ``<root>/data/seeg.he2023xuanwu/<subject>/word-recitation/run<k>/<variant>/{data,info}``:
    ``data`` is a pickled list of records ``{"name": label, "data_s": float64 (n_channels,
    epoch_samples)}``, ``info`` a pickled record ``{"ch_names": [...]}`` (protocol 4). Records
    are pickled as the paper's ``utils.DotDict.DotDict`` (its loaders read them by attribute);
    duin's restricted unpickler reads them back as plain dicts.

    Parameters
    ----------
    recordings : Recording or sequence of Recording
        One run each (grouped by ``subject``; ``run`` must be a positive integer or absent, then
        runs are numbered 1, 2, ... in the given order).
    root : path-like
        Folder that gets ``data/seeg.he2023xuanwu/...`` (it may exist; the runs written must not,
        unless ``overwrite``).
    epoch_s : float
        Epoch length in seconds; each epoch starts at its event's onset.
    sfreq : float
        Required sampling rate (the layout does not store it; the release is 1000 Hz).
    vocabulary : iterable of str, optional
        Allowed labels.
    variant : str
        Dataset variant folder.
    overwrite : bool
        Replace existing run (and pretraining) folders.
    pretrain : sequence of Recording, optional
        Non-task recordings, preprocessed like the task runs, written as the paper's
        pretraining files with :func:`write_released_pretrain` (``window_s``, ``step_s``).
    window_s, step_s : float
        Pretraining window length and step in seconds (paper: 8 s windows, 4 s overlap).

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    RecordingError
        Wrong sampling rate, no events, an event whose epoch runs past the end (a recording
        shorter than one trial), labels outside ``vocabulary``, duplicate run numbers.
    FileExistsError
        A run folder exists and ``overwrite`` is False.
    """
    recs = [recordings] if isinstance(recordings, Recording) else list(recordings)
    if not recs:
        raise RecordingError("write_released: no recordings given")
    root = Path(root)
    n_epoch = int(round(epoch_s * sfreq))
    plan: list[tuple[Recording, str, int]] = []
    counters: dict[str, set[int]] = {}
    for rec in recs:
        where = f"recording of subject {rec.subject!r} run {rec.run!r}"
        if abs(rec.sfreq - sfreq) > 1e-9:
            raise RecordingError(
                f"{where}: sfreq is {rec.sfreq:g} Hz, the released layout needs {sfreq:g} Hz "
                "(resample with duin.data.preprocess first)"
            )
        if not rec.events:
            raise RecordingError(f"{where}: has no events to cut epochs from")
        check_labels(rec.labels, vocabulary, f"{where} events label")
        for ev in rec.events:
            start = int(round(ev.onset * sfreq))
            if start + n_epoch > rec.n_times:
                raise RecordingError(
                    f"{where}: event {ev.label!r} at {ev.onset:.3f}s needs {epoch_s:g}s of data "
                    f"but the recording ends at {rec.duration:.3f}s"
                )
        subject = rec.subject.removeprefix("sub-")
        used = counters.setdefault(subject, set())
        if rec.run is None:
            run = max(used, default=0) + 1
        elif str(rec.run).isdigit() and int(rec.run) > 0:
            run = int(rec.run)
        else:
            raise RecordingError(f"{where}: run must be a positive integer for the released layout")
        if run in used:
            raise RecordingError(f"{where}: two recordings of subject {subject!r} are run {run}")
        used.add(run)
        target = root / "data" / DATASET_DIR / subject / TASK_DIR / f"run{run}"
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
        plan.append((rec, subject, run))

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".released.tmp-", dir=root))
    try:
        for rec, subject, run in plan:
            run_dir = staging / subject / f"run{run}" / variant
            run_dir.mkdir(parents=True)
            records = []
            for ev in rec.events:
                start = int(round(ev.onset * sfreq))
                data_s = np.array(rec.signals[:, start : start + n_epoch], dtype=np.float64)
                records.append({"name": ev.label, "data_s": data_s})
            with (run_dir / "data").open("wb") as handle:
                _dump_records(records, handle)
            with (run_dir / "info").open("wb") as handle:
                _dump_records({"ch_names": list(rec.ch_names)}, handle)
        # Every run is complete: move each into place.
        for _rec, subject, run in plan:
            target = root / "data" / DATASET_DIR / subject / TASK_DIR / f"run{run}"
            target.parent.mkdir(parents=True, exist_ok=True)
            _move_into_place(staging / subject / f"run{run}", target, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if pretrain:
        write_released_pretrain(
            pretrain,
            root,
            window_s=window_s,
            step_s=step_s,
            sfreq=sfreq,
            overwrite=overwrite,
        )
    return root


def write_released_pretrain(
    recordings: Recording | Sequence[Recording],
    root: str | PathLike[str],
    *,
    window_s: float = 8.0,
    step_s: float = 4.0,
    sfreq: float = 1000.0,
    overwrite: bool = False,
) -> Path:
    """Write non-task recordings as the paper's pretraining files (duin-reference §1.2, §1.6).

    Per subject, ``<root>/data/seeg.he2023xuanwu/<subj>/pretrain/dataset.default.1000hz/``
    gets ``info`` (pickled dict ``{"ch_names": [...]}``) and one float32 ``.npy`` file of shape
    ``(2, n_channels, window)`` = ``(X_s, X_n)`` per window: windows of ``window_s`` seconds
    every ``step_s`` seconds (8 s with 4 s overlap, the paper's cut), starting at 0 in each
    recording; a recording's tail shorter than a window is dropped. ``X_s`` is z-scored per
    channel with the mean and standard deviation of all the subject's non-task samples (each
    sample counted once; no task trial enters them; a flat channel keeps its mean removed and
    is not scaled); ``X_n`` is zeros (the paper's code never uses it). ``normalization.json``
    beside them records the statistics (in the recordings' unit), window, step and sources.

    The paper's pretraining loader does not normalise (it feeds the files as stored), so the
    z-scoring happens here. Files are named ``<k>_<recording>_w<i>.npy`` (sorted = time order).

    Parameters
    ----------
    recordings : Recording or sequence of Recording
        Event-free, preprocessed recordings (same channels per subject), at ``sfreq``.
    root : path-like
        Folder that gets ``data/seeg.he2023xuanwu/...``.
    window_s, step_s : float
        Window length and step in seconds (``window_s`` > 4 s: the paper's loader needs at
        least 4001 samples for its 4-s crops).
    sfreq : float
        Required sampling rate (the paper's layout: 1000 Hz).
    overwrite : bool
        Replace a subject's existing pretraining folder.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    RecordingError
        Wrong sampling rate, recordings with events, channel lists that differ within a
        subject, NaN/Inf, a subject with no complete window.
    ValueError
        Impossible window or step.
    FileExistsError
        A subject's pretraining folder exists and ``overwrite`` is False.
    """
    recs = [recordings] if isinstance(recordings, Recording) else list(recordings)
    if not recs:
        raise RecordingError("write_released_pretrain: no recordings given")
    n_window = int(round(window_s * sfreq))
    n_step = int(round(step_s * sfreq))
    if n_step < 1 or n_window < 1:
        raise ValueError(f"window_s and step_s must be > 0, got {window_s}, {step_s}")
    root = Path(root)
    by_subject: dict[str, list[Recording]] = {}
    for rec in recs:
        where = f"pretraining recording of subject {rec.subject!r} run {rec.run!r}"
        if abs(rec.sfreq - sfreq) > 1e-9:
            raise RecordingError(
                f"{where}: sfreq is {rec.sfreq:g} Hz, the released layout needs {sfreq:g} Hz"
            )
        if rec.events:
            raise RecordingError(f"{where}: has events; pretraining recordings are non-task")
        group = by_subject.setdefault(rec.subject.removeprefix("sub-"), [])
        if group and list(rec.ch_names) != list(group[0].ch_names):
            raise RecordingError(
                f"{where}: channels differ from the subject's first pretraining recording "
                f"({rec.n_channels} vs {group[0].n_channels})"
            )
        group.append(rec)
    targets = {s: root / "data" / DATASET_DIR / s / PRETRAIN_DIR for s in by_subject}
    for subject, target in targets.items():
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
        starts = [range(0, r.n_times - n_window + 1, n_step) for r in by_subject[subject]]
        if not any(len(s) for s in starts):
            raise RecordingError(
                f"subject {subject!r}: no pretraining recording is {window_s:g} s long"
            )
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".released.tmp-", dir=root))
    try:
        for subject, group in by_subject.items():
            folder = staging / subject / PRETRAIN_VARIANT
            folder.mkdir(parents=True)
            mean, std = _channel_stats(group)
            scale = np.where(std > 0, std, 1.0)
            sources = []
            for k, rec in enumerate(group):
                name = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{rec.task or 'rest'}-run{rec.run or k}")
                signals = rec.signals
                n_files = 0
                for i, start in enumerate(range(0, rec.n_times - n_window + 1, n_step)):
                    x = np.asarray(signals[:, start : start + n_window], dtype=np.float64)
                    if not np.isfinite(x).all():
                        raise RecordingError(
                            f"subject {subject!r} recording {rec.run!r}: NaN/Inf in "
                            f"{start / sfreq:.1f}-{(start + n_window) / sfreq:.1f} s"
                        )
                    window = np.zeros((2, rec.n_channels, n_window), dtype=np.float32)
                    window[0] = (x - mean[:, None]) / scale[:, None]
                    np.save(folder / f"{k:03d}_{name}_w{i:05d}.npy", window)
                    n_files += 1
                sources.append(
                    {
                        "recording": f"{rec.task}-run{rec.run}",
                        "source": str(rec.provenance.get("source", "")),
                        "n_times": int(rec.n_times),
                        "n_files": n_files,
                    }
                )
            with (folder / "info").open("wb") as handle:
                _dump_records({"ch_names": list(group[0].ch_names)}, handle)
            meta = {
                "window_s": window_s,
                "step_s": step_s,
                "sfreq": sfreq,
                "normalization": "per-channel z-score over all non-task samples of the subject",
                "ch_names": list(group[0].ch_names),
                "mean": mean.tolist(),
                "std": std.tolist(),
                "recordings": sources,
            }
            (folder / "normalization.json").write_text(json.dumps(meta, indent=1) + "\n")
        for subject, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            _move_into_place(staging / subject, target, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _channel_stats(recordings: Sequence[Recording]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over all samples (float64, chunked)."""
    n_channels = recordings[0].n_channels
    total = np.zeros(n_channels)
    total_sq = np.zeros(n_channels)
    count = 0
    chunk = 1 << 18
    for rec in recordings:
        for start in range(0, rec.n_times, chunk):
            x = np.asarray(rec.signals[:, start : start + chunk], dtype=np.float64)
            total += x.sum(axis=1)
            count += x.shape[1]
    mean = total / count
    for rec in recordings:
        for start in range(0, rec.n_times, chunk):
            x = np.asarray(rec.signals[:, start : start + chunk], dtype=np.float64)
            total_sq += ((x - mean[:, None]) ** 2).sum(axis=1)
    return mean, np.sqrt(total_sq / count)

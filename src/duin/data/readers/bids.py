"""Read BIDS iEEG datasets (via mne-bids) into :class:`Recording` objects.

For each matching ``*_ieeg.<ext>`` data file (BrainVision, EDF, EEGLAB, ...):

- signals and bad channels (``channels.tsv`` ``status``) come from :func:`mne_bids.read_raw_bids`,
  in volts;
- events come from ``events.tsv`` (``onset``, ``duration``, and ``trial_type`` or ``value`` as the
  label), parsed here so that a malformed row is reported by file, row and column; without an
  ``events.tsv`` the data file's own markers (e.g. BrainVision ``.vmrk``; ``New Segment``
  markers skipped, the ``Comment/`` prefix MNE adds to comment markers removed) are used;
- regions come from a region-like column (``region``, ``anatomy``, ...) of ``channels.tsv`` or
  ``electrodes.tsv``; coordinates from ``electrodes.tsv`` ``x, y, z``, converted to metres with the
  ``iEEGCoordinateUnits`` of the matching ``coordsystem.json``.

:func:`read_bids` returns a list (one Recording per matching run, ordered by session and run);
:func:`read_bids_run` returns exactly one.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from duin.data.recording import Event, Recording, RecordingError
from duin.data.words import check_labels

__all__ = [
    "REGION_COLUMNS",
    "find_bids_runs",
    "read_bids",
    "read_bids_run",
    "read_channel_sidecars",
    "read_events_tsv",
    "read_tsv",
]

#: Columns searched (in order) for a channel's anatomical region when ``region_column="auto"``.
REGION_COLUMNS: tuple[str, ...] = (
    "region",
    "anatomical_region",
    "brain_region",
    "anatomy",
    "anat",
    "anatomical_label",
    "location",
)
_DATA_EXTENSIONS = (".vhdr", ".edf", ".EDF", ".bdf", ".BDF", ".set", ".nwb", ".mefd")
_COORD_UNITS = {"m": 1.0, "cm": 1e-2, "mm": 1e-3}
_NA = {"n/a", "", "nan", "NaN"}


def read_tsv(path: str | PathLike[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Read a BIDS TSV file (UTF-8, optional byte-order mark).

    Parameters
    ----------
    path : path-like
        The ``.tsv`` file.

    Returns
    -------
    header : list of str
        Column names.
    rows : list of dict
        One ``{column: text}`` per row (``"n/a"`` kept as text).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    RecordingError
        If a row has a different number of fields than the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (UnicodeDecodeError, csv.Error) as err:
        raise RecordingError(f"{path}: not a UTF-8 tab-separated file ({err})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise RecordingError(f"{path}: empty TSV file (no header)")
    header = [name.strip() for name in lines[0]]
    rows = []
    for i, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            raise RecordingError(
                f"{path}: line {i} has {len(line)} fields, the header has {len(header)}"
            )
        rows.append(dict(zip(header, line, strict=True)))
    return header, rows


def _float(text: str, path: Path, row: int, column: str, allow_na: bool) -> float:
    if text in _NA:
        if allow_na:
            return math.nan
        raise RecordingError(f"{path}: row {row} column {column!r} is n/a, expected a number")
    try:
        return float(text)
    except ValueError:
        raise RecordingError(
            f"{path}: row {row} column {column!r} is {text!r}, expected a number"
        ) from None


def read_events_tsv(path: str | PathLike[str], label_column: str | None = None) -> list[Event]:
    """Read a BIDS ``events.tsv`` into events.

    Parameters
    ----------
    path : path-like
        The file.
    label_column : str, optional
        Column holding the label; default ``trial_type`` when present, else ``value``.

    Returns
    -------
    list of Event
        Rows whose label is ``n/a`` are skipped; a ``n/a`` duration counts as 0.

    Raises
    ------
    RecordingError
        Missing ``onset``/label column, or a non-numeric onset/duration (naming row and column).
    """
    path = Path(path)
    header, rows = read_tsv(path)
    if "onset" not in header:
        raise RecordingError(f"{path}: no 'onset' column (columns: {header})")
    if label_column is None:
        label_column = next((c for c in ("trial_type", "value") if c in header), None)
        if label_column is None:
            raise RecordingError(f"{path}: no 'trial_type' or 'value' column for event labels")
    elif label_column not in header:
        raise RecordingError(f"{path}: no {label_column!r} column (columns: {header})")
    events = []
    for i, row in enumerate(rows, start=2):
        label = row[label_column].strip()
        if label in _NA:
            continue
        onset = _float(row["onset"], path, i, "onset", allow_na=False)
        duration = _float(row.get("duration", "n/a"), path, i, "duration", allow_na=True)
        events.append(Event(onset, 0.0 if math.isnan(duration) else duration, label))
    return events


def _bids_path(root, subject, session, task, run, datatype):
    import mne_bids

    return mne_bids.BIDSPath(
        root=root,
        subject=str(subject).removeprefix("sub-"),
        session=session,
        task=task,
        run=run,
        datatype=datatype,
        suffix=datatype,
    )


def find_bids_runs(
    root: str | PathLike[str],
    subject: str,
    task: str | None = None,
    session: str | None = None,
    run: str | int | None = None,
    datatype: str = "ieeg",
) -> list[Any]:
    """List the BIDS paths of the data files that match the entities, sorted by session and run.

    Parameters
    ----------
    root : path-like
        BIDS root (holds ``dataset_description.json``).
    subject, task, session, run : str, optional
        Entities to match (``None`` matches any).
    datatype : str
        BIDS datatype folder (``"ieeg"``, also ``"eeg"``).

    Returns
    -------
    list of mne_bids.BIDSPath
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: BIDS root not found")
    query = _bids_path(root, subject, session, task, run, datatype)
    matches = [p for p in query.match(ignore_json=True) if p.extension in _DATA_EXTENSIONS]

    def key(p: Any) -> tuple:
        run_key = (0, int(p.run), "") if p.run and p.run.isdigit() else (1, 0, p.run or "")
        return (p.session or "", run_key, p.task or "", p.acquisition or "")

    return sorted(matches, key=key)


def _region_column(header: Sequence[str], region_column: str | None) -> str | None:
    if region_column is None:
        return None
    if region_column != "auto":
        return region_column if region_column in header else None
    return next((c for c in REGION_COLUMNS if c in header), None)


def _electrodes(
    fpath: Path, subject: str, session: str | None, space: str | None
) -> tuple[Path, Path | None] | None:
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    candidates = sorted(fpath.parent.glob(f"{prefix}*_electrodes.tsv"))
    if space is not None:
        candidates = [c for c in candidates if f"_space-{space}_" in c.name]
    if not candidates:
        return None
    # Prefer a file with numbers in it (mne-bids writes an all-n/a one when it has no montage).
    with_numbers = [c for c in candidates if _has_coordinates(c)]
    electrodes = (with_numbers or candidates)[0]
    coordsystem = electrodes.with_name(
        electrodes.name.replace("_electrodes.tsv", "_coordsystem.json")
    )
    return electrodes, coordsystem if coordsystem.is_file() else None


def _has_coordinates(path: Path) -> bool:
    _, rows = read_tsv(path)
    return any(row.get(c, "n/a") not in _NA for row in rows for c in "xyz")


def _coord_scale(
    electrodes: Path, coordsystem: Path | None, values: np.ndarray
) -> tuple[float, str]:
    if coordsystem is not None:
        try:
            with coordsystem.open(encoding="utf-8-sig") as handle:
                meta = json.load(handle)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise RecordingError(f"{coordsystem}: not valid UTF-8 JSON ({err})") from None
        if not isinstance(meta, dict):
            raise RecordingError(f"{coordsystem}: expected a JSON object")
        unit = str(meta.get("iEEGCoordinateUnits", meta.get("EEGCoordinateUnits", "n/a")))
        if unit in _COORD_UNITS:
            return _COORD_UNITS[unit], unit
        raise RecordingError(
            f"{coordsystem}: field 'iEEGCoordinateUnits' is {unit!r}; coordinates in metres need "
            f"one of {list(_COORD_UNITS)} (pass coords=False to ignore {electrodes.name})"
        )
    # No coordsystem.json: guess as mne-bids does (heads are < 0.2 m across).
    finite = values[np.isfinite(values)]
    unit = "mm" if finite.size and np.abs(finite).max() > 1.0 else "m"
    return _COORD_UNITS[unit], unit + " (guessed)"


def read_channel_sidecars(
    fpath: Path,
    names: Sequence[str],
    subject: str,
    session: str | None = None,
    space: str | None = None,
    region_column: str | None = "auto",
    coords: bool = True,
) -> tuple[list[str] | None, np.ndarray | None, str | None]:
    """Regions and coordinates of ``names`` from a run's ``channels.tsv`` / ``electrodes.tsv``.

    Parameters
    ----------
    fpath : pathlib.Path
        The run's data file (sidecars are found beside it by BIDS naming).
    names : sequence of str
        Channel names of the recording, in order.
    subject, session, space : str or None
        BIDS entities used to find ``electrodes.tsv`` (and its ``coordsystem.json``).
    region_column : str or None
        Column with regions (``"auto"``: the first of :data:`REGION_COLUMNS`), None for none.
    coords : bool
        Read ``x``/``y``/``z`` (scaled to metres by ``coordsystem.json``'s units).

    Returns
    -------
    ch_regions : list of str or None
        Region per channel (``"n/a"`` where unknown); None when nothing is known.
    ch_coords : numpy.ndarray or None
        float64 ``(n_channels, 3)`` metres (NaN rows where unknown).
    coord_unit : str or None
        The unit the file used.

    Raises
    ------
    RecordingError
        A malformed sidecar (naming the file, row and column).
    """
    # Regions: channels.tsv first, then electrodes.tsv.
    regions: dict[str, str] = {}
    channels_path = fpath.with_name(fpath.name.rsplit("_", 1)[0] + "_channels.tsv")
    if channels_path.is_file():
        header, rows = read_tsv(channels_path)
        column = _region_column(header, region_column)
        if column:
            regions = {row["name"]: row[column] for row in rows if "name" in row}

    ch_coords = None
    found = _electrodes(fpath, subject, session, space)
    coord_unit = None
    if found is not None:
        electrodes_path, coordsystem_path = found
        header, rows = read_tsv(electrodes_path)
        if "name" not in header:
            raise RecordingError(f"{electrodes_path}: no 'name' column")
        by_name = {row["name"]: row for row in rows}
        if not regions:
            column = _region_column(header, region_column)
            if column:
                regions = {name: row[column] for name, row in by_name.items()}
        if coords and {"x", "y", "z"} <= set(header):
            xyz = np.full((len(names), 3), np.nan)
            for i, name in enumerate(names):
                row = by_name.get(name)
                if row is not None:
                    xyz[i] = [
                        _float(row[c], electrodes_path, i + 2, c, allow_na=True) for c in "xyz"
                    ]
            if np.isfinite(xyz).any():
                scale, coord_unit = _coord_scale(electrodes_path, coordsystem_path, xyz)
                ch_coords = xyz * scale
    ch_regions = [regions.get(name, "n/a") for name in names] if regions else None
    if ch_regions is not None and all(r in _NA for r in ch_regions):
        ch_regions = None
    return ch_regions, ch_coords, coord_unit


def _read_one(
    bids_path: Any,
    picks: str | Sequence[str] | None,
    region_column: str | None,
    label_column: str | None,
    vocabulary: Iterable[str] | None,
    require_events: bool,
    coords: bool,
    space: str | None,
) -> Recording:
    import mne_bids

    from duin.data.readers.mne import read_mne

    fpath = Path(bids_path.fpath)
    # Events first: events.tsv wins (parsed here for precise errors, before mne-bids reads it);
    # otherwise the data file's own markers.
    events_path = fpath.with_name(fpath.name.rsplit("_", 1)[0] + "_events.tsv")
    events: list[Event] | None = None
    if events_path.is_file():
        events = read_events_tsv(events_path, label_column)
        events_source = str(events_path)
        check_labels([ev.label for ev in events], vocabulary, f"{events_source} labels")
    elif require_events:
        raise FileNotFoundError(f"{events_path}: events file not found (require_events=True)")
    else:
        events_source = f"{fpath.name} markers"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = mne_bids.read_raw_bids(bids_path, verbose="error")
        except (ValueError, RuntimeError, KeyError) as exc:
            raise RecordingError(f"{fpath}: mne-bids could not read it: {exc}") from exc
    notes = [str(w.message) for w in caught]
    rec = read_mne(raw, subject=bids_path.subject, picks=picks)
    names = rec.ch_names

    if events is None:
        # BrainVision "Comment" markers carry free text: MNE prefixes their type.
        events = [
            Event(ev.onset, ev.duration, ev.label.removeprefix("Comment/")) for ev in rec.events
        ]
        check_labels([ev.label for ev in events], vocabulary, f"{events_source} labels")

    ch_regions, ch_coords, coord_unit = read_channel_sidecars(
        fpath, names, bids_path.subject, bids_path.session, space, region_column, coords
    )

    return rec.replace(
        events=events,
        ch_regions=ch_regions,
        ch_coords=ch_coords,
        session=bids_path.session,
        task=bids_path.task,
        run=bids_path.run,
        provenance={
            "source": str(fpath),
            "reader": "read_bids",
            "events": events_source,
            "coordinate_units": coord_unit,
            "warnings": notes,
        },
    )


def read_bids(
    root: str | PathLike[str],
    subject: str,
    task: str | None = None,
    session: str | None = None,
    run: str | int | None = None,
    *,
    datatype: str = "ieeg",
    picks: str | Sequence[str] | None = None,
    region_column: str | None = "auto",
    label_column: str | None = None,
    vocabulary: Iterable[str] | None = None,
    require_events: bool = False,
    coords: bool = True,
    space: str | None = None,
) -> list[Recording]:
    """Read every run of a BIDS iEEG dataset that matches the given entities.

    Parameters
    ----------
    root : path-like
        BIDS root.
    subject : str
        Subject label (with or without ``sub-``).
    task, session : str, optional
        Entities to match; ``None`` matches any.
    run : str or int, optional
        Run to match; ``None`` matches any.
    datatype : str
        ``"ieeg"`` (default) or another electrophysiology datatype (``"eeg"``).
    picks : str or sequence of str, optional
        Channels/types to keep (MNE picks); default the ``seeg``/``ecog``/``dbs``/``eeg`` channels.
    region_column : str or None
        Column of ``channels.tsv``/``electrodes.tsv`` with the region; ``"auto"`` searches
        :data:`REGION_COLUMNS` (pass ``"group"`` to use the shaft/grid as region); ``None``
        reads no regions.
    label_column : str, optional
        ``events.tsv`` column for labels (default ``trial_type``, else ``value``).
    vocabulary : iterable of str, optional
        Allowed event labels; others raise.
    require_events : bool
        Raise ``FileNotFoundError`` when a run has no ``events.tsv`` (instead of using the data
        file's markers).
    coords : bool
        Read coordinates from ``electrodes.tsv``.
    space : str, optional
        Which ``space-<label>`` electrodes file to use when there are several.

    Returns
    -------
    list of Recording
        One per matching data file, sorted by session then run (numerically).

    Raises
    ------
    FileNotFoundError
        Root missing, no matching data file, or (``require_events``) no events file.
    RecordingError
        Malformed sidecars (naming file, row, column), labels outside ``vocabulary``,
        NaN/Inf in the signals, events outside the recording.
    """
    paths = find_bids_runs(root, subject, task, session, run, datatype)
    if not paths:
        query = _bids_path(root, subject, session, task, run, datatype)
        raise FileNotFoundError(
            f"{root}: no {datatype} data file matches {query.basename!r} "
            f"(extensions {list(_DATA_EXTENSIONS)})"
        )
    return [
        _read_one(p, picks, region_column, label_column, vocabulary, require_events, coords, space)
        for p in paths
    ]


def read_bids_run(
    root: str | PathLike[str],
    subject: str,
    task: str | None = None,
    session: str | None = None,
    run: str | int | None = None,
    **kwargs: Any,
) -> Recording:
    """Like :func:`read_bids` but the entities must match exactly one run, which is returned.

    Raises
    ------
    RecordingError
        If several runs match (listing them), so the caller can pass ``session``/``run``.
    """
    recordings_paths = find_bids_runs(
        root, subject, task, session, run, kwargs.get("datatype", "ieeg")
    )
    if len(recordings_paths) > 1:
        raise RecordingError(
            f"{root}: {len(recordings_paths)} runs match; pass session=/run= to choose one of "
            f"{[p.basename for p in recordings_paths]}"
        )
    return read_bids(root, subject, task, session, run, **kwargs)[0]

"""Reader for the Du-IN release layout (Hugging Face ``liulab-repository/Du-IN``), with a safe unpickler.

Layout (duin-reference §1.1)::

    <root>/data/seeg.he2023xuanwu/<subj>/word-recitation/run<k>/dataset.bipolar.default.unaligned/
        data   # pickle: list of records {"name": <Chinese word>, "data_s": float64 (n_channels, 3000)}
        info   # pickle: record {"ch_names": [...]} (all bipolar channels of the run)
    <root>/data/seeg.he2023xuanwu/<subj>/pretrain/dataset.default.1000hz/
        info   # pickle: record {"ch_names": [...]}
        *.npy  # float (2, n_channels, T): (X_s, X_n), one pretraining window per file (§1.2)

Records in the real files are instances of ``utils.DotDict.DotDict`` (a ``dict`` subclass from the
paper's code). Pickles can run arbitrary code when loaded, so they are read with
:func:`load_pickle`, which rebuilds only numpy arrays, builtin containers/scalars and those
records (as plain dicts) and refuses everything else *before* calling it.

Each run's 3-s epochs (1000 Hz) are concatenated into one continuous :class:`Recording` with one
event per epoch (onset ``k * 3 s``, duration 3 s, label = the word). Each pretraining file is
one event-free :class:`Recording` (:func:`read_released_pretrain`), so a pipeline that takes one
crop per window reads exactly the windows the paper's code reads.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from duin.data.recording import Event, Recording, RecordingError
from duin.data.words import check_labels

__all__ = [
    "DATASET_DIR",
    "DEFAULT_VARIANT",
    "PRETRAIN_DIR",
    "PRETRAIN_VARIANT",
    "TASK_DIR",
    "UnsafePickleError",
    "list_released_runs",
    "load_pickle",
    "read_released",
    "read_released_pretrain",
    "released_pretrain_dir",
    "released_run_dir",
]

DATASET_DIR = "seeg.he2023xuanwu"
TASK_DIR = "word-recitation"
DEFAULT_VARIANT = "dataset.bipolar.default.unaligned"
PRETRAIN_DIR = "pretrain"
PRETRAIN_VARIANT = "dataset.default.1000hz"
# Globals that name the paper's record class; mapped to a stand-in without importing anything.
_RECORD_GLOBALS = {("utils.DotDict", "DotDict"), ("DotDict", "DotDict")}


class UnsafePickleError(RecordingError):
    """A pickle asked for a global outside the allow-list; nothing it named was executed."""


class _RecordStandIn(dict):
    """Stand-in for ``utils.DotDict.DotDict`` while unpickling; converted to ``dict`` afterwards."""

    def __setstate__(self, state: Any) -> None:
        # A DotDict that aliases its __dict__ to itself pickles its items again as state.
        if isinstance(state, dict):
            for key, value in state.items():
                self.setdefault(key, value)


def _numpy_global(name: str) -> Any:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)  # pragma: no cover - every numpy has these


def _frombuffer(*args: Any) -> Any:
    for module in ("numpy._core.numeric", "numpy.core.numeric"):
        try:
            return importlib.import_module(module)._frombuffer(*args)
        except (ImportError, AttributeError):
            continue
    raise AttributeError("_frombuffer")  # pragma: no cover


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); only that is needed.
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise UnsafePickleError("_codecs.encode called with non-text arguments")
    return text.encode(encoding)


_BUILTINS = {
    name: getattr(__import__("builtins"), name)
    for name in (
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "complex",
        "bool",
        "slice",
        "range",
    )
}


def _allowed(module: str, name: str) -> Any | None:
    if (module, name) in _RECORD_GLOBALS:
        return _RecordStandIn
    if module in ("builtins", "__builtin__") and name in _BUILTINS:
        return _BUILTINS[name]
    if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in (
        "_reconstruct",
        "scalar",
    ):
        return _numpy_global(name)
    if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in (
        "ndarray",
        "dtype",
    ):
        return getattr(np, name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        return _frombuffer
    if module == "_codecs" and name == "encode":
        return _codecs_encode
    if module == "collections" and name == "OrderedDict":
        return OrderedDict
    if module in ("copyreg", "copy_reg") and name == "_reconstructor":
        return _reconstructor
    return None


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # Protocol 0/1 pickles rebuild dict subclasses (the DotDict records) through
    # copyreg._reconstructor; allow exactly that, for container classes only.
    if cls not in (_RecordStandIn, dict, list, OrderedDict) or base not in (dict, list, object):
        raise UnsafePickleError(f"copyreg._reconstructor refused for {cls!r} / {base!r}")
    obj = base.__new__(cls) if base is object else base.__new__(cls, state)
    if base is not object and state is not None:
        base.__init__(obj, state)
    return obj


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is None:
            raise UnsafePickleError(
                f"{self._source}: refused to unpickle global '{module}.{name}' (only numpy "
                "arrays, builtin containers and utils.DotDict records are allowed); nothing "
                "was executed"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: persistent ids are not allowed ({pid!r})")


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {key: _to_plain(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_to_plain(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_to_plain(value) for value in obj)
    return obj


def load_pickle(path: str | PathLike[str]) -> Any:
    """Load a pickle that may contain only numpy arrays, builtin containers and DotDict records.

    Parameters
    ----------
    path : path-like
        The pickle file.

    Returns
    -------
    object
        The unpickled object; ``utils.DotDict.DotDict`` records become plain ``dict`` objects.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    UnsafePickleError
        If the pickle names any other global (e.g. ``os.system``); it is refused before it could
        be called, so nothing runs.
    RecordingError
        If the file is not a readable pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pickle file not found")
    with path.open("rb") as handle:
        try:
            obj = _RestrictedUnpickler(handle, str(path)).load()
        except UnsafePickleError as exc:
            if str(path) in str(exc):
                raise
            raise UnsafePickleError(f"{path}: {exc}; nothing was executed") from None
        except Exception as exc:  # truncated or corrupt file, wrong format
            raise RecordingError(f"{path}: not a readable pickle ({exc})") from exc
    return _to_plain(obj)


# ---------------------------------------------------------------------------------------- layout
def dataset_root(root: Path) -> Path:
    """The ``seeg.he2023xuanwu`` folder of a released Du-IN root (or the folder itself)."""
    for candidate in (root / "data" / DATASET_DIR, root / DATASET_DIR, root):
        if candidate.name == DATASET_DIR and candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"{root}: no '{DATASET_DIR}' folder (expected <root>/data/{DATASET_DIR}/<subject>/...)"
    )


def _subject_dir_name(subject: str | int) -> str:
    if isinstance(subject, int):
        return f"{subject:03d}"
    subject = str(subject)
    return subject.removeprefix("sub-")


def released_run_dir(root: str | PathLike[str], subject: str | int, run: int | str) -> Path:
    """Return ``<root>/data/seeg.he2023xuanwu/<subject>/word-recitation/run<run>`` (may not exist)."""
    return Path(root) / "data" / DATASET_DIR / _subject_dir_name(subject) / TASK_DIR / f"run{run}"


def list_released_runs(root: str | PathLike[str], subject: str | int = "001") -> list[int]:
    """List the run numbers of ``subject`` in numeric order (never directory-listing order).

    Parameters
    ----------
    root : path-like
        Folder holding ``data/seeg.he2023xuanwu`` (or that folder itself).
    subject : str or int
        Subject folder name, e.g. ``"001"`` (an int is zero-padded to three digits).

    Returns
    -------
    list of int
        Run numbers ``k`` of the ``run<k>`` folders, ascending.
    """
    task_dir = dataset_root(Path(root)) / _subject_dir_name(subject) / TASK_DIR
    if not task_dir.is_dir():
        raise FileNotFoundError(f"{task_dir}: no such subject/task folder")
    runs = []
    for child in task_dir.iterdir():
        match = re.fullmatch(r"run(\d+)", child.name)
        if match and child.is_dir():
            runs.append(int(match.group(1)))
    if not runs:
        raise FileNotFoundError(f"{task_dir}: no run<k> folders")
    return sorted(runs)


def _read_run(
    run_dir: Path,
    subject: str,
    run: int,
    ch_names: Sequence[str] | None,
    sfreq: float,
    vocabulary: Iterable[str] | None,
) -> Recording:
    data_path, info_path = run_dir / "data", run_dir / "info"
    for path in (data_path, info_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (a released run needs 'data' and 'info')")
    info = load_pickle(info_path)
    if not isinstance(info, dict) or "ch_names" not in info:
        raise RecordingError(f"{info_path}: expected a record with field 'ch_names'")
    all_names = [str(name) for name in info["ch_names"]]
    if ch_names is None:
        index = list(range(len(all_names)))
        names = all_names
    else:
        missing = [name for name in ch_names if name not in all_names]
        if missing:
            raise RecordingError(
                f"{info_path}: field 'ch_names' lacks the selected channels {missing} "
                f"(the run has {len(all_names)} channels)"
            )
        index = [all_names.index(name) for name in ch_names]
        names = list(ch_names)

    records = load_pickle(data_path)
    if not isinstance(records, list) or not records:
        raise RecordingError(f"{data_path}: expected a non-empty list of epoch records")
    n_epoch_times = None
    labels: list[str] = []
    signals: np.ndarray | None = None
    for k in range(len(records)):
        record, records[k] = records[k], None  # release each epoch once copied
        if not isinstance(record, dict) or "name" not in record or "data_s" not in record:
            raise RecordingError(f"{data_path}: record {k} lacks field 'name' or 'data_s'")
        data_s = np.asarray(record["data_s"])
        if data_s.ndim != 2 or data_s.shape[0] != len(all_names):
            raise RecordingError(
                f"{data_path}: record {k} field 'data_s' has shape {data_s.shape}, expected "
                f"({len(all_names)}, n_times) to match {info_path.name} 'ch_names'"
            )
        if n_epoch_times is None:
            n_epoch_times = data_s.shape[1]
            signals = np.empty((len(index), len(records) * n_epoch_times), dtype=np.float32)
        elif data_s.shape[1] != n_epoch_times:
            raise RecordingError(
                f"{data_path}: record {k} field 'data_s' has {data_s.shape[1]} samples, "
                f"record 0 has {n_epoch_times}"
            )
        if not np.isfinite(data_s[index]).all():
            raise RecordingError(f"{data_path}: record {k} field 'data_s' contains NaN/Inf")
        signals[:, k * n_epoch_times : (k + 1) * n_epoch_times] = data_s[index]
        labels.append(str(record["name"]))
    check_labels(labels, vocabulary, f"{data_path} field 'name'")
    assert signals is not None and n_epoch_times is not None
    epoch_s = n_epoch_times / sfreq
    events = [Event(k * epoch_s, epoch_s, label) for k, label in enumerate(labels)]
    return Recording(
        signals=signals,
        sfreq=sfreq,
        ch_names=names,
        subject=subject,
        events=events,
        task=TASK_DIR,
        run=str(run),
        provenance={
            "source": str(run_dir),
            "reader": "read_released",
            "n_channels_all": len(all_names),
            "epoch_samples": int(n_epoch_times),
        },
    )


def read_released(
    root: str | PathLike[str],
    subject: str | int = "001",
    runs: Iterable[int] | None = None,
    *,
    ch_names: Sequence[str] | None = None,
    variant: str = DEFAULT_VARIANT,
    sfreq: float = 1000.0,
    vocabulary: Iterable[str] | None = None,
) -> list[Recording]:
    """Read one subject of the released Du-IN layout, one continuous Recording per run.

    Parameters
    ----------
    root : path-like
        Folder holding ``data/seeg.he2023xuanwu`` (the paper's repository root), or that folder.
    subject : str or int
        Subject folder, ``"001"`` .. ``"012"`` (an int is zero-padded).
    runs : iterable of int, optional
        Run numbers to read; default all, in numeric order.
    ch_names : sequence of str, optional
        Channels to keep, in this order (e.g. the paper's 10 per subject); every run must have
        them all. Without it every run must have the same channel list.
    variant : str
        Dataset variant folder inside each run.
    sfreq : float
        Sampling rate of the stored epochs (the release does not store it; it is 1000 Hz).
    vocabulary : iterable of str, optional
        Allowed labels (e.g. :data:`duin.data.words.WORDS`); other labels raise.

    Returns
    -------
    list of Recording
        One per run, ascending run number; events ``k * T`` s long ``T`` (``T`` = 3 s), labelled
        with the word; ``run`` is the run number as a string, ``task`` ``"word-recitation"``.

    Raises
    ------
    FileNotFoundError
        Missing subject, run, ``data`` or ``info`` files.
    RecordingError
        Malformed records, channels missing from the selection, runs whose channel lists or
        epoch lengths differ, labels outside ``vocabulary``, NaN/Inf; or an
        :class:`UnsafePickleError` for a pickle that names a disallowed global.
    """
    subject_name = _subject_dir_name(subject)
    run_numbers = list_released_runs(root, subject_name) if runs is None else sorted(runs)
    data_root = dataset_root(Path(root))
    recordings: list[Recording] = []
    for run in run_numbers:
        run_dir = data_root / subject_name / TASK_DIR / f"run{run}" / variant
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: no such run folder")
        rec = _read_run(run_dir, subject_name, run, ch_names, sfreq, vocabulary)
        if recordings:
            first = recordings[0]
            if rec.ch_names != first.ch_names:
                raise RecordingError(
                    f"{run_dir / 'info'}: field 'ch_names' differs from run {first.run} "
                    f"({rec.n_channels} vs {first.n_channels} channels); pass ch_names= to select "
                    "channels common to all runs"
                )
            if rec.provenance["epoch_samples"] != first.provenance["epoch_samples"]:
                raise RecordingError(
                    f"{run_dir / 'data'}: epochs have {rec.provenance['epoch_samples']} samples, "
                    f"run {first.run} has {first.provenance['epoch_samples']} (a different "
                    "sampling rate or epoch length)"
                )
        recordings.append(rec)
    return recordings


def released_pretrain_dir(root: str | PathLike[str], subject: str | int) -> Path:
    """``<root>/data/seeg.he2023xuanwu/<subj>/pretrain/dataset.default.1000hz`` (may not exist)."""
    return dataset_root(Path(root)) / _subject_dir_name(subject) / PRETRAIN_DIR / PRETRAIN_VARIANT


def read_released_pretrain(
    root: str | PathLike[str],
    subject: str | int = "001",
    *,
    ch_names: Sequence[str] | None = None,
    sfreq: float = 1000.0,
) -> list[Recording]:
    """Read one subject's pretraining files of the paper's layout, one Recording per file.

    ``pretrain/dataset.default.1000hz/`` holds an ``info`` pickle (``ch_names``) and ``*.npy``
    files (found recursively, read in sorted path order) of shape ``(2, n_channels, T)``:
    ``(X_s, X_n)``; only ``X_s`` is read, as the paper's code does (duin-reference §1.2, §1.6).
    Files are read with ``allow_pickle=False``; ``X_s`` of the selected channels is loaded into
    memory as float32.

    Parameters
    ----------
    root : path-like
        Folder holding ``data/seeg.he2023xuanwu`` (or that folder).
    subject : str or int
        Subject folder (an int is zero-padded).
    ch_names : sequence of str, optional
        Channels to keep, in this order (default: all of ``info``).
    sfreq : float
        Sampling rate of the files (not stored in the layout; 1000 Hz).

    Returns
    -------
    list of Recording
        Event-free recordings (``task="pretrain"``, ``run`` = the file's path relative to the
        folder without ``.npy``, ``/`` -> ``-``), or ``[]`` when the subject has no pretraining folder.

    Raises
    ------
    RecordingError
        A missing or malformed ``info``, a file of the wrong shape or dtype, channels missing
        from the selection, NaN/Inf; :class:`UnsafePickleError` for a pickle naming a
        disallowed global.
    """
    folder = released_pretrain_dir(root, subject)
    if not folder.is_dir():
        return []
    info_path = folder / "info"
    if not info_path.is_file():
        raise RecordingError(f"{info_path}: missing (the pretraining folder needs an 'info')")
    info = load_pickle(info_path)
    if not isinstance(info, dict) or "ch_names" not in info:
        raise RecordingError(f"{info_path}: expected a record with field 'ch_names'")
    all_names = [str(name) for name in info["ch_names"]]
    names = all_names if ch_names is None else list(ch_names)
    missing = [name for name in names if name not in all_names]
    if missing:
        raise RecordingError(
            f"{info_path}: field 'ch_names' lacks the selected channels {missing} "
            f"(the pretraining files have {len(all_names)} channels)"
        )
    index = [all_names.index(name) for name in names]
    subject_name = _subject_dir_name(subject)
    recordings: list[Recording] = []
    for path in sorted(folder.rglob("*.npy")):
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise RecordingError(f"{path}: not a readable .npy array ({err})") from err
        if array.ndim != 3 or array.shape[:2] != (2, len(all_names)) or array.shape[2] < 1:
            raise RecordingError(
                f"{path}: shape {array.shape}, expected (2, {len(all_names)}, n_times) = "
                f"(X_s, X_n) with the {len(all_names)} channels of {info_path.name} 'ch_names'"
            )
        if array.dtype.kind != "f":
            raise RecordingError(f"{path}: dtype {array.dtype}, expected a float array")
        signals = np.array(array[0, index], dtype=np.float32)  # X_s only; X_n is never used
        del array
        if not np.isfinite(signals).all():
            raise RecordingError(f"{path}: X_s contains NaN/Inf")
        recordings.append(
            Recording(
                signals=signals,
                sfreq=sfreq,
                ch_names=names,
                subject=subject_name,
                task=PRETRAIN_DIR,
                run=path.relative_to(folder).with_suffix("").as_posix().replace("/", "-"),
                provenance={
                    "source": str(path),
                    "reader": "read_released_pretrain",
                    "n_channels_all": len(all_names),
                },
            )
        )
    return recordings

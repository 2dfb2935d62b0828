"""Writing a simulated corpus to disk (BIDS, the released layout, npz) and reading the npz
layout back (:func:`simulate_to_disk`, :func:`read_simulated`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from duin.data.recording import Event, Recording
from duin.data.simulate.config import SimulationConfig
from duin.data.simulate.corpus import simulate
from duin.data.simulate.oracle import band_power_baseline
from duin.utils.io import named_write_error


def simulate_to_disk(
    out: str | os.PathLike[str],
    format: str = "bids",
    config: SimulationConfig | None = None,
) -> Path:
    """Simulate a corpus and write it to ``out``, with ``simulation.json`` beside the data.

    Parameters
    ----------
    out : path
        Output directory; must not exist or be empty.
    format : {"bids", "released", "npz"}
        ``"bids"``: raw 2 kHz monopolar recordings (task and non-task runs) as a BIDS iEEG
        dataset via :func:`duin.data.writers.write_bids` (``simulation.json`` is listed in
        ``.bidsignore``). ``"released"``: the task runs preprocessed like the release
        (0.5-200 Hz, 50 Hz notch, 1000 Hz, bipolar named after the first contact) in the Du-IN
        layout via :func:`duin.data.writers.write_released`, with the non-task recordings,
        preprocessed the same way, as the paper's pretraining files
        (``<subj>/pretrain/dataset.default.1000hz/``: 8-s windows every 4 s, z-scored per channel
        over the non-task signal). ``"npz"``: raw ``.npy``
        signals per recording with a JSON sidecar each under ``raw/`` (no other dependency).
    config : SimulationConfig, optional
        Default: the ``"small"`` preset.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ValueError
        Unknown format or invalid config.
    FileExistsError
        ``out`` exists and is not empty.
    """
    if format not in ("bids", "released", "npz"):
        raise ValueError(
            f"simulate_to_disk: format must be 'bids', 'released' or 'npz', got {format!r}"
        )
    config = (config or SimulationConfig()).validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: already exists and is not empty")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.sim-", dir=out.parent))
    except OSError as err:
        raise named_write_error(err, out) from err
    try:
        raw_dir = out / "raw" if format == "npz" else scratch / "raw"
        corpus = simulate(config, out_dir=raw_dir)
        truth = corpus.truth()
        if config.compute_baseline:
            truth["baseline"] = {
                "method": "logistic regression (C=0.05, standardised) on log 70-170 Hz power in "
                "100-ms bins over 0-3 s of the informative channels; stratified 80/20 split",
                "accuracy": {s.subject: band_power_baseline(s) for s in corpus.subjects},
            }
        if format == "npz":
            for rec in corpus.recordings:
                _write_sidecar(
                    rec, out / "raw" / f"sub-{rec.subject}" / f"{rec.task}_run-{rec.run}.json"
                )
        elif format == "bids":
            from duin.data.writers import write_bids

            if out.exists():
                out.rmdir()  # empty (checked above); write_bids creates it atomically
            write_bids(
                corpus.recordings,
                out,
                line_freq=config.line_freq,
                vocabulary=corpus.vocabulary,
                dataset_name="duin simulated sEEG word-reading corpus",
            )
            ignore = out / ".bidsignore"
            previous = ignore.read_text() if ignore.exists() else ""
            _atomic_write_text(ignore, previous + "simulation.json\n")
        else:
            from duin.data.preprocess import PreprocessConfig, preprocess
            from duin.data.writers import write_released

            pre_cfg = PreprocessConfig(line_freq=config.line_freq, bipolar_naming="first")
            task = []
            for i, rec in enumerate(r for s in corpus.subjects for r in s.task_runs):
                task.append(preprocess(rec, pre_cfg, out_path=scratch / f"task{i}.npy"))
            rest = [
                preprocess(rec, pre_cfg, out_path=scratch / f"rest{i}.npy")
                for i, rec in enumerate(r for s in corpus.subjects for r in s.pretrain)
            ]
            write_released(task, out, vocabulary=corpus.vocabulary, pretrain=rest)
            del task, rest
            truth["released_preprocessing"] = pre_cfg.to_dict()
        _atomic_write_text(out / "simulation.json", json.dumps(truth, indent=1, ensure_ascii=False))
    finally:
        corpus = None  # release memmaps before removing their files
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def read_simulated(root: str | os.PathLike[str]) -> list[Recording]:
    """Read the ``"npz"`` layout of :func:`simulate_to_disk` back (signals memory-mapped).

    Parameters
    ----------
    root : path
        The folder given to :func:`simulate_to_disk` (or its ``raw`` folder).

    Returns
    -------
    list of Recording
        Sorted by subject, task and run.

    Raises
    ------
    FileNotFoundError
        If no ``.json`` + ``.npy`` pair is found.
    """
    root = Path(root)
    sidecars = sorted(p for p in root.rglob("*.json") if p.with_suffix(".npy").is_file())
    if not sidecars:
        raise FileNotFoundError(f"{root}: no simulated recordings (<name>.json + <name>.npy)")
    out = []
    for path in sidecars:
        meta = json.loads(path.read_text(encoding="utf-8"))
        signals = np.load(path.with_suffix(".npy"), mmap_mode="r")
        out.append(
            Recording(
                signals=signals,
                sfreq=float(meta["sfreq"]),
                ch_names=meta["ch_names"],
                subject=meta["subject"],
                events=[Event(e["onset"], e["duration"], e["label"]) for e in meta["events"]],
                ch_regions=meta.get("ch_regions"),
                ch_coords=None if meta.get("ch_coords") is None else np.asarray(meta["ch_coords"]),
                bad_channels=meta.get("bad_channels", []),
                task=meta.get("task"),
                run=meta.get("run"),
                provenance={"source": str(path.with_suffix(".npy")), "reader": "read_simulated"},
            )
        )
    return sorted(out, key=lambda r: (r.subject, r.task or "", int(r.run or 0)))


def _write_sidecar(rec: Recording, path: Path) -> None:
    """JSON description of a recording stored as ``.npy`` beside it."""
    meta = {
        "sfreq": rec.sfreq,
        "units": "V",
        "subject": rec.subject,
        "task": rec.task,
        "run": rec.run,
        "ch_names": rec.ch_names,
        "ch_regions": rec.ch_regions,
        "ch_coords": rec.ch_coords.tolist() if rec.ch_coords is not None else None,
        "bad_channels": rec.bad_channels,
        "events": [dataclasses.asdict(e) for e in rec.events],
    }
    _atomic_write_text(path, json.dumps(meta, ensure_ascii=False))


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

"""High-level workflows behind the ``duin`` commands: data in, run directories and reports out.

Every function takes a validated stage configuration (:mod:`duin.training.stages`) and an
output directory, and leaves a self-describing run directory::

    <out>/
      config.yaml            the resolved stage configuration
      data.json              data source, subjects, channels, split/normalisation protocol
      channels.json          channels used per subject (input order) and how they were chosen
      channel_ranking.{json,csv}, channels_sub-XX.png   when channels were ranked here
      selection/sub-XX/      the channel-ranking run (training trials only)
      sub-XX/                pretraining: one trainer run per subject
      sub-XX/seed-N/         fine-tuning: one trainer run per subject and seed, with
                             result.json (test metrics at the selected epoch), trial_data.json
                             (what predict needs) and confusion.png
      report.json, report.md fine-tuning: mean ± SE over seeds and subjects, chance, oracle

Data sources (``data.source``) are auto-detected: a BIDS root, a released Du-IN root, or a
directory written by ``duin simulate`` (any of its formats). Without a source the corpus is
simulated in memory from ``data.simulation``. Recordings are preprocessed once into a
content-keyed cache (:func:`duin.data.datasets.build_cache`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from duin.config import config_to_yaml
from duin.data.datasets import (
    CacheIndex,
    ChannelStats,
    PretrainDataset,
    TrialDataset,
    build_cache,
    compute_channel_stats,
)
from duin.data.recording import Recording
from duin.data.splits import Split, Trial, pretrain_windows, split_trials
from duin.training.channels import ChannelRanking, plot_ranking, rank_channels, save_rankings
from duin.training.stages import (
    ClsRunConfig,
    DataConfig,
    MAERunConfig,
    VQVAERunConfig,
    build_classifier,
    evaluate_classifier,
    load_stage_config,
    load_weights,
    predict_logits,
    select_epoch,
    train_classifier,
    train_mae,
    train_vqvae,
    write_json,
)
from duin.utils.io import atomic_write_text

__all__ = [
    "PreparedData",
    "detect_source",
    "evaluate",
    "finetune",
    "inspect_source",
    "load_recordings",
    "predict",
    "prepare_data",
    "pretrain_mae",
    "pretrain_vqvae",
    "run_demo",
    "select_channels",
]

logger = logging.getLogger(__name__)

_CHANNELS_FILE = "channels.json"
_RESULT_FILE = "result.json"
_TRIAL_DATA_FILE = "trial_data.json"


# ---------------------------------------------------------------------------------------------
# Data sources
# ---------------------------------------------------------------------------------------------


def detect_source(path: str | Path) -> str:
    """Recognise a dataset directory.

    Parameters
    ----------
    path : str or pathlib.Path
        A BIDS root, a released Du-IN root (or its ``seeg.he2023xuanwu`` folder) or a directory
        written by ``duin simulate``.

    Returns
    -------
    str
        ``"bids"``, ``"released"`` or ``"npz"`` (``duin simulate --format npz``).

    Raises
    ------
    FileNotFoundError
        When the directory is missing or matches none of the layouts.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"data source not found: {root}")
    if (root / "raw").is_dir() and any((root / "raw").glob("sub-*/*.json")):
        return "npz"
    if (root / "dataset_description.json").is_file():
        return "bids"
    for candidate in (root / "data" / "seeg.he2023xuanwu", root / "seeg.he2023xuanwu", root):
        if candidate.name == "seeg.he2023xuanwu" and candidate.is_dir():
            return "released"
    raise FileNotFoundError(
        f"{root}: not a recognised dataset (expected a BIDS root with dataset_description.json, "
        "a released Du-IN root with data/seeg.he2023xuanwu, or a 'duin simulate' directory)"
    )


def _subjects_in(root: Path, kind: str) -> list[str]:
    if kind == "npz":
        return sorted(p.name[4:] for p in (root / "raw").glob("sub-*") if p.is_dir())
    if kind == "bids":
        return sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir())
    from duin.data.readers.released import _dataset_root

    return sorted(p.name for p in _dataset_root(root).iterdir() if p.is_dir())


def _read_npz_subject(root: Path, subject: str) -> list[Recording]:
    from duin.data.readers.arrays import read_arrays

    out = []
    for meta_path in sorted((root / "raw" / f"sub-{subject}").glob("*.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        signals = np.load(meta_path.with_suffix(".npy"), mmap_mode="r")
        coords = meta.get("ch_coords")
        out.append(
            read_arrays(
                signals,
                float(meta["sfreq"]),
                meta["ch_names"],
                [(e["onset"], e["duration"], e["label"]) for e in meta.get("events", [])],
                subject=str(meta["subject"]),
                ch_regions=meta.get("ch_regions"),
                ch_coords=np.asarray(coords, dtype=float) if coords is not None else None,
                bad_channels=meta.get("bad_channels", []),
                task=meta.get("task"),
                run=meta.get("run"),
            )
        )
        out[-1].provenance["source"] = str(meta_path.with_suffix(".npy"))
    return out


@dataclass
class LoadedData:
    """Recordings of every selected subject and what is known about their origin.

    Parameters
    ----------
    recordings : dict
        Subject -> recordings (task runs and non-task recordings).
    kind : str
        ``"simulated"`` (in memory), ``"npz"``, ``"bids"`` or ``"released"``.
    source : str
        Path or a description of the simulation.
    truth : dict or None
        The simulator's ground truth (``simulation.json``): oracle accuracy, informative
        channels; None for real data.
    """

    recordings: dict[str, list[Recording]]
    kind: str
    source: str
    truth: dict[str, Any] | None = None


def load_recordings(data: DataConfig, *, quiet: bool = False) -> LoadedData:
    """Read (or simulate) the recordings a configuration points at.

    Parameters
    ----------
    data : DataConfig
        ``source`` (None = simulate from ``simulation``) and ``subjects``.
    quiet : bool
        Fewer log messages.

    Returns
    -------
    LoadedData
        Recordings per subject.
    """
    if data.source is None:
        from duin.data.simulate import simulate

        t0 = time.perf_counter()
        corpus = simulate(data.simulation)
        logger.info(
            "simulated %d subject(s), %d words in %.0f s",
            len(corpus.subjects),
            data.simulation.n_words,
            time.perf_counter() - t0,
        )
        recs = {s.subject: [*s.task_runs, *s.pretrain] for s in corpus.subjects}
        kind, source, truth = (
            "simulated",
            f"duin.simulate(seed={data.simulation.seed})",
            corpus.truth(),
        )
    else:
        root = Path(data.source).expanduser()
        kind = detect_source(root)
        source = str(root)
        truth = None
        if (root / "simulation.json").is_file():
            truth = json.loads((root / "simulation.json").read_text(encoding="utf-8"))
        available = _subjects_in(root, kind)
        wanted = available if data.subjects is None else [str(s) for s in data.subjects]
        missing = sorted(set(wanted) - set(available))
        if missing:
            raise ValueError(
                f"data.subjects: {missing} not in {root}; available subjects: {available}"
            )
        recs = {}
        for subject in wanted:
            if kind == "npz":
                recs[subject] = _read_npz_subject(root, subject)
            elif kind == "bids":
                from duin.data.readers.bids import read_bids

                recs[subject] = read_bids(root, subject)
            else:
                from duin.data.readers.released import read_released, read_released_pretrain

                # Task runs, then the paper's pretraining files (one event-free recording each).
                recs[subject] = read_released(root, subject) + read_released_pretrain(root, subject)
    if data.subjects is not None:
        unknown = sorted(set(map(str, data.subjects)) - set(recs))
        if unknown:
            raise ValueError(f"data.subjects: {unknown} not in the data; available: {sorted(recs)}")
        recs = {s: recs[s] for s in map(str, data.subjects)}
    if not recs:
        raise ValueError(f"no subjects found in {source}")
    return LoadedData(recordings=recs, kind=kind, source=source, truth=truth)


@dataclass
class PreparedData:
    """Preprocessed, cached recordings plus the trials of every subject.

    Parameters
    ----------
    loaded : LoadedData
        The raw recordings and their origin.
    index : CacheIndex
        Preprocessed recordings (all channels).
    preprocess : PreprocessConfig or None
        Preprocessing applied (None for already preprocessed data).
    """

    loaded: LoadedData
    index: CacheIndex
    preprocess: Any
    _channels: dict[str, list[str]] = field(default_factory=dict)
    _regions: dict[str, dict[str, str]] = field(default_factory=dict)
    _coords: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        """Subject ids, sorted."""
        return sorted(self.loaded.recordings)

    @property
    def truth(self) -> dict[str, Any] | None:
        """The simulator's ground truth, when the data are simulated."""
        return self.loaded.truth

    def entries(self, subject: str) -> list[Any]:
        """Cache entries of one subject."""
        return [e for e in self.index.entries if e.subject == subject]

    def sfreq(self, subject: str) -> float:
        """Sampling rate of the subject's preprocessed recordings."""
        rates = {e.sfreq for e in self.entries(subject)}
        if len(rates) != 1:
            raise ValueError(f"subject {subject!r}: recordings have different rates {rates}")
        return rates.pop()

    def ch_names(self, subject: str) -> list[str]:
        """Channels of a subject's preprocessed recordings (all recordings must agree)."""
        if subject not in self._channels:
            entries = self.entries(subject)
            if not entries:
                raise ValueError(f"unknown subject {subject!r}; subjects: {self.subjects}")
            for e in entries[1:]:
                if e.ch_names != entries[0].ch_names:
                    raise ValueError(
                        f"subject {subject!r}: recording {e.recording} has other channels than "
                        f"{entries[0].recording}; list the channels to use in data.channels"
                    )
            self._channels[subject] = list(entries[0].ch_names)
        return self._channels[subject]

    def trials(self, subject: str, tmin: float, tmax: float) -> list[Trial]:
        """Labelled trials of one subject."""
        return [t for t in self.index.trials(tmin, tmax) if t.subject == subject]

    def task_recordings(self, subject: str) -> list[str]:
        """Cache keys of the subject's recordings with events."""
        return [e.recording for e in self.entries(subject) if e.events]

    def rest_recordings(self, subject: str) -> list[str]:
        """Cache keys of the subject's recordings without events."""
        return [e.recording for e in self.entries(subject) if not e.events]

    def channel_info(self, subject: str) -> tuple[dict[str, str], dict[str, list[float]]]:
        """Region and coordinates of each preprocessed channel (when the reader knows them)."""
        if subject not in self._regions:
            regions: dict[str, str] = {}
            coords: dict[str, list[float]] = {}
            from duin.data.preprocess import spatial_map

            for rec in self.loaded.recordings[subject]:
                names, reg, xyz = rec.ch_names, rec.ch_regions, rec.ch_coords
                if self.preprocess is not None:
                    try:
                        plan = spatial_map(rec, self.preprocess)
                        names = plan.ch_names
                        reg = getattr(plan, "ch_regions", None)
                        xyz = getattr(plan, "ch_coords", None)
                    except Exception:  # regions are informative only
                        continue
                for i, name in enumerate(names):
                    if reg is not None and name not in regions:
                        regions[name] = str(reg[i])
                    if xyz is not None and name not in coords and np.isfinite(xyz[i]).all():
                        coords[name] = [float(v) for v in xyz[i]]
            self._regions[subject], self._coords[subject] = regions, coords
        return self._regions[subject], self._coords[subject]

    def oracle(self) -> dict[str, float] | None:
        """Simulator oracle accuracy per subject (None for real data)."""
        if not self.truth:
            return None
        oracle = self.truth.get("oracle_accuracy")
        return {str(k): float(v) for k, v in oracle.items()} if oracle else None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for ``data.json``."""
        return {
            "kind": self.loaded.kind,
            "source": self.loaded.source,
            "subjects": self.subjects,
            "preprocess": None if self.preprocess is None else self.preprocess.to_dict(),
            "simulated": self.truth is not None,
            "oracle_accuracy": self.oracle(),
            "cache": str(self.index.root),
        }


def prepare_data(data: DataConfig, cache_dir: str | Path, *, quiet: bool = False) -> PreparedData:
    """Load (or simulate) and preprocess the recordings into the cache.

    Parameters
    ----------
    data : DataConfig
        The data section.
    cache_dir : str or pathlib.Path
        Where preprocessed recordings are cached (reused across commands).
    quiet : bool
        Fewer messages.

    Returns
    -------
    PreparedData
        Cached recordings (all channels) and helpers.
    """
    loaded = load_recordings(data, quiet=quiet)
    preprocess = data.preprocess
    if loaded.kind == "released":
        preprocess = None  # the release is already filtered, notched, resampled and bipolar
    recs = [r for s in sorted(loaded.recordings) for r in loaded.recordings[s]]
    t0 = time.perf_counter()
    index = build_cache(recs, cache_dir, preprocess)
    logger.info(
        "preprocessed %d recording(s) (%d reused from the cache) in %.0f s",
        index.n_built + index.n_reused,
        index.n_reused,
        time.perf_counter() - t0,
    )
    return PreparedData(loaded=loaded, index=index, preprocess=preprocess)


# ---------------------------------------------------------------------------------------------
# Datasets for one subject
# ---------------------------------------------------------------------------------------------


class _Picked(Dataset):
    """Select channel rows of another dataset's ``x`` and rename ``label`` to ``labels``.

    ``set_epoch`` is forwarded, so the trainer moves the wrapped dataset's crops and shifts to
    each epoch (randomness is a function of seed, epoch and index: resumed runs draw the same).
    """

    def __init__(self, base: Any, rows: Sequence[int] | None) -> None:
        self.base = base
        self.rows = None if rows is None else torch.as_tensor(list(rows), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        """Move the wrapped dataset's per-epoch randomness (crops, shifts) to ``epoch``."""
        self.base.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = dict(self.base[i])
        if self.rows is not None:
            item["x"] = item["x"].index_select(0, self.rows)
        label = item.pop("label", None)
        if label is not None and int(label) >= 0:
            item["labels"] = label
        return item


@dataclass
class _SubjectTrials:
    split: Split
    labels: list[str]
    stats: ChannelStats
    rows: list[int]
    channels: list[str]
    all_channels: list[str]
    n_times: int
    tmin: float
    tmax: float
    sfreq: float

    def dataset(
        self, index: CacheIndex, part: str, *, max_shift: int = 0, seed: int = 0
    ) -> _Picked:
        trials = getattr(self.split, part)
        base = TrialDataset(
            index,
            trials,
            labels=self.labels,
            stats=self.stats,
            max_shift=max_shift,
            seed=seed,
            subjects=[trials[0].subject] if trials else None,
            n_channels=len(self.all_channels),
        )
        return _Picked(base, self.rows)

    def arrays(self, index: CacheIndex, part: str) -> tuple[np.ndarray, np.ndarray]:
        ds = self.dataset(index, part)
        if len(ds) == 0:
            return np.zeros((0, len(self.rows), self.n_times), np.float32), np.zeros(0, np.int64)
        items = [ds[i] for i in range(len(ds))]
        x = torch.stack([it["x"] for it in items]).numpy()
        y = torch.stack([it["labels"] for it in items]).numpy().astype(np.int64)
        return x, y


def _subject_trials(
    prepared: PreparedData,
    subject: str,
    data: DataConfig,
    *,
    n_times: int,
    seed: int,
    protocol: str,
    channels: Sequence[str] | None,
) -> _SubjectTrials:
    sfreq = prepared.sfreq(subject)
    tmin = float(data.trial_offset)
    tmax = tmin + n_times / sfreq
    trials = prepared.trials(subject, tmin, tmax)
    if not trials:
        raise ValueError(
            f"subject {subject!r}: no labelled trials of {n_times} samples at {sfreq:g} Hz "
            f"(window [{tmin}, {tmax}) s after each event) in {prepared.loaded.source}"
        )
    split = split_trials(
        trials,
        seed=seed,
        ratios=tuple(data.split),  # type: ignore[arg-type]
        protocol="reference" if protocol == "reference" else "stratified",
    )
    if not split.train or not split.val:
        raise ValueError(
            f"subject {subject!r}: {len(trials)} trials are too few for a train/val/test split "
            f"{tuple(data.split)}"
        )
    labels = sorted({t.label for t in trials})
    stats = compute_channel_stats(
        prepared.index,
        split.normalization_trials,
        source="all trials (reference protocol)"
        if split.normalization == "all"
        else "train trials",
    )
    all_channels = prepared.ch_names(subject)
    chosen = list(channels) if channels is not None else list(all_channels)
    missing = [c for c in chosen if c not in all_channels]
    if missing:
        raise ValueError(
            f"subject {subject!r}: channels {missing} are not in the preprocessed data "
            f"(available: {all_channels[:12]}{'...' if len(all_channels) > 12 else ''})"
        )
    rows = [all_channels.index(c) for c in chosen]
    return _SubjectTrials(
        split, labels, stats, rows, chosen, all_channels, n_times, tmin, tmax, sfreq
    )


def _pretrain_sets(
    prepared: PreparedData,
    subject: str,
    data: DataConfig,
    *,
    n_times: int,
    seed: int,
    channels: Sequence[str],
    split: Split | None,
) -> tuple[_Picked, _Picked, dict[str, Any]]:
    """Train/val pretraining crops of one subject (val = every 10th window, fixed crops)."""
    rest = prepared.rest_recordings(subject)
    task = prepared.task_recordings(subject)
    mode = data.pretrain_data
    if mode == "auto":
        mode = "rest" if rest else "all"
    if mode == "rest" and not rest:
        raise ValueError(
            f"subject {subject!r} has no non-task recordings for pretraining; set "
            "data.pretrain_data=all to pretrain on the task runs (their val/test trials are "
            "excluded)"
        )
    keys = rest if mode == "rest" else rest + task
    spans = {k: v for k, v in prepared.index.spans().items() if k in keys}
    sfreq = prepared.sfreq(subject)
    crop_s = n_times / sfreq
    held = split if (mode == "all" and split is not None) else None
    windows = pretrain_windows(
        spans,
        held,
        length=max(data.pretrain_window, crop_s),
        min_length=crop_s,
        step=data.pretrain_step,
    )
    if data.max_pretrain_windows is not None and len(windows) > data.max_pretrain_windows:
        pick = np.linspace(0, len(windows) - 1, data.max_pretrain_windows).round().astype(int)
        windows = [windows[i] for i in sorted(set(pick.tolist()))]
    if len(windows) < 2:
        raise ValueError(
            f"subject {subject!r}: only {len(windows)} pretraining window(s) of "
            f"{data.pretrain_window:g} s; need more data or a shorter data.pretrain_window"
        )
    val_w = windows[::10]
    train_w = [w for i, w in enumerate(windows) if i % 10]
    stats = compute_channel_stats(prepared.index, train_w, source="pretraining windows")
    all_channels = prepared.ch_names(subject)
    rows = [all_channels.index(c) for c in channels]

    def make(ws: list[Any]) -> _Picked:
        base = PretrainDataset(
            prepared.index,
            ws,
            crop_len=n_times,
            stats=stats,
            seed=seed,
            subjects=[subject],
            n_channels=len(all_channels),
        )
        return _Picked(base, rows)

    info = {
        "pretrain_data": mode,
        "transductive": mode == "all",
        "n_train_windows": len(train_w),
        "n_val_windows": len(val_w),
        "window_s": max(data.pretrain_window, crop_s),
        "window_step_s": data.pretrain_step,
        "crop_samples": n_times,
        "normalization": "per-channel z-score over the pretraining training windows",
    }
    return make(train_w), make(val_w), info


# ---------------------------------------------------------------------------------------------
# Channel selection
# ---------------------------------------------------------------------------------------------


def _ranking_config(selection: ClsRunConfig, data: DataConfig) -> ClsRunConfig:
    optim = selection.optim
    if data.selection_epochs is not None:
        optim = dataclasses.replace(
            optim,
            epochs=data.selection_epochs,
            warmup_epochs=min(optim.warmup_epochs, max(data.selection_epochs - 1, 0)),
        )
    return dataclasses.replace(selection, optim=optim)


def select_channels(
    prepared: PreparedData,
    selection: ClsRunConfig,
    out: str | Path,
    *,
    seed: int | None = None,
    k: int | None = None,
    quiet: bool = False,
    plot: bool = True,
) -> dict[str, list[str]]:
    """Rank every subject's channels (training trials only) and keep the top ``k``.

    Writes ``channel_ranking.json``/``.csv``, ``channels.json`` and one plot per subject
    (on the electrode coordinates when known, else bars) into ``out``; the ranking runs live in
    ``out/selection/sub-XX``.

    Parameters
    ----------
    prepared : PreparedData
        Cached recordings.
    selection : ClsRunConfig
        Classifier recipe of the ranking model (``data.selection_epochs`` shortens it).
    out : str or pathlib.Path
        Output directory.
    seed : int, optional
        Split seed (default ``selection.seed``): only this split's training trials are used.
    k : int, optional
        Channels to keep (default ``selection.data.n_channels``; None keeps all).
    quiet : bool
        Hide progress bars.
    plot : bool
        Write the plots.

    Returns
    -------
    dict
        Subject -> selected channels, best first.
    """
    out = Path(out)
    seed = selection.seed if seed is None else seed
    k = selection.data.n_channels if k is None else k
    cfg = _ranking_config(selection, selection.data)
    rankings: list[ChannelRanking] = []
    chosen: dict[str, list[str]] = {}
    for subject in prepared.subjects:
        st = _subject_trials(
            prepared,
            subject,
            selection.data,
            n_times=cfg.model.n_times,
            seed=seed,
            protocol=selection.protocol,
            channels=None,
        )
        x, y = st.arrays(prepared.index, "train")
        regions, coords = prepared.channel_info(subject)
        have_coords = all(c in coords for c in st.all_channels)
        model_cfg = dataclasses.replace(cfg.model, n_classes=len(st.labels))
        logger.info(
            "ranking %d channels of sub-%s on %d training trials",
            len(st.all_channels),
            subject,
            len(y),
        )
        ranking = rank_channels(
            x,
            y,
            st.all_channels,
            model_cfg=model_cfg,
            optim=cfg.optim,
            trainer=dataclasses.replace(cfg.trainer, tensorboard=False),
            run_dir=out / "selection" / f"sub-{subject}",
            subject=subject,
            seed=seed,
            max_shift=int(round(selection.data.shift * st.sfreq)),
            regions=[regions.get(c, "") for c in st.all_channels] if regions else None,
            coords=np.asarray([coords[c] for c in st.all_channels]) if have_coords else None,
            quiet=quiet,
        )
        ranking.info["split_seed"] = seed
        rankings.append(ranking)
        chosen[subject] = ranking.top(k)
        if plot:
            truth = _truth_channels(prepared, subject)
            plot_ranking(ranking, out / f"channels_sub-{subject}.png", k=k, truth=truth)
    save_rankings(rankings, out)
    _write_channels(
        out,
        chosen,
        method=f"top-{k} by contribution score (Du-IN from scratch, training trials of the "
        f"seed-{seed} split)"
        if k
        else "all channels (ranked)",
        seed=seed,
    )
    return chosen


def _truth_channels(prepared: PreparedData, subject: str) -> list[str] | None:
    truth = prepared.truth
    if not truth:
        return None
    info = truth.get("subjects", {}).get(subject, {})
    contacts = set(info.get("informative_channels", []))
    if not contacts:
        return None
    # bipolar names "A4-A5": informative when either contact is
    return [c for c in prepared.ch_names(subject) if set(c.split("-")) & contacts]


def _write_channels(
    out: Path, chosen: Mapping[str, list[str]], *, method: str, seed: int | None
) -> None:
    write_json(
        out / _CHANNELS_FILE,
        {"channels": {s: list(v) for s, v in chosen.items()}, "method": method, "seed": seed},
    )


def _read_channels(run: Path) -> dict[str, list[str]]:
    path = Path(run) / _CHANNELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run} a duin pretraining run directory?")
    return {str(k): list(v) for k, v in json.loads(path.read_text())["channels"].items()}


def _resolve_channels(
    prepared: PreparedData,
    data: DataConfig,
    selection: ClsRunConfig | None,
    out: Path,
    *,
    seed: int,
    quiet: bool,
) -> dict[str, list[str]]:
    """Explicit lists, all channels, a previous ranking in ``out``, or a fresh ranking."""
    if (out / _CHANNELS_FILE).is_file():  # resuming: keep the earlier choice
        chosen = _read_channels(out)
        if set(prepared.subjects) <= set(chosen):
            return {s: chosen[s] for s in prepared.subjects}
    if data.channels is not None:
        missing = sorted(set(prepared.subjects) - set(data.channels))
        if missing:
            raise ValueError(f"data.channels has no list for subject(s) {missing}")
        chosen = {s: list(data.channels[s]) for s in prepared.subjects}
        for s, names in chosen.items():
            bad = [c for c in names if c not in prepared.ch_names(s)]
            if bad:
                raise ValueError(
                    f"data.channels[{s!r}]: {bad} not in the preprocessed data; available: "
                    f"{prepared.ch_names(s)}"
                )
        _write_channels(out, chosen, method="given (data.channels)", seed=None)
        return chosen
    needs_ranking = data.n_channels is not None and any(
        len(prepared.ch_names(s)) > data.n_channels for s in prepared.subjects
    )
    if not needs_ranking:
        chosen = {s: prepared.ch_names(s) for s in prepared.subjects}
        _write_channels(out, chosen, method="all channels", seed=None)
        return chosen
    if selection is None:
        raise ValueError("channel ranking needs the classifier recipe (the cls config section)")
    selection = dataclasses.replace(selection, data=data)
    return select_channels(prepared, selection, out, seed=seed, k=data.n_channels, quiet=quiet)


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def _cache_dir(out: Path, cache: str | Path | None) -> Path:
    return Path(cache) if cache is not None else out / "cache"


def _start_run(out: Path, cfg: Any, resume: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.yaml"
    text = config_to_yaml(cfg)
    if saved.is_file() and not resume and saved.read_text() != text:
        raise FileExistsError(
            f"{out} already holds a run with another configuration; use --resume to continue "
            "it or choose another --out"
        )
    atomic_write_text(saved, text)


def _write_data_info(out: Path, prepared: PreparedData, extra: Mapping[str, Any]) -> None:
    write_json(out / "data.json", {**prepared.describe(), **extra})


def pretrain_vqvae(
    cfg: VQVAERunConfig,
    out: str | Path,
    *,
    selection: ClsRunConfig | None = None,
    prepared: PreparedData | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> Path:
    """Stage 1 for every subject: choose channels, then train one VQ-VAE per subject.

    Parameters
    ----------
    cfg : VQVAERunConfig
        Stage configuration.
    out : str or pathlib.Path
        Run directory (``out/sub-XX`` per subject; ``checkpoints/last`` is used downstream).
    selection : ClsRunConfig, optional
        Classifier recipe for the channel ranking (when ``data.n_channels`` asks for one).
    prepared : PreparedData, optional
        Already prepared data (the demo shares it between stages).
    cache : str or pathlib.Path, optional
        Preprocessing cache (default ``out/cache``).
    resume : bool
        Continue an interrupted run.
    quiet : bool
        Hide progress bars.

    Returns
    -------
    pathlib.Path
        The run directory.
    """
    out = Path(out)
    _start_run(out, cfg, resume)
    prepared = prepared or prepare_data(cfg.data, _cache_dir(out, cache), quiet=quiet)
    channels = _resolve_channels(prepared, cfg.data, selection, out, seed=cfg.seed, quiet=quiet)
    infos = {}
    for subject in prepared.subjects:
        split = _split_for(prepared, subject, cfg.data, cfg.seed, cfg.protocol)
        train, val, info = _pretrain_sets(
            prepared,
            subject,
            cfg.data,
            n_times=cfg.model.n_times,
            seed=cfg.seed,
            channels=channels[subject],
            split=split,
        )
        infos[subject] = info
        logger.info("VQ-VAE sub-%s: %d training windows", subject, info["n_train_windows"])
        fit = train_vqvae(
            cfg,
            train,
            val,
            out / f"sub-{subject}",
            n_channels=len(channels[subject]),
            resume=resume,
            quiet=quiet,
        )
        info["codes_used_val"] = _codes_used(fit.last_dir, val)
        n_codes = cfg.model.quantizer.n_codes
        if info["codes_used_val"] <= max(2, n_codes // 100):
            logger.warning(
                "sub-%s: the VQ-VAE codex collapsed (%d of %d codes used on validation crops); "
                "MAE targets will be nearly constant. Train longer, or lower "
                "model.quantizer.beta / n_codes",
                subject,
                info["codes_used_val"],
                n_codes,
            )
    _write_data_info(out, prepared, {"stage": "vqvae", "pretraining": infos})
    return out


def _codes_used(ckpt: Path, data: Dataset, max_items: int = 64) -> int:
    """Distinct codex entries a trained VQ-VAE assigns to (up to ``max_items``) crops."""
    from duin.models.registry import load_model

    model = load_model(ckpt)
    items = [data[i] for i in range(min(len(data), max_items))]  # type: ignore[arg-type]
    x = torch.stack([it["x"] for it in items])
    codes = model.tokenize(x, torch.stack([it["subject"] for it in items]))  # type: ignore[operator]
    return int(codes.unique().numel())


def _split_for(
    prepared: PreparedData, subject: str, data: DataConfig, seed: int, protocol: str
) -> Split | None:
    """The trial split whose held-out trials pretraining on task runs must avoid."""
    try:
        sfreq = prepared.sfreq(subject)
        trials = prepared.trials(subject, data.trial_offset, data.trial_offset + 3000 / sfreq)
    except ValueError:
        return None
    if not trials:
        return None
    return split_trials(
        trials,
        seed=seed,
        ratios=tuple(data.split),  # type: ignore[arg-type]
        protocol="reference" if protocol == "reference" else "stratified",
    )


def _checkpoint(run: Path, subject: str, name: str = "last") -> Path:
    """``run/sub-XX/checkpoints/<name>``, or ``run`` itself when it is a checkpoint."""
    run = Path(run)
    if (run / "model.safetensors").is_file():
        return run
    path = run / f"sub-{subject}" / "checkpoints" / name
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path}: no checkpoint for subject {subject!r}; is {run} a finished pretraining run?"
        )
    return path


def pretrain_mae(
    cfg: MAERunConfig,
    out: str | Path,
    vqvae_run: str | Path,
    *,
    prepared: PreparedData | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> Path:
    """Stage 2 for every subject, with targets from the frozen stage-1 VQ-VAE.

    Parameters
    ----------
    cfg : MAERunConfig
        Stage configuration.
    out : str or pathlib.Path
        Run directory.
    vqvae_run : str or pathlib.Path
        Run directory of :func:`pretrain_vqvae` (its channels and ``sub-XX/checkpoints/last``).
    prepared, cache, resume, quiet
        See :func:`pretrain_vqvae`.

    Returns
    -------
    pathlib.Path
        The run directory.
    """
    from duin.models.duin import DuINVQVAE
    from duin.models.registry import load_model

    out = Path(out)
    vqvae_run = Path(vqvae_run)
    channels_all = _read_channels(vqvae_run)
    # Check the hand-off before any work: every subject has a tokenizer of the right shape.
    tokenizers = {}
    wanted = cfg.data.subjects or sorted(channels_all)
    for subject in map(str, wanted):  # fail before any data work
        _check_kind(_checkpoint(vqvae_run, subject), ("duin_vqvae",), "pretrain-mae --vqvae")
    _start_run(out, cfg, resume)
    prepared = prepared or prepare_data(cfg.data, _cache_dir(out, cache), quiet=quiet)
    for subject in prepared.subjects:
        if subject not in channels_all:
            raise ValueError(f"{vqvae_run} has no VQ-VAE for subject {subject!r}")
        tok = load_model(_checkpoint(vqvae_run, subject))
        if not isinstance(tok, DuINVQVAE):
            raise ValueError(
                f"{vqvae_run}: sub-{subject} holds a {type(tok).__name__}, not a VQ-VAE"
            )
        tokenizers[subject] = tok
    _write_channels(
        out, {s: channels_all[s] for s in prepared.subjects}, method=f"from {vqvae_run}", seed=None
    )
    infos = {}
    for subject in prepared.subjects:
        tok = tokenizers[subject]
        split = _split_for(prepared, subject, cfg.data, cfg.seed, cfg.protocol)
        train, val, info = _pretrain_sets(
            prepared,
            subject,
            cfg.data,
            n_times=tok.config.n_times,
            seed=cfg.seed,
            channels=channels_all[subject],
            split=split,
        )
        infos[subject] = info
        train_mae(cfg, tok, train, val, out / f"sub-{subject}", resume=resume, quiet=quiet)
    _write_data_info(
        out, prepared, {"stage": "mae", "vqvae_run": str(vqvae_run), "pretraining": infos}
    )
    return out


def _check_kind(ckpt: Path, names: Sequence[str], what: str) -> None:
    meta = json.loads((ckpt / "config.json").read_text())
    if meta.get("name") not in names:
        raise ValueError(
            f"{what} needs a {' or '.join(names)} checkpoint; {ckpt} holds {meta.get('name')!r}"
        )


#: Checkpoint kinds each pretrained variant initialises from.
_VARIANT_KINDS: dict[str, tuple[str, ...]] = {
    "mae": ("duin_mae",),
    "vqvae": ("duin_vqvae",),
    "vqvae+vq": ("duin_vqvae",),
}


def finetune(
    cfg: ClsRunConfig,
    out: str | Path,
    init_ckpt: str | Path | None = None,
    variant: str | None = None,
    *,
    prepared: PreparedData | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Stage 3: fine-tune and test a classifier per subject and seed, then write the report.

    Parameters
    ----------
    cfg : ClsRunConfig
        Stage configuration (``seeds`` lists the seeds; ``variant`` the initialisation).
    out : str or pathlib.Path
        Run directory.
    init_ckpt : str or pathlib.Path, optional
        A pretraining run directory (``sub-XX/checkpoints/last`` per subject, channels from its
        ``channels.json``) or one checkpoint directory (single subject).
    variant : str, optional
        Overrides ``cfg.variant``; with ``init_ckpt`` and variant ``scratch`` in the config,
        the variant follows the checkpoint (``mae`` or ``vqvae``).
    prepared, cache, resume, quiet
        See :func:`pretrain_vqvae`.

    Returns
    -------
    dict
        The report (also written as ``report.json``/``report.md``).
    """
    from duin.models.registry import load_model

    out = Path(out)
    init_run = Path(init_ckpt) if init_ckpt is not None else None
    if init_run is None:
        variant = variant or cfg.variant
        if variant != "scratch":
            raise ValueError(f"variant {variant!r} needs an init checkpoint (--init RUN_DIR)")
    else:  # check the hand-off before any data work
        if not init_run.exists():
            raise FileNotFoundError(f"init checkpoint not found: {init_run}")
        if (init_run / "model.safetensors").is_file():
            ckpts = [init_run]
        else:
            wanted = cfg.data.subjects or sorted(_read_channels(init_run))
            ckpts = [_checkpoint(init_run, str(s)) for s in wanted]
        kinds = {json.loads((c / "config.json").read_text()).get("name") for c in ckpts}
        if variant is None:
            # the configured variant when it fits the checkpoint, else the checkpoint's kind
            fits = {k: _VARIANT_KINDS.get(cfg.variant, ()) for k in kinds}
            if all(k in v for k, v in fits.items()):
                variant = cfg.variant
            elif len(kinds) == 1 and kinds <= {"duin_mae", "duin_vqvae"}:
                variant = "mae" if kinds == {"duin_mae"} else "vqvae"
        if variant is None or variant not in _VARIANT_KINDS:
            raise ValueError(
                f"cannot initialise a classifier from {init_run} (checkpoints {sorted(map(str, kinds))}); "
                f"variant must be one of {', '.join(_VARIANT_KINDS)}"
            )
        for c in ckpts:
            _check_kind(c, _VARIANT_KINDS[variant], f"variant {variant}")
    _start_run(out, cfg, resume)
    prepared = prepared or prepare_data(cfg.data, _cache_dir(out, cache), quiet=quiet)
    if init_run is not None and (init_run / "model.safetensors").is_file():
        if len(prepared.subjects) != 1:
            raise ValueError("a single checkpoint directory can only initialise one subject")
        meta_dir = init_run.parent.parent.parent  # run/sub-XX/checkpoints/last
        channels = _read_channels(meta_dir) if (meta_dir / _CHANNELS_FILE).is_file() else None
        if channels is None:
            raise FileNotFoundError(f"no {_CHANNELS_FILE} above {init_run}")
    elif init_run is not None:
        channels = _read_channels(init_run)
    else:
        channels = _resolve_channels(
            prepared, cfg.data, cfg, out, seed=cfg.run_seeds[0], quiet=quiet
        )
    if init_run is not None:
        _write_channels(
            out, {s: channels[s] for s in prepared.subjects}, method=f"from {init_run}", seed=None
        )
    results = []
    for subject in prepared.subjects:
        if subject not in channels:
            raise ValueError(f"no channel selection for subject {subject!r} (from {init_run})")
        init_model = None
        if init_run is not None:
            init_model = load_model(_checkpoint(init_run, subject))
        for seed in cfg.run_seeds:
            results.append(
                _finetune_one(
                    cfg,
                    prepared,
                    subject,
                    seed,
                    channels[subject],
                    out,
                    init_model=init_model,
                    variant=variant,
                    resume=resume,
                    quiet=quiet,
                )
            )
    _write_data_info(
        out,
        prepared,
        {
            "stage": "cls",
            "init": None if init_run is None else str(init_run),
            "variant": variant,
            "seeds": cfg.run_seeds,
        },
    )
    return evaluate(out)


def _finetune_one(
    cfg: ClsRunConfig,
    prepared: PreparedData,
    subject: str,
    seed: int,
    channels: list[str],
    out: Path,
    *,
    init_model: Any,
    variant: str,
    resume: bool,
    quiet: bool,
) -> dict[str, Any]:
    run_dir = out / f"sub-{subject}" / f"seed-{seed}"
    result_path = run_dir / _RESULT_FILE
    if resume and result_path.is_file():
        return json.loads(result_path.read_text())
    run_cfg = dataclasses.replace(cfg, seed=seed, seeds=None, variant=variant)
    st = _subject_trials(
        prepared,
        subject,
        cfg.data,
        n_times=cfg.model.n_times,
        seed=seed,
        protocol=cfg.protocol,
        channels=channels,
    )
    model_cfg = dataclasses.replace(cfg.model, n_classes=len(st.labels))
    run_cfg = dataclasses.replace(run_cfg, model=model_cfg)
    torch.manual_seed(seed)
    model = build_classifier(model_cfg, n_channels=len(channels), variant=variant, init=init_model)
    max_shift = int(round(cfg.data.shift * st.sfreq))
    train = st.dataset(prepared.index, "train", max_shift=max_shift, seed=seed)
    val = st.dataset(prepared.index, "val")
    test = st.dataset(prepared.index, "test")
    fit = train_classifier(
        run_cfg,
        model,
        train,
        val,
        run_dir,
        test_data=test if cfg.protocol == "reference" else None,
        resume=resume,
        quiet=quiet,
    )
    choice = select_epoch(
        fit.history,
        cfg.protocol,
        metric=cfg.trainer.selection_metric,
        mode=cfg.trainer.selection_mode,
    )
    if cfg.protocol == "reference":
        ckpt = run_dir / "checkpoints" / f"epoch-{choice['epoch']:04d}"
    else:
        ckpt = fit.best_dir
        best = json.loads((ckpt / "best.json").read_text())
        choice["epoch"] = int(best["epoch"])
    load_weights(model, ckpt)
    x_test, y_test = st.arrays(prepared.index, "test")
    metrics = evaluate_classifier(model, x_test, y_test)
    confusion = metrics.pop("confusion")
    from duin.evaluation.plots import plot_confusion_matrix

    plot_confusion_matrix(
        confusion,
        run_dir / "confusion.png",
        class_names=[_display_label(w) for w in st.labels],
        title=f"sub-{subject} seed {seed}: test top-1 {100 * metrics['top1']:.1f} %",
    )
    oracle = prepared.oracle()
    result = {
        "subject": subject,
        "seed": seed,
        "variant": variant,
        "protocol": cfg.protocol,
        "metrics": {
            k: metrics[k]
            for k in ("top1", "top5", "balanced_accuracy", "cross_entropy")
            if k in metrics
        },
        "n_test_trials": metrics["n_trials"],
        "n_classes": metrics["n_classes"],
        "chance": metrics["chance"],
        "oracle_accuracy": None if oracle is None else oracle.get(subject),
        "selected_epoch": choice["epoch"],
        "selection_rule": choice["rule"],
        "checkpoint": str(ckpt.relative_to(out)),
        "split": st.split.summary(),
        "confusion": confusion,
        "labels": st.labels,
    }
    if cfg.protocol == "reference":
        # keep only the selected epoch's snapshot (the others were needed for the rule)
        import shutil

        for snap in (run_dir / "checkpoints").glob("epoch-*"):
            if snap != ckpt:
                shutil.rmtree(snap, ignore_errors=True)
    write_json(
        run_dir / _TRIAL_DATA_FILE,
        {
            "subject": subject,
            "channels": channels,
            "labels": st.labels,
            "tmin": st.tmin,
            "tmax": st.tmax,
            "sfreq": st.sfreq,
            "n_times": st.n_times,
            "preprocess": None if prepared.preprocess is None else prepared.preprocess.to_dict(),
            "source_kind": prepared.loaded.kind,
            "normalization": {
                "source": st.stats.source,
                "mean": st.stats.mean[subject][st.rows].tolist(),
                "std": st.stats.std[subject][st.rows].tolist(),
            },
        },
    )
    write_json(result_path, result)
    logger.info(
        "sub-%s seed %d (%s): test top-1 %.1f %% (chance %.1f %%) at epoch %d",
        subject,
        seed,
        variant,
        100 * result["metrics"]["top1"],
        100 * result["chance"],
        choice["epoch"],
    )
    return result


def _display_label(word: str) -> str:
    """English gloss of one of the paper's words (plot fonts often lack CJK glyphs)."""
    from duin.data.words import GLOSSES

    return GLOSSES.get(word, word)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def evaluate(run_dir: str | Path) -> dict[str, Any]:
    """(Re)build ``report.json`` / ``report.md`` of a fine-tuning run from its per-run results.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        A :func:`finetune` run directory.

    Returns
    -------
    dict
        The report: per-subject top-1, top-5, balanced accuracy and cross-entropy (mean ± SD
        over seeds), mean ± SE over subjects, protocol, chance and (simulated data) the oracle.
    """
    from duin.evaluation.report import write_report

    run_dir = Path(run_dir)
    paths = sorted(run_dir.glob(f"sub-*/seed-*/{_RESULT_FILE}"))
    if not paths:
        raise FileNotFoundError(
            f"{run_dir}: no sub-*/seed-*/{_RESULT_FILE}; is it a finished 'duin finetune' run?"
        )
    results = [json.loads(p.read_text()) for p in paths]
    protocols = {r["protocol"] for r in results}
    n_classes = {r["n_classes"] for r in results}
    if len(protocols) != 1 or len(n_classes) != 1:
        raise ValueError(f"{run_dir}: runs mix protocols {protocols} or class counts {n_classes}")
    protocol = protocols.pop()
    n_cls = n_classes.pop()
    oracle = {
        r["subject"]: r["oracle_accuracy"] for r in results if r.get("oracle_accuracy") is not None
    }
    data_info = {}
    if (run_dir / "data.json").is_file():
        data_info = json.loads((run_dir / "data.json").read_text())
    channels = _read_channels(run_dir) if (run_dir / _CHANNELS_FILE).is_file() else {}
    rules = sorted({r["selection_rule"] for r in results})
    extra = {
        "variant": sorted({r["variant"] for r in results}),
        "data_source": data_info.get("source"),
        "data_kind": data_info.get("kind"),
        "channels": channels,
        "selection_rule": rules,
        "selected_epochs": {f"{r['subject']}/{r['seed']}": r["selected_epoch"] for r in results},
        "split_protocol": sorted({r["split"]["protocol"] for r in results}),
        "normalization": sorted({r["split"]["normalization"] for r in results}),
    }
    runs = [
        {
            "subject": r["subject"],
            "seed": r["seed"],
            "metrics": r["metrics"],
            "run_dir": str(Path(p).parent.relative_to(run_dir)),
        }
        for r, p in zip(results, paths, strict=True)
    ]
    title = f"duin: Du-IN word classification ({', '.join(extra['variant'])})"
    write_report(
        run_dir,
        runs,
        protocol=protocol,  # type: ignore[arg-type]
        n_classes=n_cls,
        oracle_accuracy=oracle or None,
        title=title,
        extra=extra,
    )
    report = json.loads((run_dir / "report.json").read_text())
    return report


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of a report: ours vs chance vs the oracle, per subject and overall.

    Parameters
    ----------
    report : Mapping
        From :func:`evaluate`.

    Returns
    -------
    str
        The table.
    """
    oracle = report.get("oracle_accuracy") or {}
    chance = 100 * report["chance"]
    lines = [
        f"{'subject':<10}{'top-1 %':>10}{'top-5 %':>10}{'bal.acc %':>11}{'chance %':>10}"
        f"{'oracle %':>10}",
    ]
    for subject in report["subjects"]:
        m = subject["metrics"]
        o = oracle.get(subject["subject"]) if isinstance(oracle, Mapping) else oracle
        lines.append(
            f"{subject['subject']:<10}{100 * m['top1']['mean']:>10.2f}"
            f"{100 * m.get('top5', {}).get('mean', float('nan')):>10.2f}"
            f"{100 * m.get('balanced_accuracy', {}).get('mean', float('nan')):>11.2f}"
            f"{chance:>10.2f}{'' if o is None else f'{100 * o:.2f}':>10}"
        )
    s = report["summary"]
    lines.append(
        f"{'mean±SE':<10}{100 * s['top1']['mean']:>6.2f}±{100 * s['top1']['se']:<4.1f}"
        f"{100 * s.get('top5', {}).get('mean', float('nan')):>9.2f}"
        f"{100 * s.get('balanced_accuracy', {}).get('mean', float('nan')):>11.2f}{chance:>10.2f}"
    )
    lines.append(
        f"protocol: {report['protocol']}; {report['n_classes']} classes (chance "
        f"{chance:.2f} %); {report['n_subjects']} subject(s), seeds {report['seeds']}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Demo
# ---------------------------------------------------------------------------------------------


def run_demo(
    out: str | Path,
    quick: bool = True,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Simulate a small corpus, run the three stages and the evaluation.

    Parameters
    ----------
    out : str or pathlib.Path
        Demo directory: ``vqvae/``, ``mae/``, ``cls/`` run directories and ``cache/``.
    quick : bool
        Use the packaged ``quick`` recipe (minutes on a CPU) instead of ``paper``.
    config : str or pathlib.Path, optional
        Another config file (overrides ``quick``).
    overrides : sequence of str
        ``--set`` overrides applied to every stage section.
    seed : int, optional
        Seed of everything (default: the config's).
    quiet : bool
        Hide progress bars.

    Returns
    -------
    dict
        The report of the classifier stage, plus ``run_dir`` and ``table`` (printable).
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose another --out for the demo")
    name = config if config is not None else ("quick" if quick else "paper")
    extra = [*overrides, *([f"seed={seed}"] if seed is not None else [])]
    cfgs = {stage: load_stage_config(stage, name, extra) for stage in ("vqvae", "mae", "cls")}
    t0 = time.perf_counter()
    prepared = prepare_data(cfgs["vqvae"].data, out / "cache", quiet=quiet)
    timings = {"prepare_s": time.perf_counter() - t0}
    t = time.perf_counter()
    pretrain_vqvae(
        cfgs["vqvae"], out / "vqvae", selection=cfgs["cls"], prepared=prepared, quiet=quiet
    )  # type: ignore[arg-type]
    timings["vqvae_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pretrain_mae(cfgs["mae"], out / "mae", out / "vqvae", prepared=prepared, quiet=quiet)  # type: ignore[arg-type]
    timings["mae_s"] = time.perf_counter() - t
    t = time.perf_counter()
    report = finetune(cfgs["cls"], out / "cls", out / "mae", "mae", prepared=prepared, quiet=quiet)  # type: ignore[arg-type]
    timings["cls_s"] = time.perf_counter() - t
    # The same classifier trained from scratch on the same split: shows what pretraining adds
    # (or, when a short run's codex collapses, costs) on this corpus.
    t = time.perf_counter()
    # Same channels as the pretrained path (finetune keeps a channel choice found in its run dir).
    (out / "cls-scratch").mkdir()
    shutil.copyfile(out / "cls" / _CHANNELS_FILE, out / "cls-scratch" / _CHANNELS_FILE)
    scratch = finetune(
        cfgs["cls"], out / "cls-scratch", None, "scratch", prepared=prepared, quiet=quiet
    )  # type: ignore[arg-type]
    timings["cls_scratch_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    write_json(out / "timings.json", timings)
    report = dict(report)
    report["run_dir"] = str(out / "cls")
    report["timings"] = timings
    report["scratch"] = dict(scratch)
    report["table"] = (
        "Du-IN (mae): VQ-VAE -> MAE -> classifier\n"
        + format_table(report)
        + f"\n\nDu-IN (scratch): classifier only, same split ({out / 'cls-scratch'})\n"
        + format_table(scratch)
    )
    return report


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------


def _find_trial_data(ckpt: Path) -> tuple[Path, Path]:
    """(checkpoint dir, run dir with trial_data.json) for a checkpoint or run directory."""
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    if (ckpt / _TRIAL_DATA_FILE).is_file():  # a sub-XX/seed-N run directory
        result = json.loads((ckpt / _RESULT_FILE).read_text())
        return ckpt.parent.parent / result["checkpoint"], ckpt
    if (ckpt / "model.safetensors").is_file():
        for parent in ckpt.parents:
            if (parent / _TRIAL_DATA_FILE).is_file():
                return ckpt, parent
        raise FileNotFoundError(f"{ckpt}: no {_TRIAL_DATA_FILE} above it (not a finetune run?)")
    runs = sorted(ckpt.glob(f"sub-*/seed-*/{_TRIAL_DATA_FILE}"))
    if len(runs) == 1:
        return _find_trial_data(runs[0].parent)
    if runs:
        raise ValueError(
            f"{ckpt} holds {len(runs)} classifiers; pass one of {[str(r.parent) for r in runs[:6]]}"
        )
    raise FileNotFoundError(f"{ckpt}: not a classifier checkpoint or finetune run directory")


def predict(
    ckpt: str | Path,
    recording: str | Path,
    top_k: int = 5,
    *,
    out_csv: str | Path | None = None,
    subject: str | None = None,
    cache: str | Path | None = None,
) -> str:
    """Classify every event of a recording with a trained classifier; CSV of the top-k words.

    Parameters
    ----------
    ckpt : str or pathlib.Path
        A finetune run's ``sub-XX/seed-N`` directory (its selected checkpoint is used), a
        checkpoint directory inside it, or a finetune run with exactly one classifier.
    recording : str or pathlib.Path
        A dataset directory (BIDS, released or ``duin simulate`` output): the classifier's
        subject (or ``subject``) is read, preprocessed like the training data, and each event
        window becomes one trial.
    top_k : int
        Words per trial.
    out_csv : str or pathlib.Path, optional
        Also write the CSV here (atomically).
    subject : str, optional
        Subject to read (default: the one the classifier was trained on).
    cache : str or pathlib.Path, optional
        Preprocessing cache (default: a temporary directory).

    Returns
    -------
    str
        CSV text: ``subject,recording,event,onset,true_label,rank,word,probability``.
    """
    import tempfile

    from duin.models.registry import load_model

    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ckpt_dir, run_dir = _find_trial_data(Path(ckpt))
    info = json.loads((run_dir / _TRIAL_DATA_FILE).read_text())
    model = load_model(ckpt_dir)
    labels: list[str] = info["labels"]
    top_k = min(top_k, len(labels))
    subject = subject or info["subject"]
    from duin.data.preprocess import PreprocessConfig

    data = DataConfig(
        source=str(recording),
        subjects=[subject],
        preprocess=None if info["preprocess"] is None else PreprocessConfig(**info["preprocess"]),
    )
    with contextlib.ExitStack() as stack:
        cache_dir = cache or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="duin-predict-")
        )
        prepared = prepare_data(data, cache_dir, quiet=True)
        mean = np.asarray(info["normalization"]["mean"], dtype=np.float32)[:, None]
        std = np.asarray(info["normalization"]["std"], dtype=np.float32)[:, None]
        rows_out: list[list[Any]] = []
        for entry in prepared.entries(subject):
            if not entry.events:
                continue
            if abs(entry.sfreq - info["sfreq"]) > 1e-6:
                raise ValueError(
                    f"{entry.recording}: {entry.sfreq:g} Hz after preprocessing, the classifier "
                    f"expects {info['sfreq']:g} Hz"
                )
            missing = [c for c in info["channels"] if c not in entry.ch_names]
            if missing:
                raise ValueError(
                    f"{entry.recording}: channels {missing} used by the classifier are missing"
                )
            rows = [entry.ch_names.index(c) for c in info["channels"]]
            sig = prepared.index.signals(entry.recording)
            xs, meta = [], []
            for i, ev in enumerate(entry.events):
                start = int(round((ev.onset + info["tmin"]) * entry.sfreq))
                if start < 0 or start + info["n_times"] > entry.n_times:
                    logger.warning(
                        "%s: event %d at %.2f s has no full window; skipped",
                        entry.recording,
                        i,
                        ev.onset,
                    )
                    continue
                x = np.asarray(sig[rows, start : start + info["n_times"]], dtype=np.float32)
                xs.append((x - mean) / std)
                meta.append((i, ev))
            if not xs:
                continue
            logits = predict_logits(model, np.stack(xs))
            probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
            for (i, ev), p in zip(meta, probs, strict=True):
                order = np.argsort(-p)[:top_k]
                for rank, c in enumerate(order, start=1):
                    rows_out.append(
                        [
                            subject,
                            entry.recording,
                            i,
                            f"{ev.onset:.3f}",
                            ev.label,
                            rank,
                            labels[c],
                            f"{p[c]:.6f}",
                        ]
                    )
        prepared = None  # release memory maps before the temporary cache is removed
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["subject", "recording", "event", "onset", "true_label", "rank", "word", "probability"]
    )
    writer.writerows(rows_out)
    text = buffer.getvalue()
    if out_csv is not None:
        atomic_write_text(out_csv, text)
    return text


# ---------------------------------------------------------------------------------------------
# Inspection
# ---------------------------------------------------------------------------------------------


def inspect_source(source: str | Path, subjects: Sequence[str] | None = None) -> dict[str, Any]:
    """Summarise a dataset directory: layout, subjects, recordings, channels, events.

    Parameters
    ----------
    source : str or pathlib.Path
        A BIDS root, a released root or a ``duin simulate`` directory.
    subjects : sequence of str, optional
        Only these subjects (default all).

    Returns
    -------
    dict
        ``kind``, ``source``, ``subjects`` (per subject: recordings with their summary lines,
        channel count, rate, duration, number of events and distinct labels) and, for
        simulated data, the oracle accuracy and chance.
    """
    loaded = load_recordings(
        DataConfig(source=str(source), subjects=list(subjects) if subjects else None)
    )
    out: dict[str, Any] = {"kind": loaded.kind, "source": loaded.source, "subjects": {}}
    for subject, recs in sorted(loaded.recordings.items()):
        labels = [e.label for r in recs for e in r.events]
        # The paper's pretraining files (one recording each) are summarised in one line.
        files = [r for r in recs if r.provenance.get("reader") == "read_released_pretrain"]
        lines = [
            r.summary() for r in recs if r.provenance.get("reader") != "read_released_pretrain"
        ]
        if files:
            seconds = sorted({round(r.duration, 3) for r in files})
            lines.append(
                f"{len(files)} pretraining files (the paper's layout, overlapping windows) of "
                f"{'/'.join(f'{d:g}' for d in seconds)} s, {files[0].n_channels} channels"
            )
        out["subjects"][subject] = {
            "n_recordings": len(recs),
            "n_task_recordings": sum(bool(r.events) for r in recs),
            "n_channels": sorted({r.n_channels for r in recs}),
            "sfreq": sorted({r.sfreq for r in recs}),
            "hours": round(sum(r.duration for r in recs) / 3600, 3),
            "n_events": len(labels),
            "n_labels": len(set(labels)),
            "recordings": lines,
        }
    if loaded.truth:
        out["oracle_accuracy"] = loaded.truth.get("oracle_accuracy")
        out["chance"] = loaded.truth.get("chance")
    return out

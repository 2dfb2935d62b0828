"""Data preparation: read (or simulate) recordings, preprocess them into the cache, build one
subject's trial and pretraining datasets, and choose channels.

Reads a data source (``data.source``: a BIDS root, a released Du-IN root or a ``duin simulate``
directory, auto-detected; none = simulate ``data.simulation`` in memory). Writes the
content-keyed preprocessing cache (:func:`duin.data.datasets.build_cache`) and, when channels
are ranked, ``channel_ranking.{json,csv}``, ``channels.json``, ``channels_sub-XX.png`` and the
ranking runs under ``selection/sub-XX/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duin.data.datasets import (
    CacheIndex,
    ChannelStats,
    PretrainDataset,
    TrialDataset,
    build_cache,
    compute_channel_stats,
)
from duin.data.recording import Recording
from duin.data.splits import (
    Split,
    Trial,
    limit_train_trials,
    pretrain_windows,
    split_protocol,
    split_trials,
)
from duin.training.channels import ChannelRanking, plot_ranking, rank_channels, save_rankings
from duin.training.distributed import barrier, is_main, main_first
from duin.training.stages import ClsRunConfig, DataConfig
from duin.workflows.rundir import CHANNELS_FILE, read_channels, write_channels

__all__ = [
    "LoadedData",
    "PreparedData",
    "SubjectTrials",
    "check_pretraining_split",
    "detect_source",
    "inspect_source",
    "load_recordings",
    "prepare_data",
    "pretrain_sets",
    "resolve_channels",
    "select_channels",
    "split_descriptor",
    "subject_trials",
]

logger = logging.getLogger(__name__)


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
    from duin.data.readers.released import dataset_root

    return sorted(p.name for p in dataset_root(root).iterdir() if p.is_dir())


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
    # Under torchrun rank 0 fills the cache; the others then find every entry there.
    with main_first():
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


@dataclass
class SubjectTrials:
    """One subject's labelled trials on one split, with the channels a model sees.

    Built by :func:`subject_trials`; ``rows`` index ``channels`` in ``all_channels`` (the
    preprocessed order); ``stats`` are the split's normalisation statistics.
    """

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
    ) -> TrialDataset:
        """The ``train``, ``val`` or ``test`` trials as a dataset of the chosen channels."""
        trials = getattr(self.split, part)
        return TrialDataset(
            index,
            trials,
            labels=self.labels,
            stats=self.stats,
            max_shift=max_shift,
            seed=seed,
            subjects=[trials[0].subject] if trials else None,
            n_channels=len(self.all_channels),
            channel_rows=self.rows,
        )

    def arrays(self, index: CacheIndex, part: str) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``(n_trials, n_channels, n_times)`` float32 and ``labels`` ``(n_trials,)`` int64."""
        ds = self.dataset(index, part)
        if len(ds) == 0:
            return np.zeros((0, len(self.rows), self.n_times), np.float32), np.zeros(0, np.int64)
        items = [ds[i] for i in range(len(ds))]
        x = torch.stack([it["x"] for it in items]).numpy()
        y = torch.stack([it["labels"] for it in items]).numpy().astype(np.int64)
        return x, y


def subject_trials(
    prepared: PreparedData,
    subject: str,
    data: DataConfig,
    *,
    n_times: int,
    seed: int,
    protocol: str,
    channels: Sequence[str] | None,
) -> SubjectTrials:
    """Split one subject's labelled trials (``n_times`` samples from ``data.trial_offset``).

    Normalisation statistics come from the split's training trials (all trials under the
    reference protocol); ``channels`` (default all) must be in the preprocessed data.
    """
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
        protocol=split_protocol(protocol),
    )
    if data.train_trials_per_word is not None:
        split = limit_train_trials(split, data.train_trials_per_word)
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
    return SubjectTrials(
        split, labels, stats, rows, chosen, all_channels, n_times, tmin, tmax, sfreq
    )


def pretrain_sets(
    prepared: PreparedData,
    subject: str,
    data: DataConfig,
    *,
    n_times: int,
    seed: int,
    channels: Sequence[str],
    split: Split | None,
) -> tuple[PretrainDataset, PretrainDataset, dict[str, Any]]:
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

    def make(ws: list[Any]) -> PretrainDataset:
        return PretrainDataset(
            prepared.index,
            ws,
            crop_len=n_times,
            stats=stats,
            seed=seed,
            subjects=[subject],
            n_channels=len(all_channels),
            channel_rows=rows,
        )

    info = {
        "pretrain_data": mode,
        # task runs with this split's validation/test trials cut out: a classifier started from
        # this run must be tested on the same split (check_pretraining_split)
        "held_out_split": None if held is None else split_descriptor(held),
        "n_train_windows": len(train_w),
        "n_val_windows": len(val_w),
        "window_s": max(data.pretrain_window, crop_s),
        "window_step_s": data.pretrain_step,
        "crop_samples": n_times,
        "normalization": "per-channel z-score over the pretraining training windows",
    }
    return make(train_w), make(val_w), info


def split_descriptor(split: Split) -> dict[str, Any]:
    """What identifies a trial split's held-out trials: ``seed``, ``protocol`` and ``ratios``."""
    return {"seed": int(split.seed), "protocol": split.protocol, "ratios": list(split.ratios)}


def check_pretraining_split(
    run: str | Path, data: DataConfig, seeds: Sequence[int], protocol: str
) -> None:
    """Refuse to test on trials a pretraining run may have seen.

    A run pretrained on the task recordings (``data.pretrain_data: all``) saw every trial but
    the validation and test trials of its own split; a classifier started from it must be
    split the same way (same seed, protocol and ratios), or its test trials were pretraining
    data.

    Parameters
    ----------
    run : str or pathlib.Path
        The pretraining run directory (its ``data.json``).
    data : DataConfig
        The fine-tuning's data section (its ``split`` ratios).
    seeds : sequence of int
        The fine-tuning's split seeds.
    protocol : str
        The fine-tuning's protocol.

    Raises
    ------
    ValueError
        Naming the pretraining's split and the fine-tuning's that differs from it.
    """
    path = Path(run) / "data.json"
    if not path.is_file():
        return
    infos = json.loads(path.read_text()).get("pretraining", {})
    wanted = split_protocol(protocol)
    for subject, info in sorted(infos.items()):
        held = info.get("held_out_split")
        if not held:
            continue
        for seed in seeds:
            mine = {"seed": int(seed), "protocol": wanted, "ratios": [float(r) for r in data.split]}
            if mine != {**held, "ratios": [float(r) for r in held["ratios"]]}:
                raise ValueError(
                    f"{run} pretrained sub-{subject} on the task recordings minus the held-out "
                    f"trials of the split {held}; fine-tuning with the split {mine} would test on "
                    "trials pretraining saw. Fine-tune with the pretraining's seed, or pretrain "
                    "with data.pretrain_data=rest"
                )


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
        st = subject_trials(
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
        if plot and is_main():
            truth = _truth_channels(prepared, subject)
            plot_ranking(ranking, out / f"channels_sub-{subject}.png", k=k, truth=truth)
    if is_main():
        save_rankings(rankings, out)
    write_channels(
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


def resolve_channels(
    prepared: PreparedData,
    data: DataConfig,
    selection: ClsRunConfig | None,
    out: Path,
    *,
    seed: int,
    quiet: bool,
) -> dict[str, list[str]]:
    """Explicit lists, all channels, a previous ranking in ``out``, or a fresh ranking.

    Under ``torchrun`` every rank takes part (a ranking trains under DDP); rank 0 writes.
    """
    earlier = read_channels(out) if (out / CHANNELS_FILE).is_file() else None
    # Every rank has looked for an earlier choice before rank 0 may write one below (a rank
    # that looked later would find it and skip the collective write).
    barrier()
    if earlier is not None and set(prepared.subjects) <= set(earlier):  # resuming: keep it
        return {s: earlier[s] for s in prepared.subjects}
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
        write_channels(out, chosen, method="given (data.channels)", seed=None)
        return chosen
    needs_ranking = data.n_channels is not None and any(
        len(prepared.ch_names(s)) > data.n_channels for s in prepared.subjects
    )
    if not needs_ranking:
        chosen = {s: prepared.ch_names(s) for s in prepared.subjects}
        write_channels(out, chosen, method="all channels", seed=None)
        return chosen
    if selection is None:
        raise ValueError("channel ranking needs the classifier recipe (the cls config section)")
    selection = dataclasses.replace(selection, data=data)
    return select_channels(prepared, selection, out, seed=seed, k=data.n_channels, quiet=quiet)


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

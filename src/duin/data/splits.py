"""Deterministic, leak-free train/validation/test splits of word trials and pretraining windows.

Three protocols, recorded on every :class:`Split` as ``split.protocol`` so reports can say
which one was used:

- ``"stratified"`` (default): per subject and per label, trials are shuffled with a generator
  seeded by ``(seed, subject)`` and cut 80/10/10 (configurable). Every class is within one
  trial of its ideal share in each part. Normalisation statistics come from training trials.
- ``"runs"``: whole runs are held out per subject (seeded choice, or named explicitly), the
  closest to deployment on a new session.
- ``"reference"``: the paper's code (duin-reference §1.5): runs sorted numerically, trials
  shuffled within each run, then per label (in code-point order) the first ``int(0.8 * n)``
  trials of the concatenated order go to training and the rest are halved at random (not
  stratified) into validation and test, with the paper's random draws in the paper's order (the
  same seed gives the paper's split; tests/test_splits.py checks it against the paper's code); z-score statistics over *all* trials
  (``split.normalization == "all"``), a known mild leak kept only for comparison.

:func:`pretrain_windows` cuts the recordings into windows for self-supervised pretraining that
never overlap a validation/test trial (plus a margin), so pretraining cannot see test data.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duin.data.recording import Recording

__all__ = [
    "PROTOCOLS",
    "Split",
    "Trial",
    "Window",
    "limit_train_trials",
    "pretrain_windows",
    "recording_key",
    "split_protocol",
    "split_trials",
    "trials_from_recordings",
]

PROTOCOLS = ("stratified", "runs", "reference")
_REFERENCE_SFREQ = 1000.0  # the paper resamples every trial to 1000 Hz before splitting


@dataclass(frozen=True, order=True)
class Trial:
    """One labelled word trial.

    Parameters
    ----------
    recording : str
        Key of the recording it comes from (:func:`recording_key`).
    index : int
        Position among that recording's events (onset order).
    subject : str
        Subject id.
    run : str or None
        Run id (for run-level protocols).
    label : str
        The word.
    onset : float
        Event onset in seconds.
    tmin, tmax : float
        Trial window relative to the onset, seconds (default 0 to 3 s).
    """

    recording: str
    index: int
    subject: str
    run: str | None
    label: str
    onset: float
    tmin: float = 0.0
    tmax: float = 3.0

    @property
    def start(self) -> float:
        """Absolute start of the trial window (s)."""
        return self.onset + self.tmin

    @property
    def stop(self) -> float:
        """Absolute end of the trial window (s)."""
        return self.onset + self.tmax


@dataclass(frozen=True, order=True)
class Window:
    """A span of a recording usable for pretraining crops (seconds)."""

    recording: str
    subject: str
    start: float
    stop: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.stop - self.start


def recording_key(recording: Recording) -> str:
    """A readable identifier of a recording: ``sub-01_task-wordreading_run-1`` style."""
    parts = [f"sub-{recording.subject}"]
    for name in ("session", "task", "run"):
        value = getattr(recording, name)
        if value:
            parts.append(f"{name[:3] if name == 'session' else name}-{value}")
    return "_".join(parts)


def trials_from_recordings(
    recordings: Iterable[Recording],
    tmin: float = 0.0,
    tmax: float = 3.0,
    labels: Iterable[str] | None = None,
) -> list[Trial]:
    """All labelled events of ``recordings`` as :class:`Trial` objects.

    Parameters
    ----------
    recordings : iterable of Recording
        Recordings with word events (recordings without events contribute nothing).
    tmin, tmax : float
        Trial window relative to each event onset (s).
    labels : iterable of str, optional
        Keep only these labels (e.g. the vocabulary); default keeps all.

    Returns
    -------
    list of Trial
        In recording order, then onset order.

    Raises
    ------
    ValueError
        If two recordings share a key or a window falls outside its recording.
    """
    if tmax <= tmin:
        raise ValueError(f"trial window: tmax ({tmax}) must exceed tmin ({tmin})")
    keep = None if labels is None else set(labels)
    out: list[Trial] = []
    seen: set[str] = set()
    for rec in recordings:
        key = recording_key(rec)
        if key in seen:
            raise ValueError(f"two recordings share the key {key!r}; give them distinct runs")
        seen.add(key)
        for i, ev in enumerate(rec.events):
            if keep is not None and ev.label not in keep:
                continue
            if ev.onset + tmin < 0 or ev.onset + tmax > rec.duration + 1e-9:
                raise ValueError(
                    f"{key}: trial {i} ({ev.label!r} at {ev.onset:.3f}s) window "
                    f"[{tmin}, {tmax}) s falls outside the recording (0 to {rec.duration:.3f}s)"
                )
            out.append(Trial(key, i, rec.subject, rec.run, ev.label, ev.onset, tmin, tmax))
    return out


@dataclass
class Split:
    """A train/validation/test partition of trials.

    Parameters
    ----------
    train, val, test : list of Trial
        The three parts (disjoint).
    protocol : str
        ``"stratified"``, ``"runs"`` or ``"reference"``.
    seed : int
        Seed the split was drawn with.
    ratios : tuple of float
        Target train/val/test fractions (``"runs"``: informational).
    normalization : str
        Which trials z-score statistics must come from: ``"train"`` (leak-free) or ``"all"``
        (the reference protocol).
    details : dict
        Protocol specifics (e.g. held-out runs per subject).
    """

    train: list[Trial]
    val: list[Trial]
    test: list[Trial]
    protocol: str
    seed: int
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    normalization: str = "train"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def normalization_trials(self) -> list[Trial]:
        """The trials normalisation statistics are computed from (train, or all for reference)."""
        return self.train if self.normalization == "train" else self.train + self.val + self.test

    def held_out_intervals(self, margin: float = 0.0) -> dict[str, list[tuple[float, float]]]:
        """Recording key -> sorted ``(start, stop)`` seconds of val/test trials (+- margin)."""
        out: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for trial in (*self.val, *self.test):
            out[trial.recording].append((trial.start - margin, trial.stop + margin))
        return {k: sorted(v) for k, v in out.items()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (counts per part and subject, protocol, seed)."""
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for name in ("train", "val", "test"):
            for trial in getattr(self, name):
                counts[trial.subject][name] = counts[trial.subject].get(name, 0) + 1
        return {
            "protocol": self.protocol,
            "seed": self.seed,
            "ratios": list(self.ratios),
            "normalization": self.normalization,
            "counts": dict(counts),
            **({"details": self.details} if self.details else {}),
        }


def _subject_seed(seed: int, subject: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(subject.encode("utf-8"))])


def _run_sort_key(run: str | None) -> tuple[int, float, str]:
    """Numeric-aware run order ("2" before "10"; non-numeric after, by name)."""
    if run is None:
        return (0, -1.0, "")
    match = re.search(r"\d+", run)
    return (0, float(match.group()), run) if match else (1, 0.0, run)


def _counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Per-class sizes: val and test rounded, train the rest (each within 1 of ideal)."""
    n_val = int(math.floor(n * ratios[1] + 0.5))
    n_test = int(math.floor(n * ratios[2] + 0.5))
    if n_val + n_test > n:  # tiny classes
        n_test = max(n - n_val, 0)
    return n - n_val - n_test, n_val, n_test


def split_protocol(run_protocol: str) -> str:
    """The trial-split protocol a run's evaluation protocol uses.

    Parameters
    ----------
    run_protocol : {"clean", "reference"}
        The run's evaluation protocol (``protocol`` of a stage config).

    Returns
    -------
    str
        ``"reference"`` (the paper code's split) for the reference protocol, else
        ``"stratified"``: every stage of one run must split its trials the same way.
    """
    return "reference" if run_protocol == "reference" else "stratified"


def split_trials(
    trials: Sequence[Trial],
    seed: int = 0,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    protocol: str = "stratified",
    val_runs: Mapping[str, Sequence[str]] | None = None,
    test_runs: Mapping[str, Sequence[str]] | None = None,
) -> Split:
    """Split trials into train/val/test, per subject, deterministically from ``seed``.

    Parameters
    ----------
    trials : sequence of Trial
        All trials (any order: the result does not depend on it except for ``"reference"``,
        which follows the recording order after sorting runs numerically, as the paper does).
    seed : int
        Seed; the same seed and trials give the same split on every machine.
    ratios : tuple of float
        Train/val/test fractions (sum 1).
    protocol : {"stratified", "runs", "reference"}
        See the module documentation.
    val_runs, test_runs : mapping subject -> run ids, optional
        For ``"runs"``: runs to hold out; default one seeded run each for val and test.

    Returns
    -------
    Split
        With ``protocol`` and ``normalization`` recorded.

    Raises
    ------
    ValueError
        Unknown protocol, bad ratios, duplicate trials or too few runs.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"split protocol must be one of {PROTOCOLS}, got {protocol!r}")
    ratios = tuple(float(r) for r in ratios)  # type: ignore[assignment]
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(
            f"split ratios must be three non-negative fractions summing to 1, got {ratios}"
        )
    ids = [(t.recording, t.index) for t in trials]
    if len(set(ids)) != len(ids):
        raise ValueError("split_trials: the same trial (recording, index) appears twice")
    by_subject: dict[str, list[Trial]] = defaultdict(list)
    for trial in trials:
        by_subject[trial.subject].append(trial)
    train: list[Trial] = []
    val: list[Trial] = []
    test: list[Trial] = []
    details: dict[str, Any] = {}
    for subject in sorted(by_subject):
        items = by_subject[subject]
        if protocol == "stratified":
            parts = _stratified(items, _subject_seed(seed, subject), ratios)
        elif protocol == "runs":
            parts, held = _by_runs(
                items, _subject_seed(seed, subject), subject, val_runs, test_runs
            )
            details[subject] = held
        else:
            parts = _reference(items, seed, ratios[0])
        train += parts[0]
        val += parts[1]
        test += parts[2]
    return Split(
        train=train,
        val=val,
        test=test,
        protocol=protocol,
        seed=seed,
        ratios=ratios,  # type: ignore[arg-type]
        normalization="all" if protocol == "reference" else "train",
        details={"held_out_runs": details} if details else {},
    )


def limit_train_trials(split: Split, per_label: int) -> Split:
    """Keep only the first ``per_label`` training trials of each subject's words (a label budget).

    "First" is recording order (runs sorted numerically, then onset): the trials a patient would
    have recorded first. Validation and test trials are unchanged, so accuracies at different
    budgets are measured on the same held-out trials.

    Parameters
    ----------
    split : Split
        Any split.
    per_label : int
        Training trials to keep per subject and word (>= 1); words with fewer keep all of theirs.

    Returns
    -------
    Split
        A copy with the reduced ``train`` and ``details["train_trials_per_label"]``.
    """
    if per_label < 1:
        raise ValueError(f"per_label must be >= 1, got {per_label}")
    order = sorted(split.train, key=lambda t: (_run_sort_key(t.run), t.recording, t.onset))
    kept: list[Trial] = []
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for trial in order:
        key = (trial.subject, trial.label)
        if seen[key] < per_label:
            seen[key] += 1
            kept.append(trial)
    return dataclasses.replace(
        split,
        train=sorted(kept),
        details={**split.details, "train_trials_per_label": per_label},
    )


def _stratified(
    items: list[Trial], rng: np.random.Generator, ratios: tuple[float, float, float]
) -> tuple[list[Trial], list[Trial], list[Trial]]:
    by_label: dict[str, list[Trial]] = defaultdict(list)
    for trial in sorted(items):  # canonical order: independent of the input order
        by_label[trial.label].append(trial)
    train, val, test = [], [], []
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        n_train, n_val, _ = _counts(len(group), ratios)
        train += [group[i] for i in order[:n_train]]
        val += [group[i] for i in order[n_train : n_train + n_val]]
        test += [group[i] for i in order[n_train + n_val :]]
    return sorted(train), sorted(val), sorted(test)


def _by_runs(
    items: list[Trial],
    rng: np.random.Generator,
    subject: str,
    val_runs: Mapping[str, Sequence[str]] | None,
    test_runs: Mapping[str, Sequence[str]] | None,
) -> tuple[tuple[list[Trial], list[Trial], list[Trial]], dict[str, list[str]]]:
    runs = sorted({str(t.run) for t in items}, key=_run_sort_key)
    if val_runs is not None and test_runs is not None:
        held_val = [str(r) for r in val_runs.get(subject, [])]
        held_test = [str(r) for r in test_runs.get(subject, [])]
        unknown = sorted(set(held_val + held_test) - set(runs))
        if unknown:
            raise ValueError(f"subject {subject!r}: held-out runs {unknown} not in its runs {runs}")
        if set(held_val) & set(held_test):
            raise ValueError(f"subject {subject!r}: a run is both validation and test")
    else:
        if len(runs) < 3:
            raise ValueError(
                f"protocol 'runs' needs >= 3 runs per subject; subject {subject!r} has {runs}"
            )
        order = rng.permutation(len(runs))
        held_val, held_test = [runs[order[0]]], [runs[order[1]]]
    parts: tuple[list[Trial], list[Trial], list[Trial]] = ([], [], [])
    for trial in sorted(items):
        run = str(trial.run)
        parts[1 if run in held_val else 2 if run in held_test else 0].append(trial)
    return parts, {"val": held_val, "test": held_test}


def _reference(
    items: list[Trial], seed: int, train_ratio: float
) -> tuple[list[Trial], list[Trial], list[Trial]]:
    """The paper's split (duin-reference §1.5 steps 1, 5, 6), runs sorted numerically."""
    rng = np.random.RandomState(seed)  # the reference uses numpy's legacy global generator
    by_run: dict[str, list[Trial]] = defaultdict(list)
    for trial in items:
        by_run[trial.recording].append(trial)
    runs = sorted(by_run, key=lambda key: (_run_sort_key(by_run[key][0].run), key))
    ordered: list[Trial] = []
    for key in runs:
        group = sorted(by_run[key], key=lambda t: t.index)
        rng.shuffle(group)  # records shuffled in place within each run
        ordered += group
    train, pool = [], []
    for label in sorted({t.label for t in ordered}):
        group = [t for t in ordered if t.label == label]
        n_train = int(train_ratio * len(group))
        train += group[:n_train]
        pool += group[n_train:]
    # The paper's overlap sanity check draws 10 random time indices of the (1000 Hz) trials
    # before the validation draw; the same draws keep the generator in step with it.
    n_samples = round((items[0].tmax - items[0].tmin) * _REFERENCE_SFREQ)
    for _ in range(10):
        rng.randint(n_samples)
    chosen = set(rng.choice(len(pool), len(pool) // 2, replace=False).tolist()) if pool else set()
    val = [t for i, t in enumerate(pool) if i in chosen]
    test = [t for i, t in enumerate(pool) if i not in chosen]
    return train, val, test


def _subtract(
    span: tuple[float, float], holes: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """``span`` minus the union of ``holes`` (sorted by start)."""
    out, cursor = [], span[0]
    for lo, hi in holes:
        if hi <= cursor or lo >= span[1]:
            continue
        if lo > cursor:
            out.append((cursor, min(lo, span[1])))
        cursor = max(cursor, hi)
        if cursor >= span[1]:
            break
    if cursor < span[1]:
        out.append((cursor, span[1]))
    return out


def pretrain_windows(
    recordings: Iterable[Recording] | Mapping[str, tuple[str, float]],
    split: Split | None = None,
    margin: float = 1.0,
    length: float | None = 8.0,
    min_length: float = 4.0,
    step: float | None = None,
) -> list[Window]:
    """Windows for pretraining crops that never overlap a validation/test trial.

    Parameters
    ----------
    recordings : iterable of Recording, or mapping key -> (subject, duration_s)
        Every recording usable for pretraining (task runs and non-task recordings).
    split : Split, optional
        Its validation and test trials (widened by ``margin``) are cut out of their
        recordings. ``None`` uses whole recordings (only safe for non-task data).
    margin : float
        Seconds excluded on each side of every held-out trial window.
    length : float or None
        Cut allowed spans into windows of this many seconds (one pretraining crop per window
        and epoch, so this sets the epoch size); ``None`` keeps whole spans.
    min_length : float
        Drop windows shorter than this (at least the crop length, 4 s by default).
    step : float, optional
        Start-to-start distance of consecutive windows: windows of exactly ``length`` every
        ``step`` seconds from the start of each span (the paper: 8-s windows every 4 s); a
        span shorter than ``length`` (but at least ``min_length``) is one window. ``None``:
        back-to-back windows, the last one absorbing a remainder shorter than ``length``.

    Returns
    -------
    list of Window
        Sorted by recording and start.
    """
    if step is not None and step <= 0:
        raise ValueError(f"pretrain_windows: step must be > 0 seconds, got {step}")
    if isinstance(recordings, Mapping):
        spans = {k: (str(s), float(d)) for k, (s, d) in recordings.items()}
    else:
        spans = {recording_key(r): (r.subject, r.duration) for r in recordings}
    holes = split.held_out_intervals(margin) if split is not None else {}
    unknown = sorted(set(holes) - set(spans))
    if unknown:
        raise ValueError(
            f"pretrain_windows: the split holds trials of recordings {unknown[:5]} that were "
            "not passed; pass every task recording so their held-out trials can be excluded"
        )
    out: list[Window] = []
    for key in sorted(spans):
        subject, duration = spans[key]
        for lo, hi in _subtract((0.0, duration), holes.get(key, [])):
            if length is None:
                pieces = [(lo, hi)]
            elif step is not None:
                n = max(int((hi - lo - length) // step) + 1, 1)
                pieces = [(lo + i * step, min(lo + i * step + length, hi)) for i in range(n)]
            else:
                n = max(int((hi - lo) // length), 1)
                edges = [lo + i * length for i in range(n)] + [hi]
                pieces = list(itertools.pairwise(edges))
            out.extend(Window(key, subject, a, b) for a, b in pieces if b - a >= min_length)
    return out

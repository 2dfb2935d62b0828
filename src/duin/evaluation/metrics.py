"""Classification metrics from logits and labels, and the paper's aggregation over seeds/subjects.

All functions accept numpy arrays or torch tensors (any device) and return plain Python floats or
numpy arrays. Logits are ``(n_trials, n_classes)``; labels are integer class indices
``(n_trials,)``.

Aggregation (Zheng et al. 2024, §4.2 and Tables 2/10-12; verified in ``paper.md`` §7): for each
subject, average the metric over seeds; the headline number is the mean of the subject means
± the standard error ``SD_pop(subject means) / sqrt(n_subjects)`` (population SD, ``ddof=0``).
Per-subject tables show mean ± SD over seeds (``ddof=0`` too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Aggregate",
    "SubjectSummary",
    "accuracy",
    "aggregate_runs",
    "balanced_accuracy",
    "classification_metrics",
    "codex_usage",
    "confusion_matrix",
    "cross_entropy",
    "mean_se",
    "top_k_accuracy",
]


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().cpu()
        if str(values.dtype) in ("torch.bfloat16", "torch.float16"):
            values = values.float()
        values = values.numpy()
    return np.asarray(values)


def _check(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    logits_np = _to_numpy(logits).astype(np.float64, copy=False)
    labels_np = _to_numpy(labels)
    if logits_np.ndim != 2:
        raise ValueError(f"logits must be (n_trials, n_classes), got shape {logits_np.shape}")
    if labels_np.ndim != 1 or labels_np.shape[0] != logits_np.shape[0]:
        raise ValueError(
            f"labels must be (n_trials,) = ({logits_np.shape[0]},), got shape {labels_np.shape}"
        )
    if labels_np.size and not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels_np.dtype}")
    if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= logits_np.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {logits_np.shape[1] - 1}], got range "
            f"[{labels_np.min()}, {labels_np.max()}]"
        )
    if logits_np.shape[0] == 0:
        raise ValueError("no trials: logits and labels are empty")
    return logits_np, labels_np.astype(np.int64, copy=False)


def top_k_accuracy(logits: Any, labels: Any, k: int = 1) -> float:
    """Fraction of trials whose label is among the ``k`` highest logits.

    Ties are broken towards the lower class index (as ``argmax`` does), so the result is
    deterministic.

    Parameters
    ----------
    logits : array-like
        ``(n_trials, n_classes)`` scores (logits or probabilities).
    labels : array-like
        ``(n_trials,)`` integer labels.
    k : int
        Number of top classes that count as a hit.

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    logits_np, labels_np = _check(logits, labels)
    if not 1 <= k <= logits_np.shape[1]:
        raise ValueError(f"k must be in [1, {logits_np.shape[1]}], got {k}")
    # stable sort of -logits: equal scores keep ascending class order
    order = np.argsort(-logits_np, axis=1, kind="stable")[:, :k]  # (n_trials, k)
    return float(np.mean(np.any(order == labels_np[:, None], axis=1)))


def accuracy(logits: Any, labels: Any) -> float:
    """Top-1 accuracy (see :func:`top_k_accuracy`).

    Parameters
    ----------
    logits : array-like
        ``(n_trials, n_classes)``.
    labels : array-like
        ``(n_trials,)``.

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    return top_k_accuracy(logits, labels, 1)


def confusion_matrix(labels: Any, predictions: Any, n_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Parameters
    ----------
    labels : array-like
        ``(n_trials,)`` true classes.
    predictions : array-like
        ``(n_trials,)`` predicted classes.
    n_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray
        int64 ``(n_classes, n_classes)``; rows are true classes, columns predictions.
    """
    y = _to_numpy(labels).astype(np.int64).ravel()
    p = _to_numpy(predictions).astype(np.int64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in length")
    for name, v in (("labels", y), ("predictions", p)):
        if v.size and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} must lie in [0, {n_classes - 1}]")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def balanced_accuracy(labels: Any, predictions: Any, n_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``labels``.

    Parameters
    ----------
    labels : array-like
        ``(n_trials,)`` true classes.
    predictions : array-like
        ``(n_trials,)`` predicted classes.
    n_classes : int, optional
        Number of classes (default: inferred from the data).

    Returns
    -------
    float
        Balanced accuracy in [0, 1].
    """
    y = _to_numpy(labels).astype(np.int64).ravel()
    p = _to_numpy(predictions).astype(np.int64).ravel()
    if y.size == 0:
        raise ValueError("no trials: labels are empty")
    if n_classes is None:
        n_classes = int(max(y.max(), p.max())) + 1
    cm = confusion_matrix(y, p, n_classes)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def cross_entropy(logits: Any, labels: Any) -> float:
    """Mean negative log-likelihood (natural log) of the labels under ``softmax(logits)``.

    Parameters
    ----------
    logits : array-like
        ``(n_trials, n_classes)`` unnormalised scores.
    labels : array-like
        ``(n_trials,)`` integer labels.

    Returns
    -------
    float
        Cross-entropy in nats.
    """
    logits_np, labels_np = _check(logits, labels)
    shifted = logits_np - logits_np.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    picked = shifted[np.arange(len(labels_np)), labels_np]
    return float(np.mean(log_norm - picked))


def classification_metrics(
    logits: Any, labels: Any, *, top_k: Sequence[int] = (1, 5)
) -> dict[str, Any]:
    """All word-classification metrics of one evaluation.

    Parameters
    ----------
    logits : array-like
        ``(n_trials, n_classes)``.
    labels : array-like
        ``(n_trials,)``.
    top_k : sequence of int
        Which top-k accuracies to include (values above ``n_classes`` are skipped).

    Returns
    -------
    dict
        ``top1``, ``top5``..., ``balanced_accuracy``, ``cross_entropy``, ``n_trials``,
        ``n_classes``, ``chance`` (1 / n_classes) and ``confusion`` (a nested list).
    """
    logits_np, labels_np = _check(logits, labels)
    n_classes = logits_np.shape[1]
    pred = np.argmax(logits_np, axis=1)
    out: dict[str, Any] = {}
    for k in top_k:
        if k <= n_classes:
            out[f"top{k}"] = top_k_accuracy(logits_np, labels_np, k)
    out["balanced_accuracy"] = balanced_accuracy(labels_np, pred, n_classes)
    out["cross_entropy"] = cross_entropy(logits_np, labels_np)
    out["n_trials"] = int(len(labels_np))
    out["n_classes"] = int(n_classes)
    out["chance"] = 1.0 / n_classes
    out["confusion"] = confusion_matrix(labels_np, pred, n_classes).tolist()
    return out


def codex_usage(counts: Any) -> dict[str, float]:
    """Health of a codex from how often each code was assigned.

    Parameters
    ----------
    counts : array-like
        ``(n_codes,)`` assignment counts (e.g. summed over an epoch).

    Returns
    -------
    dict
        ``codex_perplexity``: ``exp`` of the entropy of the usage distribution (1 = every token on
        one code; ``n_codes`` = uniform use); ``codes_used``: codes assigned at least once.
    """
    counts = _to_numpy(counts).astype(np.float64).reshape(-1)
    total = counts.sum()
    if total <= 0:
        return {"codex_perplexity": 0.0, "codes_used": 0.0}
    p = counts[counts > 0] / total
    return {
        "codex_perplexity": float(np.exp(-(p * np.log(p)).sum())),
        "codes_used": float((counts > 0).sum()),
    }


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error ``SD_pop / sqrt(n)`` (population SD, ddof=0), as in Table 2.

    Parameters
    ----------
    values : sequence of float
        One value per unit (e.g. per-subject means).

    Returns
    -------
    (float, float)
        Mean and standard error (0 for a single value).
    """
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("cannot aggregate an empty list of values")
    return float(arr.mean()), float(arr.std(ddof=0) / math.sqrt(arr.size))


@dataclass
class SubjectSummary:
    """One subject's metric over seeds.

    Parameters
    ----------
    subject : str
        Subject id.
    mean : float
        Mean over seeds.
    sd : float
        Population SD over seeds (ddof=0).
    n_seeds : int
        Number of seeds.
    values : dict
        Per-seed values, keyed by seed.
    """

    subject: str
    mean: float
    sd: float
    n_seeds: int
    values: dict[int, float] = field(default_factory=dict)


@dataclass
class Aggregate:
    """A metric aggregated the paper's way.

    Parameters
    ----------
    mean : float
        Mean of the per-subject means.
    se : float
        Population SD of the per-subject means / sqrt(n_subjects).
    sd : float
        Population SD of the per-subject means.
    n_subjects : int
        Number of subjects.
    subjects : list of SubjectSummary
        Per-subject summaries, in subject order.
    """

    mean: float
    se: float
    sd: float
    n_subjects: int
    subjects: list[SubjectSummary]


def aggregate_runs(values: Mapping[str, Mapping[int, float] | Sequence[float]]) -> Aggregate:
    """Aggregate one metric over seeds (per subject) and then subjects, as the paper does.

    Parameters
    ----------
    values : Mapping
        ``{subject: {seed: value}}`` or ``{subject: [value, ...]}``.

    Returns
    -------
    Aggregate
        Mean ± SE over subjects and the per-subject mean ± SD over seeds.
    """
    if not values:
        raise ValueError("no results to aggregate")
    summaries = []
    for subject in sorted(values):
        per_seed = values[subject]
        if isinstance(per_seed, Mapping):
            seeded = {int(k): float(v) for k, v in per_seed.items()}
        else:
            seeded = {i: float(v) for i, v in enumerate(per_seed)}
        if not seeded:
            raise ValueError(f"subject {subject!r} has no results")
        arr = np.asarray(list(seeded.values()))
        summaries.append(
            SubjectSummary(
                str(subject), float(arr.mean()), float(arr.std(ddof=0)), arr.size, seeded
            )
        )
    means = [s.mean for s in summaries]
    mean, se = mean_se(means)
    return Aggregate(
        mean=mean,
        se=se,
        sd=float(np.std(means, ddof=0)),
        n_subjects=len(summaries),
        subjects=summaries,
    )

"""Figures: confusion matrices and bar charts, written as PNG without touching pyplot state.

Figures are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas (no display, no
global backend change) and written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duin.utils.io import atomic_write_bytes

__all__ = ["plot_bars", "plot_confusion_matrix"]


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_confusion_matrix(
    confusion: Any,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Draw a confusion matrix (rows: true class, columns: prediction) as a PNG heat map.

    Parameters
    ----------
    confusion : array-like
        ``(n_classes, n_classes)`` counts.
    path : str or pathlib.Path
        Output PNG.
    class_names : sequence of str, optional
        Tick labels (shown when there are at most 70 classes).
    normalize : bool
        Show each row as fractions of its true class (recall per class).
    title : str, optional
        Figure title.
    dpi : int
        Resolution.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from matplotlib.figure import Figure

    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {cm.shape}")
    n = cm.shape[0]
    if class_names is not None and len(class_names) != n:
        raise ValueError(f"class_names has {len(class_names)} names for {n} classes")
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = min(4 + 0.18 * n, 16)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="viridis", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, label="fraction of true class" if normalize else "trials")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if class_names is not None and n <= 70:
        fontsize = 8 if n <= 20 else 5
        ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=fontsize)
        ax.set_yticks(range(n), labels=list(class_names), fontsize=fontsize)
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)


def plot_bars(
    values: Mapping[str, float],
    path: str | Path,
    *,
    errors: Mapping[str, float] | None = None,
    ylabel: str = "accuracy (%)",
    chance: float | None = None,
    ceiling: float | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Bar chart of one value per group (models, subjects), with optional error bars.

    Parameters
    ----------
    values : Mapping[str, float]
        Bar heights, in display order.
    path : str or pathlib.Path
        Output PNG.
    errors : Mapping[str, float], optional
        Error-bar half widths (e.g. SE), by the same keys.
    ylabel : str
        Y axis label.
    chance : float, optional
        Draws a dashed chance line at this height.
    ceiling : float, optional
        Draws a dotted line at this height (e.g. the simulator's oracle accuracy).
    title : str, optional
        Figure title.
    dpi : int
        Resolution.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from matplotlib.figure import Figure

    if not values:
        raise ValueError("no values to plot")
    names = list(values)
    heights = [float(values[k]) for k in names]
    yerr = None if errors is None else [float(errors.get(k, 0.0)) for k in names]
    fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 2), 4))
    ax = fig.add_subplot()
    ax.bar(range(len(names)), heights, yerr=yerr, capsize=3, color="#4c72b0")
    ax.set_xticks(
        range(len(names)),
        labels=names,
        rotation=45 if len(names) > 4 else 0,
        ha="right" if len(names) > 4 else "center",
    )
    ax.set_ylabel(ylabel)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    if ceiling is not None:
        ax.axhline(ceiling, color="black", linestyle=":", linewidth=1, label="oracle")
    if chance is not None or ceiling is not None:
        ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)

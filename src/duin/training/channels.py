"""Channel contribution ranking and top-k channel selection (paper §4.3, reference §1.4).

The paper keeps ~10 of a subject's 60-150 bipolar channels. They come from a Du-IN classifier
trained from scratch on the word trials with **all** channels: channel ``c`` is scored by
``mean_j |W_s[c, j]|`` over the 16 outputs of the subject layer, divided by the largest score,
and the top-k channels (in decreasing score order, which fixes the model's input order) are
used by every later stage.

Here the ranking model sees **training trials only** (the paper's code cannot show this), so
selection never leaks test information. :func:`rank_channels` trains the ranking model and
returns a :class:`ChannelRanking`; :func:`plot_ranking` draws the scores on the electrode
coordinates when they are known, else as a bar chart.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from duin.config import OptimConfig, TrainerConfig
from duin.models.config import ClassifierConfig

__all__ = [
    "ChannelRanking",
    "contribution_scores",
    "plot_ranking",
    "rank_channels",
    "select_top_k",
]

logger = logging.getLogger(__name__)


@dataclass
class ChannelRanking:
    """Channels of one subject in decreasing contribution order.

    Parameters
    ----------
    subject : str
        Subject id.
    ch_names : list of str
        Channel names, most contributing first.
    scores : list of float
        Normalised scores in [0, 1] (1 = the top channel), same order.
    regions : list of str or None
        Anatomical region of each channel, same order.
    coords : list of list of float or None
        Electrode coordinates (metres), same order.
    info : dict
        How the ranking was made (trials used, epochs, final training accuracy).
    """

    subject: str
    ch_names: list[str]
    scores: list[float]
    regions: list[str] | None = None
    coords: list[list[float]] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def top(self, k: int | None) -> list[str]:
        """The ``k`` best channels in rank order (all when ``k`` is None or too large)."""
        return select_top_k(self, k)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "subject": self.subject,
            "ranking": [
                {
                    "rank": i + 1,
                    "channel": name,
                    "score": float(score),
                    **({"region": self.regions[i]} if self.regions else {}),
                    **({"coords": self.coords[i]} if self.coords else {}),
                }
                for i, (name, score) in enumerate(zip(self.ch_names, self.scores, strict=True))
            ],
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelRanking:
        """Inverse of :meth:`to_dict`."""
        rows = data["ranking"]
        regions = [r["region"] for r in rows] if rows and "region" in rows[0] else None
        coords = [r["coords"] for r in rows] if rows and "coords" in rows[0] else None
        return cls(
            subject=str(data["subject"]),
            ch_names=[r["channel"] for r in rows],
            scores=[float(r["score"]) for r in rows],
            regions=regions,
            coords=coords,
            info=dict(data.get("info", {})),
        )

    def to_csv(self) -> str:
        """CSV text: ``rank,channel,score,region``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["subject", "rank", "channel", "score", "region"])
        for i, (name, score) in enumerate(zip(self.ch_names, self.scores, strict=True)):
            region = self.regions[i] if self.regions else ""
            writer.writerow([self.subject, i + 1, name, f"{score:.6f}", region])
        return buffer.getvalue()


def contribution_scores(model: nn.Module, subject: int = 0) -> np.ndarray:
    """Normalised contribution score of every channel: ``mean_j |W_s[c, j]|`` / max.

    Parameters
    ----------
    model : nn.Module
        A Du-IN model with ``channel_contributions(subject)``.
    subject : int
        Subject index in the model.

    Returns
    -------
    numpy.ndarray
        ``(n_channels,)`` scores in [0, 1], in the model's input order.
    """
    raw = model.channel_contributions(subject).detach().cpu().double().numpy()  # type: ignore[operator]
    top = float(raw.max()) if raw.size else 0.0
    return raw / top if top > 0 else raw


def select_top_k(ranking: ChannelRanking, k: int | None) -> list[str]:
    """The ``k`` highest-scoring channels, best first (the input order of later stages).

    Parameters
    ----------
    ranking : ChannelRanking
        A ranking.
    k : int or None
        How many; None (or more than available) keeps all.

    Returns
    -------
    list of str
        Channel names.
    """
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return list(ranking.ch_names if k is None else ranking.ch_names[:k])


class _Trials(Dataset):
    """Normalised trials with optional random shift (the same augmentation as stage 3)."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, max_shift: int = 0) -> None:
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.max_shift = int(max_shift)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.x[i]
        if self.max_shift:
            x = shift_trial(x, int(torch.randint(-self.max_shift, self.max_shift + 1, ()).item()))
        return {"x": x, "subject": torch.tensor(0), "labels": self.labels[i]}


def shift_trial(x: torch.Tensor, n: int) -> torch.Tensor:
    """Shift ``(n_channels, n_times)`` by ``n`` samples with zero fill (positive = delay).

    Parameters
    ----------
    x : torch.Tensor
        One trial.
    n : int
        Shift in samples.

    Returns
    -------
    torch.Tensor
        A shifted copy (all channels move together; not circular).
    """
    if n == 0:
        return x
    out = torch.zeros_like(x)
    if n > 0:
        out[:, n:] = x[:, :-n]
    else:
        out[:, :n] = x[:, -n:]
    return out


def rank_channels(
    x_train: np.ndarray,
    labels_train: np.ndarray,
    ch_names: Sequence[str],
    *,
    model_cfg: ClassifierConfig,
    optim: OptimConfig,
    trainer: TrainerConfig,
    run_dir: str | Path,
    subject: str = "01",
    seed: int = 42,
    max_shift: int = 0,
    regions: Sequence[str] | None = None,
    coords: np.ndarray | None = None,
    quiet: bool = False,
) -> ChannelRanking:
    """Train a Du-IN classifier from scratch on all channels and rank them (training trials only).

    Parameters
    ----------
    x_train : numpy.ndarray
        ``(n_trials, n_channels, n_times)`` normalised **training** trials.
    labels_train : numpy.ndarray
        ``(n_trials,)`` int64 labels.
    ch_names : sequence of str
        Name of each channel (row of ``x_train``).
    model_cfg : ClassifierConfig
        Classifier architecture; ``n_channels`` / ``n_subjects`` are set here.
    optim : OptimConfig
        Optimiser and schedule of the ranking run.
    trainer : TrainerConfig
        Loop mechanics (no validation set is used; the final weights are scored).
    run_dir : str or pathlib.Path
        Trainer run directory of the ranking model.
    subject : str
        Subject id (for the result).
    seed : int
        Seed of the ranking run.
    max_shift : int
        Random shift augmentation in samples.
    regions : sequence of str, optional
        Region per channel.
    coords : numpy.ndarray, optional
        ``(n_channels, 3)`` coordinates.
    quiet : bool
        Hide progress bars.

    Returns
    -------
    ChannelRanking
        All channels, best first.
    """
    from duin.models.registry import save_model
    from duin.training.stages import load_weights, model_config, param_groups_fn
    from duin.training.trainer import Trainer

    x_train = np.asarray(x_train, dtype=np.float32)
    if x_train.ndim != 3 or x_train.shape[1] != len(ch_names):
        raise ValueError(
            f"x_train must be (n_trials, n_channels={len(ch_names)}, n_times), got {x_train.shape}"
        )
    if len(labels_train) != len(x_train):
        raise ValueError(f"{len(labels_train)} labels for {len(x_train)} trials")
    torch.manual_seed(seed)
    from duin.models.duin import DuINClassifier

    cfg = model_config(model_cfg, ClassifierConfig, n_channels=len(ch_names), n_subjects=1)
    model = DuINClassifier(cfg)
    trainer_cfg = dataclasses.replace(
        trainer,
        early_stopping_patience=None,
        snapshot_every_epochs=0,
        selection_metric="train/loss",
        selection_mode="min",
    )
    fit = Trainer(
        model,
        _Trials(x_train, labels_train, max_shift),
        None,
        run_dir=run_dir,
        optim=optim,
        trainer=trainer_cfg,
        seed=seed,
        param_groups_fn=param_groups_fn(False),
        save_model_fn=save_model,
        load_weights_fn=load_weights,
        quiet=quiet,
    ).fit()
    scores = contribution_scores(model, 0)
    order = np.argsort(-scores, kind="stable")
    last = fit.history[-1] if fit.history else {}
    ranking = ChannelRanking(
        subject=subject,
        ch_names=[ch_names[i] for i in order],
        scores=[float(scores[i]) for i in order],
        regions=[regions[i] for i in order] if regions is not None else None,
        coords=(
            [[float(v) for v in coords[i]] for i in order]
            if coords is not None and np.isfinite(np.asarray(coords, dtype=float)).all()
            else None
        ),
        info={
            "method": "Du-IN classifier from scratch on all channels, training trials only; "
            "score = mean_j |W_s[c, j]| of the subject layer / max",
            "n_train_trials": int(len(x_train)),
            "epochs": int(optim.epochs),
            "final_train_loss": last.get("train/loss"),
            "run_dir": str(run_dir),
        },
    )
    return ranking


def save_rankings(rankings: Sequence[ChannelRanking], out_dir: str | Path) -> dict[str, Path]:
    """Write ``channels.json`` and ``channels.csv`` (all subjects) atomically.

    Parameters
    ----------
    rankings : sequence of ChannelRanking
        One per subject.
    out_dir : str or pathlib.Path
        Directory.

    Returns
    -------
    dict
        ``{"json": path, "csv": path}``.
    """
    from duin.utils.io import atomic_write_text

    out = Path(out_dir)
    payload = {"subjects": {r.subject: r.to_dict() for r in rankings}}
    json_path = atomic_write_text(
        out / "channel_ranking.json", json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
    )
    text = "".join(
        r.to_csv() if i == 0 else r.to_csv().split("\n", 1)[1] for i, r in enumerate(rankings)
    )
    csv_path = atomic_write_text(out / "channel_ranking.csv", text)
    return {"json": json_path, "csv": csv_path}


def plot_ranking(
    ranking: ChannelRanking,
    path: str | Path,
    *,
    k: int | None = None,
    truth: Sequence[str] | None = None,
    dpi: int = 120,
) -> Path:
    """Plot contribution scores on the electrode coordinates (or as bars when there are none).

    Parameters
    ----------
    ranking : ChannelRanking
        The ranking.
    path : str or pathlib.Path
        Output PNG (written atomically).
    k : int, optional
        Highlight the selected top-k channels.
    truth : sequence of str, optional
        Channels known to be informative (simulated data), outlined in the plot.
    dpi : int
        Resolution.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from matplotlib.figure import Figure

    from duin.utils.io import atomic_write_bytes

    names = ranking.ch_names
    scores = np.asarray(ranking.scores, dtype=float)
    selected = set(select_top_k(ranking, k)) if k else set()
    true_set = set(truth or ())
    if ranking.coords is not None:
        xyz = np.asarray(ranking.coords, dtype=float) * 1000.0  # metres -> mm
        fig = Figure(figsize=(11, 4.5))
        for j, (a, b, label) in enumerate(
            ((0, 1, "x-y (mm)"), (0, 2, "x-z (mm)"), (1, 2, "y-z (mm)"))
        ):
            ax = fig.add_subplot(1, 3, j + 1)
            image = ax.scatter(
                xyz[:, a], xyz[:, b], c=scores, cmap="viridis", vmin=0, vmax=1, s=30 + 120 * scores
            )
            for i, name in enumerate(names):
                if name in selected:
                    ax.scatter(xyz[i, a], xyz[i, b], s=200, facecolors="none", edgecolors="red")
                if name in true_set:
                    ax.scatter(xyz[i, a], xyz[i, b], s=12, marker="x", color="black")
            ax.set_title(label, fontsize=9)
            ax.set_aspect("equal", adjustable="datalim")
        fig.colorbar(image, ax=fig.axes, label="contribution score", shrink=0.8)
        fig.suptitle(
            f"sub-{ranking.subject}: channel contributions"
            + (f" (red: top {k})" if k else "")
            + (" (x: informative in the simulator)" if true_set else "")
        )
    else:
        fig = Figure(figsize=(max(6, 0.22 * len(names) + 2), 4))
        ax = fig.add_subplot()
        colors = ["tab:red" if n in selected else "tab:blue" for n in names]
        ax.bar(range(len(names)), scores, color=colors)
        ax.set_xticks(range(len(names)), labels=names, rotation=90, fontsize=6)
        for i, name in enumerate(names):
            if name in true_set:
                ax.text(i, scores[i], "*", ha="center", va="bottom")
        ax.set_ylabel("contribution score")
        ax.set_title(
            f"sub-{ranking.subject}: channel contributions"
            + (f" (red: top {k})" if k else "")
            + (" (*: informative in the simulator)" if true_set else "")
        )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())

"""Codex health: how well a VQ-VAE's codex is used, and a summary of finished pretraining runs.

Reads VQ-VAE checkpoints (tokenizes crops) and the run directories written by
:mod:`duin.workflows.pretrain` (``data.json``, ``sub-XX/metrics.jsonl``,
``sub-XX/checkpoints/last/config.json``). Writes nothing.

A codex whose tokens all fall on a handful of codes gives the MAE nearly constant targets; the
MAE then learns nothing and a classifier started from it can stay at chance. The perplexity of
code usage (``exp`` of its entropy) is the number to watch: 1 means every token on one code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from duin.evaluation.metrics import codex_usage
from duin.training.stages import MAERunConfig, code_counts

__all__ = [
    "DEFAULT_MIN_CODEX_PERPLEXITY",
    "CodexCollapsedError",
    "check_mae_targets",
    "codex_health",
    "format_pretraining",
    "pretraining_health",
]

logger = logging.getLogger(__name__)

#: Default floor of ``MAERunConfig.min_codex_perplexity`` (also used to warn after stage 1).
DEFAULT_MIN_CODEX_PERPLEXITY: float = MAERunConfig.min_codex_perplexity


class CodexCollapsedError(ValueError):
    """A VQ-VAE whose codex is too little used to give the MAE informative targets."""


def codex_health(
    tokenizer: torch.nn.Module, data: Dataset, max_items: int = 256, batch_size: int = 32
) -> dict[str, float]:
    """Codex perplexity and codes used by a VQ-VAE on (up to ``max_items``) crops of ``data``.

    Parameters
    ----------
    tokenizer : DuINVQVAE
        The stage-1 model (its ``tokenize`` gives code indices; nothing is updated).
    data : Dataset
        Pretraining crops ``{"x", "subject"}``.
    max_items : int
        Crops to tokenize (evenly spaced over the dataset).
    batch_size : int
        Crops per forward pass.

    Returns
    -------
    dict
        ``codex_perplexity``, ``codes_used`` (:func:`duin.evaluation.metrics.codex_usage`) and
        ``n_crops``.
    """
    n = len(data)  # type: ignore[arg-type]
    picks = np.unique(np.linspace(0, n - 1, num=min(n, max_items)).round().astype(int))
    n_codes = tokenizer.config.quantizer.n_codes  # type: ignore[union-attr]
    hist = torch.zeros(n_codes, dtype=torch.int64)
    for lo in range(0, len(picks), batch_size):
        items = [data[int(i)] for i in picks[lo : lo + batch_size]]
        x = torch.stack([it["x"] for it in items])
        subject = torch.stack([it["subject"] for it in items])
        codes = tokenizer.tokenize(x, subject)  # type: ignore[operator]
        hist += code_counts(codes, n_codes)
    return {**codex_usage(hist), "n_crops": len(picks)}


def check_mae_targets(
    tokenizer: torch.nn.Module,
    crops: Dataset,
    checkpoint: str | Path,
    label: str,
    *,
    min_perplexity: float,
    force: bool,
) -> dict[str, float]:
    """Measure a VQ-VAE's codex on the MAE's training crops; refuse a collapsed one.

    Parameters
    ----------
    tokenizer : DuINVQVAE
        The frozen stage-1 model that gives the MAE its targets.
    crops : Dataset
        The MAE's training crops.
    checkpoint : str or pathlib.Path
        The tokenizer's checkpoint (named in the error).
    label : str
        What the log line calls this MAE (e.g. ``"MAE sub-01"``).
    min_perplexity : float
        Floor of the codex perplexity (``MAERunConfig.min_codex_perplexity``).
    force : bool
        Only log, never refuse.

    Returns
    -------
    dict
        :func:`codex_health` of ``tokenizer`` on ``crops``.

    Raises
    ------
    CodexCollapsedError
        The perplexity is below ``min_perplexity`` and ``force`` is not set.
    """
    health = codex_health(tokenizer, crops)
    logger.info(
        "%s: targets from a codex with perplexity %.1f (%d codes used)",
        label,
        health["codex_perplexity"],
        health["codes_used"],
    )
    if health["codex_perplexity"] < min_perplexity and not force:
        raise CodexCollapsedError(
            f"{checkpoint}: codex perplexity {health['codex_perplexity']:.2f} on "
            f"{health['n_crops']} training crops is below min_codex_perplexity="
            f"{min_perplexity:g}, so MAE targets would be nearly constant; train the VQ-VAE "
            "longer or on more non-task signal (or pass --force)"
        )
    return health


def _last_record(metrics: Path) -> dict[str, Any]:
    if not metrics.is_file():
        return {}
    lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def pretraining_health(vqvae_run: str | Path, mae_run: str | Path | None = None) -> dict[str, Any]:
    """Codex and MAE health per subject from finished pretraining runs.

    Parameters
    ----------
    vqvae_run : str or pathlib.Path
        Run directory of :func:`duin.workflows.pretrain.pretrain_vqvae`.
    mae_run : str or pathlib.Path, optional
        Run directory of :func:`duin.workflows.pretrain.pretrain_mae`.

    Returns
    -------
    dict
        ``{subject: {"vqvae_val_recon", "codex_perplexity", "codes_used", "n_codes",
        "mae_val_top1", "mae_targets_perplexity"}}``; codex figures are on validation crops.
    """
    vqvae_run = Path(vqvae_run)
    infos = json.loads((vqvae_run / "data.json").read_text()).get("pretraining", {})
    out: dict[str, Any] = {}
    for subject, info in infos.items():
        run = vqvae_run / f"sub-{subject}"
        config = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
        row = {
            "vqvae_val_recon": _last_record(run / "metrics.jsonl").get("val/loss_recon"),
            "codex_perplexity": info.get("codex_perplexity_val"),
            "codes_used": info.get("codes_used_val"),
            "n_codes": config.get("config", {}).get("quantizer", {}).get("n_codes"),
        }
        if mae_run is not None:
            mae_last = _last_record(Path(mae_run) / f"sub-{subject}" / "metrics.jsonl")
            row["mae_val_top1"] = mae_last.get("val/top1")
            row["mae_targets_perplexity"] = mae_last.get("val/codex_perplexity")
        out[subject] = row
    return out


def format_pretraining(health: Mapping[str, Mapping[str, Any]]) -> str:
    """Printable codex/MAE health table (see :func:`pretraining_health`)."""

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        "Pretraining health (validation crops)",
        f"{'subject':<8} {'VQ recon':>9} {'codex ppl':>10} {'codes used':>11} "
        f"{'MAE top-1 %':>12} {'target ppl':>11}",
    ]
    for subject, row in health.items():
        used = cell(row.get("codes_used"), ".0f")
        if row.get("n_codes"):
            used += f"/{row['n_codes']}"
        top1 = row.get("mae_val_top1")
        lines.append(
            f"{subject:<8} {cell(row.get('vqvae_val_recon'), '.4f'):>9} "
            f"{cell(row.get('codex_perplexity'), '.1f'):>10} {used:>11} "
            f"{cell(None if top1 is None else 100 * top1, '.2f'):>12} "
            f"{cell(row.get('mae_targets_perplexity'), '.1f'):>11}"
        )
    return "\n".join(lines)

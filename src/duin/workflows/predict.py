"""Prediction: decode every event of a recording with a fine-tuned classifier.

Reads a fine-tuning run's ``sub-XX/seed-N/trial_data.json`` (channels, window, preprocessing,
normalisation, labels) and its selected checkpoint, and a dataset directory with the recording;
preprocesses it into a (temporary) cache like the training data. Writes a CSV of the top-k
words per event (returned as text; optionally to a file, atomically).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duin.training.stages import DataConfig, predict_logits
from duin.utils.io import atomic_write_text
from duin.workflows.prepare import prepare_data
from duin.workflows.rundir import RESULT_FILE, TRIAL_DATA_FILE

__all__ = ["PREDICT_COLUMNS", "find_classifier_run", "predict"]

logger = logging.getLogger(__name__)

#: Columns of the prediction CSV (one row per event and rank).
PREDICT_COLUMNS = [
    "subject", "recording", "event", "onset", "true_label", "rank", "word", "probability"
]  # fmt: skip


def find_classifier_run(ckpt: Path) -> tuple[Path, Path]:
    """Locate a fine-tuned classifier and the run directory that describes its data.

    Parameters
    ----------
    ckpt : pathlib.Path
        A ``sub-XX/seed-N`` run directory, a checkpoint inside one, or a finetune run with
        exactly one classifier.

    Returns
    -------
    tuple of pathlib.Path
        (checkpoint directory, run directory holding ``trial_data.json``).
    """
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    if (ckpt / TRIAL_DATA_FILE).is_file():  # a sub-XX/seed-N run directory
        result = json.loads((ckpt / RESULT_FILE).read_text())
        return ckpt.parent.parent / result["checkpoint"], ckpt
    if (ckpt / "model.safetensors").is_file():
        for parent in ckpt.parents:
            if (parent / TRIAL_DATA_FILE).is_file():
                return ckpt, parent
        raise FileNotFoundError(f"{ckpt}: no {TRIAL_DATA_FILE} above it (not a finetune run?)")
    runs = sorted(ckpt.glob(f"sub-*/seed-*/{TRIAL_DATA_FILE}"))
    if len(runs) == 1:
        return find_classifier_run(runs[0].parent)
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
    ckpt_dir, run_dir = find_classifier_run(Path(ckpt))
    info = json.loads((run_dir / TRIAL_DATA_FILE).read_text())
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
    writer.writerow(PREDICT_COLUMNS)
    writer.writerows(rows_out)
    text = buffer.getvalue()
    if out_csv is not None:
        atomic_write_text(out_csv, text)
    return text

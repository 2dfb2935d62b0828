"""Run directories shared by the workflows: their fixed file names and small read/write helpers.

Reads and writes, inside a run directory ``OUT``: ``config.yaml`` (the resolved configuration,
checked on ``--resume``), ``channels.json`` (channels per subject and how they were chosen),
``data.json`` (data source and protocol), and finds ``OUT/sub-XX/checkpoints/<name>`` (one
model per subject) or ``OUT/pooled/checkpoints/<name>`` (one multi-subject model).

Under ``torchrun`` every rank runs the workflow; the writers here are collective: rank 0 writes,
and every rank waits until it has, so no rank reads a half-updated run directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duin.config import config_to_yaml
from duin.training.distributed import barrier, is_main
from duin.training.stages import write_json
from duin.utils.integrity import add_to_manifest, verify_manifest
from duin.utils.io import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from duin.workflows.prepare import PreparedData

__all__ = [
    "CHANNELS_FILE",
    "POOLED_DIR",
    "RESULT_FILE",
    "TRIAL_DATA_FILE",
    "cache_dir",
    "check_kind",
    "checkpoint_dir",
    "is_pooled_run",
    "pooled_checkpoint_dir",
    "read_channels",
    "start_run",
    "write_channels",
    "write_data_info",
]

CHANNELS_FILE = "channels.json"
RESULT_FILE = "result.json"
TRIAL_DATA_FILE = "trial_data.json"
#: Trainer run of a multi-subject model, in place of the ``sub-XX`` directories.
POOLED_DIR = "pooled"


def write_channels(
    out: Path, chosen: Mapping[str, list[str]], *, method: str, seed: int | None
) -> None:
    """Write ``out/channels.json``: the channels of each subject and how they were chosen.

    Collective under ``torchrun`` (rank 0 writes, every rank waits).
    """
    if is_main():
        write_json(
            out / CHANNELS_FILE,
            {"channels": {s: list(v) for s, v in chosen.items()}, "method": method, "seed": seed},
        )
        add_to_manifest(out, [CHANNELS_FILE])  # later stages trust it: record its SHA-256
    barrier()


def read_channels(run: Path) -> dict[str, list[str]]:
    """Read ``run/channels.json`` (subject -> channel names, in input order), integrity-checked."""
    path = Path(run) / CHANNELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run} a duin pretraining run directory?")
    verify_manifest(run)
    return {str(k): list(v) for k, v in json.loads(path.read_text())["channels"].items()}


def cache_dir(out: Path, cache: str | Path | None) -> Path:
    """The preprocessing cache: ``cache`` when given, else ``out/cache``."""
    return Path(cache) if cache is not None else out / "cache"


def start_run(out: Path, cfg: Any, resume: bool) -> None:
    """Create ``out`` and write its ``config.yaml``; refuse another configuration unless resuming.

    Collective under ``torchrun``: every rank checks, rank 0 writes, every rank waits.
    """
    saved = out / "config.yaml"
    text = config_to_yaml(cfg)
    # Every rank reads before rank 0 may write: all see the same previous run (or none).
    barrier()
    if saved.is_file() and not resume and saved.read_text() != text:
        raise FileExistsError(
            f"{out} already holds a run with another configuration; use --resume to continue "
            "it or choose another --out"
        )
    barrier()
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, text)
    barrier()


def write_data_info(out: Path, prepared: PreparedData, extra: Mapping[str, Any]) -> None:
    """Write ``out/data.json``: the prepared data's description plus ``extra`` (collective)."""
    if is_main():
        write_json(out / "data.json", {**prepared.describe(), **extra})
    barrier()


def checkpoint_dir(run: Path, subject: str, name: str = "last") -> Path:
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


def check_kind(ckpt: Path, names: Sequence[str], what: str) -> None:
    """Raise unless the checkpoint ``ckpt`` holds one of the model kinds ``names``."""
    meta = json.loads((ckpt / "config.json").read_text())
    if meta.get("name") not in names:
        raise ValueError(
            f"{what} needs a {' or '.join(names)} checkpoint; {ckpt} holds {meta.get('name')!r}"
        )


def is_pooled_run(run: Path) -> bool:
    """Whether ``run`` is a multi-subject pretraining run (``run/pooled/checkpoints``)."""
    return (Path(run) / POOLED_DIR / "checkpoints").is_dir()


def pooled_checkpoint_dir(run: Path, name: str = "last") -> Path:
    """``run/pooled/checkpoints/<name>`` of a multi-subject pretraining run."""
    path = Path(run) / POOLED_DIR / "checkpoints" / name
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path}: no multi-subject checkpoint; is {run} a finished "
            "'--subjects' pretraining run?"
        )
    return path

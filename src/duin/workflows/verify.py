"""``duin verify``: check a run directory, a checkpoint or a cache against its SHA-256 records."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from duin.data.datasets import verify_cache
from duin.utils.integrity import IntegrityError, find_manifests, verify_manifest

__all__ = ["VerifyReport", "verify_path"]

_WEIGHTS = "model.safetensors"


@dataclass
class VerifyReport:
    """What :func:`verify_path` checked.

    Parameters
    ----------
    n_files : int
        Files whose SHA-256 matched.
    directories : list of Path
        Checkpoint directories (and caches) verified.
    problems : list of str
        One line per failure (empty when everything matched).
    """

    n_files: int = 0
    directories: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when something was verified and nothing failed."""
        return not self.problems and self.n_files > 0


def _cache_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` holding cache entries (``<key>.npy`` + ``<key>.json``)."""
    found = set()
    for npy in root.rglob("*.npy"):
        rel = npy.relative_to(root)
        hidden = any(part.startswith(".") for part in rel.parts)
        if not hidden and npy.with_suffix(".json").is_file():
            found.add(npy.parent)
    return sorted(found)


def verify_path(path: str | os.PathLike[str]) -> VerifyReport:
    """Verify every manifest-carrying directory and cache at or under ``path``.

    A checkpoint directory (one with ``model.safetensors``) without a manifest counts as a
    problem: nothing can tell whether it was altered.

    Parameters
    ----------
    path : path-like
        A run directory, a checkpoint directory or a cache directory.

    Returns
    -------
    VerifyReport
        Counts and one line per problem.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory (expected a run or checkpoint)")
    report = VerifyReport()
    manifested = find_manifests(root)
    for directory in manifested:
        try:
            report.n_files += verify_manifest(directory, required=True)
            report.directories.append(directory)
        except IntegrityError as err:
            report.problems.append(str(err))
    covered = set(manifested)
    for weights in sorted(root.rglob(_WEIGHTS)):
        rel = weights.parent.relative_to(root)
        if weights.parent not in covered and not any(p.startswith(".") for p in rel.parts):
            report.problems.append(f"{weights.parent}: checkpoint without manifest.json")
    for cache in _cache_dirs(root):
        try:
            report.n_files += 2 * verify_cache(cache)
            report.directories.append(cache)
        except IntegrityError as err:
            report.problems.append(str(err))
    return report

"""SHA-256 manifests: detect a file duin wrote and later trusts that changed after writing.

A directory's ``manifest.json`` lists the SHA-256 of its files::

    {"format": "duin-manifest", "version": 1, "algorithm": "sha256",
     "files": {"model.safetensors": "<64 hex>", "config.json": "<64 hex>"}}

It is written last and atomically, so a directory with a manifest is complete; loading verifies
every listed file and raises :class:`IntegrityError` (a ``ValueError``) naming the first file
whose bytes differ. Directories written before manifests existed load with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from duin.utils.io import atomic_write_json

__all__ = [
    "MANIFEST_FILE",
    "IntegrityError",
    "add_to_manifest",
    "file_sha256",
    "find_manifests",
    "read_manifest",
    "verify_manifest",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
_FORMAT = "duin-manifest"
_VERSION = 1
_CHUNK = 1 << 20  # bytes hashed at a time: memory does not grow with the file


class IntegrityError(ValueError):
    """A file does not match the SHA-256 its manifest recorded (or the manifest is unusable).

    Parameters
    ----------
    path : path-like
        The offending file.
    reason : str
        What is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {reason}")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    Parameters
    ----------
    path : path-like
        File to hash.

    Returns
    -------
    str
        64 hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _listed_files(directory: Path) -> list[str]:
    """Relative POSIX paths of the regular, non-hidden files under ``directory``."""
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() == MANIFEST_FILE:
            continue
        if path.is_file() and not path.is_symlink():
            out.append(rel.as_posix())
    return out


def write_manifest(directory: str | os.PathLike, files: Iterable[str] | None = None) -> Path:
    """Hash files of ``directory`` and write its ``manifest.json`` atomically (call it last).

    Parameters
    ----------
    directory : path-like
        A fully written directory.
    files : iterable of str, optional
        Relative paths to list; default every regular, non-hidden file under ``directory``.

    Returns
    -------
    pathlib.Path
        The manifest path.
    """
    directory = Path(directory)
    names = _listed_files(directory) if files is None else sorted(files)
    listing = {name: file_sha256(directory / name) for name in names}
    payload = {"format": _FORMAT, "version": _VERSION, "algorithm": "sha256", "files": listing}
    return atomic_write_json(directory / MANIFEST_FILE, payload)


def add_to_manifest(directory: str | os.PathLike, names: Iterable[str]) -> Path:
    """Record (or refresh) the SHA-256 of ``names`` in ``directory``'s manifest, keeping others.

    For directories that several steps fill (a run directory's ``channels.json``, ...). Call it
    after the files are completely written.

    Parameters
    ----------
    directory : path-like
        The directory.
    names : iterable of str
        Relative paths of files written in it.

    Returns
    -------
    pathlib.Path
        The manifest path.
    """
    directory = Path(directory)
    try:
        listing = read_manifest(directory) or {}
    except IntegrityError:
        listing = {}
    listing = {name: digest for name, digest in listing.items() if (directory / name).is_file()}
    listing.update({name: file_sha256(directory / name) for name in names})
    payload = {"format": _FORMAT, "version": _VERSION, "algorithm": "sha256", "files": listing}
    return atomic_write_json(directory / MANIFEST_FILE, payload)


def read_manifest(directory: str | os.PathLike) -> dict[str, str] | None:
    """The ``{relative path: sha256}`` listing of ``directory``'s manifest, or None without one.

    Raises
    ------
    IntegrityError
        The manifest exists but is not a valid duin manifest.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IntegrityError(path, f"not a valid manifest ({err})") from None
    files = payload.get("files") if isinstance(payload, dict) else None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != _FORMAT
        or payload.get("algorithm") != "sha256"
        or not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise IntegrityError(path, "not a valid duin manifest (format/algorithm/files)")
    for name in files:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise IntegrityError(path, f"lists a path outside its directory: {name!r}")
    return dict(files)


def verify_manifest(directory: str | os.PathLike, *, required: bool = False) -> int:
    """Check every file listed in ``directory/manifest.json`` against its SHA-256.

    Parameters
    ----------
    directory : path-like
        A directory written with :func:`write_manifest`.
    required : bool
        Raise when there is no manifest (else warn and return 0).

    Returns
    -------
    int
        Number of files verified.

    Raises
    ------
    IntegrityError
        A listed file is missing or its content changed, or the manifest is malformed/absent
        (``required``).
    """
    directory = Path(directory)
    listing = read_manifest(directory)
    if listing is None:
        if required:
            raise IntegrityError(directory / MANIFEST_FILE, "missing: cannot verify this directory")
        logger.warning(
            "%s has no %s (written by an older duin?): its files are not integrity-checked",
            directory,
            MANIFEST_FILE,
        )
        return 0
    for name, expected in listing.items():
        path = directory / name
        if not path.is_file():
            raise IntegrityError(path, f"listed in {MANIFEST_FILE} but missing")
        actual = file_sha256(path)
        if actual != expected:
            raise IntegrityError(
                path,
                f"content does not match {MANIFEST_FILE} (sha256 {actual[:12]}... != "
                f"{expected[:12]}...): the file changed or is corrupted after it was written",
            )
    return len(listing)


def find_manifests(root: str | os.PathLike) -> list[Path]:
    """Directories at or under ``root`` holding a manifest (hidden temporaries skipped)."""
    root = Path(root)
    found = [root] if (root / MANIFEST_FILE).is_file() else []
    for path in sorted(root.rglob(MANIFEST_FILE)):
        rel = path.parent.relative_to(root)
        if rel.parts and not any(part.startswith(".") for part in rel.parts):
            found.append(path.parent)
    return found

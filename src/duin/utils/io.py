"""Atomic file and directory writes.

Everything duin writes that a later step trusts (configs, checkpoints, reports) goes through
these helpers: data lands in a temporary sibling first and is renamed into place, so a process
killed at any point leaves either the old complete file or the new complete file, never a
half-written one. A failed write (full disk, read-only or forbidden folder) removes its
temporary and raises an ``OSError`` of the same errno whose message names the destination.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "named_write_error",
    "recover_dir",
    "replace_dir",
]

_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
}


def named_write_error(err: OSError, path: str | os.PathLike) -> OSError:
    """An ``OSError`` like ``err`` (same class and errno) whose message names ``path``.

    Parameters
    ----------
    err : OSError
        The low-level failure (often naming a temporary file, or nothing).
    path : path-like
        The file or directory the caller was writing.

    Returns
    -------
    OSError
        ``err`` itself when it already names ``path``, else a new one to raise ``from err``.
    """
    if getattr(err, "duin_path", None) is not None:
        return err
    reason = _HINTS.get(err.errno or -1, err.strerror or str(err))
    new = type(err)(
        err.errno,
        f"cannot write {path}: {reason} ({err.strerror or err}); nothing partial was left",
    )
    new.duin_path = str(path)  # type: ignore[attr-defined]
    return new


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry to disk (no-op where the OS does not support it).

    Parameters
    ----------
    path : path-like
        Directory whose entries (renames, new files) should be made durable.
    """
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename).

    Parameters
    ----------
    path : path-like
        Destination file; its parent directory is created if needed.
    data : bytes
        File content.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    except OSError as err:
        raise named_write_error(err, path) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise named_write_error(err, path) from err
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Destination file.
    text : str
        File content.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON and write it atomically.

    Parameters
    ----------
    path : path-like
        Destination file.
    obj : Any
        JSON-serialisable object (``allow_nan`` is on so NaN metrics survive).
    indent : int or None
        Indentation passed to :func:`json.dumps`.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move the complete directory ``src`` to ``dst``, replacing any existing ``dst``.

    POSIX cannot atomically rename a directory onto a non-empty one, so the old ``dst`` is first
    renamed to a ``.trash-`` sibling, ``src`` is renamed into place, and the trash is removed. If
    the process dies between the two renames, :func:`recover_dir` restores the old copy.

    Parameters
    ----------
    src : path-like
        A fully written directory (normally from :func:`atomic_dir`).
    dst : path-like
        Final location.

    Returns
    -------
    pathlib.Path
        ``dst``.
    """
    src, dst = Path(src), Path(dst)
    trash = dst.with_name(f"{_TRASH_PREFIX}{dst.name}-{os.getpid()}")
    if dst.exists():
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(dst, trash)
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    return dst


def recover_dir(dst: str | os.PathLike) -> Path | None:
    """Return ``dst`` if it exists, else restore a complete copy left by an interrupted swap.

    Also deletes leftover incomplete ``.tmp-`` siblings of ``dst``.

    Parameters
    ----------
    dst : path-like
        Directory written with :func:`atomic_dir` / :func:`replace_dir`.

    Returns
    -------
    pathlib.Path or None
        ``dst`` when a complete directory is (now) there, else None.
    """
    dst = Path(dst)
    parent = dst.parent
    if not parent.is_dir():
        return None
    for tmp in parent.glob(f"{_TMP_PREFIX}{dst.name}-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    trashes = sorted(parent.glob(f"{_TRASH_PREFIX}{dst.name}-*"))
    if dst.is_dir():
        for trash in trashes:
            shutil.rmtree(trash, ignore_errors=True)
        return dst
    if trashes:
        os.replace(trashes[-1], dst)
        for trash in trashes[:-1]:
            shutil.rmtree(trash, ignore_errors=True)
        return dst
    return None


@contextlib.contextmanager
def atomic_dir(dst: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it into ``dst`` when the block succeeds.

    Parameters
    ----------
    dst : path-like
        Final directory. On an exception inside the block, the temporary directory is removed and
        ``dst`` is left untouched.

    Yields
    ------
    pathlib.Path
        The temporary directory to write into.
    """
    dst = Path(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{dst.name}-", dir=dst.parent))
    except OSError as err:
        raise named_write_error(err, dst) from err
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
        replace_dir(tmp, dst)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise named_write_error(err, dst) from err
        raise

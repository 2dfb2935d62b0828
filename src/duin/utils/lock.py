"""One writer per run directory: a ``duin.lock`` file holding the writer's pid and host.

The lock file is created complete or not at all (written to a temporary file, then hard-linked
into place, which fails if the lock exists). A second process asking for the same directory gets
:class:`RunLockedError` naming the holder. A lock whose process is gone (same host, pid dead or
reused by another program, e.g. after ``kill -9``) is stale: it is taken over with a warning. A
lock from another host cannot be checked and is never taken over automatically.

Locks are re-entrant within a process (a workflow holding ``OUT`` may run a trainer in ``OUT``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "RunLockedError", "run_lock"]

logger = logging.getLogger(__name__)

LOCK_FILE = "duin.lock"
_held: dict[Path, int] = {}  # lock path -> re-entry depth in this process
_held_guard = threading.Lock()


class RunLockedError(OSError):
    """Another live process is writing the run directory (an ``OSError``: the resource is busy)."""


def _process_start(pid: int) -> str | None:
    """Kernel start time of ``pid`` (Linux ``/proc``), to tell a reused pid apart; else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": _process_start(pid),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _is_stale(info: dict[str, Any] | None) -> bool:
    """True when the holder is provably gone (same host; pid dead or reused)."""
    if info is None:
        return True  # not written by a complete duin lock: nobody can hold it
    if info.get("host") != socket.gethostname():
        return False
    pid = info.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return True
    started = info.get("started")
    return started is not None and _process_start(pid) not in (None, started)


def _try_create(path: Path, owner: dict[str, Any]) -> bool:
    fd, tmp = tempfile.mkstemp(prefix=f".{LOCK_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(owner, handle)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def _acquire(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    owner = _owner()
    for _ in range(3):
        if _try_create(path, owner):
            return path
        info = _read(path)
        if (
            info is not None
            and info.get("pid") == owner["pid"]
            and info.get("host") == owner["host"]
        ):
            return path  # ours (a re-entry across threads of this process)
        if not _is_stale(info):
            holder = f"pid {info.get('pid')} on host {info.get('host')}" if info else "?"
            raise RunLockedError(
                f"{directory} is in use by another duin run ({holder}, since "
                f"{info.get('time') if info else '?'}); wait for it to finish or choose another "
                f"--out (if that process is gone, delete {path})"
            )
        logger.warning(
            "taking over the stale lock %s (its process %s is gone)",
            path,
            f"pid {info.get('pid')} on {info.get('host')}" if info else "unknown",
        )
        # Best effort against a concurrent take-over: rename the stale file away (atomic); if
        # what was moved is not what we judged stale, another process's fresh lock was moved:
        # put it back. The create is then retried.
        grave = path.with_name(f".{LOCK_FILE}.stale-{owner['pid']}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, grave)
            if _read(grave) != info:
                with contextlib.suppress(FileExistsError):
                    os.link(grave, path)
            grave.unlink()
    raise RunLockedError(f"{directory}: could not acquire {path} (contended); try again")


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold ``directory/duin.lock`` for the duration of the block.

    Parameters
    ----------
    directory : path-like
        The run directory (created if missing).

    Yields
    ------
    pathlib.Path
        The lock file.

    Raises
    ------
    RunLockedError
        Another live process on this host (or any process on another host) holds the lock.
    """
    path = (Path(directory).absolute() / LOCK_FILE).resolve()
    created = not path.parent.exists()
    with _held_guard:
        depth = _held.get(path, 0)
        if depth == 0:
            _acquire(path.parent)
        _held[path] = depth + 1
    try:
        yield path
    finally:
        with _held_guard:
            _held[path] -= 1
            if _held[path] == 0:
                del _held[path]
                info = _read(path)
                if info is not None and info.get("pid") == os.getpid():
                    path.unlink(missing_ok=True)
                if created:  # a run that failed before writing anything leaves no directory
                    with contextlib.suppress(OSError):
                        path.parent.rmdir()

"""Environment information recorded with every run (``env.json``)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["env_info", "git_hash"]


def git_hash(path: str | os.PathLike | None = None) -> str | None:
    """Return the git commit of the duin source tree (``+dirty`` when modified), if any.

    Parameters
    ----------
    path : path-like, optional
        Directory inside the repository; defaults to the installed duin package.

    Returns
    -------
    str or None
        The commit hash, or None outside a git checkout / without git.
    """
    if path is None:
        path = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("+dirty" if dirty else "") if out else None


def env_info(**extra: Any) -> dict[str, Any]:
    """Collect versions, host and device information for reproducibility records.

    Parameters
    ----------
    **extra
        Additional entries (seed, device, world size, ...) merged into the result.

    Returns
    -------
    dict
        JSON-serialisable description of the environment.
    """
    import numpy as np
    import torch

    import duin

    info: dict[str, Any] = {
        "duin": duin.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "git": git_hash(),
        "argv": list(sys.argv),
    }
    info.update(extra)
    return info

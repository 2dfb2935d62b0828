"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run on 2-core machines, several may share them: keep torch to one thread per process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_parity_dir() -> Path | None:
    """Locate the parity fixtures: ``$DUIN_PARITY_DIR`` or ``../shared/parity`` beside the repo."""
    env = os.environ.get("DUIN_PARITY_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "parity")
    for path in candidates:
        if (path / "vqvae_state.npz").is_file():
            return path
    return None


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """Directory with the reference parity fixtures; skips the test when it is not available."""
    path = find_parity_dir()
    if path is None:
        pytest.skip(
            "parity fixtures not found: set DUIN_PARITY_DIR or place them in ../shared/parity"
        )
    return path

"""Run the official bids-validator (npm package, installed by ``make tools``) from tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_validator() -> str | None:
    """The bids-validator executable: on PATH or installed by ``make tools`` into .tools/."""
    found = shutil.which("bids-validator")
    local = REPO / ".tools" / "node_modules" / ".bin" / "bids-validator"
    return found or (str(local) if local.exists() else None)


def validate(root: Path) -> dict:
    """Validate a BIDS dataset and return the validator's JSON report (skips without it)."""
    exe = find_validator()
    if exe is None:
        pytest.skip("bids-validator not found (run `make tools`; needs npm)")
    proc = subprocess.run(
        [exe, str(root), "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    return json.loads(proc.stdout)

"""Shared pytest fixtures, the shared-folder discovery rules and the parity report."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

# Tests run on 2-core machines, several may share them: keep torch to one thread per process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

from helpers.shared_fixtures import PARITY, REFERENCE_CODE, SharedFixture, SharedFixtureError

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_REPORT_FILE = REPO_ROOT / "results" / "parity.json"
PARITY_MODELS = ("vqvae", "mae", "cls")
_PARITY_REPORT = pytest.StashKey[dict]()


def _shared_dir(fixture: SharedFixture) -> Path:
    try:
        path = fixture.locate()
    except SharedFixtureError as err:
        pytest.fail(str(err), pytrace=False)
    if path is None:
        pytest.skip(
            f"{fixture.what} not available: no ../shared beside the repository and "
            f"{fixture.env_var} is unset"
        )
    return path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """Directory with the reference parity fixtures (see helpers/shared_fixtures.py)."""
    return _shared_dir(PARITY)


@pytest.fixture(scope="session")
def reference_code() -> Path:
    """The paper's released code (see helpers/shared_fixtures.py)."""
    return _shared_dir(REFERENCE_CODE)


# ------------------------------------------------------------------------------ parity report


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_PARITY_REPORT] = {}


@pytest.fixture(scope="session")
def parity_report(request: pytest.FixtureRequest) -> dict:
    """Per-model parity summaries that tests/test_parity.py fills in."""
    return request.config.stash[_PARITY_REPORT]


def _write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print the parity report; write results/parity.json when all three models were checked."""
    report = config.stash.get(_PARITY_REPORT, {})
    if not report:
        return
    terminalreporter.section("parity with the paper's code (model-computed arrays only)")
    for name in sorted(report):
        r = report[name]
        worst = r["worst_float"]
        terminalreporter.write_line(
            f"{name:6s} {r['n_model_arrays']:3d} arrays compared "
            f"({r['n_float_arrays']} float, {r['n_exact_arrays']} exact int/bool); "
            f"worst relative error {worst['error']:.3g} ({worst['array']}); "
            f"{'passed' if r['passed'] else 'FAILED'}"
        )
    if set(PARITY_MODELS) <= set(report):
        import numpy as np

        payload = {
            "description": (
                "duin vs the paper's code on the fixtures in ../shared/parity: for every model, "
                "the arrays the duin model computes (inputs and values derived from inputs are "
                "not counted), with max|ours - ref| / max|ref| for float arrays and exact "
                "equality for integer/bool arrays (tolerance 1e-5)"
            ),
            "command": "python -m pytest tests/test_parity.py",
            "environment": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "machine": platform.machine(),
            },
            "models": {name: report[name] for name in PARITY_MODELS},
        }
        _write_json_atomic(PARITY_REPORT_FILE, payload)
        terminalreporter.write_line(f"written to {PARITY_REPORT_FILE.relative_to(REPO_ROOT)}")

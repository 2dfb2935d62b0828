"""The benchmark: every model of the paper's Table 2 on one corpus, with one protocol.

- :mod:`~duin.workflows.bench.plan`: the bench file format and its validation (:func:`load_bench`)
- :mod:`~duin.workflows.bench.cells`: cells (model, subject, seed), shared pretraining and the
  runner (:func:`run_bench`)
- :mod:`~duin.workflows.bench.report`: ``bench.json``, ``bench.md``, ``bench.png``

See :mod:`duin.workflows.bench.plan` for the protocol, the file format and the run directory.
"""

from duin.workflows.bench.cells import run_bench
from duin.workflows.bench.plan import (
    DUIN_MODELS,
    PAPER_TABLE2,
    BaselineSettings,
    BenchEntry,
    BenchPlan,
    BenchSettings,
    load_bench,
    model_names,
    resolve_bench_path,
)
from duin.workflows.bench.report import render_bench_markdown, render_grid_markdown

__all__ = [
    "DUIN_MODELS",
    "PAPER_TABLE2",
    "BaselineSettings",
    "BenchEntry",
    "BenchPlan",
    "BenchSettings",
    "load_bench",
    "model_names",
    "render_bench_markdown",
    "render_grid_markdown",
    "resolve_bench_path",
    "run_bench",
]

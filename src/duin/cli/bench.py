"""``duin bench``: every model (baselines and Du-IN variants) over subjects and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from duin.workflows.bench import load_bench, run_bench

__all__ = ["COMMANDS", "bench_cmd"]


def bench_cmd(
    config: Annotated[
        str,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE|NAME",
            help="Bench file, or a packaged one: 'bench', 'ablations/mask_ratio', "
            "'ablations/codex_size', 'ablations/channels', 'ablations/token_level'.",
        ),
    ] = "bench",
    quick: Annotated[
        bool,
        typer.Option("--quick", help="CPU-sized: the file's 'quick' section (minutes, not days)."),
    ] = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Benchmark directory (resumable).")
    ] = Path("duin-bench"),
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Override a value, e.g. --set bench.seeds=[0,1] --set cls.optim.epochs=5.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Accepted for symmetry with the stage commands: a bench always resumes.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print the plan; run nothing.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars; warnings and errors only.")
    ] = False,
) -> None:
    """Benchmark every model (baselines and Du-IN variants) over subjects and seeds.

    One leak-free split per (subject, seed) shared by all models; a rerun skips finished cells
    and resumes half-done ones. Writes bench.json, bench.md and bench.png into --out.
    """
    del resume  # finished cells are always skipped and half-done ones resumed
    plan = load_bench(config, set_ or (), quick=quick)  # validates everything before any work
    if dry_run:
        for entry in plan.entries:
            s = entry.settings
            head = f"[{entry.name}] " if entry.name else ""
            typer.echo(
                f"{head}models: {', '.join(s.models)}; subjects: {s.subjects or 'all'}; "
                f"seeds: {s.seeds}; recipe: {s.recipe}; baselines: {s.baseline_size}"
            )
        return
    if quiet:
        from duin.utils.logs import setup_logging

        setup_logging(quiet=True)
    result = run_bench(out=out, plan=plan, quiet=quiet)
    typer.echo((out / "bench.md").read_text(encoding="utf-8"))
    typer.echo(
        f"cells: {result['cells']['ran']} run, {result['cells']['done']} already finished; "
        f"wall time {result['wall_s']:.0f} s; results: {out / 'bench.md'}"
    )


#: Command name -> function.
COMMANDS = {"bench": bench_cmd}

"""``duin demo``: the whole method on a small simulated corpus, in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from duin.cli.options import (
    DEFAULT_CONFIG,
    ConfigOption,
    OutOption,
    PrecisionOption,
    QuietOption,
    SeedOption,
    SetOption,
    apply_quiet,
    with_precision,
)

__all__ = ["COMMANDS", "demo_cmd"]


def demo_cmd(
    out: OutOption = Path("duin-demo"),
    config: ConfigOption = None,
    set_: SetOption = None,
    seed: SeedOption = None,
    precision: PrecisionOption = None,
    quiet: QuietOption = False,
) -> None:
    """Simulate a small corpus, run VQ-VAE -> MAE -> classifier and print ours vs chance vs oracle."""
    set_ = with_precision(set_, precision)
    import time

    from duin.training.stages import load_stage_config
    from duin.workflows.demo import run_demo

    for stage in ("vqvae", "mae", "cls"):  # validate every section before any work
        load_stage_config(
            stage,
            config or DEFAULT_CONFIG,
            [*(set_ or []), *([f"seed={seed}"] if seed is not None else [])],
        )
    t0 = time.perf_counter()
    report = run_demo(
        out,
        config=config or DEFAULT_CONFIG,
        overrides=set_ or (),
        seed=seed,
        quiet=apply_quiet(quiet),
    )
    typer.echo(report["table"])
    typer.echo(f"wall time {time.perf_counter() - t0:.0f} s; run directory: {report['run_dir']}")


#: Command name -> function.
COMMANDS = {"demo": demo_cmd}

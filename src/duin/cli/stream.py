"""``duin stream``: real-time decoding of a live LSL stream, or of a replayed recording."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from duin.cli.options import QuietOption, apply_quiet
from duin.config import ConfigError

__all__ = ["COMMANDS", "stream_cmd"]


def stream_cmd(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN", help="A finetune run (sub-XX/seed-N directory or checkpoint)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="CSV", help="CSV of decisions (one row per rank)."),
    ],
    lsl: Annotated[
        str | None,
        typer.Option("--lsl", metavar="NAME", help="Name of the live LSL signal stream."),
    ] = None,
    markers: Annotated[
        str | None,
        typer.Option("--markers", metavar="NAME", help="LSL marker stream of word cues."),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay",
            metavar="DATA",
            help="Replay this dataset's recordings (events as markers) through LSL and decode them.",
        ),
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Subject to replay (default: the model's).")
    ] = None,
    speed: Annotated[float, typer.Option("--speed", help="Replay speed (1 = real time).")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Words per decision.")] = 5,
    duration: Annotated[
        float | None,
        typer.Option("--duration", metavar="S", help="Stop after S seconds (live streams)."),
    ] = None,
    continuous: Annotated[
        float | None,
        typer.Option(
            "--continuous", metavar="HOP_S", help="No markers: decode a window every HOP_S seconds."
        ),
    ] = None,
    lookahead: Annotated[
        float | None,
        typer.Option(
            "--lookahead",
            metavar="S",
            help="Zero-phase runs: signal after a window before it is decoded (default: enough "
            "to equal offline filtering; less trades accuracy for delay).",
        ),
    ] = None,
    bad: Annotated[
        list[str] | None,
        typer.Option("--bad", metavar="CH", help="A stream channel to treat as bad (repeatable)."),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Decode speech live from an LSL stream (or a replayed recording) with a trained classifier."""
    from duin.workflows.stream import replay as replay_run
    from duin.workflows.stream import stream

    if top_k < 1:
        raise ConfigError(f"invalid --top-k {top_k}: must be >= 1")
    if (lsl is None) == (replay is None):
        raise ConfigError("give either --lsl NAME (a live stream) or --replay DATA")
    if replay is None and markers is None and continuous is None:
        raise ConfigError("a live stream needs --markers NAME or --continuous HOP_S")
    if replay is not None and markers is not None:
        raise ConfigError("--markers is for live streams; a replay sends the recording's events")
    if not speed > 0:
        raise ConfigError(f"invalid --speed {speed}: must be positive")
    if continuous is not None and not continuous > 0:
        raise ConfigError(f"invalid --continuous {continuous}: must be a positive hop in seconds")
    if lookahead is not None and lookahead < 0:
        raise ConfigError(f"invalid --lookahead {lookahead}: must be >= 0 seconds")
    quiet = apply_quiet(quiet)
    if replay is not None:
        result = replay_run(
            run, replay, out, subject=subject, speed=speed, top_k=top_k,
            continuous=continuous, lookahead=lookahead, quiet=quiet,
            log=None if quiet else typer.echo,
        )  # fmt: skip
    else:
        result = stream(
            run, lsl, out, markers=markers, top_k=top_k, duration=duration,
            continuous=continuous, lookahead=lookahead, bad_channels=bad or (), quiet=quiet,
        )  # fmt: skip
    typer.echo(f"wrote {out}: {result.summary()}")


#: Command name -> function.
COMMANDS = {"stream": stream_cmd}

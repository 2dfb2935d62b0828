"""Logging setup for the ``duin`` command and scripts (library code only uses ``getLogger``)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["setup_logging"]


class _CurrentStderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is *now*.

    Binding the stream at set-up breaks when stderr is swapped later (test runners, captured
    CLI invocations): the handler would write to a closed stream.
    """

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignore the stream the base class assigns in ``__init__``."""


def setup_logging(*, quiet: bool = False, debug: bool = False) -> None:
    """Configure the ``duin`` logger to print one-line messages to stderr.

    Parameters
    ----------
    quiet : bool
        Only warnings and errors.
    debug : bool
        Include debug messages (overrides ``quiet``).
    """
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logger = logging.getLogger("duin")
    logger.setLevel(level)
    if not any(getattr(h, "_duin_cli", False) for h in logger.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler._duin_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)

"""structlog configuration: JSON lines to stderr, per-RPC context from contextvars."""

from __future__ import annotations

import logging
import os
import sys

import structlog

from verdict.telemetry.log_writer import WriterLoggerFactory


def configure_logging(level: str = "info", fmt: str = "json", *, nonblocking: bool = False) -> None:
    """Configure structlog once at startup; event names are fixed snake_case strings.
    ``fmt`` "auto" is console output when stderr is a terminal, JSON lines otherwise.
    ``nonblocking`` (servers): a line stderr cannot take now is queued for a writer thread,
    so that a lagging log reader never holds the event loop (telemetry/log_writer.py)."""
    # A process started with descriptor 2 closed has no sys.stderr: its logs go to stdout
    # (it exited 1 without a word, attack round 22), or nowhere if that is closed too.
    stream = sys.stderr or sys.stdout or open(os.devnull, "w")  # noqa: SIM115 (for good)
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=(
            WriterLoggerFactory(stream)
            if nonblocking
            else structlog.PrintLoggerFactory(file=stream)
        ),
        cache_logger_on_first_use=True,
    )

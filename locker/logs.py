"""structlog set-up, done once per entry point: JSON lines to a file or stderr."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import structlog


def configure_logging(path: Path | None = None, *, level: int = 20) -> None:
    stream: TextIO = path.open("a", buffering=1) if path else sys.stderr
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )

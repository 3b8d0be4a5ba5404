"""structlog set-up: human-readable on a terminal, JSON lines otherwise (always to stderr)."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def _stderr_logger(*args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str | None = None, json_logs: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process.

    `LARGEFORGE_LOG_LEVEL` and `LARGEFORGE_LOG_JSON=1|0` override the defaults.
    """
    level_name = (level or os.environ.get("LARGEFORGE_LOG_LEVEL", "INFO")).upper()
    if json_logs is None:
        env = os.environ.get("LARGEFORGE_LOG_JSON")
        json_logs = env == "1" if env in {"0", "1"} else not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)
        ),
        # Resolve sys.stderr at each use: it may be replaced (pytest, redirection) after set-up.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")

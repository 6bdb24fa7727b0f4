"""structlog set-up: readable on a terminal, one JSON object per line otherwise.

A log line can never take the daemon down: when stderr is a broken pipe (journald restarting,
``| tee`` gone) or a full disk, the line is dropped and counted (:data:`DROPPED`), and the
safety path goes on.
"""

from __future__ import annotations

import logging
import sys

import structlog

#: Log lines that could not be written, since start, by reason.
DROPPED: dict[str, int] = {}


def _dropped(exc: BaseException) -> None:
    key = type(exc).__name__
    DROPPED[key] = DROPPED.get(key, 0) + 1


class SafeLogger(structlog.PrintLogger):
    """A print logger whose writes never raise."""

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError) as exc:
            # ValueError: the stream was closed under us (interpreter shutdown).
            _dropped(exc)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class SafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdlib handler for libraries: a failed write is counted, not printed."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        _dropped(exc if exc is not None else OSError("log write failed"))


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger (libraries log through it)."""
    use_json = not sys.stderr.isatty() if json is None else json
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *args: SafeLogger(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = SafeHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries are chatty at INFO (pymodbus logs every reconnect); keep them at WARNING.
    root.setLevel(max(numeric, logging.WARNING))

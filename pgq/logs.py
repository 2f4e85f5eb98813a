"""Structured logs: one JSON object per line on stderr (or readable lines for humans).

Every pgq log record carries an ``event`` (``job.claimed``, ``job.succeeded``, …) and the
job's fields when it concerns a job::

    log_event(log, "job.succeeded", job_id=7, job_type="TMDB_SYNC", queue="default",
              worker_id="w1", attempt=1, duration_ms=12.5)

``PGQ_LOG_FORMAT=console`` switches to one readable line per record; ``PGQ_LOG_LEVEL``
sets the level (default INFO).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from . import settings

#: Fields a record may carry besides ts, level, event and message, in output order.
FIELDS = (
    "job_id",
    "job_type",
    "queue",
    "worker_id",
    "attempt",
    "duration_ms",
    "error",
    "request_id",
    "method",
    "path",
    "status",
    "remote",
)

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "event", "message", <fields>}`` per line, serialised by orjson."""

    def format(self, record: logging.LogRecord) -> str:
        extras = _extras(record)
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": extras.pop("event", None) or record.name,
            "message": record.getMessage(),
            "logger": record.name,
        }
        out.update(extras)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


#: Control characters (C0, DEL, C1) and Unicode line/paragraph separators, each written
#: as a Python escape: a request path with ``%0A`` in it must not start a forged line.
_CONTROL = {c: ascii(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters as escapes (``\\n``, ``\\x1b``, …)."""
    return text.translate(_CONTROL)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS level event message key=value …`` for people at a terminal.

    One record is one line: control characters in the message and the fields (a request
    path, an error text) are escaped; only a traceback adds lines of its own."""

    def format(self, record: logging.LogRecord) -> str:
        extras = _extras(record)
        event = extras.pop("event", None) or record.name
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        pairs = " ".join(f"{k}={v}" for k, v in extras.items())
        text = escape_controls(f"{event:22} {record.getMessage()} {pairs}")
        line = f"{ts} {record.levelname.lower():7} {text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Send pgq's (and aiohttp's) logs to stderr in the configured format."""
    level = (level or settings.read("PGQ_LOG_LEVEL")).upper()
    fmt = (fmt or settings.read("PGQ_LOG_FORMAT")).lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter() if fmt == "console" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_event(
    logger: logging.Logger,
    event: str,
    message: str = "",
    *,
    level: int = logging.INFO,
    exc_info: BaseException | bool | None = None,
    **fields: Any,
) -> None:
    """Log ``event`` with structured ``fields`` (None values are left out); ``exc_info``
    as in :mod:`logging` (``True`` inside an ``except`` block: the exception being handled)."""
    if logger.isEnabledFor(level):
        extra = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
        logger.log(level, message or event, extra=extra, exc_info=exc_info)

"""Console-format logs stay one line per record, whatever a client puts in a request."""

from __future__ import annotations

import io
import logging

from pgq.logs import ConsoleFormatter, JsonFormatter, log_event

from .support import live_app


async def test_a_forged_line_in_a_request_path_stays_on_its_line(dsn: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter())
    access = logging.getLogger("pgq.coordinator.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        async with live_app(dsn) as live:
            forged = "/jobs%0A16:20:00%20info%20%20%20%20job.succeeded%20forged%1B[2K%E2%80%A8x"
            async with live.http.get(live.url + forged) as resp:
                assert resp.status == 404
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "/jobs\\n16:20:00 info    job.succeeded forged\\x1b[2K\\u2028x 404" in lines[0]
    assert "\x1b" not in lines[0]


def test_console_fields_are_escaped_and_json_needs_nothing() -> None:
    record = logging.makeLogRecord(
        {"msg": "bad\rline", "levelno": logging.WARNING, "levelname": "WARNING"}
    )
    record.event = "http.error"
    record.error = "boom\n12:00:00 info job.dead"
    line = ConsoleFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert "bad\\rline" in line and "error=boom\\n12:00:00" in line
    assert "\\n" in JsonFormatter().format(record)  # JSON strings escape on their own


def test_a_traceback_still_spans_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter())
    log = logging.getLogger("pgq.test_logs")
    log.addHandler(handler)
    try:
        try:
            raise ValueError("x")
        except ValueError:
            log_event(log, "test.failed", "it failed", level=logging.ERROR, exc_info=True)
    finally:
        log.removeHandler(handler)
    assert "Traceback" in stream.getvalue() and len(stream.getvalue().splitlines()) > 2

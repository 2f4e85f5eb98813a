"""Per-request bookkeeping, outermost of the middlewares: request id, access log, metrics.

Each request gets an id: the client's ``X-Request-Id`` when it is a sane token (1-128 of
``A-Za-z0-9._:-``), else a new one; it is echoed in the response's ``X-Request-Id`` and in
the access log line (``event: http.request``), one JSON object per request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..logs import log_event
from ..metrics import Metrics
from .keys import REQUEST_ID

log = logging.getLogger("pgq.coordinator.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$", re.ASCII)


def route_label(request: web.Request) -> str:
    """The route template (``/jobs/{id}``), never the raw path: bounded label values."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def make_access_middleware(metrics: Metrics) -> Any:
    # Generated ids: a random per-process prefix and a counter, 32 hex digits like a UUID's
    # but without a getrandom() call and a UUID object per request.
    prefix = secrets.token_hex(8)
    counter = itertools.count(1)

    @web.middleware
    async def access_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        offered = request.headers.get("X-Request-Id")
        if offered and _REQUEST_ID.match(offered):
            request_id = offered
        else:
            request_id = f"{prefix}{next(counter):016x}"
        request[REQUEST_ID] = request_id
        status = 499  # client went away before an answer (nginx's convention)
        try:
            response = await handler(request)
            status = response.status
            response.headers["X-Request-Id"] = request_id
            return response
        except asyncio.CancelledError:
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.observe_request(request.method, route_label(request), status, elapsed)
            if log.isEnabledFor(logging.INFO):  # the line's fields cost time to gather
                log_event(
                    log,
                    "http.request",
                    f"{request.method} {request.path} {status}",
                    request_id=request_id,
                    method=request.method,
                    path=request.path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                    remote=request.remote,
                )

    return access_middleware


class MalformedHttpFilter(logging.Filter):
    """Turn aiohttp's error-with-traceback for an unparseable HTTP request (a NUL byte in a
    header, a broken request line) into one info line: the client got its 400 from aiohttp,
    and nothing on our side failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and getattr(exc, "code", 0) < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "malformed HTTP request refused: %s", (exc.message,)
            record.exc_info = record.exc_text = None
            record.event = "http.malformed"
        return True


def quiet_malformed_http_errors() -> None:
    """Install ``MalformedHttpFilter`` on aiohttp's server logger (once per process)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedHttpFilter) for f in logger.filters):
        logger.addFilter(MalformedHttpFilter())

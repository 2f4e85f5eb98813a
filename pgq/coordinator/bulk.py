"""Progress reports and bulk actions over HTTP: ``POST /jobs/{id}/progress``,
``POST /jobs/retry`` and ``POST /jobs/cancel`` (sql/0007_progress.sql)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .. import queries, wire
from ..logs import log_event
from . import params as p
from .errors import json_response
from .keys import POOL, REQUEST_ID, SETTINGS

log = logging.getLogger("pgq.coordinator")


async def report_progress(request: web.Request) -> web.Response:
    job_id = p.job_id(request)
    report = await p.body(request, request.app[SETTINGS].max_body_bytes, wire.Progress)
    job = await queries.progress(
        request.app[POOL],
        job_id,
        report.worker_id,
        report.progress,
        p.unset_none(report.attempt),
        report.lease_token,
    )
    return json_response(job.to_json())


def _filters(body: wire.BulkRetry | wire.BulkCancel) -> dict[str, Any]:
    """The bulk body → ``retry_where``/``cancel_where`` keywords (statuses without repeats)."""
    return {
        "statuses": None if body.statuses is wire.UNSET else sorted(set(body.statuses)),
        "queue": p.unset_none(body.queue),
        "job_type": p.unset_none(body.type),
    }


async def retry_jobs(request: web.Request) -> web.Response:
    body = await p.optional_body(request, request.app[SETTINGS].max_body_bytes, wire.BulkRetry)
    filters = _filters(body)
    count = await queries.retry_where(
        request.app[POOL],
        **filters,
        spread_seconds=0.0 if body.spread_seconds is wire.UNSET else body.spread_seconds,
    )
    return _answer(request, "jobs.retried", f"{count} jobs replayed", count, filters)


async def cancel_jobs(request: web.Request) -> web.Response:
    body = await p.optional_body(request, request.app[SETTINGS].max_body_bytes, wire.BulkCancel)
    filters = _filters(body)
    count = await queries.cancel_where(request.app[POOL], **filters)
    return _answer(request, "jobs.cancelled", f"{count} jobs cancelled", count, filters)


def _answer(
    request: web.Request, event: str, message: str, count: int, filters: dict[str, Any]
) -> web.Response:
    """Log the bulk action and answer ``{"count": n}``."""
    log_event(
        log,
        event,
        message,
        request_id=request[REQUEST_ID],
        queue=filters["queue"],
        job_type=filters["job_type"],
    )
    return json_response({"count": count})

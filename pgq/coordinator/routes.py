"""The HTTP API's handlers: parse (``params``, ``pgq.wire``), call the query layer, answer.

No SQL here: every handler calls the same ``pgq.queries`` functions the client and the
runner use, and refusals travel as exceptions to the one error middleware.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .. import queries, tracing, wire
from ..errors import DatabaseUnavailable, JobNotFound
from ..logs import log_event
from . import bulk, events
from . import params as p
from .disconnect import parks
from .errors import RETRY_AFTER, error_response, json_response
from .keys import BATCHER, COMPLETER, LISTENER, METRICS, POOL, REQUEST_ID, SETTINGS, WAITERS
from .openapi import document
from .queues import setup_queue_routes
from .schedule_api import setup_schedule_routes

log = logging.getLogger("pgq.coordinator")

_HEALTH_TIMEOUT = 3.0
_RETRY_LATER = {"Retry-After": RETRY_AFTER}


async def create_job(request: web.Request) -> web.Response:
    new = await p.body(request, request.app[SETTINGS].max_body_bytes, wire.NewJob)
    kwargs = p.enqueue_kwargs(new)
    trace_context = tracing.from_headers(request.headers)
    if trace_context is not None:
        kwargs["trace_context"] = trace_context
    job, created = await request.app[BATCHER].enqueue(kwargs)
    if created:
        log_event(
            log,
            "job.created",
            job_id=job.id,
            job_type=job.type,
            queue=job.queue,
            request_id=request[REQUEST_ID],
        )
    return json_response(
        job.to_json(), status=201 if created else 200, headers={"Location": f"/jobs/{job.id}"}
    )


async def create_batch(request: web.Request) -> web.Response:
    batch = await p.body(request, request.app[SETTINGS].max_batch_body_bytes, wire.Batch)
    specs = p.batch_specs(batch)
    trace_context = tracing.from_headers(request.headers)
    if trace_context is not None:
        for spec in specs:
            spec["trace_context"] = trace_context
    del batch  # the specs hold what is needed: let the Structs go as the specs are sent
    jobs = await queries.enqueue_many(request.app[POOL], specs, keep_args=False)
    log_event(
        log,
        "job.created",
        f"{len(jobs)} jobs enqueued in one batch",
        request_id=request[REQUEST_ID],
        job_id=jobs[0].id if len(jobs) == 1 else None,
    )
    return json_response({"jobs": [j.summary_json() for j in jobs]}, status=201)


async def list_jobs(request: web.Request) -> web.Response:
    q = p.list_query(request)
    jobs, more = await queries.list_page(
        request.app[POOL],
        status=p.unset_none(q.status),
        queue=p.unset_none(q.queue),
        job_type=p.unset_none(q.type),
        limit=q.limit,
        after=p.unset_none(q.after),
        max_bytes=request.app[SETTINGS].list_max_bytes,
    )
    return json_response(
        {"jobs": [j.to_json() for j in jobs], "next": jobs[-1].id if more else None}
    )


@parks
async def get_job(request: web.Request) -> web.Response:
    job_id = p.job_id(request)
    wait = p.wait_query(request)
    if wait > 0:
        job = await request.app[WAITERS].wait_for_job(job_id, wait)
    else:
        found = await queries.get_job(request.app[POOL], job_id)
        if found is None:
            raise JobNotFound(f"job {job_id} does not exist")
        job = found
    return json_response(job.to_json())


async def cancel_job(request: web.Request) -> web.Response:
    job_id = p.job_id(request)
    p.no_query(request)
    job = await queries.cancel(request.app[POOL], job_id)
    log_event(
        log,
        "job.cancelled",
        job_id=job.id,
        job_type=job.type,
        queue=job.queue,
        request_id=request[REQUEST_ID],
    )
    return json_response(job.to_json())


async def retry_job(request: web.Request) -> web.Response:
    job_id = p.job_id(request)
    retry = await p.optional_body(request, request.app[SETTINGS].max_body_bytes, wire.Retry)
    job = await queries.retry(request.app[POOL], job_id, retry.extra_attempts)
    return json_response(job.to_json())


@parks
async def claim_jobs(request: web.Request) -> web.Response:
    claim = await p.body(request, request.app[SETTINGS].max_body_bytes, wire.Claim)

    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    jobs = await request.app[WAITERS].claim(**p.claim_kwargs(claim), gone=gone)
    if jobs and gone():
        # The client left while we claimed: the answer, and the lease tokens in it, would
        # reach nobody, and no one else can report on these jobs. Give them back now.
        await request.app[WAITERS].give_back(jobs)
        jobs = []
    # the one answer that shows lease tokens: the claimer needs them to report back; the
    # trace context rides along so an HTTP runner's span continues the enqueue's trace
    return json_response(
        {
            "jobs": [
                j.to_json() | {"lease_token": j.lease_token, "trace_context": j.trace_context}
                for j in jobs
            ]
        }
    )


async def complete_job(request: web.Request) -> web.Response:
    job_id = p.job_id(request)
    c = await p.body(request, request.app[SETTINGS].max_body_bytes, wire.Complete)
    pool = request.app[POOL]
    attempt = p.unset_none(c.attempt)
    if c.success:
        # concurrent completions share one transaction (pgq.batching.CompleteBatcher)
        job = await request.app[COMPLETER].complete(
            (job_id, c.worker_id, p.unset_none(c.result), attempt, c.lease_token)
        )
    else:
        job = await queries.fail(
            pool,
            job_id,
            c.worker_id,
            "failed" if c.error is wire.UNSET else c.error,
            retryable=c.retryable is not False,
            attempt=attempt,
            retry_delay=p.unset_none(c.retry_delay_seconds),
            lease_token=c.lease_token,
        )
    return json_response(job.to_json())


async def complete_jobs(request: web.Request) -> web.Response:
    """``POST /jobs/complete``: one worker's successes in one ``pgq.complete_many``."""
    batch = await p.body(request, request.app[SETTINGS].max_batch_body_bytes, wire.CompleteBatch)
    items = batch.completions
    rows = await queries.complete_many(
        request.app[POOL],
        batch.worker_id,
        [c.id for c in items],
        [p.unset_none(c.attempt) for c in items],
        [p.unset_none(c.result) for c in items],
        [c.lease_token for c in items],
    )
    return json_response(
        {"results": [{"id": i, "completed": done, "status": st} for i, done, st in rows]}
    )


async def heartbeat_job(request: web.Request) -> web.Response:
    job_id = p.job_id(request)
    hb = await p.body(request, request.app[SETTINGS].max_body_bytes, wire.Heartbeat)
    job = await queries.heartbeat(
        request.app[POOL], job_id, hb.worker_id, p.unset_none(hb.attempt), hb.lease_token
    )
    return json_response(job.to_json())


async def release_job(request: web.Request) -> web.Response:
    job_id = p.job_id(request)
    r = await p.body(request, request.app[SETTINGS].max_body_bytes, wire.Release)
    job = await queries.release(
        request.app[POOL],
        job_id,
        r.worker_id,
        p.unset_none(r.reason),
        attempt=r.attempt,
        lease_token=r.lease_token,
    )
    return json_response(job.to_json())


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP. Asks nothing of the database, so an outage does
    not get a coordinator restarted (restarting would not bring the database back)."""
    p.no_query(request)
    return json_response({"status": "ok"})


async def health(request: web.Request) -> web.Response:
    """Readiness (``/health`` and ``/readyz``): the database answers and the LISTEN
    connection is up. The answer names no address and no driver error (those are in the
    listener's log lines); probes and load balancers only need the status."""
    p.no_query(request)
    try:
        async with asyncio.timeout(_HEALTH_TIMEOUT):  # not wait_for: see pgq.aio
            await queries.ping(request.app[POOL])
    except (DatabaseUnavailable, TimeoutError, OSError):
        return error_response(
            503, "database_unavailable", "the database does not answer", _RETRY_LATER
        )
    if not request.app[LISTENER].connected:
        return error_response(
            503, "listener_down", "the LISTEN connection is down (reconnecting)", _RETRY_LATER
        )
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    p.no_query(request)
    body = await request.app[METRICS].scrape(
        request.app[POOL],
        listener_up=request.app[LISTENER].connected,
        waiting=request.app[WAITERS].waiting,
    )
    response = web.Response(body=body)
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    return response


async def openapi(request: web.Request) -> web.Response:
    p.no_query(request)
    return json_response(document())


def setup_routes(app: web.Application) -> None:
    """Every route of the API; ``openapi.document()`` describes exactly these."""
    job = r"/jobs/{id:[0-9]+}"
    r = app.router
    r.add_post("/jobs", create_job)
    r.add_get("/jobs", list_jobs, allow_head=False)
    r.add_post("/jobs/batch", create_batch)
    r.add_post("/jobs/claim", claim_jobs)
    r.add_post("/jobs/complete", complete_jobs)
    r.add_get(job, get_job, allow_head=False)
    r.add_delete(job, cancel_job)
    r.add_post(job + "/retry", retry_job)
    r.add_post(job + "/complete", complete_job)
    r.add_post(job + "/heartbeat", heartbeat_job)
    r.add_post(job + "/release", release_job)
    setup_schedule_routes(app)
    r.add_post(job + "/progress", bulk.report_progress)
    r.add_get(job + "/events", events.job_events, allow_head=False)
    r.add_post("/jobs/retry", bulk.retry_jobs)
    r.add_post("/jobs/cancel", bulk.cancel_jobs)
    r.add_get("/events", events.all_events, allow_head=False)
    r.add_get("/livez", livez, allow_head=False)
    r.add_get("/health", health, allow_head=False)
    r.add_get("/readyz", health, allow_head=False)
    r.add_get("/metrics", metrics, allow_head=False)
    r.add_get("/openapi.json", openapi, allow_head=False)
    setup_queue_routes(app)

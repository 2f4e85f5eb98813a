"""The ``/queues`` endpoints (flow control).

GET  /queues                    every queue with jobs or settings
GET  /queues/{queue}            one queue (zeros for an unknown valid name)
POST /queues/{queue}/pause      pgq.pause
POST /queues/{queue}/resume     pgq.resume (idle runners are notified)
PUT  /queues/{queue}/limits     ``wire.Limits`` (absent = no limit) → pgq.set_limits
"""

from __future__ import annotations

import logging

from aiohttp import web

from .. import queries, wire
from ..logs import log_event
from . import params as p
from .errors import InvalidField, json_response
from .keys import POOL, REQUEST_ID, SETTINGS

log = logging.getLogger("pgq.coordinator")

LIMIT_FIELDS = ("concurrency", "key_concurrency", "rate", "burst")


def queue_name(request: web.Request) -> str:
    """The ``{queue}`` of the path, under the queue name rule (400 naming ``queue``)."""
    name = request.match_info["queue"]
    if not wire.QUEUE_RE.match(name):
        raise InvalidField("queue", f"{name[:60]!r} is invalid: {wire.QUEUE_RULE}")
    return name


async def list_queues(request: web.Request) -> web.Response:
    p.no_query(request)
    return json_response({"queues": await queries.list_queues(request.app[POOL])})


async def get_queue(request: web.Request) -> web.Response:
    name = queue_name(request)
    p.no_query(request)
    return json_response(await queries.get_queue(request.app[POOL], name))


async def _changed(request: web.Request, name: str, event: str, message: str) -> web.Response:
    queue = await queries.get_queue(request.app[POOL], name)
    log_event(
        log,
        event,
        message,
        queue=name,
        request_id=request[REQUEST_ID],
        paused=queue["paused"],
        limits={k: queue[k] for k in LIMIT_FIELDS},
    )
    return json_response(queue)


async def pause_queue(request: web.Request) -> web.Response:
    name = queue_name(request)
    p.no_query(request)
    await queries.pause(request.app[POOL], name)
    return await _changed(request, name, "queue.paused", f"queue {name} paused")


async def resume_queue(request: web.Request) -> web.Response:
    name = queue_name(request)
    p.no_query(request)
    await queries.resume(request.app[POOL], name)
    return await _changed(request, name, "queue.resumed", f"queue {name} resumed")


async def put_limits(request: web.Request) -> web.Response:
    name = queue_name(request)
    limits = await p.optional_body(request, request.app[SETTINGS].max_body_bytes, wire.Limits)
    await queries.set_limits(
        request.app[POOL],
        name,
        concurrency=p.unset_none(limits.concurrency),
        key_concurrency=p.unset_none(limits.key_concurrency),
        rate=p.unset_none(limits.rate),
        burst=p.unset_none(limits.burst),
    )
    return await _changed(request, name, "queue.limits_changed", f"queue {name} limits set")


def setup_queue_routes(app: web.Application) -> None:
    q = r"/queues/{queue}"
    r = app.router
    r.add_get("/queues", list_queues, allow_head=False)
    r.add_get(q, get_queue, allow_head=False)
    r.add_post(q + "/pause", pause_queue)
    r.add_post(q + "/resume", resume_queue)
    r.add_put(q + "/limits", put_limits)

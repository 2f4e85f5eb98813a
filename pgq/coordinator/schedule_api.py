"""``/schedules``: list, read, create or replace, and delete cron schedules over HTTP.

``PUT /schedules/{name}`` takes ``{"cron", "type", "arguments"?, "queue"?, "timezone"?,
"catch_up"?, "priority"?, "max_attempts"?, "timeout_seconds"?, "paused"?}`` and answers 201
when it created the schedule, 200 when it replaced one. Parsing follows the API's rules
(``validation``): unknown fields and ``null`` are refused, numbers stay in range, and what
only the database can judge (the cron expression, the time zone) comes back from
``pgq.schedule`` as a 400 naming the field.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from aiohttp import web

from .. import queries, schedules
from ..errors import InvalidArgument
from ..logs import log_event
from . import validation as v
from .errors import InvalidField, json_response
from .keys import POOL, REQUEST_ID, SETTINGS

log = logging.getLogger("pgq.coordinator")

SCHEDULE_FIELDS: Final = (
    "cron",
    "type",
    "arguments",
    "queue",
    "timezone",
    "catch_up",
    "priority",
    "max_attempts",
    "timeout_seconds",
    "paused",
)
_NAME_RE = re.compile(schedules.NAME_PATTERN, re.ASCII)
#: pgq.schedule's argument names → the body's field names
_FIELD_NAMES: Final = {"job_type": "type", "args": "arguments"}


def schedule_name(request: web.Request) -> str:
    name = request.match_info["name"]
    return v.check_string(
        name,
        "name",
        pattern=_NAME_RE,
        rule="use a lowercase letter then up to 127 of a-z 0-9 _ . : -",
    )


def parse_schedule(body: v.Body) -> dict[str, Any]:
    """The keyword arguments of ``queries.schedule`` (less the name) for a PUT body."""
    cron = body.string("cron", max_length=255)
    if cron is v._MISSING:
        raise body.error("cron", "is required")
    job_type = body.string(
        "type", pattern=re.compile(v.TYPE_PATTERN), rule="use 1-128 of A-Z a-z 0-9 _ . : -"
    )
    if job_type is v._MISSING:
        raise body.error("type", "is required")
    out: dict[str, Any] = {"cron": cron, "job_type": job_type}
    args = body.obj("arguments")
    if args is not v._MISSING:
        out["args"] = args
    options = {
        "queue": body.string(
            "queue",
            pattern=re.compile(v.QUEUE_PATTERN),
            rule="use a lowercase letter then up to 47 of a-z 0-9 _",
        ),
        "timezone": body.string("timezone", max_length=64),
        "catch_up": body.take("catch_up"),
        "priority": body.integer("priority", -32768, 32767),
        "max_attempts": body.integer("max_attempts", 1, 1000),
        "timeout_seconds": body.integer("timeout_seconds", 1, 86400),
        "paused": body.boolean("paused"),
    }
    catch_up = options["catch_up"]
    if catch_up is not v._MISSING and catch_up not in schedules.CATCH_UP_MODES:
        raise body.error("catch_up", f"must be one of {', '.join(schedules.CATCH_UP_MODES)}")
    body.finish(SCHEDULE_FIELDS)
    out.update({k: value for k, value in options.items() if value is not v._MISSING})
    return out


async def list_schedules(request: web.Request) -> web.Response:
    v.no_query(request)
    found = await queries.list_schedules(request.app[POOL])
    return json_response({"schedules": [s.to_json() for s in found]})


async def get_schedule(request: web.Request) -> web.Response:
    name = schedule_name(request)
    v.no_query(request)
    found = await queries.get_schedule(request.app[POOL], name)
    if found is None:
        raise schedules.ScheduleNotFound(f"schedule {name!r} does not exist")
    return json_response(found.to_json())


async def put_schedule(request: web.Request) -> web.Response:
    name = schedule_name(request)
    v.no_query(request)
    body = await v.read_body(request, request.app[SETTINGS].max_body_bytes)
    assert body is not None
    kwargs = parse_schedule(body)
    try:
        saved = await queries.schedule(request.app[POOL], name, **kwargs)
    except InvalidArgument as exc:
        field = schedules.field_of(exc)
        if field is None:
            raise
        raise InvalidField(_FIELD_NAMES.get(field, field), exc.message) from exc
    created = saved.created_at == saved.updated_at
    log_event(
        log,
        "schedule.created" if created else "schedule.replaced",
        schedule=name,
        job_type=saved.job_type,
        queue=saved.queue,
        request_id=request[REQUEST_ID],
    )
    return json_response(
        saved.to_json(),
        status=201 if created else 200,
        headers={"Location": f"/schedules/{name}"},
    )


async def delete_schedule(request: web.Request) -> web.Response:
    name = schedule_name(request)
    v.no_query(request)
    deleted = await queries.unschedule(request.app[POOL], name)
    log_event(log, "schedule.deleted", schedule=name, request_id=request[REQUEST_ID])
    return json_response(deleted.to_json())


def setup_schedule_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/schedules", list_schedules, allow_head=False)
    one = "/schedules/{name}"
    r.add_get(one, get_schedule, allow_head=False)
    r.add_put(one, put_schedule)
    r.add_delete(one, delete_schedule)

"""``/schedules``: list, read, create or replace, and delete cron schedules over HTTP.

``PUT /schedules/{name}`` takes a ``wire.NewSchedule`` and answers 201 when it created the
schedule, 200 when it replaced one. The body's rules are the wire type's (unknown fields
and ``null`` refused, numbers in range); what only the database can judge (the cron
expression, the time zone) comes back from ``pgq.schedule`` as a 400 naming the field.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from aiohttp import web

from .. import queries, schedules, wire
from ..errors import InvalidArgument
from ..logs import log_event
from . import params as p
from .errors import InvalidField, json_response
from .keys import POOL, REQUEST_ID, SETTINGS

log = logging.getLogger("pgq.coordinator")

#: pgq.schedule's argument names → the body's field names
_FIELD_NAMES: Final = {"job_type": "type", "args": "arguments"}


def schedule_name(request: web.Request) -> str:
    """The ``{name}`` of the path, under the schedule name rule (400 naming ``name``)."""
    name = request.match_info["name"]
    if not wire.SCHEDULE_NAME_RE.match(name):
        shown = name[:60] + ("…" if len(name) > 60 else "")
        raise InvalidField("name", f"{shown!r} is invalid: {wire.SCHEDULE_NAME_RULE}")
    return name


def schedule_kwargs(new: wire.NewSchedule) -> dict[str, Any]:
    """A ``NewSchedule`` → ``queries.schedule`` keywords (less the name); a left-out field
    is not passed, so pgq.schedule's default applies."""
    out: dict[str, Any] = {"cron": new.cron, "job_type": new.type}
    if new.arguments is not wire.UNSET:
        out["args"] = new.arguments
    for option in schedules.SCHEDULE_OPTIONS:
        value = getattr(new, option)
        if value is not wire.UNSET:
            out[option] = value
    return out


async def list_schedules(request: web.Request) -> web.Response:
    p.no_query(request)
    found = await queries.list_schedules(request.app[POOL])
    return json_response({"schedules": [s.to_json() for s in found]})


async def get_schedule(request: web.Request) -> web.Response:
    name = schedule_name(request)
    p.no_query(request)
    found = await queries.get_schedule(request.app[POOL], name)
    if found is None:
        raise schedules.ScheduleNotFound(f"schedule {name!r} does not exist")
    return json_response(found.to_json())


async def put_schedule(request: web.Request) -> web.Response:
    name = schedule_name(request)
    new = await p.body(request, request.app[SETTINGS].max_body_bytes, wire.NewSchedule)
    try:
        saved = await queries.schedule(request.app[POOL], name, **schedule_kwargs(new))
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
    p.no_query(request)
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

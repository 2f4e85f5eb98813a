"""The ``/schedules`` part of the OpenAPI document (``openapi.document`` merges it in)."""

from __future__ import annotations

from typing import Any

from .. import schedules
from .openapi import _JOB_TYPE, _QUEUE, _TIME, _json, _nullable, _op, _ref

_ARGUMENTS = {"type": "object", "description": "The arguments of every job it creates."}
_TIMING: dict[str, Any] = {
    "cron": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "description": "5 fields (minute hour day-of-month month day-of-week), or 6 with a "
        "leading second; *, lists, ranges, steps, month and day names, 0 or 7 for Sunday; or "
        "@yearly @annually @monthly @weekly @daily @midnight @hourly.",
    },
    "timezone": {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "description": "IANA time zone the slots are computed in. A local time that does not "
        "exist (DST starts) is skipped; one that occurs twice (DST ends) fires once.",
    },
    "catch_up": {
        "enum": list(schedules.CATCH_UP_MODES),
        "description": "Slots missed while nothing ran: latest = one job for the most recent, "
        "all = one per slot (1,000 per firing), none = only slots under 60 s old.",
    },
}
_JOB_FIELDS = {
    "queue": _QUEUE,
    "priority": {"type": "integer", "minimum": -32768, "maximum": 32767},
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000},
    "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
    "paused": {"type": "boolean", "description": "A paused schedule creates no jobs."},
}

SCHEMAS: dict[str, Any] = {
    "Schedule": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "name",
            "cron",
            "timezone",
            "type",
            "arguments",
            "queue",
            "priority",
            "max_attempts",
            "timeout_seconds",
            "catch_up",
            "paused",
            "next_run_at",
            "last_run_at",
            "created_at",
            "updated_at",
        ],
        "properties": {
            "name": {"type": "string", "pattern": schedules.NAME_PATTERN},
            **_TIMING,
            "type": _JOB_TYPE,
            "arguments": _ARGUMENTS,
            **_JOB_FIELDS,
            "next_run_at": {**_TIME, "description": "The first slot not yet fired."},
            "last_run_at": {
                **_nullable(_TIME),
                "description": "The latest slot a job was created for.",
            },
            "created_at": _TIME,
            "updated_at": _TIME,
        },
    },
    "NewSchedule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["cron", "type"],
        "properties": {
            **_TIMING,
            "timezone": {**_TIMING["timezone"], "default": "UTC"},
            "catch_up": {**_TIMING["catch_up"], "default": "latest"},
            "type": _JOB_TYPE,
            "arguments": {**_ARGUMENTS, "default": {}},
            **_JOB_FIELDS,
        },
    },
}

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": schedules.NAME_PATTERN},
    "description": "The schedule's name.",
}
_NOT_FOUND = _json(_ref("Error"), "No such schedule.")


def paths() -> dict[str, Any]:
    one = _json(_ref("Schedule"), "The schedule.")
    return {
        "/schedules": {
            "get": _op(
                "listSchedules",
                "Every schedule, by name",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["schedules"],
                            "additionalProperties": False,
                            "properties": {
                                "schedules": {"type": "array", "items": _ref("Schedule")}
                            },
                        },
                        "The schedules.",
                    )
                },
                ("400", "503"),
            )
        },
        "/schedules/{name}": {
            "get": _op(
                "getSchedule",
                "Read a schedule",
                {"200": one, "404": _NOT_FOUND},
                ("400", "503"),
                parameters=[_NAME],
            ),
            "put": _op(
                "putSchedule",
                "Create a schedule, or replace its definition",
                {
                    "201": _json(_ref("Schedule"), "Created."),
                    "200": _json(_ref("Schedule"), "Replaced."),
                },
                ("400", "413", "415", "503"),
                body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewSchedule")}},
                },
                parameters=[_NAME],
            ),
            "delete": _op(
                "deleteSchedule",
                "Delete a schedule (the jobs it created stay)",
                {"200": _json(_ref("Schedule"), "The deleted schedule."), "404": _NOT_FOUND},
                ("400", "503"),
                parameters=[_NAME],
            ),
        },
    }

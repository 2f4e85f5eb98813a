"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``.

Written by hand next to ``validation.py``, whose rules it states as JSON Schema; a test
checks that every route of the app is documented here and every operation here is routed,
and the schemathesis run checks live responses against it.
"""

from __future__ import annotations

import functools
from typing import Any

from .. import __version__
from ..jobs import STATUSES
from . import validation as v

_NO_NUL = "^[^\\u0000]*$"

_JSON_NOTE = (
    f"Any JSON; strings and keys must not contain U+0000 (jsonb cannot store it) and values "
    f"nest at most {v.MAX_JSON_DEPTH} levels."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_TIME = {"type": "string", "format": "date-time"}
_WORKER_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": _NO_NUL,
    "description": "Who holds the job (any stable name of the runner process).",
}
_ATTEMPT = {
    "type": "integer",
    "minimum": 1,
    "maximum": v.INT32_MAX,
    "description": "The attempt being reported (the claimed job's `attempts`): fences off a "
    "runner whose lease expired and whose job was claimed again.",
}
_JOB_TYPE = {"type": "string", "pattern": v.TYPE_PATTERN}
_QUEUE = {"type": "string", "pattern": v.QUEUE_PATTERN}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {
                        "type": "string",
                        "pattern": "^[a-z][a-z_]*$",
                        "description": "invalid_json, invalid_field, invalid_argument, "
                        "unauthorized, not_found, job_not_found, schedule_not_found, "
                        "method_not_allowed, "
                        "transition_not_allowed, payload_too_large, unsupported_media_type, "
                        "database_unavailable, listener_down",
                    },
                    "message": {"type": "string", "description": "A sentence naming the field."},
                },
            }
        },
    },
    "Job": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "type",
            "queue",
            "status",
            "arguments",
            "priority",
            "attempts",
            "max_attempts",
            "timeout_seconds",
            "run_at",
            "created_at",
            "updated_at",
            "finished_at",
            "worker_id",
            "lease_expires_at",
            "idempotency_key",
            "result",
            "error",
            "depends_on",
            "progress",
            "schedule",
            "scheduled_for",
        ],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "type": _JOB_TYPE,
            "queue": _QUEUE,
            "status": {"enum": list(STATUSES)},
            "arguments": {"type": "object"},
            "priority": {"type": "integer"},
            "attempts": {
                "type": "integer",
                "minimum": 0,
                "description": "Claims so far: 0 before the first run, 1 during it.",
            },
            "max_attempts": {"type": "integer", "minimum": 1},
            "timeout_seconds": {"type": "integer", "minimum": 1},
            "run_at": _TIME,
            "created_at": _TIME,
            "updated_at": _TIME,
            "finished_at": _nullable(_TIME),
            "worker_id": {"type": ["string", "null"]},
            "lease_expires_at": _nullable(_TIME),
            "idempotency_key": {"type": ["string", "null"]},
            "result": {"description": "What the handler returned (any JSON), null until then."},
            "error": {
                "type": ["object", "null"],
                "description": "The last error: `message`, `attempt`, `at`, and whatever "
                "else the runner reported (`kind` is `lease_expired` or `dependency` for "
                "failures pgq itself recorded).",
            },
            "depends_on": {"type": ["array", "null"], "items": {"type": "integer"}},
            "progress": {
                "type": ["object", "null"],
                "description": "The last progress a handler reported for the current "
                "attempt (any object up to 8 KiB), null before the first report.",
            },
            "schedule": {
                "type": ["string", "null"],
                "description": "The schedule that created the job (see /schedules), or null.",
            },
            "scheduled_for": {
                **_nullable(_TIME),
                "description": "The schedule slot the job was created for, or null.",
            },
        },
    },
    "NewJob": {
        "type": "object",
        "additionalProperties": False,
        "required": ["type"],
        "not": {"required": ["run_at", "delay_seconds"]},
        "description": "Give `run_at` or `delay_seconds`, not both; without either the job is "
        "due now. `null` is never accepted: leave a field out for its default.",
        "properties": {
            "type": {**_JOB_TYPE, "description": "1-128 of A-Z a-z 0-9 _ . : -"},
            "arguments": {"type": "object", "description": _JSON_NOTE},
            "queue": {**_QUEUE, "default": "default"},
            "priority": {
                "type": "integer",
                "minimum": -32768,
                "maximum": 32767,
                "default": 0,
                "description": "Smaller runs first.",
            },
            "run_at": {
                **_TIME,
                "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-",
                "description": "RFC 3339 with an offset, 1970 to 9999.",
            },
            "delay_seconds": {"type": "number", "minimum": 0, "maximum": v.MAX_DELAY_SECONDS},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
            "timeout_seconds": {
                "type": "integer",
                "minimum": 1,
                "maximum": 86400,
                "default": 300,
                "description": "The lease is 1.25 × this, renewed by heartbeats.",
            },
            "idempotency_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": _NO_NUL,
                "description": "A second create with the same key answers 200 with the first job.",
            },
            "depends_on": {
                "type": "array",
                "maxItems": v.MAX_DEPENDS_ON,
                "items": {"type": "integer", "minimum": 1, "maximum": v.BIGINT_MAX},
                "description": "The job waits until all of these succeeded.",
            },
        },
    },
    "Batch": {
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs"],
        "properties": {
            "jobs": {
                "type": "array",
                "minItems": 1,
                "maxItems": v.MAX_BATCH_JOBS,
                "items": _ref("NewJob"),
            }
        },
    },
    "Jobs": {
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
    },
    "JobPage": {
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs", "next"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "next": {
                "type": ["integer", "null"],
                "description": "Pass as `after` for the next page; null on the last page.",
            },
        },
    },
    "Claim": {
        "type": "object",
        "additionalProperties": False,
        "required": ["worker_id"],
        "properties": {
            "worker_id": _WORKER_ID,
            "max_jobs": {
                "type": "integer",
                "minimum": 1,
                "maximum": v.MAX_CLAIM_JOBS,
                "default": 1,
            },
            "queues": {
                "type": "array",
                "minItems": 1,
                "maxItems": v.MAX_FILTER_ITEMS,
                "items": _QUEUE,
                "default": ["default"],
            },
            "types": {
                "type": "array",
                "minItems": 1,
                "maxItems": v.MAX_FILTER_ITEMS,
                "items": _JOB_TYPE,
                "description": "Only these job types (default: any).",
            },
            "wait_seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": v.MAX_WAIT_SECONDS,
                "default": 0,
                "description": "Hold the request until work arrives (woken by NOTIFY) or this "
                "many seconds pass; then answer with an empty list.",
            },
        },
    },
    "Complete": {
        "type": "object",
        "additionalProperties": False,
        "required": ["worker_id", "success"],
        "description": "`success: true` may carry `result`; `success: false` may carry "
        '`error` (a string is stored as {"message": …}), `retryable` (default true: '
        "retried after a backoff while attempts remain; false: dead at once) and "
        "`retry_delay_seconds` (retry after this many seconds instead of the backoff).",
        "properties": {
            "worker_id": _WORKER_ID,
            "attempt": _ATTEMPT,
            "success": {"type": "boolean"},
            "result": {"description": _JSON_NOTE},
            "error": {
                "anyOf": [
                    {"type": "string", "minLength": 1, "maxLength": 65536, "pattern": _NO_NUL},
                    {"type": "object"},
                ]
            },
            "retryable": {"type": "boolean", "default": True},
            "retry_delay_seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": v.MAX_RETRY_DELAY_SECONDS,
                "description": "Seconds until the retry, instead of the backoff (0: at once).",
            },
        },
        "oneOf": [
            {
                "properties": {"success": {"const": True}},
                "not": {
                    "anyOf": [
                        {"required": ["error"]},
                        {"required": ["retryable"]},
                        {"required": ["retry_delay_seconds"]},
                    ]
                },
            },
            {"properties": {"success": {"const": False}}, "not": {"required": ["result"]}},
        ],
    },
    "Heartbeat": {
        "type": "object",
        "additionalProperties": False,
        "required": ["worker_id"],
        "properties": {"worker_id": _WORKER_ID, "attempt": _ATTEMPT},
    },
    "Release": {
        "type": "object",
        "additionalProperties": False,
        "required": ["worker_id", "attempt"],
        "description": "`reason` is stored like a failure's `error` (kind `released`); "
        'without it the job records "released by its runner".',
        "properties": {
            "worker_id": _WORKER_ID,
            "attempt": _ATTEMPT,
            "reason": {
                "anyOf": [
                    {"type": "string", "minLength": 1, "maxLength": 65536, "pattern": _NO_NUL},
                    {"type": "object"},
                ]
            },
        },
    },
    "Retry": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "extra_attempts": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1}
        },
    },
}

_ERRORS = {
    "400": "Malformed JSON, or an invalid field (the message names it).",
    "401": "A bearer token is required (when the coordinator has PGQ_API_TOKENS).",
    "404": "No such job.",
    "409": "The job's status does not allow this, or another worker or attempt holds it.",
    "413": "The body is over the limit (1 MiB; 32 MiB for /jobs/batch by default).",
    "415": "The body is not application/json (UTF-8).",
    "503": "The database cannot be reached.",
}


def _error(status: str) -> dict[str, Any]:
    return {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _body(name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


_JOB_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
    "description": "The job id.",
}
_PROTECTED: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def _op(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    errors: tuple[str, ...],
    *,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "security": _PROTECTED,
        "responses": {**responses, **{s: _error(s) for s in ("401", *errors)}},
    }
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = parameters
    return op


_JOB_OK = _json(_ref("Job"), "The job.")
_BODY_ERRORS = ("400", "413", "415", "503")


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    paths: dict[str, Any] = {
        "/jobs": {
            "post": _op(
                "createJob",
                "Create a job (or return the existing one for a known idempotency_key)",
                {
                    "201": _json(
                        _ref("Job"),
                        "Created.",
                        headers={"Location": {"schema": {"type": "string"}}},
                    ),
                    "200": _json(_ref("Job"), "The existing job with this idempotency_key."),
                },
                _BODY_ERRORS,
                body=_body("NewJob"),
            ),
            "get": _op(
                "listJobs",
                "List jobs in id order, filtered, one page at a time",
                {"200": _json(_ref("JobPage"), "A page of jobs.")},
                ("400", "503"),
                parameters=[
                    {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)}},
                    {"name": "queue", "in": "query", "schema": _QUEUE},
                    {"name": "type", "in": "query", "schema": _JOB_TYPE},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": v.MAX_LIST_LIMIT,
                            "default": v.DEFAULT_LIST_LIMIT,
                        },
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": v.BIGINT_MAX},
                        "description": "Only jobs with a larger id (the previous page's `next`).",
                    },
                ],
            ),
        },
        "/jobs/batch": {
            "post": _op(
                "createJobs",
                "Create up to 10,000 jobs at once, all or nothing",
                {"201": _json(_ref("Jobs"), "The jobs, in request order.")},
                _BODY_ERRORS,
                body=_body("Batch"),
            )
        },
        "/jobs/claim": {
            "post": _op(
                "claimJobs",
                "Claim due jobs for a worker, optionally waiting for work to arrive",
                {"200": _json(_ref("Jobs"), "The claimed jobs (running, leased); may be empty.")},
                _BODY_ERRORS,
                body=_body("Claim"),
            )
        },
        "/jobs/{id}": {
            "get": _op(
                "getJob",
                "Read a job; with ?wait, wait until it has finished",
                {"200": _json(_ref("Job"), "The job (as it stands when the wait ends).")},
                ("400", "404", "503"),
                parameters=[
                    _JOB_ID,
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "number", "minimum": 0, "maximum": v.MAX_WAIT_SECONDS},
                        "description": "Seconds to wait for the job to be succeeded, dead or "
                        "cancelled (event-driven).",
                    },
                ],
            ),
            "delete": _op(
                "cancelJob",
                "Cancel a waiting, queued or running job",
                {"200": _json(_ref("Job"), "The cancelled job.")},
                ("400", "404", "409", "503"),
                parameters=[_JOB_ID],
            ),
        },
        "/jobs/{id}/retry": {
            "post": _op(
                "retryJob",
                "Replay a dead or cancelled job now, with extra attempts",
                {"200": _JOB_OK},
                ("404", "409", *_BODY_ERRORS),
                body=_body("Retry", required=False),
                parameters=[_JOB_ID],
            )
        },
        "/jobs/{id}/complete": {
            "post": _op(
                "completeJob",
                "Report the outcome of a claimed job",
                {"200": _JOB_OK},
                ("404", "409", *_BODY_ERRORS),
                body=_body("Complete"),
                parameters=[_JOB_ID],
            )
        },
        "/jobs/{id}/heartbeat": {
            "post": _op(
                "heartbeatJob",
                "Extend the lease of a claimed job",
                {"200": _JOB_OK},
                ("404", "409", *_BODY_ERRORS),
                body=_body("Heartbeat"),
                parameters=[_JOB_ID],
            )
        },
        "/jobs/{id}/release": {
            "post": _op(
                "releaseJob",
                "Hand a claimed job back: queued now, its attempt given back (runner shutdown)",
                {"200": _JOB_OK},
                ("404", "409", *_BODY_ERRORS),
                body=_body("Release"),
                parameters=[_JOB_ID],
            )
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Database and LISTEN connection check",
                "security": [],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "additionalProperties": False,
                            "properties": {"status": {"const": "ok"}},
                        },
                        "Healthy.",
                    ),
                    "503": _error("503"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "The OpenAPI 3.1 document."),
                },
            }
        },
    }
    # imported here: the schedules part is built from this module's helpers
    from . import openapi_schedules

    paths.update(openapi_schedules.paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pgq coordinator",
            "version": __version__,
            "description": "An event-driven job queue on PostgreSQL. JSON in and out; every "
            'error is {"error": {"code", "message"}}. An unknown route answers 404 and a '
            "known route with the wrong method 405, with the same error body. Unknown body "
            "fields and unknown query parameters are refused (400).",
        },
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **openapi_schedules.SCHEMAS},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on /jobs… and /schedules… when PGQ_API_TOKENS is set.",
                }
            },
        },
    }

"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``.

Only the paths and metadata are written here: the component schemas and the query
parameters are generated from the wire types (``pgq.wire``) that validate the requests.
A test checks that every route of the app is documented here and every operation here is
routed, and the schemathesis run checks live responses against it.
"""

from __future__ import annotations

import functools
from typing import Any

from .. import __version__, wire
from .auth import ROUTE_SCOPES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ERRORS = {
    "400": "Malformed JSON, or an invalid field (the message names it).",
    "401": "A bearer token is required (when the coordinator has PGQ_API_TOKENS).",
    "403": "The token's scope does not allow this (the operation's x-pgq-scope names the "
    "scope it needs).",
    "404": "No such job.",
    "409": "The job's status does not allow this, or another worker or attempt holds it "
    "(`lease_mismatch`: the lease_token is wrong or stale); on create, the idempotency_key "
    "is taken by a job of another type or queue.",
    "413": "The body is over the limit (1 MiB; 32 MiB for /jobs/batch by default).",
    "415": "The body is not application/json (UTF-8).",
    "422": "`unencodable`: a stored JSON value of the answer (arguments, result, errors, "
    "progress) cannot be read or encoded as JSON (a number beyond a double, nesting deeper "
    "than 1,024 levels, possible from psql); the message says to read it with SQL.",
    "503": "The database cannot be reached (database_unavailable) or did not answer in time "
    "(database_busy: a statement, lock or connection timeout); Retry-After says when to retry.",
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
_QUEUE_NAME = {
    "name": "queue",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": wire.QUEUE_PATTERN},
    "description": "The queue name.",
}
_SCHEDULE_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": wire.SCHEDULE_NAME_PATTERN},
    "description": "The schedule's name.",
}
_PROTECTED: list[dict[str, list[str]]] = [{"bearer": []}, {}]
#: W3C Trace Context of an enqueue, kept on the jobs for the runners' spans (pgq.tracing)
_TRACE_HEADERS = [
    {
        "name": "traceparent",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "W3C Trace Context: the runners' spans of the new jobs continue this "
        "trace. An invalid value is ignored.",
    },
    {
        "name": "tracestate",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "W3C Trace Context vendor state, kept with a valid traceparent (up to "
        "512 printable ASCII characters; otherwise ignored).",
    },
]


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
_COUNT = _json(_ref("Count"), "How many jobs changed.")
_SSE = {
    "description": "text/event-stream: `event: job` (a status change), `event: progress`, "
    "`event: resync` (events were lost: re-read), a comment line every 15 s.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def _page(op_id: str, summary: str, content: str) -> dict[str, Any]:
    """A dashboard page or asset: HTML, JavaScript or CSS, open without a token."""
    return {
        "operationId": op_id,
        "summary": summary,
        "security": [],
        "responses": {"200": {"description": content}, "302": {"description": "To /ui/."}},
    }


_QUEUE_OK = _json(_ref("Queue"), "The queue.")
_SCHEDULE_OK = _json(_ref("Schedule"), "The schedule.")
_SCHEDULE_NOT_FOUND = _json(_ref("Error"), "No such schedule.")


def _probe(op_id: str, summary: str) -> dict[str, Any]:
    """A probe: open without a token, ``{"status": "ok"}`` or (readiness only) 503."""
    ok = {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {"status": {"const": "ok"}},
    }
    responses: dict[str, Any] = {"200": _json(ok, "Serving.")}
    if op_id != "livez":
        responses["503"] = _error("503")
    return {"operationId": op_id, "summary": summary, "security": [], "responses": responses}


_BODY_ERRORS = ("400", "413", "415", "503")
#: The answer carries stored JSON (a job's arguments, result, errors or progress, a
#: schedule's arguments), which PostgreSQL may hold in a form JSON libraries refuse.
_STORED = ("422",)


def _scopes(paths: dict[str, Any]) -> None:
    """Mark each protected operation with the scope it needs (``auth.ROUTE_SCOPES``, the one
    table the coordinator enforces) and its 403 answer."""
    for path, operations in paths.items():
        for method, op in operations.items():
            scope = ROUTE_SCOPES.get((method.upper(), path), "admin")
            if scope is not None:
                op["x-pgq-scope"] = scope
                op["responses"]["403"] = _error("403")


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
                ("409", *_STORED, *_BODY_ERRORS),
                body=_body("NewJob"),
                parameters=_TRACE_HEADERS,
            ),
            "get": _op(
                "listJobs",
                "List jobs in id order, filtered, one page at a time",
                {"200": _json(_ref("JobPage"), "A page of jobs.")},
                ("400", *_STORED, "503"),
                parameters=wire.query_parameters(wire.ListQuery),
            ),
        },
        "/jobs/batch": {
            "post": _op(
                "createJobs",
                "Create up to 10,000 jobs at once, all or nothing",
                {
                    "201": _json(
                        _ref("CreatedJobs"),
                        "The jobs, in request order, without arguments and result.",
                    )
                },
                ("409", *_BODY_ERRORS),
                body=_body("Batch"),
                parameters=_TRACE_HEADERS,
            )
        },
        "/jobs/claim": {
            "post": _op(
                "claimJobs",
                "Claim due jobs for a worker, optionally waiting for work to arrive",
                {
                    "200": _json(
                        _ref("ClaimedJobs"),
                        "The claimed jobs (running, leased, each with its lease_token); may be "
                        "empty.",
                    )
                },
                (*_STORED, *_BODY_ERRORS),
                body=_body("Claim"),
            )
        },
        "/jobs/{id}": {
            "get": _op(
                "getJob",
                "Read a job; with ?wait, wait until it has finished",
                {"200": _json(_ref("Job"), "The job (as it stands when the wait ends).")},
                ("400", "404", *_STORED, "503"),
                parameters=[_JOB_ID, *wire.query_parameters(wire.WaitQuery)],
            ),
            "delete": _op(
                "cancelJob",
                "Cancel a waiting, queued or running job",
                {"200": _json(_ref("Job"), "The cancelled job.")},
                ("400", "404", "409", *_STORED, "503"),
                parameters=[_JOB_ID],
            ),
        },
        "/jobs/{id}/retry": {
            "post": _op(
                "retryJob",
                "Replay a dead or cancelled job now, with extra attempts",
                {"200": _JOB_OK},
                ("404", "409", *_STORED, *_BODY_ERRORS),
                body=_body("Retry", required=False),
                parameters=[_JOB_ID],
            )
        },
        "/jobs/{id}/complete": {
            "post": _op(
                "completeJob",
                "Report the outcome of a claimed job",
                {"200": _JOB_OK},
                ("404", "409", *_STORED, *_BODY_ERRORS),
                body=_body("Complete"),
                parameters=[_JOB_ID],
            )
        },
        "/jobs/complete": {
            "post": _op(
                "completeJobs",
                "Report up to 1,000 successes of one worker at once, each fenced on its own",
                {"200": _json(_ref("CompletedJobs"), "One result per completion, in order.")},
                _BODY_ERRORS,
                body=_body("CompleteBatch"),
            )
        },
        "/jobs/{id}/heartbeat": {
            "post": _op(
                "heartbeatJob",
                "Extend the lease of a claimed job",
                {"200": _JOB_OK},
                ("404", "409", *_STORED, *_BODY_ERRORS),
                body=_body("Heartbeat"),
                parameters=[_JOB_ID],
            )
        },
        "/jobs/{id}/progress": {
            "post": _op(
                "reportProgress",
                "Store a running job's progress (and extend its lease), fenced like heartbeat",
                {"200": _JOB_OK},
                ("404", "409", *_STORED, *_BODY_ERRORS),
                body=_body("Progress"),
                parameters=[_JOB_ID],
            )
        },
        "/jobs/{id}/events": {
            "get": _op(
                "jobEvents",
                "Follow one job: its state, then each progress report and status change, "
                "closed after a terminal status",
                {"200": _SSE},
                ("400", "404", *_STORED, "503"),
                parameters=[_JOB_ID],
            )
        },
        "/jobs/retry": {
            "post": _op(
                "retryJobs",
                "Replay every dead (or cancelled) job matching the filters",
                {"200": _COUNT},
                _BODY_ERRORS,
                body=_body("BulkRetry", required=False),
            )
        },
        "/jobs/cancel": {
            "post": _op(
                "cancelJobs",
                "Cancel every queued and waiting (or running) job matching the filters",
                {"200": _COUNT},
                _BODY_ERRORS,
                body=_body("BulkCancel", required=False),
            )
        },
        "/events": {
            "get": _op(
                "events",
                "Every job status change as it happens (server-sent events)",
                {"200": _SSE},
                ("400",),
                parameters=wire.query_parameters(wire.EventsQuery),
            )
        },
        "/jobs/{id}/release": {
            "post": _op(
                "releaseJob",
                "Hand a claimed job back: queued now, its attempt given back (runner shutdown)",
                {"200": _JOB_OK},
                ("404", "409", *_STORED, *_BODY_ERRORS),
                body=_body("Release"),
                parameters=[_JOB_ID],
            )
        },
        "/queues": {
            "get": _op(
                "listQueues",
                "Every queue with jobs or settings",
                {"200": _json(_ref("Queues"), "The queues.")},
                ("400", "503"),
            )
        },
        "/queues/{queue}": {
            "get": _op(
                "getQueue",
                "One queue (zeros for a valid name without jobs or settings)",
                {"200": _QUEUE_OK},
                ("400", "503"),
                parameters=[_QUEUE_NAME],
            )
        },
        "/queues/{queue}/pause": {
            "post": _op(
                "pauseQueue",
                "Pause: no claim hands out its jobs until it is resumed",
                {"200": _QUEUE_OK},
                ("400", "503"),
                parameters=[_QUEUE_NAME],
            )
        },
        "/queues/{queue}/resume": {
            "post": _op(
                "resumeQueue",
                "Resume a paused queue (idle runners are woken)",
                {"200": _QUEUE_OK},
                ("400", "503"),
                parameters=[_QUEUE_NAME],
            )
        },
        "/queues/{queue}/limits": {
            "put": _op(
                "setQueueLimits",
                "Set concurrency, key_concurrency, rate and burst at once",
                {"200": _QUEUE_OK},
                _BODY_ERRORS,
                body=_body("Limits", required=False),
                parameters=[_QUEUE_NAME],
            )
        },
        "/schedules": {
            "get": _op(
                "listSchedules",
                "Every schedule, by name",
                {"200": _json(_ref("Schedules"), "The schedules.")},
                ("400", *_STORED, "503"),
            )
        },
        "/schedules/{name}": {
            "get": _op(
                "getSchedule",
                "Read a schedule",
                {"200": _SCHEDULE_OK, "404": _SCHEDULE_NOT_FOUND},
                ("400", *_STORED, "503"),
                parameters=[_SCHEDULE_NAME],
            ),
            "put": _op(
                "putSchedule",
                "Create a schedule, or replace its definition",
                {
                    "201": _json(_ref("Schedule"), "Created."),
                    "200": _json(_ref("Schedule"), "Replaced."),
                },
                (*_STORED, *_BODY_ERRORS),
                body=_body("NewSchedule"),
                parameters=[_SCHEDULE_NAME],
            ),
            "delete": _op(
                "deleteSchedule",
                "Delete a schedule (the jobs it created stay)",
                {
                    "200": _json(_ref("Schedule"), "The deleted schedule."),
                    "404": _SCHEDULE_NOT_FOUND,
                },
                ("400", *_STORED, "503"),
                parameters=[_SCHEDULE_NAME],
            ),
        },
        "/ui": {"get": _page("dashboardRedirect", "The dashboard (redirects to /ui/)", "-")},
        "/ui/": {"get": _page("dashboard", "The web dashboard (HTML; asks for a token)", "HTML")},
        "/ui/static/{name}": {
            "get": {
                **_page("dashboardAsset", "The dashboard's script and style sheet", "The file"),
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            }
        },
        "/ui/api/session": {
            "get": _op(
                "dashboardSession",
                "Whether tokens are in use and what this token may do",
                {"200": _json(_ref("Session"), "The session.")},
                ("400",),
            )
        },
        "/ui/api/overview": {
            "get": _op(
                "dashboardOverview",
                "pgq.stats() and jobs finished per minute over the last hour",
                {"200": _json(_ref("Overview"), "The overview.")},
                ("400", "503"),
            )
        },
        "/ui/api/jobs/{id}/errors": {
            "get": _op(
                "jobErrors",
                "Every attempt's error of a job (job JSON has the last one)",
                {"200": _json(_ref("JobErrors"), "The errors, oldest first.")},
                ("400", "404", *_STORED, "503"),
                parameters=[_JOB_ID],
            )
        },
        "/livez": {"get": _probe("livez", "Liveness: the process serves (asks no database)")},
        "/health": {
            "get": _probe(
                "health", "Readiness: the database answers and the LISTEN connection is up"
            )
        },
        "/readyz": {"get": _probe("readyz", "Readiness, as /health")},
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
    _scopes(paths)
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
            "schemas": wire.schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on every operation with an x-pgq-scope when "
                    "PGQ_API_TOKENS is set: a reader, producer, worker or admin token (a "
                    "producer or worker token also reads; admin may do everything).",
                }
            },
        },
    }

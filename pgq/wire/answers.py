"""The HTTP API's answers (response bodies) as msgspec Structs.

They generate the OpenAPI document's response schemas (``pgq.wire.schemas``) and decode
the coordinator's answers in the HTTP runner and the tests; unlike requests, an answer
field may be ``null``. Every refusal is an ``Error``.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from . import limits as L
from .fields import (
    PAUSED,
    SCHEDULE_ARGUMENTS,
    CatchUp,
    Cron,
    JobId,
    QueueName,
    ScheduleName,
    Status,
    Time,
    TimeZone,
    TypeName,
)

# -- responses ----------------------------------------------------------------------------


class JobSummary(Struct, forbid_unknown_fields=True):
    """A job without its payloads (``arguments``, ``result``): what ``POST /jobs/batch``
    answers, so the answer to the largest batch stays small."""

    id: Annotated[int, Meta(ge=1)]
    type: TypeName
    queue: QueueName
    status: Status
    priority: int
    attempts: Annotated[
        int, Meta(ge=0, description="Claims so far: 0 before the first run, 1 during it.")
    ]
    max_attempts: Annotated[int, Meta(ge=1)]
    timeout_seconds: Annotated[int, Meta(ge=1)]
    run_at: Time
    created_at: Time
    updated_at: Time
    finished_at: Time | None
    worker_id: str | None
    lease_expires_at: Time | None
    idempotency_key: str | None
    error: Annotated[
        dict[str, Any] | None,
        Meta(
            description="The last error: `message`, `attempt`, `at`, and whatever else the "
            "runner reported (`kind` is `lease_expired` or `dependency` for failures pgq "
            "itself recorded)."
        ),
    ]
    depends_on: list[int] | None
    progress: Annotated[
        dict[str, Any] | None,
        Meta(
            description="The last progress a handler reported for the current attempt (any "
            "object up to 8 KiB), null before the first report."
        ),
    ]
    concurrency_key: Annotated[
        str | None,
        Meta(description="The key whose key_concurrency limit the job counts against, or null."),
    ]
    schedule: Annotated[
        str | None,
        Meta(description="The schedule that created the job (see /schedules), or null."),
    ]
    scheduled_for: Annotated[
        Time | None, Meta(description="The schedule slot the job was created for, or null.")
    ]


class Job(JobSummary, forbid_unknown_fields=True):
    """A job as the API shows it (``pgq.Job.to_json``)."""

    arguments: dict[str, Any]
    result: Annotated[
        Any, Meta(description="What the handler returned (any JSON), null until then.")
    ]


class Jobs(Struct, forbid_unknown_fields=True):
    """Jobs, in request order (batch create)."""

    jobs: list[Job]


class ClaimedJob(Job, forbid_unknown_fields=True):
    """A job as ``POST /jobs/claim`` hands it out: with the claim's secret ``lease_token``,
    which no other answer shows."""

    lease_token: Annotated[
        str,
        Meta(
            pattern=L.LEASE_TOKEN_PATTERN,
            description="Send it with complete, heartbeat and release; keep it secret.",
        ),
    ]
    trace_context: Annotated[
        dict[str, str] | None,
        Meta(
            description="The W3C trace context of the enqueue (`traceparent`, `tracestate`), "
            "for the runner's span of this attempt; null when the job has none."
        ),
    ] = None


class ClaimedJobs(Struct, forbid_unknown_fields=True):
    """The claimed jobs, in claim order."""

    jobs: list[ClaimedJob]


class Completed(Struct, forbid_unknown_fields=True):
    id: JobId
    completed: bool
    status: Status | None


class CompletedJobs(Struct, forbid_unknown_fields=True):
    """Per completion, in request order: whether it completed the job, and the job's status
    now (`null`: no such job). `completed: false` is the 409/404 of a single completion."""

    results: list[Completed]


class CreatedJobs(Struct, forbid_unknown_fields=True):
    """The jobs a batch created, in request order, without their payloads."""

    jobs: list[JobSummary]


class JobPage(Struct, forbid_unknown_fields=True):
    """A page of ``GET /jobs``."""

    jobs: list[Job]
    next: Annotated[
        int | None,
        Meta(description="Pass as `after` for the next page; null on the last page."),
    ]


class QueueCounts(Struct, forbid_unknown_fields=True):
    """Jobs of a queue per status."""

    waiting: Annotated[int, Meta(ge=0)]
    queued: Annotated[int, Meta(ge=0)]
    running: Annotated[int, Meta(ge=0)]
    succeeded: Annotated[int, Meta(ge=0)]
    dead: Annotated[int, Meta(ge=0)]
    cancelled: Annotated[int, Meta(ge=0)]


class Queue(Struct, forbid_unknown_fields=True):
    """A queue's flow control and job counts (``GET /queues/{queue}``); a limit of null
    means none."""

    queue: QueueName
    paused: bool
    concurrency: Annotated[int, Meta(ge=1)] | None
    key_concurrency: Annotated[int, Meta(ge=1)] | None
    rate: Annotated[float, Meta(description="Claims per second.")] | None
    burst: Annotated[int, Meta(ge=1, description="Token bucket size.")] | None
    counts: QueueCounts
    oldest_queued_at: Annotated[
        Time | None, Meta(description="The earliest run_at of its queued jobs, or null.")
    ]


class Queues(Struct, forbid_unknown_fields=True):
    """Every queue with jobs or settings, in name order."""

    queues: list[Queue]


class Schedule(Struct, forbid_unknown_fields=True):
    """A schedule as the API shows it (``pgq.schedules.Schedule.to_json``)."""

    name: ScheduleName
    cron: Cron
    timezone: TimeZone
    type: TypeName
    arguments: Annotated[dict[str, Any], Meta(description=SCHEDULE_ARGUMENTS)]
    queue: QueueName
    priority: Annotated[int, Meta(ge=L.PRIORITY_MIN, le=L.PRIORITY_MAX)]
    max_attempts: Annotated[int, Meta(ge=1, le=L.MAX_ATTEMPTS)]
    timeout_seconds: Annotated[int, Meta(ge=1, le=L.MAX_TIMEOUT_SECONDS)]
    catch_up: CatchUp
    paused: Annotated[bool, Meta(description=PAUSED)]
    next_run_at: Annotated[Time, Meta(description="The first slot not yet fired.")]
    last_run_at: Annotated[Time | None, Meta(description="The latest slot a job was created for.")]
    created_at: Time
    updated_at: Time


class Schedules(Struct, forbid_unknown_fields=True):
    """Every schedule, by name."""

    schedules: list[Schedule]


class Count(Struct, forbid_unknown_fields=True):
    """How many jobs a bulk action changed."""

    count: Annotated[int, Meta(ge=0)]


class Session(Struct, forbid_unknown_fields=True):
    """``GET /ui/api/session``: what the dashboard may show and do with this token."""

    tokens: Annotated[bool, Meta(description="Whether the coordinator requires tokens.")]
    scope: Annotated[str, Meta(description="This token's scope.")]
    can: Annotated[list[str], Meta(description="The dashboard's actions this scope may take.")]
    features: Annotated[
        dict[str, bool], Meta(description="Views whose API this coordinator serves.")
    ]


class StatsRow(Struct, forbid_unknown_fields=True):
    """One row of ``pgq.stats()``."""

    queue: QueueName
    status: Status
    count: Annotated[int, Meta(ge=0)]
    oldest_run_at: Time | None


class MinuteCount(Struct, forbid_unknown_fields=True):
    """Jobs that finished in one minute with one final status."""

    minute: Time
    status: Status
    count: Annotated[int, Meta(ge=0)]


class Overview(Struct, forbid_unknown_fields=True):
    """``GET /ui/api/overview``: ``pgq.stats()`` and the last hour's finished jobs per minute."""

    stats: list[StatsRow]
    finished_per_minute: list[MinuteCount]


class JobErrors(Struct, forbid_unknown_fields=True):
    """Every failed attempt's error of a job, oldest first (job JSON has the last one)."""

    errors: list[dict[str, Any]]


ERROR_CODES: tuple[str, ...] = (
    "invalid_json",
    "invalid_field",
    "invalid_argument",
    "unauthorized",
    "not_found",
    "job_not_found",
    "method_not_allowed",
    "transition_not_allowed",
    "lease_mismatch",
    "limit_exceeded",
    "payload_too_large",
    "unsupported_media_type",
    "unencodable",
    "database_unavailable",
    "database_busy",
    "listener_down",
)


class ErrorDetail(Struct, forbid_unknown_fields=True):
    code: Annotated[str, Meta(pattern="^[a-z][a-z_]*$", description=", ".join(ERROR_CODES))]
    message: Annotated[str, Meta(description="A sentence naming the field.")]


class Error(Struct, forbid_unknown_fields=True):
    """Every refusal: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail

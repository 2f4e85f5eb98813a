"""The HTTP API's request and response bodies as msgspec Structs.

Each Struct is at once the validator (``pgq.wire.request_body``), the source of its OpenAPI
component schema (``pgq.wire.schemas``) and what an HTTP runner encodes. ``UNSET`` marks a
field the sender left out: ``null`` is never a stand-in for an absent field, so no request
field is typed ``... | None``. The few rules that span fields live in ``__post_init__``
(and, for the OpenAPI document, in ``CROSS_FIELD_SCHEMAS``); their errors start with the
field they name so ``explain`` can point at it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from . import limits as L

# -- field types --------------------------------------------------------------------------
# ``extra`` is not part of the JSON Schema: ``rule`` is the wording of a pattern's refusal
# (``'X y' is invalid: <rule>``), ``problem`` replaces the whole refusal.


def _text(max_length: int, description: str | None = None) -> Meta:
    """A string of 1 to ``max_length`` characters without NUL (text columns cannot hold it)."""
    return Meta(
        min_length=1,
        max_length=max_length,
        pattern=L.NO_NUL_PATTERN,
        description=description,
        extra={"problem": L.NO_NUL_RULE},
    )


QueueName = Annotated[
    str, Meta(pattern=L.QUEUE_PATTERN, description=L.QUEUE_RULE, extra={"rule": L.QUEUE_RULE})
]
TypeName = Annotated[
    str, Meta(pattern=L.TYPE_PATTERN, description=L.TYPE_RULE, extra={"rule": L.TYPE_RULE})
]
WorkerId = Annotated[
    str,
    _text(
        L.MAX_WORKER_ID_LENGTH,
        "Who holds the job (any stable name of the runner process).",
    ),
]
Attempt = Annotated[
    int,
    Meta(
        ge=1,
        le=L.INT32_MAX,
        description="The attempt being reported (the claimed job's `attempts`): fences off a "
        "runner whose lease expired and whose job was claimed again.",
    ),
]
LeaseToken = Annotated[
    str,
    Meta(
        pattern=L.LEASE_TOKEN_PATTERN,
        description="The job's `lease_token` from the claim answer: proves the caller holds "
        "the lease (a wrong or stale one is 409 `lease_mismatch`).",
        extra={"problem": L.LEASE_TOKEN_RULE},
    ),
]
JobId = Annotated[int, Meta(ge=1, le=L.BIGINT_MAX)]
Priority = Annotated[
    int, Meta(ge=L.PRIORITY_MIN, le=L.PRIORITY_MAX, description="Smaller runs first.")
]
Status = Literal["waiting", "queued", "running", "succeeded", "dead", "cancelled"]
RunAt = Annotated[
    datetime,
    Meta(
        tz=True,
        description="RFC 3339 with an offset, 1970 to 9999.",
        extra_json_schema={"pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-"},
    ),
]
Time = datetime

_JSON_NOTE = (
    "Any JSON; strings and keys must not contain U+0000 (jsonb cannot store it) and values "
    f"nest at most {L.MAX_JSON_DEPTH} levels."
)
JsonObject = Annotated[dict[str, Any], Meta(description=_JSON_NOTE)]
JsonValue = Annotated[Any, Meta(description=_JSON_NOTE)]
ErrorMessage = Annotated[
    str,
    _text(L.MAX_ERROR_MESSAGE_LENGTH),
]


class _Body(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A request body: unknown fields refused; left-out defaults are not sent when encoded."""

    #: Fields holding arbitrary JSON, checked for NUL characters and depth after decoding.
    json_fields: ClassVar[tuple[str, ...]] = ()


# -- requests -----------------------------------------------------------------------------


class NewJob(_Body):
    """Give `run_at` or `delay_seconds`, not both; without either the job is due now.
    `null` is never accepted: leave a field out for its default."""

    json_fields: ClassVar[tuple[str, ...]] = ("arguments",)

    type: TypeName
    arguments: JsonObject | UnsetType = UNSET
    queue: QueueName = "default"
    priority: Priority = 0
    run_at: RunAt | UnsetType = UNSET
    delay_seconds: Annotated[float, Meta(ge=0, le=L.MAX_DELAY_SECONDS)] | UnsetType = UNSET
    max_attempts: Annotated[int, Meta(ge=1, le=L.MAX_ATTEMPTS)] = 10
    timeout_seconds: Annotated[
        int,
        Meta(
            ge=1,
            le=L.MAX_TIMEOUT_SECONDS,
            description="The lease is 1.25 × this, renewed by heartbeats.",
        ),
    ] = 300
    idempotency_key: (
        Annotated[
            str,
            _text(
                L.MAX_IDEMPOTENCY_KEY_LENGTH,
                "A second create with the same key answers 200 with the first job.",
            ),
        ]
        | UnsetType
    ) = UNSET
    depends_on: (
        Annotated[
            list[JobId],
            Meta(
                max_length=L.MAX_DEPENDS_ON,
                description="The job waits until all of these succeeded.",
            ),
        ]
        | UnsetType
    ) = UNSET
    concurrency_key: (
        Annotated[
            str,
            _text(
                L.MAX_CONCURRENCY_KEY_LENGTH,
                "Jobs with one key share their queue's key_concurrency limit.",
            ),
        ]
        | UnsetType
    ) = UNSET

    def __post_init__(self) -> None:
        if self.run_at is not UNSET:
            if self.delay_seconds is not UNSET:
                raise ValueError("delay_seconds: give run_at or delay_seconds, not both")
            if not L.RUN_AT_MIN <= self.run_at <= L.RUN_AT_MAX:
                raise ValueError(
                    "run_at: must be between 1970-01-01T00:00:00Z and 9999-12-31T00:00:00Z"
                )


class Batch(_Body):
    """Up to 10,000 jobs created at once, all or nothing."""

    jobs: Annotated[list[NewJob], Meta(min_length=1, max_length=L.MAX_BATCH_JOBS)]


class Claim(_Body):
    """Claim due jobs for a worker."""

    worker_id: WorkerId
    max_jobs: Annotated[int, Meta(ge=1, le=L.MAX_CLAIM_JOBS)] = 1
    queues: (
        Annotated[
            list[QueueName],
            Meta(
                min_length=1,
                max_length=L.MAX_FILTER_ITEMS,
                extra_json_schema={"default": ["default"]},
            ),
        ]
        | UnsetType
    ) = UNSET
    types: (
        Annotated[
            list[TypeName],
            Meta(
                min_length=1,
                max_length=L.MAX_FILTER_ITEMS,
                description="Only these job types (default: any).",
            ),
        ]
        | UnsetType
    ) = UNSET
    wait_seconds: Annotated[
        float,
        Meta(
            ge=0,
            le=L.MAX_WAIT_SECONDS,
            description="Hold the request until work arrives (woken by NOTIFY) or this many "
            "seconds pass; then answer with an empty list.",
        ),
    ] = 0.0


class Complete(_Body):
    """`success: true` may carry `result`; `success: false` may carry `error` (a string is
    stored as {"message": …}), `retryable` (default true: retried after a backoff while
    attempts remain; false: dead at once) and `retry_delay_seconds` (retry after this many
    seconds instead of the backoff)."""

    json_fields: ClassVar[tuple[str, ...]] = ("result", "error")

    worker_id: WorkerId
    success: bool
    lease_token: LeaseToken
    attempt: Attempt | UnsetType = UNSET
    result: JsonValue = UNSET
    error: ErrorMessage | dict[str, Any] | UnsetType = UNSET
    retryable: Annotated[bool, Meta(extra_json_schema={"default": True})] | UnsetType = UNSET
    retry_delay_seconds: (
        Annotated[
            float,
            Meta(
                ge=0,
                le=L.MAX_RETRY_DELAY_SECONDS,
                description="Seconds until the retry, instead of the backoff (0: at once).",
            ),
        ]
        | UnsetType
    ) = UNSET

    def __post_init__(self) -> None:
        if self.success:
            for name in ("error", "retryable", "retry_delay_seconds"):
                if getattr(self, name) is not UNSET:
                    raise ValueError(f"{name}: is only allowed with success: false")
        elif self.result is not UNSET:
            raise ValueError("result: is only allowed with success: true")


class Completion(_Body):
    """One job of a `CompleteBatch`, fenced like `POST /jobs/{id}/complete`."""

    json_fields: ClassVar[tuple[str, ...]] = ("result",)

    id: JobId
    lease_token: LeaseToken
    attempt: Attempt | UnsetType = UNSET
    result: JsonValue = UNSET


class CompleteBatch(_Body):
    """Up to 1,000 successes of one worker's jobs in one transaction. Each job is fenced on
    its own (worker, attempt, lease token): one that is no longer the worker's is skipped
    and reported, the others complete."""

    worker_id: WorkerId
    completions: Annotated[list[Completion], Meta(min_length=1, max_length=L.MAX_COMPLETE_BATCH)]


class Heartbeat(_Body):
    """Extend the lease of a claimed job."""

    worker_id: WorkerId
    lease_token: LeaseToken
    attempt: Attempt | UnsetType = UNSET


class Release(_Body):
    """Hand a claimed job back (runner shutdown). `reason` is stored like a failure's
    `error` (kind `released`); without it the job records "released by its runner"."""

    json_fields: ClassVar[tuple[str, ...]] = ("reason",)

    worker_id: WorkerId
    attempt: Attempt
    lease_token: LeaseToken
    reason: ErrorMessage | dict[str, Any] | UnsetType = UNSET


class Retry(_Body):
    """Replay a dead or cancelled job with extra attempts (the body is optional)."""

    extra_attempts: Annotated[int, Meta(ge=1, le=L.MAX_EXTRA_ATTEMPTS)] = 1


class Progress(_Body):
    """A handler's progress on a claimed job, fenced like a heartbeat (and extending the
    lease)."""

    json_fields: ClassVar[tuple[str, ...]] = ("progress",)

    worker_id: WorkerId
    lease_token: LeaseToken
    progress: Annotated[
        dict[str, Any],
        Meta(
            description=f"Any object of at most {L.MAX_PROGRESS_BYTES} bytes of JSON; the "
            'dashboard draws a bar for {"percent"} or {"done", "total"} and shows "message".'
        ),
    ]
    attempt: Attempt | UnsetType = UNSET

    def __post_init__(self) -> None:
        if len(msgspec.json.encode(self.progress)) > L.MAX_PROGRESS_BYTES:
            raise ValueError(f"progress: must be at most {L.MAX_PROGRESS_BYTES} bytes of JSON")


class _BulkFilter(_Body):
    queue: QueueName | UnsetType = UNSET
    type: TypeName | UnsetType = UNSET


class BulkRetry(_BulkFilter):
    """Replay every job in `statuses` (default dead) matching the filters."""

    statuses: (
        Annotated[
            list[Literal["dead", "cancelled"]],
            Meta(min_length=1, max_length=2, extra_json_schema={"default": ["dead"]}),
        ]
        | UnsetType
    ) = UNSET
    spread_seconds: (
        Annotated[
            float,
            Meta(
                ge=0,
                le=L.MAX_SPREAD_SECONDS,
                description="Spread the replays' run_at evenly over this many seconds from "
                "now (default 0: all at once).",
            ),
        ]
        | UnsetType
    ) = UNSET


class BulkCancel(_BulkFilter):
    """Cancel every job in `statuses` (default queued and waiting) matching the filters."""

    statuses: (
        Annotated[
            list[Literal["waiting", "queued", "running"]],
            Meta(min_length=1, max_length=3, extra_json_schema={"default": ["queued", "waiting"]}),
        ]
        | UnsetType
    ) = UNSET


Cron = Annotated[
    str,
    _text(
        L.MAX_CRON_LENGTH,
        "5 fields (minute hour day-of-month month day-of-week), or 6 with a "
        "leading second; *, lists, ranges, steps, month and day names, 0 or 7 for Sunday; or "
        "@yearly @annually @monthly @weekly @daily @midnight @hourly.",
    ),
]
TimeZone = Annotated[
    str,
    _text(
        L.MAX_TIMEZONE_LENGTH,
        "IANA time zone the slots are computed in. A local time that does not "
        "exist (DST starts) is skipped; one that occurs twice (DST ends) fires once.",
    ),
]
CatchUp = Annotated[
    Literal["latest", "all", "none"],
    Meta(
        description="Slots missed while nothing ran: latest = one job for the most recent, "
        "all = one per slot (1,000 per firing), none = only slots under 60 s old."
    ),
]
ScheduleName = Annotated[
    str,
    Meta(
        pattern=L.SCHEDULE_NAME_PATTERN,
        description=L.SCHEDULE_NAME_RULE,
        extra={"rule": L.SCHEDULE_NAME_RULE},
    ),
]
_SCHEDULE_ARGUMENTS = "The arguments of every job it creates."
_PAUSED = "A paused schedule creates no jobs."


class NewSchedule(_Body):
    """A schedule's definition (``PUT /schedules/{name}``): a left-out field takes
    pgq.schedule's default."""

    json_fields: ClassVar[tuple[str, ...]] = ("arguments",)

    cron: Cron
    type: TypeName
    arguments: (
        Annotated[
            dict[str, Any],
            Meta(description=_SCHEDULE_ARGUMENTS, extra_json_schema={"default": {}}),
        ]
        | UnsetType
    ) = UNSET
    queue: Annotated[QueueName, Meta(extra_json_schema={"default": "default"})] | UnsetType = UNSET
    timezone: Annotated[TimeZone, Meta(extra_json_schema={"default": "UTC"})] | UnsetType = UNSET
    catch_up: Annotated[CatchUp, Meta(extra_json_schema={"default": "latest"})] | UnsetType = UNSET
    priority: Priority | UnsetType = UNSET
    max_attempts: Annotated[int, Meta(ge=1, le=L.MAX_ATTEMPTS)] | UnsetType = UNSET
    timeout_seconds: Annotated[int, Meta(ge=1, le=L.MAX_TIMEOUT_SECONDS)] | UnsetType = UNSET
    paused: Annotated[bool, Meta(description=_PAUSED)] | UnsetType = UNSET


QueueLimit = Annotated[int, Meta(ge=1, le=L.MAX_QUEUE_LIMIT)]


class Limits(_Body):
    """Every limit of a queue at once; a field left out means no limit. `burst` (the token
    bucket's size, default ceil(rate)) needs `rate`."""

    concurrency: Annotated[QueueLimit, Meta(description="Running jobs at most.")] | UnsetType = (
        UNSET
    )
    key_concurrency: (
        Annotated[QueueLimit, Meta(description="Running jobs per concurrency_key at most.")]
        | UnsetType
    ) = UNSET
    rate: (
        Annotated[
            float,
            Meta(ge=L.MIN_RATE, le=L.MAX_QUEUE_LIMIT, description="Claims per second at most."),
        ]
        | UnsetType
    ) = UNSET
    burst: QueueLimit | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.burst is not UNSET and self.rate is UNSET:
            raise ValueError("burst: needs a rate")


# -- query strings ------------------------------------------------------------------------


class ListQuery(_Body):
    """``GET /jobs``: filters and one page."""

    status: Status | UnsetType = UNSET
    queue: QueueName | UnsetType = UNSET
    type: TypeName | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=1, le=L.MAX_LIST_LIMIT)] = L.DEFAULT_LIST_LIMIT
    after: (
        Annotated[
            int,
            Meta(
                ge=0,
                le=L.BIGINT_MAX,
                description="Only jobs with a larger id (the previous page's `next`).",
            ),
        ]
        | UnsetType
    ) = UNSET


class EventsQuery(_Body):
    """``GET /events``: only status changes of this queue and job type."""

    queue: QueueName | UnsetType = UNSET
    type: TypeName | UnsetType = UNSET


class WaitQuery(_Body):
    """``GET /jobs/{id}``: how long to wait for the job to finish."""

    wait: Annotated[
        float,
        Meta(
            ge=0,
            le=L.MAX_WAIT_SECONDS,
            description="Seconds to wait for the job to be succeeded, dead or cancelled "
            "(event-driven).",
        ),
    ] = 0.0


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
    arguments: Annotated[dict[str, Any], Meta(description=_SCHEDULE_ARGUMENTS)]
    queue: QueueName
    priority: Annotated[int, Meta(ge=L.PRIORITY_MIN, le=L.PRIORITY_MAX)]
    max_attempts: Annotated[int, Meta(ge=1, le=L.MAX_ATTEMPTS)]
    timeout_seconds: Annotated[int, Meta(ge=1, le=L.MAX_TIMEOUT_SECONDS)]
    catch_up: CatchUp
    paused: Annotated[bool, Meta(description=_PAUSED)]
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


#: Rules across fields, stated in JSON Schema for the OpenAPI document (msgspec states
#: each field alone); the ``__post_init__`` methods above enforce them.
CROSS_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "NewJob": {"not": {"required": ["run_at", "delay_seconds"]}},
    "Limits": {"dependentRequired": {"burst": ["rate"]}},
    "Complete": {
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
        ]
    },
}

"""The HTTP API's request bodies and query strings as msgspec Structs.

Each Struct is at once the validator (``pgq.wire.request_body``), the source of its OpenAPI
component schema (``pgq.wire.schemas``) and what an HTTP runner encodes. ``UNSET`` marks a
field the sender left out: ``null`` is never a stand-in for an absent field, so no request
field is typed ``... | None``. The few rules that span fields live in ``__post_init__``
(and, for the OpenAPI document, in ``CROSS_FIELD_SCHEMAS``); their errors start with the
field they name so ``explain`` can point at it. The answers are in ``answers``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from . import limits as L
from .fields import (
    PAUSED,
    SCHEDULE_ARGUMENTS,
    Attempt,
    CatchUp,
    Cron,
    ErrorMessage,
    JobId,
    JsonObject,
    JsonValue,
    LeaseToken,
    Priority,
    QueueName,
    RunAt,
    Status,
    TimeZone,
    TypeName,
    WorkerId,
    bounded_text,
)


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
            bounded_text(
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
            bounded_text(
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


class NewSchedule(_Body):
    """A schedule's definition (``PUT /schedules/{name}``): a left-out field takes
    pgq.schedule's default."""

    json_fields: ClassVar[tuple[str, ...]] = ("arguments",)

    cron: Cron
    type: TypeName
    arguments: (
        Annotated[
            dict[str, Any],
            Meta(description=SCHEDULE_ARGUMENTS, extra_json_schema={"default": {}}),
        ]
        | UnsetType
    ) = UNSET
    queue: Annotated[QueueName, Meta(extra_json_schema={"default": "default"})] | UnsetType = UNSET
    timezone: Annotated[TimeZone, Meta(extra_json_schema={"default": "UTC"})] | UnsetType = UNSET
    catch_up: Annotated[CatchUp, Meta(extra_json_schema={"default": "latest"})] | UnsetType = UNSET
    priority: Priority | UnsetType = UNSET
    max_attempts: Annotated[int, Meta(ge=1, le=L.MAX_ATTEMPTS)] | UnsetType = UNSET
    timeout_seconds: Annotated[int, Meta(ge=1, le=L.MAX_TIMEOUT_SECONDS)] | UnsetType = UNSET
    paused: Annotated[bool, Meta(description=PAUSED)] | UnsetType = UNSET


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

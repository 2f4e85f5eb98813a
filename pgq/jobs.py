"""``pgq.Job``: one row of ``pgq.jobs`` as Python sees it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

#: Statuses in the order a job usually moves through them (see sql/0001_jobs.sql).
STATUSES = ("waiting", "queued", "running", "succeeded", "dead", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "dead", "cancelled"})


# Not frozen: a frozen dataclass sets each of its 21 fields through object.__setattr__,
# which measured 100-130 ms per 20,000 jobs built on the enqueue and claim paths.
@dataclasses.dataclass(slots=True)
class Job:
    """A job, as read from the database.

    ``attempt`` counts claims: 0 before the first run, 1 during the first run. ``error`` is
    the last error (``errors`` holds one per failed attempt).
    """

    id: int
    type: str
    queue: str
    status: str
    args: dict[str, Any]
    priority: int
    run_at: datetime
    attempt: int
    max_attempts: int
    timeout_seconds: int
    worker_id: str | None = None
    claimed_at: datetime | None = None
    lease_expires_at: datetime | None = None
    result: Any = None
    error: Any = None
    errors: list[Any] = dataclasses.field(default_factory=list)
    idempotency_key: str | None = None
    depends_on: list[int] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    #: the last object a handler reported for this attempt (``pgq.progress``), or None
    progress: dict[str, Any] | None = None
    #: the pgq.schedules name and slot that created the job (None for other jobs)
    schedule: str | None = None
    scheduled_for: datetime | None = None
    concurrency_key: str | None = None
    #: the W3C trace context of its enqueue (``{"traceparent": …}``), which the runner's
    #: span continues (``pgq.tracing``); not part of the job's JSON
    trace_context: dict[str, str] | None = None
    #: in a ``transactional=True`` handler: the asyncpg connection whose open transaction
    #: also records the job's success (None elsewhere, and once the handler returned)
    connection: Any = dataclasses.field(default=None, repr=False, compare=False)
    #: set by the runner for its handler: how report_progress reaches the database or
    #: the coordinator (pgq.runner), None elsewhere
    reporter: Callable[[Job, dict[str, Any]], Coroutine[Any, Any, bool]] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    #: the runner's event loop, for ``report_progress_sync`` from a sync handler's thread
    loop: asyncio.AbstractEventLoop | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    async def report_progress(self, progress: dict[str, Any]) -> bool:
        """From a handler: store ``progress`` (a JSON object of at most 8 KiB, e.g.
        ``{"done": 3, "total": 10}``, ``{"percent": 30, "message": "…"}``) on the job, where
        the dashboard shows it as a bar, and extend the lease. The same call in both runner
        modes. Returns False when the job is no longer this runner's (cancelled, expired)."""
        if self.reporter is None:
            raise RuntimeError("report_progress works inside a pgq runner's handler only")
        return await self.reporter(self, progress)

    #: the secret of this claim (``pgq.claim`` mints one per job), which complete, fail,
    #: heartbeat, release and progress present; None when the job was not claimed by us.
    #: Never part of ``to_json`` nor of ``repr``.
    #: (Kept as the driver read it, a ``uuid.UUID`` from the database: no conversion on the
    #: claim path.)
    _lease_token: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def lease_token(self) -> str | None:
        """The lease token of the claim that handed this job out (None otherwise)."""
        return None if self._lease_token is None else str(self._lease_token)

    def report_progress_sync(self, progress: dict[str, Any]) -> bool:
        """``report_progress`` for a sync (plain ``def``) handler, from its thread: blocks
        until the report is stored (or refused)."""
        if self.reporter is None or self.loop is None:
            raise RuntimeError("report_progress_sync works inside a pgq runner's handler only")
        call = asyncio.run_coroutine_threadsafe(self.reporter(self, progress), self.loop)
        return call.result()

    @property
    def finished(self) -> bool:
        """True once the job is succeeded, dead or cancelled."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_record(cls, row: Any) -> Job:
        """Build a Job from a ``pgq.jobs`` row (an asyncpg Record or a mapping)."""
        return cls(
            id=row["id"],
            type=row["type"],
            queue=row["queue"],
            status=row["status"],
            args=row["args"],
            priority=row["priority"],
            run_at=row["run_at"],
            attempt=row["attempts"],
            max_attempts=row["max_attempts"],
            timeout_seconds=row["timeout_seconds"],
            worker_id=row["worker_id"],
            claimed_at=row["claimed_at"],
            lease_expires_at=row["lease_expires_at"],
            result=row["result"],
            error=row["last_error"],
            errors=row["errors"],
            idempotency_key=row["idempotency_key"],
            depends_on=list(row["depends_on"]) if row["depends_on"] is not None else None,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            progress=row.get("progress"),
            schedule=row.get("schedule"),
            scheduled_for=row.get("scheduled_for"),
            concurrency_key=row.get("concurrency_key"),
            trace_context=row.get("trace_context"),
            _lease_token=row.get("lease_token"),
        )

    def to_json(self) -> dict[str, Any]:
        """The job as the HTTP API shows it (datetimes stay datetimes; orjson formats them)."""
        return {
            "id": self.id,
            "type": self.type,
            "queue": self.queue,
            "status": self.status,
            "arguments": self.args,
            "priority": self.priority,
            "attempts": self.attempt,
            "max_attempts": self.max_attempts,
            "timeout_seconds": self.timeout_seconds,
            "run_at": self.run_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "worker_id": self.worker_id,
            "lease_expires_at": self.lease_expires_at,
            "idempotency_key": self.idempotency_key,
            "result": self.result,
            "error": self.error,
            "depends_on": self.depends_on,
            "progress": self.progress,
            "schedule": self.schedule,
            "scheduled_for": self.scheduled_for,
            "concurrency_key": self.concurrency_key,
        }

    def summary_json(self) -> dict[str, Any]:
        """``to_json`` without ``arguments`` and ``result`` (a batch's answer)."""
        out = self.to_json()
        del out["arguments"], out["result"]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """Rebuild a Job from the HTTP API's JSON (used by runners in HTTP mode)."""

        def ts(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            id=data["id"],
            type=data["type"],
            queue=data["queue"],
            status=data["status"],
            args=data.get("arguments") or {},
            priority=data.get("priority", 0),
            run_at=ts(data.get("run_at")),  # type: ignore[arg-type]
            attempt=data.get("attempts", 0),
            max_attempts=data.get("max_attempts", 10),
            timeout_seconds=data.get("timeout_seconds", 300),
            worker_id=data.get("worker_id"),
            lease_expires_at=ts(data.get("lease_expires_at")),
            result=data.get("result"),
            error=data.get("error"),
            idempotency_key=data.get("idempotency_key"),
            depends_on=data.get("depends_on"),
            created_at=ts(data.get("created_at")),
            updated_at=ts(data.get("updated_at")),
            finished_at=ts(data.get("finished_at")),
            progress=data.get("progress"),
            schedule=data.get("schedule"),
            scheduled_for=ts(data.get("scheduled_for")),
            concurrency_key=data.get("concurrency_key"),
            trace_context=data.get("trace_context"),
            _lease_token=data.get("lease_token"),
        )

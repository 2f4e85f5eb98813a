"""The seam between the runner's handler machinery and its transport.

``JobSource`` is where a ``Runner``'s jobs come from and where their outcomes go
(``DatabaseSource`` on PostgreSQL, ``HttpSource`` over the coordinator's HTTP API);
``RunnerHooks`` is what a source may ask of the runner that opened it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from ..jobs import Job
from ..schedules import ScheduleSpec

__all__ = ["HandlerTransaction", "JobSource", "RunnerHooks", "TransactionalSource"]


class RunnerHooks(Protocol):
    """What a ``JobSource`` may ask of the runner that opened it."""

    @property
    def worker_id(self) -> str: ...
    @property
    def queues(self) -> tuple[str, ...]: ...
    @property
    def job_types(self) -> tuple[str, ...]: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def transactional(self) -> bool:
        """Whether some handler is ``transactional=True`` (needs ``begin``)."""
        ...

    @property
    def schedules(self) -> tuple[ScheduleSpec, ...]:
        """Schedules declared in code; the source upserts them when it opens."""
        ...

    def held_jobs(self) -> Mapping[int, int]:
        """job id → attempt of every job this runner holds: claimed, its outcome not yet
        written (the handler may be running or done)."""
        ...

    def job_gone(self, job_id: int, status: str | None) -> None:
        """The job is no longer this runner's (cancelled, lease expired, claimed again):
        stop its handler and write nothing. ``status`` is its new status when known."""
        ...

    def reconnected(self) -> None:
        """The source reached its database or coordinator again after trouble: a claim
        that failed may succeed now (the runner cuts its backoff short)."""
        ...

    def stop(self) -> None:
        """Drain and stop the runner, as SIGTERM does: the source cannot go on (e.g. the
        coordinator refused its token)."""
        ...


class JobSource(Protocol):
    """Where a Runner's jobs come from and where their outcomes go.

    Transient trouble (the database or the coordinator is unreachable) is raised as
    ``pgq.DatabaseUnavailable``; the runner retries. A refusal because the job is no
    longer held by this worker at this attempt is *not* an exception: ``complete`` and
    ``fail`` report it in their return value, ``heartbeat`` returns False.
    """

    async def open(self, hooks: RunnerHooks) -> None:
        """Connect; return once wake-ups can be received (LISTEN is active)."""
        ...

    async def close(self) -> None: ...

    #: the most jobs one ``claim`` may ask for (what the other side accepts)
    max_claim: int

    async def claim(self, max_jobs: int) -> list[Job]:
        """Up to ``max_jobs`` (at most ``max_claim``) jobs of the hooks' queues and types,
        now held by this worker.

        Any wake-up received before this call is considered consumed by it."""
        ...

    async def wait_for_work(self) -> None:
        """Return when a claim may find work: a notification, a job becoming due, a safety
        re-check, a reconnect. Returns at once when a wake-up arrived since the last
        ``claim``. May return spuriously; the runner is cancelled out of it on stop."""
        ...

    def complete(self, job: Job, result: Any) -> Awaitable[tuple[bool, str | None]]:
        """Record success: (completed, the job's status afterwards, when known). May be a
        coroutine function or return a future (cheaper to shield than a coroutine)."""
        ...

    async def fail(
        self, job: Job, error: dict[str, Any], *, retryable: bool, retry_delay: float | None
    ) -> Job | None:
        """Record a failed attempt; the job afterwards (queued or dead), or None when the
        job was no longer held by this worker at this attempt."""
        ...

    async def release(self, job: Job, reason: dict[str, Any]) -> Job | None:
        """Hand the job back (shutdown) to run again at once without spending its attempt;
        the job afterwards, or None when it was no longer held by this worker at this
        attempt."""
        ...

    async def heartbeat(self, job: Job) -> bool:
        """Extend the lease; False when the job is no longer held (at this attempt)."""
        ...

    async def progress(self, job: Job, progress: dict[str, Any]) -> bool:
        """Store the handler's progress report (and extend the lease); False when the job
        is no longer held (at this attempt)."""
        ...

    def health(self) -> dict[str, Any]: ...


class HandlerTransaction(Protocol):
    """The open transaction of one attempt of a ``transactional=True`` handler (made by a
    source's ``begin(job)``; only ``DatabaseSource`` has one). Exactly one of ``complete``
    and ``rollback`` ends it, and either gives its connection back."""

    @property
    def connection(self) -> Any:
        """The asyncpg connection the handler writes through (``job.connection``)."""
        ...

    async def complete(self, result: Any) -> tuple[bool, str | None]:
        """Record success in the transaction and commit it: (True, "succeeded"), or
        (False, None) when the job is no longer held by this worker at this attempt (then
        everything is rolled back). Any other error rolls back and is raised."""
        ...

    async def rollback(self) -> None:
        """Roll back the handler's writes; never raises (a broken connection is closed)."""
        ...


class TransactionalSource(JobSource, Protocol):
    """A source that can run ``transactional=True`` handlers (the database source)."""

    async def begin(self, job: Job) -> HandlerTransaction:
        """Open the transaction of the job's attempt; its connection is ``job.connection``."""
        ...

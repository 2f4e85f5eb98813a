"""``pgq.Client``: enqueue and manage jobs from Python."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import asyncpg

from . import db, migrations, queries, tracing
from .backoff import reconnecting
from .config import database_url
from .errors import DatabaseUnavailable, translating
from .jobs import Job
from .listener import Listener
from .logs import log_event
from .waiting import JobWaits

log = logging.getLogger("pgq.client")

T = TypeVar("T")


class Client:
    """A connection pool to a pgq database, with one method per job operation.

    ::

        async with pgq.Client("postgresql://…") as client:
            job = await client.enqueue("TMDB_SYNC", {"movieId": 123})
            done = await client.wait(job.id, timeout=30)

    ``dsn`` defaults to ``PGQ_DATABASE_URL`` (then ``DATABASE_URL``). Pass ``connection=``
    to ``enqueue``/``enqueue_many`` to enqueue inside your own transaction: the job exists
    (and runners are woken) only if that transaction commits. Any asyncpg connection will
    do, with pgq's JSON codecs or without (the JSON is encoded per call). With
    OpenTelemetry installed, each job keeps the trace context current at the call
    (``pgq.tracing``).

    When the database cannot be reached, an enqueue with an ``idempotency_key`` is retried
    (backing off up to 1 s, for ``retry_seconds``, default 30): the key makes a repeat
    harmless, even of a commit whose reply was lost. Without a key (or with ``connection=``)
    it raises ``pgq.DatabaseUnavailable`` at once, since pgq cannot tell whether the job was
    created; retry it yourself if a duplicate is acceptable.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        min_size: int = 1,
        max_size: int = 10,
        retry_seconds: float = 30.0,
        **pool_kwargs: Any,
    ) -> None:
        self._dsn = database_url(dsn)
        self.retry_seconds = retry_seconds
        self._pool_args = {"min_size": min_size, "max_size": max_size, **pool_kwargs}
        self._pool: asyncpg.Pool | None = None
        self._listener: Listener | None = None
        self._job_waits: JobWaits | None = None

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the client is not open: use `async with Client(...)` or open()")
        return self._pool

    async def open(self) -> Client:
        if self._pool is None:
            with translating():  # an unreachable database is DatabaseUnavailable here too
                self._pool = await db.create_pool(self._dsn, **self._pool_args)
        return self

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
            self._job_waits = None
        if self._pool is not None:
            if not await db.close_pool(self._pool):
                log_event(
                    log,
                    "client.pool_close_timeout",
                    f"pool connections still in use {db.POOL_CLOSE_TIMEOUT:g}s into close(); "
                    "terminated them",
                    level=logging.WARNING,
                )
            self._pool = None

    async def __aenter__(self) -> Client:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- schema ---------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        with translating():
            async with self.pool.acquire() as conn:
                return await migrations.migrate(conn)

    # -- jobs -----------------------------------------------------------------------

    async def enqueue(
        self,
        job_type: str,
        args: dict[str, Any] | None = None,
        *,
        queue: str = "default",
        priority: int = 0,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
        max_attempts: int = 10,
        timeout_seconds: int = 300,
        idempotency_key: str | None = None,
        depends_on: Sequence[int] | None = None,
        concurrency_key: str | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> Job:
        """Create a job (``pgq.enqueue``); for a known ``idempotency_key``, the existing job.

        With a key (and no ``connection``), retried while the database cannot be reached
        (see the class docstring); without one, ``DatabaseUnavailable`` at once."""
        enqueue = functools.partial(
            queries.enqueue,
            job_type=job_type,
            args=args,
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay_seconds=delay_seconds,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            idempotency_key=idempotency_key,
            depends_on=depends_on,
            concurrency_key=concurrency_key,
            trace_context=tracing.current(),
        )
        if connection is not None:
            job, _created = await enqueue(connection)
        else:
            job, _created = await self._retrying(enqueue, retry=idempotency_key is not None)
        return job

    async def enqueue_many(
        self, jobs: Sequence[dict[str, Any]], *, connection: asyncpg.Connection | None = None
    ) -> list[Job]:
        """Create many jobs in one round trip, all or nothing.

        Each dict has ``type`` and any of ``args``, ``queue``, ``priority``, ``run_at`` or
        ``delay_seconds``, ``max_attempts``, ``timeout_seconds``, ``idempotency_key``,
        ``depends_on``, ``concurrency_key``. Retried like ``enqueue`` when every job has an
        idempotency key.
        """
        trace_context = tracing.current()
        if trace_context is not None:
            jobs = [{"trace_context": trace_context, **spec} for spec in jobs]
        if connection is not None:
            return await queries.enqueue_many(connection, jobs)
        keyed = bool(jobs) and all(
            isinstance(j, dict) and j.get("idempotency_key") is not None for j in jobs
        )
        return await self._retrying(functools.partial(queries.enqueue_many, jobs=jobs), retry=keyed)

    async def _retrying(self, call: Callable[[asyncpg.Pool], Awaitable[T]], *, retry: bool) -> T:
        """``call(pool)``; with ``retry``, again while the database cannot be reached, for
        up to ``retry_seconds``."""
        if not retry:
            return await call(self.pool)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        backoff = reconnecting()
        while True:
            try:
                return await call(self.pool)
            except DatabaseUnavailable:
                delay = backoff.next()
                if loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)

    async def get(self, job_id: int) -> Job | None:
        """The job, or None when there is no such job."""
        return await queries.get_job(self.pool, job_id)

    async def cancel(self, job_id: int) -> Job:
        """Cancel a waiting, queued or running job (a running handler is stopped)."""
        return await queries.cancel(self.pool, job_id)

    async def retry(self, job_id: int, extra_attempts: int = 1) -> Job:
        """Replay a dead or cancelled job now, with ``extra_attempts`` more attempts."""
        return await queries.retry(self.pool, job_id, extra_attempts)

    async def pause(self, queue: str) -> dict[str, Any]:
        """Pause a queue (``pgq.pause``): no claim hands out its jobs until ``resume``."""
        return await queries.pause(self.pool, queue)

    async def resume(self, queue: str) -> dict[str, Any]:
        """Resume a paused queue (``pgq.resume``); idle runners are woken at once."""
        return await queries.resume(self.pool, queue)

    async def set_limits(
        self,
        queue: str,
        *,
        concurrency: int | None = None,
        key_concurrency: int | None = None,
        rate: float | None = None,
        burst: int | None = None,
    ) -> dict[str, Any]:
        """Replace all four limits of a queue (``pgq.set_limits``; None = no limit)."""
        return await queries.set_limits(
            self.pool,
            queue,
            concurrency=concurrency,
            key_concurrency=key_concurrency,
            rate=rate,
            burst=burst,
        )

    async def queues(self) -> list[dict[str, Any]]:
        """Every queue with jobs or settings, as ``GET /queues`` shows it."""
        return await queries.list_queues(self.pool)

    async def stats(self) -> list[dict[str, Any]]:
        """Per queue and status: ``count`` and ``oldest_run_at``."""
        return await queries.stats(self.pool)

    async def prune(self, older_than_seconds: float) -> int:
        """Delete jobs that finished longer than ``older_than_seconds`` ago."""
        return await queries.prune(self.pool, older_than_seconds)

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until the job is succeeded, dead or cancelled, and return it.

        Event-driven: woken by the job's ``pgq_events`` notification, not by polling
        (``pgq.waiting.JobWaits``, the wait ``GET /jobs/{id}?wait=`` uses too). Raises
        ``TimeoutError`` when ``timeout`` seconds pass first, ``JobNotFound`` when there is
        no such job, ``DatabaseUnavailable`` when the database cannot be reached.
        """
        waits = await self._ensure_listener()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        job = await waits.wait(self.pool, job_id, deadline, ride_out_outages=False)
        if not job.finished:
            raise TimeoutError(f"job {job_id} did not finish within {timeout}s")
        return job

    async def _ensure_listener(self) -> JobWaits:
        if self._listener is None or self._job_waits is None:
            listener = Listener(self._dsn)
            self._job_waits = JobWaits(listener)
            self._listener = listener
            await listener.start()
        else:
            await self._listener.wait_connected(timeout=30)
        return self._job_waits

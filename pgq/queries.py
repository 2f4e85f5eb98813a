"""One async function per SQL function in ``sql/``: the only Python that holds SQL text.

Each function takes ``db``, anything with asyncpg's ``fetch``/``fetchrow``/``fetchval``
(a pool, a pool connection, a plain connection, possibly inside the caller's
transaction), and raises pgq's exceptions (``pgq.errors``) instead of asyncpg's.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, Protocol, TypeVar

import orjson

from .errors import InvalidArgument, translate
from .jobs import Job


class Executor(Protocol):
    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...
    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...


P = ParamSpec("P")
R = TypeVar("R")


def _translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Re-raise database errors as pgq exceptions (``pgq.errors.SQLSTATE_ERRORS``)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    return wrapper


@_translated
async def enqueue(
    db: Executor,
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
) -> tuple[Job, bool]:
    """``pgq.enqueue``. Returns the job and whether this call created it (False when an
    existing job was returned for its idempotency key). ``delay_seconds`` is counted on
    the database's clock; give it or ``run_at``, not both (as in ``pgq.enqueue_many``).

    "Created" is exact: ``pgq.enqueue`` always runs its INSERT, which draws the next id
    from the table's identity sequence even when ON CONFLICT then keeps the existing row,
    so the job is this call's own exactly when its id is the id this session drew last.
    (Comparing ``created_at`` with ``now()`` could not tell two transactions that started
    in the same microsecond apart, nor two enqueues in one transaction.)"""
    if run_at is not None and delay_seconds is not None:
        raise InvalidArgument("cannot enqueue: give run_at or delay_seconds, not both")
    if delay_seconds is not None and not delay_seconds >= 0:
        raise InvalidArgument(f"cannot enqueue: delay_seconds {delay_seconds} must be >= 0")
    row = await db.fetchrow(
        """
        SELECT j.*, j.id = currval('pgq.jobs_id_seq') AS created_now
          FROM pgq.enqueue($1, $2, $3, $4,
                           coalesce($5, now() + make_interval(secs => coalesce($6::float8, 0))),
                           $7, $8, $9, $10) AS j
        """,
        job_type,
        {} if args is None else args,
        queue,
        priority,
        run_at,
        delay_seconds,
        max_attempts,
        timeout_seconds,
        idempotency_key,
        list(depends_on) if depends_on is not None else None,
    )
    return Job.from_record(row), row["created_now"]


@_translated
async def enqueue_many(db: Executor, jobs: Sequence[dict[str, Any]]) -> list[Job]:
    """``pgq.enqueue_bulk`` or ``pgq.enqueue_many``: every job in one round trip, all or
    nothing, in input order.

    Each dict takes the keys of ``pgq.enqueue``'s keyword options plus ``type`` and ``args``.
    Jobs without ``idempotency_key`` and ``depends_on`` (the bulk case) go through
    ``pgq.enqueue_bulk``, which inserts them with one statement and returns only their ids
    (and run_at when it is not the creation time); the Jobs are built from the input as the
    database stores it (the JSON that was sent, decoded) plus those. Otherwise, or when a
    value only the database can convert was given (``"priority": "5"``), the full rows come
    back from ``pgq.enqueue_many``. The SQL functions check everything either way.
    """
    try:
        data = orjson.dumps(list(jobs))
    except orjson.JSONEncodeError as exc:
        raise InvalidArgument(f"cannot enqueue: jobs must be JSON-serializable ({exc})") from None
    fields = _bulk_fields(orjson.loads(data))
    if fields is None:
        rows = await db.fetch("SELECT * FROM pgq.enqueue_many($1)", orjson.Fragment(data))
        return [Job.from_record(r) for r in rows]
    row = await db.fetchrow(
        "SELECT ids, run_ats, created_at FROM pgq.enqueue_bulk($1)", orjson.Fragment(data)
    )
    created_at = row["created_at"]
    run_ats = row["run_ats"] or itertools.repeat(created_at)
    return [
        Job(
            id=job_id,
            type=job_type,
            queue=queue,
            status="queued",
            args=args,
            priority=priority,
            run_at=run_at,
            attempt=0,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            created_at=created_at,
            updated_at=created_at,
        )
        for job_id, run_at, (job_type, args, queue, priority, max_attempts, timeout_seconds) in zip(
            row["ids"], run_ats, fields, strict=False
        )
    ]


def _bulk_fields(specs: Any) -> list[tuple[str, dict[str, Any], str, int, int, int]] | None:
    """Per job (type, args, queue, priority, max_attempts, timeout_seconds) as the database
    will store them, for ``pgq.enqueue_bulk``; None when the jobs must go through
    ``pgq.enqueue_many``: one has an idempotency key or dependencies, or a value of a JSON
    type the database would convert (a number as a string, a type name as a number), which
    only the stored row shows. Anything the database refuses is not looked at here: the
    call fails before these values are used."""
    if type(specs) is not list:
        return None
    fields = []
    for spec in specs:
        if type(spec) is not dict:
            return None
        get = spec.get
        if get("idempotency_key") is not None or get("depends_on") is not None:
            return None
        job_type = get("type")
        queue = get("queue") or "default"
        priority = get("priority") or 0
        max_attempts = get("max_attempts") or 10
        timeout_seconds = get("timeout_seconds") or 300
        if (
            type(job_type) is not str
            or type(queue) is not str
            or type(priority) is not int
            or type(max_attempts) is not int
            or type(timeout_seconds) is not int
        ):
            return None
        fields.append((job_type, get("args") or {}, queue, priority, max_attempts, timeout_seconds))
    return fields


@_translated
async def claim(
    db: Executor,
    worker_id: str,
    max_jobs: int = 1,
    queues: Sequence[str] | None = None,
    job_types: Sequence[str] | None = None,
) -> list[Job]:
    """``pgq.claim``: up to ``max_jobs`` due jobs, now running and held by ``worker_id``."""
    rows = await db.fetch(
        "SELECT * FROM pgq.claim($1, $2, $3, $4)",
        worker_id,
        max_jobs,
        list(queues) if queues is not None else None,
        list(job_types) if job_types is not None else None,
    )
    return [Job.from_record(r) for r in rows]


@_translated
async def complete(
    db: Executor, job_id: int, worker_id: str, result: Any = None, attempt: int | None = None
) -> Job:
    """``pgq.complete``: running → succeeded, fenced by worker and attempt."""
    row = await db.fetchrow(
        "SELECT * FROM pgq.complete($1, $2, $3, $4)", job_id, worker_id, result, attempt
    )
    return Job.from_record(row)


@_translated
async def fail(
    db: Executor,
    job_id: int,
    worker_id: str,
    error: Any,
    *,
    retryable: bool = True,
    attempt: int | None = None,
    retry_delay: float | None = None,
) -> Job:
    """``pgq.fail``: running → queued after a backoff (or ``retry_delay`` seconds), or dead."""
    row = await db.fetchrow(
        "SELECT * FROM pgq.fail($1, $2, $3, $4, $5, $6::float8 * interval '1 second')",
        job_id,
        worker_id,
        error,
        retryable,
        attempt,
        retry_delay,
    )
    return Job.from_record(row)


@_translated
async def heartbeat(db: Executor, job_id: int, worker_id: str, attempt: int | None = None) -> Job:
    """``pgq.heartbeat``: extend the lease of a job this worker holds."""
    row = await db.fetchrow("SELECT * FROM pgq.heartbeat($1, $2, $3)", job_id, worker_id, attempt)
    return Job.from_record(row)


@_translated
async def cancel(db: Executor, job_id: int) -> Job:
    """``pgq.cancel``: waiting / queued / running → cancelled."""
    return Job.from_record(await db.fetchrow("SELECT * FROM pgq.cancel($1)", job_id))


@_translated
async def retry(db: Executor, job_id: int, extra_attempts: int = 1) -> Job:
    """``pgq.retry``: dead / cancelled → queued now, with ``extra_attempts`` more attempts."""
    row = await db.fetchrow("SELECT * FROM pgq.retry($1, $2)", job_id, extra_attempts)
    return Job.from_record(row)


@_translated
async def expire_leases(db: Executor) -> int:
    """``pgq.expire_leases``: fail every job whose lease ran out; returns how many."""
    return await db.fetchval("SELECT pgq.expire_leases()")


@_translated
async def next_due(
    db: Executor, queues: Sequence[str] | None = None, job_types: Sequence[str] | None = None
) -> tuple[datetime | None, datetime | None, datetime]:
    """``pgq.next_due``: (earliest run_at of claimable queued jobs, earliest lease expiry,
    the database's clock now), so a caller can turn both into delays on its own clock."""
    row = await db.fetchrow(
        "SELECT d.*, clock_timestamp() AS db_now FROM pgq.next_due($1, $2) AS d",
        list(queues) if queues is not None else None,
        list(job_types) if job_types is not None else None,
    )
    return row["next_run_at"], row["next_lease_expiry"], row["db_now"]


@_translated
async def stats(db: Executor) -> list[dict[str, Any]]:
    """``pgq.stats``: per queue and status, the count and the oldest run_at."""
    return [dict(r) for r in await db.fetch("SELECT * FROM pgq.stats()")]


@_translated
async def prune(db: Executor, older_than_seconds: float) -> int:
    """``pgq.prune``: delete jobs finished longer ago than ``older_than_seconds``."""
    return await db.fetchval(
        "SELECT pgq.prune($1::float8 * interval '1 second')", older_than_seconds
    )


@_translated
async def get_job(db: Executor, job_id: int) -> Job | None:
    """One job by id, or None."""
    row = await db.fetchrow("SELECT * FROM pgq.jobs WHERE id = $1", job_id)
    return Job.from_record(row) if row is not None else None


@_translated
async def get_jobs(db: Executor, job_ids: Sequence[int]) -> list[Job]:
    """The jobs with these ids that exist, in id order."""
    rows = await db.fetch(
        "SELECT * FROM pgq.jobs WHERE id = ANY($1::bigint[]) ORDER BY id", list(job_ids)
    )
    return [Job.from_record(r) for r in rows]


@_translated
async def list_jobs(
    db: Executor,
    *,
    status: str | None = None,
    queue: str | None = None,
    job_type: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs in id order, optionally filtered, starting after the id ``after``."""
    rows = await db.fetch(
        """
        SELECT * FROM pgq.jobs
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR queue = $2)
           AND ($3::text IS NULL OR type = $3)
           AND id > coalesce($4::bigint, 0)
         ORDER BY id
         LIMIT $5
        """,
        status,
        queue,
        job_type,
        after,
        limit,
    )
    return [Job.from_record(r) for r in rows]


@_translated
async def queue_depths(db: Executor) -> list[dict[str, Any]]:
    """For metrics: ``pgq.stats()`` plus the age of the oldest due queued job per queue."""
    rows = await db.fetch(
        """
        SELECT s.queue, s.status, s.count,
               CASE WHEN s.status = 'queued' AND s.oldest_run_at <= now()
                    THEN extract(epoch FROM now() - s.oldest_run_at) END AS oldest_due_age_seconds
          FROM pgq.stats() AS s
        """
    )
    return [dict(r) for r in rows]


@_translated
async def notification_queue_usage(db: Executor) -> float:
    """``pg_notification_queue_usage()``: how full Postgres's NOTIFY queue is (0..1)."""
    return await db.fetchval("SELECT pg_notification_queue_usage()")


@_translated
async def ping(db: Executor) -> None:
    """Round trip to the database; raises DatabaseUnavailable when it does not answer."""
    await db.fetchval("SELECT 1")


@_translated
async def complete_many(
    db: Executor,
    worker_id: str,
    job_ids: Sequence[int],
    attempts: Sequence[int | None],
    results: Sequence[Any] | None = None,
) -> list[tuple[int, bool, str | None]]:
    """``pgq.complete_many``: complete a batch of jobs held by ``worker_id``, each fenced by
    its attempt. Returns ``(job_id, completed, status)`` per job in input order; a job
    cancelled, expired or claimed again meanwhile is ``completed=False`` and fails nothing.
    ``results`` travel as one JSON array (a list result must not become an array dimension)."""
    rows = await db.fetch(
        "SELECT * FROM pgq.complete_many($1, $2, $3, $4)",
        worker_id,
        list(job_ids),
        list(attempts),
        list(results) if results is not None else None,
    )
    return [(r["job_id"], r["completed"], r["status"]) for r in rows]


async def expire_leases_detailed(conn: Any) -> list[Job]:
    """``pgq.expire_leases``, reporting which jobs this call expired and what became of them.

    ``conn`` is one asyncpg connection (not a pool): in one transaction the expired rows are
    locked first (SKIP LOCKED, as ``pgq.expire_leases`` does), then ``pgq.expire_leases()``
    runs, which treats rows this transaction locked as its own, then those rows are re-read
    (status ``queued`` with a backoff, or ``dead``). Rows another caller is expiring at the
    same moment are neither expired nor reported here.
    """
    try:
        async with conn.transaction():
            ids = await conn.fetch(
                """
                SELECT id FROM pgq.jobs
                 WHERE status = 'running' AND lease_expires_at < now()
                 ORDER BY lease_expires_at
                   FOR UPDATE SKIP LOCKED
                """
            )
            if not ids:
                return []
            await conn.fetchval("SELECT pgq.expire_leases()")
            rows = await conn.fetch(
                "SELECT * FROM pgq.jobs WHERE id = ANY($1::bigint[]) ORDER BY id",
                [r["id"] for r in ids],
            )
    except Exception as exc:
        translated = translate(exc)
        if translated is exc:
            raise
        raise translated from exc
    return [Job.from_record(r) for r in rows]


@_translated
async def finished_since(
    db: Executor, since: datetime | None, lag_seconds: float = 2.0
) -> dict[str, Any]:
    """For metrics: what finished in the window (``since``, ``until``], ``until`` being the
    database clock minus ``lag_seconds`` (a finishing transaction stamps ``finished_at``
    with its start time, so a lag lets slow commits land inside the next window, not
    before it).

    Returns ``until``; ``finished``: one row per job that finished in the window (``type``,
    ``queue``, ``status``, ``run_seconds`` = finished_at - claimed_at and
    ``start_latency_seconds`` = claimed_at - run_at, both NULL when it never ran); and
    ``retried``: per type, how many failed attempts in the window were scheduled for a
    retry (error entries stamped in the window, except the one that made a job dead).
    With ``since`` None only ``until`` is read. Cost: the finished_at index for the window,
    plus the queued and running jobs that have errors.
    """
    until = await db.fetchval(
        "SELECT clock_timestamp() - $1::float8 * interval '1 second'", lag_seconds
    )
    if since is None:
        return {"until": until, "finished": [], "retried": []}
    finished = await db.fetch(
        """
        SELECT type, queue, status,
               extract(epoch FROM finished_at - claimed_at)::float8 AS run_seconds,
               extract(epoch FROM claimed_at - run_at)::float8 AS start_latency_seconds
          FROM pgq.jobs
         WHERE finished_at > $1 AND finished_at <= $2
        """,
        since,
        until,
    )
    retried = await db.fetch(
        """
        SELECT j.type, count(*) AS count
          FROM pgq.jobs AS j
         CROSS JOIN LATERAL jsonb_array_elements(j.errors) AS e(entry)
         WHERE (j.status IN ('queued', 'running') OR j.finished_at > $1)
           AND j.errors <> '[]'::jsonb
           AND (e.entry->>'at')::timestamptz > $1
           AND (e.entry->>'at')::timestamptz <= $2
           AND NOT (j.status = 'dead' AND (e.entry->>'at')::timestamptz = j.finished_at)
         GROUP BY j.type
        """,
        since,
        until,
    )
    return {
        "until": until,
        "finished": [dict(r) for r in finished],
        "retried": [dict(r) for r in retried],
    }


@_translated
async def running_jobs_of(db: Executor, worker_id: str) -> list[Job]:
    """The running jobs ``worker_id`` holds, in id order (a runner looks for jobs it claimed
    but never heard back about, when a claim's reply was lost with its connection)."""
    rows = await db.fetch(
        "SELECT * FROM pgq.jobs WHERE status = 'running' AND worker_id = $1 ORDER BY id",
        worker_id,
    )
    return [Job.from_record(r) for r in rows]


@_translated
async def release(
    db: Executor, job_id: int, worker_id: str, reason: Any = None, attempt: int | None = None
) -> Job:
    """``pgq.release``: running → queued now, giving the attempt back (runner shutdown)."""
    row = await db.fetchrow(
        "SELECT * FROM pgq.release($1, $2, $3, $4)", job_id, worker_id, reason, attempt
    )
    return Job.from_record(row)


# -- the doorbell (sql/0008_doorbell.sql) ------------------------------------------------


@_translated
async def listen_idle(db: Executor, queues: Sequence[str], listener_pid: int) -> int:
    """``pgq.listen_idle``: register the LISTEN session ``listener_pid`` idle on ``queues``."""
    return await db.fetchval("SELECT pgq.listen_idle($1::text[], $2)", list(queues), listener_pid)


@_translated
async def unlisten_idle(db: Executor, queues: Sequence[str] | None, listener_pid: int) -> int:
    """``pgq.unlisten_idle``: deregister ``listener_pid`` from ``queues`` (None: all)."""
    return await db.fetchval(
        "SELECT pgq.unlisten_idle($1::text[], $2)",
        None if queues is None else list(queues),
        listener_pid,
    )


@_translated
async def wait_for_enqueuers(db: Executor, queues: Sequence[str]) -> bool:
    """``pgq.wait_for_enqueuers``: the barrier after ``listen_idle``; False on lock_timeout."""
    return await db.fetchval("SELECT pgq.wait_for_enqueuers($1::text[])", list(queues))


@_translated
async def forget_dead_listeners(db: Executor) -> int:
    """``pgq.forget_dead_listeners``: delete idle-listener rows of sessions that are gone."""
    return await db.fetchval("SELECT pgq.forget_dead_listeners()")

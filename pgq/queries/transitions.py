"""The state transitions of a job after it was created: claim, complete, fail, heartbeat,
release, cancel, retry, lease expiry and pruning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from ..jobs import Job
from .base import JOB_COLUMNS, Executor, translated


@translated
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


@translated
async def claim_many(
    db: Executor,
    worker_ids: Sequence[str],
    max_jobs: Sequence[int],
    queues: Sequence[str] | None = None,
    job_types: Sequence[str] | None = None,
) -> list[Job]:
    """``pgq.claim_many``: one claim for several workers with the same filters; each job is
    held by the worker it was dealt to (the first ``max_jobs[0]`` to ``worker_ids[0]``, and
    so on, in claim order)."""
    rows = await db.fetch(
        "SELECT * FROM pgq.claim_many($1, $2, $3, $4)",
        list(worker_ids),
        list(max_jobs),
        list(queues) if queues is not None else None,
        list(job_types) if job_types is not None else None,
    )
    return [Job.from_record(r) for r in rows]


@translated
async def complete(
    db: Executor,
    job_id: int,
    worker_id: str,
    result: Any = None,
    attempt: int | None = None,
    lease_token: str | None = None,
) -> Job:
    """``pgq.complete``: running → succeeded, fenced by worker, attempt and lease token."""
    row = await db.fetchrow(
        "SELECT * FROM pgq.complete($1, $2, $3, $4, $5)",
        job_id,
        worker_id,
        result,
        attempt,
        lease_token,
    )
    return Job.from_record(row)


@translated
async def complete_many(
    db: Executor,
    worker_id: str,
    job_ids: Sequence[int],
    attempts: Sequence[int | None],
    results: Sequence[Any] | None = None,
    lease_tokens: Sequence[str | None] | None = None,
) -> list[tuple[int, bool, str | None]]:
    """``pgq.complete_many``: complete a batch of jobs held by ``worker_id``, each fenced by
    its attempt and lease token. Returns ``(job_id, completed, status)`` per job in input
    order; a job cancelled, expired or claimed again meanwhile is ``completed=False`` and
    fails nothing.
    ``results`` travel as one JSON array (a list result must not become an array dimension)."""
    rows = await db.fetch(
        "SELECT * FROM pgq.complete_many($1, $2, $3, $4, $5)",
        worker_id,
        list(job_ids),
        list(attempts),
        list(results) if results is not None else None,
        list(lease_tokens) if lease_tokens is not None else None,
    )
    return [(r["job_id"], r["completed"], r["status"]) for r in rows]


#: One completion request: (job_id, worker_id, result, attempt, lease_token).
Completion = tuple[int, str, Any, int | None, str | None]


@translated
async def complete_grouped(pool: asyncpg.Pool, items: Sequence[Completion]) -> dict[int, Job]:
    """Complete the jobs of several workers in one transaction: one ``pgq.complete_each``
    (each job fenced by its own worker, attempt and lease token), then the completed jobs
    read back in the same transaction. Returns the completed jobs by id; a job that could
    not be completed (not running, another holder, another attempt or lease token) is
    absent and nothing else fails. Job ids must be distinct."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT * FROM pgq.complete_each($1, $2, $3, $4, $5)",
            [item[1] for item in items],
            [item[0] for item in items],
            [item[3] for item in items],
            [item[2] for item in items],
            [item[4] for item in items],
        )
        done = [r["job_id"] for r in rows if r["completed"]]
        rows = await conn.fetch(
            f"SELECT {JOB_COLUMNS} FROM pgq.jobs WHERE id = ANY($1::bigint[])", done
        )
    return {r["id"]: Job.from_record(r) for r in rows}


@translated
async def fail(
    db: Executor,
    job_id: int,
    worker_id: str,
    error: Any,
    *,
    retryable: bool = True,
    attempt: int | None = None,
    retry_delay: float | None = None,
    lease_token: str | None = None,
) -> Job:
    """``pgq.fail``: running → queued after a backoff (or ``retry_delay`` seconds), or dead."""
    row = await db.fetchrow(
        "SELECT * FROM pgq.fail($1, $2, $3, $4, $5, $6::float8 * interval '1 second', $7)",
        job_id,
        worker_id,
        error,
        retryable,
        attempt,
        retry_delay,
        lease_token,
    )
    return Job.from_record(row)


@translated
async def heartbeat(
    db: Executor,
    job_id: int,
    worker_id: str,
    attempt: int | None = None,
    lease_token: str | None = None,
) -> Job:
    """``pgq.heartbeat``: extend the lease of a job this worker holds."""
    row = await db.fetchrow(
        "SELECT * FROM pgq.heartbeat($1, $2, $3, $4)", job_id, worker_id, attempt, lease_token
    )
    return Job.from_record(row)


@translated
async def release(
    db: Executor,
    job_id: int,
    worker_id: str,
    reason: Any = None,
    attempt: int | None = None,
    lease_token: str | None = None,
) -> Job:
    """``pgq.release``: running → queued now, giving the attempt back (runner shutdown)."""
    row = await db.fetchrow(
        "SELECT * FROM pgq.release($1, $2, $3, $4, $5)",
        job_id,
        worker_id,
        reason,
        attempt,
        lease_token,
    )
    return Job.from_record(row)


@translated
async def cancel(db: Executor, job_id: int) -> Job:
    """``pgq.cancel``: waiting / queued / running → cancelled."""
    return Job.from_record(await db.fetchrow("SELECT * FROM pgq.cancel($1)", job_id))


@translated
async def retry(db: Executor, job_id: int, extra_attempts: int = 1) -> Job:
    """``pgq.retry``: dead / cancelled → queued now, with ``extra_attempts`` more attempts."""
    row = await db.fetchrow("SELECT * FROM pgq.retry($1, $2)", job_id, extra_attempts)
    return Job.from_record(row)


@translated
async def expire_leases(db: Executor) -> int:
    """``pgq.expire_leases``: fail every job whose lease ran out; returns how many."""
    return await db.fetchval("SELECT pgq.expire_leases()")


@translated
async def expire_leases_detailed(db: Executor) -> list[Job]:
    """``pgq.expire_leases_detailed``: fail every job whose lease ran out; returns them as
    they are now (queued with a backoff, or dead). Rows another caller is expiring at the
    same moment are neither expired nor returned here."""
    rows = await db.fetch("SELECT * FROM pgq.expire_leases_detailed()")
    return [Job.from_record(r) for r in rows]


@translated
async def prune_expired(db: Executor, max_rows: int = 10_000) -> dict[str, int]:
    """``pgq.prune_expired``: one batch of retention; how many jobs it deleted per status."""
    rows = await db.fetch("SELECT status, pruned FROM pgq.prune_expired($1)", max_rows)
    return {r["status"]: r["pruned"] for r in rows}


@translated
async def set_retention(db: Executor, status: str, keep_seconds: float | None) -> None:
    """``pgq.set_retention``: keep finished jobs of ``status`` this long (None: forever)."""
    await db.fetchval(
        "SELECT 1 FROM pgq.set_retention($1, $2::float8 * interval '1 second')",
        status,
        keep_seconds,
    )


@translated
async def prune(db: Executor, older_than_seconds: float) -> int:
    """``pgq.prune``: delete jobs finished longer ago than ``older_than_seconds``."""
    return await db.fetchval(
        "SELECT pgq.prune($1::float8 * interval '1 second')", older_than_seconds
    )

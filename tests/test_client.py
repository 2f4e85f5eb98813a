"""pgq.Client: enqueue, enqueue_many, get, cancel, retry, wait, and enqueueing inside the
caller's own transaction."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import pgq
from pgq import db, queries

from .support import free_port
from .zoo import ME


async def count_jobs(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM pgq.jobs")


async def test_enqueue_passes_every_option(client: pgq.Client, conn: asyncpg.Connection) -> None:
    parent = await client.enqueue("PARENT")
    job = await client.enqueue(
        "TMDB_SYNC",
        {"movieId": 123},
        queue="movies",
        priority=-5,
        delay_seconds=120,
        max_attempts=3,
        timeout_seconds=60,
        idempotency_key="movie-123",
        depends_on=[parent.id],
    )
    assert isinstance(job, pgq.Job)
    assert (job.type, job.args, job.queue, job.priority) == (
        "TMDB_SYNC",
        {"movieId": 123},
        "movies",
        -5,
    )
    assert (job.max_attempts, job.timeout_seconds, job.idempotency_key, job.depends_on) == (
        3,
        60,
        "movie-123",
        [parent.id],
    )
    assert (job.status, job.attempt) == ("waiting", 0)
    assert job.run_at - job.created_at == timedelta(seconds=120)  # on the database's clock
    again = await client.enqueue("TMDB_SYNC", queue="movies", idempotency_key="movie-123")
    assert again == job
    with pytest.raises(pgq.TransitionNotAllowed, match="idempotency_key 'movie-123'"):
        await client.enqueue("OTHER", idempotency_key="movie-123")
    at = job.created_at + timedelta(days=1)
    assert (await client.enqueue("LATER", run_at=at)).run_at == at
    assert await count_jobs(conn) == 3


async def test_enqueue_refuses_invalid_arguments(client: pgq.Client) -> None:
    with pytest.raises(pgq.InvalidArgument, match="queue 'Nope' is invalid"):
        await client.enqueue("t", queue="Nope")
    with pytest.raises(pgq.InvalidArgument, match="do not exist: 424242"):
        await client.enqueue("t", depends_on=[424242])
    # as in enqueue_many and the HTTP API: one of run_at and delay_seconds, never negative
    with pytest.raises(pgq.InvalidArgument, match="not both"):
        await client.enqueue("t", delay_seconds=5, run_at=datetime.now(UTC))
    for delay in (-1, float("nan")):
        with pytest.raises(pgq.InvalidArgument, match="delay_seconds"):
            await client.enqueue("t", delay_seconds=delay)
    with pytest.raises(pgq.InvalidArgument, match="out of range"):
        await client.enqueue("t", delay_seconds=float("inf"))


async def test_enqueue_many(client: pgq.Client, conn: asyncpg.Connection) -> None:
    jobs = await client.enqueue_many(
        [
            {"type": "TMDB_SYNC", "args": {"movieId": 1}, "priority": 5},
            {"type": "TMDB_SYNC", "args": {"movieId": 2}, "queue": "movies"},
        ]
    )
    assert [(j.args["movieId"], j.priority, j.queue) for j in jobs] == [
        (1, 5, "default"),
        (2, 0, "movies"),
    ]
    with pytest.raises(pgq.InvalidArgument, match=r"jobs\[1\]"):
        await client.enqueue_many([{"type": "ok"}, {"type": "bad type"}])
    assert await count_jobs(conn) == 2


async def test_get_cancel_retry(client: pgq.Client) -> None:
    job = await client.enqueue("t")
    assert await client.get(job.id) == job
    assert await client.get(job.id + 1000) is None

    cancelled = await client.cancel(job.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(pgq.TransitionNotAllowed, match="already finished"):
        await client.cancel(job.id)
    with pytest.raises(pgq.JobNotFound):
        await client.cancel(job.id + 1000)

    replayed = await client.retry(job.id, extra_attempts=2)
    assert (replayed.status, replayed.max_attempts) == ("queued", 2)
    with pytest.raises(pgq.TransitionNotAllowed, match="not dead or cancelled"):
        await client.retry(job.id)
    with pytest.raises(pgq.JobNotFound):
        await client.retry(job.id + 1000)


async def test_stats_and_prune(client: pgq.Client, conn: asyncpg.Connection) -> None:
    job = await client.enqueue("t")
    await client.enqueue("t", queue="q2")
    await client.cancel(job.id)
    assert [(r["queue"], r["status"], r["count"]) for r in await client.stats()] == [
        ("default", "cancelled", 1),
        ("q2", "queued", 1),
    ]
    assert await client.prune(3600) == 0
    assert await client.prune(0) == 1
    assert await count_jobs(conn) == 1


@pytest.mark.smoke
async def test_wait_is_woken_by_an_event_from_another_connection(
    client: pgq.Client, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter reads the job once (not finished), then sleeps until the job's pgq_events
    notification: the completion, done on another connection, wakes it for a second read."""
    job = await client.enqueue("t")
    reads: list[str] = []
    first_read = asyncio.Event()
    real_get_job = queries.get_job

    async def counting_get_job(executor: Any, job_id: int) -> pgq.Job | None:
        found = await real_get_job(executor, job_id)
        if job_id == job.id and found is not None:
            reads.append(found.status)
            first_read.set()
        return found

    monkeypatch.setattr(queries, "get_job", counting_get_job)
    waiter = asyncio.create_task(client.wait(job.id, timeout=30))
    await asyncio.wait_for(first_read.wait(), 10)
    assert reads == ["queued"]

    await queries.claim(conn, ME)
    await queries.complete(conn, job.id, ME, {"title": "Heat"})
    done = await waiter
    assert (done.status, done.result) == ("succeeded", {"title": "Heat"})
    assert reads == ["queued", "succeeded"]  # woken once, by the event
    assert client._job_waits is not None and client._job_waits.waiting == 0


async def test_wait_for_dead_and_cancelled_jobs_and_many_waiters(
    client: pgq.Client, conn: asyncpg.Connection
) -> None:
    doomed = await client.enqueue("t", max_attempts=1)
    cancelled = await client.enqueue("t", delay_seconds=60)
    waiters = [asyncio.create_task(client.wait(doomed.id, timeout=30)) for _ in range(3)]
    waiters.append(asyncio.create_task(client.wait(cancelled.id, timeout=30)))
    await queries.claim(conn, ME)
    await queries.fail(conn, doomed.id, ME, "boom")
    await queries.cancel(conn, cancelled.id)
    results = await asyncio.gather(*waiters)
    assert [j.status for j in results] == ["dead", "dead", "dead", "cancelled"]


async def test_wait_returns_a_finished_job_at_once(client: pgq.Client) -> None:
    job = await client.enqueue("t")
    await client.cancel(job.id)
    done = await client.wait(job.id, timeout=0)
    assert done.status == "cancelled"


async def test_wait_timeout_and_unknown_job(client: pgq.Client) -> None:
    job = await client.enqueue("t")
    with pytest.raises(TimeoutError, match=f"job {job.id} did not finish"):
        await client.wait(job.id, timeout=0)
    with pytest.raises(TimeoutError):
        await client.wait(job.id, timeout=0.05)
    with pytest.raises(pgq.JobNotFound):
        await client.wait(job.id + 1000, timeout=5)
    assert client._job_waits is not None and client._job_waits.waiting == 0


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_enqueue_inside_the_callers_transaction(
    client: pgq.Client, dsn: str, outcome: str
) -> None:
    own = await db.connect(dsn)
    observer = await db.connect(dsn)
    try:
        tx = own.transaction()
        await tx.start()
        job = await client.enqueue("t", {"x": 1}, connection=own)
        [batch] = await client.enqueue_many([{"type": "u"}], connection=own)
        assert await count_jobs(own) == 2
        assert await count_jobs(observer) == 0  # not visible before the commit
        assert await client.get(job.id) is None
        await (tx.commit() if outcome == "commit" else tx.rollback())
        expected = 2 if outcome == "commit" else 0
        assert await count_jobs(observer) == expected
        assert (await client.get(batch.id) is not None) == (outcome == "commit")
    finally:
        await own.close()
        await observer.close()


async def test_a_closed_client_says_so(dsn: str) -> None:
    client = pgq.Client(dsn)
    with pytest.raises(RuntimeError, match="not open"):
        await client.enqueue("t")
    async with client:
        assert (await client.enqueue("t")).status == "queued"
    with pytest.raises(RuntimeError, match="not open"):
        await client.get(1)


async def test_an_unreachable_or_closed_database_is_database_unavailable(dsn: str) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(pgq.DatabaseUnavailable):
        await pgq.Client(f"postgresql://postgres@127.0.0.1:{port}/postgres").open()
    async with pgq.Client(dsn) as client:
        pool = client.pool
        await pool.close()  # asyncpg: InterfaceError "pool is closed"
        with pytest.raises(pgq.DatabaseUnavailable):
            await client.enqueue("t")
        with pytest.raises(pgq.DatabaseUnavailable):
            await client.migrate()

"""pgq.release: a runner hands a job back without spending its attempt."""

from __future__ import annotations

import asyncpg
import pytest

from pgq import queries
from pgq.errors import JobNotFound, TransitionNotAllowed


async def test_release_on_the_last_attempt_queues_the_job_again_instead_of_dead(
    conn: asyncpg.Connection,
) -> None:
    job, _ = await queries.enqueue(conn, "X", max_attempts=1)
    [claimed] = await queries.claim(conn, "w1")
    released = await queries.release(conn, job.id, "w1", "shutting down", attempt=1)
    assert (released.status, released.attempt, released.max_attempts) == ("queued", 1, 2)
    assert released.lease_expires_at is None
    assert released.errors[-1]["kind"] == "released" and released.error == released.errors[-1]
    assert released.errors[-1]["message"] == "shutting down"
    assert released.errors[-1]["attempt"] == 1
    assert await conn.fetchval("SELECT run_at <= now() FROM pgq.jobs WHERE id = $1", job.id)
    [again] = await queries.claim(conn, "w2")
    assert (again.id, again.attempt) == (claimed.id, 2)


async def test_release_is_fenced_like_complete(conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X")
    await queries.claim(conn, "w1")
    with pytest.raises(TransitionNotAllowed, match="not held by worker 'w2'"):
        await queries.release(conn, job.id, "w2")
    with pytest.raises(TransitionNotAllowed, match="on attempt 1, not attempt 2"):
        await queries.release(conn, job.id, "w1", attempt=2)
    with pytest.raises(JobNotFound):
        await queries.release(conn, 999_999, "w1")
    row = await conn.fetchrow("SELECT status, max_attempts FROM pgq.jobs WHERE id = $1", job.id)
    assert tuple(row) == ("running", 10)
    await queries.release(conn, job.id, "w1", attempt=1)
    with pytest.raises(TransitionNotAllowed, match="not running"):
        await queries.release(conn, job.id, "w1")


async def test_release_wakes_the_queue(dsn: str, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X")
    await queries.claim(conn, "w1")
    got: list[str] = []
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener("pgq_default", lambda *a: got.append(a[2]))
        await listener.add_listener("sentinel", lambda *a: got.append(a[2]))
        await queries.release(conn, job.id, "w1")
        await conn.execute("NOTIFY sentinel")
        # notifications arrive in commit order: the sentinel comes after any wake-up
        await listener.execute("SELECT 1")
        for _ in range(200):
            if "sentinel" in got:
                break
            await listener.execute("SELECT pg_sleep(0.005)")
        assert got == ["pgq_default", "sentinel"]
    finally:
        await listener.close()

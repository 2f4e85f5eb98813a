"""pgq.claim under concurrency: many claimers on separate connections never share a job,
and a row another transaction has locked is skipped, never waited on."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgq import db, queries

from .zoo import bulk_insert, rows_read

JOBS = 5_000
CLAIMERS = 20


@pytest.fixture
async def claimer_conns(dsn: str) -> AsyncIterator[list[asyncpg.Connection]]:
    conns = await asyncio.gather(*(db.connect(dsn) for _ in range(CLAIMERS)))
    try:
        yield list(conns)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def claim_until_empty(
    conn: asyncpg.Connection, worker: str, batch: int, queues: list[str] | None = None
) -> list[int]:
    got: list[int] = []
    while jobs := await queries.claim(conn, worker, batch, queues):
        assert all(j.worker_id == worker and j.attempt == 1 for j in jobs)
        got.extend(j.id for j in jobs)
    return got


@pytest.mark.parametrize(
    ("batch", "queues"),
    [(1, None), (7, None), (7, ["q0", "q1", "q2"])],
    ids=["one-at-a-time", "batches", "batches-over-three-queues"],
)
async def test_twenty_claimers_never_get_the_same_job(
    conn: asyncpg.Connection,
    claimer_conns: list[asyncpg.Connection],
    batch: int,
    queues: list[str] | None,
) -> None:
    n = JOBS if batch > 1 else JOBS // 5  # one-at-a-time: 1,000 jobs keep the test quick
    created = await queries.enqueue_many(
        conn,
        [
            {"type": "t", "args": {"i": i}, "queue": f"q{i % 3}" if queues else "default"}
            for i in range(n)
        ],
    )
    start = asyncio.Event()

    async def claimer(i: int, c: asyncpg.Connection) -> list[int]:
        await start.wait()
        return await claim_until_empty(c, f"w{i}", batch, queues)

    tasks = [asyncio.create_task(claimer(i, c)) for i, c in enumerate(claimer_conns)]
    start.set()
    per_claimer = await asyncio.gather(*tasks)

    everything = [job_id for ids in per_claimer for job_id in ids]
    duplicates = [job_id for job_id, k in Counter(everything).items() if k > 1]
    assert duplicates == []
    assert sorted(everything) == sorted(j.id for j in created)
    # the work was actually shared, so the claims really did race
    assert sum(1 for ids in per_claimer if ids) > 1
    rows = await conn.fetch(
        "SELECT worker_id, count(*) AS n FROM pgq.jobs"
        " WHERE status = 'running' AND attempts = 1 GROUP BY worker_id"
    )
    assert {r["worker_id"]: r["n"] for r in rows} == {
        f"w{i}": len(ids) for i, ids in enumerate(per_claimer) if ids
    }


@pytest.mark.smoke
async def test_a_row_locked_by_another_transaction_is_skipped_not_waited_on(
    dsn: str, conn: asyncpg.Connection
) -> None:
    first, second, third = await queries.enqueue_many(conn, [{"type": "t"}] * 3)
    holder = await db.connect(dsn)
    claimer = await db.connect(dsn)
    try:
        # a statement that waited on the lock would fail after 2 s, and wait_for as well
        await claimer.execute("SET statement_timeout = '2s'")
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM pgq.jobs WHERE id = $1 FOR UPDATE", first.id)
            got = await asyncio.wait_for(queries.claim(claimer, "b", 1), 5)
            assert [j.id for j in got] == [second.id]  # the first in claim order is locked
            got = await asyncio.wait_for(queries.claim(claimer, "b", 10), 5)
            assert [j.id for j in got] == [third.id]
            got = await asyncio.wait_for(queries.claim(claimer, "b", 10), 5)
            assert got == []  # only the locked row is left: nothing, at once
            status = await conn.fetchval("SELECT status FROM pgq.jobs WHERE id = $1", first.id)
            assert status == "queued"
        got = await asyncio.wait_for(queries.claim(claimer, "b", 10), 5)
        assert [j.id for j in got] == [first.id]  # lock released: claimable again
    finally:
        await holder.close()
        await claimer.close()


async def test_a_claim_in_an_open_transaction_hides_its_jobs_from_other_claimers(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """Two claims in flight: the first is not committed yet, the second skips its rows and
    takes the next ones; after a rollback of the first, its jobs are claimable again."""
    await queries.enqueue_many(conn, [{"type": "t"} for _ in range(4)])
    a, b = await db.connect(dsn), await db.connect(dsn)
    try:
        await b.execute("SET statement_timeout = '2s'")
        tx = a.transaction()
        await tx.start()
        got_a = await queries.claim(a, "a", 2)
        got_b = await asyncio.wait_for(queries.claim(b, "b", 10), 5)
        assert {j.id for j in got_a}.isdisjoint(j.id for j in got_b)
        assert len(got_b) == 2
        await tx.rollback()
        got_b2 = await queries.claim(b, "b", 10)
        assert sorted(j.id for j in got_b2) == sorted(j.id for j in got_a)
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize(
    "queues", [["default"], ["default", "other"], None], ids=["one", "two", "all"]
)
async def test_claim_reads_a_few_rows_whatever_the_backlog(
    conn: asyncpg.Connection, queues: list[str] | None
) -> None:
    """A claim walks the claim index in claim order and stops: it never scans and sorts
    the backlog, so its cost does not grow with the number of queued jobs."""
    await bulk_insert(
        conn,
        30_000,
        queue="CASE WHEN n % 3 = 0 THEN 'other' ELSE 'default' END",
        priority="n % 5",
    )
    jobs, seq, idx = await rows_read(conn, queries.claim(conn, "w", 5, queues))
    assert len(jobs) == 5 and {j.priority for j in jobs} == {0}
    assert seq == 0, f"claim scanned {seq} rows of pgq.jobs sequentially"
    assert idx <= 50, f"claim fetched {idx} rows through indexes"

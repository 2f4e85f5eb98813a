"""pgq.complete_many (sql/0004_runner.sql): the runner's batched acknowledgement."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

import pgq
from pgq import db, queries


async def make(conn: asyncpg.Connection, job_type: str = "T", **kw) -> int:
    job, _ = await queries.enqueue(conn, job_type, **kw)
    return job.id


async def claim_one(conn: asyncpg.Connection, job_id: int, worker: str) -> None:
    """Claim exactly this job for ``worker`` (its own type makes it the only candidate)."""
    job_type = (await conn.fetchrow("SELECT type FROM pgq.jobs WHERE id = $1", job_id))["type"]
    [job] = await queries.claim(conn, worker, 1, job_types=[job_type])
    assert job.id == job_id


async def snapshot(conn: asyncpg.Connection) -> dict[int, tuple]:
    rows = await conn.fetch(
        "SELECT id, status, worker_id, attempts, result, updated_at FROM pgq.jobs"
    )
    return {r["id"]: tuple(r) for r in rows}


async def test_completes_what_this_worker_holds_and_skips_the_rest(conn) -> None:
    mine = await make(conn, "MINE")
    mine_too = await make(conn, "MINE_TOO")
    stale = await make(conn, "STALE", max_attempts=3)
    theirs = await make(conn, "THEIRS")
    cancelled = await make(conn, "CANCELLED")
    queued = await make(conn, "QUEUED")
    for job_id in (mine, mine_too, stale, cancelled):
        await claim_one(conn, job_id, "w")
    await claim_one(conn, theirs, "other")
    await queries.cancel(conn, cancelled)
    # the stale attempt: our lease ran out and we claimed the job again (attempt 2)
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1", stale
    )
    await conn.fetchval("SELECT pgq.expire_leases()")
    await conn.execute("UPDATE pgq.jobs SET run_at = now() WHERE id = $1", stale)
    await claim_one(conn, stale, "w")
    before = await snapshot(conn)

    rows = await queries.complete_many(
        conn,
        "w",
        [mine, stale, theirs, cancelled, queued, 999_999, mine_too],
        [1, 1, 1, 1, 0, 1, None],  # stale: attempt 1 is over; None: any attempt
        [{"a": 1}, "x", "x", "x", "x", "x", [1, 2]],
    )
    assert rows == [
        (mine, True, "succeeded"),
        (stale, False, "running"),
        (theirs, False, "running"),
        (cancelled, False, "cancelled"),
        (queued, False, "queued"),
        (999_999, False, None),
        (mine_too, True, "succeeded"),
    ]
    after = await snapshot(conn)
    changed = {job_id for job_id in before if before[job_id] != after[job_id]}
    assert changed == {mine, mine_too}
    done = await queries.get_jobs(conn, [mine, mine_too])
    assert [(j.status, j.result, j.lease_expires_at is None) for j in done] == [
        ("succeeded", {"a": 1}, True),
        ("succeeded", [1, 2], True),
    ]
    assert all(j.finished_at is not None for j in done)


async def test_without_results_the_results_are_null_and_empty_batches_are_fine(conn) -> None:
    job_id = await make(conn)
    await claim_one(conn, job_id, "w")
    assert await queries.complete_many(conn, "w", [job_id], [1]) == [(job_id, True, "succeeded")]
    assert (await queries.get_job(conn, job_id)).result is None
    assert await queries.complete_many(conn, "w", [], []) == []


async def test_completing_parents_releases_their_waiting_dependents(conn) -> None:
    a = await make(conn, "A")
    b = await make(conn, "B")
    c = await make(conn, "C")
    both = await make(conn, "CHILD", depends_on=[a, b])
    needs_c = await make(conn, "CHILD", depends_on=[a, c])
    for job_id in (a, b):
        await claim_one(conn, job_id, "w")
    await queries.complete_many(conn, "w", [a, b], [1, 1])
    jobs = {j.id: j.status for j in await queries.get_jobs(conn, [both, needs_c])}
    assert jobs == {both: "queued", needs_c: "waiting"}


@pytest.mark.parametrize(
    ("worker", "ids", "attempts", "results", "message"),
    [
        ("", [1], [1], None, "worker_id"),
        ("w", [1, 2], [1], None, "one entry per job"),
        ("w", [1], [1], [{}, {}], "one entry per job"),
        ("w", [None], [1], None, "NULL"),
        ("w", list(range(10_001)), [1] * 10_001, None, "at most 10000"),
    ],
)
async def test_invalid_arguments_are_refused_with_pq400(
    conn, worker, ids, attempts, results, message
) -> None:
    with pytest.raises(pgq.InvalidArgument, match=message) as refused:
        await queries.complete_many(conn, worker, ids, attempts, results)
    assert refused.value.__cause__.sqlstate == "PQ400"


async def test_one_event_per_completed_job_and_none_for_skipped(dsn, conn) -> None:
    done_ids = [await make(conn, f"T{i}") for i in range(3)]
    skipped = await make(conn, "SKIP")
    for job_id in done_ids:
        await claim_one(conn, job_id, "w")
    listener = await db.connect(dsn)
    events: asyncio.Queue[dict] = asyncio.Queue()
    await listener.add_listener("pgq_events", lambda *a: events.put_nowait(orjson.loads(a[3])))
    try:
        await queries.complete_many(conn, "w", [*done_ids, skipped], [1, 1, 1, 0])
        got = [await asyncio.wait_for(events.get(), 5) for _ in done_ids]
        assert sorted(e["id"] for e in got) == done_ids
        assert {e["status"] for e in got} == {"succeeded"}
        await conn.execute('NOTIFY pgq_events, \'{"id": 0, "status": "marker"}\'')
        assert (await asyncio.wait_for(events.get(), 5))["id"] == 0  # nothing in between
    finally:
        await listener.close()


async def test_the_function_is_documented(conn) -> None:
    comment = await conn.fetchval(
        "SELECT obj_description("
        "'pgq.complete_many(text, bigint[], integer[], jsonb, uuid[])'::regprocedure)"
    )
    assert comment.startswith("complete_many: running → succeeded")


async def test_complete_each_fences_every_job_by_its_own_worker(conn) -> None:
    a1, a2, b1, c1 = [await make(conn, f"E{i}") for i in range(4)]
    for job_id, worker in ((a1, "a"), (a2, "a"), (b1, "b"), (c1, "c")):
        await claim_one(conn, job_id, worker)
    tokens = dict(await conn.fetch("SELECT id, lease_token FROM pgq.jobs"))
    rows = await conn.fetch(
        "SELECT * FROM pgq.complete_each($1, $2, $3, $4, $5)",
        ["a", "b", "a", "b"],  # c1 is not b's: skipped, not refused
        [a1, b1, a2, c1],
        [1, 1, 1, 1],
        [{"a": 1}, None, [2], None],
        [str(tokens[a1]), str(tokens[b1]), str(tokens[a2]), str(tokens[c1])],
    )
    assert [tuple(r) for r in rows] == [
        (a1, True, "succeeded"),
        (b1, True, "succeeded"),
        (a2, True, "succeeded"),
        (c1, False, "running"),
    ]
    results = dict(await conn.fetch("SELECT id, result FROM pgq.jobs"))
    assert (results[a1], results[b1], results[a2]) == ({"a": 1}, None, [2])
    holder = await conn.fetchval("SELECT worker_id FROM pgq.jobs WHERE id = $1", c1)
    assert holder == "c"


@pytest.mark.parametrize(
    ("workers", "message"), [(["a"], "one entry per job"), (["a", ""], "worker_id"), (None, "one")]
)
async def test_complete_each_refuses_bad_worker_lists(conn, workers, message) -> None:
    ids = [await make(conn, f"R{i}") for i in range(2)]
    with pytest.raises(asyncpg.PostgresError, match=message) as refused:
        await conn.fetch("SELECT * FROM pgq.complete_each($1, $2, $3)", workers, ids, [1, 1])
    assert refused.value.sqlstate == "PQ400"

"""sql/0007_progress.sql: pgq.progress, pgq.retry_where, pgq.cancel_where, and the job
list's indexes (a filtered page reads about a page of rows at any table size)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgq import queries
from pgq.errors import InvalidArgument, JobNotFound, TransitionNotAllowed

from .zoo import ME, OTHER, Inbox, db_delta, event, expect_refusal, rows_read

EVENTS = "pgq_events"


@pytest.fixture
async def inbox(dsn: str) -> AsyncIterator[Inbox]:
    box = await Inbox.open(dsn, EVENTS)
    try:
        yield box
    finally:
        await box.close()


async def running_job(conn: asyncpg.Connection, **options: object) -> int:
    job, _ = await queries.enqueue(conn, "REPORTER", **options)
    [claimed] = await queries.claim(conn, ME, 1, job_types=["REPORTER"])
    assert claimed.id == job.id
    return job.id


# -- pgq.progress -----------------------------------------------------------------------


async def test_progress_is_stored_extends_the_lease_and_is_announced(
    conn: asyncpg.Connection, inbox: Inbox
) -> None:
    job_id = await running_job(conn, timeout_seconds=100)
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() + interval '1 second' WHERE id = $1", job_id
    )
    await inbox.drain(conn, [EVENTS])

    job = await queries.progress(conn, job_id, ME, {"done": 3, "total": 10}, attempt=1)
    assert job.progress == {"done": 3, "total": 10}
    assert job.status == "running"
    lease = await db_delta(conn, "lease_expires_at", job_id)
    assert 120 < lease.total_seconds() <= 125  # 1.25 × timeout from now, like a heartbeat
    received = await inbox.drain(conn, [EVENTS])
    assert [event(p) for _, p in received] == [
        {
            "id": job_id,
            "status": "running",
            "queue": "default",
            "type": "REPORTER",
            "event": "progress",
        }
    ]
    assert (await queries.get_job(conn, job_id)).progress == {"done": 3, "total": 10}


async def test_progress_is_fenced_like_a_heartbeat(conn: asyncpg.Connection) -> None:
    job_id = await running_job(conn)
    await expect_refusal(
        queries.progress(conn, job_id, OTHER, {"n": 1}), TransitionNotAllowed, "PQ409", OTHER
    )
    await expect_refusal(
        queries.progress(conn, job_id, ME, {"n": 1}, attempt=2), TransitionNotAllowed, "PQ409"
    )
    await expect_refusal(queries.progress(conn, 987_654_321, ME, {"n": 1}), JobNotFound, "PQ404")
    await queries.complete(conn, job_id, ME)
    await expect_refusal(
        queries.progress(conn, job_id, ME, {"n": 1}), TransitionNotAllowed, "PQ409", "not running"
    )
    assert (await queries.get_job(conn, job_id)).progress is None


async def test_progress_must_be_a_small_object(conn: asyncpg.Connection) -> None:
    job_id = await running_job(conn)
    for bad in ([1, 2], "half", None):
        await expect_refusal(
            queries.progress(conn, job_id, ME, bad), InvalidArgument, "PQ400", "JSON object"
        )
    await expect_refusal(
        queries.progress(conn, job_id, ME, {"log": "x" * 8200}),
        InvalidArgument,
        "PQ400",
        "8 KiB",
    )
    assert (await queries.progress(conn, job_id, ME, {"log": "x" * 8000})).progress


async def test_a_new_claim_clears_the_last_attempts_progress(conn: asyncpg.Connection) -> None:
    job_id = await running_job(conn)
    await queries.progress(conn, job_id, ME, {"pct": 90})
    await queries.fail(conn, job_id, ME, "boom", retry_delay=0)
    assert (await queries.get_job(conn, job_id)).progress == {"pct": 90}  # kept for reading
    [again] = await queries.claim(conn, ME)
    assert (again.id, again.attempt, again.progress) == (job_id, 2, None)


# -- pgq.retry_where --------------------------------------------------------------------


async def dead_job(conn: asyncpg.Connection, job_type: str, queue: str = "default") -> int:
    job, _ = await queries.enqueue(conn, job_type, queue=queue, max_attempts=1)
    [claimed] = await queries.claim(conn, ME, 1, queues=[queue], job_types=[job_type])
    await queries.fail(conn, claimed.id, ME, "boom")
    return job.id


async def statuses(conn: asyncpg.Connection) -> dict[int, str]:
    return dict(await conn.fetch("SELECT id, status FROM pgq.jobs ORDER BY id"))


async def test_retry_where_replays_matching_dead_jobs_only(
    conn: asyncpg.Connection, inbox: Inbox
) -> None:
    a = await dead_job(conn, "A")
    b = await dead_job(conn, "B")
    c = await dead_job(conn, "A", queue="other")
    cancelled, _ = await queries.enqueue(conn, "A")
    await queries.cancel(conn, cancelled.id)
    live, _ = await queries.enqueue(conn, "A")
    await inbox.drain(conn, [EVENTS])

    assert await queries.retry_where(conn, queue="default", job_type="A") == 1
    assert await statuses(conn) == {
        a: "queued",
        b: "dead",
        c: "dead",
        cancelled.id: "cancelled",
        live.id: "queued",
    }
    row = await conn.fetchrow(
        "SELECT attempts, max_attempts, finished_at FROM pgq.jobs WHERE id = $1", a
    )
    assert (row["attempts"], row["max_attempts"], row["finished_at"]) == (1, 2, None)
    received = [event(p) for _, p in await inbox.drain(conn, [EVENTS])]
    assert received == [{"id": a, "status": "queued", "queue": "default", "type": "A"}]

    assert await queries.retry_where(conn, ["dead", "cancelled"]) == 3
    assert set((await statuses(conn)).values()) == {"queued"}
    assert await queries.retry_where(conn) == 0


async def test_retry_where_spreads_run_at_evenly(conn: asyncpg.Connection) -> None:
    ids = [await dead_job(conn, "S") for _ in range(4)]
    assert await queries.retry_where(conn, spread_seconds=60) == 4
    offsets = [round((await db_delta(conn, "run_at", i)).total_seconds()) for i in ids]
    # now() is the replaying transaction's start; a little time has passed since
    assert [round(o / 15) for o in offsets] == [0, 1, 2, 3]


async def test_retry_where_goes_through_retry_for_dependents(conn: asyncpg.Connection) -> None:
    parent = await dead_job(conn, "P")
    child, _ = await queries.enqueue(conn, "C", depends_on=[parent])
    assert child.status == "dead"
    # the parent is replayed first, so the child can be: it waits for its parent again
    assert await queries.retry_where(conn) == 2
    assert await statuses(conn) == {parent: "queued", child.id: "waiting"}
    # a child whose parent stays dead (another type, not replayed) is skipped
    other = await dead_job(conn, "Q")
    orphan, _ = await queries.enqueue(conn, "C", depends_on=[other])
    assert await queries.retry_where(conn, job_type="C") == 0
    assert (await statuses(conn))[orphan.id] == "dead"


async def test_retry_where_refuses_bad_arguments(conn: asyncpg.Connection) -> None:
    for bad in (["queued"], [], ["dead", "running"]):
        await expect_refusal(queries.retry_where(conn, bad), InvalidArgument, "PQ400", "statuses")
    await expect_refusal(
        queries.retry_where(conn, spread_seconds=-1), InvalidArgument, "PQ400", "spread"
    )


# -- pgq.cancel_where -------------------------------------------------------------------


async def test_cancel_where_cancels_matching_jobs_and_dooms_dependents(
    conn: asyncpg.Connection, inbox: Inbox
) -> None:
    running = await running_job(conn)
    q1, _ = await queries.enqueue(conn, "X")
    q2, _ = await queries.enqueue(conn, "Y")
    other, _ = await queries.enqueue(conn, "X", queue="other")
    child, _ = await queries.enqueue(conn, "Z", depends_on=[q1.id])
    await inbox.drain(conn, [EVENTS])

    assert await queries.cancel_where(conn, queue="default", job_type="X") == 1
    assert await statuses(conn) == {
        running: "running",
        q1.id: "cancelled",
        q2.id: "queued",
        other.id: "queued",
        child.id: "dead",
    }
    received = [event(p) for _, p in await inbox.drain(conn, [EVENTS])]
    assert [(e["id"], e["status"]) for e in received] == [(q1.id, "cancelled"), (child.id, "dead")]

    assert await queries.cancel_where(conn) == 2  # queued and waiting; running untouched
    assert (await statuses(conn))[running] == "running"
    assert await queries.cancel_where(conn, ["running"]) == 1
    assert set((await statuses(conn)).values()) == {"cancelled", "dead"}


async def test_cancel_where_refuses_bad_statuses(conn: asyncpg.Connection) -> None:
    for bad in (["dead"], [], ["queued", "succeeded"]):
        await expect_refusal(queries.cancel_where(conn, bad), InvalidArgument, "PQ400", "statuses")


# -- the job list at size ---------------------------------------------------------------


async def test_every_list_filter_reads_about_a_page_in_a_big_table(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(
        """
        INSERT INTO pgq.jobs (queue, type, status, finished_at)
        SELECT 'q' || n % 4, 'T' || n % 50, (ARRAY['queued', 'succeeded', 'dead'])[1 + n % 3],
               CASE WHEN n % 3 > 0 THEN now() END
          FROM generate_series(1, 200000) AS n
        """
    )
    await conn.execute("ANALYZE pgq.jobs")
    filters = [
        {},
        {"status": "dead"},
        {"queue": "q1"},
        {"job_type": "T7"},
        {"queue": "q2", "status": "succeeded"},
        {"job_type": "T7", "status": "dead"},
        {"queue": "q2", "status": "dead"},
        {"queue": "q3", "job_type": "T7"},
        {"queue": "q1", "job_type": "T9", "status": "queued"},
    ]
    for f in filters:
        first, seq, idx = await rows_read(conn, queries.list_jobs(conn, limit=50, **f))
        assert len(first) == 50, f
        assert [j.id for j in first] == sorted(j.id for j in first)
        assert seq == 0, (f, seq)
        # dead, cancelled and waiting have their own indexes: about a page per status;
        # other statuses walk an index of their own or the primary key past rows of other
        # types and queues, in proportion to how rare the match is, never the whole table
        bound = 1_000 if f.get("status") == "dead" else 20_000
        assert idx <= bound, (f, idx)
        page2, seq, _ = await rows_read(
            conn, queries.list_jobs(conn, limit=50, after=first[-1].id, **f)
        )
        assert page2[0].id > first[-1].id and seq == 0
        for job in first + page2:
            assert f.get("status", job.status) == job.status
            assert f.get("queue", job.queue) == job.queue
            assert f.get("job_type", job.type) == job.type


async def test_lists_read_no_other_status_when_succeeded_jobs_come_first(
    conn: asyncpg.Connection,
) -> None:
    # history first (150,000 succeeded, a rare queue and a rare type among them), then the
    # jobs of now: a page of queued or running jobs, or of a rare queue or type, once walked
    # the primary key over all that history
    await conn.execute(
        """
        INSERT INTO pgq.jobs (queue, type, status, attempts, finished_at)
        SELECT CASE WHEN n % 1000 = 0 THEN 'rare' ELSE 'bulk' || n % 2 END,
               CASE WHEN n % 1000 = 1 THEN 'Rare' ELSE 'T' || n % 3 END,
               'succeeded', 1, now()
          FROM generate_series(1, 150000) AS n;
        INSERT INTO pgq.jobs (queue, type, status, attempts, finished_at)
        SELECT (ARRAY['bulk0', 'rare'])[1 + n % 2], (ARRAY['T0', 'Rare'])[1 + n % 2],
               'dead', 1, now()
          FROM generate_series(1, 200) AS n;
        INSERT INTO pgq.jobs (queue, type, status)
        SELECT (ARRAY['bulk0', 'bulk1', 'rare'])[1 + n % 3], (ARRAY['T0', 'T1', 'Rare'])[1 + n % 3],
               'queued'
          FROM generate_series(1, 3000) AS n;
        INSERT INTO pgq.jobs (queue, type, status, attempts, worker_id, claimed_at,
                              lease_expires_at)
        SELECT (ARRAY['bulk0', 'rare'])[1 + n % 2], (ARRAY['T0', 'Rare'])[1 + n % 2],
               'running', 1, 'w', now(), now() + interval '1 minute'
          FROM generate_series(1, 200) AS n;
        ANALYZE pgq.jobs;
        """
    )
    for status in (None, "queued", "running", "succeeded", "dead"):
        for queue in (None, "bulk0", "rare"):
            for job_type in (None, "T0", "Rare"):
                f = {"status": status, "queue": queue, "job_type": job_type}
                after = None
                for _ in range(2):  # the first page and the next
                    page, seq, idx = await rows_read(
                        conn, queries.list_jobs(conn, limit=50, after=after, **f)
                    )
                    assert seq == 0, (f, seq)
                    # at most the queued jobs of a queue (3,000) and the running ones (200)
                    # read whole and sorted, plus a few pages: never the history
                    assert idx <= 6_000, (f, after, idx)
                    for job in page:
                        assert (status or job.status) == job.status
                        assert (queue or job.queue) == job.queue
                        assert (job_type or job.type) == job.type
                    assert [j.id for j in page] == sorted(j.id for j in page)
                    if len(page) < 50:
                        break
                    after = page[-1].id


async def test_list_filters_are_values_never_sql(conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "T")
    assert [j.id for j in await queries.list_jobs(conn, job_type="T")] == [job.id]
    for bad in ("T' OR true --", "T\\' OR true --", "x'; DROP TABLE pgq.jobs; --", "\\"):
        assert await queries.list_jobs(conn, job_type=bad) == []
        assert await queries.list_jobs(conn, queue=bad, status="queued") == []
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 1

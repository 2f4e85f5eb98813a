"""What a claimed and a completed job cost (the drain work of issue 5, now in the baseline:
the CHECKs and indexes of sql/0001_jobs.sql, pgq.claim, pgq.complete_many and the
notification trigger), and what must not change.

Buffer counts come from ``EXPLAIN (ANALYZE, BUFFERS)`` of the function call, whose node
counts every page the function's own statements touch. A plan that scans the table or
walks the whole backlog shows up as hundreds of pages where a job needs about a dozen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from pgq import queries

from .zoo import ME, Inbox, event

BACKLOG = 20_000
#: Pages per claimed or completed job: the old and new heap page, the primary key and one
#: partial index entry, the lock; measured ~11-15 per job in batches of 50. A sequential
#: scan of the 20,000-job table alone is ~370 pages.
PAGES_PER_JOB = 20
#: A one-job claim or completion: a couple of index descents, the heap pages, the lock;
#: measured 14-43 for a completion, 75 for a claim after 409 claimed jobs and no vacuum
#: (the claim reads the head of jobs_claim_idx twice, once to find the queue's first
#: priority and once for the jobs, and both step over the dead entries of claimed jobs).
PAGES_FOR_ONE = 90
#: A claim of 1 or 10 jobs from a queue with or without limits, 80,000 jobs loaded and
#: never analyzed: far below the ~700 pages of reading and sorting the queued jobs.
WALK_BUDGET = 300


async def pages(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    """Shared buffers (hit or read) that one call touched, function internals included."""
    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    if isinstance(plan, str):  # json is decoded only when the connection has a codec for it
        plan = orjson.loads(plan)
    top = plan[0]["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"]


async def backlog(conn: asyncpg.Connection, n: int = BACKLOG) -> None:
    """n queued no-op jobs in one statement, statistics left as a bulk load leaves them."""
    await conn.execute(
        "SELECT count(*) FROM pgq.enqueue_many((SELECT jsonb_agg(jsonb_build_object("
        "  'type', 'NOOP', 'args', jsonb_build_object('i', g))) FROM generate_series(1, $1) AS g))",
        n,
    )


CLAIM = "SELECT * FROM pgq.claim($1, $2, ARRAY['default'], ARRAY['NOOP'])"
COMPLETE = "SELECT * FROM pgq.complete_many($1, $2, $3, NULL)"


async def claim_and_complete_pages(conn: asyncpg.Connection, batch: int) -> tuple[int, int]:
    claim_pages = await pages(conn, CLAIM, ME, batch)
    claimed = await conn.fetch(
        "SELECT id, attempts FROM pgq.jobs WHERE status = 'running' AND worker_id = $1 ORDER BY id",
        ME,
    )
    ids = [r["id"] for r in claimed]
    attempts = [r["attempts"] for r in claimed]
    complete_pages = await pages(conn, COMPLETE, ME, ids, attempts)
    return claim_pages, complete_pages


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh-bulk-load", "analyzed"])
async def test_claim_and_complete_many_touch_a_bounded_number_of_pages_at_a_20k_backlog(
    conn: asyncpg.Connection, analyzed: bool
) -> None:
    await backlog(conn)
    if analyzed:
        await conn.execute("ANALYZE pgq.jobs")
    await claim_and_complete_pages(conn, 1)  # the session's first calls also read catalogs
    # The first calls of a session plan with the actual arguments, later ones may use a
    # generic plan: look at both, and at one-job calls where a full scan would dominate.
    for _ in range(8):
        claim_pages, complete_pages = await claim_and_complete_pages(conn, 50)
        assert claim_pages <= 50 * PAGES_PER_JOB, claim_pages
        assert complete_pages <= 50 * PAGES_PER_JOB, complete_pages
    for _ in range(8):
        claim_pages, complete_pages = await claim_and_complete_pages(conn, 1)
        assert claim_pages <= PAGES_FOR_ONE, claim_pages
        assert complete_pages <= PAGES_FOR_ONE, complete_pages
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE status = 'succeeded'") == 409


async def load_never_analyzed(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    """Run a bulk INSERT into pgq.jobs whose statistics then stay as it leaves them."""
    await conn.execute("ALTER TABLE pgq.jobs SET (autovacuum_enabled = false)")
    await conn.execute(sql, *args)


@pytest.mark.parametrize("queue", ["default", "lim"], ids=["unlimited", "limited"])
async def test_claim_and_next_due_walk_the_claim_index_on_a_never_analyzed_bulk_load(
    conn: asyncpg.Connection, queue: str
) -> None:
    # 40,000 jobs due now plus 40,000 of a lower priority scheduled for tomorrow: with
    # statistics that know nothing, a claim once walked another index and sorted every
    # queued job (~700 pages), and a walk in claim order over "run_at <= now()" steps
    # over every future job of a priority before reaching the next priority.
    if queue == "lim":
        await conn.execute("SELECT pgq.set_limits('lim', concurrency => 1000)")
    await load_never_analyzed(
        conn,
        "INSERT INTO pgq.jobs (queue, type, priority, run_at)"
        " SELECT $1, 'NOOP', CASE WHEN g <= 40000 THEN 1 ELSE 0 END,"
        "        CASE WHEN g <= 40000 THEN now() - interval '1 minute'"
        "             ELSE now() + interval '1 day' END"
        "   FROM generate_series(1, 80000) AS g",
        queue,
    )
    # measured 66-186 pages unlimited, 108-258 limited; sorting the queue: 716-892
    claim = "SELECT * FROM pgq.claim($1, $2, ARRAY[$3], NULL)"
    await pages(conn, claim, ME, 1, queue)  # the session's first calls also read catalogs
    for batch in (1, 10, 1, 10):
        claim_pages = await pages(conn, claim, ME, batch, queue)
        assert claim_pages <= WALK_BUDGET, (batch, claim_pages)
    claimed = await conn.fetch(
        "SELECT id, priority FROM pgq.jobs WHERE status = 'running' ORDER BY id"
    )
    assert [r["id"] for r in claimed] == list(range(1, 24))
    assert {r["priority"] for r in claimed} == {1}
    due_pages = await pages(conn, "SELECT * FROM pgq.next_due(ARRAY[$1])", queue)
    assert due_pages <= PAGES_FOR_ONE, due_pages
    await conn.execute(
        "UPDATE pgq.jobs SET status = 'cancelled', finished_at = now(),"
        " worker_id = NULL, lease_expires_at = NULL"
        " WHERE priority = 1 AND status = 'queued'"
    )
    next_run_at = await conn.fetchval("SELECT next_run_at FROM pgq.next_due(ARRAY[$1])", queue)
    assert next_run_at == await conn.fetchval(
        "SELECT min(run_at) FROM pgq.jobs WHERE status = 'queued'"
    )


async def test_claim_returns_jobs_in_claim_order(conn: asyncpg.Connection) -> None:
    ids = {}
    for name, priority in [("a", 5), ("b", -1), ("c", 5), ("d", 0), ("e", -1)]:
        job, _ = await queries.enqueue(conn, name.upper(), priority=priority)
        ids[name] = job.id
    claimed = await queries.claim(conn, ME, 10)
    assert [j.id for j in claimed] == [ids[n] for n in ("b", "e", "d", "a", "c")]
    assert {j.status for j in claimed} == {"running"}


@pytest.fixture
async def inbox(dsn: str) -> AsyncIterator[Inbox]:
    box = await Inbox.open(dsn, "pgq_events", "pgq_default")
    try:
        yield box
    finally:
        await box.close()


async def test_complete_many_announces_each_completed_job_once_in_id_order(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    jobs = [(await queries.enqueue(conn, "T", {"i": i}))[0] for i in range(5)]
    claimed = {j.id: j for j in await queries.claim(conn, ME, 5)}
    fenced = jobs[2].id  # a stale attempt: skipped, so not announced
    await inbox.drain(conn, ["pgq_events", "pgq_default"])

    order = [j.id for j in reversed(jobs)]
    attempts = [claimed[i].attempt + (1 if i == fenced else 0) for i in order]
    rows = await queries.complete_many(conn, ME, order, attempts, [None] * len(order))
    assert [done for _, done, _ in rows] == [i != fenced for i in order]

    received = await inbox.drain(conn, ["pgq_events", "pgq_default"])
    assert [c for c, _ in received] == ["pgq_events"] * 4
    assert [event(p) for _, p in received] == [
        {"id": j.id, "status": "succeeded", "queue": "default", "type": "T"}
        for j in jobs
        if j.id != fenced
    ]


async def test_claims_and_heartbeats_fire_no_trigger_and_a_hand_update_to_dead_announces(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    """The row trigger's WHEN: only a status change into queued, dead or cancelled."""
    job, _ = await queries.enqueue(conn, "T")
    await inbox.drain(conn, ["pgq_events", "pgq_default"])
    await queries.claim(conn, ME, 1)
    await queries.heartbeat(conn, job.id, ME)
    await conn.execute("UPDATE pgq.jobs SET updated_at = now() WHERE id = $1", job.id)
    assert await inbox.drain(conn, ["pgq_events", "pgq_default"]) == []
    await conn.execute(
        "UPDATE pgq.jobs SET status = 'dead', finished_at = now(), lease_expires_at = NULL,"
        " lease_token = NULL WHERE id = $1",
        job.id,
    )
    [(channel, payload)] = await inbox.drain(conn, ["pgq_events", "pgq_default"])
    assert channel == "pgq_events"
    assert event(payload) == {"id": job.id, "status": "dead", "queue": "default", "type": "T"}


@pytest.mark.parametrize(
    ("column", "value", "ok"),
    [
        ("queue", "q" * 48, True),
        ("queue", "q" * 49, False),
        ("queue", "a_1", True),
        ("queue", "1a", False),
        ("queue", "Ab", False),
        ("queue", "", False),
        ("type", "T" * 128, True),
        ("type", "T" * 129, False),
        ("type", "a.b:c-d_E9", True),
        ("type", "a b", False),
        ("type", "", False),
    ],
)
async def test_the_name_checks_accept_exactly_what_the_bounded_patterns_accepted(
    conn: asyncpg.Connection, column: str, value: str, ok: bool
) -> None:
    values = {"queue": "default", "type": "T", column: value}
    insert = "INSERT INTO pgq.jobs (queue, type) VALUES ($1, $2)"
    if ok:
        await conn.execute(insert, values["queue"], values["type"])
    else:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, values["queue"], values["type"])


async def test_the_jobs_table_has_queue_table_autovacuum_settings(conn: asyncpg.Connection) -> None:
    options = await conn.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'pgq.jobs'::regclass"
    )
    settings = dict(o.split("=", 1) for o in options)
    assert settings["autovacuum_vacuum_scale_factor"] == "0.01"
    assert settings["autovacuum_analyze_scale_factor"] == "0.02"
    assert settings["autovacuum_vacuum_cost_delay"] == "0"


async def test_prune_still_finds_old_finished_jobs_through_the_finished_index(
    conn: asyncpg.Connection,
) -> None:
    await backlog(conn, 500)
    jobs = await queries.claim(conn, ME, 500)
    await queries.complete_many(conn, ME, [j.id for j in jobs], [j.attempt for j in jobs])
    await conn.execute(
        "UPDATE pgq.jobs SET finished_at = finished_at - interval '2 hours' WHERE id <= $1",
        jobs[0].id + 99,
    )
    assert await queries.prune(conn, 3600) == 100
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 400


RUNNING = 3_000
COMPLETE_FENCED = "SELECT * FROM pgq.complete_many($1, $2, $3, NULL, $4)"
#: The single-job fenced transitions, each run on the first of ME's jobs.
FENCED = {
    "complete": "SELECT pgq.complete($1, $2, NULL, $3, $4)",
    "fail": "SELECT pgq.fail($1, $2, '{}', true, $3, NULL, $4)",
    "heartbeat": "SELECT pgq.heartbeat($1, $2, $3, $4)",
    "release": "SELECT pgq.release($1, $2, NULL, $3, $4)",
    "progress": "SELECT pgq.progress($1, $2, '{}', $3, $4)",
}


async def rows_read(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    """Rows of pgq.jobs that one call read (index fetches and sequential scans, function
    internals included), in a transaction rolled back afterwards so the jobs stay as
    they were."""
    counters = (
        "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)"
        " FROM pg_stat_xact_user_tables WHERE relid = 'pgq.jobs'::regclass"
    )
    tx = conn.transaction()
    await tx.start()
    try:
        before: int = await conn.fetchval(counters)
        await conn.execute(sql, *args)
        after: int = await conn.fetchval(counters)
    finally:
        await tx.rollback()
    return after - before


async def test_fenced_transitions_read_their_own_jobs_only_however_many_jobs_run(
    conn: asyncpg.Connection,
) -> None:
    """A completion, heartbeat, failure, release or progress report finds each job by its
    primary key: statistics taken while no job ran (an ANALYZE right after a bulk enqueue,
    as autovacuum does) made an empty-looking jobs_lease_idx the cheapest path, and every
    call read all 3,000 running jobs to find its own."""
    await backlog(conn)  # 20,000 jobs: a table where a sequential scan costs ~370 pages
    await conn.execute("ANALYZE pgq.jobs")  # no job is running yet
    for _ in range(RUNNING // 1000):
        await conn.execute("SELECT count(*) FROM pgq.claim('another-worker', 1000)")
    mine = await conn.fetch("SELECT id, attempts, lease_token FROM pgq.claim($1, 50)", ME)
    ids = [r["id"] for r in mine]
    attempts = [r["attempts"] for r in mine]
    tokens = [r["lease_token"] for r in mine]
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE status = 'running'") == (
        RUNNING + 50
    )
    # more than five calls each: PL/pgSQL may switch to a generic plan after the fifth
    for _ in range(7):
        read = await rows_read(conn, COMPLETE_FENCED, ME, ids, attempts, tokens)
        assert read <= 2 * len(ids), f"complete_many of {len(ids)} jobs read {read} rows"
        for name, sql in FENCED.items():
            read = await rows_read(conn, sql, ids[0], ME, attempts[0], tokens[0])
            assert read <= 5, f"{name} of one job read {read} rows"

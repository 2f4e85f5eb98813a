"""What must not grow with history (DESIGN, "Retention and growth"): pgq.stats() on a table
past the size where finished jobs are counted row by row, and retention (pgq.retention,
pgq.set_retention, pgq.prune_expired, run by runners and coordinators)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

import pgq
from pgq import queries
from pgq.errors import InvalidArgument
from pgq.runner import Runner

from .support import live_app, running, wait_until
from .test_drain import pages
from .zoo import expect_refusal

#: 120,000 finished jobs (~1,700 pages, past the 1,000 pages up to which pgq.stats() counts
#: them), 12,000 dead of them in queue "mail", and 300 queued jobs.
HISTORY = """
    INSERT INTO pgq.jobs (queue, type, status, attempts, finished_at)
    SELECT CASE WHEN g % 10 = 0 THEN 'mail' ELSE 'default' END, 'NOOP',
           CASE WHEN g % 10 = 0 THEN 'dead' ELSE 'succeeded' END, 1, now()
      FROM generate_series(1, 120000) AS g
"""


async def test_stats_counts_the_backlog_exactly_and_estimates_history_from_statistics(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("ALTER TABLE pgq.jobs SET (autovacuum_enabled = false)")
    await conn.execute(HISTORY)
    await conn.execute(
        "INSERT INTO pgq.jobs (queue, type) SELECT 'mail', 'NOOP' FROM generate_series(1, 300)"
    )
    exact = {
        ("default", "succeeded"): 108_000,
        ("mail", "dead"): 12_000,
        ("mail", "queued"): 300,
    }
    # never analyzed (a bulk load before autovacuum's first ANALYZE): the backlog counted,
    # history estimated from a sample of ~300 pages rather than counted row by row
    rows = await queries.stats(conn)
    got = {(r["queue"], r["status"]): r["count"] for r in rows}
    assert set(got) == set(exact)
    assert got[("mail", "queued")] == 300
    for key in (("default", "succeeded"), ("mail", "dead")):
        assert abs(got[key] - exact[key]) <= exact[key] * 0.2, (key, got[key])
    touched = await pages(conn, "SELECT * FROM pgq.stats()")
    assert touched < 600, touched  # a count would read all ~1,700 pages
    await conn.execute("VACUUM ANALYZE pgq.jobs")
    rows = await queries.stats(conn)
    got = {(r["queue"], r["status"]): r["count"] for r in rows}
    assert set(got) == set(exact)
    assert got[("mail", "queued")] == 300  # the backlog: exact
    for key in (("default", "succeeded"), ("mail", "dead")):  # history: a sample's estimate
        assert abs(got[key] - exact[key]) <= exact[key] * 0.1, (key, got[key])
    queued = next(r for r in rows if r["status"] == "queued")
    assert queued["oldest_run_at"] is not None
    assert all(r["oldest_run_at"] is None for r in rows if r["status"] != "queued")
    # a scan of the table would read its ~1,700 pages; the estimate reads the queued
    # jobs' index and the catalogs
    touched = await pages(conn, "SELECT * FROM pgq.stats()")
    assert touched < 200, touched
    # ... and one more queued job shows at once, with no new statistics
    await queries.enqueue(conn, "NOOP", queue="mail")
    got = {(r["queue"], r["status"]): r["count"] for r in await queries.stats(conn)}
    assert got[("mail", "queued")] == 301


# -- retention ------------------------------------------------------------------------------

#: finished jobs per status, aged by their finished_at
AGED = """
    INSERT INTO pgq.jobs (type, status, attempts, finished_at)
    SELECT 'OLD', s.status, 1, now() - s.age
      FROM (VALUES ('succeeded', interval '8 days', 30), ('succeeded', interval '6 days', 5),
                   ('cancelled', interval '8 days', 4), ('dead', interval '8 days', 3),
                   ('dead', interval '31 days', 2)) AS s(status, age, n)
     CROSS JOIN LATERAL generate_series(1, s.n)
"""


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    return dict(await conn.fetch("SELECT status, count(*) FROM pgq.jobs GROUP BY status"))


async def test_retention_defaults_and_set_retention(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("SELECT status, keep FROM pgq.retention ORDER BY status")
    assert [(r["status"], r["keep"]) for r in rows] == [
        ("cancelled", timedelta(days=7)),
        ("dead", timedelta(days=30)),
        ("succeeded", timedelta(days=7)),
    ]
    await queries.set_retention(conn, "dead", None)
    await queries.set_retention(conn, "succeeded", 3600)
    assert dict(await conn.fetch("SELECT status, keep FROM pgq.retention")) == {
        "cancelled": timedelta(days=7),
        "dead": None,
        "succeeded": timedelta(hours=1),
    }
    await expect_refusal(
        queries.set_retention(conn, "queued", 60), InvalidArgument, "PQ400", "status"
    )
    await expect_refusal(queries.set_retention(conn, "dead", -1), InvalidArgument, "PQ400", "keep")
    await expect_refusal(queries.prune_expired(conn, 0), InvalidArgument, "PQ400", "max_rows")
    await expect_refusal(queries.prune_expired(conn, 10_001), InvalidArgument, "PQ400", "max_rows")


async def test_prune_expired_deletes_per_status_in_batches_and_keeps_the_rest(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(AGED)
    queued, _ = await queries.enqueue(conn, "NEW")
    got = await queries.prune_expired(conn, 10)
    assert sum(got.values()) == 10
    total: dict[str, int] = dict(got)
    while got := await queries.prune_expired(conn, 10):
        for status, n in got.items():
            total[status] = total.get(status, 0) + n
    # 30 succeeded > 7 days, 4 cancelled > 7 days, 2 dead > 30 days; younger ones stay
    assert total == {"succeeded": 30, "cancelled": 4, "dead": 2}
    assert await counts(conn) == {"succeeded": 5, "dead": 3, "queued": 1}
    await queries.set_retention(conn, "dead", 0)
    await queries.set_retention(conn, "succeeded", None)  # forever
    assert await queries.prune_expired(conn) == {"dead": 3}
    assert await counts(conn) == {"succeeded": 5, "queued": 1}
    assert (await queries.get_job(conn, queued.id)) is not None


async def test_concurrent_pruners_skip_each_others_rows(dsn: str, conn: asyncpg.Connection) -> None:
    await conn.execute(AGED)
    other = await asyncpg.connect(dsn)
    try:
        async with other.transaction():
            first = await queries.prune_expired(other, 5)  # deleted, not yet committed
            assert sum(first.values()) == 5
            # the second pruner neither waits for the first nor deletes its rows
            rest = await asyncio.wait_for(queries.prune_expired(conn), 10)
            assert sum(rest.values()) == 36 - 5
    finally:
        await other.close()
    assert await counts(conn) == {"succeeded": 5, "dead": 3}


async def test_a_runner_and_a_coordinator_prune_on_their_timers(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(AGED)
    runner = Runner(dsn, worker_id="pruner", safety_interval=0.2, concurrency=1)

    @runner.handler("NEW")
    async def noop(job: pgq.Job) -> None:
        pass

    async def pruned_to(expected: dict[str, int]) -> bool:
        return await counts(conn) == expected

    async with running(runner):
        await wait_until(lambda: pruned_to({"succeeded": 5, "dead": 3}))
    await conn.execute(AGED)
    async with live_app(dsn, lease_recheck_seconds=0.2) as live:
        await wait_until(lambda: pruned_to({"succeeded": 10, "dead": 6}))
        status, text, _ = await live.request("GET", "/metrics")
    assert status == 200
    pruned = {
        line.split('"')[1]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("pgq_jobs_pruned_total{")
    }
    assert pruned == {"succeeded": 30.0, "cancelled": 4.0, "dead": 2.0}

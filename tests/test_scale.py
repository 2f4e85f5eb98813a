"""What must not grow with history (DESIGN, "Retention and growth"): pgq.stats() on a table
past the size where finished jobs are counted row by row."""

from __future__ import annotations

import asyncpg

from pgq import queries

from .test_drain import pages

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
    # never analyzed: no estimate to be had, so everything is counted
    exact = {(r["queue"], r["status"]): r["count"] for r in await queries.stats(conn)}
    assert exact == {
        ("default", "succeeded"): 108_000,
        ("mail", "dead"): 12_000,
        ("mail", "queued"): 300,
    }
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

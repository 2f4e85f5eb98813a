"""Scale scenario: what a claim, pgq.stats(), a filtered job list and a metrics scrape cost
as the jobs table grows, with fresh statistics or none.

    python -m benchmarks.scale                          # 10k and 1M rows
    python -m benchmarks.scale --sizes 10000,1000000,10000000

Per size, in a fresh database (``bench_scale_<pid>``, dropped afterwards) whose jobs table has
autovacuum switched off, so each state below is exactly the one named:

- ``fresh``: ``size`` queued jobs in two queues, loaded by one INSERT and never analyzed
  or vacuumed (what a bulk load leaves before autovacuum gets to it);
- ``mass update``: all but 10,000 of them turned succeeded (1 % dead) by one UPDATE, so
  the table holds a dead version of almost every row, still not analyzed or vacuumed;
- ``analyzed``: after ``VACUUM ANALYZE``.

In each state it times (milliseconds, median and 90th percentile of ``--repeat`` calls):
``pgq.claim(w, 10)`` committed one at a time, ``pgq.stats()``, the first page of
``status = dead`` and of ``queue = ... & status = dead`` through
``pgq.queries.reads.list_jobs``, and a metrics collection (``pgq.metrics.Metrics.collect``,
the database side of ``GET /metrics``). Prints one line per state and measurement, and a
JSON line per size at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from pgq import migrations
from pgq.metrics import Metrics
from pgq.queries import reads

#: this process's own database: two runs on one server (several people benchmarking) must
#: not drop each other's
DB = f"bench_scale_{os.getpid()}"
LEFT_QUEUED = 10_000


#: A measurement stops early once it has this many samples and has taken BUDGET_S seconds
#: (a count over a 10M-job backlog takes seconds; 20 of them would add minutes).
MIN_SAMPLES = 3
BUDGET_S = 5.0


class _Rollback(Exception):
    """Raised inside a transaction to roll it back."""


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> dict[str, float]:
    samples: list[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
        if len(samples) >= MIN_SAMPLES and time.perf_counter() - start > BUDGET_S:
            break
    samples.sort()
    return {
        "p50": round(statistics.median(samples), 3),
        "p90": round(samples[min(len(samples) - 1, int(len(samples) * 0.9))], 3),
        "max": round(samples[-1], 3),
    }


async def measure(conn: asyncpg.Connection, repeat: int) -> dict[str, dict[str, float]]:
    metrics = Metrics()
    await metrics.start(conn)

    async def claim_rolled_back() -> None:
        # the claim's own work, without the commit's WAL flush (which is the disk's, not
        # the plan's): the same call in a transaction that is rolled back
        async with conn.transaction():
            await conn.fetch("SELECT id FROM pgq.claim('w', 10)")
            raise _Rollback

    async def claim_uncommitted() -> None:
        with contextlib.suppress(_Rollback):
            await claim_rolled_back()

    out = {
        "claim (no commit)": await timed(claim_uncommitted, repeat),
        "claim": await timed(lambda: conn.fetch("SELECT id FROM pgq.claim('w', 10)"), repeat),
        "stats": await timed(lambda: reads.stats(conn), repeat),
        "list dead": await timed(lambda: reads.list_jobs(conn, status="dead", limit=50), repeat),
        "list queue+dead": await timed(
            lambda: reads.list_jobs(conn, status="dead", queue="mail", limit=50), repeat
        ),
        "metrics": await timed(lambda: metrics.collect(conn, listener_up=True), repeat),
    }
    return out


async def run_size(dsn: str, size: int, repeat: int, mass_update: bool) -> dict[str, Any]:
    """``measure_states`` in a fresh database ``bench_scale_<pid>``, dropped afterwards."""
    admin = await asyncpg.connect(f"{dsn}/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {DB}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(f"{dsn}/{DB}")
    try:
        return await measure_states(conn, size, repeat, mass_update)
    finally:
        await conn.close()
        admin = await asyncpg.connect(f"{dsn}/postgres")
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        finally:
            await admin.close()


async def measure_states(
    conn: asyncpg.Connection, size: int, repeat: int, mass_update: bool
) -> dict[str, Any]:
    """Load ``size`` jobs into the empty database ``conn`` is on and measure each state.

    Returns ``{"size", "load_s", <state>: {<what>: {p50, p90, max}}, "problems"}``;
    ``problems`` lists states whose ``pgq.stats()`` queued count differed from a count of
    the rows (the backlog is counted exactly, so any difference is a bug).
    """
    result: dict[str, Any] = {"size": size, "problems": []}
    await migrations.migrate(conn)
    await conn.execute("ALTER TABLE pgq.jobs SET (autovacuum_enabled = false)")
    t0 = time.perf_counter()
    # two queues, two priorities, run_at now (as an enqueue leaves it)
    await conn.execute(
        """
        INSERT INTO pgq.jobs (queue, type, args, priority)
        SELECT CASE WHEN g % 10 = 0 THEN 'mail' ELSE 'default' END,
               CASE WHEN g % 3 = 0 THEN 'report.build' ELSE 'mail.send' END,
               jsonb_build_object('n', g), CASE WHEN g % 7 = 0 THEN 1 ELSE 0 END
          FROM generate_series(1, $1) AS g
        """,
        size,
    )
    result["load_s"] = round(time.perf_counter() - t0, 1)
    print(f"size {size:>10,}: loaded in {result['load_s']} s", flush=True)
    states: list[tuple[str, str | None]] = [("fresh", None)]
    if mass_update:
        states.append(
            (
                "mass update",
                """
                UPDATE pgq.jobs
                   SET status = CASE WHEN id % 100 = 0 THEN 'dead' ELSE 'succeeded' END,
                       attempts = 1, finished_at = now(), updated_at = now()
                 WHERE id <= (SELECT max(id) FROM pgq.jobs) - $1 AND status = 'queued'
                """,
            )
        )
    states.append(("analyzed", "VACUUM ANALYZE pgq.jobs"))
    for name, prepare in states:
        if prepare is not None:
            t0 = time.perf_counter()
            if "$1" in prepare:
                await conn.execute(prepare, LEFT_QUEUED)
            else:
                await conn.execute(prepare)
            print(f"  {name}: prepared in {time.perf_counter() - t0:.1f} s", flush=True)
        got = await measure(conn, repeat)
        result[name] = got
        for what, t in got.items():
            print(
                f"  {name:<12} {what:<16} p50 {t['p50']:9.3f} ms  p90 {t['p90']:9.3f} ms"
                f"  max {t['max']:9.3f} ms",
                flush=True,
            )
        stated = sum(r["count"] for r in await reads.stats(conn) if r["status"] == "queued")
        counted = await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE status = 'queued'")
        if stated != counted:
            result["problems"].append(f"{name}: pgq.stats() says {stated} queued, {counted} are")
    return result


async def amain(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", default="10000,1000000", help="comma-separated row counts")
    p.add_argument("--repeat", type=int, default=20, help="calls per measurement")
    p.add_argument("--no-mass-update", action="store_true", help="skip the mass-update state")
    p.add_argument(
        "--dsn",
        default=os.environ.get("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432"),
        help="server URL without a database",
    )
    p.add_argument(
        "--in-database",
        metavar="URL",
        help="measure one size in this empty database instead (benchmarks.run uses it)",
    )
    a = p.parse_args(argv)
    for size in (int(s) for s in a.sizes.split(",") if s):
        if a.in_database:
            conn = await asyncpg.connect(a.in_database)
            try:
                result = await measure_states(conn, size, a.repeat, not a.no_mass_update)
            finally:
                await conn.close()
        else:
            result = await run_size(a.dsn, size, a.repeat, not a.no_mass_update)
        print(json.dumps(result), flush=True)


def main() -> None:
    asyncio.run(amain())


if __name__ == "__main__":
    main()

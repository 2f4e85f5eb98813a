"""Measure the runner's idle wake-up latency and drain rate (not a test; run by hand).

    .venv/bin/python -m benchmarks.measure_wakeup --dsn postgresql://postgres@127.0.0.1:5432/postgres

Creates a scratch database on that server, starts ``pgq runner tests.runner_handlers:runner``
as a separate process (uvloop when installed, logs at warning, like the benchmark), then:

wake-up   ``--jobs`` times: enqueue one job (``pgq.enqueue``, its own transaction, on a
          plain connection), stamp ``time.monotonic()`` right after the commit returns,
          wait until the handler has run. Latency = handler start (CLOCK_MONOTONIC in the
          runner) - commit stamp.
drain     with the runner idle and listening, ``--drain`` no-op jobs in one
          ``enqueue_many`` (one commit); time from that commit until the database counts
          them all succeeded (polled every 10 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

import pgq
from pgq import db, migrations, queries
from tests.support import (
    RunnerProcess,
    create_database,
    drop_database,
    read_runs,
    start_runner,
    wait_until,
)


async def listening(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%'"
        )
    )


def read_starts(tmp: Path) -> dict[int, float]:
    return {run.job_id: run.mono for run in read_runs(tmp) if run.what == "start"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


LOG_LEVEL = "warning"


def runner(dsn: str, tmp: Path, concurrency: int) -> RunnerProcess:
    env = {"PGQ_LOG_LEVEL": LOG_LEVEL, "PGQ_LOG_FORMAT": "console"}
    return start_runner(dsn, tmp, "--concurrency", str(concurrency), env=env)


async def wait_ready(conn: asyncpg.Connection, proc: RunnerProcess) -> None:
    async def ready() -> bool:
        if proc.proc.poll() is not None:
            raise SystemExit(f"the runner exited:\n{proc.log()}")
        return await listening(conn)

    await wait_until(ready, timeout=20, interval=0.02)


async def stop(proc: RunnerProcess) -> None:
    proc.signal(signal.SIGTERM)
    await proc.wait(30)


async def measure_wakeup(dsn: str, conn: asyncpg.Connection, jobs: int, gap: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = runner(dsn, Path(tmp), 10)
        try:
            await wait_ready(conn, proc)
            stamps: dict[int, float] = {}
            # A plain connection, not a pool: asyncpg's pool runs a reset query on every
            # release, which would stamp the commit one round trip late.
            producer = await db.connect(dsn)
            try:
                async with pgq.Client(dsn, min_size=1, max_size=1) as client:
                    for _ in range(jobs + 10):
                        job, _ = await queries.enqueue(producer, "STAMP")
                        stamps[job.id] = time.monotonic()
                        await client.wait(job.id, timeout=10)
                        await asyncio.sleep(gap)  # the runner is idle again before the next
            finally:
                await producer.close()
            starts = read_starts(Path(tmp))
            ids = sorted(stamps)[10:]  # the first few warm caches up
            lat = [(starts[i] - stamps[i]) * 1000 for i in ids]
            print(
                f"wake-up latency over {len(lat)} jobs (enqueue commit → handler start): "
                f"p50 {percentile(lat, 50):.2f} ms, p95 {percentile(lat, 95):.2f} ms, "
                f"p99 {percentile(lat, 99):.2f} ms, max {max(lat):.2f} ms, "
                f"mean {statistics.mean(lat):.2f} ms"
            )
        finally:
            await stop(proc)


async def timed_drain(dsn: str, conn: asyncpg.Connection, n: int, concurrency: int) -> str:
    """Enqueue ``n`` no-op jobs in one ``enqueue_many`` for the runner that is listening and
    time until the database counts them all succeeded; the result as one line of text."""
    async with pgq.Client(dsn) as client:
        t0 = time.monotonic()
        await client.enqueue_many([{"type": "NOOP"} for _ in range(n)])
        t_enq = time.monotonic()
    done = "SELECT count(*) FROM pgq.jobs WHERE status = 'succeeded'"
    while await conn.fetchval(done) < n:  # noqa: ASYNC110 - polling the database
        await asyncio.sleep(0.01)
    t1 = time.monotonic()
    once = await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE attempts = 1")
    return (
        f"{n} no-op jobs, one runner, concurrency {concurrency}: "
        f"{t1 - t_enq:.2f} s after the enqueue commit ({n / (t1 - t_enq):,.0f} jobs/s; "
        f"enqueue_many took {t_enq - t0:.2f} s); {once} ran exactly once"
    )


async def measure_drain(dsn: str, conn: asyncpg.Connection, n: int, concurrency: int) -> None:
    await conn.execute("TRUNCATE pgq.jobs")
    with tempfile.TemporaryDirectory() as tmp:
        proc = runner(dsn, Path(tmp), concurrency)
        try:
            await wait_ready(conn, proc)
            print(f"drain: {await timed_drain(dsn, conn, n, concurrency)}")
        finally:
            await stop(proc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQ_TEST_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.02, help="idle seconds between jobs")
    parser.add_argument("--drain", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--log-level", default="warning", help="the runner's PGQ_LOG_LEVEL (info: a line per event)"
    )
    args = parser.parse_args()
    global LOG_LEVEL
    LOG_LEVEL = args.log_level
    if not args.dsn:
        raise SystemExit("pass --dsn (an admin DSN) or set PGQ_TEST_DATABASE_URL")
    name = f"pgq_measure_{os.getpid()}"
    dsn = await create_database(args.dsn, name)
    try:
        conn = await db.connect(dsn)
        try:
            await migrations.migrate(conn)
            if args.jobs:
                await measure_wakeup(dsn, conn, args.jobs, args.gap)
            if args.drain:
                await measure_drain(dsn, conn, args.drain, args.concurrency)
        finally:
            await conn.close()
    finally:
        await drop_database(args.dsn, name)


if __name__ == "__main__":
    asyncio.run(main())

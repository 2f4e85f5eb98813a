"""Measure the runner's idle wake-up latency and drain rate (not a test; run by hand).

    .venv/bin/python -m tests.measure_wakeup --dsn postgresql://postgres@127.0.0.1:5432/postgres

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

import pgq
from pgq import db, migrations, queries

REPO = Path(__file__).resolve().parent.parent


def dsn_for(admin: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(admin)._replace(path="/" + database))


async def listening(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%'"
        )
    )


def read_starts(run_log: Path) -> dict[int, float]:
    starts: dict[int, float] = {}
    for path in run_log.glob("*.log"):
        for line in path.read_text().splitlines():
            _, job_id, _, _, _, mono = line.split()
            starts[int(job_id)] = float(mono)
    return starts


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


LOG_LEVEL = "warning"


def start_runner(dsn: str, run_log: Path, concurrency: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PGQ_DATABASE_URL": dsn,
        "PGQ_TEST_RUN_LOG": str(run_log),
        "PGQ_LOG_LEVEL": LOG_LEVEL,
    }
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "pgq", "runner", "tests.runner_handlers:runner"),
            *("--concurrency", str(concurrency)),
        ],
        cwd=REPO,
        env=env,
    )


async def wait_ready(conn: asyncpg.Connection, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not await listening(conn):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the runner did not start")
        await asyncio.sleep(0.02)


async def measure_wakeup(dsn: str, conn: asyncpg.Connection, jobs: int, gap: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_log = Path(tmp)
        proc = start_runner(dsn, run_log, 10)
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
            starts = read_starts(run_log)
            ids = sorted(stamps)[10:]  # the first few warm caches up
            lat = [(starts[i] - stamps[i]) * 1000 for i in ids]
            print(
                f"wake-up latency over {len(lat)} jobs (enqueue commit → handler start): "
                f"p50 {percentile(lat, 50):.2f} ms, p95 {percentile(lat, 95):.2f} ms, "
                f"p99 {percentile(lat, 99):.2f} ms, max {max(lat):.2f} ms, "
                f"mean {statistics.mean(lat):.2f} ms"
            )
        finally:
            proc.terminate()
            proc.wait(30)


async def measure_drain(dsn: str, conn: asyncpg.Connection, n: int, concurrency: int) -> None:
    await conn.execute("TRUNCATE pgq.jobs")
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_runner(dsn, Path(tmp), concurrency)
        try:
            await wait_ready(conn, proc)
            async with pgq.Client(dsn) as client:
                t0 = time.monotonic()
                await client.enqueue_many([{"type": "NOOP"} for _ in range(n)])
                t_enq = time.monotonic()
            done = "SELECT count(*) FROM pgq.jobs WHERE status = 'succeeded'"
            while await conn.fetchval(done) < n:  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.01)
            t1 = time.monotonic()
            once = await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE attempts = 1")
            print(
                f"drain: {n} no-op jobs, one runner, concurrency {concurrency}: "
                f"{t1 - t_enq:.2f} s after the enqueue commit ({n / (t1 - t_enq):,.0f} jobs/s; "
                f"enqueue_many took {t_enq - t0:.2f} s); {once} ran exactly once"
            )
        finally:
            proc.terminate()
            proc.wait(30)


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
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_for(args.dsn, name)
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
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

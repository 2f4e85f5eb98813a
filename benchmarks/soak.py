"""Soak: a steady stream of jobs with retention on; do the table, its indexes and the claim
latency stay flat?

    python -m benchmarks.soak                       # 30 minutes at 1,000 jobs/s
    python -m benchmarks.soak --seconds 600 --rate 1000 --keep 60
    python -m benchmarks.soak --seconds 600 --vacuum-every 30     # autovacuum = off

In a fresh database (``bench_soak``, dropped afterwards): a producer enqueues ``--rate``
jobs per second (``enqueue_many`` every 100 ms), one in-process Runner (concurrency 50,
safety re-check every 5 s, so it prunes retention every 5 s) runs them, and succeeded jobs
are kept ``--keep`` seconds (``pgq.set_retention``). A probe claims up to 10 jobs with
``pgq.claim`` every 0.2 s and completes them, timing each claim. Every ``--every``
seconds it prints: jobs enqueued and finished, the queued backlog, the table's and its
indexes' size (``pg_relation_size``, ``pg_indexes_size``) and the probe's claim p50 / p99
over the interval. With ``--vacuum-every`` it runs ``VACUUM pgq.jobs`` itself that often,
for a server with autovacuum off. At the end it checks every enqueued job ran exactly
once (the runner's handler plus the probe) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from typing import Any

import asyncpg

import pgq
from pgq import migrations, queries
from pgq.runner import Runner

DB = "bench_soak"


async def run(
    dsn: str, seconds: float, rate: int, keep: float, every: float, vacuum_every: float
) -> dict[str, Any]:
    admin = await asyncpg.connect(f"{dsn}/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {DB}")
    finally:
        await admin.close()
    url = f"{dsn}/{DB}"
    conn = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn)
        await queries.set_retention(conn, "succeeded", keep)
        return await soak(url, conn, seconds, rate, every, vacuum_every)
    finally:
        await conn.close()
        admin = await asyncpg.connect(f"{dsn}/postgres")
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        finally:
            await admin.close()


async def soak(
    url: str,
    conn: asyncpg.Connection,
    seconds: float,
    rate: int,
    every: float,
    vacuum_every: float,
) -> dict[str, Any]:
    enqueued: list[int] = []
    ran: list[int] = []
    claims: list[float] = []
    runner = Runner(url, worker_id="soak", concurrency=50, safety_interval=5.0)

    progress = asyncio.Event()  # set whenever a job ran

    @runner.handler("soak.noop")
    async def noop(job: pgq.Job) -> None:
        ran.append(job.id)
        progress.set()

    stop = asyncio.Event()

    async def produce() -> None:
        c = await asyncpg.connect(url)
        try:
            await produce_on(c)
        finally:
            await c.close()

    async def produce_on(c: asyncpg.Connection) -> None:
        per_tick = max(1, rate // 10)
        next_at = time.monotonic()
        while not stop.is_set():
            rows = await c.fetch(
                "SELECT id FROM pgq.enqueue_many((SELECT jsonb_agg(jsonb_build_object("
                "'type', 'soak.noop', 'args', jsonb_build_object('i', g)))"
                " FROM generate_series(1, $1) AS g))",
                per_tick,
            )
            enqueued.extend(r["id"] for r in rows)
            next_at += 0.1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def probe() -> None:
        c = await asyncpg.connect(url)
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                rows = await c.fetch("SELECT id, attempts FROM pgq.claim('probe', 10)")
                claims.append((time.perf_counter() - t0) * 1000)
                if rows:
                    await c.execute(
                        "SELECT count(*) FROM pgq.complete_many('probe', $1, $2, NULL)",
                        [r["id"] for r in rows],
                        [r["attempts"] for r in rows],
                    )
                    ran.extend(r["id"] for r in rows)
                await asyncio.sleep(0.2)
        finally:
            await c.close()

    async def vacuum() -> None:
        # in place of autovacuum, on a server that has it off (vacuum_every > 0)
        c = await asyncpg.connect(url)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), vacuum_every)
                if not stop.is_set():
                    await c.execute("VACUUM pgq.jobs")
        finally:
            await c.close()

    samples: list[dict[str, Any]] = []
    run_task = asyncio.create_task(runner.run())
    tasks = [asyncio.create_task(produce()), asyncio.create_task(probe())]
    if vacuum_every > 0:
        tasks.append(asyncio.create_task(vacuum()))
    t_start = time.monotonic()
    print(
        f"{'t s':>6} {'enqueued':>9} {'finished':>9} {'backlog':>8} {'table MB':>9}"
        f" {'idx MB':>7} {'claim p50':>10} {'claim p99':>10}",
        flush=True,
    )
    try:
        while time.monotonic() - t_start < seconds:
            await asyncio.sleep(every)
            window, claims[:] = list(claims), []
            row = await conn.fetchrow(
                "SELECT pg_relation_size('pgq.jobs') AS heap, pg_indexes_size('pgq.jobs') AS idx,"
                " (SELECT count(*) FROM pgq.jobs WHERE status = 'queued') AS backlog"
            )
            window.sort()
            s = {
                "t": round(time.monotonic() - t_start),
                "enqueued": len(enqueued),
                "finished": len(ran),
                "backlog": row["backlog"],
                "table_mb": round(row["heap"] / 2**20, 1),
                "indexes_mb": round(row["idx"] / 2**20, 1),
                "claim_p50_ms": round(statistics.median(window), 2) if window else None,
                "claim_p99_ms": round(window[int(len(window) * 0.99)], 2) if window else None,
            }
            samples.append(s)
            print(
                f"{s['t']:>6} {s['enqueued']:>9} {s['finished']:>9} {s['backlog']:>8}"
                f" {s['table_mb']:>9} {s['indexes_mb']:>7} {s['claim_p50_ms']!s:>10}"
                f" {s['claim_p99_ms']!s:>10}",
                flush=True,
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    # let the runner finish what was enqueued, then stop it
    deadline = time.monotonic() + 60
    while len(ran) < len(enqueued) and time.monotonic() < deadline:
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), 1.0)
    runner.stop()
    await run_task
    once = len(ran) == len(set(ran)) == len(enqueued) and set(ran) == set(enqueued)
    result = {
        "seconds": seconds,
        "rate": rate,
        "vacuum_every": vacuum_every,
        "exactly_once": once,
        "samples": samples,
    }
    print(
        f"enqueued {len(enqueued)}, ran {len(ran)} ({len(set(ran))} distinct): "
        f"{'every job ran exactly once' if once else 'NOT EXACTLY ONCE'}",
        flush=True,
    )
    return result


async def amain(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=1800.0, help="how long to produce")
    p.add_argument("--rate", type=int, default=1000, help="jobs enqueued per second")
    p.add_argument("--keep", type=float, default=60.0, help="succeeded retention, seconds")
    p.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    p.add_argument(
        "--vacuum-every",
        type=float,
        default=0.0,
        help="run VACUUM pgq.jobs this often (seconds); for a server with autovacuum off",
    )
    p.add_argument(
        "--dsn",
        default=os.environ.get("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432"),
        help="server URL without a database",
    )
    a = p.parse_args(argv)
    result = await run(a.dsn, a.seconds, a.rate, a.keep, a.every, a.vacuum_every)
    print(json.dumps(result), flush=True)
    return 0 if result["exactly_once"] else 1


def main() -> None:
    raise SystemExit(asyncio.run(amain()))


if __name__ == "__main__":
    main()

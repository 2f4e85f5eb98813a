"""PgQueuer 1.x adapter: asyncpg driver, Queries.enqueue (lists = one batch INSERT),
PgQueuer entrypoint + QueueManager.run(batch_size=...). Run with
benchmarks/.venvs/pgqueuer.

PgQueuer has no per-process concurrency knob for async handlers (every dequeued
job becomes a task); its throughput setting is the dequeue `batch_size`, which is
what the orchestrator's "concurrency" sweeps here. A finished job is deleted from
the `pgqueuer` table and logged as 'successful' in `pgqueuer_log`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from importlib.metadata import version

import asyncpg
from _harness import System, main
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries


class PgQueuerSystem(System):
    name = "pgqueuer"
    version = version("pgqueuer")
    count_sql = "SELECT count(*) FROM pgqueuer"

    async def install(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    async def enqueue_bulk(self, dsn: str, n: int) -> float:
        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))
            entrypoints = ["noop"] * n
            payloads = [str(i).encode() for i in range(n)]
            priorities = [0] * n
            t0 = time.monotonic()
            await queries.enqueue(entrypoints, payloads, priorities)  # one INSERT
            return time.monotonic() - t0
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def producer(self, dsn: str):
        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))

            async def enqueue_one(i: int) -> None:
                await queries.enqueue("noop", str(i).encode())

            yield enqueue_one
        finally:
            await conn.close()

    async def run_worker(self, dsn, concurrency, hook, stop) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            pgq = PgQueuer.from_asyncpg_connection(conn)

            @pgq.entrypoint("noop")
            async def noop(job: Job) -> None:
                hook(int(job.payload))

            async def stopper() -> None:
                await stop.wait()
                pgq.qm.shutdown.set()

            stopping = asyncio.create_task(stopper())
            try:
                await pgq.qm.run(batch_size=concurrency)
            finally:
                stopping.cancel()
        finally:
            await conn.close()

    async def done_count(self, conn) -> int:
        return await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")

    async def verify(self, conn, n: int) -> dict:
        left = dict(await conn.fetch("SELECT status::text, count(*) FROM pgqueuer GROUP BY 1"))
        log = dict(
            await conn.fetch(
                "SELECT status::text, count(*) FROM pgqueuer_log "
                "WHERE status NOT IN ('queued', 'picked') GROUP BY 1"
            )
        )
        distinct_ok = await conn.fetchval(
            "SELECT count(DISTINCT job_id) FROM pgqueuer_log WHERE status = 'successful'"
        )
        problems = []
        if left:
            problems.append(f"jobs left in the queue table: {left}")
        if log != ({"successful": n} if n else {}) or distinct_ok != n:
            problems.append(
                f"log statuses {log} over {distinct_ok} distinct jobs, expected {n} successful"
            )
        return {"ok": not problems, "statuses": log, "problems": problems}


if __name__ == "__main__":
    main(PgQueuerSystem())

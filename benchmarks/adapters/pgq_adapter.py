"""pgq adapter: pgq.Client (migrate, enqueue, enqueue_many) and pgq.Runner, as
documented in DESIGN.md ("Python API"). Run with the repository's own environment
and the working tree on PYTHONPATH (the orchestrator does this)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from importlib.metadata import PackageNotFoundError, version

# One JSON log line per job would be measured too; the peers log nothing per job
# by default (procrastinate has no handler configured, PgQueuer logs at DEBUG).
os.environ.setdefault("PGQ_LOG_LEVEL", "warning")

import asyncpg
from _harness import System, main

import pgq
from pgq.runner.http import HttpSource


def _version() -> str:
    try:
        return version("pgq-coordinator")
    except PackageNotFoundError:
        return getattr(pgq, "__version__", "working tree")


class Pgq(System):
    name = "pgq"
    version = _version()
    count_sql = "SELECT count(*) FROM pgq.jobs"
    http_runner = True

    async def install(self, dsn: str) -> None:
        async with pgq.Client(dsn) as client:
            await client.migrate()

    async def enqueue_bulk(self, dsn: str, n: int) -> float:
        async with pgq.Client(dsn) as client:
            jobs = [{"type": "NOOP", "args": {"i": i}} for i in range(n)]
            t0 = time.monotonic()
            await client.enqueue_many(jobs)  # one round trip
            return time.monotonic() - t0

    @contextlib.asynccontextmanager
    async def producer(self, dsn: str):
        async with pgq.Client(dsn) as client:

            async def enqueue_one(i: int) -> None:
                await client.enqueue("NOOP", {"i": i})

            yield enqueue_one

    @contextlib.asynccontextmanager
    async def bare_producer(self, dsn: str):
        conn = await asyncpg.connect(dsn)
        try:

            async def insert_one(i: int) -> None:
                await conn.execute(
                    "INSERT INTO pgq.jobs (type, args) VALUES ('NOOP', $1::text::jsonb)",
                    f'{{"i": {i}}}',
                )

            yield insert_one
        finally:
            await conn.close()

    async def run_worker(self, dsn, concurrency, hook, stop) -> None:
        runner = pgq.Runner(dsn=dsn, queues=("default",), concurrency=concurrency)

        @runner.handler("NOOP")
        async def noop(job) -> None:
            hook(job.args["i"])

        async def stopper() -> None:
            await stop.wait()
            runner.stop()

        stopping = asyncio.create_task(stopper())
        # drain --coordinator: the same runner, fed over HTTP (`pgq runner --coordinator`)
        source = HttpSource(self.coordinator) if self.coordinator else None
        try:
            await runner.run(source=source)
        finally:
            stopping.cancel()

    async def done_count(self, conn) -> int:
        return await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE status = 'succeeded'")

    async def verify(self, conn, n: int) -> dict:
        statuses = dict(await conn.fetch("SELECT status::text, count(*) FROM pgq.jobs GROUP BY 1"))
        # attempts counts claims (DESIGN.md, "Settled details"): exactly 1 = ran once.
        not_once = await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE attempts <> 1")
        problems = []
        if statuses != ({"succeeded": n} if n else {}):
            problems.append(f"job statuses {statuses}, expected {n} succeeded")
        if not_once:
            problems.append(f"{not_once} jobs were claimed more or less than once")
        return {"ok": not problems, "statuses": statuses, "problems": problems}


if __name__ == "__main__":
    main(Pgq())

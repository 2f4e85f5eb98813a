"""procrastinate 3.x adapter: App + PsycopgConnector, defer_async / batch_defer_async,
app.run_worker_async(concurrency=...). Run with benchmarks/.venvs/procrastinate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from importlib.metadata import version

from _harness import JobHook, System, main
from procrastinate import App, PsycopgConnector


def make_app(dsn: str, hook: JobHook | None = None, **pool_kwargs) -> tuple[App, object]:
    # Everything but conninfo goes to psycopg_pool.AsyncConnectionPool.
    app = App(connector=PsycopgConnector(conninfo=dsn, **pool_kwargs))

    @app.task(name="noop")
    async def noop(i: int) -> None:
        if hook is not None:
            hook(i)

    return app, noop


class Procrastinate(System):
    name = "procrastinate"
    version = version("procrastinate")
    count_sql = "SELECT count(*) FROM procrastinate_jobs"

    async def install(self, dsn: str) -> None:
        app, _ = make_app(dsn, min_size=1, max_size=1)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def enqueue_bulk(self, dsn: str, n: int) -> float:
        app, noop = make_app(dsn, min_size=1, max_size=1)
        async with app.open_async():
            args = [{"i": i} for i in range(n)]
            t0 = time.monotonic()
            await noop.batch_defer_async(*args)  # one INSERT for all jobs
            return time.monotonic() - t0

    @contextlib.asynccontextmanager
    async def producer(self, dsn: str):
        app, noop = make_app(dsn, min_size=1, max_size=1)
        async with app.open_async():

            async def enqueue_one(i: int) -> None:
                await noop.defer_async(i=i)

            yield enqueue_one

    async def run_worker(self, dsn, concurrency, hook, stop) -> None:
        # The worker fetches jobs one at a time and finishes each on a pooled
        # connection: give the pool room for every concurrent job plus the fetch loop
        # (psycopg_pool's default is 4 connections).
        app, _ = make_app(dsn, hook, min_size=min(4, concurrency + 1), max_size=concurrency + 1)
        async with app.open_async():
            worker = asyncio.create_task(
                app.run_worker_async(concurrency=concurrency, install_signal_handlers=False)
            )
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({worker, stopping}, return_when="FIRST_COMPLETED")
            if worker.done():
                stopping.cancel()
                worker.result()
                raise RuntimeError("procrastinate worker stopped by itself")
            # Documented graceful stop: cancel the run_worker_async task.
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def done_count(self, conn) -> int:
        return await conn.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )

    async def verify(self, conn, n: int) -> dict:
        statuses = dict(
            await conn.fetch("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1")
        )
        multi_start = await conn.fetchval(
            """SELECT count(*) FROM (
                 SELECT job_id FROM procrastinate_events WHERE type = 'started'
                 GROUP BY job_id HAVING count(*) <> 1) s"""
        )
        started = await conn.fetchval(
            "SELECT count(DISTINCT job_id) FROM procrastinate_events WHERE type = 'started'"
        )
        problems = []
        if statuses != ({"succeeded": n} if n else {}):
            problems.append(f"job statuses {statuses}, expected {n} succeeded")
        if multi_start or started != n:
            problems.append(f"{started} jobs started, {multi_start} of them not exactly once")
        return {"ok": not problems, "statuses": statuses, "problems": problems}


if __name__ == "__main__":
    main(Procrastinate())

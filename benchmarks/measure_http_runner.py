"""Measure the drain rate of one HTTP-mode runner (not a test; run by hand).

    .venv/bin/python -m benchmarks.measure_http_runner [--dsn ADMIN_DSN] [--jobs 2000]

Uses ``--dsn`` (or ``PGQ_TEST_DATABASE_URL``), else an embedded PostgreSQL. Creates a
scratch database, starts ``pgq coordinator`` and ``pgq runner tests.runner_handlers:runner
--coordinator URL`` as separate processes (logs at warning), enqueues ``--jobs`` no-op jobs
in one ``enqueue_many`` and times from that commit until the database counts them all
succeeded (polled every 10 ms). ``--database-mode`` runs the same runner on the database
instead, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import aiohttp

from benchmarks.measure_wakeup import timed_drain
from pgq import db, migrations
from pgq.devtools.embedded import EmbeddedPostgres
from tests.support import (
    NO_DATABASE,
    REPO,
    create_database,
    drop_database,
    free_port,
    wait_until,
)


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgq", *args],
        cwd=REPO,
        env={**os.environ, "PGQ_LOG_LEVEL": "warning", **env},
    )


@contextlib.contextmanager
def stopped_at_exit(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:  # in order: the runner before the coordinator it talks to
            proc.terminate()
            proc.wait(30)


async def wait_until_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/health") as resp:
                    return resp.status == 200
            return False

        await wait_until(healthy, timeout=30, interval=0.05)


async def drain(dsn: str, n: int, concurrency: int, database_mode: bool) -> None:
    conn = await db.connect(dsn)
    try:
        await migrations.migrate(conn)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        coordinator = spawn("coordinator", "--port", str(port), env={"PGQ_DATABASE_URL": dsn})
        runner_args = ["runner", "tests.runner_handlers:runner", "--concurrency", str(concurrency)]
        if not database_mode:
            runner_args += ["--coordinator", url]
        await wait_until_healthy(url)
        runner = spawn(
            *runner_args, env={"PGQ_DATABASE_URL": dsn if database_mode else NO_DATABASE}
        )
        with stopped_at_exit(runner, coordinator):
            await asyncio.sleep(2)  # the runner is up and idle (parked in its long poll)
            if runner.poll() is not None:
                raise SystemExit("the runner exited")
            result = await timed_drain(dsn, conn, n, concurrency)
        print(f"{'database' if database_mode else 'HTTP'} mode: {result}")
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQ_TEST_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--database-mode", action="store_true")
    args = parser.parse_args()
    server = None
    admin_dsn = args.dsn
    if not admin_dsn:
        server = EmbeddedPostgres()
        admin_dsn = await asyncio.to_thread(server.start)
    try:
        name = f"pgq_http_measure_{os.getpid()}"
        dsn = await create_database(admin_dsn, name)
        try:
            await drain(dsn, args.jobs, args.concurrency, args.database_mode)
        finally:
            await drop_database(admin_dsn, name)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


if __name__ == "__main__":
    asyncio.run(main())

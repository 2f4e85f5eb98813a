"""Measure the drain rate of one HTTP-mode runner (not a test; run by hand).

    .venv/bin/python -m tests.http_runner_measure [--dsn ADMIN_DSN] [--jobs 2000]

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
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

import pgq
from pgq import db, migrations
from pgq.devtools.embedded import EmbeddedPostgres

from .http_support import free_port
from .runner_support import REPO

NO_DATABASE = "postgresql://nobody@127.0.0.1:1/no_database_here"


def dsn_for(admin: str, database: str) -> str:
    return urlunsplit(urlsplit(admin)._replace(path="/" + database))


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
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise SystemExit("the coordinator did not become healthy")


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
            async with pgq.Client(dsn) as client:
                t0 = time.monotonic()
                await client.enqueue_many([{"type": "NOOP"} for _ in range(n)])
                t_enq = time.monotonic()
            done = "SELECT count(*) FROM pgq.jobs WHERE status = 'succeeded'"
            while await conn.fetchval(done) < n:  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.01)
            t1 = time.monotonic()
            once = await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE attempts = 1")
        mode = "database" if database_mode else "HTTP"
        print(
            f"{mode} mode: {n} no-op jobs, one runner, concurrency {concurrency}: "
            f"{t1 - t_enq:.2f} s after the enqueue commit ({n / (t1 - t_enq):,.0f} jobs/s; "
            f"enqueue_many took {t_enq - t0:.2f} s); {once} ran exactly once"
        )
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
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            await drain(dsn_for(admin_dsn, name), args.jobs, args.concurrency, args.database_mode)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


if __name__ == "__main__":
    asyncio.run(main())

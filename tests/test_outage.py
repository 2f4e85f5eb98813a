"""Back at once after an outage: a private PostgreSQL server (this test stops and starts it,
so never the shared one) goes away for several seconds under a busy runner and a
coordinator with a warm pool; once it answers again, the runner claims within about a
second, and the coordinator's first requests are answered (no 503 from pooled
connections that died with the old server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import pgq
from pgq import db, migrations
from pgq.devtools.embedded import EmbeddedPostgres

from .support import (
    RunnerProcess,
    live_app,
    read_runs,
    silent_proxy,
    start_runner,
    wait_listening,
    wait_until,
)

#: Long enough for every backoff to reach its cap (the old ones: 5 s claims, 10 s listener,
#: which resumed 0.8-3.1 s after the restart, at random: several outages catch that).
OUTAGE_SECONDS = 8
OUTAGES = 3


@pytest.fixture
async def private_server() -> object:
    server = EmbeddedPostgres()
    dsn = await asyncio.to_thread(server.start)
    conn = await db.connect(dsn)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.slow
async def test_runner_and_coordinator_are_back_at_once_after_a_restart(
    private_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    server = private_server
    dsn = server.dsn
    proc: RunnerProcess | None = None
    try:
        async with pgq.Client(dsn) as client, live_app(dsn) as live:
            job = await client.enqueue("TEST", {})
            # A warm pool: many connections, all of which die with the server.
            answers = await asyncio.gather(
                *(live.request("GET", f"/jobs/{job.id}") for _ in range(15))
            )
            assert {status for status, _, _ in answers} == {200}

            proc = start_runner(dsn, tmp_path, "--concurrency", "10", name="busy")
            await wait_listening(proc)
            # Busy: the claim loop is claiming when the server goes away, so it fails and
            # backs off for the whole outage.
            await client.enqueue_many([{"type": "TEST", "args": {"sleep": 0.01}}] * 3000)
            await wait_until(lambda: len(read_runs(tmp_path)) > 100, timeout=20)

            for outage in range(OUTAGES):
                await asyncio.to_thread(server.stop, remove=False)
                await asyncio.sleep(OUTAGE_SECONDS)
                await asyncio.to_thread(server.start)
                t0 = time.monotonic()

                # The coordinator's first requests after the restart: answered, not 503.
                answers = await asyncio.gather(
                    *(live.request("GET", f"/jobs/{job.id}") for _ in range(15)),
                    *(live.request("GET", "/jobs?limit=1") for _ in range(5)),
                )
                statuses = [status for status, _, _ in answers]
                assert statuses == [200] * 20, [body for _, body, _ in answers]

                # The runner claims again within about a second of the server answering.
                def resumed(t0: float = t0) -> list[float]:
                    runs = read_runs(tmp_path)
                    return [r.mono for r in runs if r.what == "start" and r.mono > t0]

                first = min(await wait_until(resumed, timeout=30, interval=0.05))
                assert first - t0 < 1.8, f"outage {outage}: resumed {first - t0:.2f}s after it"
    finally:
        if proc is not None:
            proc.stop()


async def test_reads_after_a_silent_failover_are_answered_not_503(
    dsn: str, client: pgq.Client
) -> None:
    job = await client.enqueue("X")
    async with silent_proxy(dsn) as (proxy, proxied), live_app(proxied) as live:
        answers = await asyncio.gather(*(live.request("GET", f"/jobs/{job.id}") for _ in range(8)))
        assert {status for status, _, _ in answers} == {200}
        proxy.drop()  # every pooled connection is now dead, and nobody knows yet
        answers = await asyncio.gather(
            *(live.request("GET", f"/jobs/{job.id}") for _ in range(8)),
            live.request("GET", "/jobs?limit=1"),
        )
        assert [status for status, _, _ in answers] == [200] * 9, [b for _, b, _ in answers]

"""Back at once after an outage: a private PostgreSQL server (this test stops and starts it,
so never the shared one) goes away for several seconds under a busy runner and a
coordinator with a warm pool; once it answers again, the runner claims within about a
second, and the coordinator's first requests are answered (no 503 from pooled
connections that died with the old server)."""

from __future__ import annotations

import asyncio
import logging
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
    running,
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


async def test_claims_resume_within_a_second_after_failing_for_seconds(
    dsn: str, client: pgq.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim loop's own backoff, alone: the runner's LISTEN connection is spared (so no
    reconnect cuts the backoff short) while its pool loses every connection and cannot
    open new ones; after the seventh failed claim the database answers again, and the next
    claim must come within about a second (the old 5 s cap waited 2.5-5 s here)."""
    caplog.set_level(logging.WARNING, logger="pgq.runner")
    starts: list[float] = []
    async with silent_proxy(dsn) as (proxy, proxied):
        runner = pgq.Runner(proxied, queues=("resume",), concurrency=2)

        @runner.handler("RESUME")
        async def resume(_job: pgq.Job) -> None:
            starts.append(time.monotonic())

        async with running(runner):
            listener_pid = runner.health()["source"]["listener_pid"]
            port = await client.pool.fetchval(
                "SELECT client_port FROM pg_stat_activity WHERE pid = $1", listener_pid
            )

            async def idle() -> bool:  # registered, so an enqueue notifies it (the doorbell)
                return await client.pool.fetchval(
                    "SELECT count(*) FROM pgq.idle_listeners WHERE listener_pid = $1",
                    listener_pid,
                )

            await wait_until(idle)
            proxy.refuse = True
            proxy.drop(keep_port=port, reset_after=0.2)
            # queued behind the runner's back: its LISTEN connection hears of them
            await client.enqueue_many([{"type": "RESUME", "queue": "resume"}] * 20)

            def failures() -> int:
                return sum(
                    getattr(r, "event", None) == "runner.claim_failed" for r in caplog.records
                )

            async def failing() -> bool:
                # a wake-up as an enqueue's would be (the doorbell may have missed arming
                # when the pool went); the loop retries by itself after its first failure
                await client.pool.execute("NOTIFY pgq_resume")
                return failures() > 0

            await wait_until(failing, timeout=10, interval=0.2)
            await wait_until(lambda: failures() >= 7, timeout=30, interval=0.002)
            proxy.refuse = False
            t0 = time.monotonic()
            await wait_until(lambda: starts, timeout=15, interval=0.01)
            assert runner.health()["source"]["listener_connects"] == 1  # never reconnected
    assert starts[0] - t0 < 1.5, f"claims resumed {starts[0] - t0:.2f}s after the database"

"""``pgq runner`` as real processes: many runners at once, kill -9, signals, a database
restart. Handlers are tests/runner_handlers.py; each start and end of a handler is a line in
a per-process file, so "ran exactly once" is checked outside the database."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

import pgq
from pgq import db, migrations
from pgq.devtools.embedded import EmbeddedPostgres

from .support import (
    RunnerProcess,
    job_row,
    read_runs,
    start_runner,
    statuses,
    wait_listening,
    wait_until,
)


@pytest.fixture
def procs():
    started: list[RunnerProcess] = []
    yield started
    for proc in started:
        proc.stop()


def runner(procs: list[RunnerProcess], dsn: str, tmp_path: Path, *args: str, **kw) -> RunnerProcess:
    proc = start_runner(dsn, tmp_path, *args, **kw)
    procs.append(proc)
    return proc


async def all_succeeded(conn: asyncpg.Connection, n: int, timeout: float) -> None:
    async def check():
        return await statuses(conn) == {"succeeded": n}

    try:
        await wait_until(check, timeout=timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"not all {n} jobs succeeded: {await statuses(conn)}") from None


async def handler_started(tmp_path: Path, job_id: int, attempt: int = 1, timeout: float = 10):
    async def check():
        return [
            r
            for r in read_runs(tmp_path)
            if (r.what, r.job_id, r.attempt) == ("start", job_id, attempt)
        ]

    [run] = await wait_until(check, timeout=timeout)
    return run


@pytest.mark.slow
async def test_four_runners_drain_4000_jobs_each_exactly_once(dsn, client, conn, tmp_path, procs):
    runners = [runner(procs, dsn, tmp_path, "--concurrency", "20", name=f"r{i}") for i in range(4)]
    for proc in runners:
        await wait_listening(proc)
    jobs = await client.enqueue_many([{"type": "TEST", "args": {"n": i}} for i in range(4000)])
    await all_succeeded(conn, 4000, timeout=60)

    for proc in runners:
        proc.signal(signal.SIGTERM)
    for proc in runners:
        assert await proc.wait(15) == 0, proc.log()[-2000:]

    starts = Counter(r.job_id for r in read_runs(tmp_path) if r.what == "start")
    assert set(starts) == {j.id for j in jobs}
    assert [job_id for job_id, n in starts.items() if n != 1] == []
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE attempts <> 1") == 0
    pids = {r.pid for r in read_runs(tmp_path)}
    assert len(pids) >= 2, "one runner did all the work"
    # every job's result names the process that ran it, and that process logged its start
    by_job = {r.job_id: r.pid for r in read_runs(tmp_path) if r.what == "start"}
    rows = await conn.fetch("SELECT id, result FROM pgq.jobs")
    assert all(r["result"]["pid"] == by_job[r["id"]] for r in rows)


@pytest.mark.slow
async def test_jobs_of_a_killed_runner_are_rerun_by_another(dsn, client, conn, tmp_path, procs):
    # timeout_seconds 2 → lease 2.5 s; the first attempt would take 30 s
    jobs = await client.enqueue_many(
        [
            {"type": "TEST", "args": {"sleep_first": 30, "sleep": 0.05}, "timeout_seconds": 2}
            for _ in range(3)
        ]
    )
    doomed = runner(procs, dsn, tmp_path, "--concurrency", "5", name="doomed")
    for job in jobs:
        await handler_started(tmp_path, job.id)
    leases = {j.id: (await job_row(conn, j.id))["lease_expires_at"] for j in jobs}
    doomed.kill()
    assert await doomed.wait(10) == -signal.SIGKILL

    rescuer = runner(procs, dsn, tmp_path, "--concurrency", "5", name="rescuer")
    # lease 2.5 s, then a retry backoff of 4-8 s, then 50 ms of work
    await all_succeeded(conn, 3, timeout=20)
    rescuer.signal(signal.SIGTERM)
    assert await rescuer.wait(10) == 0

    runs = read_runs(tmp_path)
    for job in jobs:
        row = await job_row(conn, job.id)
        assert row["attempts"] == 2
        [lease_error] = row["errors"]
        assert lease_error["kind"] == "lease_expired"
        # the rescuer swept the lease when it ran out (its lease timer, not a safety poll)
        swept = datetime.fromisoformat(lease_error["at"])
        lag = (swept - leases[job.id]).total_seconds()
        assert 0 <= lag < 1.0, lag
        mine = [(r.what, r.attempt, r.pid) for r in runs if r.job_id == job.id]
        assert mine == [
            ("start", 1, doomed.pid),
            ("start", 2, rescuer.pid),
            ("end", 2, rescuer.pid),
        ]


@pytest.mark.slow
async def test_sigterm_lets_a_running_job_finish_and_exits_0(dsn, client, conn, tmp_path, procs):
    proc = runner(procs, dsn, tmp_path, "--grace", "5", name="graceful")
    job = await client.enqueue("TEST", {"sleep": 1.0})
    await handler_started(tmp_path, job.id)
    t0 = time.monotonic()
    proc.signal(signal.SIGTERM)
    late = await client.enqueue("TEST", {})  # enqueued during the drain: left for others
    assert await proc.wait(10) == 0
    assert time.monotonic() - t0 < 3
    row = await job_row(conn, job.id)
    assert (row["status"], row["attempts"]) == ("succeeded", 1)
    assert (await job_row(conn, late.id))["status"] == "queued"
    assert '"event":"runner.draining"' in proc.log()


@pytest.mark.slow
async def test_sigterm_releases_a_job_longer_than_the_grace_period(
    dsn, client, conn, tmp_path, procs
):
    proc = runner(procs, dsn, tmp_path, "--grace", "1", name="short-grace")
    job = await client.enqueue("TEST", {"sleep_first": 60, "sleep": 0.05})
    await handler_started(tmp_path, job.id)
    t0 = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert await proc.wait(10) == 0
    assert 1.0 <= time.monotonic() - t0 < 4
    row = await conn.fetchrow(
        "SELECT *, run_at <= now() AS due FROM pgq.jobs WHERE id = $1", job.id
    )
    assert (row["status"], row["attempts"], row["due"]) == ("queued", 1, True)
    assert row["last_error"]["kind"] == "released"

    again = runner(procs, dsn, tmp_path, name="second")
    done = await client.wait(job.id, timeout=15)
    assert (done.status, done.attempt) == ("succeeded", 2)
    assert done.result == {"pid": again.pid}
    again.signal(signal.SIGTERM)
    assert await again.wait(10) == 0


@pytest.mark.slow
async def test_a_second_signal_stops_at_once(dsn, client, conn, tmp_path, procs):
    proc = runner(procs, dsn, tmp_path, "--grace", "60", name="impatient")
    job = await client.enqueue("TEST", {"sleep": 60})
    await handler_started(tmp_path, job.id)
    proc.signal(signal.SIGINT)

    async def draining():
        return '"event":"runner.draining"' in proc.log()

    await wait_until(draining, timeout=5)
    t0 = time.monotonic()
    proc.signal(signal.SIGINT)
    assert await proc.wait(10) == 0  # every held job was released
    assert time.monotonic() - t0 < 3
    row = await job_row(conn, job.id)
    assert (row["status"], row["last_error"]["kind"]) == ("queued", "released")


@pytest.mark.slow
async def test_the_example_runner_processes_jobs_from_the_client_and_from_sql(
    dsn, client, conn, tmp_path, procs
):
    proc = runner(
        procs,
        dsn,
        tmp_path,
        "--queues",
        "default",
        "--concurrency",
        "4",
        target="pgq.examples.seed:runner",
        env={"PGQ_EXAMPLE_FAILURE_RATE": "0"},
        name="seed",
    )
    await wait_listening(proc)
    from_client = await client.enqueue("TMDB_SYNC", {"movieId": 123})
    batch = await client.enqueue("BATCH_QUOTE_PROCESS", {"quotes": ["a", "b", "c"]})
    from_sql = await conn.fetchval("""SELECT id FROM pgq.enqueue('TMDB_SYNC', '{"movieId": 1}')""")
    bad = await conn.fetchval("""SELECT id FROM pgq.enqueue('TMDB_SYNC', '{"movieId": "x"}')""")

    assert (await client.wait(from_client.id, timeout=10)).result == {
        "movieId": 123,
        "title": "Movie #123",
        "synced": True,
    }
    assert (await client.wait(batch.id, timeout=10)).result == {"processed": 3}
    assert (await client.wait(from_sql, timeout=10)).result["movieId"] == 1
    dead = await client.wait(bad, timeout=10)
    assert (dead.status, dead.attempt) == ("dead", 1)

    proc.signal(signal.SIGTERM)
    assert await proc.wait(10) == 0
    lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    ok = [e for e in lines if e["event"] == "job.succeeded" and e["job_id"] == from_sql]
    assert len(ok) == 1
    assert {"ts", "level", "job_type", "queue", "worker_id", "attempt", "duration_ms"} <= set(ok[0])
    assert ok[0]["job_type"] == "TMDB_SYNC" and ok[0]["attempt"] == 1


@pytest.mark.slow
async def test_the_runner_survives_a_postgres_restart(tmp_path, procs):
    server = EmbeddedPostgres()
    dsn = await asyncio.to_thread(server.start)
    try:
        conn = await db.connect(dsn)
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()
        async with pgq.Client(dsn) as client:
            proc = runner(procs, dsn, tmp_path, "--concurrency", "10", name="survivor")
            await wait_listening(proc)
            first = await client.enqueue_many(
                [{"type": "TEST", "args": {"sleep": 0.02}} for _ in range(300)]
            )

            async def some_done():
                async with client.pool.acquire() as c:
                    return await c.fetchval(
                        "SELECT count(*) >= 30 FROM pgq.jobs WHERE status = 'succeeded'"
                    )

            await wait_until(some_done, timeout=20)
            # the pool's connections die with the server; the client reconnects after it
            await asyncio.to_thread(server.restart)

            async def relistened():
                return proc.log().count('"event":"listener.connected"') >= 1

            await wait_until(relistened, timeout=20, interval=0.05)
            conn = await db.connect(dsn)
            try:
                await all_succeeded(conn, 300, timeout=30)
                # An idle runner is woken by its new LISTEN, not by the 60 s safety re-check.
                t0 = time.monotonic()
                late = await client.enqueue("TEST", {})
                run = await handler_started(tmp_path, late.id, timeout=5)
                assert run.mono - t0 < 1.0
                await all_succeeded(conn, 301, timeout=10)
                assert (
                    await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE status = 'running'")
                    == 0
                )
            finally:
                await conn.close()
            assert {j.id for j in first} <= {
                r.job_id for r in read_runs(tmp_path) if r.what == "end"
            }
            proc.signal(signal.SIGTERM)
            assert await proc.wait(15) == 0
            log = proc.log()
            assert '"event":"listener.lost"' in log
    finally:
        await asyncio.to_thread(server.stop)


async def test_sync_handlers_overlap_on_threads_while_async_jobs_run(
    dsn, client, conn, tmp_path, procs
) -> None:
    # three slots: two for the blocking sync handlers, one for the async job meanwhile
    proc = runner(procs, dsn, tmp_path, "--concurrency", "3", name="sync")
    await wait_listening(proc)
    sync_jobs = await client.enqueue_many(
        [{"type": "SYNC_TEST", "args": {"sleep": 1}} for _ in range(2)]
    )
    for job in sync_jobs:
        await handler_started(tmp_path, job.id)
    quick = await client.enqueue("TEST", {"sleep": 0.05})
    await all_succeeded(conn, 3, timeout=15)
    proc.signal(signal.SIGTERM)
    assert await proc.wait(10) == 0, proc.log()[-2000:]

    runs = {(r.what, r.job_id): r for r in read_runs(tmp_path)}
    a, b = (j.id for j in sync_jobs)
    # the two blocking handlers overlap: each started before the other ended
    assert runs["start", a].mono < runs["end", b].mono
    assert runs["start", b].mono < runs["end", a].mono
    span = max(runs["end", a].mono, runs["end", b].mono) - min(
        runs["start", a].mono, runs["start", b].mono
    )
    assert span < 1.8, span  # together, not one after the other (2 s)
    # the async job ran on the event loop while both threads were blocked
    assert runs["end", quick.id].mono < min(runs["end", a].mono, runs["end", b].mono)

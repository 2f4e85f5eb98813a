"""Sync (plain ``def``) handlers on the runner's thread pool, in this test's event loop
against a real database; the process test (overlap, an async job meanwhile) is in
tests/test_runner_processes.py."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from datetime import timedelta

import pgq
from pgq.runner import Runner

from .support import job_row, running, wait_until

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


async def test_a_sync_handler_runs_on_a_thread_and_its_result_is_stored(dsn, client) -> None:
    runner = Runner(dsn, worker_id="sync-test")
    loop_thread = threading.get_ident()
    marker.set("from the runner's context")

    @runner.handler("SYNC")
    def work(job: pgq.Job) -> dict:
        if job.args.get("fail"):
            raise pgq.PermanentError("asked to fail")
        return {
            "on_loop_thread": threading.get_ident() == loop_thread,
            "marker": marker.get(),
            "n": job.args["n"] * 2,
        }

    async with running(runner):
        ok = await client.enqueue("SYNC", {"n": 21})
        bad = await client.enqueue("SYNC", {"fail": True})
        done = await client.wait(ok.id, timeout=10)
        failed = await client.wait(bad.id, timeout=10)
    assert done.status == "succeeded"
    assert done.result == {"on_loop_thread": False, "marker": "from the runner's context", "n": 42}
    assert (failed.status, failed.error["message"]) == ("dead", "asked to fail")


async def test_a_sync_handler_reports_progress_from_its_thread(dsn, client, conn) -> None:
    runner = Runner(dsn, worker_id="sync-test")
    reported = threading.Event()
    finish = threading.Event()

    @runner.handler("SYNC_PROGRESS")
    def work(job: pgq.Job) -> str:
        stored = job.report_progress_sync({"done": 1, "total": 2})
        reported.set()
        finish.wait(10)
        return "stored" if stored else "refused"

    async with running(runner):
        job = await client.enqueue("SYNC_PROGRESS", {})
        await wait_until(reported.is_set, timeout=10)
        assert (await job_row(conn, job.id))["progress"] == {"done": 1, "total": 2}
        finish.set()
        done = await client.wait(job.id, timeout=10)
    assert (done.status, done.result) == ("succeeded", "stored")


async def test_a_sync_handler_that_returns_a_coroutine_is_an_error(dsn, client) -> None:
    runner = Runner(dsn, worker_id="sync-test")

    async def forgot():
        return 1

    @runner.handler("ODD")
    def odd(job):
        return forgot()

    async with running(runner):
        job = await client.enqueue("ODD", max_attempts=1)
        done = await client.wait(job.id, timeout=10)
    assert done.status == "dead"
    assert "declare it `async def`" in done.error["message"]


async def test_a_timed_out_sync_handler_fails_the_job_and_its_late_result_is_dropped(
    dsn, client, conn
) -> None:
    runner = Runner(dsn, worker_id="sync-test", concurrency=2)
    finished = threading.Event()
    release = threading.Event()

    @runner.handler("SLOW", timeout=0.3)
    def slow(job):
        release.wait(30)  # cannot be interrupted: runs on after the timeout
        finished.set()
        return "late"

    async with running(runner):
        job = await client.enqueue("SLOW", max_attempts=1, timeout_seconds=60)
        done = await client.wait(job.id, timeout=10)
        assert (done.status, done.error["kind"]) == ("dead", "timeout")
        # failed at the timeout, while the thread still runs: not when it returned
        assert not finished.is_set()
        release.set()
        await asyncio.to_thread(finished.wait, 5)
        await asyncio.sleep(0.1)
    row = await job_row(conn, job.id)
    assert (row["status"], row["result"], row["attempts"]) == ("dead", None, 1)
    assert runner.counts["succeeded"] == 0


async def test_cancelling_a_job_whose_sync_handler_runs_frees_its_slot(dsn, client) -> None:
    runner = Runner(dsn, worker_id="sync-test", concurrency=2)
    started = threading.Event()
    release = threading.Event()

    @runner.handler("BLOCK")
    def block(job):
        if job.args.get("quick"):
            return "quick"
        started.set()
        release.wait(10)
        return "late"

    async with running(runner):
        job = await client.enqueue("BLOCK")
        await asyncio.to_thread(started.wait, 10)
        await client.cancel(job.id)
        # the runner carries on: another job runs on the pool's second thread
        other = await client.enqueue("BLOCK", {"quick": True})
        assert (await client.wait(other.id, timeout=10)).result == "quick"
        release.set()
    final = await client.get(job.id)
    assert (final.status, final.result) == ("cancelled", None)


async def test_stop_releases_a_sync_job_past_the_grace_period(dsn, client, conn) -> None:
    runner = Runner(dsn, worker_id="sync-test", grace=0.3)
    started = threading.Event()
    release = threading.Event()
    returned = threading.Event()

    @runner.handler("BLOCK")
    def block(job):
        started.set()
        release.wait(30)
        returned.set()

    task = asyncio.create_task(runner.run())
    job = await client.enqueue("BLOCK", max_attempts=1)
    await asyncio.to_thread(started.wait, 10)
    runner.stop()
    await asyncio.wait_for(task, 10)
    assert not returned.is_set()  # stopped past the grace period, not when the thread returned
    release.set()
    row = await job_row(conn, job.id)
    assert (row["status"], row["last_error"]["kind"]) == ("queued", "released")
    assert runner.clean_exit and runner.counts["released"] == 1


async def test_heartbeats_extend_the_lease_while_a_sync_handler_blocks(dsn, client, conn) -> None:
    runner = Runner(dsn, worker_id="sync-test")
    started = threading.Event()
    release = threading.Event()

    @runner.handler("LONG")
    def long(job):
        started.set()
        release.wait(10)
        return "done"

    async with running(runner):
        # lease 1.25 × 2 s = 2.5 s, heartbeat every ≈ 0.83 s, from the event loop
        job = await client.enqueue("LONG", timeout_seconds=2)
        await asyncio.to_thread(started.wait, 10)
        first = (await job_row(conn, job.id))["lease_expires_at"]

        async def extended():
            row = await job_row(conn, job.id)
            return row["lease_expires_at"] > first + timedelta(seconds=0.5)

        await wait_until(extended, timeout=3)
        release.set()
        done = await client.wait(job.id, timeout=10)
    assert (done.status, done.result) == ("succeeded", "done")

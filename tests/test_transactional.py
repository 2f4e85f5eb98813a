"""Transactional handlers: the handler's writes through ``job.connection`` commit with the
job's success or not at all (pgq/runner/transaction.py). In this test's event loop against a
real database, and as real processes for ``kill -9`` and the HTTP-mode refusal."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

import pgq
from pgq.runner import Runner

from .support import REPO, job_row, read_runs, running, start_runner, wait_until
from .tx_handlers import TABLE


@pytest.fixture
async def effects(conn):
    await conn.execute(TABLE)
    return conn


async def rows(conn) -> list[tuple[int, int]]:
    return [
        tuple(r) for r in await conn.fetch("SELECT job_id, attempt FROM tx_effects ORDER BY 1, 2")
    ]


def tx_runner(dsn: str, **kw) -> Runner:
    runner = Runner(dsn, worker_id="tx-test", **kw)
    gate = asyncio.Event()

    @runner.handler("TX", transactional=True)
    async def tx(job: pgq.Job):
        await job.connection.execute(
            "INSERT INTO tx_effects VALUES ($1, $2, 0)", job.id, job.attempt
        )
        what = job.args.get("then")
        if what == "fail":
            raise RuntimeError("asked to fail")
        if what == "retry" and job.attempt == 1:
            raise pgq.RetryLater(0)
        if what == "sleep":
            await asyncio.sleep(30)
        if what == "wait":
            await gate.wait()
        if what == "deferred":  # breaks a deferred constraint: found at COMMIT
            await job.connection.execute("INSERT INTO tx_deferred VALUES (1), (1)")
        if what == "nested":
            try:
                async with job.connection.transaction():  # a savepoint
                    await job.connection.execute(
                        "INSERT INTO tx_effects VALUES ($1, -1, 0)", job.id
                    )
                    raise LookupError("undone alone")
            except LookupError:
                pass
        return {"attempt": job.attempt}

    runner.gate = gate  # type: ignore[attr-defined]
    return runner


async def test_success_commits_the_handlers_writes_with_the_completion(dsn, client, effects):
    runner = tx_runner(dsn)
    async with running(runner):
        job = await client.enqueue("TX", {"then": "nested"})
        done = await client.wait(job.id, timeout=10)
    assert (done.status, done.result) == ("succeeded", {"attempt": 1})
    assert await rows(effects) == [(job.id, 1)]  # the savepoint's row was rolled back alone
    assert runner.counts["succeeded"] == 1


async def test_an_exception_rolls_the_writes_back_and_fails_the_attempt(dsn, client, effects):
    runner = tx_runner(dsn)
    async with running(runner):
        dead = await client.enqueue("TX", {"then": "fail"}, max_attempts=1)
        retried = await client.enqueue("TX", {"then": "retry"}, max_attempts=2)
        dead = await client.wait(dead.id, timeout=10)
        retried = await client.wait(retried.id, timeout=10)
    assert (dead.status, dead.error["message"]) == ("dead", "asked to fail")
    # the failed attempt's write is gone; the retry's committed with its success
    assert (retried.status, retried.attempt) == ("succeeded", 2)
    assert await rows(effects) == [(retried.id, 2)]


async def test_a_timeout_rolls_back(dsn, client, effects):
    runner = tx_runner(dsn)
    async with running(runner):
        job = await client.enqueue("TX", {"then": "sleep"}, max_attempts=1, timeout_seconds=1)
        done = await client.wait(job.id, timeout=10)
    assert (done.status, done.error["kind"]) == ("dead", "timeout")
    assert await rows(effects) == []


async def test_a_lost_lease_rolls_everything_back(dsn, client, effects):
    """pgq.complete refuses (PQ409) in the handler's transaction: its writes go with it."""
    runner = tx_runner(dsn)
    async with running(runner):
        job = await client.enqueue("TX", {"then": "wait"}, max_attempts=1)
        await wait_until(lambda: runner.running_jobs == 1)
        # The lease runs out meanwhile: expired, and out of attempts, the job is dead. One
        # transaction: once a lapsed lease is committed, the runner's own lease sweeper
        # may expire it first (it learns the lease from pgq.next_due whenever it idles).
        async with effects.transaction():
            await effects.execute(
                "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1",
                job.id,
            )
            assert await effects.fetchval("SELECT pgq.expire_leases()") == 1
        runner.gate.set()
        await wait_until(lambda: runner.counts["lost"] == 1)
    row = await job_row(effects, job.id)
    assert (row["status"], row["last_error"]["kind"]) == ("dead", "lease_expired")
    assert await rows(effects) == []
    assert runner.counts["succeeded"] == 0


async def test_a_cancelled_job_rolls_back(dsn, client, effects):
    runner = tx_runner(dsn)
    async with running(runner):
        job = await client.enqueue("TX", {"then": "wait"})
        await wait_until(lambda: runner.running_jobs == 1)
        await client.cancel(job.id)
        await wait_until(lambda: runner.counts["cancelled"] == 1)
    assert (await job_row(effects, job.id))["status"] == "cancelled"
    assert await rows(effects) == []


async def test_a_write_refused_at_commit_fails_the_attempt(dsn, client, effects):
    await effects.execute(
        "CREATE TABLE tx_deferred (n int, CONSTRAINT tx_deferred_unique UNIQUE (n)"
        " DEFERRABLE INITIALLY DEFERRED)"
    )
    runner = tx_runner(dsn)
    async with running(runner):
        job = await client.enqueue("TX", {"then": "deferred"}, max_attempts=1)
        done = await client.wait(job.id, timeout=10)
    assert done.status == "dead"
    assert "tx_deferred_unique" in done.error["message"]
    assert await rows(effects) == []
    assert await effects.fetchval("SELECT count(*) FROM tx_deferred") == 0


async def test_heartbeats_go_on_while_every_slot_holds_a_transaction(dsn, client, effects):
    runner = tx_runner(dsn, concurrency=2)
    async with running(runner):
        # timeout 3 s: a heartbeat every 1.25 s, each on the runner's own pool
        jobs = [await client.enqueue("TX", {"then": "wait"}, timeout_seconds=3) for _ in range(2)]
        await wait_until(lambda: runner.running_jobs == 2)
        first = {j.id: (await job_row(effects, j.id))["lease_expires_at"] for j in jobs}

        async def renewed() -> bool:
            rows_now = [await job_row(effects, j.id) for j in jobs]
            return all(r["lease_expires_at"] > first[r["id"]] for r in rows_now)

        await wait_until(renewed, timeout=10)
        runner.gate.set()
        for job in jobs:
            assert (await client.wait(job.id, timeout=10)).status == "succeeded"
    assert await rows(effects) == sorted((j.id, 1) for j in jobs)


def test_a_sync_transactional_handler_is_refused() -> None:
    runner = Runner("postgresql://unused")
    with pytest.raises(TypeError, match="must be an `async def`"):

        @runner.handler("SYNC_TX", transactional=True)
        def sync_tx(job):
            pass


def test_http_mode_refuses_a_transactional_handler_at_start_up(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgq",
            "runner",
            "tests.tx_handlers:runner",
            "--coordinator",
            "http://127.0.0.1:9",
        ],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "transactional handlers (TX_WRITE) need the database" in err, err


@pytest.mark.slow
async def test_a_runner_process_commits_success_with_its_writes_and_nothing_of_a_failure(
    dsn, client, effects, tmp_path
):
    ok = await client.enqueue("TX_WRITE")
    bad = await client.enqueue("TX_WRITE", {"fail": True}, max_attempts=1)
    proc = start_runner(dsn, tmp_path, target="tests.tx_handlers:runner", name="tx")
    try:
        ok = await client.wait(ok.id, timeout=30)
        bad = await client.wait(bad.id, timeout=30)
        proc.signal(signal.SIGTERM)
        assert await proc.wait(10) == 0
    finally:
        proc.stop()
    assert (ok.status, ok.result) == ("succeeded", {"pid": proc.pid})
    assert (bad.status, bad.error["message"]) == ("dead", "asked to fail")
    # the failing handler wrote its row too (its "start" line is there): rolled back
    assert {(r.what, r.job_id) for r in read_runs(tmp_path)} >= {("start", bad.id)}
    rows = await effects.fetch("SELECT job_id, attempt, pid FROM tx_effects")
    assert [tuple(r) for r in rows] == [(ok.id, 1, proc.pid)]


@pytest.mark.slow
async def test_kill_9_mid_handler_leaves_nothing_and_the_rerun_writes_once(
    dsn, client, effects, tmp_path
):
    # timeout_seconds 2 → lease 2.5 s; attempt 1 would take 30 s after its write
    job = await client.enqueue("TX_WRITE", {"sleep_first": 30}, timeout_seconds=2)
    doomed = start_runner(dsn, tmp_path, target="tests.tx_handlers:runner", name="doomed")
    try:
        await wait_until(lambda: any(r.what == "start" for r in read_runs(tmp_path)), timeout=15)
        doomed.kill()
        assert await doomed.wait(10) == -signal.SIGKILL
    finally:
        doomed.stop()
    assert await rows(effects) == []  # the write died with the connection

    rescuer = start_runner(dsn, tmp_path, target="tests.tx_handlers:runner", name="rescuer")
    try:
        # lease 2.5 s, then a retry backoff of 4-8 s
        done = await client.wait(job.id, timeout=30)
        rescuer.signal(signal.SIGTERM)
        assert await rescuer.wait(10) == 0
    finally:
        rescuer.stop()
    assert (done.status, done.attempt) == ("succeeded", 2)
    assert [
        tuple(r) for r in await effects.fetch("SELECT job_id, attempt, pid FROM tx_effects")
    ] == [(job.id, 2, rescuer.pid)]
    assert done.result == {"pid": rescuer.pid}

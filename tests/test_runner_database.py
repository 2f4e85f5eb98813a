"""What only the database source does: LISTEN wake-ups and reconnects, the lease sweep of an
idle runner, due times without notifications, batch sizes, connection retries. The runner
behaviour common to both sources is ``test_runner.py``."""

from __future__ import annotations

import asyncio
import logging
import time

import pgq
from pgq import queries
from pgq.backoff import Backoff
from pgq.runner import DatabaseSource, Runner
from pgq.runner import core as runner_core

from .support import running, wait_until


def make_runner(dsn: str, **kwargs) -> Runner:
    kwargs.setdefault("worker_id", "test-runner")
    return Runner(dsn, **kwargs)


async def test_an_idle_runner_expires_a_crashed_runners_lease_on_time(dsn, client, conn) -> None:
    runner = make_runner(dsn)

    @runner.handler("X")
    async def x(job):
        return None

    job = await client.enqueue("X", timeout_seconds=1)
    # A runner that will never come back claims it: lease 1.25 s.
    [claimed] = await queries.claim(conn, "crashed-runner", 1)
    async with running(runner):
        row = await wait_until(
            lambda: conn.fetchrow(
                "SELECT * FROM pgq.jobs WHERE id = $1 AND status <> 'running'", job.id
            ),
            timeout=5,
        )
    assert row["status"] == "queued" and row["last_error"]["kind"] == "lease_expired"
    # expired by the runner's lease timer, not by a 60 s safety re-check
    swept_after = (row["updated_at"] - claimed.lease_expires_at).total_seconds()
    assert 0 <= swept_after < 0.5, swept_after


async def test_a_delayed_job_starts_when_due_without_a_notification(dsn, client, conn) -> None:
    runner = make_runner(dsn)
    starts: dict[int, float] = {}

    @runner.handler("LATER")
    async def later(job):
        starts[job.id] = time.time()

    # One job known before the runner starts (never notified to it), one enqueued while it
    # idles (its insert notifies; the moment it becomes due sends nothing).
    before = await client.enqueue("LATER", delay_seconds=2)
    async with running(runner):
        during = await client.enqueue("LATER", delay_seconds=2)
        await client.wait(during.id, timeout=10)
        await client.wait(before.id, timeout=10)
    for job in (before, during):
        late = starts[job.id] - job.run_at.timestamp()
        assert 0 <= late < 0.1, (job.id, late)


async def test_claims_come_in_batches_sized_to_free_slots(dsn, client, conn) -> None:
    runner = make_runner(dsn, concurrency=50)
    source = DatabaseSource(dsn)
    ran = 0

    @runner.handler("NOOP")
    async def noop(job):
        nonlocal ran
        ran += 1

    await client.enqueue_many([{"type": "NOOP"} for _ in range(2000)])
    task = asyncio.create_task(runner.run(source=source))
    try:
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) = 2000 FROM pgq.jobs WHERE status = 'succeeded'"
            ),
            timeout=30,
        )
    finally:
        runner.stop()
        await task
    assert ran == 2000
    assert source.claims <= 200, source.claims  # ~40 full batches, not 2000 round trips
    assert source.batches <= 400, source.batches


async def test_after_losing_its_listen_connection_the_runner_listens_again(
    dsn, client, conn
) -> None:
    runner = make_runner(dsn)

    @runner.handler("X")
    async def x(job):
        return None

    async with running(runner):
        listener = runner._source._listener
        pid = listener._conn.get_server_pid()
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await wait_until(lambda: listener.connects == 2, timeout=15)
        health = runner.health()["source"]
        assert health["listener_connected"] and health["listener_connects"] == 2
        new_pid = health["listener_pid"]
        assert new_pid not in (None, pid)
        # An enqueue notifies only registered idle listeners: wait until the runner has
        # registered again, under the new connection's pid, after the claim its reconnect
        # triggered found nothing.
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) > 0 FROM pgq.idle_listeners WHERE listener_pid = $1", new_pid
            ),
            timeout=15,
        )
        rung = asyncio.Event()
        listener.subscribe("pgq_default", lambda _channel, _payload: rung.set())
        # A job enqueued now is announced on the new connection and picked up at once:
        # well within 5 s, where the safety re-check would take 60-66 s.
        job = await client.enqueue("X")
        await asyncio.wait_for(rung.wait(), 5)
        assert (await client.wait(job.id, timeout=5)).status == "succeeded"
        assert runner.health()["source"]["last_notification_at"] is not None


async def test_run_can_be_stopped_before_it_connects(dsn, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pgq.runner")
    runner = make_runner("postgresql://postgres@127.0.0.1:1/none")  # nothing listens there

    @runner.handler("W")
    async def work(job):
        return None

    task = asyncio.create_task(runner.run())
    # it keeps retrying the connection meanwhile
    await wait_until(
        lambda: sum(getattr(r, "event", "") == "runner.connecting" for r in caplog.records) >= 2
    )
    assert not task.done()
    runner.stop()
    await asyncio.wait_for(task, 5)


class _OutageSource(DatabaseSource):
    """A real DatabaseSource whose claims fail as if the database were down until
    ``recover()``, which tells the runner the way a reconnect does."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.down = True
        self.failed = asyncio.Event()

    async def claim(self, max_jobs: int) -> list[pgq.Job]:
        if self.down:
            self.failed.set()
            raise pgq.DatabaseUnavailable("the database is down (simulated)")
        return await super().claim(max_jobs)

    def recover(self) -> None:
        self.down = False
        assert self._hooks is not None
        self._hooks.reconnected()


async def test_a_reconnect_cuts_the_claim_backoff_short(dsn, client, monkeypatch) -> None:
    # Back off 5-10 s after a failed claim: far longer than the test waits for the job.
    monkeypatch.setattr(runner_core, "reconnecting", lambda: Backoff(10.0, 10.0))
    runner = make_runner(dsn)
    source = _OutageSource(dsn)

    @runner.handler("R")
    async def r(job):
        return "ran"

    task = asyncio.create_task(runner.run(source=source))
    try:
        await asyncio.wait_for(source.failed.wait(), 10)  # now backing off
        job = await client.enqueue("R")
        source.recover()
        done = await client.wait(job.id, timeout=3)
        assert (done.status, done.result) == ("succeeded", "ran")
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)

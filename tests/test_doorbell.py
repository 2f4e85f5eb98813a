"""The doorbell (sql/0003_notifications.sql, pgq/doorbell.py): an enqueue notifies only queues
with a registered idle listener, and the advisory-lock handshake loses no wake-up.

Every runner here has a 600 s safety re-check, so a lost wake-up cannot be rescued by it:
the job would wait ten minutes and miss the test's one-second deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import asyncpg
import pytest

import pgq
from pgq import db, queries
from pgq.runner import DatabaseSource, Runner

from .support import running, wait_until

NO_SAFETY = 600.0  # the safety re-check never fires during a test
DEADLINE = 1.0  # seconds from an enqueue's commit to its handler's start


class Started:
    """Handler start times (time.monotonic()) by the job's ``n`` argument."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.changed = asyncio.Event()

    def runner(self, dsn: str, name: str, **kwargs) -> Runner:
        runner = Runner(dsn, worker_id=name, safety_interval=NO_SAFETY, **kwargs)

        @runner.handler("T")
        async def record(job: pgq.Job) -> None:
            self.at.setdefault(job.args["n"], time.monotonic())
            self.changed.set()
            await asyncio.sleep(random.uniform(0, 0.002))

        return runner

    async def wait_for(self, n: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while n not in self.at:
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"job {n} did not start within {timeout}s: lost wake-up")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return self.at[n]


async def enqueue(conn: asyncpg.Connection, n: int, hold: float) -> float:
    """Enqueue job ``n``; with ``hold``, keep the transaction open that long after the
    INSERT. Returns time.monotonic() once the commit returned."""
    if hold <= 0:
        await queries.enqueue(conn, "T", {"n": n})
    else:
        async with conn.transaction():
            await queries.enqueue(conn, "T", {"n": n})
            await asyncio.sleep(hold)
    return time.monotonic()


async def idle_rows(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    rows = await conn.fetch("SELECT queue, listener_pid FROM pgq.idle_listeners ORDER BY 1, 2")
    return [(r["queue"], r["listener_pid"]) for r in rows]


def source_of(runner: Runner) -> DatabaseSource:
    source = runner._source
    assert isinstance(source, DatabaseSource)
    return source


async def test_stress_no_job_waits_for_the_safety_recheck(dsn: str) -> None:
    """Two runners; 10 s of enqueues. Free-running: 4 producers at random 0-5 ms intervals,
    half holding their transaction open 0-3 ms after the INSERT. Then rounds: one job at a
    time, each enqueued 0-3 ms after the previous one started (while the runners are going
    idle: registering, at the barrier, claiming once more) — there a lost wake-up cannot be
    hidden by a later enqueue's notification."""
    started = Started()
    runners = [started.runner(dsn, f"r{i}", concurrency=4) for i in range(2)]
    committed: dict[int, float] = {}
    conns = [await db.connect(dsn) for _ in range(4)]
    try:
        async with running(runners[0]), running(runners[1]):
            counter = iter(range(1_000_000))

            async def produce(conn: asyncpg.Connection, until: float) -> None:
                while time.monotonic() < until:
                    await asyncio.sleep(random.uniform(0, 0.005))
                    n = next(counter)
                    hold = random.uniform(0, 0.003) if random.random() < 0.5 else 0.0
                    committed[n] = await enqueue(conn, n, hold)

            until = time.monotonic() + 5.0
            await asyncio.gather(*(produce(c, until) for c in conns))
            free_running = len(committed)
            for n in list(committed):
                await started.wait_for(n, DEADLINE)

            rounds_until = time.monotonic() + 5.0
            while time.monotonic() < rounds_until:
                await asyncio.sleep(random.uniform(0, 0.003))
                n = next(counter)
                hold = random.uniform(0, 0.003) if random.random() < 0.5 else 0.0
                committed[n] = await enqueue(conns[0], n, hold)
                await started.wait_for(n, DEADLINE)
            rounds = len(committed) - free_running
            registrations = sum(source_of(r)._doorbell.registrations for r in runners)  # type: ignore[union-attr]
    finally:
        for conn in conns:
            await conn.close()

    delays = sorted(started.at[n] - committed[n] for n in committed)
    print(  # visible with pytest -s: the numbers behind the verdict
        f"doorbell stress: {free_running} free-running jobs, {rounds} rounds, "
        f"{registrations} arms; commit-to-start p50 {delays[len(delays) // 2] * 1000:.1f} ms, "
        f"max {delays[-1] * 1000:.1f} ms"
    )
    late = {
        n: started.at[n] - committed[n]
        for n in committed
        if started.at[n] - committed[n] > DEADLINE
    }
    assert not late, f"jobs that waited over {DEADLINE}s: {late}"
    assert free_running > 300 and rounds > 100, (free_running, rounds)
    assert registrations > 200  # the runners really went idle (and armed) again and again


async def test_a_commit_racing_a_runner_going_idle_still_wakes_it(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """The handshake. An enqueuer that takes its doorbell key early (SET CONSTRAINTS ALL
    IMMEDIATE) has read the registry — empty — and not committed when the runner registers.
    The runner's barrier cannot pass, so it must not sleep: after the commit, the job runs."""
    started = Started()
    runner = started.runner(dsn, "r")
    tx = conn.transaction()
    await tx.start()
    open_tx = True
    try:
        await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        await queries.enqueue(conn, "T", {"n": 1})  # key taken, registry read: nobody idle
        async with running(runner):
            source = source_of(runner)
            assert source._listener is not None and source._doorbell is not None
            listener_pid = source._listener.pid
            other = await db.connect(dsn)
            try:

                async def registered() -> bool:
                    return await idle_rows(other) == [("default", listener_pid)]

                await wait_until(registered)
            finally:
                await other.close()
            await asyncio.sleep(0.3)  # several barrier attempts time out meanwhile
            assert 1 not in started.at
            assert not source._doorbell.armed(["default"])
            await tx.commit()  # no notification: it read an empty registry
            open_tx = False
            committed = time.monotonic()
            assert await started.wait_for(1, DEADLINE) - committed < DEADLINE
    finally:
        if open_tx:
            await tx.rollback()


async def test_an_open_enqueue_when_the_runner_registers_wakes_it_at_commit(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """The deferred (commit-time) form: an enqueuer whose INSERT ran before the runner
    registered, and commits after the runner sleeps, reads the registry at COMMIT."""
    started = Started()
    runner = started.runner(dsn, "r")
    async with running(runner):
        tx = conn.transaction()
        await tx.start()
        await queries.enqueue(conn, "T", {"n": 1})
        source = source_of(runner)
        doorbell = source._doorbell
        assert doorbell is not None
        await wait_until(lambda: doorbell.armed(["default"]))
        claims = source.claims
        await asyncio.sleep(0.1)
        assert source.claims == claims  # asleep: nothing polls
        await tx.commit()
        committed = time.monotonic()
        assert await started.wait_for(1, DEADLINE) - committed < DEADLINE


async def test_the_barrier_waits_for_an_enqueuer_holding_the_key(
    dsn: str, conn: asyncpg.Connection
) -> None:
    other = await db.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            await queries.enqueue(conn, "T", {"n": 1}, queue="q1")
            t0 = time.monotonic()
            assert await queries.wait_for_enqueuers(other, ["q1"]) is False  # lock_timeout
            assert 0.05 < time.monotonic() - t0 < 1.0
            assert await queries.wait_for_enqueuers(other, ["q2"]) is True  # another key
        assert await queries.wait_for_enqueuers(other, ["q1"]) is True
        # nothing left held: the session's advisory locks are all released
        assert (
            await other.fetchval(
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
            == 0
        )
    finally:
        await other.close()


async def test_a_barrier_cut_off_mid_call_closes_its_connection(
    dsn: str, conn: asyncpg.Connection
) -> None:
    # The barrier's keys are session locks and pgq's pools do not reset sessions: a
    # pooled connection whose barrier call was cut off must not go back to the pool,
    # where a key it might still hold would block every enqueue into the queue.
    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    try:
        first = await pool.fetchval("SELECT pg_backend_pid()")
        async with conn.transaction():
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the enqueuer holds the key
            await queries.enqueue(conn, "T", {"n": 1}, queue="q1")
            for _ in range(20):
                barrier = asyncio.create_task(queries.pass_barrier(pool, ["q1"]))
                await asyncio.sleep(0.02)  # sent, and waiting on the key (100 ms at most)
                barrier.cancel()
                try:
                    await barrier
                except asyncio.CancelledError:
                    break  # cut off mid-call
                # it returned (lock_timeout) before the cancel landed: again
            else:
                pytest.fail("no barrier call was cut off mid-call")
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1", first
            ),
            timeout=5,
        )
        # the pool carries on with a new connection, and the barrier passes
        assert await pool.fetchval("SELECT pg_backend_pid()") != first
        assert await queries.pass_barrier(pool, ["q1"]) is True
    finally:
        await db.close_pool(pool)


async def test_a_dead_registrant_is_cleaned_up(dsn: str, conn: asyncpg.Connection) -> None:
    gone = await db.connect(dsn)
    gone_pid = await gone.fetchval("SELECT pg_backend_pid()")
    assert await gone.fetchval("SELECT pgq.listen_idle('{default,q1}')") == 2
    await gone.close()

    async def dead() -> bool:
        return not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", gone_pid
        )

    await wait_until(dead)
    assert await idle_rows(conn) == [("default", gone_pid), ("q1", gone_pid)]
    assert await queries.forget_dead_listeners(conn) == 2
    assert await idle_rows(conn) == []

    # and a runner cleans up at start-up
    gone = await db.connect(dsn)
    gone_pid = await gone.fetchval("SELECT pg_backend_pid()")
    await gone.fetchval("SELECT pgq.listen_idle('{q2}')")
    await gone.close()
    await wait_until(dead)
    runner = Started().runner(dsn, "r", queues=["q1"])
    async with running(runner):
        pid = source_of(runner)._listener.pid  # type: ignore[union-attr]

        async def only_the_runner() -> bool:
            return await idle_rows(conn) == [("q1", pid)]

        await wait_until(only_the_runner)
    assert await idle_rows(conn) == []  # deregistered at stop


async def test_a_live_registrant_is_kept_and_refusals_have_sqlstates(
    conn: asyncpg.Connection,
) -> None:
    assert await conn.fetchval("SELECT pgq.listen_idle('{default}')") == 1
    assert await conn.fetchval("SELECT pgq.listen_idle('{default}')") == 0  # idempotent
    assert await queries.forget_dead_listeners(conn) == 0
    for call in (
        "SELECT pgq.listen_idle('{Bad}')",
        "SELECT pgq.listen_idle('{}')",
        "SELECT pgq.listen_idle('{default}', -1)",
        "SELECT pgq.wait_for_enqueuers(NULL)",
    ):
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.fetchval(call)
        assert info.value.sqlstate == "PQ400", call
    assert await conn.fetchval("SELECT pgq.unlisten_idle()") == 1


async def test_a_listen_reconnect_moves_the_registration_to_the_new_session(
    dsn: str, conn: asyncpg.Connection
) -> None:
    started = Started()
    runner = started.runner(dsn, "r")
    async with running(runner):
        listener = source_of(runner)._listener
        assert listener is not None
        old = listener.pid

        async def registered_as(pid: int | None) -> bool:
            return pid is not None and await idle_rows(conn) == [("default", pid)]

        await wait_until(lambda: registered_as(old))
        await conn.execute("SELECT pg_terminate_backend($1)", old)
        await wait_until(lambda: registered_as(listener.pid if listener.pid != old else None))
        committed = await enqueue(conn, 1, 0)
        assert await started.wait_for(1, DEADLINE) - committed < DEADLINE


async def test_a_busy_runner_is_not_registered(dsn: str, conn: asyncpg.Connection) -> None:
    """Every slot taken: deregistered, so enqueues stop notifying it."""
    release = asyncio.Event()
    runner = Runner(dsn, worker_id="r", safety_interval=NO_SAFETY, concurrency=1)

    @runner.handler("T")
    async def block(job: pgq.Job) -> None:
        await release.wait()

    async with running(runner):
        await wait_until(lambda: _has_rows(conn))
        await queries.enqueue(conn, "T", {"n": 1})

        async def none() -> bool:
            return await idle_rows(conn) == []

        await wait_until(none)
        release.set()
        await wait_until(lambda: _has_rows(conn))  # idle again


async def _has_rows(conn: asyncpg.Connection) -> bool:
    return bool(await idle_rows(conn))

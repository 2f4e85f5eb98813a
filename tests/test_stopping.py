"""Background loops stop when told to, even when a cancellation arrives as they wake up
(pgq.aio: on Python 3.11 ``asyncio.wait_for`` can lose such a cancellation), and a stop
or close never waits without a bound on something that ignores one cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import pytest

from pgq import db
from pgq.aio import stop_task, wait_event
from pgq.batching import Batcher
from pgq.coordinator.keys import POOL
from pgq.errors import DatabaseUnavailable
from pgq.listener import Listener
from pgq.runner import DatabaseSource, Runner
from pgq.schedule_timer import ScheduleTimer

from .support import live_app, wait_until


async def test_wait_event_raises_a_cancellation_that_arrives_as_the_event_is_set() -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_event(event, 60))
    await asyncio.sleep(0)  # parked on the event
    event.set()
    waiting.cancel()  # in the same loop iteration as the wake-up
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert waiting.cancelled()


async def test_wait_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 30) is True
    assert await wait_event(event, 0) is True  # already set: no wait at all


async def test_stop_task_cancels_again_a_task_that_swallowed_its_cancellation() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await stop_task(task, timeout=30) is True
    assert task.cancelled() and swallowed == 2


async def test_stop_task_gives_up_on_a_task_that_will_not_stop_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    task = asyncio.create_task(deaf(), name="deaf-task")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="pgq"):
        assert await stop_task(task, timeout=0.2) is False
    assert not task.done()
    assert any(getattr(r, "event", None) == "task.stop_timeout" for r in caplog.records)
    assert "deaf-task" in caplog.text
    release.set()
    assert await stop_task(task, timeout=30) is True


async def test_stop_task_raises_what_the_task_failed_with() -> None:
    async def failing() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await stop_task(task)


async def test_the_schedule_timer_stops_when_woken_as_it_is_stopped(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await conn.fetchrow("SELECT * FROM pgq.schedule($1, $2, $3)", "nightly", "0 3 * * *", "T")
    pool = await db.create_pool(dsn, min_size=0, max_size=2)
    listener = Listener(dsn)
    timer = ScheduleTimer(pool, listener)
    try:
        await listener.start()
        timer.start()
        # next_run_at is read by the step just before the timer sleeps: it sleeps now.
        await wait_until(lambda: timer.next_run_at is not None)
        timer.wake()  # a notification or a reconnect, in the same iteration as the stop
        stopping = asyncio.ensure_future(timer.stop())
        done, _ = await asyncio.wait([stopping], timeout=30)
        assert stopping in done, "ScheduleTimer.stop() did not return"
        stopping.result()
        fired = timer.fired
        await conn.execute("UPDATE pgq.schedules SET next_run_at = now() - interval '1 hour'")
        timer.wake()
        await asyncio.sleep(0.2)
        assert timer.fired == fired == 0
        assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 0
    finally:
        await listener.close()
        await pool.close()


async def test_the_coordinator_shuts_down_while_a_pool_connection_is_still_held(
    dsn: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    held: list[int] = []

    async def serve_and_stop() -> None:
        async with live_app(dsn) as live:
            connection = await live.app[POOL].acquire()  # never released
            held.append(connection.get_server_pid())

    serving = asyncio.ensure_future(serve_and_stop())
    with caplog.at_level(logging.WARNING, logger="pgq.coordinator"):
        done, _ = await asyncio.wait([serving], timeout=60)
    assert serving in done, "the coordinator's cleanup did not finish"
    serving.result()
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "coordinator.pool_close_timeout" in events

    async def backend_gone() -> bool:
        query = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
        return await conn.fetchval(query, held[0]) == 0

    await wait_until(backend_gone, timeout=30)


async def _swallow_one_cancellation(entered: asyncio.Event, swallowed: list[int]) -> None:
    """Wait forever, ignoring the first cancellation (as code that catches too much does)."""
    entered.set()
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.append(1)
            if len(swallowed) > 1:
                raise


class _DeafSource(DatabaseSource):
    """A database source whose idle wait ignores the first cancellation."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.idle = asyncio.Event()
        self.swallowed: list[int] = []

    async def wait_for_work(self) -> None:
        await _swallow_one_cancellation(self.idle, self.swallowed)


async def test_a_runner_stops_although_its_idle_wait_ignores_one_cancellation(dsn: str) -> None:
    runner = Runner(dsn, concurrency=2)

    @runner.handler("T")
    async def t(job: object) -> None:
        raise AssertionError("no job was enqueued")

    source = _DeafSource(dsn)
    running = asyncio.ensure_future(runner.run(source=source))
    entered = asyncio.ensure_future(source.idle.wait())
    await asyncio.wait([entered, running], return_when=asyncio.FIRST_COMPLETED)
    assert source.idle.is_set(), running.result()
    runner.stop()
    done, _ = await asyncio.wait([running], timeout=30)
    assert running in done, "Runner.run() hung on an idle wait that ignored a cancellation"
    running.result()
    assert len(source.swallowed) == 2  # cancelled again after ignoring the first


async def test_a_batcher_closes_although_a_flush_ignores_one_cancellation() -> None:
    entered, swallowed = asyncio.Event(), []

    async def flush(batch: list[int]) -> list[int]:
        await _swallow_one_cancellation(entered, swallowed)
        raise AssertionError("unreachable")

    batcher: Batcher[int, int] = Batcher(flush, max_batch=10)
    written = batcher.submit(1)
    assert await wait_event(entered, 30)
    closing = asyncio.ensure_future(batcher.close(timeout=0.05))
    done, _ = await asyncio.wait([closing], timeout=30)
    assert closing in done, "Batcher.close() hung on a flush that ignored a cancellation"
    closing.result()
    assert len(swallowed) == 2 and batcher.in_flight == 0
    with pytest.raises(DatabaseUnavailable):
        await written


async def test_a_batcher_closes_although_a_flush_never_stops_and_fails_what_waits_behind_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def flush(batch: list[int]) -> list[int]:
        entered.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        return batch

    batcher: Batcher[int, int] = Batcher(flush, max_batch=10, max_flushes=1)
    in_flight = batcher.submit(1)
    assert await wait_event(entered, 30)
    queued = batcher.submit(2)  # behind the one flush allowed, which never ends
    closing = asyncio.ensure_future(batcher.close(timeout=0.05))
    with caplog.at_level(logging.ERROR, logger="pgq"):
        done, _ = await asyncio.wait([closing], timeout=30)
    assert closing in done, "Batcher.close() hung on a flush that never stops"
    closing.result()
    assert any(getattr(r, "event", None) == "task.stop_timeout" for r in caplog.records)
    with pytest.raises(DatabaseUnavailable):
        await queued
    release.set()  # the stubborn flush ends at last and answers its own item
    assert await asyncio.wait_for(in_flight, 30) == 1

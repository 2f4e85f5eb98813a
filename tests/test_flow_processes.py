"""Flow control with real ``pgq runner`` processes (issue #11): several runners on a
limited queue never run more than the limit at once, they are woken by freed slots rather
than a poll, and a ``kill -9``'d runner's slot comes back when its lease expires.

Handlers (tests/runner_handlers.py) write each start and end to a file; a start is written
after the claim committed and an end before the completion commits, so an overlap of the
recorded intervals is a real one."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import pytest

from .support import RunnerProcess, read_runs, start_runner, statuses, wait_listening, wait_until


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


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


@pytest.mark.slow
async def test_three_runners_of_ten_on_a_queue_limited_to_three(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path, procs: list[RunnerProcess]
) -> None:
    await conn.execute("SELECT pgq.set_limits('lim', concurrency => 3)")
    runners = [
        runner(procs, dsn, tmp_path, "--queues", "lim", "--concurrency", "10", name=f"r{i}")
        for i in range(3)
    ]
    for proc in runners:
        await wait_listening(proc)
    await conn.execute(
        "SELECT pgq.enqueue('TEST', jsonb_build_object('sleep', 0.05 + (g % 5) * 0.02), 'lim')"
        "  FROM generate_series(1, 60) AS g"
    )
    peak = 0

    async def drained() -> bool:
        nonlocal peak
        peak = max(
            peak,
            await conn.fetchval(
                "SELECT count(*) FROM pgq.jobs WHERE queue = 'lim' AND status = 'running'"
            ),
        )
        return await statuses(conn) == {"succeeded": 60}

    started = asyncio.get_running_loop().time()
    # 60 jobs of ~0.09 s three at a time: ~2 s of work. A runner that waited for a poll
    # instead of the freed slot's notification would take a minute (the safety re-check).
    await wait_until(drained, timeout=20, interval=0.005)
    took = asyncio.get_running_loop().time() - started
    for proc in runners:
        proc.signal(signal.SIGTERM)
    for proc in runners:
        assert await proc.wait(15) == 0, proc.log()[-2000:]

    runs = read_runs(tmp_path)
    starts = {r.job_id: r.wall for r in runs if r.what == "start"}
    ends = {r.job_id: r.wall for r in runs if r.what == "end"}
    assert len(starts) == len(ends) == 60
    assert max_overlap([(starts[j], ends[j]) for j in starts]) <= 3
    assert 1 <= peak <= 3
    assert len({r.pid for r in runs}) >= 2, "one runner did all the work"
    assert took < 10, took


@pytest.mark.slow
async def test_a_killed_runner_gives_its_slot_back_when_its_lease_expires(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path, procs: list[RunnerProcess]
) -> None:
    await conn.execute("SELECT pgq.set_limits('lim', concurrency => 1)")
    # timeout 2 s → lease 2.5 s; the first job would take 30 s
    first = await conn.fetchval(
        "SELECT id FROM pgq.enqueue('TEST', '{\"sleep\": 30}', 'lim', timeout_seconds => 2)"
    )
    doomed = runner(procs, dsn, tmp_path, "--queues", "lim", "--concurrency", "5", name="doomed")

    async def first_started() -> bool:
        return any(r.what == "start" and r.job_id == first for r in read_runs(tmp_path))

    await wait_until(first_started, timeout=15)
    lease = await conn.fetchval("SELECT lease_expires_at FROM pgq.jobs WHERE id = $1", first)
    doomed.kill()
    assert await doomed.wait(10) == -signal.SIGKILL

    second = await conn.fetchval("SELECT id FROM pgq.enqueue('TEST', '{}', 'lim')")
    other = runner(procs, dsn, tmp_path, "--queues", "lim", "--concurrency", "5", name="other")
    await wait_listening(other)

    async def second_done() -> bool:
        return await conn.fetchval("SELECT status FROM pgq.jobs WHERE id = $1", second) == (
            "succeeded"
        )

    await wait_until(second_done, timeout=15, interval=0.02)
    claimed = await conn.fetchval("SELECT claimed_at FROM pgq.jobs WHERE id = $1", second)
    # the slot was held by the killed runner's job until its lease ran out, then freed at
    # once: by the lease sweep and the slot's NOTIFY, far sooner than the 60 s safety re-check
    # (the margin is for a loaded CI machine)
    lag = (claimed - lease).total_seconds()
    assert 0 <= lag < 5, lag
    row = await conn.fetchrow("SELECT status, last_error FROM pgq.jobs WHERE id = $1", first)
    assert row["status"] == "queued" and row["last_error"]["kind"] == "lease_expired"
    other.signal(signal.SIGTERM)
    assert await other.wait(10) == 0

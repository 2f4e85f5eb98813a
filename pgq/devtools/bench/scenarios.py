"""The scenarios of ``pgq bench`` (see :mod:`pgq.devtools.bench`), each run against the
scratch database, and the check that every job ran exactly once. Their SQL (the counts)
is in :mod:`pgq.queries.bench`."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from ...client import Client
from ...errors import PgqError
from ...jobs import Job
from ...queries import bench as bench_sql
from ...runner import Runner

#: Jobs per ``enqueue_many`` call (the default ``jobs`` fits in one).
ENQUEUE_CHUNK = 10_000
#: Seconds between the single enqueues of the latency scenario.
LATENCY_INTERVAL = 0.02

DRAIN_QUEUE, DRAIN_TYPE = "bench", "BENCH_NOOP"
LATENCY_QUEUE, LATENCY_TYPE = "bench_latency", "BENCH_PING"
WARMUPS = 2  # latency jobs run before the measured ones (index < 0)


class BenchError(PgqError):
    """The benchmark cannot run (no CREATEDB, a runner that fails to start, …)."""


# -- helpers ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class Recorder:
    """Handler calls per job index, and each index's first start (time.monotonic())."""

    def __init__(self) -> None:
        self.calls = 0
        self.starts: dict[int, float] = {}
        self.duplicates = 0
        self._target = 0
        self.reached = asyncio.Event()

    def hit(self, i: int) -> None:
        now = time.monotonic()
        self.calls += 1
        if i in self.starts:
            self.duplicates += 1
        else:
            self.starts[i] = now
        if self._target and len(self.starts) >= self._target:
            self.reached.set()

    def expect(self, n: int) -> None:
        self.reached.clear()
        self._target = n
        if len(self.starts) >= n:
            self.reached.set()


@contextlib.asynccontextmanager
async def running(runner: Runner) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``runner`` in a task; stop it (draining) on the way out."""
    task = asyncio.create_task(runner.run(), name="pgq-bench-runner")
    try:
        yield task
    finally:
        runner.stop()
        try:
            await asyncio.wait_for(task, 30)
        except TimeoutError:
            runner.stop_now()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)


async def until(event: asyncio.Event, task: asyncio.Task[None], timeout: float, what: str) -> None:
    """Wait for ``event``; raise when the runner task ends first or ``timeout`` passes."""
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({waiter, task}, timeout=timeout, return_when="FIRST_COMPLETED")
    finally:
        waiter.cancel()
    if event.is_set():
        return
    if task.done():
        task.result()  # the runner's own error, if it had one
        raise BenchError(f"the runner stopped while waiting for {what}")
    raise BenchError(f"waited {timeout:g} s for {what}, in vain")


async def enqueue_chunks(client: Client, n: int) -> float:
    """Enqueue no-op jobs 0..n-1; returns the seconds spent in enqueue_many."""
    spent = 0.0
    for start in range(0, n, ENQUEUE_CHUNK):
        batch = [
            {"type": DRAIN_TYPE, "args": {"i": i}, "queue": DRAIN_QUEUE}
            for i in range(start, min(n, start + ENQUEUE_CHUNK))
        ]
        t0 = time.monotonic()
        await client.enqueue_many(batch)
        spent += time.monotonic() - t0
    return spent


# -- scenarios ----------------------------------------------------------------------------


async def enqueue(client: Client, conn: asyncpg.Connection, n: int) -> dict[str, Any]:
    seconds = await enqueue_chunks(client, n)
    present = await bench_sql.count_jobs(conn, DRAIN_QUEUE)
    if present != n:
        raise BenchError(f"enqueue_many of {n} jobs left {present} in the database")
    return {"jobs": n, "seconds": seconds, "jobs_per_s": n / seconds if seconds else None}


async def drain(
    dsn: str, conn: asyncpg.Connection, n: int, concurrency: int, rec: Recorder
) -> dict[str, Any]:
    runner = Runner(dsn, queues=(DRAIN_QUEUE,), concurrency=concurrency, grace=30)

    @runner.handler(DRAIN_TYPE)
    async def noop(job: Job) -> None:
        rec.hit(job.args["i"])

    rec.expect(n)
    timeout = 60 + n / 100
    t0 = time.monotonic()
    async with running(runner) as task:
        await until(rec.reached, task, timeout, f"all {n} drain jobs to start")
        t_handlers = time.monotonic()
        # Every handler started; completions may still be in flight (batched writes).
        deadline = time.monotonic() + 30
        while (done := await bench_sql.count_jobs(conn, DRAIN_QUEUE, "succeeded")) < n:
            if time.monotonic() > deadline:
                raise BenchError(f"only {done} of {n} jobs succeeded 30 s after the last start")
            await asyncio.sleep(0.005)
        t_done = time.monotonic()
    seconds = t_done - t0
    return {
        "jobs": n,
        "concurrency": concurrency,
        "seconds": seconds,
        "jobs_per_s": n / seconds,
        "handlers_started_s": t_handlers - t0,
    }


async def latency(
    dsn: str, client: Client, samples: int, concurrency: int, rec: Recorder
) -> dict[str, Any]:
    runner = Runner(dsn, queues=(LATENCY_QUEUE,), concurrency=concurrency, grace=30)

    @runner.handler(LATENCY_TYPE)
    async def ping(job: Job) -> None:
        rec.hit(job.args["i"])

    commits: dict[int, float] = {}
    async with running(runner) as task:
        # Warm-up (connections, prepared statements, the LISTEN path), not measured: each
        # job waits for its handler, so the runner is idle when the next one commits.
        for k in range(WARMUPS):
            rec.expect(k + 1)
            await client.enqueue(LATENCY_TYPE, {"i": -1 - k}, queue=LATENCY_QUEUE)
            await until(rec.reached, task, 30, "the warm-up job to run")
            await asyncio.sleep(0.05)
        for i in range(samples):
            started = time.monotonic()
            await client.enqueue(LATENCY_TYPE, {"i": i}, queue=LATENCY_QUEUE)
            commits[i] = time.monotonic()
            await asyncio.sleep(max(0.0, LATENCY_INTERVAL - (time.monotonic() - started)))
        rec.expect(samples + WARMUPS)
        await until(rec.reached, task, 30, f"all {samples} latency jobs to run")
    ms = sorted((rec.starts[i] - commits[i]) * 1000 for i in range(samples))
    return {
        "samples": samples,
        "interval_ms": LATENCY_INTERVAL * 1000,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": ms[-1],
    }


async def verify(
    conn: asyncpg.Connection, expected: dict[str, tuple[str, int]], recorders: dict[str, Recorder]
) -> dict[str, Any]:
    """``expected``: queue → (status every job must have, job count)."""
    rows = await bench_sql.job_counts(conn)
    problems: list[str] = []
    found: dict[str, dict[str, int]] = {}
    for r in rows:
        found.setdefault(r["queue"], {})[r["status"]] = r["n"]
        if r["status"] == "succeeded" and r["not_once"]:
            problems.append(f"{r['not_once']} {r['queue']} jobs were claimed more than once")
    for queue in found.keys() - expected.keys():
        problems.append(f"unexpected jobs in queue {queue}: {found[queue]}")
    for queue, (status, n) in expected.items():
        if found.get(queue, {}) != ({status: n} if n else {}):
            problems.append(f"queue {queue}: {found.get(queue, {})}, expected {n} {status}")
    for queue, rec in recorders.items():
        n = expected[queue][1]
        if rec.calls != n or len(rec.starts) != n or rec.duplicates:
            problems.append(
                f"queue {queue}: handlers ran {rec.calls} times for {len(rec.starts)} "
                f"distinct jobs, expected {n} once each"
            )
    return {
        "ok": not problems,
        "jobs": sum(n for _, n in expected.values()),
        "succeeded": sum(s.get("succeeded", 0) for s in found.values()),
        "handler_calls": sum(rec.calls for rec in recorders.values()),
        "problems": problems,
    }

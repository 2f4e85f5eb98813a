"""Shared command line for the per-system adapters (stdlib + asyncpg only).

Each adapter runs inside its own system's virtualenv and defines a subclass of
`System` that uses that system's real, documented API. This module turns it into
the small CLI the orchestrator (benchmarks/run.py) drives:

    adapter.py enqueue DSN N [--install]
        time the fastest documented enqueue path for N no-op jobs
    adapter.py drain DSN N --concurrency C [--coordinator URL]
        a fresh runner process: time from runner start until the database says
        all N jobs are done, then verify; with --coordinator (pgq only) the runner
        works through that coordinator's HTTP API instead of the database
    adapter.py worker DSN --concurrency C --out FILE [--install]
        an idle runner for the latency / steady-state scenarios; prints
        {"ready": true}, then waits for "expect M" on stdin, stops once M jobs
        ran, writes {job index: handler start (CLOCK_MONOTONIC)} to FILE, verifies
    adapter.py produce-latency DSN --count K --interval S
        K single enqueues S seconds apart; stamps time.monotonic() after each commit
    adapter.py produce-steady DSN --connections P --seconds T [--bare]
        P producers, each on its own connection, one job per transaction for T s;
        with --bare, each a plain INSERT on a bare connection (System.bare_producer)

Every command prints exactly one JSON object on its last stdout line.
Handler start times and commit stamps are time.monotonic(), which on Linux is
CLOCK_MONOTONIC: comparable between processes on the same machine.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

JobHook = Callable[[int], None]


class Recorder:
    """Counts handler executions; remembers each job index's handler start time."""

    def __init__(self) -> None:
        self.executions = 0
        self.starts: dict[int, float] = {}
        self.duplicates = 0
        self._target = 0
        self.reached = asyncio.Event()

    def hit(self, i: int) -> None:
        now = time.monotonic()
        self.executions += 1
        if i in self.starts:
            self.duplicates += 1
        else:
            self.starts[i] = now
        if self._target and self.executions >= self._target:
            self.reached.set()

    def expect(self, n: int) -> None:
        self._target = n
        if self.executions >= n:
            self.reached.set()


class System(abc.ABC):
    """What an adapter implements, each method with the system's own API."""

    name: str
    version: str
    count_sql: str  # SELECT count(*) of all jobs of this system, done or not
    #: Whether run_worker can work through an HTTP coordinator (``drain --coordinator``).
    http_runner = False
    #: The coordinator's URL when ``drain --coordinator`` asked for an HTTP-mode runner.
    coordinator: str | None = None

    @abc.abstractmethod
    async def install(self, dsn: str) -> None:
        """Create the system's schema in an empty database."""

    @abc.abstractmethod
    async def enqueue_bulk(self, dsn: str, n: int) -> float:
        """Enqueue jobs with args {"i": 0..n-1} the fastest documented way.

        Returns the seconds spent in the enqueue call(s) only (connection set-up
        excluded)."""

    @abc.abstractmethod
    def producer(self, dsn: str) -> contextlib.AbstractAsyncContextManager[EnqueueOne]:
        """An open client on one connection: `await enqueue_one(i)` commits one job."""

    def bare_producer(self, dsn: str) -> contextlib.AbstractAsyncContextManager[EnqueueOne]:
        """Like ``producer``, but one plain INSERT into the system's jobs table on a bare
        connection: no client library, no enqueue function (``produce-steady --bare``, the
        steady scenario's limit: what producers could reach against this consumer)."""
        raise NotImplementedError(f"{self.name} has no bare producer")

    @abc.abstractmethod
    async def run_worker(
        self, dsn: str, concurrency: int, hook: JobHook, stop: asyncio.Event
    ) -> None:
        """Run the system's runner with a no-op handler that calls hook(args["i"]);
        return after `stop` is set and the runner has shut down gracefully."""

    @abc.abstractmethod
    async def done_count(self, conn: asyncpg.Connection) -> int:
        """How many jobs are finished successfully, according to the database."""

    @abc.abstractmethod
    async def verify(self, conn: asyncpg.Connection, n: int) -> dict:
        """Check that exactly n jobs exist, all succeeded, each executed once.

        Returns {"ok": bool, ...details}."""


EnqueueOne = Callable[[int], Awaitable[None]]


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def use_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


@contextlib.asynccontextmanager
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _verify(system: System, dsn: str, n: int, rec: Recorder | None) -> dict:
    async with db(dsn) as conn:
        result = await system.verify(conn, n)
    if rec is not None:
        result["handler_executions"] = rec.executions
        result["handler_distinct"] = len(rec.starts)
        result["handler_duplicates"] = rec.duplicates
        if rec.executions != n or len(rec.starts) != n or rec.duplicates:
            result["ok"] = False
            result.setdefault("problems", []).append(
                f"handlers ran {rec.executions} times for {len(rec.starts)} distinct jobs, "
                f"expected {n} once each"
            )
    return result


async def wait_done(system: System, conn, n: int, timeout: float, every: float) -> int:
    """Poll the database until it reports n jobs done (or timeout); return the count."""
    deadline = time.monotonic() + timeout
    while (done := await system.done_count(conn)) < n and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(every)
    return done


async def _stop_worker(task: asyncio.Task, stop: asyncio.Event, timeout: float) -> None:
    stop.set()
    try:
        await asyncio.wait_for(task, timeout)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise RuntimeError(f"runner did not stop within {timeout} s") from None


async def cmd_enqueue(system: System, a: argparse.Namespace) -> dict:
    if a.install:
        await system.install(a.dsn)
    elapsed = await system.enqueue_bulk(a.dsn, a.n)
    async with db(a.dsn) as conn:
        present = await conn.fetchval(system.count_sql)
    ok = present == a.n
    return {"elapsed_s": elapsed, "jobs_per_s": a.n / elapsed, "present": present, "ok": ok}


async def cmd_drain(system: System, a: argparse.Namespace) -> dict:
    rec = Recorder()
    rec.expect(a.n)
    stop = asyncio.Event()
    async with db(a.dsn) as conn:
        t0 = time.monotonic()
        task = asyncio.create_task(system.run_worker(a.dsn, a.concurrency, rec.hit, stop))
        reached = asyncio.create_task(rec.reached.wait())
        await asyncio.wait({task, reached}, timeout=a.timeout, return_when="FIRST_COMPLETED")
        if task.done():
            task.result()  # re-raise the runner's error
            raise RuntimeError("runner returned before the jobs were done")
        if not reached.done():
            reached.cancel()
            await _stop_worker(task, stop, 30)
            return {
                "ok": False,
                "problems": [f"only {rec.executions} of {a.n} jobs ran in {a.timeout} s"],
            }
        t_handlers = time.monotonic()
        # The handlers have all started; now wait for the database to say done
        # (completions may still be in flight or buffered).
        done = await wait_done(system, conn, a.n, 30, 0.005)
        t_done = time.monotonic()
        await _stop_worker(task, stop, 30)
        t_stopped = time.monotonic()
    result = await _verify(system, a.dsn, a.n, rec)
    if done < a.n:
        result["ok"] = False
        result.setdefault("problems", []).append(f"only {done} done 30 s after the last start")
    elapsed = t_done - t0
    result.update(
        elapsed_s=elapsed,
        jobs_per_s=a.n / elapsed,
        handlers_done_s=t_handlers - t0,
        stop_s=t_stopped - t_done,
    )
    return result


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line.strip()


async def cmd_worker(system: System, a: argparse.Namespace) -> dict:
    if a.install:
        await system.install(a.dsn)
    rec = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(system.run_worker(a.dsn, a.concurrency, rec.hit, stop))
    # No system exposes a "listening now" hook; give the runner time to connect,
    # LISTEN and find the queue empty before the producers start.
    await asyncio.sleep(a.settle)
    if task.done():
        task.result()
        raise RuntimeError("runner exited during start-up")
    emit({"ready": True})
    expected = None
    async for line in _stdin_lines():
        cmd, _, arg = line.partition(" ")
        if cmd == "expect":
            expected = int(arg)
            break
        if cmd == "stop":
            break
    problems = []
    if expected is not None:
        rec.expect(expected)
        try:
            await asyncio.wait_for(rec.reached.wait(), a.timeout)
        except TimeoutError:
            problems.append(f"only {rec.executions} of {expected} jobs ran in {a.timeout} s")
        if not problems:
            async with db(a.dsn) as conn:
                await wait_done(system, conn, expected, 30, 0.01)
    await _stop_worker(task, stop, 30)
    with open(a.out, "w") as f:  # noqa: ASYNC230 - once, after the measurement
        json.dump({str(i): t for i, t in rec.starts.items()}, f)
    result = await _verify(system, a.dsn, expected if expected is not None else 0, rec)
    if problems:
        result["ok"] = False
        result.setdefault("problems", []).extend(problems)
    return result


async def cmd_produce_latency(system: System, a: argparse.Namespace) -> dict:
    commits: dict[str, float] = {}
    async with system.producer(a.dsn) as enqueue_one:
        await enqueue_one(-1)  # warm-up (prepared statements, pool); not measured
        for i in range(a.count):
            t_start = time.monotonic()
            await enqueue_one(i)
            commits[str(i)] = time.monotonic()
            await asyncio.sleep(max(0.0, a.interval - (time.monotonic() - t_start)))
    return {"commits": commits, "enqueued": a.count + 1}


async def cmd_produce_steady(system: System, a: argparse.Namespace) -> dict:
    counter = itertools.count()
    counts = [0] * a.connections
    async with contextlib.AsyncExitStack() as stack:
        make = system.bare_producer if a.bare else system.producer
        enqueuers = [await stack.enter_async_context(make(a.dsn)) for _ in counts]
        t0 = time.monotonic()
        deadline = t0 + a.seconds

        async def produce(k: int, enqueue_one: EnqueueOne) -> None:
            while time.monotonic() < deadline:
                await enqueue_one(next(counter))
                counts[k] += 1

        await asyncio.gather(*(produce(k, e) for k, e in enumerate(enqueuers)))
        t1 = time.monotonic()
    return {"enqueued": sum(counts), "t0": t0, "t1": t1, "per_connection": counts}


COMMANDS = {
    "enqueue": cmd_enqueue,
    "drain": cmd_drain,
    "worker": cmd_worker,
    "produce-latency": cmd_produce_latency,
    "produce-steady": cmd_produce_steady,
}


def main(system: System) -> None:
    p = argparse.ArgumentParser(prog=f"{system.name}_adapter")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("enqueue")
    s.add_argument("dsn")
    s.add_argument("n", type=int)
    s.add_argument("--install", action="store_true")
    s = sub.add_parser("drain")
    s.add_argument("dsn")
    s.add_argument("n", type=int)
    s.add_argument("--concurrency", type=int, required=True)
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--coordinator", help="run the runner through this coordinator (pgq only)")
    s = sub.add_parser("worker")
    s.add_argument("dsn")
    s.add_argument("--concurrency", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--install", action="store_true")
    s.add_argument("--settle", type=float, default=1.0)
    s.add_argument("--timeout", type=float, default=300)
    s = sub.add_parser("produce-latency")
    s.add_argument("dsn")
    s.add_argument("--count", type=int, default=200)
    s.add_argument("--interval", type=float, default=0.02)
    s = sub.add_parser("produce-steady")
    s.add_argument("dsn")
    s.add_argument("--connections", type=int, default=4)
    s.add_argument("--seconds", type=float, default=20)
    s.add_argument("--bare", action="store_true", help="plain INSERTs (System.bare_producer)")
    a = p.parse_args()
    if getattr(a, "coordinator", None):
        if not system.http_runner:
            p.error(f"{system.name} has no HTTP-mode runner")
        system.coordinator = a.coordinator
    loop = use_uvloop()
    result = asyncio.run(COMMANDS[a.cmd](system, a))
    result.update(system=system.name, version=system.version, loop=loop)
    emit(result)

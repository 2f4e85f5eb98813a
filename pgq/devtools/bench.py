"""``pgq bench``: measure pgq against your own PostgreSQL server.

It never touches your queue data: it creates a scratch database ``pgq_bench_<random>`` on
the server the URL points at (the role needs CREATEDB), migrates it, runs the scenarios in
this one process and drops it again ``WITH (FORCE)`` (unless ``keep=True``).

Scenarios (the same measurement points as the repository's peer benchmark in
``benchmarks/``, which is not part of the installed package):

``enqueue``
    ``jobs`` no-op jobs with ``Client.enqueue_many`` (one call per 10,000 jobs); jobs/s of
    the time spent in those calls.
``drain``
    an in-process ``pgq.Runner`` at ``concurrency`` runs ``jobs`` queued no-op jobs (the
    enqueue scenario's, else enqueued first, untimed); jobs/s from the runner's start until
    the database says every job succeeded.
``latency``
    an idle runner; ``latency_samples`` single ``Client.enqueue`` calls ~20 ms apart; per
    job, ``time.monotonic()`` after the enqueue committed to the handler's start (same
    process, same clock): p50/p95/p99/max.

Afterwards every job must have succeeded with exactly one claim, and every handler must have
run exactly once per job (counted in process); ``result["verification"]["ok"]`` says so.
Per-job runner log lines (INFO) are muted while it runs, as in ``benchmarks/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from .. import __version__
from ..client import Client
from ..errors import PgqError
from ..jobs import Job
from ..queries import bench as bench_sql
from ..runner import Runner

__all__ = ["SCENARIOS", "BenchError", "format_report", "run_bench", "run_bench_async"]

SCENARIOS = ("enqueue", "drain", "latency")
#: Jobs per ``enqueue_many`` call (the default ``jobs`` fits in one).
ENQUEUE_CHUNK = 10_000
#: Seconds between the single enqueues of the latency scenario.
LATENCY_INTERVAL = 0.02

_DRAIN_QUEUE, _DRAIN_TYPE = "bench", "BENCH_NOOP"
_LATENCY_QUEUE, _LATENCY_TYPE = "bench_latency", "BENCH_PING"
_WARMUPS = 2  # latency jobs run before the measured ones (index < 0)


class BenchError(PgqError):
    """The benchmark cannot run (no CREATEDB, a runner that fails to start, …)."""


# -- helpers ------------------------------------------------------------------------------


def _scratch_dsn(dsn: str, database: str) -> str:
    """``dsn`` pointed at ``database`` (a dbname/database query parameter would win)."""
    parts = urlsplit(dsn)
    if not parts.scheme.startswith("postgres"):
        raise BenchError(f"pgq bench needs a postgresql:// URL, not {parts.scheme or dsn!r}")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("dbname", "database")]
    return urlunsplit(parts._replace(path="/" + database, query=urlencode(query)))


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class _Recorder:
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
async def _running(runner: Runner) -> AsyncIterator[asyncio.Task[None]]:
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


async def _until(event: asyncio.Event, task: asyncio.Task[None], timeout: float, what: str) -> None:
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


async def _enqueue_chunks(client: Client, n: int) -> float:
    """Enqueue no-op jobs 0..n-1; returns the seconds spent in enqueue_many."""
    spent = 0.0
    for start in range(0, n, ENQUEUE_CHUNK):
        batch = [
            {"type": _DRAIN_TYPE, "args": {"i": i}, "queue": _DRAIN_QUEUE}
            for i in range(start, min(n, start + ENQUEUE_CHUNK))
        ]
        t0 = time.monotonic()
        await client.enqueue_many(batch)
        spent += time.monotonic() - t0
    return spent


# -- scenarios ----------------------------------------------------------------------------


async def _scenario_enqueue(client: Client, conn: asyncpg.Connection, n: int) -> dict[str, Any]:
    seconds = await _enqueue_chunks(client, n)
    present = await bench_sql.count_jobs(conn, _DRAIN_QUEUE)
    if present != n:
        raise BenchError(f"enqueue_many of {n} jobs left {present} in the database")
    return {"jobs": n, "seconds": seconds, "jobs_per_s": n / seconds if seconds else None}


async def _scenario_drain(
    dsn: str, conn: asyncpg.Connection, n: int, concurrency: int, rec: _Recorder
) -> dict[str, Any]:
    runner = Runner(dsn, queues=(_DRAIN_QUEUE,), concurrency=concurrency, grace=30)

    @runner.handler(_DRAIN_TYPE)
    async def noop(job: Job) -> None:
        rec.hit(job.args["i"])

    rec.expect(n)
    timeout = 60 + n / 100
    t0 = time.monotonic()
    async with _running(runner) as task:
        await _until(rec.reached, task, timeout, f"all {n} drain jobs to start")
        t_handlers = time.monotonic()
        # Every handler started; completions may still be in flight (batched writes).
        deadline = time.monotonic() + 30
        while (done := await bench_sql.count_jobs(conn, _DRAIN_QUEUE, "succeeded")) < n:
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


async def _scenario_latency(
    dsn: str, client: Client, samples: int, concurrency: int, rec: _Recorder
) -> dict[str, Any]:
    runner = Runner(dsn, queues=(_LATENCY_QUEUE,), concurrency=concurrency, grace=30)

    @runner.handler(_LATENCY_TYPE)
    async def ping(job: Job) -> None:
        rec.hit(job.args["i"])

    commits: dict[int, float] = {}
    async with _running(runner) as task:
        # Warm-up (connections, prepared statements, the LISTEN path), not measured: each
        # job waits for its handler, so the runner is idle when the next one commits.
        for k in range(_WARMUPS):
            rec.expect(k + 1)
            await client.enqueue(_LATENCY_TYPE, {"i": -1 - k}, queue=_LATENCY_QUEUE)
            await _until(rec.reached, task, 30, "the warm-up job to run")
            await asyncio.sleep(0.05)
        for i in range(samples):
            started = time.monotonic()
            await client.enqueue(_LATENCY_TYPE, {"i": i}, queue=_LATENCY_QUEUE)
            commits[i] = time.monotonic()
            await asyncio.sleep(max(0.0, LATENCY_INTERVAL - (time.monotonic() - started)))
        rec.expect(samples + _WARMUPS)
        await _until(rec.reached, task, 30, f"all {samples} latency jobs to run")
    ms = sorted((rec.starts[i] - commits[i]) * 1000 for i in range(samples))
    return {
        "samples": samples,
        "interval_ms": LATENCY_INTERVAL * 1000,
        "p50_ms": _percentile(ms, 50),
        "p95_ms": _percentile(ms, 95),
        "p99_ms": _percentile(ms, 99),
        "max_ms": ms[-1],
    }


async def _verify(
    conn: asyncpg.Connection, expected: dict[str, tuple[str, int]], recorders: dict[str, _Recorder]
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


# -- the scratch database -----------------------------------------------------------------


async def _create_database(dsn: str, name: str) -> str:
    try:
        admin = await asyncpg.connect(dsn)
    except asyncpg.PostgresError as exc:
        raise BenchError(f"cannot connect to {_safe(dsn)}: {exc}") from None
    try:
        version = await bench_sql.server_version(admin)
        try:
            await bench_sql.create_database(admin, name)
        except asyncpg.InsufficientPrivilegeError as exc:
            user = await bench_sql.current_user(admin)
            raise BenchError(
                f"pgq bench needs to create a scratch database ({name}) and role {user!r} "
                f"may not ({exc}); it never runs in your own database. Grant it with "
                f'ALTER ROLE "{user}" CREATEDB, or use --database-url with a role that has '
                "CREATEDB"
            ) from None
    finally:
        await admin.close()
    return version


async def _drop_database(dsn: str, name: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await bench_sql.drop_database(admin, name)
    finally:
        await admin.close()


def _safe(dsn: str) -> str:
    """The URL without its password."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# -- entry points ---------------------------------------------------------------------------


def _check(
    jobs: int, concurrency: int, latency_samples: int, scenarios: Iterable[str]
) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(scenarios))
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown or not chosen:
        raise BenchError(
            f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}"
            if unknown
            else "choose at least one scenario"
        )
    if jobs < 1:
        raise BenchError(f"jobs must be at least 1, not {jobs}")
    if not 1 <= concurrency <= 10000:
        raise BenchError(f"concurrency must be 1..10000, not {concurrency}")
    if latency_samples < 1:
        raise BenchError(f"latency samples must be at least 1, not {latency_samples}")
    return tuple(s for s in SCENARIOS if s in chosen)


async def run_bench_async(
    dsn: str,
    *,
    jobs: int = 10_000,
    concurrency: int = 50,
    latency_samples: int = 200,
    scenarios: Iterable[str] = SCENARIOS,
    keep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``run_bench`` in the running event loop."""
    chosen = _check(jobs, concurrency, latency_samples, scenarios)
    say = progress or (lambda _msg: None)
    name = f"pgq_bench_{secrets.token_hex(4)}"
    scratch = _scratch_dsn(dsn, name)
    loop_module = type(asyncio.get_running_loop()).__module__
    result: dict[str, Any] = {
        "pgq": __version__,
        "server_version": None,
        "database": name,
        "kept": keep,
        "loop": "uvloop" if loop_module.startswith("uvloop") else "asyncio",
        "settings": {
            "jobs": jobs,
            "concurrency": concurrency,
            "latency_samples": latency_samples,
            "scenarios": list(chosen),
        },
    }
    say(f"creating scratch database {name}")
    result["server_version"] = await _create_database(dsn, name)
    runner_log = logging.getLogger("pgq.runner")
    old_level = runner_log.level
    runner_log.setLevel(max(logging.WARNING, runner_log.getEffectiveLevel()))
    try:
        async with Client(scratch, min_size=1, max_size=1) as client:
            say("migrating it")
            await client.migrate()
            conn = await asyncpg.connect(scratch)
            try:
                expected: dict[str, tuple[str, int]] = {}
                recorders: dict[str, _Recorder] = {}
                if "enqueue" in chosen:
                    say(f"enqueue: {jobs:,} jobs with Client.enqueue_many")
                    result["enqueue"] = await _scenario_enqueue(client, conn, jobs)
                    expected[_DRAIN_QUEUE] = ("queued", jobs)
                if "drain" in chosen:
                    if "enqueue" not in chosen:
                        await _enqueue_chunks(client, jobs)
                    say(f"drain: {jobs:,} no-op jobs, runner concurrency {concurrency}")
                    rec = recorders[_DRAIN_QUEUE] = _Recorder()
                    result["drain"] = await _scenario_drain(scratch, conn, jobs, concurrency, rec)
                    expected[_DRAIN_QUEUE] = ("succeeded", jobs)
                if "latency" in chosen:
                    say(f"latency: {latency_samples} single enqueues ~20 ms apart")
                    rec = recorders[_LATENCY_QUEUE] = _Recorder()
                    result["latency"] = await _scenario_latency(
                        scratch, client, latency_samples, concurrency, rec
                    )
                    expected[_LATENCY_QUEUE] = ("succeeded", latency_samples + _WARMUPS)
                result["verification"] = await _verify(conn, expected, recorders)
            finally:
                await conn.close()
    finally:
        runner_log.setLevel(old_level)
        if keep:
            say(f"kept {name}: {_safe(scratch)}")
        else:
            say(f"dropping {name}")
            await _drop_database(dsn, name)
    if keep:
        result["database_url"] = _safe(scratch)
    return result


def run_bench(
    dsn: str,
    *,
    jobs: int = 10_000,
    concurrency: int = 50,
    latency_samples: int = 200,
    scenarios: Iterable[str] = SCENARIOS,
    keep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark pgq on the server ``dsn`` points at, in a scratch database (see the module
    docstring); returns the numbers and ``verification``. Runs its own event loop (uvloop
    when importable); from inside a loop, use ``run_bench_async``."""
    coro = run_bench_async(
        dsn,
        jobs=jobs,
        concurrency=concurrency,
        latency_samples=latency_samples,
        scenarios=scenarios,
        keep=keep,
        progress=progress,
    )
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def format_report(result: dict[str, Any]) -> str:
    """The human-readable table ``pgq bench`` prints."""
    where = "kept" if result["kept"] else "dropped"
    lines = [
        f"pgq {result['pgq']} bench on PostgreSQL {result['server_version']} "
        f"(scratch database {result['database']}, {where}; {result['loop']})",
        "",
        f"{'scenario':<10} {'what':<46} result",
    ]
    if e := result.get("enqueue"):
        what = f"{e['jobs']:,} jobs, Client.enqueue_many"
        lines.append(
            f"{'enqueue':<10} {what:<46} {e['jobs_per_s']:>9,.0f} jobs/s  ({e['seconds']:.2f} s)"
        )
    if d := result.get("drain"):
        what = f"{d['jobs']:,} no-op jobs, Runner concurrency {d['concurrency']}"
        lines.append(
            f"{'drain':<10} {what:<46} {d['jobs_per_s']:>9,.0f} jobs/s  ({d['seconds']:.2f} s)"
        )
    if lat := result.get("latency"):
        what = f"{lat['samples']} single enqueues, {lat['interval_ms']:g} ms apart"
        lines.append(
            f"{'latency':<10} {what:<46} p50 {lat['p50_ms']:.2f}  p95 {lat['p95_ms']:.2f}  "
            f"p99 {lat['p99_ms']:.2f}  max {lat['max_ms']:.2f} ms  (commit → handler start)"
        )
    v = result["verification"]
    lines.append("")
    ran = v["handler_calls"]
    if v["ok"] and ran:
        lines.append(
            f"verified: all {v['jobs']:,} jobs succeeded, each handler ran exactly once "
            f"({ran:,} handler calls)"
        )
    elif v["ok"]:
        lines.append(f"verified: all {v['jobs']:,} jobs enqueued (none run: drain not chosen)")
    else:
        lines.append("VERIFICATION FAILED:")
        lines.extend(f"  - {p}" for p in v["problems"])
    if result.get("database_url"):
        lines.append(f"scratch database kept: {result['database_url']}")
    return "\n".join(lines)


def main(
    dsn: str,
    *,
    jobs: int,
    concurrency: int,
    latency_samples: int,
    scenarios: Sequence[str],
    as_json: bool,
    keep: bool,
) -> int:
    """``pgq bench``: 0 when every job verified, 1 when not, 2 (via BenchError) when it
    could not run."""
    import orjson

    result = run_bench(
        dsn,
        jobs=jobs,
        concurrency=concurrency,
        latency_samples=latency_samples,
        scenarios=scenarios,
        keep=keep,
        progress=lambda msg: print(f"pgq bench: {msg}", file=sys.stderr, flush=True),
    )
    if as_json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_report(result))
    return 0 if result["verification"]["ok"] else 1

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

This module holds the entry points; ``scenarios`` the measurements and their verification,
``scratch`` the scratch database, ``report`` the printed table. Their SQL is in
``pgq.queries.bench``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg

from ... import __version__
from ...client import Client
from .report import format_report
from .scenarios import (
    DRAIN_QUEUE,
    LATENCY_QUEUE,
    WARMUPS,
    BenchError,
    Recorder,
    drain,
    enqueue,
    enqueue_chunks,
    latency,
    verify,
)
from .scratch import create_database, drop_database, scratch_dsn, without_password

__all__ = ["SCENARIOS", "BenchError", "format_report", "run_bench", "run_bench_async"]

SCENARIOS = ("enqueue", "drain", "latency")


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
    scratch = scratch_dsn(dsn, name)
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
    result["server_version"] = await create_database(dsn, name)
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
                recorders: dict[str, Recorder] = {}
                if "enqueue" in chosen:
                    say(f"enqueue: {jobs:,} jobs with Client.enqueue_many")
                    result["enqueue"] = await enqueue(client, conn, jobs)
                    expected[DRAIN_QUEUE] = ("queued", jobs)
                if "drain" in chosen:
                    if "enqueue" not in chosen:
                        await enqueue_chunks(client, jobs)
                    say(f"drain: {jobs:,} no-op jobs, runner concurrency {concurrency}")
                    rec = recorders[DRAIN_QUEUE] = Recorder()
                    result["drain"] = await drain(scratch, conn, jobs, concurrency, rec)
                    expected[DRAIN_QUEUE] = ("succeeded", jobs)
                if "latency" in chosen:
                    say(f"latency: {latency_samples} single enqueues ~20 ms apart")
                    rec = recorders[LATENCY_QUEUE] = Recorder()
                    result["latency"] = await latency(
                        scratch, client, latency_samples, concurrency, rec
                    )
                    expected[LATENCY_QUEUE] = ("succeeded", latency_samples + WARMUPS)
                result["verification"] = await verify(conn, expected, recorders)
            finally:
                await conn.close()
    finally:
        runner_log.setLevel(old_level)
        if keep:
            say(f"kept {name}: {without_password(scratch)}")
        else:
            say(f"dropping {name}")
            await drop_database(dsn, name)
    if keep:
        result["database_url"] = without_password(scratch)
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

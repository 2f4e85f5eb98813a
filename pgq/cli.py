"""The ``pgq`` command: migrate, coordinator, runner, dev, and a few commands for humans.

Configuration comes from the environment (``PGQ_DATABASE_URL``, ``PGQ_HOST``, …); flags
override it. Every command exits non-zero with one clear line on stderr when it cannot
do its job, never with a traceback for a configuration or database problem.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from . import __version__, db, migrations, queries, settings
from .config import ConfigError, database_url
from .errors import PgqError


def _add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: $PGQ_DATABASE_URL, then $DATABASE_URL)",
    )


def _queues(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise argparse.ArgumentTypeError("give at least one queue name")
    return queues


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgq", description="pgq: an event-driven job queue on PostgreSQL."
    )
    parser.add_argument("--version", action="version", version=f"pgq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("dev", help="run everything locally: embedded Postgres, coordinator, runner")
    p.add_argument("--port", type=int, help="coordinator port (default: $PGQ_PORT or 3001)")

    p = sub.add_parser("migrate", help="apply pending migrations (idempotent)")
    _add_database_url(p)
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the SQL of the pending migrations (every migration when no database is "
        "configured) instead of applying it",
    )

    p = sub.add_parser("coordinator", help="serve the HTTP API and the lease-expiry monitor")
    _add_database_url(p)
    p.add_argument("--host", help="bind address (default: $PGQ_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $PGQ_PORT or 3001)")

    p = sub.add_parser("runner", help="run the handlers of a pgq.Runner (MODULE:ATTR)")
    p.add_argument("target", metavar="MODULE:ATTR", help="e.g. pgq.examples.seed:runner")
    _add_database_url(p)
    p.add_argument(
        "--queues", type=_queues, help="comma-separated (default: $PGQ_QUEUES or the runner's)"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        help="handlers at once (default: $PGQ_CONCURRENCY or the runner's)",
    )
    p.add_argument(
        "--grace",
        type=float,
        help="seconds to drain on SIGTERM (default: $PGQ_GRACE_SECONDS or 30)",
    )
    p.add_argument(
        "--coordinator",
        metavar="URL",
        help="work through a coordinator's HTTP API instead of the database ($PGQ_COORDINATOR_URL)",
    )
    p.add_argument(
        "--token",
        help="bearer token for --coordinator (default: $PGQ_API_TOKEN, or the first line of "
        "$PGQ_API_TOKEN_FILE; both keep it out of ps)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        metavar="PORT",
        help="serve /livez and /readyz on this port ($PGQ_HEALTH_PORT; default: none)",
    )

    p = sub.add_parser("enqueue", help="create a job")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("arguments", metavar="JSON", nargs="?", default="{}", help="job arguments")
    p.add_argument("--queue", default="default")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--delay", type=float, help="seconds before it may run")
    p.add_argument("--max-attempts", type=int, default=10)
    p.add_argument("--timeout", type=int, default=300, help="timeout_seconds")
    _add_database_url(p)

    p = sub.add_parser("stats", help="jobs per queue and status")
    _add_database_url(p)

    p = sub.add_parser("schedules", help="list cron schedules and their next runs")
    p.add_argument("--json", action="store_true", help="print them as JSON (as GET /schedules)")
    _add_database_url(p)

    p = sub.add_parser("queues", help="queues: paused, limits, jobs per status")
    _add_database_url(p)
    for name, what in (("pause", "stop handing out a queue's jobs"), ("resume", "resume a queue")):
        p = sub.add_parser(name, help=what)
        p.add_argument("queue", metavar="QUEUE")
        _add_database_url(p)

    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--status")
    p.add_argument("--queue")
    p.add_argument("--type")
    p.add_argument("--limit", type=int, default=20)
    _add_database_url(p)

    p = sub.add_parser(
        "bench", help="measure pgq on your server, in a scratch database it drops afterwards"
    )
    _add_database_url(p)
    p.add_argument("--jobs", type=int, default=10_000, metavar="N", help="default 10000")
    p.add_argument("--concurrency", type=int, default=50, metavar="C", help="default 50")
    p.add_argument("--latency-samples", type=int, default=200, metavar="K", help="default 200")
    p.add_argument(
        "--scenarios",
        type=lambda v: [s.strip() for s in v.split(",") if s.strip()],
        default=["enqueue", "drain", "latency"],
        help="comma-separated (default: enqueue,drain,latency)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    return parser


async def _migrate(url: str, print_only: bool) -> int:
    conn = await db.connect(url)
    try:
        if print_only:
            for m in await migrations.pending_migrations(conn):
                print(f"-- pgq migration {m.name}\n{m.sql}")
            return 0
        applied = await migrations.migrate(conn)
    finally:
        await conn.close()
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("database is up to date")
    return 0


async def _enqueue(url: str, args: argparse.Namespace) -> int:
    try:
        arguments = orjson.loads(args.arguments)
    except orjson.JSONDecodeError as exc:
        raise PgqError(f"JSON arguments are not valid JSON: {exc}") from None
    conn = await db.connect(url)
    try:
        job, _ = await queries.enqueue(
            conn,
            args.type,
            arguments,
            queue=args.queue,
            priority=args.priority,
            delay_seconds=args.delay,
            max_attempts=args.max_attempts,
            timeout_seconds=args.timeout,
        )
    finally:
        await conn.close()
    print(orjson.dumps(job.to_json(), option=orjson.OPT_UTC_Z | orjson.OPT_INDENT_2).decode())
    return 0


async def _stats(url: str) -> int:
    conn = await db.connect(url)
    try:
        rows = await queries.stats(conn)
    finally:
        await conn.close()
    print(f"{'queue':<24} {'status':<10} {'count':>9}  oldest run_at")
    for r in rows:
        oldest = r["oldest_run_at"].isoformat(timespec="seconds") if r["oldest_run_at"] else ""
        print(f"{r['queue']:<24} {r['status']:<10} {r['count']:>9}  {oldest}")
    return 0


def _limit(value: object) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


async def _queue_command(url: str, command: str, queue: str | None) -> int:
    conn = await db.connect(url)
    try:
        if command == "pause":
            await queries.pause(conn, queue or "")
        elif command == "resume":
            await queries.resume(conn, queue or "")
        if command == "queues":
            rows = await queries.list_queues(conn)
        else:
            rows = [await queries.get_queue(conn, queue or "")]
    finally:
        await conn.close()
    print(
        f"{'queue':<24} {'state':<7} {'conc':>5} {'per key':>7} {'rate/s':>7} {'burst':>5}"
        f" {'queued':>8} {'running':>8}  oldest queued"
    )
    for r in rows:
        oldest = r["oldest_queued_at"]
        print(
            f"{r['queue']:<24} {'paused' if r['paused'] else 'active':<7}"
            f" {_limit(r['concurrency']):>5} {_limit(r['key_concurrency']):>7}"
            f" {_limit(r['rate']):>7} {_limit(r['burst']):>5}"
            f" {r['counts']['queued']:>8} {r['counts']['running']:>8}"
            f"  {oldest.isoformat(timespec='seconds') if oldest else ''}"
        )
    return 0


async def _jobs(url: str, args: argparse.Namespace) -> int:
    conn = await db.connect(url)
    try:
        jobs = await queries.list_jobs(
            conn, status=args.status, queue=args.queue, job_type=args.type, limit=args.limit
        )
    finally:
        await conn.close()
    print(f"{'id':>8} {'type':<24} {'queue':<12} {'status':<10} {'att':>5}  run_at")
    for j in jobs:
        print(
            f"{j.id:>8} {j.type:<24} {j.queue:<12} {j.status:<10} "
            f"{j.attempt:>2}/{j.max_attempts:<2}  {j.run_at.isoformat(timespec='seconds')}"
        )
    return 0


async def _schedules(url: str, as_json: bool) -> int:
    conn = await db.connect(url)
    try:
        found = await queries.list_schedules(conn)
    finally:
        await conn.close()
    if as_json:
        body = {"schedules": [s.to_json() for s in found]}
        print(orjson.dumps(body, option=orjson.OPT_UTC_Z | orjson.OPT_INDENT_2).decode())
        return 0
    print(
        f"{'name':<24} {'cron':<16} {'timezone':<16} {'type':<20} next run (UTC)        last slot"
    )
    for s in found:
        nxt = "paused" if s.paused else s.next_run_at.isoformat(timespec="seconds")
        last = s.last_run_at.isoformat(timespec="seconds") if s.last_run_at else "-"
        print(f"{s.name:<24} {s.cron:<16} {s.timezone:<16} {s.job_type:<20} {nxt:<25} {last}")
    return 0


def _print_all_migrations() -> int:
    for m in migrations.load_migrations():
        print(f"-- pgq migration {m.name}\n{m.sql}")
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .logs import configure_logging

    configure_logging()
    cmd = args.command
    if cmd == "dev":
        from .devtools.dev import run_dev

        return run_dev(port=args.port)
    if cmd == "coordinator":
        from .coordinator import serve

        return serve(
            host=args.host or settings.read("PGQ_HOST"),
            port=args.port or settings.read("PGQ_PORT"),
            dsn=database_url(args.database_url),
        )
    if cmd == "runner":
        from .runner.cli import run_from_cli

        coordinator = args.coordinator or settings.read("PGQ_COORDINATOR_URL")
        return run_from_cli(
            args.target,
            dsn=None if coordinator else database_url(args.database_url),
            queues=args.queues or list(settings.read("PGQ_QUEUES")) or None,
            concurrency=args.concurrency or settings.read("PGQ_CONCURRENCY") or None,
            grace=args.grace if args.grace is not None else settings.read("PGQ_GRACE_SECONDS"),
            coordinator=coordinator,
            token=args.token or settings.read("PGQ_API_TOKEN") or _runner_token_file(),
            health_port=args.health_port or settings.read("PGQ_HEALTH_PORT"),
            health_host=settings.read("PGQ_HEALTH_HOST"),
        )
    if (
        cmd == "migrate"
        and args.print_only
        and not (args.database_url or settings.read("PGQ_DATABASE_URL"))
    ):
        return _print_all_migrations()
    url = database_url(args.database_url)
    if cmd == "migrate":
        return asyncio.run(_migrate(url, args.print_only))
    if cmd == "enqueue":
        return asyncio.run(_enqueue(url, args))
    if cmd == "stats":
        return asyncio.run(_stats(url))
    if cmd == "jobs":
        return asyncio.run(_jobs(url, args))
    if cmd == "schedules":
        return asyncio.run(_schedules(url, args.json))
    if cmd in ("queues", "pause", "resume"):
        return asyncio.run(_queue_command(url, cmd, getattr(args, "queue", None)))
    if cmd == "bench":
        from .devtools import bench

        return bench.main(
            url,
            jobs=args.jobs,
            concurrency=args.concurrency,
            latency_samples=args.latency_samples,
            scenarios=args.scenarios,
            as_json=args.json,
            keep=args.keep,
        )
    raise AssertionError(f"unhandled command {cmd}")


def _runner_token_file() -> str | None:
    """The first line of ``PGQ_API_TOKEN_FILE`` (a mounted secret), if set."""
    path = settings.read("PGQ_API_TOKEN_FILE")
    if not path:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"PGQ_API_TOKEN_FILE: cannot read {path}: {exc}") from None
    return next((line.strip() for line in lines if line.strip()), None)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        code = run(argv)
    except PgqError as exc:
        print(f"pgq: {exc}", file=sys.stderr)
        code = 2
    except (TimeoutError, OSError) as exc:
        print(f"pgq: cannot reach the database: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)

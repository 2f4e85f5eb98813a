"""Running a project's Django tasks with a ``pgq.Runner`` (``manage.py pgq_worker``).

Each task registered with a ``PgqBackend`` becomes a handler named by its module path.
An ``async def`` task is awaited on the runner's loop. A plain ``def`` task runs in a
thread pool as large as the runner's concurrency (the runner only takes ``async def``
handlers), with Django's stale database connections closed around it as Django does
around a request. A thread cannot be killed: when a sync task times out, is cancelled or
the worker's grace period ends, pgq fails or releases the job at once and the thread's
late result is discarded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from inspect import iscoroutinefunction
from typing import Any
from urllib.parse import quote, urlencode

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections
from django.tasks import Task, TaskContext, TaskResultStatus, task_backends
from django.tasks.base import TaskError
from django.tasks.signals import task_finished, task_started
from django.utils.json import normalize_json

from ... import db, migrations
from ...jobs import Job
from ...logs import ConsoleFormatter, log_event
from ...runner import Runner
from .backend import PgqBackend, registered_tasks, result_from_job

__all__ = [
    "backends_on",
    "build_runner",
    "database_dsn",
    "dsn_from_settings",
    "migrate_database",
    "run_worker",
]

log = logging.getLogger("pgq.django")

#: libpq options Django may carry in DATABASES[...]["OPTIONS"] that asyncpg understands
#: in a DSN; asyncpg would send any other query parameter to the server as a setting.
_DSN_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "target_session_attrs",
    "passfile",
)


def backends_on(database: str) -> list[PgqBackend]:
    """Every configured ``PgqBackend`` that enqueues on the ``DATABASES`` alias."""
    return [
        backend
        for backend in task_backends.all()
        if isinstance(backend, PgqBackend) and backend.database == database
    ]


def database_dsn(database: str) -> str:
    """A ``postgresql://`` URL for asyncpg to Django's database ``database``."""
    return dsn_from_settings(connections[database].settings_dict, database)


def dsn_from_settings(settings: Mapping[str, Any], database: str = "default") -> str:
    """A ``postgresql://`` URL for asyncpg from one entry of Django's ``DATABASES``.

    Covers NAME, USER, PASSWORD, HOST (a directory is a Unix socket), PORT and the SSL
    options; for anything else (e.g. a libpq ``service``) set the backend's ``DSN``."""
    options = dict(settings.get("OPTIONS") or {})
    if options.get("service"):
        raise ImproperlyConfigured(
            f"DATABASES[{database!r}] uses a libpq service, which pgq's worker (asyncpg) "
            "cannot read: set OPTIONS['DSN'] on the PgqBackend"
        )
    query = {k: str(options[k]) for k in _DSN_OPTIONS if options.get(k) is not None}
    host = str(settings.get("HOST") or "")
    netloc = ""
    if host.startswith("/"):
        query["host"] = host
    elif host:
        netloc = f"[{host}]" if ":" in host else host
    if settings.get("PORT"):
        if netloc:
            netloc += f":{settings['PORT']}"
        else:
            query["port"] = str(settings["PORT"])
    user = settings.get("USER") or ""
    if user:
        auth = quote(user, safe="")
        if settings.get("PASSWORD"):
            auth += ":" + quote(settings["PASSWORD"], safe="")
        netloc = f"{auth}@{netloc}"
    name = quote(settings.get("NAME") or "", safe="")
    return f"postgresql://{netloc}/{name}" + (f"?{urlencode(query)}" if query else "")


def worker_dsn(backend: PgqBackend) -> str:
    return backend.dsn or database_dsn(backend.database)


def migrate_database(database: str) -> list[str]:
    """Apply pgq's pending migrations to ``database``; the names applied."""
    dsn = database_dsn(database)

    async def run() -> list[str]:
        conn = await db.connect(dsn)
        try:
            return await migrations.migrate(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


class SyncPool:
    """The threads sync tasks run in, and how many are running one right now."""

    def __init__(self, size: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="pgq-task")
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    async def run(self, func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(self._call, func, args, kwargs))

    def _call(self, func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            self._busy += 1
        # What Django does around each request: drop connections that are broken or past
        # CONN_MAX_AGE, so a long-lived worker thread never keeps a dead one.
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()
            with self._lock:
                self._busy -= 1


class _TaskHandler:
    """The runner's handler for one Django task (an async callable, as the runner wants)."""

    def __init__(self, task: Task, alias: str, pool: SyncPool) -> None:
        self.task = task
        self.alias = alias
        self.pool = pool
        self.is_async = iscoroutinefunction(task.func)

    async def __call__(self, job: Job) -> Any:
        stored = job.args if isinstance(job.args, dict) else {}
        args = list(stored.get("args", []))
        kwargs = dict(stored.get("kwargs", {}))
        task_result = result_from_job(job, self.alias)
        task_started.send(PgqBackend, task_result=task_result)
        if self.task.takes_context:
            args.insert(0, TaskContext(task_result=task_result))
        try:
            if self.is_async:
                value = await self.task.func(*args, **kwargs)
            else:
                value = await self.pool.run(self.task.func, args, kwargs)
            value = normalize_json(value)
        except Exception as exc:
            kind = type(exc)
            task_result.errors.append(
                TaskError(
                    exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                    traceback="".join(traceback.format_exception(exc)),
                )
            )
            object.__setattr__(task_result, "status", TaskResultStatus.FAILED)
            task_finished.send(PgqBackend, task_result=task_result)
            raise
        object.__setattr__(task_result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(task_result, "_return_value", value)
        task_finished.send(PgqBackend, task_result=task_result)
        return value


def build_runner(
    backend: PgqBackend,
    *,
    queues: Iterable[str] | None = None,
    concurrency: int = 10,
    grace: float = 30.0,
    dsn: str | None = None,
) -> tuple[Runner, SyncPool]:
    """A runner with a handler for each task registered with ``backend`` (import the
    project's task modules first), and the thread pool its sync tasks run in."""
    tasks = registered_tasks(backend.alias)
    if not tasks:
        raise ImproperlyConfigured(
            f"no tasks use the task backend {backend.alias!r}: define them with "
            "@django.tasks.task in an app's tasks.py (or name their modules with --import)"
        )
    if queues is None:
        # QUEUES = [] lets tasks use any queue: then run the queues the tasks declare.
        queues = backend.queues or {"default", *(t.queue_name for t in tasks.values())}
    runner = Runner(
        dsn or worker_dsn(backend),
        queues=sorted(queues),
        concurrency=concurrency,
        grace=grace,
    )
    pool = SyncPool(concurrency)
    for path, task in sorted(tasks.items()):
        runner.handler(path)(_TaskHandler(task, backend.alias, pool))
    return runner, pool


def run_worker(runner: Runner, pool: SyncPool) -> int:
    """Run until SIGTERM/SIGINT (a second one stops at once); 0 when every held job's
    outcome was written, 1 otherwise (those jobs come back when their leases run out).

    Threads still running abandoned sync tasks cannot be stopped, and Python would wait
    for them at exit: the process then ends with ``os._exit`` once the outcome is known."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            runner.stop() if signals == 1 else runner.stop_now()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await runner.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 0 if runner.clean_exit else 1

    code = asyncio.run(main())
    pool.executor.shutdown(wait=False, cancel_futures=True)
    if pool.busy:
        log_event(
            log,
            "django.threads_left",
            f"{pool.busy} sync task thread(s) still running after shutdown (their jobs were "
            "released or failed); exiting without waiting for them",
            level=logging.WARNING,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def ensure_logging() -> None:
    """Show pgq's runner events (INFO) when the project's LOGGING does not route them."""
    logger = logging.getLogger("pgq")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

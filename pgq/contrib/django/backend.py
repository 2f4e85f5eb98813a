"""``PgqBackend``: Django Tasks stored as pgq jobs.

How a Django task maps onto a pgq job:

==================  ==========================================================
Django              pgq
==================  ==========================================================
``task.module_path``  job type (``demo.tasks.add``): the worker's handler name
``args, kwargs``    ``args`` = ``{"args": [...], "kwargs": {...}}``
``queue_name``      queue (pgq's rule: ``^[a-z][a-z0-9_]{0,47}$``)
``priority``        ``-priority``: Django runs larger numbers first, pgq smaller
``run_after``       ``run_at``
result id           the job id, as a string
==================  ==========================================================

A job's status reads as READY (waiting, queued: not started, or waiting to be retried),
RUNNING, SUCCESSFUL (succeeded) or FAILED (dead, cancelled). A task that raises is retried
with pgq's backoff until its attempts run out (``MAX_ATTEMPTS``, default pgq's 10; set 1
for Django's usual "raise means FAILED").

The two statements below are the only SQL of this package. They are written for Django's
cursor (psycopg, ``%s`` placeholders), which is why they are not in ``pgq/queries.py``
(asyncpg): the enqueue has to run on Django's connection to be part of its transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils.module_loading import import_string

from ... import tracing
from ...jobs import Job

__all__ = ["PgqBackend", "PgqTask", "registered_tasks", "result_from_job"]

_TYPE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

#: ``pgq.enqueue``'s optional parameters this backend sets; the others keep their defaults.
_ENQUEUE_PARAMS = (
    "queue",
    "priority",
    "run_at",
    "max_attempts",
    "timeout_seconds",
    "trace_context",
)
#: the ones sent as JSON text
_JSONB_PARAMS = frozenset({"trace_context"})

#: Read one job for get_result(). pgq has no read function (DESIGN lists transitions
#: only; the coordinator reads the same way in queries.get_job). jsonb goes out as text,
#: so psycopg 2 and 3 hand back the same thing whatever loaders Django registered.
_READ_JOB = """
SELECT id, type, queue, status, args::text AS args, priority, run_at, attempts,
       max_attempts, timeout_seconds, worker_id, claimed_at, lease_expires_at,
       result::text AS result, last_error::text AS last_error, errors::text AS errors,
       idempotency_key, depends_on, created_at, updated_at, finished_at
  FROM pgq.jobs
 WHERE id = %s
"""
_JSON_COLUMNS = ("args", "result", "last_error", "errors")

_STATUS = {
    "waiting": TaskResultStatus.READY,
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "dead": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}

#: Error entries pgq writes without an exception type (see the runner's ``_finish``).
_KIND_EXCEPTIONS = {"timeout": "builtins.TimeoutError"}

# backend alias → module path → Task. Filled by validate_task(), which Django calls for
# every Task it builds (``@task`` at import time, ``.using()``), so importing a project's
# task modules registers them; ``manage.py pgq_worker`` runs what is registered here.
_registry: dict[str, dict[str, Task]] = {}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PgqTask(Task):
    """A Django ``Task`` with pgq's per-job limits: ``@task(max_attempts=3,
    timeout_seconds=60)``. ``None`` takes the backend's ``OPTIONS`` (then pgq's default)."""

    max_attempts: int | None = None
    timeout_seconds: int | None = None


class PgqBackend(BaseTaskBackend):
    """Django Tasks backend on pgq (see the module docstring for the mapping).

    ``OPTIONS``: ``DATABASE`` (the ``DATABASES`` alias whose connection enqueues and
    reads, default ``"default"``; it must be PostgreSQL with pgq migrated, which
    ``manage.py migrate`` does), ``DSN`` (what ``pgq_worker`` connects to; default: built
    from that database's settings), ``MAX_ATTEMPTS`` and ``TIMEOUT_SECONDS`` (defaults for
    tasks that do not set their own).
    """

    task_class = PgqTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = dict(self.options)
        self.database: str = options.pop("DATABASE", DEFAULT_DB_ALIAS)
        self.dsn: str | None = options.pop("DSN", None)
        self.max_attempts: int | None = options.pop("MAX_ATTEMPTS", None)
        self.timeout_seconds: int | None = options.pop("TIMEOUT_SECONDS", None)
        if options:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {sorted(options)}: "
                "PgqBackend takes DATABASE, DSN, MAX_ATTEMPTS and TIMEOUT_SECONDS"
            )
        problem = _limits_problem(self.max_attempts, self.timeout_seconds)
        if problem:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']: {problem}")

    # -- Django's backend API -----------------------------------------------------------

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if not _TYPE_NAME.match(task.module_path):
            raise InvalidTask(
                f"task path {task.module_path!r} cannot be a pgq job type: "
                "1-128 characters of A-Z a-z 0-9 _ . : -"
            )
        if not _QUEUE_NAME.match(task.queue_name):
            raise InvalidTask(
                f"queue_name {task.queue_name!r} is not a valid pgq queue: a lowercase "
                "letter then up to 47 of a-z 0-9 _"
            )
        if isinstance(task, PgqTask):
            problem = _limits_problem(task.max_attempts, task.timeout_seconds)
            if problem:
                raise InvalidTask(f"task {task.module_path}: {problem}")
        _registry.setdefault(self.alias, {}).setdefault(task.module_path, task)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """``pgq.enqueue`` on Django's connection: inside ``transaction.atomic()`` the job
        exists only if (and once) that transaction commits."""
        self.validate_task(task)
        # TaskResult normalises args/kwargs to JSON types (and refuses what is not).
        pending = TaskResult(
            task=task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        values: dict[str, Any] = {
            "queue": task.queue_name,
            "priority": -task.priority,
            "run_at": task.run_after,
            "max_attempts": getattr(task, "max_attempts", None) or self.max_attempts,
            "timeout_seconds": getattr(task, "timeout_seconds", None) or self.timeout_seconds,
            # with OpenTelemetry installed, the worker's span continues the current trace
            "trace_context": json.dumps(context) if (context := tracing.current()) else None,
        }
        named = [name for name in _ENQUEUE_PARAMS if values[name] is not None]
        # Only the parameters given are named, so the others keep pgq.enqueue's defaults.
        sql = "SELECT id, created_at FROM pgq.enqueue(job_type => %s, args => %s::jsonb{})".format(
            "".join(f", {name} => %s{'::jsonb' if name in _JSONB_PARAMS else ''}" for name in named)
        )
        payload = json.dumps({"args": pending.args, "kwargs": pending.kwargs})
        with self._connection().cursor() as cursor:
            cursor.execute(sql, [task.module_path, payload, *(values[n] for n in named)])
            job_id, created_at = cursor.fetchone()
        result = dataclasses.replace(pending, id=str(job_id), enqueued_at=created_at)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The job as it stands now. Raises ``TaskResultDoesNotExist`` for an unknown id (a
        task enqueued in a rolled-back transaction never existed) or a job that is not a
        Django task."""
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"{result_id!r} is not a pgq job id") from None
        with self._connection().cursor() as cursor:
            cursor.execute(_READ_JOB, [job_id])
            row = cursor.fetchone()
            names = [c[0] for c in cursor.description] if row is not None else []
        if row is None:
            raise TaskResultDoesNotExist(f"no pgq job {job_id}")
        record = dict(zip(names, row, strict=True))
        for column in _JSON_COLUMNS:
            if record[column] is not None:
                record[column] = json.loads(record[column])
        job = Job.from_record(record)
        return result_from_job(job, self.alias)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        if self.database not in connections.settings:
            return [
                checks.Error(
                    f"TASKS[{self.alias!r}] uses DATABASE {self.database!r}, which is not "
                    "in DATABASES",
                    id="pgq.E001",
                )
            ]
        vendor = connections[self.database].vendor
        if vendor != "postgresql":
            return [
                checks.Error(
                    f"TASKS[{self.alias!r}] needs a PostgreSQL database; DATABASES"
                    f"[{self.database!r}] is {vendor}",
                    id="pgq.E002",
                )
            ]
        return []

    # -- helpers ------------------------------------------------------------------------

    def _connection(self) -> Any:
        connection = connections[self.database]
        if connection.vendor != "postgresql":
            raise ImproperlyConfigured(
                f"TASKS[{self.alias!r}] needs a PostgreSQL database; DATABASES"
                f"[{self.database!r}] is {connection.vendor}"
            )
        return connection


def registered_tasks(alias: str) -> dict[str, Task]:
    """Module path → Task of every task built so far for the backend ``alias``."""
    return dict(_registry.get(alias, {}))


def result_from_job(job: Job, alias: str) -> TaskResult:
    """The Django view of a pgq job (get_result(), and the context a running task gets)."""
    try:
        task = import_string(job.type)
    except ImportError:
        raise TaskResultDoesNotExist(
            f"pgq job {job.id} has type {job.type!r}, which is not an importable task"
        ) from None
    if not isinstance(task, Task):
        raise TaskResultDoesNotExist(f"pgq job {job.id} ({job.type}) is not a Django task")
    if task.queue_name != job.queue or task.priority != -job.priority:
        # A job enqueued outside this backend's rules keeps the task as declared.
        with contextlib.suppress(InvalidTask):
            task = task.using(priority=-job.priority, queue_name=job.queue)
    status = _STATUS[job.status]
    errors = [_task_error(entry) for entry in job.errors if entry.get("kind") != "released"]
    # pgq keeps only the latest attempt's worker; earlier attempts' entries are "" so that
    # TaskResult.attempts (len(worker_ids)) still counts every attempt.
    worker_ids = [""] * (job.attempt - 1) + [job.worker_id or ""] if job.attempt else []
    args = job.args if isinstance(job.args, dict) else {}
    result = TaskResult(
        task=task,
        id=str(job.id),
        status=status,
        enqueued_at=job.created_at,
        started_at=job.claimed_at,
        finished_at=job.finished_at if job.finished else None,
        last_attempted_at=job.claimed_at,
        args=args.get("args", []),
        kwargs=args.get("kwargs", {}),
        backend=alias,
        errors=errors,
        worker_ids=worker_ids,
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", job.result)
    return result


def _task_error(entry: dict[str, Any]) -> TaskError:
    path = entry.get("type") or _KIND_EXCEPTIONS.get(entry.get("kind", ""), "builtins.Exception")
    return TaskError(
        exception_class_path=path,
        traceback=entry.get("traceback") or entry.get("message") or "",
    )


def _limits_problem(max_attempts: Any, timeout_seconds: Any) -> str | None:
    """What is wrong with these limits (pgq's ranges), or None."""
    for name, value, high in (
        ("max_attempts", max_attempts, 1000),
        ("timeout_seconds", timeout_seconds, 86400),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high
        ):
            return f"{name} must be a whole number 1..{high}, not {value!r}"
    return None

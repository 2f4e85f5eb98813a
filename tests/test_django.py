"""``pgq.contrib.django`` with the example project (examples/django_project) on a real
PostgreSQL: this process enqueues through Django (ORM connection, views, ``atomic()``), and
``manage.py pgq_worker`` runs as a real process.

Django 6 needs Python >= 3.12; on 3.11 the module is skipped, and ``.ci/django`` runs it in
a 3.12 virtualenv (failing if it was skipped there).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

if sys.version_info < (3, 12):
    pytest.skip(
        "Django 6 needs Python >= 3.12 (.ci/django runs these tests in a 3.12 virtualenv)",
        allow_module_level=True,
    )
pytest.importorskip("django", minversion="6.0", reason="needs pip install '.[django]'")
pytest.importorskip("psycopg", reason="needs pip install '.[django]'")

import django
import psycopg

from pgq import migrations

from .support import dsn_for

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_project"
WORKER_STOP_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def django_dsn(pg_server: Any) -> Iterator[str]:
    """An empty database for the example project, set up as a user would: ``migrate``
    (which also installs pgq's schema). Django is configured once, in this process."""
    name = f"pgq_django_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_for(pg_server.dsn, name)
    os.environ["DATABASE_URL"] = dsn
    os.environ["DJANGO_SETTINGS_MODULE"] = "demo_site.settings"
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    django.setup()
    try:
        yield dsn
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def migrate_output(django_dsn: str) -> str:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("migrate", stdout=out, verbosity=1)
    return out.getvalue()


@pytest.fixture
def project(migrate_output: str) -> Iterator[None]:
    """A clean queue for each test."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM pgq.jobs")
    yield


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log_path = log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pgq_worker ignored SIGTERM:\n{self.log()[-3000:]}") from None


@pytest.fixture
def start_worker(django_dsn: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """``manage.py pgq_worker ARGS`` as a process; stopped (SIGTERM) after the test."""
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        log = tmp_path / f"worker{len(started)}.log"
        env = {**os.environ, "DATABASE_URL": django_dsn, "PYTHONUNBUFFERED": "1"}
        env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py sets the example's own
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "pgq_worker", *args],
                cwd=EXAMPLE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_finished(result: Any, worker: Worker, timeout: float = 30.0) -> Any:
    """Re-read the task result until it is finished (the worker is another process)."""
    deadline = time.monotonic() + timeout
    while True:
        result.refresh()
        if result.is_finished:
            return result
        if worker.proc.poll() is not None:
            raise AssertionError(f"pgq_worker exited {worker.proc.returncode}:\n{worker.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"task {result.id} still {result.status} after {timeout}s:\n{worker.log()[-3000:]}"
            )
        time.sleep(0.05)


def job_row(job_id: str) -> dict[str, Any] | None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT type, queue, priority, run_at, status, max_attempts, timeout_seconds, "
            "args::text FROM pgq.jobs WHERE id = %s",
            [int(job_id)],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    keys = ("type", "queue", "priority", "run_at", "status", "max_attempts", "timeout_seconds")
    return dict(zip((*keys, "args"), row, strict=True))


# -- migrate ------------------------------------------------------------------------------


def test_migrate_installs_pgq_schema(migrate_output: str) -> None:
    from django.core.management import call_command
    from django.db import connection

    names = [m.name for m in migrations.load_migrations()]
    assert f"pgq: applied {', '.join(names)}" in migrate_output
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pgq.migrations ORDER BY name")
        assert [r[0] for r in cursor.fetchall()] == names
    again = io.StringIO()
    call_command("migrate", stdout=again, verbosity=1)
    assert "pgq: schema up to date" in again.getvalue()


# -- enqueue ------------------------------------------------------------------------------


def test_task_enqueued_in_rolled_back_atomic_never_exists(project: None) -> None:
    from demo.tasks import add
    from django.db import transaction
    from django.tasks.exceptions import TaskResultDoesNotExist

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        inside = add.enqueue(1, 2)
        # visible inside the transaction: it is a row written on Django's connection
        assert job_row(inside.id) is not None
        raise Abort
    assert job_row(inside.id) is None
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result(inside.id)

    with transaction.atomic():
        committed = add.enqueue(3, 4)
    assert add.get_result(committed.id).status == "READY"


def test_enqueue_maps_priority_queue_run_after_and_limits(project: None) -> None:
    from demo.tasks import add, send_welcome, with_limits
    from django.utils import timezone

    later = timezone.now() + timedelta(hours=1)
    plain = add.enqueue(1, b=2)
    urgent = add.using(priority=100, run_after=later).enqueue(5, 6)
    email = send_welcome.enqueue("ada@example.org")
    limited = with_limits.enqueue()

    row = job_row(plain.id)
    assert row is not None
    assert (row["type"], row["queue"], row["priority"], row["status"]) == (
        "demo.tasks.add",
        "default",
        0,
        "queued",
    )
    assert row["args"] == '{"args": [1], "kwargs": {"b": 2}}'
    assert (row["max_attempts"], row["timeout_seconds"]) == (1, 300)  # settings' MAX_ATTEMPTS
    row = job_row(urgent.id)
    assert row is not None and (row["priority"], row["run_at"]) == (-100, later)
    row = job_row(email.id)
    assert row is not None and (row["queue"], row["priority"]) == ("emails", -10)
    row = job_row(limited.id)
    assert row is not None and (row["max_attempts"], row["timeout_seconds"]) == (3, 60)

    # get_result() gives the task back as it was enqueued
    result = add.get_result(urgent.id)
    assert (result.task.priority, result.args, result.kwargs) == (100, [5, 6], {})
    assert result.enqueued_at is not None and result.status == "READY"
    assert send_welcome.get_result(email.id).task.queue_name == "emails"


def test_enqueue_keeps_the_current_trace_context(project: None) -> None:
    from demo.tasks import add
    from django.db import connection
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("view").start_as_current_span("view") as span:
        traced = add.enqueue(1, 2)
    plain = add.enqueue(3, 4)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT trace_context->>'traceparent' FROM pgq.jobs WHERE id = ANY(%s) ORDER BY id",
            [[int(traced.id), int(plain.id)]],
        )
        (traceparent,), (nothing,) = cursor.fetchall()
    context = span.get_span_context()
    assert traceparent.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert nothing is None


def test_bad_input_is_refused_clearly(project: None) -> None:
    from demo.tasks import add, nap
    from django.db import connection
    from django.tasks import task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.test import override_settings

    from pgq.contrib.django import PgqBackend

    with pytest.raises(InvalidTask, match="Queue 'emailz' is not valid"):  # Django's QUEUES
        add.using(queue_name="emailz")
    any_queue = {"default": {"BACKEND": "pgq.contrib.django.PgqBackend", "QUEUES": []}}
    with (
        override_settings(TASKS=any_queue),
        pytest.raises(InvalidTask, match="queue_name 'Bad-Queue' is not a valid pgq queue"),
    ):
        add.using(queue_name="Bad-Queue")
    with pytest.raises(InvalidTask, match=r"max_attempts must be a whole number 1\.\.1000"):
        task_backends["default"].task_class(func=add.func, max_attempts=0)
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        add.using(priority=101)
    with pytest.raises(TypeError):
        add.enqueue(object())  # not JSON
    with pytest.raises(TaskResultDoesNotExist, match="'abc' is not a pgq job id"):
        add.get_result("abc")
    with pytest.raises(TaskResultDoesNotExist, match="no pgq job 999999"):
        add.get_result("999999")
    with connection.cursor() as cursor:  # a job some other pgq client enqueued
        cursor.execute("SELECT id FROM pgq.enqueue('TMDB_SYNC')")
        (other,) = cursor.fetchone()
    with pytest.raises(TaskResultDoesNotExist, match="not an importable task"):
        add.get_result(str(other))
    with pytest.raises(TaskResultMismatch):
        nap.get_result(add.enqueue(1, 1).id)
    with pytest.raises(Exception, match="unknown keys \\['RETRIES'\\]"):
        PgqBackend("x", {"BACKEND": "pgq.contrib.django.PgqBackend", "OPTIONS": {"RETRIES": 3}})


def test_aenqueue_and_aget_result(project: None) -> None:
    from asgiref.sync import async_to_sync
    from demo.tasks import add

    result = async_to_sync(add.aenqueue)(7, 8)
    again = async_to_sync(add.aget_result)(result.id)
    assert (again.id, again.args, again.status) == (result.id, [7, 8], "READY")


def test_dsn_from_settings() -> None:
    from pgq.contrib.django.worker import dsn_from_settings

    assert (
        dsn_from_settings(
            {
                "NAME": "shop db",
                "USER": "app@corp",
                "PASSWORD": "p:w/d",
                "HOST": "db.internal",
                "PORT": 5433,
                "OPTIONS": {"sslmode": "require", "pool": True},
            }
        )
        == "postgresql://app%40corp:p%3Aw%2Fd@db.internal:5433/shop%20db?sslmode=require"
    )
    assert (
        dsn_from_settings({"NAME": "x", "HOST": "/var/run/postgresql", "PORT": "5432"})
        == "postgresql:///x?host=%2Fvar%2Frun%2Fpostgresql&port=5432"
    )
    assert dsn_from_settings({"NAME": "x", "HOST": "::1"}) == "postgresql://[::1]/x"


# -- the worker ---------------------------------------------------------------------------


def test_committed_tasks_run_under_pgq_worker_and_results_come_back(
    project: None, start_worker: Callable[..., Worker]
) -> None:
    from demo.tasks import add, broken, send_welcome, which_attempt
    from django.db import transaction

    with transaction.atomic():
        total = add.enqueue(2, 3)
        welcome = send_welcome.enqueue("ada@example.org")
    attempt = which_attempt.enqueue()
    failing = broken.enqueue("no such user")
    worker = start_worker()

    assert wait_finished(total, worker).return_value == 5
    assert total.status == "SUCCESSFUL" and total.attempts == 1
    assert total.started_at <= total.finished_at
    assert total.worker_ids[0]  # the worker's pgq worker_id
    assert wait_finished(welcome, worker).return_value == {"sent_to": "ada@example.org"}
    assert wait_finished(attempt, worker).return_value == 1  # TaskContext.attempt

    wait_finished(failing, worker)
    assert failing.status == "FAILED"
    [error] = failing.errors
    assert error.exception_class is ValueError
    assert "no such user" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        failing.return_value  # noqa: B018

    assert worker.stop() == 0, worker.log()


def test_view_enqueues_and_reads_the_result(
    project: None, start_worker: Callable[..., Worker]
) -> None:
    from django.test import Client

    client = Client()
    answer = client.get("/add", {"a": 20, "b": 22})
    assert answer.status_code == 200
    result_id = answer.json()["id"]
    worker = start_worker()
    deadline = time.monotonic() + 30
    while (body := client.get(f"/tasks/{result_id}").json())["status"] != "SUCCESSFUL":
        assert body["status"] in ("READY", "RUNNING"), body
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.05)
    assert body == {"id": result_id, "status": "SUCCESSFUL", "return_value": 42}
    assert client.get("/tasks/0").status_code == 404


def test_worker_honours_priority_queues_and_run_after(
    project: None, start_worker: Callable[..., Worker]
) -> None:
    from demo.tasks import add, nap, send_welcome
    from django.utils import timezone

    low = nap.using(priority=-50).enqueue(0)
    high = nap.using(priority=50).enqueue(0)
    later = add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 1)
    email = send_welcome.enqueue("ada@example.org")  # queue "emails", not claimed below
    worker = start_worker("--queues", "default", "--concurrency", "1")

    wait_finished(low, worker)
    wait_finished(high, worker)
    assert high.started_at < low.started_at  # larger Django priority claimed first
    for pending in (later, email):
        pending.refresh()
        assert pending.status == "READY"
    assert worker.stop() == 0


def test_sync_tasks_run_in_threads_while_async_tasks_go_on(
    project: None, start_worker: Callable[..., Worker]
) -> None:
    from demo.tasks import nap, send_welcome

    first, second = nap.enqueue(1.0), nap.enqueue(1.0)
    worker = start_worker("--concurrency", "3")
    wait_finished(first, worker)
    wait_finished(second, worker)
    # both ran at once on a concurrency of 3 (not one after the other)
    assert first.started_at < second.finished_at and second.started_at < first.finished_at
    welcome = send_welcome.enqueue("ada@example.org")
    busy = nap.enqueue(2.0)
    busy_started = time.monotonic()
    wait_finished(welcome, worker)
    assert time.monotonic() - busy_started < 2.0  # not stuck behind the sleeping thread
    wait_finished(busy, worker)
    assert worker.stop() == 0


def test_sigterm_releases_a_sync_task_past_the_grace_period(
    project: None, start_worker: Callable[..., Worker]
) -> None:
    from demo.tasks import nap

    long = nap.enqueue(30)
    worker = start_worker("--grace", "0.5")
    deadline = time.monotonic() + 30
    while (long.refresh(), long.status)[1] != "RUNNING":
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.05)
    started = time.monotonic()
    assert worker.stop() == 0, worker.log()
    # the thread could not be killed; the worker released the job and exited anyway
    assert time.monotonic() - started < 10
    long.refresh()
    assert long.status == "READY"
    assert "sync task thread(s) still running" in worker.log()


def test_misconfiguration_is_reported(project: None, django_dsn: str) -> None:
    from pgq.contrib.django import PgqBackend

    backend = PgqBackend("q", {"OPTIONS": {"DATABASE": "queue"}})
    [error] = backend.check()
    assert error.id == "pgq.E001" and "'queue', which is not in DATABASES" in error.msg
    assert task_backend_check_ids() == []  # the example's own backend is fine

    env = {**os.environ, "DATABASE_URL": django_dsn}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for args, message in (
        (["--backend", "nope"], "The connection 'nope' doesn't exist"),
        (["--queues", "Bad"], "queue 'Bad' is invalid"),
        (["--import", "demo.no_such_module"], "--import demo.no_such_module: No module named"),
    ):
        done = subprocess.run(
            [sys.executable, "manage.py", "pgq_worker", *args],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done
        assert message in done.stderr, done.stderr


def task_backend_check_ids() -> list[str]:
    from django.tasks import task_backends

    return [message.id for message in task_backends["default"].check()]

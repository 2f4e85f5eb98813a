"""``pgq.Runner``: async handlers fed by batched claims, woken by NOTIFY.

::

    runner = pgq.Runner()                       # dsn from PGQ_DATABASE_URL at run() time

    @runner.handler("TMDB_SYNC", timeout=60)
    async def tmdb_sync(job: pgq.Job) -> dict:
        ...                                     # return value → result; raise → retry later

    await runner.run()                          # until runner.stop() / runner.stop_now()

Two layers, so that the same handler machinery can run over the database or over the
coordinator's HTTP API:

``Runner``
    handlers, the concurrency limit (slots), one task per job, timeouts, heartbeats,
    cancellation, shutdown, logs. It never sees SQL: it talks to a ``JobSource``.
``JobSource`` (a protocol) and ``DatabaseSource`` (its implementation on PostgreSQL)
    where jobs come from and where outcomes go: wake-ups (LISTEN on the shared
    self-healing ``Listener``), ``pgq.claim``, ``pgq.complete_many`` in batches,
    ``pgq.fail``, ``pgq.heartbeat``, the lease sweep (``pgq.expire_leases`` /
    ``pgq.next_due``) and cancellation notices from ``pgq_events``. ``pgq/http_runner.py``
    (``HttpSource``, used by ``pgq runner --coordinator URL``) provides the same protocol
    over ``POST /jobs/claim`` (long poll), ``/heartbeat`` and ``/complete``.

The claim loop (``Runner._claim_loop``, one task) is in one of these modes:

  claiming     some slots are free and work may be waiting (at start, after a claim that
               filled every slot it asked for, after a wake-up): one ``claim(free)`` call
               takes as many jobs as there are free slots; each starts as its own task.
  full         every slot is busy: wait until a handler finishes.
  idle         the last claim came back short: wait for ``source.wait_for_work()``, i.e.
               a notification, the next due ``run_at`` the runner knows of, a safety
               re-check (60 s, jittered) or a reconnect of the LISTEN connection.
  backing off  a claim failed (database unreachable): sleep with jittered backoff.
  stopped      ``stop()``: no more claims; handlers get ``grace`` seconds to finish; the
               rest are cancelled and their jobs released (``pgq.release``: queued again
               now without spending the attempt; another runner takes it at once).
               ``stop_now()`` (a second SIGTERM/SIGINT) skips the grace period.

Every outcome is written fenced by worker and attempt, so a runner whose lease ran out
can never overwrite a newer attempt; the write runs outside the handler's cancellation
scope and is retried while the database is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import random
import re
import secrets
import signal
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import asyncpg
import orjson

from . import db, migrations, queries
from .config import database_url
from .doorbell import Doorbell
from .errors import (
    DatabaseUnavailable,
    JobNotFound,
    PermanentError,
    PgqError,
    RetryLater,
    TransitionNotAllowed,
    translate,
)
from .jobs import Job
from .listener import Listener
from .logs import log_event

__all__ = [
    "DatabaseSource",
    "Handler",
    "JobSource",
    "Runner",
    "RunnerHooks",
    "run_from_cli",
]

log = logging.getLogger("pgq.runner")

HandlerFn = Callable[[Job], Awaitable[Any]]
F = TypeVar("F", bound=HandlerFn)
T = TypeVar("T")

_TYPE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

#: After the grace period, how long to wait for the release writes of cancelled handlers.
RELEASE_TIMEOUT = 10.0
#: The same for stop_now(): "at once", but still give the database a moment.
HARD_RELEASE_TIMEOUT = 2.0
#: Longest a single pgq function call may take before the runner treats the connection as
#: broken (calls take milliseconds; a row lock held by a long transaction could hold one).
COMMAND_TIMEOUT = 60.0
#: Longest stored traceback of a failed attempt (it goes into pgq.jobs.errors).
MAX_TRACEBACK_CHARS = 4000
#: While the runner cannot arm its doorbell (the barrier timed out behind an enqueuer that
#: holds a queue's key, or registering failed), it looks for work this often instead.
UNARMED_POLL = 0.05
#: After a claim that found jobs but not enough, the runner looks again this soon instead
#: of registering idle at once: while jobs keep coming it stays unregistered, so their
#: enqueues send no NOTIFY (which serializes producers' commits). It registers once a
#: claim finds nothing, so a lone job still wakes it at once.
BUSY_RECHECK = 0.001


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler: the coroutine function and its own (shorter) timeout."""

    job_type: str
    fn: HandlerFn
    timeout: float | None = None


# --------------------------------------------------------------------------------------
# The seam between the handler machinery and the transport
# --------------------------------------------------------------------------------------


class RunnerHooks(Protocol):
    """What a ``JobSource`` may ask of the runner that opened it."""

    @property
    def worker_id(self) -> str: ...
    @property
    def queues(self) -> tuple[str, ...]: ...
    @property
    def job_types(self) -> tuple[str, ...]: ...
    @property
    def concurrency(self) -> int: ...

    def held_jobs(self) -> Mapping[int, int]:
        """job id → attempt of every job this runner holds: claimed, its outcome not yet
        written (the handler may be running or done)."""
        ...

    def job_gone(self, job_id: int, status: str | None) -> None:
        """The job is no longer this runner's (cancelled, lease expired, claimed again):
        stop its handler and write nothing. ``status`` is its new status when known."""
        ...


class JobSource(Protocol):
    """Where a Runner's jobs come from and where their outcomes go.

    Transient trouble (the database or the coordinator is unreachable) is raised as
    ``pgq.DatabaseUnavailable``; the runner retries. A refusal because the job is no
    longer held by this worker at this attempt is *not* an exception: ``complete`` and
    ``fail`` report it in their return value, ``heartbeat`` returns False.
    """

    async def open(self, hooks: RunnerHooks) -> None:
        """Connect; return once wake-ups can be received (LISTEN is active)."""
        ...

    async def close(self) -> None: ...

    async def claim(self, max_jobs: int) -> list[Job]:
        """Up to ``max_jobs`` jobs of the hooks' queues and types, now held by this worker.

        Any wake-up received before this call is considered consumed by it."""
        ...

    async def wait_for_work(self) -> None:
        """Return when a claim may find work: a notification, a job becoming due, a safety
        re-check, a reconnect. Returns at once when a wake-up arrived since the last
        ``claim``. May return spuriously; the runner is cancelled out of it on stop."""
        ...

    def complete(self, job: Job, result: Any) -> Awaitable[tuple[bool, str | None]]:
        """Record success: (completed, the job's status afterwards, when known). May be a
        coroutine function or return a future (cheaper to shield than a coroutine)."""
        ...

    async def fail(
        self, job: Job, error: dict[str, Any], *, retryable: bool, retry_delay: float | None
    ) -> Job | None:
        """Record a failed attempt; the job afterwards (queued or dead), or None when the
        job was no longer held by this worker at this attempt."""
        ...

    async def release(self, job: Job, reason: dict[str, Any]) -> Job | None:
        """Hand the job back (shutdown) to run again at once without spending its attempt;
        the job afterwards, or None when it was no longer held by this worker at this
        attempt."""
        ...

    async def heartbeat(self, job: Job) -> bool:
        """Extend the lease; False when the job is no longer held (at this attempt)."""
        ...

    def health(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Active:
    """A job this runner holds, from claim until its outcome is written."""

    job: Job
    handler: Handler
    started: float = 0.0  # time.perf_counter() at handler start
    task: asyncio.Task[None] | None = None
    in_handler: bool = True
    #: why the runner cancelled the handler: "cancelled" (job cancelled), "lost" (no longer
    #: held: lease expired / claimed again), "timeout", "shutdown" (grace period over)
    cancel_reason: str | None = None
    timeout: float = 0.0  # seconds the handler may run
    deadline: float = 0.0  # loop.time() when it has run that long
    next_beat: float = 0.0  # loop.time() of the next heartbeat
    #: one timer per job, at min(deadline, next_beat): the heartbeat and the timeout
    timer: asyncio.TimerHandle | None = None
    heartbeats: set[asyncio.Task[None]] = field(default_factory=set)


class Runner:
    """Runs ``async def`` handlers for jobs claimed from pgq (see the module docstring).

    ``dsn`` falls back to ``PGQ_DATABASE_URL`` / ``DATABASE_URL`` when ``run()`` starts.
    ``queues``: the queues to claim from. ``concurrency``: handlers at once. ``grace``:
    seconds ``stop()`` lets running handlers finish before cancelling and releasing them.
    ``worker_id``: this runner's name in ``pgq.jobs.worker_id`` (default host-pid-random).
    ``safety_interval``: the re-check that covers notifications lost in a reconnect.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        queues: Iterable[str] | str = ("default",),
        concurrency: int = 10,
        grace: float = 30.0,
        worker_id: str | None = None,
        safety_interval: float = 60.0,
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        self._dsn = dsn
        self._queues: tuple[str, ...] = ()
        self._concurrency = 0
        self._grace = 0.0
        self.configure(queues=queues, concurrency=concurrency, grace=grace)
        if safety_interval <= 0:
            raise ValueError(f"safety_interval must be positive, not {safety_interval!r}")
        self.safety_interval = float(safety_interval)
        self._worker_id = worker_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        if not 1 <= len(self._worker_id) <= 255:
            raise ValueError("worker_id must be 1-255 characters")

        self._source: JobSource | None = None
        self._active: dict[int, _Active] = {}  # job id → held job whose handler runs
        self._held: dict[int, int] = {}  # job id → attempt, from claim until written
        self._tasks: set[asyncio.Task[None]] = set()  # every job task, writes included
        self._stop_event = asyncio.Event()
        self._hard_event = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._running = False
        self._stop_requested_at: float | None = None
        self._unwritten = 0  # outcomes that could not be written during the last run()
        self.counts: dict[str, int] = dict.fromkeys(
            ("claimed", "succeeded", "failed", "retried", "dead", "cancelled", "released", "lost"),
            0,
        )

    # -- configuration ----------------------------------------------------------------

    def configure(
        self,
        *,
        dsn: str | None = None,
        queues: Iterable[str] | str | None = None,
        concurrency: int | None = None,
        grace: float | None = None,
    ) -> None:
        """Override settings (``pgq runner`` flags do this); None leaves a setting as is."""
        if dsn is not None:
            self._dsn = dsn
        if queues is not None:
            names = (queues,) if isinstance(queues, str) else tuple(queues)
            if not names:
                raise ValueError("a runner needs at least one queue")
            for name in names:
                if not isinstance(name, str) or not _QUEUE_NAME.match(name):
                    raise ValueError(
                        f"queue {name!r} is invalid: use a lowercase letter then up to 47 "
                        "of a-z 0-9 _"
                    )
            self._queues = tuple(dict.fromkeys(names))
        if concurrency is not None:
            if isinstance(concurrency, bool) or not 1 <= int(concurrency) <= 10000:
                raise ValueError(f"concurrency must be 1..10000, not {concurrency!r}")
            self._concurrency = int(concurrency)
        if grace is not None:
            if grace < 0:
                raise ValueError(f"grace must not be negative, not {grace!r}")
            self._grace = float(grace)

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def queues(self) -> tuple[str, ...]:
        return self._queues

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def grace(self) -> float:
        return self._grace

    @property
    def job_types(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return dict(self._handlers)

    def handler(self, job_type: str, *, timeout: float | None = None) -> Callable[[F], F]:
        """Register ``async def fn(job)`` for ``job_type``; ``timeout`` (seconds) can only
        shorten the job's own ``timeout_seconds``."""
        if not isinstance(job_type, str) or not _TYPE_NAME.match(job_type):
            raise ValueError(
                f"job type {job_type!r} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : -"
            )
        if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")

        def register(fn: F) -> F:
            call = type(fn).__call__ if not inspect.isfunction(fn) else None
            if not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)):
                raise TypeError(f"the handler for {job_type} must be an `async def` function")
            if job_type in self._handlers:
                raise ValueError(f"a handler for {job_type} is already registered")
            self._handlers[job_type] = Handler(job_type, fn, timeout)
            return fn

        return register

    # -- hooks for the source -----------------------------------------------------------

    def held_jobs(self) -> Mapping[int, int]:
        return dict(self._held)

    def job_gone(self, job_id: int, status: str | None) -> None:
        active = self._active.get(job_id)
        if active is None or not active.in_handler or active.cancel_reason is not None:
            return
        self._cancel(active, "cancelled" if status == "cancelled" else "lost")

    # -- state --------------------------------------------------------------------------

    @property
    def running_jobs(self) -> int:
        """Handlers running right now."""
        return len(self._active)

    def health(self) -> dict[str, Any]:
        """For /health and metrics: what this runner holds and how its source is doing."""
        return {
            "worker_id": self._worker_id,
            "running": self._running,
            "stopping": self._stop_event.is_set(),
            "queues": list(self._queues),
            "job_types": list(self._handlers),
            "concurrency": self._concurrency,
            "running_jobs": len(self._active),
            "counts": dict(self.counts),
            "source": self._source.health() if self._source is not None else None,
        }

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        """Drain like SIGTERM: claim nothing more, let running handlers finish within the
        grace period, cancel and release the rest; ``run()`` then returns."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self._stop_event.set()
        self._slot_freed.set()

    def stop_now(self) -> None:
        """Stop at once (a second SIGTERM/SIGINT): cancel running handlers now and release
        their jobs, waiting at most a couple of seconds for those writes."""
        self.stop()
        self._hard_event.set()

    async def run(self, *, source: JobSource | None = None) -> None:
        """Run until ``stop()``/``stop_now()``; a coroutine in the caller's event loop.

        ``source`` defaults to a ``DatabaseSource`` on ``dsn`` (or ``PGQ_DATABASE_URL``).
        """
        if self._running:
            raise RuntimeError("this runner is already running")
        if not self._handlers:
            raise PgqError("the runner has no handlers: register some with @runner.handler")
        if source is None:
            source = DatabaseSource(database_url(self._dsn), safety_interval=self.safety_interval)
        self._running = True
        self._unwritten = 0
        self._source = source
        cancelled = False
        try:
            opened = await self._until_stopped(source.open(self))
            if opened:
                log_event(
                    log,
                    "runner.started",
                    f"runner {self._worker_id} started: queues {','.join(self._queues)}, "
                    f"types {','.join(self._handlers)}, concurrency {self._concurrency}",
                    worker_id=self._worker_id,
                )
                claim_loop = asyncio.create_task(self._claim_loop(), name="pgq-claim-loop")
                try:
                    await self._stop_event.wait()
                except asyncio.CancelledError:
                    # run() itself was cancelled: stop at once (release what we hold),
                    # then let the cancellation through.
                    cancelled = True
                    self.stop_now()
                # The loop notices the stop itself: a claim in flight is finished, so its
                # jobs are started (and then drained) rather than orphaned.
                await claim_loop
                await self._drain()
                if cancelled:
                    raise asyncio.CancelledError
        finally:
            try:
                await source.close()
            finally:
                self._running = False
                self._source = None
                self._stop_event.clear()
                self._hard_event.clear()
                self._stop_requested_at = None
        log_event(
            log,
            "runner.stopped",
            f"runner {self._worker_id} stopped",
            worker_id=self._worker_id,
        )

    @property
    def clean_exit(self) -> bool:
        """Whether the last ``run()`` wrote every outcome (completed or released every job)."""
        return self._unwritten == 0

    async def _until_stopped(self, aw: Awaitable[Any]) -> bool:
        """Await ``aw`` unless stop is requested first (then cancel it); True if it ran."""
        task = asyncio.ensure_future(aw)
        if self._stop_event.is_set():
            task.cancel()
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return False
        task.result()  # re-raise its exception
        return True

    async def _claim_loop(self) -> None:
        source = self._source
        assert source is not None
        more = True  # whether a claim may find work right now
        backoff = 0.1
        while not self._stop_event.is_set():
            try:
                free = self._concurrency - len(self._active)
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                if not more:
                    await self._until_stopped(source.wait_for_work())
                    more = True
                    continue
                jobs = await source.claim(free)
            except DatabaseUnavailable as exc:
                sleep = random.uniform(backoff / 2, backoff)
                log_event(
                    log,
                    "runner.claim_failed",
                    f"cannot claim ({exc}); retrying in {sleep:.2f}s",
                    level=logging.WARNING,
                    worker_id=self._worker_id,
                )
                await self._until_stopped(asyncio.sleep(sleep))
                backoff = min(backoff * 2, 5.0)
                more = True
                continue
            except Exception:
                log.exception("claim loop error; retrying", extra={"event": "runner.error"})
                await self._until_stopped(asyncio.sleep(random.uniform(0.5, 1.0)))
                more = True
                continue
            backoff = 0.1
            for job in jobs:
                self._start(job)
            more = len(jobs) >= free

    # -- one job --------------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        handler = self._handlers.get(job.type)
        if handler is None:  # claim filters by type; this is a bug, not the job's fault
            handler = Handler(job.type, _no_handler)
        previous = self._active.get(job.id)
        if previous is not None:  # an older attempt of ours still runs: it lost its lease
            self._cancel(previous, "lost")
        active = _Active(job, handler)
        self._active[job.id] = active
        self._held[job.id] = job.attempt
        self.counts["claimed"] += 1
        task = asyncio.get_running_loop().create_task(self._execute(active))
        active.task = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "job task failed",
                exc_info=task.exception(),
                extra={"event": "runner.error", "worker_id": self._worker_id},
            )

    def _cancel(self, active: _Active, reason: str) -> None:
        if active.in_handler and active.cancel_reason is None and active.task is not None:
            active.cancel_reason = reason
            active.task.cancel()

    def _leave_handler(self, active: _Active) -> None:
        """The handler is over: free its slot and stop its timer (heartbeat, timeout)."""
        active.in_handler = False
        if active.timer is not None:
            active.timer.cancel()
            active.timer = None
        if self._active.get(active.job.id) is active:
            del self._active[active.job.id]
        self._slot_freed.set()

    async def _execute(self, active: _Active) -> None:
        try:
            await self._run_job(active)
        finally:
            if self._held.get(active.job.id) == active.job.attempt:
                del self._held[active.job.id]

    async def _run_job(self, active: _Active) -> None:
        job, handler = active.job, active.handler
        loop = asyncio.get_running_loop()
        fields = {
            "job_id": job.id,
            "job_type": job.type,
            "queue": job.queue,
            "worker_id": self._worker_id,
            "attempt": job.attempt,
        }
        log_event(log, "job.claimed", **fields)
        timeout = float(job.timeout_seconds)
        if handler.timeout is not None:
            timeout = min(timeout, handler.timeout)
        now = loop.time()
        active.timeout = timeout
        active.deadline = now + timeout
        active.next_beat = now + _beat_interval(job)
        active.timer = loop.call_at(min(active.deadline, active.next_beat), self._tick, active)
        active.started = time.perf_counter()

        outcome: str
        detail: Any = None
        try:
            try:
                result = await handler.fn(job)
            finally:
                self._leave_handler(active)
        except asyncio.CancelledError:
            if active.cancel_reason is None:
                raise  # not ours to swallow (the loop is being torn down)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            outcome = active.cancel_reason
        except PermanentError as exc:
            outcome, detail = "permanent", exc
        except RetryLater as exc:
            outcome, detail = "retry_later", exc
        except Exception as exc:
            outcome, detail = "error", exc
        else:
            if active.cancel_reason is not None:  # the handler swallowed our cancellation
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
            if active.cancel_reason in ("cancelled", "lost", "timeout"):
                outcome = active.cancel_reason
            else:
                outcome, detail = "success", result
                if result is not None:
                    try:
                        orjson.dumps(result)
                    except TypeError as exc:
                        outcome = "error"
                        detail = TypeError(f"the handler's result is not JSON-serialisable: {exc}")
        if outcome == "timeout":
            detail = active.timeout
        duration_ms = round((time.perf_counter() - active.started) * 1000, 3)
        fields["duration_ms"] = duration_ms
        await self._finish(active, outcome, detail, fields)

    async def _finish(
        self, active: _Active, outcome: str, detail: Any, fields: dict[str, Any]
    ) -> None:
        job = active.job
        if outcome == "cancelled":
            self.counts["cancelled"] += 1
            log_event(log, "job.cancelled", "handler stopped: the job was cancelled", **fields)
            return
        if outcome == "lost":
            self._note_lost(fields, None)
            return
        if outcome == "success":
            written, retried = await self._write(lambda: self._source_complete(job, detail), fields)
            if written is None:
                return
            completed, status = written
            # A retried write may have committed the first time round (the reply was lost).
            if completed or (retried and status == "succeeded"):
                self.counts["succeeded"] += 1
                log_event(log, "job.succeeded", **fields)
            else:
                self._note_lost(fields, status)
            return

        retryable, retry_delay = True, None
        if outcome == "shutdown":
            error = {
                "message": f"released: runner {self._worker_id} shut down before the handler "
                "finished",
                "kind": "released",
            }
        elif outcome == "timeout":
            error = {"message": f"handler timed out after {detail:g}s", "kind": "timeout"}
        else:
            error = _error_payload(detail)
            if outcome == "permanent":
                retryable = False
                error["kind"] = "permanent"
            elif outcome == "retry_later":
                retry_delay = max(0.0, float(detail.delay))
                error["kind"] = "retry_later"
                error["retry_delay"] = retry_delay
        if outcome == "shutdown":
            # pgq.release: queued again now, and the interrupted attempt is given back, so
            # a job released on its last attempt runs again instead of going dead.
            write = lambda: self._source_release(job, error)  # noqa: E731
        else:
            write = lambda: self._source_fail(job, error, retryable, retry_delay)  # noqa: E731
        after, _ = await self._write(write, fields)
        if after is None:
            return
        if after is False:
            self._note_lost(fields, None)
            return
        assert isinstance(after, Job)
        if outcome == "shutdown":
            self.counts["released"] += 1
            log_event(
                log,
                "job.released",
                "grace period over: handler cancelled, job released to run again",
                **fields,
            )
            return
        self.counts["failed"] += 1
        log_event(log, "job.failed", level=logging.WARNING, error=error.get("message"), **fields)
        if after.status == "dead":
            self.counts["dead"] += 1
            log_event(log, "job.dead", level=logging.WARNING, error=error.get("message"), **fields)
        else:
            self.counts["retried"] += 1
            log_event(
                log,
                "job.retry_scheduled",
                f"retry at {after.run_at.isoformat() if after.run_at else '?'}",
                **fields,
            )

    def _source_complete(self, job: Job, result: Any) -> Awaitable[tuple[bool, str | None]]:
        assert self._source is not None
        return self._source.complete(job, result)

    async def _source_fail(
        self, job: Job, error: dict[str, Any], retryable: bool, retry_delay: float | None
    ) -> Job | bool:
        assert self._source is not None
        after = await self._source.fail(job, error, retryable=retryable, retry_delay=retry_delay)
        return False if after is None else after

    async def _source_release(self, job: Job, reason: dict[str, Any]) -> Job | bool:
        assert self._source is not None
        after = await self._source.release(job, reason)
        return False if after is None else after

    def _note_lost(self, fields: dict[str, Any], status: str | None) -> None:
        self.counts["lost"] += 1
        log_event(
            log,
            "job.lost",
            "outcome not recorded: the job is no longer held by this runner at this attempt "
            f"(status now {status or 'unknown'}); its lease ran out or it was cancelled",
            level=logging.WARNING,
            **fields,
        )

    async def _write(
        self, op: Callable[[], Awaitable[Any]], fields: dict[str, Any]
    ) -> tuple[Any, bool]:
        """Write an outcome, retrying while the source is unreachable; returns (what the
        write returned, whether it had to be retried), or (None, ...) when it could not be
        made (the job's lease will bring the job back). Shielded: cancelling the job's task
        (a hard stop) cannot interrupt a statement in flight."""
        delay = 0.05
        retries = 0
        while True:
            try:
                pending = op()
                if not isinstance(pending, asyncio.Future):
                    # A coroutine runs in this task: shield it, so that cancelling the task
                    # cannot interrupt its statement. A future (the batched completions)
                    # is written by another task already; cancelling our wait cannot stop it.
                    pending = asyncio.shield(pending)
                return await pending, retries > 0
            except DatabaseUnavailable as exc:
                if retries % 20 == 0:
                    log_event(
                        log,
                        "runner.write_retry",
                        f"cannot record the outcome yet ({exc}); retrying",
                        level=logging.WARNING,
                        **fields,
                    )
                retries += 1
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 2.0)
            except asyncio.CancelledError:
                self._unwritten += 1
                raise
            except Exception:
                self._unwritten += 1
                log.exception(
                    "cannot record the outcome; the job's lease will bring it back",
                    extra={"event": "runner.error", **fields},
                )
                return None, retries > 0

    # -- heartbeats and timeouts -----------------------------------------------------------

    def _tick(self, active: _Active) -> None:
        """The job's timer: cancel the handler at its deadline; heartbeat when due."""
        if not active.in_handler:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= active.deadline - 0.001:  # uvloop's timers have millisecond resolution
            self._cancel(active, "timeout")
            return
        if now >= active.next_beat - 0.001:
            active.next_beat = now + _beat_interval(active.job)
            task = loop.create_task(self._heartbeat(active))
            active.heartbeats.add(task)
            task.add_done_callback(active.heartbeats.discard)
        self._arm(active)

    def _arm(self, active: _Active) -> None:
        if active.timer is not None:
            active.timer.cancel()
        active.timer = asyncio.get_running_loop().call_at(
            min(active.deadline, active.next_beat), self._tick, active
        )

    async def _heartbeat(self, active: _Active) -> None:
        assert self._source is not None
        try:
            held = await self._source.heartbeat(active.job)
        except Exception as exc:
            if isinstance(exc, DatabaseUnavailable):
                log_event(
                    log,
                    "runner.heartbeat_failed",
                    f"heartbeat failed ({exc}); retrying in 1s",
                    level=logging.WARNING,
                    job_id=active.job.id,
                    worker_id=self._worker_id,
                )
            else:
                log.exception("heartbeat error; retrying in 1s", extra={"event": "runner.error"})
            if active.in_handler:
                loop = asyncio.get_running_loop()
                active.next_beat = min(active.next_beat, loop.time() + 1.0)
                self._arm(active)
            return
        if not held and active.in_handler:
            self.job_gone(active.job.id, None)

    # -- shutdown --------------------------------------------------------------------------

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        started = self._stop_requested_at or time.monotonic()
        deadline = loop.time() + max(0.0, self._grace - (time.monotonic() - started))
        if self._active and not self._hard_event.is_set():
            log_event(
                log,
                "runner.draining",
                f"stopping: waiting up to {self._grace:g}s for {len(self._active)} running "
                "handler(s)",
                worker_id=self._worker_id,
            )
        await self._wait_tasks(deadline)
        leftover = [a for a in self._active.values() if a.in_handler]
        for active in leftover:
            self._cancel(active, "shutdown")
        limit = HARD_RELEASE_TIMEOUT if self._hard_event.is_set() else RELEASE_TIMEOUT
        await self._wait_tasks(loop.time() + limit, hard_interrupts=False)
        stuck = list(self._tasks)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck, timeout=1.0)
            log_event(
                log,
                "runner.unwritten",
                f"{len(stuck)} job outcome(s) could not be written before exit; their "
                "leases will bring them back",
                level=logging.ERROR,
                worker_id=self._worker_id,
            )

    async def _wait_tasks(self, deadline: float, *, hard_interrupts: bool = True) -> None:
        """Wait for every job task, until ``deadline`` (or a hard stop, when asked)."""
        loop = asyncio.get_running_loop()
        while self._tasks:
            if hard_interrupts and self._hard_event.is_set():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            waiters: set[asyncio.Future[Any]] = set(self._tasks)
            hard = None
            if hard_interrupts:
                hard = asyncio.ensure_future(self._hard_event.wait())
                waiters.add(hard)
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if hard is not None:
                    hard.cancel()


def _beat_interval(job: Job) -> float:
    """Heartbeat three times per lease (1.25 × timeout_seconds), well before it runs out."""
    return job.timeout_seconds * 1.25 / 3


async def _no_handler(job: Job) -> None:
    raise PermanentError(f"this runner has no handler for job type {job.type!r}")


def _error_payload(exc: BaseException) -> dict[str, Any]:
    """A failed attempt's error as stored in pgq.jobs.last_error / errors."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > MAX_TRACEBACK_CHARS:
        tb = "…" + tb[-MAX_TRACEBACK_CHARS:]
    kind = type(exc)
    return {
        "message": str(exc) or kind.__name__,
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "kind": "exception",
        "traceback": tb,
    }


# --------------------------------------------------------------------------------------
# The database transport
# --------------------------------------------------------------------------------------


class DatabaseSource:
    """``JobSource`` on PostgreSQL: the pgq SQL functions plus one LISTEN connection.

    Wake-ups: ``pgq_<queue>`` notifications (a job entered ``queued``), a reconnect of the
    LISTEN connection (notifications may have been lost), the earliest future ``run_at``
    of a claimable job (``pgq.next_due``, read whenever the runner goes idle) and a jittered
    safety re-check. Leases: a housekeeping task sleeps until the earliest lease expiry it
    knows of and then calls ``pgq.expire_leases()``, so a crashed runner's jobs come back
    with no coordinator running; it also does so on every safety re-check.

    Completions are acknowledged in batches (``pgq.complete_many``): whatever finished
    while the previous batch was in flight goes in the next one, so a lone completion is
    written at once and a busy runner writes hundreds per transaction. Failures and
    heartbeats are one call each.
    """

    def __init__(
        self,
        dsn: str,
        *,
        safety_interval: float = 60.0,
        pool_size: int | None = None,
        max_batch: int = 1000,
    ) -> None:
        self._dsn = dsn
        self._safety_interval = safety_interval
        self._pool_size = pool_size
        self._max_batch = max_batch
        self._hooks: RunnerHooks | None = None
        self._pool: asyncpg.Pool | None = None
        self._listener: Listener | None = None
        self._doorbell: Doorbell | None = None
        self._wake = asyncio.Event()
        self._rearm = asyncio.Event()
        self._housekeeper: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._lease_at: float | None = None  # loop time of the earliest known lease expiry
        # re-check delay when next_due says "due now" but the claim found nothing
        self._due_retry = 0.005
        self._claim_in_doubt = False  # a claim failed: it may have committed unseen
        self._last_claimed = 0  # jobs the last claim returned
        # completion batching
        self._pending: list[tuple[Job, Any, asyncio.Future[tuple[bool, str | None]]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        # One batch in flight: a second one in parallel measured no faster (the batches
        # only got smaller) and would let completions commit out of order.
        self._max_flushers = 1
        self.claims = 0  # claim calls made (for tests and metrics)
        self.batches = 0  # complete_many calls made

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self, hooks: RunnerHooks) -> None:
        self._hooks = hooks
        self._wake = asyncio.Event()
        self._rearm = asyncio.Event()
        size = self._pool_size or max(4, min(12, 3 + hooks.concurrency // 4))
        delay = 0.1
        while True:
            try:
                # db.create_pool skips asyncpg's reset round trip on release (see
                # db.keep_session). command_timeout: a connection that went silent (a
                # network partition, no RST) fails the call instead of hanging the claim
                # loop or a write forever.
                self._pool = await db.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=size,
                    command_timeout=COMMAND_TIMEOUT,
                )
                break
            except Exception as exc:
                if not _transient(exc):
                    raise
                sleep = random.uniform(delay / 2, delay)
                log_event(
                    log,
                    "runner.connecting",
                    f"cannot reach the database ({exc}); retrying in {sleep:.2f}s",
                    level=logging.WARNING,
                )
                await asyncio.sleep(sleep)
                delay = min(delay * 2, 5.0)
        async with self._pool.acquire() as conn:
            await migrations.check_up_to_date(conn)
        listener = Listener(self._dsn)
        for queue in hooks.queues:
            listener.subscribe(f"pgq_{queue}", self._on_queue)
        listener.subscribe("pgq_events", self._on_event)
        listener.on_connect(self._on_connect)
        self._listener = listener
        self._doorbell = Doorbell(self._pool, listener)
        self._doorbell.watch(hooks.queues)
        with contextlib.suppress(PgqError):  # the janitor; the safety re-check runs it too
            await queries.forget_dead_listeners(self._pool)
        await listener.start(wait=True, timeout=None)
        self._housekeeper = asyncio.create_task(self._housekeep(), name="pgq-runner-housekeeper")

    async def close(self) -> None:
        for task in [self._housekeeper, *self._side_tasks]:
            if task is not None:
                task.cancel()
        for task in [self._housekeeper, *self._side_tasks]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._housekeeper = None
        if self._doorbell is not None:
            await self._doorbell.close()
            self._doorbell = None
        if self._flushers:  # completions whose waiters gave up (a hard stop) still land
            await asyncio.wait(list(self._flushers), timeout=5)
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except (TimeoutError, Exception):
                self._pool.terminate()
            self._pool = None

    def health(self) -> dict[str, Any]:
        listener = self._listener
        return {
            "kind": "database",
            "listener_connected": bool(listener and listener.connected),
            "last_notification_at": listener.last_notification_at if listener else None,
            "listener_connects": listener.connects if listener else 0,
            "claims": self.claims,
            "completion_batches": self.batches,
        }

    # -- notifications ------------------------------------------------------------------

    def _on_queue(self, _channel: str, _payload: str) -> None:
        self._wake.set()

    def _on_event(self, _channel: str, payload: str) -> None:
        hooks = self._hooks
        if hooks is None:
            return
        if "cancelled" not in payload:
            # Only a cancellation needs the handler stopped now; a job of ours that went
            # dead or succeeded elsewhere (its lease ran out) is caught by the fencing of
            # its heartbeat and final write. Most events are other jobs' completions.
            return
        try:
            event = orjson.loads(payload)
            job_id, status = int(event["id"]), event.get("status")
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable pgq_events payload: %r", payload[:200])
            return
        hooks.job_gone(job_id, status)  # a dict look-up; ignores jobs it does not run

    def _on_connect(self) -> None:
        # Anything sent while the connection was down is lost: claim now, re-read the due
        # times, and check that every job we run is still ours (a cancellation may have
        # been missed).
        self._wake.set()
        self._rearm.set()
        if self._hooks is not None and self._hooks.held_jobs():
            self._spawn(self._check_held())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _check_held(self) -> None:
        assert self._hooks is not None and self._pool is not None
        held = dict(self._hooks.held_jobs())
        try:
            jobs = await _db(queries.get_jobs(self._pool, list(held)))
        except DatabaseUnavailable:
            return  # the next heartbeat finds out instead
        current = {j.id: j for j in jobs}
        for job_id, attempt in held.items():
            job = current.get(job_id)
            if (
                job is None
                or job.status != "running"
                or job.worker_id != self._hooks.worker_id
                or job.attempt != attempt
            ):
                self._hooks.job_gone(job_id, job.status if job else None)

    # -- claiming -------------------------------------------------------------------------

    async def claim(self, max_jobs: int) -> list[Job]:
        assert self._hooks is not None and self._pool is not None
        self._wake.clear()
        self.claims += 1
        try:
            jobs = await self._adopt(max_jobs) if self._claim_in_doubt else []
            if len(jobs) < max_jobs:
                jobs += await _db(
                    queries.claim(
                        self._pool,
                        self._hooks.worker_id,
                        max_jobs - len(jobs),
                        self._hooks.queues,
                        self._hooks.job_types,
                    )
                )
        except DatabaseUnavailable:
            # The claim may have committed with its reply lost: those jobs are running
            # under our name, yet we never heard of them.
            self._claim_in_doubt = True
            raise
        if jobs:
            self._due_retry = 0.005
        self._last_claimed = len(jobs)
        if self._doorbell is not None:
            if len(jobs) >= max_jobs:
                # Busy (every free slot taken): enqueues need not notify us any more.
                self._doorbell.disarm(self._hooks.queues)
            self._doorbell.settle()  # deregistrations of a wake-up wait for its claim
        return jobs

    async def _adopt(self, max_jobs: int) -> list[Job]:
        """After a claim whose outcome is unknown: the jobs running under this worker's
        name that the runner does not hold, so they run now rather than after their lease."""
        assert self._hooks is not None and self._pool is not None
        held = self._hooks.held_jobs()
        mine = await _db(queries.running_jobs_of(self._pool, self._hooks.worker_id))
        orphans = [job for job in mine if job.id not in held]
        self._claim_in_doubt = len(orphans) > max_jobs
        if orphans:
            log_event(
                log,
                "runner.adopted",
                f"{len(orphans)} job(s) claimed by a claim whose reply was lost; running them",
                level=logging.WARNING,
                worker_id=self._hooks.worker_id,
            )
        return orphans[:max_jobs]

    async def wait_for_work(self) -> None:
        """Idle: arm the doorbell (register idle, pass the barrier) and return, so the
        runner claims once more; once armed, sleep until a wake-up (see ``pgq.doorbell``:
        an enqueue notifies only while we are registered idle)."""
        assert self._hooks is not None and self._pool is not None
        assert self._doorbell is not None and self._listener is not None
        if self._wake.is_set():
            return
        queues = self._hooks.queues
        poll: float | None = None  # not armed: look again this soon
        if self._listener.connected and not self._doorbell.armed(queues):
            if self._last_claimed:  # jobs are coming in: look again before registering
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BUSY_RECHECK):
                        await self._wake.wait()
                return
            try:
                if await _db(self._doorbell.arm(queues)):
                    return  # claim once more: jobs committed before the barrier are visible
            except PgqError as exc:
                log_event(
                    log,
                    "runner.doorbell_failed",
                    f"cannot register as idle ({exc}); polling",
                    level=logging.WARNING,
                )
            poll = UNARMED_POLL
        timeout: float | None
        try:
            next_run_at, next_lease, db_now = await _db(
                queries.next_due(self._pool, self._hooks.queues, self._hooks.job_types)
            )
        except DatabaseUnavailable:
            timeout = 1.0  # the claim that follows reports the trouble and backs off
        else:
            self._note_lease(next_lease, db_now)
            if next_run_at is None:
                timeout = None  # a notification, a reconnect or the safety re-check
            else:
                timeout = (next_run_at - db_now).total_seconds() + 0.001
                if timeout <= 0:
                    # Due, yet the claim just found nothing: another claimer holds its row
                    # lock right now. Look again soon, backing off if it persists.
                    timeout = self._due_retry
                    self._due_retry = min(self._due_retry * 2, 1.0)
        if poll is not None:
            timeout = poll if timeout is None else min(timeout, poll)
        if self._wake.is_set():
            return
        if poll is None and self._listener.connected and not self._doorbell.armed(queues):
            return  # disarmed during next_due (a reconnect): arm again first
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    # -- leases ---------------------------------------------------------------------------

    def _note_lease(self, next_lease: datetime | None, db_now: datetime) -> None:
        """Remember the earliest lease expiry (on the loop's clock) for the housekeeper."""
        if next_lease is None:
            return
        # +10-60 ms: past the expiry on the database's clock, and jittered so that many
        # runners that know the same lease do not all sweep at the same instant.
        delay = (next_lease - db_now).total_seconds() + random.uniform(0.01, 0.06)
        at = asyncio.get_running_loop().time() + delay
        if self._lease_at is None or at < self._lease_at:
            self._lease_at = at
            self._rearm.set()

    async def _housekeep(self) -> None:
        """Sleep until the earliest known lease expiry or the safety re-check; then sweep
        expired leases (``pgq.expire_leases``) and re-read the due times."""
        loop = asyncio.get_running_loop()
        safety_at = loop.time() + self._safety_interval * random.uniform(1.0, 1.1)
        while True:
            self._rearm.clear()
            deadline = safety_at if self._lease_at is None else min(safety_at, self._lease_at)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._rearm.wait()
                    continue  # re-armed: a new lease is known, or we reconnected
            now = loop.time()
            safety = now >= safety_at
            if safety:
                safety_at = now + self._safety_interval * random.uniform(1.0, 1.1)
            try:
                await self._sweep(safety)
            except DatabaseUnavailable as exc:
                log_event(
                    log,
                    "runner.sweep_failed",
                    f"lease sweep failed ({exc}); retrying",
                    level=logging.WARNING,
                )
                self._lease_at = now + 1.0
            except Exception:
                log.exception("lease sweep error", extra={"event": "runner.error"})
                self._lease_at = now + 5.0
            if safety:
                self._wake.set()

    async def _sweep(self, safety: bool) -> None:
        assert self._pool is not None and self._hooks is not None
        expired = await _db(queries.expire_leases(self._pool))
        if safety:
            await _db(queries.forget_dead_listeners(self._pool))
        if expired:
            log_event(
                log,
                "runner.leases_expired",
                f"expired {expired} lease(s) of runners that stopped heartbeating",
                worker_id=self._hooks.worker_id,
            )
        _run_at, next_lease, db_now = await _db(
            queries.next_due(self._pool, self._hooks.queues, self._hooks.job_types)
        )
        self._lease_at = None
        self._note_lease(next_lease, db_now)

    # -- outcomes -------------------------------------------------------------------------

    def complete(self, job: Job, result: Any) -> asyncio.Future[tuple[bool, str | None]]:
        """Queue the completion for the next ``pgq.complete_many`` batch; the future
        resolves once that batch committed. The write runs in the batching task, so
        cancelling whoever awaits the future cannot interrupt it."""
        future: asyncio.Future[tuple[bool, str | None]] = asyncio.get_running_loop().create_future()
        self._pending.append((job, result, future))
        if len(self._flushers) < self._max_flushers:
            flusher = asyncio.create_task(self._flush(), name="pgq-complete-batches")
            self._flushers.add(flusher)
        return future

    async def _flush(self) -> None:
        """Write pending completions, one ``pgq.complete_many`` per batch, until none are
        left. Started on demand; completions that arrive during a batch join the next."""
        try:
            await self._flush_pending()
        finally:
            # Synchronously at the end, not in a done-callback: a completion queued between
            # the loop's last check and a callback would find no flusher and be stranded.
            current = asyncio.current_task()
            if current is not None:
                self._flushers.discard(current)

    async def _flush_pending(self) -> None:
        assert self._pool is not None and self._hooks is not None
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self.batches += 1
            try:
                rows = await _db(
                    queries.complete_many(
                        self._pool,
                        self._hooks.worker_id,
                        [job.id for job, _, _ in batch],
                        [job.attempt for job, _, _ in batch],
                        [result for _, result, _ in batch],
                    )
                )
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        if isinstance(exc, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, _, future), (_, completed, status) in zip(batch, rows, strict=True):
                if not future.done():
                    future.set_result((completed, status))

    async def fail(
        self, job: Job, error: dict[str, Any], *, retryable: bool, retry_delay: float | None
    ) -> Job | None:
        assert self._pool is not None and self._hooks is not None
        try:
            return await _db(
                queries.fail(
                    self._pool,
                    job.id,
                    self._hooks.worker_id,
                    error,
                    retryable=retryable,
                    attempt=job.attempt,
                    retry_delay=retry_delay,
                )
            )
        except (JobNotFound, TransitionNotAllowed):
            return None

    async def release(self, job: Job, reason: dict[str, Any]) -> Job | None:
        assert self._pool is not None and self._hooks is not None
        try:
            return await _db(
                queries.release(
                    self._pool, job.id, self._hooks.worker_id, reason, attempt=job.attempt
                )
            )
        except (JobNotFound, TransitionNotAllowed):
            return None

    async def heartbeat(self, job: Job) -> bool:
        assert self._pool is not None and self._hooks is not None
        try:
            await _db(queries.heartbeat(self._pool, job.id, self._hooks.worker_id, job.attempt))
        except (JobNotFound, TransitionNotAllowed):
            return False
        return True


def _transient(exc: BaseException) -> bool:
    return isinstance(translate(exc), DatabaseUnavailable)


#: asyncpg's client-side errors that are about the data or the setup, not a broken link.
_CLIENT_MISTAKES = tuple(
    getattr(asyncpg.exceptions, name)
    for name in (
        "DataError",
        "ClientConfigurationError",
        "UnsupportedClientFeatureError",
        "UnsupportedServerFeatureError",
    )
    if hasattr(asyncpg.exceptions, name)
)


async def _db(call: Awaitable[T]) -> T:
    """Await a ``queries`` call; a connection that broke mid-operation (asyncpg reports
    some of those as ``InterfaceError`` or ``InternalClientError``, e.g. during a server
    restart) becomes ``DatabaseUnavailable`` like every other unreachable database."""
    try:
        return await call
    except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        if isinstance(exc, _CLIENT_MISTAKES):
            raise
        raise DatabaseUnavailable(f"the database connection broke: {exc}") from exc


# --------------------------------------------------------------------------------------
# `pgq runner MODULE:ATTR`
# --------------------------------------------------------------------------------------


def load_runner(target: str) -> Runner:
    """Import ``MODULE:ATTR`` and return the ``pgq.Runner`` it names."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise PgqError(
            f"runner target {target!r} must look like MODULE:ATTR, e.g. myapp.jobs:runner"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current project is importable
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise PgqError(f"cannot import {module_name!r} (from {target!r}): {exc}") from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PgqError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Runner):
        raise PgqError(f"{target} is a {type(obj).__name__}, not a pgq.Runner")
    return obj


def _http_source(coordinator: str, token: str | None) -> JobSource:
    try:
        http_runner = importlib.import_module(f"{__package__}.http_runner")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.http_runner":
            raise PgqError("HTTP runner mode is not available yet") from None
        raise
    return http_runner.HttpSource(coordinator, token=token)


def run_from_cli(
    target: str,
    *,
    dsn: str | None,
    queues: list[str] | None,
    concurrency: int | None,
    grace: float,
    coordinator: str | None,
    token: str | None,
) -> int:
    """``pgq runner``: load the runner, apply the flags, run it until SIGTERM/SIGINT.

    The first signal drains (grace period), a second one stops at once. Returns 0 when
    every job this runner held was completed, failed or released, 1 when some outcome could
    not be written (those jobs come back when their leases run out).
    """
    runner = load_runner(target)
    try:
        runner.configure(dsn=dsn, queues=queues, concurrency=concurrency, grace=grace)
    except ValueError as exc:
        raise PgqError(str(exc)) from None
    source = _http_source(coordinator, token) if coordinator else None
    if source is None:
        database_url(runner._dsn)  # fail now, with the config error, not inside the loop

    async def main() -> int:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(name: str) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log_event(
                    log,
                    "runner.stopping",
                    f"{name}: stopping, running handlers get {runner.grace:g}s "
                    "(send it again to stop at once)",
                    worker_id=runner.worker_id,
                )
                runner.stop()
            else:
                log_event(
                    log,
                    "runner.stopping",
                    f"{name} again: stopping at once",
                    level=logging.WARNING,
                    worker_id=runner.worker_id,
                )
                runner.stop_now()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            await runner.run(source=source)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 0 if runner.clean_exit else 1

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())

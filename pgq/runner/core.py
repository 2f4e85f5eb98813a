"""``pgq.Runner``: async handlers fed by batched claims, woken by NOTIFY.

::

    runner = pgq.Runner()                       # dsn from PGQ_DATABASE_URL at run() time

    @runner.handler("TMDB_SYNC", timeout=60)
    async def tmdb_sync(job: pgq.Job) -> dict:
        ...                                     # return value → result; raise → retry later

    await runner.run()                          # until runner.stop() / runner.stop_now()

Layers, so that the same handler machinery can run over the database or over the
coordinator's HTTP API (the package ``pgq.runner``):

``Runner`` (this module)
    handler registry, the concurrency limit (slots), the claim loop, shutdown. It never
    sees SQL: it talks to a ``JobSource``.
``Executor`` (``executor.py``)
    one task per held job: the handler, its timeout and heartbeats, cancellation, and the
    outcome written through the source.
``ClaimedAhead`` (``ahead.py``)
    the jobs claimed beyond the free slots, not started yet, and how many to claim so.
``JobSource`` / ``RunnerHooks`` (``source.py``)
    the seam: where jobs come from and where outcomes go, and what a source may ask of
    the runner.
``DatabaseSource`` (``database.py``, with ``sweep.py``)
    the source on PostgreSQL: wake-ups (LISTEN on the shared self-healing ``Listener``),
    ``pgq.claim``, ``pgq.complete_many`` in batches, ``pgq.fail``, ``pgq.heartbeat``, the
    lease sweep (``pgq.expire_leases`` / ``pgq.next_due``) and cancellation notices from
    ``pgq_cancel``.
``HttpSource`` (``http.py``)
    the same protocol over the coordinator's ``POST /jobs/claim`` (long poll),
    ``/heartbeat`` and ``/complete``; used by ``pgq runner --coordinator URL``.

The claim loop (``Runner._claim_loop``, one task) is in one of these modes:

  claiming     some slots are free and work may be waiting (at start, after a claim that
               filled every slot it asked for, after a wake-up): one ``claim(free +
               ahead)`` call takes the free slots' jobs, each started as its own task, plus
               ``ahead`` more kept in claim order and started as slots free
               (``ahead.py``: the jobs expected to finish during one claim round trip, at
               most the concurrency; none for handlers longer than a round trip). So with short
               handlers the next batch is there when the slots free, rather than the slots
               idling for every claim's commit.
  full         every slot is busy or promised to a job claimed ahead: wait until a
               handler finishes.
  idle         the last claim came back short: wait for ``source.wait_for_work()``, i.e.
               a notification, the next due ``run_at`` the runner knows of, a safety
               re-check (60 s, jittered) or a reconnect of the LISTEN connection.
  backing off  a claim failed (database unreachable): sleep with jittered backoff.
  stopped      ``stop()``: no more claims; jobs claimed ahead that have not started are
               released at once; handlers get ``grace`` seconds to finish; the
               rest are cancelled and their jobs released (``pgq.release``: queued again
               now without spending the attempt; another runner takes it at once).
               ``stop_now()`` (a second SIGTERM/SIGINT) skips the grace period.

Every outcome is written fenced by worker and attempt, so a runner whose lease ran out
can never overwrite a newer attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from .. import wire
from ..aio import stop_task
from ..backoff import Backoff, reconnecting
from ..config import database_url
from ..errors import DatabaseUnavailable, PgqError
from ..logs import log_event
from ..schedules import ScheduleSpec
from .ahead import ClaimedAhead
from .database import DatabaseSource
from .executor import Executor, Handler, HandlerFn
from .outcome import Outcome
from .source import JobSource
from .threads import ThreadPool, is_sync

__all__ = ["Runner"]

log = logging.getLogger("pgq.runner")

F = TypeVar("F", bound=HandlerFn)

#: An unexpected error in the claim loop (a bug) is retried after 0.5-1 s, not in a spin.
ERROR_RETRY = 1.0

#: After the grace period, how long to wait for the release writes of cancelled handlers.
RELEASE_TIMEOUT = 10.0
#: The same for stop_now(): "at once", but still give the database a moment.
HARD_RELEASE_TIMEOUT = 2.0


class Runner:
    """Runs handlers (``async def``, or plain ``def`` on threads) for jobs claimed from pgq
    (see the module docstring).

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
        self._schedules: dict[str, ScheduleSpec] = {}
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
        if not 1 <= len(self._worker_id) <= wire.MAX_WORKER_ID_LENGTH or "\x00" in self._worker_id:
            raise ValueError(
                f"worker_id must be 1-{wire.MAX_WORKER_ID_LENGTH} characters without NUL"
            )

        self._source: JobSource | None = None
        self._stop_event = asyncio.Event()
        self._hard_event = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._reconnected = asyncio.Event()
        self._running = False
        self._stop_requested_at: float | None = None
        self._jobs = Executor(self._worker_id, self._on_slot_freed)
        self._ahead = ClaimedAhead()

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
                if not isinstance(name, str) or not wire.QUEUE_RE.match(name):
                    raise ValueError(f"queue {name!r} is invalid: {wire.QUEUE_RULE}")
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
    def dsn(self) -> str | None:
        """The database URL given to the constructor or ``configure`` (None: from the
        environment when ``run()`` starts)."""
        return self._dsn

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

    @property
    def transactional(self) -> bool:
        """Whether some handler is ``transactional=True``."""
        return any(h.transactional for h in self._handlers.values())

    def handler(
        self, job_type: str, *, timeout: float | None = None, transactional: bool = False
    ) -> Callable[[F], F]:
        """Register ``fn(job)`` for ``job_type``; ``timeout`` (seconds) can only shorten the
        job's own ``timeout_seconds``. An ``async def`` runs on the event loop; a plain
        ``def`` runs on a thread pool bounded by ``concurrency`` (see ``threads.py``).

        ``transactional=True`` (an ``async def``, database mode only): ``job.connection``
        is an asyncpg connection in an open transaction that also records the job's
        success, so the handler's writes through it commit with ``succeeded`` or not at
        all (see ``transaction.py``)."""
        if not isinstance(job_type, str) or not wire.TYPE_RE.match(job_type):
            raise ValueError(f"job type {job_type!r} is invalid: {wire.TYPE_RULE}")
        if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"the handler for {job_type} must be a function")
            if job_type in self._handlers:
                raise ValueError(f"a handler for {job_type} is already registered")
            sync = is_sync(fn)
            if transactional and sync:
                raise TypeError(
                    f"the transactional handler for {job_type} must be an `async def`: "
                    "job.connection is an asyncpg connection"
                )
            self._handlers[job_type] = Handler(
                job_type, fn, timeout, sync=sync, transactional=bool(transactional)
            )
            return fn

        return register

    def schedule(
        self,
        name: str,
        cron: str,
        job_type: str,
        args: dict[str, Any] | None = None,
        **options: Any,
    ) -> ScheduleSpec:
        """Declare a cron schedule next to its handler; ``run()`` creates or updates it
        (``pgq.schedule``) when the runner starts. ``options``: ``queue``, ``timezone``,
        ``catch_up``, ``priority``, ``max_attempts``, ``timeout_seconds``, ``paused``.
        Re-declaring an unchanged schedule keeps its next slot, so restarts skip nothing."""
        spec = ScheduleSpec(name, cron, job_type, {} if args is None else args, options)
        if name in self._schedules:
            raise ValueError(f"a schedule named {name} is already declared")
        self._schedules[name] = spec
        return spec

    @property
    def schedules(self) -> tuple[ScheduleSpec, ...]:
        """The schedules declared with ``schedule()``."""
        return tuple(self._schedules.values())

    # -- hooks for the source -----------------------------------------------------------

    def held_jobs(self) -> Mapping[int, int]:
        return dict(self._jobs.held)

    def job_gone(self, job_id: int, status: str | None) -> None:
        attempt = self._ahead.forget(job_id)
        if attempt is not None:  # claimed ahead, not started: simply never start it
            if self._jobs.held.get(job_id) == attempt:
                del self._jobs.held[job_id]
            self._slot_freed.set()  # its place may be claimed again
            return
        self._jobs.job_gone(job_id, status)

    def reconnected(self) -> None:
        self._reconnected.set()

    # -- state --------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        """Jobs claimed, and their outcomes (succeeded, failed, retried, dead, cancelled,
        released, lost), since this runner was made."""
        return self._jobs.counts

    @property
    def running_jobs(self) -> int:
        """Handlers running right now."""
        return len(self._jobs.active)

    def health(self) -> dict[str, Any]:
        """For /health and metrics: what this runner holds and how its source is doing."""
        return {
            "worker_id": self._worker_id,
            "running": self._running,
            "stopping": self._stop_event.is_set(),
            "queues": list(self._queues),
            "job_types": list(self._handlers),
            "concurrency": self._concurrency,
            "running_jobs": len(self._jobs.active),
            "claimed_ahead": len(self._ahead),
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
        if self.transactional and not callable(getattr(source, "begin", None)):
            names = ", ".join(h.job_type for h in self._handlers.values() if h.transactional)
            raise PgqError(
                f"transactional handlers ({names}) need the database: their writes commit "
                f"with the job's completion in one transaction, which a runner working "
                f"through {type(source).__name__} (pgq runner --coordinator) cannot do; run "
                "it on the database (PGQ_DATABASE_URL, without --coordinator)"
            )
        self._running = True
        self._jobs.unwritten = 0
        self._source = self._jobs.source = source
        if any(h.sync for h in self._handlers.values()):
            self._jobs.threads = ThreadPool(self._concurrency)
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
                self._give_back_ready()
                await self._drain()
                if cancelled:
                    raise asyncio.CancelledError
        finally:
            try:
                await source.close()
            finally:
                self._running = False
                self._ahead.clear()  # only left behind by a claim loop that crashed
                self._source = self._jobs.source = None
                if self._jobs.threads is not None:
                    self._jobs.threads.close()
                    self._jobs.threads = None
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
        return self._jobs.unwritten == 0

    async def _until_stopped(self, aw: Coroutine[Any, Any, Any]) -> bool:
        """Await ``aw`` unless stop is requested first (then cancel it); True if it ran."""
        task = asyncio.create_task(aw)
        if self._stop_event.is_set():
            task.cancel()
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                # bounded: a source call that swallows its cancellation must not hold
                # the stop up (stop_task cancels again, then leaves it behind, logged)
                await stop_task(task)
        if not task.done() or task.cancelled():
            return False
        task.result()  # re-raise its exception
        return True

    async def _claim_loop(self) -> None:
        source = self._source
        assert source is not None
        loop = asyncio.get_running_loop()
        more = True  # whether a claim may find work right now
        backoff = reconnecting()
        errors = Backoff(ERROR_RETRY, ERROR_RETRY)
        while not self._stop_event.is_set():
            try:
                free = self._concurrency - len(self._jobs.active) - len(self._ahead)
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                if not more:
                    await self._until_stopped(source.wait_for_work())
                    more = True
                    continue
                # A reconnect from here on cuts the backoff after a failed claim short.
                self._reconnected.clear()
                extra = self._ahead.extra(self._concurrency, self._jobs.mean_run)
                want = min(free + extra, source.max_claim)
                sent = loop.time()
                jobs = await source.claim(want)
            except DatabaseUnavailable as exc:
                sleep = backoff.next()
                log_event(
                    log,
                    "runner.claim_failed",
                    f"cannot claim ({exc}); retrying in {sleep:.2f}s",
                    level=logging.WARNING,
                    worker_id=self._worker_id,
                )
                await self._until_stopped(self._backoff_sleep(sleep))
                more = True
                continue
            except Exception:
                log_event(
                    log,
                    "runner.error",
                    "claim loop error; retrying",
                    level=logging.ERROR,
                    exc_info=True,
                )
                await self._until_stopped(asyncio.sleep(errors.next()))
                more = True
                continue
            backoff.reset()
            more = len(jobs) >= want
            if more:
                self._ahead.observe_round_trip(loop.time() - sent)
            for job in jobs:
                self._jobs.hold(job)
                self._ahead.add(job, sent)
            self._start_ready()

    def _start_ready(self) -> None:
        """Start jobs claimed ahead, in claim order, while slots are free. One that waited
        for a slot through two thirds of its lease is released instead: its lease could
        run out before its first heartbeat landed, and another runner would run it too."""
        now = -1.0
        while len(self._jobs.active) < self._concurrency:
            entry = self._ahead.next()  # skips the jobs gone while they waited (job_gone)
            if entry is None:
                return
            job, sent = entry
            if now < 0:
                now = asyncio.get_running_loop().time()
            if now - sent > job.timeout_seconds * 1.25 * 2 / 3:
                self._jobs.give_back(job, "it waited too long for a free slot")
                continue
            self._jobs.start(job, self._handlers.get(job.type), sent)

    def _on_slot_freed(self) -> None:
        """A handler ended: start the next job claimed ahead, or else wake the claim loop.
        (Not both: a wake-up per job that finds no free slot measured ~15 µs of CPU a job.)"""
        if self._ahead.waiting and not self._stop_event.is_set():
            self._start_ready()
            if self._ahead:
                return  # the slot went to a job claimed ahead: nothing to claim yet
        self._slot_freed.set()

    def _give_back_ready(self) -> None:
        """Stopping: release the jobs claimed ahead that never started."""
        for job in self._ahead.take_all():
            self._jobs.give_back(job, "the runner stopped before the job started")

    async def _backoff_sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if the source reconnects meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._reconnected.wait()

    # -- shutdown --------------------------------------------------------------------------

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        started = self._stop_requested_at or time.monotonic()
        deadline = loop.time() + max(0.0, self._grace - (time.monotonic() - started))
        if self._jobs.active and not self._hard_event.is_set():
            log_event(
                log,
                "runner.draining",
                f"stopping: waiting up to {self._grace:g}s for {len(self._jobs.active)} running "
                "handler(s)",
                worker_id=self._worker_id,
            )
        await self._wait_tasks(deadline)
        leftover = [a for a in self._jobs.active.values() if a.in_handler]
        for active in leftover:
            self._jobs.cancel(active, Outcome.SHUTDOWN)
        limit = HARD_RELEASE_TIMEOUT if self._hard_event.is_set() else RELEASE_TIMEOUT
        await self._wait_tasks(loop.time() + limit, hard_interrupts=False)
        stuck = list(self._jobs.tasks)
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
        while self._jobs.tasks:
            if hard_interrupts and self._hard_event.is_set():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            waiters: set[asyncio.Future[Any]] = set(self._jobs.tasks)
            hard = None
            if hard_interrupts:
                hard = asyncio.ensure_future(self._hard_event.wait())
                waiters.add(hard)
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if hard is not None:
                    hard.cancel()

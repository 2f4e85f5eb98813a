"""``DatabaseSource``: the runner's ``JobSource`` on PostgreSQL.

The transport (a pool for the pgq SQL functions, one LISTEN connection through the shared
``Listener``, the idle doorbell) and claiming; the idle wait is ``pgq.waiting.IdleWait``
and completion batching ``pgq.batching.Batcher`` (both shared with the coordinator);
lease sweeping is ``sweep.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

import asyncpg
import orjson

from .. import db, migrations, queries
from ..aio import stop_tasks
from ..backoff import reconnecting
from ..batching import Batcher
from ..doorbell import Doorbell
from ..errors import DatabaseUnavailable, JobNotFound, PgqError, TransitionNotAllowed, unreachable
from ..jobs import Job
from ..listener import Listener
from ..logs import log_event
from ..schedule_timer import ScheduleTimer
from ..waiting import IdleWait
from .source import RunnerHooks
from .sweep import LeaseSweeper
from .transaction import DatabaseTransaction

__all__ = ["DatabaseSource"]

log = logging.getLogger("pgq.runner")

#: Where a running job's cancellation is announced (its pgq_events payload): a handler must
#: stop at once. Not pgq_events itself, which carries every completion of every runner.
CANCEL_CHANNEL = "pgq_cancel"

#: Longest a single pgq function call may take before the runner treats the connection as
#: broken (calls take milliseconds; a row lock held by a long transaction could hold one).
COMMAND_TIMEOUT = 60.0

#: One completion waiting for its batch: the job and its handler's result.
_Completion = tuple[Job, Any]


class DatabaseSource:
    """``JobSource`` on PostgreSQL: the pgq SQL functions plus one LISTEN connection.

    Wake-ups: ``pgq_<queue>`` notifications (a job entered ``queued``), a reconnect of the
    LISTEN connection (notifications may have been lost), the earliest future ``run_at``
    of a claimable job (``pgq.next_due``, read whenever the runner goes idle) and a jittered
    safety re-check. Leases: a ``LeaseSweeper`` (``sweep.py``) expires them as they run
    out, so a crashed runner's jobs come back with no coordinator running. Schedules: the
    ones declared with ``Runner.schedule`` are upserted at open, and a ``ScheduleTimer``
    fires due ones (``pgq/schedule_timer.py``), as every runner and coordinator does.

    Completions are acknowledged in batches (``pgq.complete_many``): whatever finished
    while the previous batch was in flight goes in the next one, so a lone completion is
    written at once and a busy runner writes hundreds per transaction. Failures and
    heartbeats are one call each.
    """

    #: pgq.claim's bound on max_jobs
    max_claim = 10_000

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
        #: transactional handlers' connections, one each while they run (see transaction.py)
        self._tx_pool: asyncpg.Pool | None = None
        self._listener: Listener | None = None
        self._doorbell: Doorbell | None = None
        self._wake = asyncio.Event()
        self._sweeper: LeaseSweeper | None = None
        self._idle: IdleWait | None = None
        self._schedule_timer: ScheduleTimer | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._claim_in_doubt = False  # a claim failed: it may have committed unseen
        # One batch in flight: a second one in parallel measured no faster (the batches
        # only got smaller) and would let completions commit out of order. A completion
        # whose waiter gave up (a hard stop) is still written.
        self._completions: Batcher[_Completion, tuple[bool, str | None]] = Batcher(
            self._complete_batch,
            max_batch=max_batch,
            max_flushes=1,
            keep_cancelled=True,
            name="pgq-complete-batches",
        )
        self.claims = 0  # claim calls made (for tests and metrics)

    @property
    def batches(self) -> int:
        """``pgq.complete_many`` calls made."""
        return self._completions.batches

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self, hooks: RunnerHooks) -> None:
        self._hooks = hooks
        self._wake = asyncio.Event()
        size = self._pool_size or max(4, min(12, 3 + hooks.concurrency // 4))
        backoff = reconnecting()
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
                if not unreachable(exc):
                    raise
                sleep = backoff.next()
                log_event(
                    log,
                    "runner.connecting",
                    f"cannot reach the database ({exc}); retrying in {sleep:.2f}s",
                    level=logging.WARNING,
                )
                await asyncio.sleep(sleep)
        async with self._pool.acquire() as conn:
            await migrations.check_up_to_date(conn)
        if getattr(hooks, "transactional", False):
            # Apart from the pool above, so that heartbeats, claims and failures never wait
            # behind handlers' transactions; no statement timeout (the handler's own timeout
            # bounds it), and asyncpg's reset on release (a handler may leave session state).
            self._tx_pool = await db.create_pool(
                self._dsn, min_size=0, max_size=hooks.concurrency, reset=None
            )
        for spec in getattr(hooks, "schedules", ()):
            saved = await queries.schedule(
                self._pool, spec.name, spec.cron, spec.job_type, spec.args, **spec.options
            )
            log_event(
                log,
                "schedule.declared",
                f"schedule {saved.name} ({saved.cron} {saved.timezone}): next {saved.next_run_at}",
                schedule=saved.name,
                job_type=saved.job_type,
                worker_id=hooks.worker_id,
            )
        self._sweeper = LeaseSweeper(
            self._pool, hooks, safety_interval=self._safety_interval, on_safety=self._wake.set
        )
        listener = Listener(self._dsn)
        for queue in hooks.queues:
            listener.subscribe(f"pgq_{queue}", self._on_queue)
        listener.subscribe(CANCEL_CHANNEL, self._on_cancel)
        listener.on_connect(self._on_connect)
        self._listener = listener
        self._doorbell = Doorbell(self._pool, listener)
        self._doorbell.watch(hooks.queues)
        self._idle = IdleWait(
            self._pool,
            listener,
            self._doorbell,
            hooks.queues,
            hooks.job_types,
            on_next_due=self._on_next_due,
        )
        with contextlib.suppress(PgqError):  # the janitor; the safety re-check runs it too
            await queries.forget_dead_listeners(self._pool)
        # Every runner fires due schedules: no leader, one job per slot whoever fires.
        self._schedule_timer = ScheduleTimer(
            self._pool,
            listener,
            safety_interval=self._safety_interval,
            worker_id=hooks.worker_id,
        )
        await listener.start(wait=True, timeout=None)
        self._sweeper.start()
        self._schedule_timer.start()

    async def close(self) -> None:
        tasks = list(self._side_tasks)
        for task in tasks:
            task.cancel()  # they end while the sweeper and the timer stop
        if self._sweeper is not None:
            await self._sweeper.close()
            self._sweeper = None
        if self._schedule_timer is not None:
            await self._schedule_timer.stop()
            self._schedule_timer = None
        await stop_tasks(tasks)
        if self._doorbell is not None:
            await self._doorbell.close()
            self._doorbell = None
        await self._completions.close(timeout=5)  # completions whose waiters gave up land
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        for pool in (self._tx_pool, self._pool):
            if pool is not None and not await db.close_pool(pool):
                log_event(
                    log,
                    "runner.pool_close_timeout",
                    f"pool connections still in use {db.POOL_CLOSE_TIMEOUT:g}s into the "
                    "stop; terminated them",
                    level=logging.WARNING,
                    worker_id=self._hooks.worker_id if self._hooks else None,
                )
        self._pool = self._tx_pool = None

    def health(self) -> dict[str, Any]:
        listener = self._listener
        return {
            "kind": "database",
            "listener_connected": bool(listener and listener.connected),
            "last_notification_at": listener.last_notification_at if listener else None,
            "listener_connects": listener.connects if listener else 0,
            "listener_pid": listener.pid if listener else None,
            "claims": self.claims,
            "completion_batches": self.batches,
        }

    # -- notifications ------------------------------------------------------------------

    def _on_queue(self, _channel: str, _payload: str) -> None:
        self._wake.set()

    def _on_cancel(self, _channel: str, payload: str) -> None:
        hooks = self._hooks
        if hooks is None:
            return
        try:
            event = orjson.loads(payload)
            job_id, status = int(event["id"]), event.get("status")
        except (ValueError, KeyError, TypeError):
            log_event(
                log,
                "runner.bad_payload",
                f"unreadable {CANCEL_CHANNEL} payload: {payload[:200]!r}",
                level=logging.WARNING,
            )
            return
        hooks.job_gone(job_id, status)  # a dict look-up; ignores jobs it does not run

    def _on_connect(self) -> None:
        # Anything sent while the connection was down is lost: claim now, re-read the due
        # times, and check that every job we run is still ours (a cancellation may have
        # been missed).
        self._wake.set()
        if self._pool is not None:
            # The pool's idle connections most likely died with the listener's (a restart,
            # a failover): replace them, so the claim this wake-up triggers does not fail
            # on one of them first.
            self._spawn(self._pool.expire_connections())
        if self._sweeper is not None:
            self._sweeper.rearm()
        if self._hooks is not None:
            self._hooks.reconnected()  # a claim that failed meanwhile may work now
        if self._hooks is not None and self._hooks.held_jobs():
            self._spawn(self._check_held())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _check_held(self) -> None:
        assert self._hooks is not None and self._pool is not None
        held = dict(self._hooks.held_jobs())
        try:
            jobs = await queries.get_jobs(self._pool, list(held))
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
                jobs += await queries.claim(
                    self._pool,
                    self._hooks.worker_id,
                    max_jobs - len(jobs),
                    self._hooks.queues,
                    self._hooks.job_types,
                )
        except DatabaseUnavailable:
            # The claim may have committed with its reply lost: those jobs are running
            # under our name, yet we never heard of them.
            self._claim_in_doubt = True
            raise
        if self._idle is not None:
            self._idle.claimed(len(jobs))
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
        mine = await queries.running_jobs_of(self._pool, self._hooks.worker_id)
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
        """Idle: ``pgq.waiting.IdleWait`` — arm the doorbell (register idle, pass the
        barrier) and return, so the runner claims once more; once armed, sleep until a
        wake-up or the next due time (an enqueue notifies only while we are registered)."""
        assert self._idle is not None
        await self._idle.wait(self._wake)

    def _on_next_due(self, _run_at: object, next_lease: Any, db_now: Any) -> None:
        if self._sweeper is not None:
            self._sweeper.note_lease(next_lease, db_now)

    # -- outcomes -------------------------------------------------------------------------

    def complete(self, job: Job, result: Any) -> asyncio.Future[tuple[bool, str | None]]:
        """Queue the completion for the next ``pgq.complete_many`` batch; the future
        resolves once that batch committed. The write runs in the batching task, so
        cancelling whoever awaits the future cannot interrupt it."""
        return self._completions.submit((job, result))

    async def _complete_batch(
        self, batch: list[_Completion]
    ) -> Sequence[tuple[bool, str | None] | BaseException]:
        assert self._pool is not None and self._hooks is not None
        rows = await queries.complete_many(
            self._pool,
            self._hooks.worker_id,
            [job.id for job, _ in batch],
            [job.attempt for job, _ in batch],
            [result for _, result in batch],
            [job.lease_token for job, _ in batch],
        )
        return [(completed, status) for _, completed, status in rows]

    async def begin(self, job: Job) -> DatabaseTransaction:
        """A transaction for a ``transactional=True`` handler's attempt (``transaction.py``)."""
        assert self._tx_pool is not None and self._hooks is not None
        return await DatabaseTransaction.begin(self._tx_pool, job, self._hooks.worker_id)

    async def fail(
        self, job: Job, error: dict[str, Any], *, retryable: bool, retry_delay: float | None
    ) -> Job | None:
        assert self._pool is not None and self._hooks is not None
        try:
            return await queries.fail(
                self._pool,
                job.id,
                self._hooks.worker_id,
                error,
                retryable=retryable,
                attempt=job.attempt,
                retry_delay=retry_delay,
                lease_token=job.lease_token,
            )
        except (JobNotFound, TransitionNotAllowed):
            return None

    async def release(self, job: Job, reason: dict[str, Any]) -> Job | None:
        assert self._pool is not None and self._hooks is not None
        try:
            return await queries.release(
                self._pool,
                job.id,
                self._hooks.worker_id,
                reason,
                attempt=job.attempt,
                lease_token=job.lease_token,
            )
        except (JobNotFound, TransitionNotAllowed):
            return None

    async def heartbeat(self, job: Job) -> bool:
        assert self._pool is not None and self._hooks is not None
        try:
            await queries.heartbeat(
                self._pool, job.id, self._hooks.worker_id, job.attempt, job.lease_token
            )
        except (JobNotFound, TransitionNotAllowed):
            return False
        return True

    async def progress(self, job: Job, progress: dict[str, Any]) -> bool:
        assert self._pool is not None and self._hooks is not None
        try:
            await queries.progress(
                self._pool, job.id, self._hooks.worker_id, progress, job.attempt, job.lease_token
            )
        except (JobNotFound, TransitionNotAllowed):
            return False
        return True

"""One task per held job: the handler under its timeout and heartbeats, then its outcome.

``Executor`` owns every job a ``Runner`` holds, from claim until the outcome is written
through the ``JobSource``: it starts the handler as its own task, heartbeats three times
per lease, cancels the handler at its timeout, on a cancellation or a lost lease, or at
the end of the shutdown grace period, and writes what happened (``complete``, ``fail``,
``release``) fenced by worker and attempt. The write runs outside the handler's
cancellation scope and is retried while the source is unreachable. A ``transactional``
handler runs in a transaction of the source's (``begin``; see ``transaction.py``) that
its success commits with, and that any other outcome rolls back before it is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import orjson

from .. import tracing
from ..backoff import Backoff
from ..errors import DatabaseUnavailable, PermanentError, RetryLater
from ..jobs import Job
from ..logs import log_event
from .outcome import Outcome, Written, failure_of
from .source import HandlerTransaction, JobSource, TransactionalSource
from .threads import ThreadPool

__all__ = ["Executor", "Handler", "HandlerFn"]

log = logging.getLogger("pgq.runner")

#: ``async def fn(job)``, or a plain ``def fn(job)`` (run on the thread pool)
HandlerFn = Callable[[Job], Any]
T = TypeVar("T")

#: Outcome writes are retried while the source is unreachable, backing off this way.
WRITE_RETRY_BASE = 0.05
WRITE_RETRY_CAP = 2.0


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler: the function, its own (shorter) timeout, whether it is a
    plain ``def`` that runs on the runner's thread pool, and whether it runs in a
    transaction that its job's success commits with (``job.connection``)."""

    job_type: str
    fn: HandlerFn
    timeout: float | None = None
    sync: bool = False
    transactional: bool = False


@dataclass(eq=False, slots=True)
class _Active:
    """A job this runner holds, from claim until its outcome is written."""

    job: Job
    handler: Handler
    started: float = 0.0  # time.perf_counter() at handler start
    task: asyncio.Task[None] | None = None
    in_handler: bool = True
    #: why the runner cancelled the handler: CANCELLED (job cancelled), LOST (no longer
    #: held: lease expired / claimed again), TIMEOUT, SHUTDOWN (grace period over)
    cancel_reason: Outcome | None = None
    timeout: float = 0.0  # seconds the handler may run
    deadline: float = 0.0  # loop.time() when it has run that long
    next_beat: float = 0.0  # loop.time() of the next heartbeat
    #: one timer per job, at min(deadline, next_beat): the heartbeat and the timeout
    timer: asyncio.TimerHandle | None = None
    heartbeats: set[asyncio.Task[None]] = field(default_factory=set)
    #: a transactional handler's transaction, open from its start until the outcome
    tx: HandlerTransaction | None = None
    #: the attempt's span, when OpenTelemetry is installed (``pgq.tracing``)
    trace: tracing.Attempt | None = None


class Executor:
    """The jobs a runner holds (see the module docstring). ``on_slot_freed`` is called
    whenever a handler ends, so the claim loop can fill the slot."""

    def __init__(self, worker_id: str, on_slot_freed: Callable[[], None]) -> None:
        self.worker_id = worker_id
        self._on_slot_freed = on_slot_freed
        self.source: JobSource | None = None  # set by Runner.run() for the run's duration
        self.threads: ThreadPool | None = None  # for sync handlers, set by Runner.run()
        self.active: dict[int, _Active] = {}  # job id → held job whose handler runs
        self.held: dict[int, int] = {}  # job id → attempt, from claim until written
        self.tasks: set[asyncio.Task[None]] = set()  # every job task, writes included
        self.unwritten = 0  # outcomes that could not be written during the current run
        #: mean seconds a handler runs (moving average of the recent ones; None before the
        #: first): the runner sizes its claim-ahead by it
        self.mean_run: float | None = None
        self.counts: dict[str, int] = dict.fromkeys(
            ("claimed", "succeeded", "failed", "retried", "dead", "cancelled", "released", "lost"),
            0,
        )

    def job_gone(self, job_id: int, status: str | None) -> None:
        active = self.active.get(job_id)
        if active is None or not active.in_handler or active.cancel_reason is not None:
            return
        self.cancel(active, Outcome.CANCELLED if status == "cancelled" else Outcome.LOST)

    def hold(self, job: Job) -> None:
        """A claimed job the runner keeps to start later (claimed ahead): held from now on,
        so it counts in ``held_jobs`` (a claim in doubt does not adopt it, a reconnect checks
        it is still ours), and ``job_gone`` takes it back (``held`` loses it)."""
        self.held[job.id] = job.attempt
        self.counts["claimed"] += 1

    def start(self, job: Job, handler: Handler | None, claimed_at: float | None = None) -> None:
        """Run ``handler`` (the runner's handler for the job's type) for a claimed job.

        ``claimed_at`` (loop time the claim was sent) for a job claimed ahead and held
        since (``hold``): its lease has been running since then, so its heartbeats are
        timed from then, not from the handler's start."""
        if handler is None:  # claim filters by type; this is a bug, not the job's fault
            handler = Handler(job.type, _no_handler)
        previous = self.active.get(job.id)
        if previous is not None:  # an older attempt of ours still runs: it lost its lease
            self.cancel(previous, Outcome.LOST)
        active = _Active(job, handler)
        self.active[job.id] = active
        if claimed_at is None:
            self.held[job.id] = job.attempt
            self.counts["claimed"] += 1
        else:
            active.next_beat = claimed_at + _beat_interval(job)
        task = asyncio.get_running_loop().create_task(self._execute(active))
        active.task = task
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log_event(
                log,
                "runner.error",
                "job task failed",
                level=logging.ERROR,
                exc_info=task.exception(),
                worker_id=self.worker_id,
            )

    def cancel(self, active: _Active, reason: Outcome) -> None:
        if active.in_handler and active.cancel_reason is None and active.task is not None:
            active.cancel_reason = reason
            active.task.cancel()

    def give_back(self, job: Job, why: str) -> None:
        """Release a held job whose handler never started (claimed ahead, then the runner
        stopped, or it waited too long for a slot): queued again now, its attempt given
        back (``pgq.release``), fenced like every outcome. The write is a job task, so the
        shutdown waits for it."""
        fields = {"job_id": job.id, "job_type": job.type, "queue": job.queue}
        fields.update(worker_id=self.worker_id, attempt=job.attempt)
        task = asyncio.get_running_loop().create_task(self._give_back(job, why, fields))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _give_back(self, job: Job, why: str, fields: dict[str, Any]) -> None:
        source = self.source
        assert source is not None
        reason = {"message": f"released unstarted by runner {self.worker_id}: {why}"}
        reason["kind"] = "released"
        try:
            written = await self._write(lambda: source.release(job, reason), fields)
        finally:
            if self.held.get(job.id) == job.attempt:
                del self.held[job.id]
        if written is None:
            return
        if written.answer is None:
            self._note_lost(fields, None)
            return
        self.counts["released"] += 1
        log_event(log, "job.released", f"released unstarted: {why}", **fields)

    def _leave_handler(self, active: _Active) -> None:
        """The handler is over: free its slot and stop its timer (heartbeat, timeout)."""
        ran = time.perf_counter() - active.started
        mean = self.mean_run
        self.mean_run = ran if mean is None else mean + (ran - mean) * 0.05
        active.in_handler = False
        if active.timer is not None:
            active.timer.cancel()
            active.timer = None
        if self.active.get(active.job.id) is active:
            del self.active[active.job.id]
        self._on_slot_freed()

    async def _execute(self, active: _Active) -> None:
        if tracing.ENABLED:
            active.trace = tracing.attempt(active.job, self.worker_id)
        try:
            await self._run_job(active)
        finally:
            if active.trace is not None:
                active.trace.end()
            if self.held.get(active.job.id) == active.job.attempt:
                del self.held[active.job.id]

    async def _run_job(self, active: _Active) -> None:
        job, handler = active.job, active.handler
        loop = asyncio.get_running_loop()
        fields: dict[str, Any] = {
            "job_id": job.id,
            "job_type": job.type,
            "queue": job.queue,
            "worker_id": self.worker_id,
            "attempt": job.attempt,
        }
        log_event(log, "job.claimed", **fields)
        timeout = float(job.timeout_seconds)
        if handler.timeout is not None:
            timeout = min(timeout, handler.timeout)
        now = loop.time()
        active.timeout = timeout
        active.deadline = now + timeout
        if not active.next_beat:  # else claimed ahead: timed from the claim (start())
            active.next_beat = now + _beat_interval(job)
        active.timer = loop.call_at(min(active.deadline, active.next_beat), self._tick, active)
        active.started = time.perf_counter()

        outcome: Outcome
        detail: Any = None
        try:
            try:
                assert self.source is not None
                job.reporter = self.source.progress
                job.loop = loop
                if handler.transactional:
                    result = await self._in_transaction(active)
                elif handler.sync:
                    assert self.threads is not None
                    result = await self.threads.run(handler.fn, job)
                else:
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
            outcome, detail = Outcome.PERMANENT, exc
        except RetryLater as exc:
            outcome, detail = Outcome.RETRY_LATER, exc
        except Exception as exc:
            outcome, detail = Outcome.ERROR, exc
        else:
            if active.cancel_reason is not None:  # the handler swallowed our cancellation
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
            if active.cancel_reason in (Outcome.CANCELLED, Outcome.LOST, Outcome.TIMEOUT):
                outcome = active.cancel_reason
            else:
                outcome, detail = Outcome.SUCCESS, result
                if result is not None:
                    try:
                        orjson.dumps(result)
                    except TypeError as exc:
                        outcome = Outcome.ERROR
                        detail = TypeError(f"the handler's result is not JSON-serialisable: {exc}")
        if outcome is Outcome.TIMEOUT:
            detail = active.timeout
        if active.trace is not None:
            active.trace.outcome(outcome, detail)
        duration_ms = round((time.perf_counter() - active.started) * 1000, 3)
        fields["duration_ms"] = duration_ms
        await self._finish(active, outcome, detail, fields)

    async def _in_transaction(self, active: _Active) -> Any:
        """Open the attempt's transaction (``job.connection``), then run the handler."""
        source = cast(TransactionalSource, self.source)  # Runner.run() checked it has begin
        active.tx = await source.begin(active.job)
        active.job.connection = active.tx.connection
        return await active.handler.fn(active.job)

    async def _finish(
        self, active: _Active, outcome: Outcome, detail: Any, fields: dict[str, Any]
    ) -> None:
        job, source = active.job, self.source
        assert source is not None
        tx, active.tx, job.connection = active.tx, None, None
        if tx is not None:
            if outcome is not Outcome.SUCCESS:
                await asyncio.shield(tx.rollback())
            else:
                error = await self._commit(tx, detail, fields)
                if error is None:
                    return
                outcome, detail = Outcome.ERROR, error  # rolled back: the attempt fails
                if active.trace is not None:
                    active.trace.outcome(outcome, detail)
        if outcome is Outcome.CANCELLED:
            self.counts["cancelled"] += 1
            log_event(log, "job.cancelled", "handler stopped: the job was cancelled", **fields)
            return
        if outcome is Outcome.LOST:
            self._note_lost(fields, None)
            return
        if outcome is Outcome.SUCCESS:
            done = await self._write(lambda: source.complete(job, detail), fields)
            if done is None:
                return
            completed, status = done.answer
            # A retried write may have committed the first time round (the reply was lost).
            if completed or (done.retried and status == "succeeded"):
                self.counts["succeeded"] += 1
                log_event(log, "job.succeeded", **fields)
            else:
                self._note_lost(fields, status)
            return

        failure = failure_of(outcome, detail, self.worker_id)
        if outcome is Outcome.SHUTDOWN:
            # pgq.release: queued again now, and the interrupted attempt is given back, so
            # a job released on its last attempt runs again instead of going dead.
            written = await self._write(lambda: source.release(job, failure.error), fields)
        else:
            written = await self._write(
                lambda: source.fail(
                    job,
                    failure.error,
                    retryable=failure.retryable,
                    retry_delay=failure.retry_delay,
                ),
                fields,
            )
        if written is None:
            return
        after = written.answer
        if after is None:  # refused: no longer held by this runner at this attempt
            self._note_lost(fields, None)
            return
        if outcome is Outcome.SHUTDOWN:
            self.counts["released"] += 1
            log_event(
                log,
                "job.released",
                "grace period over: handler cancelled, job released to run again",
                **fields,
            )
            return
        message = failure.error.get("message")
        self.counts["failed"] += 1
        log_event(log, "job.failed", level=logging.WARNING, error=message, **fields)
        if after.status == "dead":
            self.counts["dead"] += 1
            log_event(log, "job.dead", level=logging.WARNING, error=message, **fields)
        else:
            self.counts["retried"] += 1
            log_event(
                log,
                "job.retry_scheduled",
                f"retry at {after.run_at.isoformat() if after.run_at else '?'}",
                **fields,
            )

    async def _commit(
        self, tx: HandlerTransaction, result: Any, fields: dict[str, Any]
    ) -> Exception | None:
        """Complete the job in the handler's transaction and commit. None when that is done
        (or the job turned out not to be ours any more: all rolled back); the error when the
        transaction failed for the handler's reasons (a write it made broke a deferred
        constraint at COMMIT, it left the transaction aborted): rolled back, the attempt
        fails with it. Never retried: a lost connection may have committed or not, so the
        outcome is left to the job's lease."""
        try:
            completed, status = await asyncio.shield(tx.complete(result))
        except asyncio.CancelledError:
            self.unwritten += 1
            raise
        except DatabaseUnavailable as exc:
            self.unwritten += 1
            log_event(
                log,
                "runner.error",
                f"the transaction's commit did not answer ({exc}); if it did not commit, "
                "the job's lease brings the job back",
                level=logging.ERROR,
                **fields,
            )
            return None
        except Exception as exc:
            return exc
        if completed:
            self.counts["succeeded"] += 1
            log_event(log, "job.succeeded", **fields)
        else:
            self._note_lost(fields, status)
        return None

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
        self, op: Callable[[], Awaitable[T]], fields: dict[str, Any]
    ) -> Written[T] | None:
        """Write an outcome, retrying while the source is unreachable; None when it could
        not be made (the job's lease will bring the job back). Shielded: cancelling the
        job's task (a hard stop) cannot interrupt a statement in flight."""
        backoff = Backoff(WRITE_RETRY_BASE, WRITE_RETRY_CAP)
        while True:
            try:
                pending = op()
                if not isinstance(pending, asyncio.Future):
                    # A coroutine runs in this task: shield it, so that cancelling the task
                    # cannot interrupt its statement. A future (the batched completions)
                    # is written by another task already; cancelling our wait cannot stop it.
                    pending = asyncio.shield(pending)
                return Written(await pending, backoff.failures > 0)
            except DatabaseUnavailable as exc:
                if backoff.failures % 20 == 0:
                    log_event(
                        log,
                        "runner.write_retry",
                        f"cannot record the outcome yet ({exc}); retrying",
                        level=logging.WARNING,
                        **fields,
                    )
                await asyncio.sleep(backoff.next())
            except asyncio.CancelledError:
                self.unwritten += 1
                raise
            except Exception:
                self.unwritten += 1
                log_event(
                    log,
                    "runner.error",
                    "cannot record the outcome; the job's lease will bring it back",
                    level=logging.ERROR,
                    exc_info=True,
                    **fields,
                )
                return None

    # -- heartbeats and timeouts -----------------------------------------------------------

    def _tick(self, active: _Active) -> None:
        """The job's timer: cancel the handler at its deadline; heartbeat when due."""
        if not active.in_handler:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= active.deadline - 0.001:  # uvloop's timers have millisecond resolution
            self.cancel(active, Outcome.TIMEOUT)
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
        assert self.source is not None
        try:
            held = await self.source.heartbeat(active.job)
        except Exception as exc:
            if isinstance(exc, DatabaseUnavailable):
                log_event(
                    log,
                    "runner.heartbeat_failed",
                    f"heartbeat failed ({exc}); retrying in 1s",
                    level=logging.WARNING,
                    job_id=active.job.id,
                    worker_id=self.worker_id,
                )
            else:
                log_event(
                    log,
                    "runner.error",
                    "heartbeat error; retrying in 1s",
                    level=logging.ERROR,
                    exc_info=True,
                )
            if active.in_handler:
                loop = asyncio.get_running_loop()
                active.next_beat = min(active.next_beat, loop.time() + 1.0)
                self._arm(active)
            return
        if not held and active.in_handler:
            self.job_gone(active.job.id, None)


def _beat_interval(job: Job) -> float:
    """Heartbeat three times per lease (1.25 × timeout_seconds), well before it runs out."""
    return job.timeout_seconds * 1.25 / 3


async def _no_handler(job: Job) -> None:
    raise PermanentError(f"this runner has no handler for job type {job.type!r}")

"""Waiting without polling: the idle wait of a claimer, and the wait for one job.

Both follow one rule against lost wake-ups: *register first, look second*. The wake-up
signal (an ``asyncio.Event`` set by the process's ``Listener`` callbacks) exists before the
claim or the read that finds nothing, so a notification sent in between still wakes the
sleeper. What sets it is the owner's business (the runner's queue channels, a long-poll
request's channels, ``pgq_events``); what to do when nothing was found is here, once.

``IdleWait`` — after a claim found nothing (the runner's ``DatabaseSource`` and the
coordinator's long-poll ``POST /jobs/claim``)::

    claim → (nothing) → arm the doorbell: register idle, pass the barrier → claim again
          → (nothing) → pgq.next_due → sleep until the wake-up, the due time, the deadline

An enqueue only notifies queues with a registered idle listener (``pgq.doorbell``), so a
sleeper must be *armed* before it may sleep for long, and must claim once more after
arming (jobs committed before the barrier sent no notification). A delayed job or a
backoff sends nothing when it becomes due, hence ``pgq.next_due``. While nothing can wake
the sleeper (the LISTEN connection is down, its channels are not LISTENed, the doorbell
cannot be armed) the sleep is bounded by a poll interval instead.

``JobWaits`` — ``Client.wait`` and ``GET /jobs/{id}?wait=``: park on the job's id, read the
job, sleep until its ``pgq_events`` notification (or a reconnect: notifications sent while
disconnected are lost, so every job waiter re-reads).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import orjson

from . import queries
from .aio import wait_event
from .backoff import Backoff
from .doorbell import Doorbell
from .errors import DatabaseUnavailable, JobNotFound, PgqError
from .jobs import TERMINAL_STATUSES, Job
from .listener import Listener
from .logs import log_event

log = logging.getLogger("pgq.waiting")

#: The channel of every job's transitions (``{"id": …, "status": …}``).
EVENTS_CHANNEL = "pgq_events"
#: Look again this often while nothing can wake us: the LISTEN connection is down, a
#: channel cannot be LISTENed, or the database did not answer.
POLL_WHEN_DEAF = 1.0
#: Look again this often while the doorbell cannot be armed (a channel's LISTEN is not
#: active yet, or the barrier timed out behind an enqueuer holding a queue's key).
UNARMED_POLL = 0.05
#: After a claim that found jobs but not all it asked for, look again this soon instead of
#: registering idle at once: while jobs keep coming the sleeper stays unregistered, so
#: their enqueues send no NOTIFY (which serializes producers' commits). A claim that finds
#: nothing registers, so a lone job still wakes it at once.
BUSY_RECHECK = 0.001
#: A job due now that the claim did not return is being claimed by someone else (its row
#: is locked): look again this soon, doubling up to ``DUE_RETRY_MAX`` while it persists.
DUE_RETRY_MIN = 0.005
DUE_RETRY_MAX = 1.0
#: Sleep this much past a due time (timers may fire a little early).
DUE_SLACK = 0.001

#: ``on_next_due(next_run_at, next_lease_expiry, db_now)``: what ``pgq.next_due`` said.
NextDueCallback = Callable[[datetime | None, datetime | None, datetime], None]


class IdleWait:
    """The idle protocol of one sleeper (one runner, one long-poll request).

    Call ``claimed(n)`` after every claim, and ``wait(wake)`` after one that found too
    little; ``wait`` returns when it is time to claim again. ``wake`` is the sleeper's
    signal, armed before the claim (see the module doc).
    """

    def __init__(
        self,
        pool: queries.Executor,
        listener: Listener,
        doorbell: Doorbell,
        queues: Sequence[str],
        job_types: Sequence[str] | None,
        *,
        on_next_due: NextDueCallback | None = None,
    ) -> None:
        self._pool = pool
        self._listener = listener
        self._doorbell = doorbell
        self._queues = tuple(queues)
        self._job_types = job_types
        self._on_next_due = on_next_due
        self._last_claimed = 0
        self._due_retry = Backoff(DUE_RETRY_MIN, DUE_RETRY_MAX)

    def claimed(self, n: int) -> None:
        """What the last claim returned (jobs found reset the due-now backoff)."""
        self._last_claimed = n
        if n:
            self._due_retry.reset()

    async def wait(
        self, wake: asyncio.Event, *, deadline: float | None = None, polled: bool = False
    ) -> None:
        """Arm, or sleep until ``wake``, the next due time or ``deadline`` (loop time).

        Returns at once after arming (claim once more: enqueues committed before the
        barrier notified nobody). ``polled``: some channel of the sleeper's cannot be
        LISTENed (the coordinator's channel limit), so nothing may wake it.
        Never raises ``DatabaseUnavailable``: it sleeps a moment and lets the claim that
        follows report the trouble.
        """
        if wake.is_set():
            return
        queues = self._queues
        doorbell = self._doorbell
        poll: float | None = None  # nothing can wake us: look again this soon
        if polled or not self._listener.connected:
            poll = POLL_WHEN_DEAF  # a reconnect sets wake too
        elif not doorbell.armed(queues):
            if self._last_claimed:  # jobs are coming in: look again before registering
                await wait_event(wake, BUSY_RECHECK)
                return
            try:
                if await doorbell.arm(queues):
                    return  # claim once more: jobs committed before the barrier are visible
            except PgqError as exc:  # e.g. the LISTEN session just died
                log_event(
                    log,
                    "idle.doorbell_failed",
                    f"cannot register as idle ({exc}); polling",
                    level=logging.WARNING,
                )
            poll = UNARMED_POLL
        timeout: float | None
        try:
            next_run_at, next_lease, db_now = await queries.next_due(
                self._pool, queues, self._job_types
            )
        except DatabaseUnavailable:
            timeout = POLL_WHEN_DEAF
        else:
            if self._on_next_due is not None:
                self._on_next_due(next_run_at, next_lease, db_now)
            if next_run_at is None:
                timeout = None  # a notification, a reconnect, the deadline
            else:
                timeout = (next_run_at - db_now).total_seconds() + DUE_SLACK
                if timeout <= 0:
                    # Due, yet the claim just found nothing: another claimer holds its row
                    # lock right now. Look again soon, backing off if it persists.
                    timeout = self._due_retry.next()
        if poll is not None:
            timeout = poll if timeout is None else min(timeout, poll)
        if deadline is not None:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            timeout = remaining if timeout is None else min(timeout, remaining)
        if wake.is_set():
            return
        if poll is None and not doorbell.armed(queues):
            return  # disarmed during next_due (a notification, a reconnect): arm again first
        await wait_event(wake, timeout)


class JobWaits:
    """Waiters for single jobs, all woken through one ``Listener`` on ``pgq_events``."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._jobs: dict[int, set[asyncio.Event]] = {}
        listener.subscribe(EVENTS_CHANNEL, self._on_event)
        listener.on_connect(self.wake_all)

    @property
    def waiting(self) -> int:
        """How many waits are parked right now."""
        return sum(len(events) for events in self._jobs.values())

    def wake_all(self) -> None:
        """Every waiter re-reads its job (after a reconnect, at shutdown)."""
        for events in list(self._jobs.values()):
            wake(events)

    def _on_event(self, _channel: str, payload: str) -> None:
        if not self._jobs:
            return  # nobody waits: a drain's one event per finished job costs no parsing
        try:
            event = orjson.loads(payload)
            job_id, status = int(event["id"]), event.get("status")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log_event(
                log,
                "waiting.bad_payload",
                f"ignoring a malformed pgq_events payload: {str(payload)[:200]}",
                level=logging.WARNING,
            )
            return
        if status in TERMINAL_STATUSES:  # claims, requeues and progress do not end a wait
            wake(self._jobs.get(job_id, ()))

    async def wait(
        self,
        db: queries.Executor,
        job_id: int,
        deadline: float | None,
        *,
        stop: Callable[[], bool] = lambda: False,
        ride_out_outages: bool = True,
    ) -> Job:
        """The job once it is finished; at ``deadline`` (loop time) or once ``stop()``,
        the job as it stands. Raises ``JobNotFound``.

        ``ride_out_outages``: a database blip (a restart, a terminated connection) is
        waited out until the deadline, then raised; without it, raised at once.
        """
        loop = asyncio.get_running_loop()
        while True:
            event = asyncio.Event()
            self._jobs.setdefault(job_id, set()).add(event)
            try:
                # Registered first, read second: a transition between the two still wakes us.
                try:
                    job = await queries.get_job(db, job_id)
                except DatabaseUnavailable as exc:
                    if not ride_out_outages or stop():
                        raise
                    await ride_out(event, deadline, exc)
                    continue
                if job is None:
                    raise JobNotFound(f"job {job_id} does not exist")
                remaining = None if deadline is None else deadline - loop.time()
                if job.finished or stop() or (remaining is not None and remaining <= 0):
                    return job
                timeout = remaining
                if not self._listener.connected:
                    timeout = POLL_WHEN_DEAF if timeout is None else min(timeout, POLL_WHEN_DEAF)
                await wait_event(event, timeout)
            finally:
                events = self._jobs.get(job_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._jobs[job_id]


async def ride_out(wake: asyncio.Event, deadline: float | None, exc: DatabaseUnavailable) -> None:
    """A long wait outlives a database blip (a restart, a pooled connection terminated
    while idle): sleep a moment (or until ``wake``), then the caller looks again; ``exc``
    is raised once the deadline has passed."""
    timeout = POLL_WHEN_DEAF
    if deadline is not None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise exc
        timeout = min(timeout, remaining)
    await wait_event(wake, timeout)


def wake(events: Iterable[asyncio.Event]) -> None:
    for event in list(events):
        event.set()


__all__ = [
    "BUSY_RECHECK",
    "EVENTS_CHANNEL",
    "POLL_WHEN_DEAF",
    "UNARMED_POLL",
    "IdleWait",
    "JobWaits",
    "NextDueCallback",
    "ride_out",
    "wake",
]

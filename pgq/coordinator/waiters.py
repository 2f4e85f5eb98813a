"""Long-poll waiters, all fed by the process's one ``Listener``.

Two kinds of request wait here: ``POST /jobs/claim`` with ``wait_seconds`` (for work in
some queues) and ``GET /jobs/{id}?wait=`` (for one job to finish). Neither holds a
database connection while it waits: each parks an ``asyncio.Future`` under the channel it
cares about, and the listener's callback resolves every future on that channel. No
connection per request, no polling.

A claim waiter's loop, per iteration:
  1. register a future on ``pgq_<queue>`` for each queue (LISTEN on a new channel starts
     here), *before* looking, so an enqueue committed during step 2 still wakes it;
  2. claim; jobs → answer;
  2b. nothing, and some queue's doorbell is not armed: register this process's LISTEN
     session idle on the queues and pass the barrier (``pgq.doorbell``: an enqueue only
     notifies queues with an idle listener), then go back to 1 to claim once more;
  3. nothing: ask ``pgq.next_due`` when the earliest queued job of these queues becomes
     due (a delayed job or a backoff sends no notification when it becomes due);
  4. sleep until the first of: a notification, that due time, the deadline, shutdown.
     One notification wakes every waiter of the queue and disarms its doorbell (a busy
     coordinator is not notified); those who find nothing loop and arm it again.
The sleep is further bounded while the listener is disconnected (``_POLL_WHEN_DEAF``) and
while a channel's first LISTEN is not active yet (``_POLL_UNTIL_LISTENING``): nothing
can wake us then, so we look again.

A job waiter registers on ``pgq_events`` (subscribed once at startup), then reads the job;
it answers when the job is terminal, at the deadline, or at shutdown, with the job as it
stands. After a listener reconnect every waiter re-checks (notifications sent while
disconnected are lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from .. import queries
from ..doorbell import Doorbell
from ..errors import DatabaseUnavailable, JobNotFound, PgqError
from ..jobs import Job
from ..listener import Listener

log = logging.getLogger("pgq.coordinator.waiters")

EVENTS_CHANNEL = "pgq_events"
#: Re-check this often while the listener is down (no notification can arrive).
_POLL_WHEN_DEAF = 1.0
#: Re-check this often until the LISTEN on a new channel is active.
_POLL_UNTIL_LISTENING = 0.05
#: A job due "now" that claim did not return is being claimed by someone else.
_MIN_DUE_SLEEP = 0.05
#: Re-check this often while a queue's doorbell cannot be armed (the barrier timed out).
_POLL_UNARMED = 0.05
#: Beyond this many queue channels, new queues are polled instead of LISTENed.
MAX_CHANNELS = 1000


class Waiters:
    """Claim and job waiters of one coordinator process."""

    def __init__(self, pool: asyncpg.Pool, listener: Listener, max_wait_seconds: float) -> None:
        self._pool = pool
        self._listener = listener
        self._max_wait = max_wait_seconds
        self._channels: dict[str, set[asyncio.Future[None]]] = {}
        self._subscribed: set[str] = set()
        self._jobs: dict[int, set[asyncio.Future[None]]] = {}
        self.closing = False
        self.doorbell = Doorbell(pool, listener)
        self._listener.subscribe(EVENTS_CHANNEL, self._on_event)
        self._listener.on_connect(self.wake_all)

    @property
    def waiting(self) -> int:
        """How many requests are parked right now (for tests and debugging)."""
        claimers: set[asyncio.Future[None]] = set()
        for futures in self._channels.values():
            claimers |= futures
        return len(claimers) + sum(len(f) for f in self._jobs.values())

    def close(self) -> None:
        """Shutdown: every parked request answers now, with what it has."""
        self.closing = True
        self.doorbell.disarm_all()
        self.doorbell.settle()
        self.wake_all()

    # -- listener callbacks -------------------------------------------------------------

    def _on_queue(self, channel: str, _payload: str) -> None:
        _wake(self._channels.get(channel, ()))

    def _on_event(self, _channel: str, payload: str) -> None:
        try:
            job_id = int(orjson.loads(payload)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed pgq_events payload: %.200s", payload)
            return
        _wake(self._jobs.get(job_id, ()))

    def wake_all(self) -> None:
        for futures in [*self._channels.values(), *self._jobs.values()]:
            _wake(futures)

    # -- claim --------------------------------------------------------------------------

    async def claim(
        self,
        *,
        worker_id: str,
        max_jobs: int,
        queues: Sequence[str],
        job_types: Sequence[str] | None,
        wait_seconds: float,
        gone: Callable[[], bool] = lambda: False,
    ) -> list[Job]:
        """Claim up to ``max_jobs``, waiting up to ``wait_seconds`` for some to arrive.

        ``gone()`` tells whether the client has disconnected: a waiter whose client left
        stops before claiming jobs nobody would receive.
        """
        if self.closing:
            return []
        if wait_seconds <= 0:
            return await queries.claim(self._pool, worker_id, max_jobs, queues, job_types)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_seconds, self._max_wait)
        channels = [f"pgq_{q}" for q in queues]
        while True:
            future: asyncio.Future[None] = loop.create_future()
            polled = self._register_claim(channels, future)
            unarmed = False
            try:
                try:
                    jobs = await queries.claim(self._pool, worker_id, max_jobs, queues, job_types)
                    self.doorbell.settle()  # deregistrations of a wake-up wait for its claim
                    if jobs or self.closing:
                        return jobs
                    if not polled and not self.doorbell.armed(queues):
                        try:
                            armed = await self.doorbell.arm(queues)
                        except DatabaseUnavailable:
                            raise
                        except PgqError as exc:  # e.g. the LISTEN session just died
                            log.warning("cannot register as idle listener: %s", exc)
                            armed = False
                        if self.closing or gone():
                            return []
                        if armed and loop.time() < deadline:
                            continue  # claim once more: enqueues before the barrier show
                        unarmed = True
                    next_run_at, _lease, db_now = await queries.next_due(
                        self._pool, queues, job_types
                    )
                except DatabaseUnavailable as exc:
                    await self._ride_out_outage(exc, future, deadline)
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                timeout = remaining
                if next_run_at is not None:
                    due_in = (next_run_at - db_now).total_seconds()
                    timeout = min(timeout, max(due_in, _MIN_DUE_SLEEP))
                if unarmed:
                    timeout = min(timeout, _POLL_UNARMED)
                if polled or not self._listener.connected:
                    timeout = min(timeout, _POLL_WHEN_DEAF)
                elif not all(
                    self._listener.listening(c) for c in channels if c in self._subscribed
                ):
                    timeout = min(timeout, _POLL_UNTIL_LISTENING)
                await asyncio.wait([future], timeout=timeout)
                if self.closing or gone():
                    return []
            finally:
                self._unregister_claim(channels, future)

    def _register_claim(self, channels: Iterable[str], future: asyncio.Future[None]) -> bool:
        """Park ``future`` on each channel; True when some channel cannot be LISTENed."""
        polled = False
        for channel in channels:
            waiters = self._channels.get(channel)
            if waiters is None:
                if len(self._subscribed) >= MAX_CHANNELS and channel not in self._subscribed:
                    polled = True
                    continue
                waiters = self._channels[channel] = set()
                if channel not in self._subscribed:
                    self._subscribed.add(channel)
                    self._listener.subscribe(channel, self._on_queue)
            waiters.add(future)
        return polled

    def _unregister_claim(self, channels: Iterable[str], future: asyncio.Future[None]) -> None:
        for channel in channels:
            waiters = self._channels.get(channel)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._channels[channel]  # stays LISTENed; only the set goes

    async def _ride_out_outage(
        self, exc: DatabaseUnavailable, future: asyncio.Future[None], deadline: float
    ) -> None:
        """A long-poll outlives a database blip (a restart, a pooled connection terminated
        while idle): wait a moment, then the caller tries again; ``exc`` once time is up."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0 or self.closing:
            raise exc
        await asyncio.wait([future], timeout=min(remaining, _POLL_WHEN_DEAF))

    # -- job --------------------------------------------------------------------------

    async def wait_for_job(self, job_id: int, wait_seconds: float) -> Job:
        """The job once terminal, or as it stands when the wait ends (or at shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_seconds, self._max_wait)
        while True:
            future: asyncio.Future[None] = loop.create_future()
            self._jobs.setdefault(job_id, set()).add(future)
            try:
                # Registered first, read second: a transition between the two still wakes us.
                try:
                    job = await queries.get_job(self._pool, job_id)
                except DatabaseUnavailable as exc:
                    await self._ride_out_outage(exc, future, deadline)
                    continue
                if job is None:
                    raise JobNotFound(f"job {job_id} does not exist")
                remaining = deadline - loop.time()
                if job.finished or self.closing or remaining <= 0:
                    return job
                timeout = remaining
                if not self._listener.connected:
                    timeout = min(timeout, _POLL_WHEN_DEAF)
                await asyncio.wait([future], timeout=timeout)
            finally:
                waiters = self._jobs.get(job_id)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._jobs[job_id]


def _wake(futures: Iterable[asyncio.Future[Any]]) -> None:
    for future in list(futures):
        if not future.done():
            with contextlib.suppress(asyncio.InvalidStateError):
                future.set_result(None)

"""Long-poll waiters, all fed by the process's one ``Listener``.

Two kinds of request wait here: ``POST /jobs/claim`` with ``wait_seconds`` (for work in
some queues) and ``GET /jobs/{id}?wait=`` (for one job to finish). Neither holds a
database connection while it waits: each parks an ``asyncio.Event`` under the channel it
cares about, and the listener's callback sets every event on that channel. No connection
per request, no polling.

The protocols themselves are ``pgq.waiting``'s, shared with the runner and the client:
a claim waiter parks its event on ``pgq_<queue>`` for each queue (LISTEN on a new channel
starts here) *before* it claims, then follows ``IdleWait`` (arm the doorbell, claim once
more, ``pgq.next_due``, sleep); a job waiter is a ``JobWaits`` wait. What is the
coordinator's own: the channel registry (beyond ``MAX_CHANNELS`` channels new queues are
polled instead of LISTENed), the request's deadline, a client that left, shutdown (every
parked request answers at once, with what it has), and riding out a database blip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

import asyncpg

from .. import queries
from ..doorbell import Doorbell
from ..errors import DatabaseUnavailable
from ..jobs import Job
from ..listener import Listener
from ..waiting import IdleWait, JobWaits, ride_out, wake

log = logging.getLogger("pgq.coordinator.waiters")

#: Beyond this many queue channels, new queues are polled instead of LISTENed.
MAX_CHANNELS = 1000


class Waiters:
    """Claim and job waiters of one coordinator process."""

    def __init__(self, pool: asyncpg.Pool, listener: Listener, max_wait_seconds: float) -> None:
        self._pool = pool
        self._listener = listener
        self._max_wait = max_wait_seconds
        self._channels: dict[str, set[asyncio.Event]] = {}
        self._subscribed: set[str] = set()
        self._jobs = JobWaits(listener)
        self.closing = False
        self.doorbell = Doorbell(pool, listener)
        # JobWaits wakes its own waiters on a reconnect
        self._listener.on_connect(self._wake_claimers)

    @property
    def waiting(self) -> int:
        """How many requests are parked right now (for tests and debugging)."""
        claimers: set[asyncio.Event] = set()
        for events in self._channels.values():
            claimers |= events
        return len(claimers) + self._jobs.waiting

    def close(self) -> None:
        """Shutdown: every parked request answers now, with what it has."""
        self.closing = True
        self.doorbell.disarm_all()
        self.doorbell.settle()
        self.wake_all()

    def _on_queue(self, channel: str, _payload: str) -> None:
        wake(self._channels.get(channel, ()))

    def _wake_claimers(self) -> None:
        for events in list(self._channels.values()):
            wake(events)

    def wake_all(self) -> None:
        self._wake_claimers()
        self._jobs.wake_all()

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
        idle = IdleWait(self._pool, self._listener, self.doorbell, queues, job_types)
        while True:
            event = asyncio.Event()
            polled = self._register_claim(channels, event)
            try:
                try:
                    jobs = await queries.claim(self._pool, worker_id, max_jobs, queues, job_types)
                except DatabaseUnavailable as exc:
                    await ride_out(event, deadline, exc)
                    continue
                self.doorbell.settle()  # deregistrations of a wake-up wait for its claim
                idle.claimed(len(jobs))
                if jobs or self.closing or loop.time() >= deadline:
                    return jobs
                await idle.wait(event, deadline=deadline, polled=polled)
                if self.closing or gone():
                    return []
            finally:
                self._unregister_claim(channels, event)

    def _register_claim(self, channels: Iterable[str], event: asyncio.Event) -> bool:
        """Park ``event`` on each channel; True when some channel cannot be LISTENed."""
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
            waiters.add(event)
        return polled

    def _unregister_claim(self, channels: Iterable[str], event: asyncio.Event) -> None:
        for channel in channels:
            waiters = self._channels.get(channel)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._channels[channel]  # stays LISTENed; only the set goes

    # -- job --------------------------------------------------------------------------

    async def wait_for_job(self, job_id: int, wait_seconds: float) -> Job:
        """The job once terminal, or as it stands when the wait ends (or at shutdown)."""
        deadline = asyncio.get_running_loop().time() + min(wait_seconds, self._max_wait)
        return await self._jobs.wait(self._pool, job_id, deadline, stop=lambda: self.closing)

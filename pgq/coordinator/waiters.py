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
coordinator's own: the channel registry, the request's deadline, the cap on parked
requests, a client that left, shutdown (every parked request answers at once, with what
it has), and riding out a database blip.

Channels: a queue's channel is LISTENed while some request waits on it, and stays LISTENed
when the last one leaves (the next long poll of a busy queue need not LISTEN again), until
a new queue needs its place: at ``MAX_CHANNELS`` LISTENed channels, the channel idle the
longest is UNLISTENed to make room. Only when every one of them has a request parked on it
is a new queue polled (every second) instead of LISTENed. So long polls on junk queue names
cost their own requests a poll, never later queues their wake-ups.

Parked requests are capped (``PGQ_MAX_WAITERS``): past the cap a new long poll is refused
with 503 and ``Retry-After``. A parked request whose client disconnects is cancelled at
once (the server cancels the handler: ``serve.start_site``); a claim in flight then
still completes and its jobs are released, so none stays running for a client that left.

Every claim, long poll or not, goes through ``claims.ClaimBatcher``: claims made at the
same moment share one transaction and one ``pgq.claim_many`` per (queues, types).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

import asyncpg

from .. import queries
from ..doorbell import Doorbell
from ..errors import DatabaseUnavailable, PgqError
from ..jobs import Job
from ..listener import Listener
from ..logs import log_event
from ..waiting import IdleWait, JobWaits, ride_out, wake
from .claims import ClaimBatcher

log = logging.getLogger("pgq.coordinator.waiters")

#: the error a job given back for a client that left carries (``pgq.release``'s reason)
_CLIENT_LEFT = {
    "message": "released: the client went away before the answer",
    "kind": "released",
}

#: At most this many queue channels are LISTENed (see the module doc).
MAX_CHANNELS = 1000
#: How soon a refused long poll may try again.
RETRY_AFTER_SECONDS = 1


class TooManyWaiters(PgqError):
    """Too many requests are parked in long polls on this coordinator; try again shortly."""

    http_status = 503
    code = "too_many_waiters"


class Waiters:
    """Claim and job waiters of one coordinator process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        listener: Listener,
        max_wait_seconds: float,
        max_waiters: int = 10_000,
        *,
        claim_flushes: int = 1,
    ) -> None:
        self._pool = pool
        self._listener = listener
        self._max_wait = max_wait_seconds
        self._max_waiters = max_waiters
        self._parked = 0
        self._channels: dict[str, set[asyncio.Event]] = {}
        #: LISTENed queue channels (values unused) without a waiter, longest idle first
        self._idle: dict[str, None] = {}
        self._subscribed: set[str] = set()
        self._jobs = JobWaits(listener)
        self.closing = False
        self.doorbell = Doorbell(pool, listener)
        self._releases: set[asyncio.Future[None]] = set()
        #: every claim goes through it (a transaction shared with concurrent claims)
        self.claims = ClaimBatcher(pool, self._release_unreceived, max_flushes=claim_flushes)
        # JobWaits wakes its own waiters on a reconnect
        self._listener.on_connect(self._wake_claimers)

    @property
    def waiting(self) -> int:
        """How many requests are parked in a long poll right now."""
        return self._parked

    @property
    def channels(self) -> int:
        """How many queue channels are LISTENed for long polls."""
        return len(self._subscribed)

    @contextlib.contextmanager
    def _parking(self) -> Iterator[None]:
        if self._parked >= self._max_waiters:
            raise TooManyWaiters(
                f"{self._parked} requests are waiting in long polls, the limit of this "
                f"coordinator (PGQ_MAX_WAITERS); try again in {RETRY_AFTER_SECONDS}s"
            )
        self._parked += 1
        try:
            yield
        finally:
            self._parked -= 1

    def close(self) -> None:
        """Shutdown: every parked request answers now, with what it has."""
        self.closing = True
        self.doorbell.disarm_all()
        self.doorbell.settle()
        self.wake_all()

    async def finish_claims(self, timeout: float = 5.0) -> None:
        """Shutdown, before the pool closes: wait for the claims in flight (bounded)."""
        await self.claims.close(timeout)

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
            return await self._claim_once(worker_id, max_jobs, queues, job_types)
        claim_args = (worker_id, max_jobs, queues, job_types)
        with self._parking():
            return await self._claim_waiting(claim_args, wait_seconds, gone)

    async def _claim_waiting(
        self,
        claim_args: tuple[str, int, Sequence[str], Sequence[str] | None],
        wait_seconds: float,
        gone: Callable[[], bool],
    ) -> list[Job]:
        queues, job_types = claim_args[2], claim_args[3]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_seconds, self._max_wait)
        channels = [f"pgq_{q}" for q in queues]
        idle = IdleWait(self._pool, self._listener, self.doorbell, queues, job_types)
        while True:
            if gone():
                return []
            event = asyncio.Event()
            polled = self._register_claim(channels, event)
            try:
                try:
                    jobs = await self._claim_once(*claim_args)
                except DatabaseUnavailable as exc:
                    await ride_out(event, deadline, exc)
                    continue
                self.doorbell.settle()  # deregistrations of a wake-up wait for its claim
                idle.claimed(len(jobs))
                if jobs or self.closing or loop.time() >= deadline:
                    return jobs
                await idle.wait(event, deadline=deadline, polled=polled)
                if self.closing:
                    return []
            finally:
                self._unregister_claim(channels, event)

    async def _claim_once(
        self, worker_id: str, max_jobs: int, queues: Sequence[str], job_types: Sequence[str] | None
    ) -> list[Job]:
        """One claim, in one transaction with the claims made at the same moment
        (``ClaimBatcher``), that a cancelled request (its client left) does not cut in half:
        cancelled before its batch was sent, nothing was claimed; once sent, the claim
        completes, and the jobs nobody will receive are released at once."""
        return await self.claims.claim(worker_id, max_jobs, queues, job_types)

    @property
    def orphaned_claims(self) -> int:
        """Claims still running (or releasing) for clients that left."""
        return self.claims.abandoned + len(self._releases)

    def _release_unreceived(self, jobs: list[Job]) -> None:
        task = asyncio.ensure_future(self.give_back(jobs))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def give_back(self, jobs: Sequence[Job]) -> None:
        """Release jobs claimed for a client that left before the answer (their lease tokens
        would reach nobody): each goes back to queued now with its attempt given back, as
        ``pgq.release`` does; one that is already gone elsewhere is skipped."""
        for job in jobs:
            await self._release(job)

    async def _release(self, job: Job) -> None:
        try:
            await queries.release(
                self._pool,
                job.id,
                job.worker_id or "",
                _CLIENT_LEFT,
                attempt=job.attempt,
                lease_token=job.lease_token,
            )
        except PgqError as exc:  # e.g. the database went away too: the lease runs out
            log_event(
                log,
                "job.release_failed",
                f"cannot release job {job.id} claimed for a client that left: {exc}",
                level=logging.WARNING,
                job_id=job.id,
            )

    def _register_claim(self, channels: Iterable[str], event: asyncio.Event) -> bool:
        """Park ``event`` on each channel; True when some channel cannot be LISTENed."""
        polled = False
        for channel in channels:
            waiters = self._channels.get(channel)
            if waiters is None:
                if channel not in self._subscribed and not self._make_room():
                    polled = True
                    continue
                waiters = self._channels[channel] = set()
                self._idle.pop(channel, None)
                if channel not in self._subscribed:
                    self._subscribed.add(channel)
                    self._listener.subscribe(channel, self._on_queue)
            waiters.add(event)
        return polled

    def _make_room(self) -> bool:
        """Whether one more channel may be LISTENed, UNLISTENing the longest idle if need be."""
        if len(self._subscribed) < MAX_CHANNELS:
            return True
        if not self._idle:
            return False
        channel = next(iter(self._idle))
        del self._idle[channel]
        self._subscribed.discard(channel)
        self._listener.unsubscribe(channel, self._on_queue, unlisten=True)
        self.doorbell.unwatch([channel.removeprefix("pgq_")])
        return True

    def _unregister_claim(self, channels: Iterable[str], event: asyncio.Event) -> None:
        for channel in channels:
            waiters = self._channels.get(channel)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._channels[channel]  # stays LISTENed until its room is needed
                    self._idle[channel] = None

    # -- job --------------------------------------------------------------------------

    async def wait_for_job(self, job_id: int, wait_seconds: float) -> Job:
        """The job once terminal, or as it stands when the wait ends (or at shutdown)."""
        deadline = asyncio.get_running_loop().time() + min(wait_seconds, self._max_wait)
        with self._parking():
            return await self._jobs.wait(self._pool, job_id, deadline, stop=lambda: self.closing)

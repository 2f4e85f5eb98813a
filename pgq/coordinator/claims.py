"""``ClaimBatcher``: concurrent ``POST /jobs/claim`` requests share one transaction.

A claim's cost is mostly per call, not per job (planning and walking ``jobs_claim_idx``,
the commit's WAL flush): many HTTP workers claiming one job each paid it once per job, so
a claim + complete pair cost several times a ``POST /jobs`` (which ``EnqueueBatcher``
already folds). Here the requests that arrive while a flush is in flight (``Batcher``)
are claimed together: one ``pgq.claim_many`` per (queues, types) in one transaction, each
request's jobs held by its own ``worker_id`` with their own lease tokens, as its own
``pgq.claim`` would have left them. A lone request is claimed exactly as on its own.

Each request gets its own answer: a batch the *database refused* (a server error, so its
transaction rolled back and nothing was claimed) is retried request by request, so a bad
request fails alone; a batch that lost its connection is not retried (its commit may or
may not have happened, as for a single claim: the leases run out) and each of its
requests gets the 503.

A caller that leaves (its HTTP client disconnected, the handler cancelled) before its batch
was sent is dropped from it and claims nothing; one that leaves while its batch is in the
database, or after the answer came but before it took it, gets its jobs released at once
through ``release`` (nobody would receive their lease tokens).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import asyncpg

from .. import queries
from ..batching import Batcher
from ..errors import DatabaseUnavailable, PgqError, translating
from ..jobs import Job
from ..logs import log_event

log = logging.getLogger("pgq.coordinator.claims")

#: pgq.claim_many's limit on the jobs of one call (the sum of its max_jobs)
MAX_JOBS_PER_CALL = 10_000


@dataclasses.dataclass(slots=True, eq=False)
class ClaimRequest:
    """One caller's claim, as it waits for its batch."""

    worker_id: str
    max_jobs: int
    queues: tuple[str, ...]
    job_types: tuple[str, ...] | None
    #: its batch went to the database (a caller leaving later cannot take it back)
    sent: bool = False
    #: its caller left: release what it gets
    abandoned: bool = False


class ClaimBatcher:
    """``queries.claim`` for concurrent callers, folded into ``pgq.claim_many`` calls
    (module doc). ``release(jobs)`` is called with the jobs of a caller that left."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        release: Callable[[list[Job]], None],
        *,
        max_batch: int = 256,
        max_flushes: int = 1,
    ) -> None:
        self._pool = pool
        self._release = release
        self._batcher: Batcher[ClaimRequest, list[Job]] = Batcher(
            self._flush,
            max_batch=max_batch,
            max_flushes=max_flushes,
            name="pgq-claim-flush",  # keep_cancelled=False: a caller gone before it left
        )
        #: requests whose caller left while their batch was in the database
        self._abandoned: set[ClaimRequest] = set()

    @property
    def batches(self) -> int:
        """Round trips made through the queue."""
        return self._batcher.batches

    @property
    def sent(self) -> int:
        """Claims sent so far, alone or in batches."""
        return self._batcher.items

    @property
    def pending(self) -> int:
        """Claims waiting for a flush (not counting those in flight)."""
        return self._batcher.pending

    @property
    def abandoned(self) -> int:
        """Claims in the database for callers that already left."""
        return len(self._abandoned)

    async def claim(
        self,
        worker_id: str,
        max_jobs: int,
        queues: Sequence[str],
        job_types: Sequence[str] | None,
    ) -> list[Job]:
        """``queries.claim(pool, ...)``, sharing a transaction with concurrent calls."""
        request = ClaimRequest(
            worker_id, max_jobs, tuple(queues), None if job_types is None else tuple(job_types)
        )
        future = self._batcher.submit(request)
        try:
            # shielded: a caller that leaves must not cut a shared flush in half
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                # not sent yet: cancelling drops it from its batch; sent: its flush
                # releases what it claims
                request.abandoned = True
                if request.sent:
                    self._abandoned.add(request)
                future.cancel()
            elif not future.cancelled() and future.exception() is None and future.result():
                self._release(future.result())  # answered, but nobody took the answer
            raise

    async def close(self, timeout: float = 5.0) -> None:
        await self._batcher.close(timeout)

    async def _flush(self, batch: list[ClaimRequest]) -> list[list[Job] | BaseException]:
        for request in batch:  # before the first await: the batch is the database's now
            request.sent = True
        outcomes: list[list[Job] | BaseException]
        if len(batch) == 1:
            outcomes = [await self._one(batch[0])]
        else:
            try:
                outcomes = list(await self._together(batch))
            except DatabaseUnavailable as exc:
                outcomes = [DatabaseUnavailable(exc.message) for _ in batch]
            except (PgqError, asyncpg.PostgresError) as exc:
                # The server refused the transaction, so it rolled back and nothing was
                # claimed: claim for each on its own, each gets its own answer.
                log_event(
                    log,
                    "claim.batch_refused",
                    f"batch of {len(batch)} claims refused ({exc}); retrying them one by one",
                )
                outcomes = list(await asyncio.gather(*(self._one(r) for r in batch)))
        # Synchronously with the answers being set (no await in between): a caller either
        # takes its jobs or has said it left, and then they are released here.
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.abandoned:
                self._abandoned.discard(request)
                if isinstance(outcome, list) and outcome:
                    self._release(outcome)
        return outcomes

    async def _one(self, request: ClaimRequest) -> list[Job] | BaseException:
        try:
            return await queries.claim(
                self._pool, request.worker_id, request.max_jobs, request.queues, request.job_types
            )
        except Exception as exc:
            return exc

    async def _together(self, batch: list[ClaimRequest]) -> list[list[Job]]:
        """Every request's jobs, claimed in one transaction: one ``pgq.claim_many`` per
        (queues, types) and per ``MAX_JOBS_PER_CALL`` jobs asked for."""
        groups: dict[tuple[tuple[str, ...], tuple[str, ...] | None], list[ClaimRequest]] = {}
        for request in batch:
            groups.setdefault((request.queues, request.job_types), []).append(request)
        got: dict[int, list[Job]] = {}
        with translating():
            async with self._pool.acquire() as conn, conn.transaction():
                for (queues, job_types), members in groups.items():
                    for chunk in _chunks(members):
                        jobs = await queries.claim_many(
                            conn,
                            [r.worker_id for r in chunk],
                            [r.max_jobs for r in chunk],
                            queues,
                            job_types,
                        )
                        got.update(_deal(chunk, jobs))
        return [got[id(request)] for request in batch]


def _chunks(requests: list[ClaimRequest]) -> Iterator[list[ClaimRequest]]:
    """``requests`` in runs asking for at most ``MAX_JOBS_PER_CALL`` jobs together."""
    chunk: list[ClaimRequest] = []
    asked = 0
    for request in requests:
        if chunk and asked + request.max_jobs > MAX_JOBS_PER_CALL:
            yield chunk
            chunk, asked = [], 0
        chunk.append(request)
        asked += request.max_jobs
    if chunk:
        yield chunk


def _deal(requests: list[ClaimRequest], jobs: list[Job]) -> dict[int, list[Job]]:
    """Each request's share of one ``pgq.claim_many`` answer (by ``id(request)``).

    The function dealt the jobs out in claim order, request by request, so a worker's jobs
    come back in the order of its requests: each takes the next ones of its worker, up to
    its ``max_jobs``."""
    by_worker: dict[str | None, deque[Job]] = {}
    for job in jobs:
        by_worker.setdefault(job.worker_id, deque()).append(job)
    shares: dict[int, list[Job]] = {}
    for request in requests:
        mine = by_worker.get(request.worker_id, deque())
        shares[id(request)] = [mine.popleft() for _ in range(min(request.max_jobs, len(mine)))]
    return shares

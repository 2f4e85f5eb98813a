"""Commit coalescing for ``POST /jobs``: concurrent requests share one transaction.

One job per transaction costs a round trip, a statement, a commit (a WAL flush) and a
NOTIFY each, and at a few hundred requests a second the database spends most of its time
on those rather than on the rows. So requests that arrive while an enqueue is in flight
wait for it, then go together as one ``pgq.enqueue_many`` call: one round trip, one
commit, one NOTIFY per queue (group commit, as databases do with their own log).

Modes of ``EnqueueBatcher``:
  idle   fewer than ``max_flushes`` flushes in flight: a request starts one at once (on
         the next turn of the event loop, so requests read in the same turn join it). A
         lone request is enqueued exactly as before (``pgq.enqueue``), with no added wait.
  busy   ``max_flushes`` flushes in flight: requests queue; a flush that ends takes the
         queue (up to ``max_batch`` jobs) as its next batch.

Every request is validated before it gets here, and a job is answered only after the
transaction holding it committed. A batch the *database refused* (a server error: the
transaction rolled back, nothing was enqueued) is retried job by job, so each request
gets its own answer: an odd job fails alone. A batch that lost its connection is not
retried (its commit may or may not have happened, exactly as for a single request): each
of its requests gets the 503.

Jobs with an ``idempotency_key`` or ``depends_on`` bypass the queue and are enqueued one
per transaction: the 201-or-200 answer of a keyed job, and a dependent's locking of its
parents, are ``pgq.enqueue``'s, unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from .. import queries
from ..errors import DatabaseUnavailable, PgqError
from ..jobs import Job

log = logging.getLogger("pgq.coordinator.batcher")

#: One pending request: its ``queries.enqueue`` keywords and the future its handler awaits.
_Item = tuple[dict[str, Any], "asyncio.Future[tuple[Job, bool]]"]


class EnqueueBatcher:
    """Folds concurrent ``enqueue`` calls into ``pgq.enqueue_many`` calls (see module doc).

    ``observe(n)`` is called with the size of each batch sent (a metrics histogram).
    """

    def __init__(
        self,
        db: queries.Executor,
        *,
        max_batch: int = 256,
        max_flushes: int = 1,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_flushes < 1:
            raise ValueError("max_batch and max_flushes must be at least 1")
        self._db = db
        self._max_batch = max_batch
        self._max_flushes = max_flushes
        self._observe = observe
        self._pending: list[_Item] = []
        self._flushes: set[asyncio.Task[None]] = set()
        #: Round trips made and jobs sent through the queue (for tests and debugging).
        self.batches = 0
        self.jobs = 0

    @property
    def pending(self) -> int:
        """Requests waiting for a flush (not counting those in flight)."""
        return len(self._pending)

    async def enqueue(self, kwargs: dict[str, Any]) -> tuple[Job, bool]:
        """``queries.enqueue(db, **kwargs)``, sharing a transaction with concurrent calls.

        Returns the job and whether this call created it, once its transaction committed.
        """
        if (
            self._max_batch == 1
            or kwargs.get("idempotency_key") is not None
            or kwargs.get("depends_on") is not None
        ):
            return await queries.enqueue(self._db, **kwargs)
        future: asyncio.Future[tuple[Job, bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((kwargs, future))
        if len(self._flushes) < self._max_flushes:
            task = asyncio.get_running_loop().create_task(self._run(), name="pgq-enqueue-flush")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        # The flush runs as its own task: a request cancelled while waiting (its client
        # left) does not cancel the transaction its job shares with others.
        return await future

    async def close(self, timeout: float = 5.0) -> None:
        """Wait for the flushes in flight (before the pool closes), at most ``timeout``
        seconds: then they are cancelled and their requests answered 503 (a database
        that does not answer must not hold the shutdown forever)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._flushes:
            flushes = list(self._flushes)
            _done, pending = await asyncio.wait(flushes, timeout=max(0.0, deadline - loop.time()))
            if pending:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            # A request cancelled while it queued gets no job, as when it is cancelled
            # before its own pgq.enqueue call.
            batch = [item for item in batch if not item[1].cancelled()]
            if not batch:
                continue
            try:
                await self._flush(batch)
            except BaseException as exc:
                # Only a cancelled flush (the loop going away) gets here: nobody must
                # wait forever for an answer.
                for _, future in batch:
                    if not future.done():
                        future.set_exception(
                            DatabaseUnavailable(f"the enqueue was interrupted: {exc!r}")
                        )
                raise

    async def _flush(self, batch: list[_Item]) -> None:
        self.batches += 1
        self.jobs += len(batch)
        if self._observe is not None:
            self._observe(len(batch))
        if len(batch) == 1:
            await self._one(*batch[0])
            return
        try:
            jobs = await queries.enqueue_many(self._db, [_spec(kw) for kw, _ in batch])
        except DatabaseUnavailable as exc:
            for _, future in batch:
                _fail(future, DatabaseUnavailable(exc.message))
            return
        except (PgqError, asyncpg.PostgresError) as exc:
            # The server refused the statement, so the transaction rolled back and no job
            # of the batch exists: enqueue each on its own, each gets its own answer.
            log.info("batch of %d jobs refused (%s); enqueueing them one by one", len(batch), exc)
            await asyncio.gather(*(self._one(kw, future) for kw, future in batch))
            return
        except Exception as exc:
            for _, future in batch:
                _fail(future, exc)
            return
        if len(jobs) != len(batch):  # pgq.enqueue_many answers one row per job, in order
            problem = RuntimeError(f"pgq.enqueue_many returned {len(jobs)} jobs for {len(batch)}")
            for _, future in batch:
                _fail(future, problem)
            return
        for (_, future), job in zip(batch, jobs, strict=True):
            if not future.done():
                future.set_result((job, True))

    async def _one(self, kwargs: dict[str, Any], future: asyncio.Future[tuple[Job, bool]]) -> None:
        try:
            result = await queries.enqueue(self._db, **kwargs)
        except Exception as exc:
            _fail(future, exc)
        else:
            if not future.done():
                future.set_result(result)


def _spec(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``queries.enqueue`` keywords → one element of ``pgq.enqueue_many``'s JSON array."""
    spec = dict(kwargs)
    spec["type"] = spec.pop("job_type")
    run_at = spec.get("run_at")
    if run_at is not None:
        spec["run_at"] = run_at.isoformat()
    return spec


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

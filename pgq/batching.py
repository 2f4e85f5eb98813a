"""Group commit: concurrent writes share one transaction (one round trip, one commit).

One write per transaction costs a round trip, a statement, a commit (a WAL flush) and a
NOTIFY each; at a few hundred a second the database spends most of its time on those
rather than on the rows. So writes that arrive while one is in flight wait for it, then
go together as one call (``pgq.enqueue_many``, ``pgq.complete_many``): the way databases
group commits to their own log. Users: the coordinator's ``POST /jobs``
(``EnqueueBatcher``) and ``POST /jobs/{id}/complete`` (``CompleteBatcher``), and the
runner's completions (``pgq.complete_many``).

``Batcher`` modes:
  idle   fewer than ``max_flushes`` flushes in flight: ``submit`` starts one (it runs on
         the next turn of the event loop, so items submitted in the same turn join it).
         A lone item is sent at once, with no added wait.
  busy   ``max_flushes`` flushes in flight: items queue; a flush that ends its batch takes
         the queue (up to ``max_batch`` items) as its next batch.

A flush removes itself from the in-flight set synchronously, in the same step that finds
the queue empty, never in a done-callback: a callback runs a loop turn later, and an item
submitted in between (e.g. by the very caller the flush just answered) would find the
flush "still in flight", start none, and wait until some other item came along.

Each flush runs as its own task, so a caller cancelled while waiting (an HTTP client that
left, a runner's hard stop) cannot interrupt a transaction its item shares with others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg

from . import queries
from .aio import stop_tasks
from .errors import DatabaseUnavailable, PgqError
from .jobs import Job
from .logs import log_event
from .queries.transitions import Completion

log = logging.getLogger("pgq.batching")

T = TypeVar("T")
R = TypeVar("R")

#: Writes one batch; returns one outcome per item, in order: the item's result, or an
#: exception instance that its submitter gets raised. Raising fails the whole batch.
FlushFn = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class Batcher(Generic[T, R]):
    """Folds concurrent ``submit(item)`` calls into calls of ``flush(batch)`` (module doc).

    ``observe(n)`` is called with the size of each batch sent (a metrics histogram).
    ``keep_cancelled``: an item whose future was cancelled before its batch left is still
    written (a completion must land although its waiter gave up); otherwise it is dropped
    (a request whose client left gets no job).
    """

    def __init__(
        self,
        flush: FlushFn[T, R],
        *,
        max_batch: int,
        max_flushes: int = 1,
        keep_cancelled: bool = False,
        observe: Callable[[int], None] | None = None,
        name: str = "pgq-batch-flush",
    ) -> None:
        if max_batch < 1 or max_flushes < 1:
            raise ValueError("max_batch and max_flushes must be at least 1")
        self._flush_fn = flush
        self._max_batch = max_batch
        self._max_flushes = max_flushes
        self._keep_cancelled = keep_cancelled
        self._observe = observe
        self._name = name
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        #: Batches sent and items sent in them (for tests, health and debugging).
        self.batches = 0
        self.items = 0

    @property
    def pending(self) -> int:
        """Items waiting for a flush (not counting those in flight)."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._flushes)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future resolves once the batch holding it was written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._flushes) < self._max_flushes:
            task = loop.create_task(self._run(), name=self._name)
            self._flushes.add(task)
            # Backstop only: a task cancelled before its first step never runs _run's
            # finally. The normal removal is synchronous (module doc).
            task.add_done_callback(self._flushes.discard)
        return future

    async def close(self, timeout: float = 5.0) -> None:
        """Wait for the flushes in flight (before the pool closes), at most ``timeout``
        seconds: then they are cancelled and their items fail with ``DatabaseUnavailable``
        (a database that does not answer must not hold a shutdown forever), as do items
        still queued behind a flush that would not stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._flushes:
            flushes = list(self._flushes)
            _done, pending = await asyncio.wait(flushes, timeout=max(0.0, deadline - loop.time()))
            if pending:
                # Bounded too: a flush that swallows its cancellation is cancelled again;
                # one that still runs is left behind (logged), and close returns.
                await stop_tasks(pending, timeout)
                if not all(task.done() for task in pending):
                    break
        stranded, self._pending = self._pending, []
        problem = DatabaseUnavailable("the batcher closed before the write was sent")
        for _, future in stranded:
            _fail(future, problem)

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                if not self._keep_cancelled:
                    batch = [entry for entry in batch if not entry[1].cancelled()]
                    if not batch:
                        continue
                try:
                    await self._send(batch)
                except BaseException as exc:
                    # Only a cancelled flush (close() or the loop going away) gets here:
                    # nobody must wait forever for an answer.
                    problem = DatabaseUnavailable(f"the write was interrupted: {exc!r}")
                    for _, future in batch:
                        _fail(future, problem)
                    raise
        finally:
            # Synchronously, in the step that found the queue empty (see the module doc).
            current = asyncio.current_task()
            if current is not None:
                self._flushes.discard(current)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        if self._observe is not None:
            self._observe(len(batch))
        try:
            outcomes = await self._flush_fn([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                _fail(future, exc)
            return
        if len(outcomes) != len(batch):
            problem = RuntimeError(f"a flush answered {len(outcomes)} outcomes for {len(batch)}")
            for _, future in batch:
                _fail(future, problem)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                _fail(future, outcome)
            elif not future.done():
                future.set_result(outcome)


def _log_refused(verb: str, what: str, exc: BaseException) -> None:
    """Log ``<verb>.batch_refused``: the database refused a batch, sent item by item now."""
    log_event(
        log, f"{verb}.batch_refused", f"batch of {what} refused ({exc}); retrying them one by one"
    )


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


# --------------------------------------------------------------------------------------
# POST /jobs
# --------------------------------------------------------------------------------------


class EnqueueBatcher:
    """``queries.enqueue`` for concurrent callers, folded into ``pgq.enqueue_many`` calls.

    Every request is validated before it gets here, and a job is answered only after the
    transaction holding it committed. A lone request is enqueued exactly as on its own
    (``pgq.enqueue``). A batch the *database refused* (a server error: the transaction
    rolled back, nothing was enqueued) is retried job by job, so each request gets its own
    answer: an odd job fails alone. A batch that lost its connection is not retried (its
    commit may or may not have happened, exactly as for a single request): each of its
    requests gets the 503.

    Jobs with an ``idempotency_key`` or ``depends_on`` bypass the queue and are enqueued
    one per transaction: the 201-or-200 answer of a keyed job, and a dependent's locking
    of its parents, are ``pgq.enqueue``'s, unchanged. ``max_batch=1`` turns batching off.
    """

    def __init__(
        self,
        db: queries.Executor,
        *,
        max_batch: int = 256,
        max_flushes: int = 1,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._batcher: Batcher[dict[str, Any], tuple[Job, bool]] = Batcher(
            self._flush,
            max_batch=max_batch,
            max_flushes=max_flushes,
            observe=observe,
            name="pgq-enqueue-flush",
        )

    @property
    def pending(self) -> int:
        """Requests waiting for a flush (not counting those in flight)."""
        return self._batcher.pending

    @property
    def batches(self) -> int:
        """Round trips made through the queue."""
        return self._batcher.batches

    @property
    def jobs(self) -> int:
        """Jobs sent through the queue."""
        return self._batcher.items

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
        return await self._batcher.submit(kwargs)

    async def close(self, timeout: float = 5.0) -> None:
        await self._batcher.close(timeout)

    async def _flush(self, batch: list[dict[str, Any]]) -> list[tuple[Job, bool] | BaseException]:
        if len(batch) == 1:
            return [await self._one(batch[0])]
        try:
            jobs = await queries.enqueue_many(self._db, [_spec(kw) for kw in batch])
        except DatabaseUnavailable as exc:
            return [DatabaseUnavailable(exc.message) for _ in batch]
        except (PgqError, asyncpg.PostgresError) as exc:
            # The server refused the statement, so the transaction rolled back and no job
            # of the batch exists: enqueue each on its own, each gets its own answer.
            _log_refused("enqueue", f"{len(batch)} jobs", exc)
            return list(await asyncio.gather(*(self._one(kw) for kw in batch)))
        return [(job, True) for job in jobs]

    async def _one(self, kwargs: dict[str, Any]) -> tuple[Job, bool] | BaseException:
        try:
            return await queries.enqueue(self._db, **kwargs)
        except Exception as exc:
            return exc


# --------------------------------------------------------------------------------------
# POST /jobs/{id}/complete
# --------------------------------------------------------------------------------------


class CompleteBatcher:
    """``queries.complete`` for concurrent callers, folded into one ``pgq.complete_each``
    call (each job fenced by its own worker): many HTTP workers completing jobs at once
    pay one call and one commit, not one each (each commit also takes the NOTIFY lock for its
    ``pgq_events`` notifications, so single-job commits queued up behind each other).

    A job is answered only after the transaction holding its completion committed. A lone
    request is completed exactly as on its own (``pgq.complete``). A completion the batch
    could not make (the job is not running, has another holder, attempt or lease token),
    a second completion of the same job in one batch, and every request of a batch the
    database refused are retried alone through ``pgq.complete``, so each gets the answer
    (PQ404, PQ409) it would have had on its own. A batch that lost its connection is not
    retried: each of its requests gets the 503.
    """

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 256, max_flushes: int = 1) -> None:
        self._pool = pool
        self._batcher: Batcher[Completion, Job] = Batcher(
            self._flush,
            max_batch=max_batch,
            max_flushes=max_flushes,
            keep_cancelled=True,  # a client that left still had its job completed
            name="pgq-complete-flush",
        )

    @property
    def batches(self) -> int:
        """Round trips made through the queue."""
        return self._batcher.batches

    async def complete(self, item: Completion) -> Job:
        """``queries.complete(pool, *item)`` (job_id, worker_id, result, attempt,
        lease_token), sharing a transaction with concurrent calls."""
        return await self._batcher.submit(item)

    async def close(self, timeout: float = 5.0) -> None:
        await self._batcher.close(timeout)

    async def _flush(self, batch: list[Completion]) -> list[Job | BaseException]:
        if len(batch) == 1:
            return [await self._one(batch[0])]
        first: dict[int, Completion] = {}
        for item in batch:
            first.setdefault(item[0], item)
        try:
            done = await queries.complete_grouped(self._pool, list(first.values()))
        except DatabaseUnavailable as exc:
            return [DatabaseUnavailable(exc.message) for _ in batch]
        except (PgqError, asyncpg.PostgresError) as exc:
            _log_refused("complete", f"{len(batch)} completions", exc)
            done = {}
        outcomes: list[Job | BaseException | None] = [
            done.pop(item[0], None) if first.get(item[0]) is item else None for item in batch
        ]
        alone = [i for i, outcome in enumerate(outcomes) if outcome is None]
        answers = await asyncio.gather(*(self._one(batch[i]) for i in alone))
        for i, outcome in zip(alone, answers, strict=True):
            outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    async def _one(self, item: Completion) -> Job | BaseException:
        try:
            return await queries.complete(self._pool, *item)
        except Exception as exc:
            return exc


def _spec(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``queries.enqueue`` keywords → one element of ``pgq.enqueue_many``'s JSON array."""
    spec = dict(kwargs)
    spec["type"] = spec.pop("job_type")
    run_at = spec.get("run_at")
    if run_at is not None:
        spec["run_at"] = run_at.isoformat()
    return spec

"""The lease monitor: rescues jobs whose runner stopped heartbeating.

Modes of its one loop:
  sleeping   until the earliest lease expiry it knows of (``pgq.next_due``), but never
             longer than ``recheck`` seconds (default 5): a job claimed meanwhile with a
             shorter timeout may expire first, and this bounds how late we notice.
  expiring   the earliest lease has run out: ``pgq.expire_leases()`` in a transaction that
             also reports the jobs it expired, each logged as ``job.lease_expired``.
  degraded   the database does not answer: log once, retry backing off up to ``recheck``
             seconds.

Once per ``recheck`` it also deletes one batch of finished jobs past their retention
(``pgq.prune_expired``, logged as ``retention.pruned`` and counted in
``pgq_jobs_pruned_total``), and batch after batch while they come back full; runners do
the same on their safety re-check, so retention needs no leader and no cron.

Every runner also calls ``pgq.expire_leases()`` on its safety re-check, so the monitor is
not a single point of rescue; concurrent callers skip each other's rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from .. import queries
from ..aio import stop_task
from ..backoff import Backoff, recheck_delay
from ..errors import DatabaseUnavailable
from ..logs import log_event
from ..retention import PRUNE_BATCH, prune_batch

log = logging.getLogger("pgq.coordinator.monitor")

#: Sleep past the expiry by this much: pgq.expire_leases takes leases strictly before now().
_SLACK = 0.01
#: While the database does not answer, look again after this long, doubling up to recheck.
RETRY_BASE = 0.5


class LeaseMonitor:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        recheck: float = 5.0,
        on_pruned: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self._pool = pool
        self._recheck = recheck
        self._on_pruned = on_pruned
        self._prune_at = 0.0  # loop time of the next retention batch
        self._task: asyncio.Task[None] | None = None
        #: Jobs expired by this monitor since it started.
        self.expired = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="pgq-lease-monitor"
            )

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def _run(self) -> None:
        degraded = False
        backoff = Backoff(min(RETRY_BASE, self._recheck), self._recheck)
        while True:
            try:
                delay = await self._step()
                if degraded:
                    log_event(
                        log, "lease_monitor.recovered", "lease monitor reaches the database again"
                    )
                    degraded = False
                backoff.reset()
            except (DatabaseUnavailable, asyncpg.PostgresError, OSError) as exc:
                if not degraded:
                    log_event(
                        log,
                        "lease_monitor.degraded",
                        f"lease monitor cannot reach the database: {exc}",
                        level=logging.WARNING,
                    )
                    degraded = True
                delay = backoff.next()
            except Exception:
                log_event(
                    log,
                    "lease_monitor.error",
                    "lease monitor step failed",
                    level=logging.ERROR,
                    exc_info=True,
                )
                delay = backoff.next()
            await asyncio.sleep(delay)

    async def _prune(self) -> bool:
        """Retention: one batch of pgq.prune_expired per recheck interval, or straight
        away again while batches come back full (a backlog of expired jobs)."""
        now = asyncio.get_running_loop().time()
        if now < self._prune_at:
            return False
        pruned = await prune_batch(self._pool, log)
        full = sum(pruned.values()) >= PRUNE_BATCH
        self._prune_at = now if full else now + recheck_delay(self._recheck)
        if pruned and self._on_pruned is not None:
            self._on_pruned(pruned)
        return full

    async def _step(self) -> float:
        """Expire what is due; return how long to sleep before the next look."""
        await queries.forget_dead_listeners(self._pool)  # the doorbell's janitor
        if await self._prune():
            return 0  # more expired jobs than one batch: the next batch straight away
        _run_at, lease, db_now = await queries.next_due(self._pool)
        if lease is None:
            return self._recheck
        due_in = (lease - db_now).total_seconds()
        if due_in > 0:
            return min(self._recheck, due_in + _SLACK)
        jobs = await queries.expire_leases_detailed(self._pool)
        for job in jobs:
            self.expired += 1
            log_event(
                log,
                "job.lease_expired",
                f"job {job.id} lease expired; now {job.status}",
                level=logging.WARNING,
                job_id=job.id,
                job_type=job.type,
                queue=job.queue,
                worker_id=job.worker_id,
                attempt=job.attempt,
                status=job.status,
            )
        # More may have come due meanwhile (or rows were skipped as locked): look again soon.
        return 0 if jobs else min(self._recheck, 0.5)

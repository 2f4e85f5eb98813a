"""Lease sweeping for the database source: a crashed runner's jobs come back with no
coordinator running.

``LeaseSweeper`` runs one housekeeping task that sleeps until the earliest lease expiry
it knows of (the runner learns them from ``pgq.next_due`` whenever it goes idle) or the
jittered safety re-check, then calls ``pgq.expire_leases()`` and re-reads the due times.
The safety re-check also forgets dead listeners, deletes finished jobs past their
retention (``pgq.prune_expired``, in batches), and wakes the claim loop, covering
notifications lost in a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import datetime

import asyncpg

from .. import queries
from ..aio import stop_tasks
from ..backoff import recheck_delay
from ..errors import DatabaseUnavailable
from ..logs import log_event
from ..retention import PRUNE_BATCH, prune_batch
from .source import RunnerHooks

__all__ = ["LeaseSweeper"]

log = logging.getLogger("pgq.runner")

#: Retention: at most this many batches of pgq.prune_expired per safety re-check.
PRUNE_BATCHES = 10


class LeaseSweeper:
    """Expires leases as they run out (see the module docstring). ``on_safety`` is called
    after every safety re-check, so the source can look for work once more."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        hooks: RunnerHooks,
        *,
        safety_interval: float,
        on_safety: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._hooks = hooks
        self._safety_interval = safety_interval
        self._on_safety = on_safety
        self._rearm = asyncio.Event()
        self._lease_at: float | None = None  # loop time of the earliest known lease expiry
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._housekeep(), name="pgq-runner-housekeeper")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])

    def rearm(self) -> None:
        """Re-read the due times now (after a reconnect: a lease may have been missed)."""
        self._rearm.set()

    def note_lease(self, next_lease: datetime | None, db_now: datetime) -> None:
        """Remember the earliest lease expiry (on the loop's clock) for the housekeeper."""
        if next_lease is None:
            return
        # +10-60 ms: past the expiry on the database's clock, and jittered so that many
        # runners that know the same lease do not all sweep at the same instant.
        delay = (next_lease - db_now).total_seconds() + random.uniform(0.01, 0.06)
        at = asyncio.get_running_loop().time() + delay
        if self._lease_at is None or at < self._lease_at:
            self._lease_at = at
            self._rearm.set()

    async def _housekeep(self) -> None:
        """Sleep until the earliest known lease expiry or the safety re-check; then sweep
        expired leases (``pgq.expire_leases``) and re-read the due times."""
        loop = asyncio.get_running_loop()
        safety_at = loop.time() + recheck_delay(self._safety_interval)
        while True:
            self._rearm.clear()
            deadline = safety_at if self._lease_at is None else min(safety_at, self._lease_at)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._rearm.wait()
                    continue  # re-armed: a new lease is known, or we reconnected
            now = loop.time()
            safety = now >= safety_at
            if safety:
                safety_at = now + recheck_delay(self._safety_interval)
            try:
                await self._sweep(safety)
            except DatabaseUnavailable as exc:
                log_event(
                    log,
                    "runner.sweep_failed",
                    f"lease sweep failed ({exc}); retrying",
                    level=logging.WARNING,
                )
                self._lease_at = now + 1.0
            except Exception:
                log_event(
                    log, "runner.error", "lease sweep error", level=logging.ERROR, exc_info=True
                )
                self._lease_at = now + 5.0
            if safety:
                self._on_safety()

    async def _prune(self) -> None:
        """Retention: batches of ``pgq.prune_expired`` while they come back full, at most
        ``PRUNE_BATCHES`` per safety re-check (coordinators prune too)."""
        for _ in range(PRUNE_BATCHES):
            pruned = await prune_batch(self._pool, log, worker_id=self._hooks.worker_id)
            if sum(pruned.values()) < PRUNE_BATCH:
                return

    async def _sweep(self, safety: bool) -> None:
        expired = await queries.expire_leases(self._pool)
        if safety:
            await queries.forget_dead_listeners(self._pool)
            await self._prune()
        if expired:
            log_event(
                log,
                "runner.leases_expired",
                f"expired {expired} lease(s) of runners that stopped heartbeating",
                worker_id=self._hooks.worker_id,
            )
        _run_at, next_lease, db_now = await queries.next_due(
            self._pool, self._hooks.queues, self._hooks.job_types
        )
        self._lease_at = None
        self.note_lease(next_lease, db_now)

"""The schedule timer: fire due schedules when the earliest ``next_run_at`` passes.

Every runner (database mode) and every coordinator runs one, so schedules fire while any
pgq process runs and no process is special: ``pgq.fire_schedule_slots`` takes schedules
``FOR UPDATE SKIP LOCKED`` and a unique index allows one job per (schedule, slot), so
processes firing at the same instant create each job once.

Modes of its one loop:
  sleeping   until ``pgq.next_schedule_at()`` (measured on the database's clock, so a
             process whose clock is off still fires on time), or until a ``pgq_schedules``
             notification (a schedule created, replaced or deleted anywhere) or a LISTEN
             reconnect wakes it to read that time again; with no schedule, until then or
             the safety re-check (default a minute), which also covers notifications lost
             while the listener reconnected.
  firing     the time has passed: ``pgq.fire_schedule_slots()``, one ``schedule.fired``
             log line per job created, then read the next time at once.
  degraded   the database does not answer: log once, retry after ``retry`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg

from . import queries
from .aio import stop_task, wait_event
from .backoff import recheck_delay
from .errors import DatabaseUnavailable, PgqError
from .listener import Listener
from .logs import log_event
from .schedules import CHANNEL

log = logging.getLogger("pgq.schedules")

#: Sleep this far past next_run_at: pgq.fire_schedule_slots takes slots at or before now().
_SLACK = 0.005


class ScheduleTimer:
    """Fires due schedules for one process. ``start()`` after the listener exists."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        listener: Listener,
        *,
        safety_interval: float = 60.0,
        retry: float = 5.0,
        worker_id: str | None = None,
    ) -> None:
        self._pool = pool
        self._listener = listener
        self._safety_interval = safety_interval
        self._retry = retry
        self._worker_id = worker_id
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Jobs this process created from schedules since it started.
        self.fired = 0
        #: The earliest unpaused next_run_at, as last read (None: no schedule).
        self.next_run_at: datetime | None = None

    def start(self) -> None:
        if self._task is not None:
            return
        self._listener.subscribe(CHANNEL, self._on_change)
        self._listener.on_connect(self._wake.set)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pgq-schedules")

    async def stop(self) -> None:
        self._listener.unsubscribe(CHANNEL, self._on_change)
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    def wake(self) -> None:
        """Read the next time again now (after a schedule was declared, for instance)."""
        self._wake.set()

    def _on_change(self, _channel: str, _payload: str) -> None:
        self._wake.set()

    async def _run(self) -> None:
        degraded = False
        while True:
            self._wake.clear()
            try:
                delay = await self._step()
                if degraded:
                    log_event(log, "schedules.recovered", "schedule timer reaches the database")
                    degraded = False
            except (DatabaseUnavailable, asyncpg.PostgresError, OSError) as exc:
                if not degraded:
                    log_event(
                        log,
                        "schedules.degraded",
                        f"schedule timer cannot reach the database: {exc}",
                        level=logging.WARNING,
                    )
                    degraded = True
                delay = self._retry
            except PgqError as exc:
                log_event(log, "schedules.error", str(exc), level=logging.ERROR)
                delay = self._retry
            if delay > 0:
                await wait_event(self._wake, delay)

    async def _step(self) -> float:
        """Fire what is due; return how long to sleep before looking again."""
        at, db_now = await queries.next_schedule_at(self._pool)
        self.next_run_at = at
        if at is None:
            return recheck_delay(self._safety_interval)
        due_in = (at - db_now).total_seconds()
        if due_in > 0:
            return min(due_in + _SLACK, self._safety_interval)
        slots = await queries.fire_schedule_slots(self._pool)
        for slot in slots:
            self.fired += 1
            log_event(
                log,
                "schedule.fired",
                f"schedule {slot.schedule}: job {slot.job_id} for {slot.scheduled_for.isoformat()}",
                schedule=slot.schedule,
                scheduled_for=slot.scheduled_for.isoformat(),
                job_id=slot.job_id,
                job_type=slot.job_type,
                queue=slot.queue,
                worker_id=self._worker_id,
            )
        # Another process may hold a due schedule (SKIP LOCKED): look again shortly rather
        # than at once, so two processes do not spin on each other's row.
        return 0 if slots else 0.05

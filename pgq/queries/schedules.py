"""``pgq.schedule``, ``pgq.unschedule``, ``pgq.fire_schedule_slots``,
``pgq.next_schedule_at`` and reads of ``pgq.schedules``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import InvalidArgument, PgqError
from ..schedules import SCHEDULE_OPTIONS, FiredSlot, Schedule, ScheduleNotFound
from .base import Executor, translated


@translated
async def schedule(
    db: Executor,
    name: str,
    cron: str,
    job_type: str,
    args: dict[str, Any] | None = None,
    **options: Any,
) -> Schedule:
    """``pgq.schedule``: create the schedule or replace its definition."""
    unknown = sorted(set(options) - set(SCHEDULE_OPTIONS))
    if unknown:
        raise InvalidArgument(
            f"unknown schedule option(s) {', '.join(unknown)}; known: {', '.join(SCHEDULE_OPTIONS)}"
        )
    names = list(options)
    named = "".join(f", {k} => ${i}" for i, k in enumerate(names, start=5))
    row = await db.fetchrow(
        f"SELECT * FROM pgq.schedule($1, $2, $3, $4{named})",
        name,
        cron,
        job_type,
        {} if args is None else args,
        *(options[k] for k in names),
    )
    return Schedule.from_record(row)


async def unschedule(db: Executor, name: str) -> Schedule:
    """``pgq.unschedule``: delete it; ``ScheduleNotFound`` when there is none."""
    try:
        return await _unschedule(db, name)
    except PgqError as exc:
        if exc.code == "job_not_found":  # PQ404, whose default class speaks of jobs
            raise ScheduleNotFound(exc.message) from exc
        raise


@translated
async def _unschedule(db: Executor, name: str) -> Schedule:
    return Schedule.from_record(await db.fetchrow("SELECT * FROM pgq.unschedule($1)", name))


@translated
async def get_schedule(db: Executor, name: str) -> Schedule | None:
    """The schedule of that name, or None."""
    row = await db.fetchrow("SELECT * FROM pgq.schedules WHERE name = $1", name)
    return Schedule.from_record(row) if row is not None else None


@translated
async def list_schedules(db: Executor) -> list[Schedule]:
    """Every schedule, by name."""
    rows = await db.fetch("SELECT * FROM pgq.schedules ORDER BY name")
    return [Schedule.from_record(r) for r in rows]


@translated
async def fire_schedule_slots(db: Executor) -> list[FiredSlot]:
    """``pgq.fire_schedule_slots``: create the jobs of every due slot; one row per job."""
    rows = await db.fetch("SELECT * FROM pgq.fire_schedule_slots()")
    return [FiredSlot(*r) for r in rows]


@translated
async def next_schedule_at(db: Executor) -> tuple[datetime | None, datetime]:
    """``pgq.next_schedule_at()`` and the database's clock, to sleep by the database's time."""
    row = await db.fetchrow("SELECT pgq.next_schedule_at() AS at, clock_timestamp() AS now")
    return row["at"], row["now"]

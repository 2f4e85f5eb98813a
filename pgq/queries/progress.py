"""Progress reports, bulk replay and bulk cancel (sql/0007_progress.sql), and the cheap
reads behind the dashboard's charts."""

from __future__ import annotations

from typing import Any

from ..jobs import Job
from .base import Executor, translated


@translated
async def progress(
    db: Executor,
    job_id: int,
    worker_id: str,
    report: dict[str, Any],
    attempt: int | None = None,
    lease_token: str | None = None,
) -> Job:
    """``pgq.progress``: store ``report`` on a running job this worker holds (≤ 8 KiB) and
    extend its lease."""
    row = await db.fetchrow(
        "SELECT * FROM pgq.progress($1, $2, $3, $4, $5)",
        job_id,
        worker_id,
        report,
        attempt,
        lease_token,
    )
    return Job.from_record(row)


@translated
async def retry_where(
    db: Executor,
    statuses: list[str] | None = None,
    queue: str | None = None,
    job_type: str | None = None,
    spread_seconds: float = 0.0,
) -> int:
    """``pgq.retry_where``: replay every dead (or ``statuses``) job matching the filters,
    due times spread over ``spread_seconds``; returns how many."""
    return await db.fetchval(
        "SELECT pgq.retry_where(coalesce($1::text[], '{dead}'), $2, $3,"
        " $4::float8 * interval '1 second')",
        statuses,
        queue,
        job_type,
        spread_seconds,
    )


@translated
async def cancel_where(
    db: Executor,
    statuses: list[str] | None = None,
    queue: str | None = None,
    job_type: str | None = None,
) -> int:
    """``pgq.cancel_where``: cancel every queued and waiting (or ``statuses``) job matching
    the filters; returns how many."""
    return await db.fetchval(
        "SELECT pgq.cancel_where(coalesce($1::text[], '{queued,waiting}'), $2, $3)",
        statuses,
        queue,
        job_type,
    )


@translated
async def finished_per_minute(db: Executor, minutes: int = 60) -> list[dict[str, Any]]:
    """How many jobs finished per minute and final status over the last ``minutes`` (the
    dashboard's throughput and failure charts). Reads jobs_finished_idx (status,
    finished_at) for the window only, one range per status, so it costs the same whatever
    the history."""
    rows = await db.fetch(
        """
        SELECT date_trunc('minute', finished_at) AS minute, status, count(*) AS count
          FROM pgq.jobs
         WHERE status IN ('succeeded', 'dead', 'cancelled')
           AND finished_at > date_trunc('minute', now()) - ($1 - 1) * interval '1 minute'
         GROUP BY 1, 2
         ORDER BY 1, 2
        """,
        minutes,
    )
    return [dict(r) for r in rows]


@translated
async def watch_events(db: Executor, listener_pid: int) -> None:
    """``pgq.watch_events``: the LISTEN session ``listener_pid`` follows every status
    change, so claims are announced on ``pgq_events`` too."""
    await db.fetchval("SELECT pgq.watch_events($1)", listener_pid)


@translated
async def unwatch_events(db: Executor, listener_pid: int) -> None:
    """``pgq.unwatch_events``: the session ``listener_pid`` no longer follows every change."""
    await db.fetchval("SELECT pgq.unwatch_events($1)", listener_pid)

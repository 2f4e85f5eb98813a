"""Flow control: ``pgq.pause``, ``pgq.resume``, ``pgq.set_limits`` and the queue overview
that ``GET /queues``, ``pgq queues`` and the metrics read.

A queue is returned as a dict: ``queue, paused, concurrency, key_concurrency, rate, burst``
(None = no limit), ``counts`` (status → number of jobs, every status present) and
``oldest_queued_at`` (the earliest run_at of its queued jobs, or None).
"""

from __future__ import annotations

from typing import Any

from ..jobs import STATUSES
from .base import Executor, translated

_SETTINGS = "queue, paused, concurrency, key_concurrency, rate::float8 AS rate, burst"

# Counts come from pgq.stats() (one row per queue and status); settings from pgq.queues.
_OVERVIEW = """
    WITH s AS (SELECT * FROM pgq.stats()),
         names AS (SELECT queue FROM s UNION SELECT queue FROM pgq.queues)
    SELECT n.queue,
           coalesce(q.paused, false) AS paused, q.concurrency, q.key_concurrency,
           q.rate::float8 AS rate, q.burst,
           coalesce((SELECT jsonb_object_agg(s.status, s.count) FROM s WHERE s.queue = n.queue),
                    '{{}}') AS counts,
           (SELECT s.oldest_run_at FROM s WHERE s.queue = n.queue AND s.status = 'queued')
               AS oldest_queued_at
      FROM names AS n
      LEFT JOIN pgq.queues AS q ON q.queue = n.queue
     {where}
     ORDER BY n.queue
"""


def _queue(row: Any) -> dict[str, Any]:
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(row["counts"] or {})
    return {
        "queue": row["queue"],
        "paused": row["paused"],
        "concurrency": row["concurrency"],
        "key_concurrency": row["key_concurrency"],
        "rate": row["rate"],
        "burst": row["burst"],
        "counts": counts,
        "oldest_queued_at": row["oldest_queued_at"],
    }


@translated
async def list_queues(db: Executor) -> list[dict[str, Any]]:
    """Every queue with jobs or settings, in name order."""
    rows = await db.fetch(_OVERVIEW.format(where=""))
    return [_queue(r) for r in rows]


@translated
async def get_queue(db: Executor, queue: str) -> dict[str, Any]:
    """One queue; an unknown (valid) name is unpaused, unlimited and empty."""
    rows = await db.fetch(_OVERVIEW.format(where="WHERE n.queue = $1"), queue)
    if rows:
        return _queue(rows[0])
    return _queue(
        {
            "queue": queue,
            "paused": False,
            "concurrency": None,
            "key_concurrency": None,
            "rate": None,
            "burst": None,
            "counts": {},
            "oldest_queued_at": None,
        }
    )


@translated
async def pause(db: Executor, queue: str) -> dict[str, Any]:
    """``pgq.pause``: the queue's settings after the call."""
    return dict(await db.fetchrow(f"SELECT {_SETTINGS} FROM pgq.pause($1)", queue))


@translated
async def resume(db: Executor, queue: str) -> dict[str, Any]:
    """``pgq.resume``: the queue's settings after the call."""
    return dict(await db.fetchrow(f"SELECT {_SETTINGS} FROM pgq.resume($1)", queue))


@translated
async def set_limits(
    db: Executor,
    queue: str,
    *,
    concurrency: int | None = None,
    key_concurrency: int | None = None,
    rate: float | None = None,
    burst: int | None = None,
) -> dict[str, Any]:
    """``pgq.set_limits``: all four at once (None = no limit); the settings after the call."""
    row = await db.fetchrow(
        f"SELECT {_SETTINGS} FROM pgq.set_limits($1, $2, $3, $4::float8::numeric, $5)",
        queue,
        concurrency,
        key_concurrency,
        rate,
        burst,
    )
    return dict(row)


@translated
async def held_back(db: Executor) -> list[dict[str, Any]]:
    """Per queue with settings, for the metrics: its settings and ``held``, the due queued
    jobs that a pause or a full concurrency limit keeps from starting now."""
    rows = await db.fetch(
        """
        SELECT q.queue, q.paused, q.concurrency, q.key_concurrency, q.rate::float8 AS rate,
               q.burst,
               CASE WHEN q.paused
                      OR q.concurrency <= (SELECT count(*) FROM pgq.jobs AS r
                                            WHERE r.status = 'running' AND r.holds_slot
                                              AND r.queue = q.queue)
                    THEN (SELECT count(*) FROM pgq.jobs AS j
                           WHERE j.status = 'queued' AND j.queue = q.queue
                             AND j.run_at <= now())
                    ELSE 0 END AS held
          FROM pgq.queues AS q
         ORDER BY q.queue
        """
    )
    return [dict(r) for r in rows]

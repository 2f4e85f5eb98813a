"""Reads: jobs by id or filter, per-queue statistics, what is due next, what finished (for
metrics), and a ping."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..jobs import STATUSES, Job
from .base import JOB_COLUMNS, Executor, translated_read


@translated_read
async def get_job(db: Executor, job_id: int) -> Job | None:
    """One job by id, or None."""
    row = await db.fetchrow(f"SELECT {JOB_COLUMNS} FROM pgq.jobs WHERE id = $1", job_id)
    return Job.from_record(row) if row is not None else None


@translated_read
async def get_jobs(db: Executor, job_ids: Sequence[int]) -> list[Job]:
    """The jobs with these ids that exist, in id order."""
    rows = await db.fetch(
        f"SELECT {JOB_COLUMNS} FROM pgq.jobs WHERE id = ANY($1::bigint[]) ORDER BY id",
        list(job_ids),
    )
    return [Job.from_record(r) for r in rows]


#: The JSON a listed job brings along, in bytes (as text): what ``max_bytes`` counts.
_PAYLOAD_BYTES = (
    "octet_length(p.args::text) + coalesce(octet_length(p.result::text), 0)"
    " + coalesce(octet_length(p.errors::text), 0) + coalesce(octet_length(p.progress::text), 0)"
)


@translated_read
async def list_jobs(
    db: Executor,
    *,
    status: str | None = None,
    queue: str | None = None,
    job_type: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs in id order, optionally filtered, starting after the id ``after``.

    Each page is a range scan that stops after ``limit`` rows, at any table size: no
    filter walks the primary key; a filter reads one index per status wanted,
    (status, id), (queue, status, id) or (type, status, id) (sql/0007_progress.sql; running
    jobs, always few, through jobs_lease_idx), and merges them. The SQL text depends on
    which filters are given, so a prepared statement's generic plan never has to cover
    "maybe filtered" (it would scan)."""
    page, params = _page(status, queue, job_type, after, limit)
    rows = await db.fetch(page, *params)
    return [Job.from_record(r) for r in rows]


@translated_read
async def list_page(
    db: Executor,
    *,
    status: str | None = None,
    queue: str | None = None,
    job_type: str | None = None,
    after: int | None = None,
    limit: int = 100,
    max_bytes: int,
) -> tuple[list[Job], bool]:
    """As ``list_jobs``, stopping early once the jobs' payloads (arguments, result, errors,
    progress, as JSON text) add up to ``max_bytes``; and whether more jobs follow.

    The database counts and cuts, so rows past the budget never reach this process. The
    first job always comes, whatever its size, so a caller paging on always moves on."""
    page, params = _page(status, queue, job_type, after, limit + 1)
    params.append(max_bytes)
    rows = await db.fetch(
        f"SELECT * FROM (SELECT p.*, count(*) OVER () AS page_rows, sum({_PAYLOAD_BYTES}) "
        "OVER (ORDER BY p.id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS bytes_before "
        f"FROM ({page}) AS p) AS s WHERE coalesce(bytes_before, 0) < ${len(params)} "
        f"ORDER BY id LIMIT {int(limit)}",
        *params,
    )
    more = bool(rows) and rows[0]["page_rows"] > len(rows)
    return [Job.from_record(r) for r in rows], more


#: The order of a status's branch when it is not plain ``j.id``. Running jobs have no
#: index in id order (every claim would pay for an entry); jobs_lease_idx holds just them,
#: so the branch reads those and sorts them. ``+ 0`` keeps the planner off the primary key,
#: which it would walk in id order expecting running jobs spread evenly over the table
#: (sql/0007_progress.sql has the indexes of the other statuses).
_BRANCH_ORDER = {"running": "j.id + 0"}


def _page(
    status: str | None, queue: str | None, job_type: str | None, after: int | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL of one page of ``list_jobs`` and its parameters ($1 after, $2 limit)."""
    params: list[Any] = [after if after is not None else 0, limit]
    if status is None and queue is None and job_type is None:
        return f"SELECT {JOB_COLUMNS} FROM pgq.jobs WHERE id > $1 ORDER BY id LIMIT $2", params
    conditions = ["j.id > $1"]
    for column, value in (("queue", queue), ("type", job_type)):
        if value is not None:
            conditions.append(f"j.{column} = {_literal(value)}")
    where = " AND ".join(conditions)
    # One branch per status, each with the status as a literal: the planner then knows
    # from its statistics which statuses are rare (a parameter would make it guess, and
    # it walked the whole primary key looking for running jobs that were not there).
    # The queue and type are literals too: as parameters, a statement run a few times
    # gets PostgreSQL's generic plan, made for an average queue, and for a rare one that
    # plan walked the primary key over 150,000 succeeded jobs (tests/test_progress_sql.py).
    branches = [
        f"(SELECT {JOB_COLUMNS} FROM pgq.jobs AS j WHERE j.status = '{s}' AND {where}"
        f" ORDER BY {_BRANCH_ORDER.get(s, 'j.id')} LIMIT $2)"
        for s in STATUSES
        if status is None or s == status
    ]
    return f"SELECT * FROM ({' UNION ALL '.join(branches)}) AS j ORDER BY j.id LIMIT $2", params


def _literal(value: str) -> str:
    """``value`` as an SQL string literal (``E''`` form, so the meaning of a backslash
    does not depend on standard_conforming_strings)."""
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@translated_read
async def running_jobs_of(db: Executor, worker_id: str) -> list[Job]:
    """The running jobs ``worker_id`` holds, in id order (a runner looks for jobs it claimed
    but never heard back about, when a claim's reply was lost with its connection)."""
    rows = await db.fetch(
        f"SELECT {JOB_COLUMNS} FROM pgq.jobs WHERE status = 'running' AND worker_id = $1"
        " ORDER BY id",
        worker_id,
    )
    return [Job.from_record(r) for r in rows]


@translated_read
async def next_due(
    db: Executor, queues: Sequence[str] | None = None, job_types: Sequence[str] | None = None
) -> tuple[datetime | None, datetime | None, datetime]:
    """``pgq.next_due``: (earliest run_at of claimable queued jobs, earliest lease expiry,
    the database's clock now), so a caller can turn both into delays on its own clock."""
    row = await db.fetchrow(
        "SELECT d.*, clock_timestamp() AS db_now FROM pgq.next_due($1, $2) AS d",
        list(queues) if queues is not None else None,
        list(job_types) if job_types is not None else None,
    )
    return row["next_run_at"], row["next_lease_expiry"], row["db_now"]


@translated_read
async def stats(db: Executor) -> list[dict[str, Any]]:
    """``pgq.stats``: per queue and status, the count and the oldest run_at."""
    return [dict(r) for r in await db.fetch("SELECT * FROM pgq.stats()")]


@translated_read
async def queue_depths(db: Executor) -> list[dict[str, Any]]:
    """For metrics: ``pgq.stats()`` plus the age of the oldest due queued job per queue."""
    rows = await db.fetch(
        """
        SELECT s.queue, s.status, s.count,
               CASE WHEN s.status = 'queued' AND s.oldest_run_at <= now()
                    THEN extract(epoch FROM now() - s.oldest_run_at) END AS oldest_due_age_seconds
          FROM pgq.stats() AS s
        """
    )
    return [dict(r) for r in rows]


@translated_read
async def finished_since(
    db: Executor, since: datetime | None, lag_seconds: float = 2.0
) -> dict[str, Any]:
    """For metrics: what finished in the window (``since``, ``until``], ``until`` being the
    database clock minus ``lag_seconds`` (a finishing transaction stamps ``finished_at``
    with its start time, so a lag lets slow commits land inside the next window, not
    before it).

    Returns ``until``; ``finished``: one row per job that finished in the window (``type``,
    ``queue``, ``status``, ``run_seconds`` = finished_at - claimed_at and
    ``start_latency_seconds`` = claimed_at - run_at, both NULL when it never ran); and
    ``retried``: per type, how many failed attempts in the window were scheduled for a
    retry (error entries stamped in the window, except the one that made a job dead).
    With ``since`` None only ``until`` is read. Cost: jobs_finished_idx (status,
    finished_at) for the window, one range per finished status, plus the queued and
    running jobs (their partial indexes): one branch per source, since a single OR over
    them was planned as a scan of the whole table. A retry sets run_at = its failure
    time + the backoff, so the queued branch reads jobs_retrying_idx (queued jobs that
    have run before) from ``since`` on: without it even the generic plan of this prepared
    statement read every queued row (a whole-table scan at 1M rows, 300-600 ms a scrape).
    """
    until = await db.fetchval(
        "SELECT clock_timestamp() - $1::float8 * interval '1 second'", lag_seconds
    )
    if since is None:
        return {"until": until, "finished": [], "retried": []}
    finished = await db.fetch(
        """
        SELECT type, queue, status,
               extract(epoch FROM finished_at - claimed_at)::float8 AS run_seconds,
               extract(epoch FROM claimed_at - run_at)::float8 AS start_latency_seconds
          FROM pgq.jobs
         WHERE status IN ('succeeded', 'dead', 'cancelled')
           AND finished_at > $1 AND finished_at <= $2
        """,
        since,
        until,
    )
    retried = await db.fetch(
        """
        SELECT j.type, count(*) AS count
          FROM (SELECT type, status, finished_at, errors FROM pgq.jobs
                 WHERE status = 'queued' AND attempts > 0 AND run_at > $1
                   AND errors <> '[]'::jsonb
                UNION ALL
                SELECT type, status, finished_at, errors FROM pgq.jobs
                 WHERE status = 'running' AND errors <> '[]'::jsonb
                UNION ALL
                SELECT type, status, finished_at, errors FROM pgq.jobs
                 WHERE status IN ('succeeded', 'dead', 'cancelled') AND finished_at > $1
                   AND errors <> '[]'::jsonb) AS j
         CROSS JOIN LATERAL jsonb_array_elements(j.errors) AS e(entry)
         WHERE (e.entry->>'at')::timestamptz > $1
           AND (e.entry->>'at')::timestamptz <= $2
           AND NOT (j.status = 'dead' AND (e.entry->>'at')::timestamptz = j.finished_at)
         GROUP BY j.type
        """,
        since,
        until,
    )
    return {
        "until": until,
        "finished": [dict(r) for r in finished],
        "retried": [dict(r) for r in retried],
    }


@translated_read
async def notification_queue_usage(db: Executor) -> float:
    """``pg_notification_queue_usage()``: how full Postgres's NOTIFY queue is (0..1)."""
    return await db.fetchval("SELECT pg_notification_queue_usage()")


@translated_read
async def ping(db: Executor) -> None:
    """Round trip to the database; raises DatabaseUnavailable when it does not answer."""
    await db.fetchval("SELECT 1")

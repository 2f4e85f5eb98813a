"""Creating jobs: ``pgq.enqueue``, and ``pgq.enqueue_bulk``/``pgq.enqueue_many`` for many."""

from __future__ import annotations

import contextlib
import gc
import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson

from ..errors import InvalidArgument
from ..jobs import Job
from .base import Executor, has_codecs, translated


@translated
async def enqueue(
    db: Executor,
    job_type: str,
    args: dict[str, Any] | None = None,
    *,
    queue: str = "default",
    priority: int = 0,
    run_at: datetime | None = None,
    delay_seconds: float | None = None,
    max_attempts: int = 10,
    timeout_seconds: int = 300,
    idempotency_key: str | None = None,
    depends_on: Sequence[int] | None = None,
    concurrency_key: str | None = None,
    trace_context: dict[str, str] | None = None,
) -> tuple[Job, bool]:
    """``pgq.enqueue``. Returns the job and whether this call created it (False when an
    existing job was returned for its idempotency key). ``delay_seconds`` is counted on
    the database's clock; give it or ``run_at``, not both (as in ``pgq.enqueue_many``).

    "Created" is exact: ``pgq.enqueue`` always runs its INSERT, which draws the next id
    from the table's identity sequence even when ON CONFLICT then keeps the existing row,
    so the job is this call's own exactly when its id is the id this session drew last.
    (Comparing ``created_at`` with ``now()`` could not tell two transactions that started
    in the same microsecond apart, nor two enqueues in one transaction.)"""
    if run_at is not None and delay_seconds is not None:
        raise InvalidArgument("cannot enqueue: give run_at or delay_seconds, not both")
    if delay_seconds is not None and not delay_seconds >= 0:
        raise InvalidArgument(f"cannot enqueue: delay_seconds {delay_seconds} must be >= 0")
    try:
        # As text, so any connection takes it, with pgq's codecs or without (the caller's
        # own asyncpg.connect() inside its transaction).
        args_json = orjson.dumps({} if args is None else args).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidArgument(f"cannot enqueue: args must be JSON-serializable ({exc})") from None
    row = await db.fetchrow(
        """
        SELECT j.*, j.id = currval('pgq.jobs_id_seq') AS created_now
          FROM pgq.enqueue($1, $2::text::jsonb, $3, $4,
                           coalesce($5, now() + make_interval(secs => coalesce($6::float8, 0))),
                           $7, $8, $9, $10, $11, trace_context => $12::text::jsonb) AS j
        """,
        job_type,
        args_json,
        queue,
        priority,
        run_at,
        delay_seconds,
        max_attempts,
        timeout_seconds,
        idempotency_key,
        list(depends_on) if depends_on is not None else None,
        concurrency_key,
        None if trace_context is None else orjson.dumps(trace_context).decode(),
    )
    return _job(row), row["created_now"]


#: The jsonb columns of pgq.jobs: text on a connection without pgq's codecs.
_JSON_COLUMNS = ("args", "result", "last_error", "errors", "progress", "trace_context")


def _job(row: Any) -> Job:
    """A Job from a row read on any connection: with pgq's codecs the jsonb columns are
    Python values already; without them (``args``, always an object, arrives as a string)
    they are JSON text, decoded here."""
    if isinstance(row["args"], str):
        row = dict(row)
        for column in _JSON_COLUMNS:
            if row.get(column) is not None:
                row[column] = orjson.loads(row[column])
    return Job.from_record(row)


@translated
async def enqueue_many(
    db: Executor, jobs: Sequence[dict[str, Any]], *, keep_args: bool = True
) -> list[Job]:
    """``pgq.enqueue_bulk`` or ``pgq.enqueue_many``: every job in one round trip, all or
    nothing, in input order.

    Each dict takes the keys of ``pgq.enqueue``'s keyword options plus ``type`` and ``args``.
    Jobs without ``idempotency_key`` and ``depends_on`` (the bulk case) go through
    ``pgq.enqueue_bulk``, which inserts them with one statement and returns only their ids
    (and run_at when it is not the creation time); the Jobs are built from the input as the
    database stores it (the JSON that was sent, decoded) plus those. Otherwise, or when a
    value only the database can convert was given (``"priority": "5"``), the full rows come
    back from ``pgq.enqueue_many``. The SQL functions check everything either way.

    ``keep_args=False``: the caller does not need the arguments back (``POST /jobs/batch``
    answers without them) and passes JSON values only (decoded JSON): the bulk path then
    reads the jobs' fields from ``jobs`` itself instead of decoding a second copy of the
    whole batch, and the Jobs carry empty ``args``.
    """
    try:
        data = orjson.dumps(list(jobs))
    except orjson.JSONEncodeError as exc:
        raise InvalidArgument(f"cannot enqueue: jobs must be JSON-serializable ({exc})") from None
    with _collection_paused():
        fields = _bulk_fields(orjson.loads(data) if keep_args else list(jobs))
    # pgq's own connections take the bytes as they are (binary jsonb, no copy); any other
    # connection (the caller's, inside its transaction) takes text.
    param: Any = orjson.Fragment(data) if has_codecs(db) else data.decode()
    cast = "" if has_codecs(db) else "::text::jsonb"
    if fields is None:
        rows = await db.fetch(f"SELECT * FROM pgq.enqueue_many($1{cast})", param)
        with _collection_paused():
            return [_job(r) for r in rows]
    row = await db.fetchrow(
        f"SELECT ids, run_ats, created_at FROM pgq.enqueue_bulk($1{cast})", param
    )
    created_at = row["created_at"]
    run_ats = row["run_ats"] or itertools.repeat(created_at)
    with _collection_paused():
        return _bulk_jobs(row["ids"], run_ats, created_at, fields, keep_args)


def _bulk_jobs(
    ids: Sequence[int],
    run_ats: Any,
    created_at: datetime,
    fields: list[tuple[str, dict[str, Any], str, int, int, int]],
    keep_args: bool,
) -> list[Job]:
    """The Jobs ``pgq.enqueue_bulk`` created, from its answer and the input's fields."""
    return [
        Job(
            id=job_id,
            type=job_type,
            queue=queue,
            status="queued",
            args=args if keep_args else {},
            priority=priority,
            run_at=run_at,
            attempt=0,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            created_at=created_at,
            updated_at=created_at,
        )
        for job_id, run_at, (job_type, args, queue, priority, max_attempts, timeout_seconds) in zip(
            ids, run_ats, fields, strict=False
        )
    ]


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while one batch's objects are built (decoded
    specs, field tuples, Jobs: none of them cyclic). Each 700 allocations start a young
    collection that walks every object still young, and the survivors they promote start
    full collections of the whole heap: for 20,000 jobs that was 2-3x the building time
    itself (~100 ms of ~150 ms; benchmarks/README.md, "Bulk enqueue"). No await happens
    inside, so no other task allocates meanwhile; a collector the caller paused stays so."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _bulk_fields(specs: Any) -> list[tuple[str, dict[str, Any], str, int, int, int]] | None:
    """Per job (type, args, queue, priority, max_attempts, timeout_seconds) as the database
    will store them, for ``pgq.enqueue_bulk``; None when the jobs must go through
    ``pgq.enqueue_many``: one has an idempotency key, dependencies or a concurrency key,
    or a value of a JSON type the database would convert (a number as a string, a type
    name as a number), which only the stored row shows. Anything the database refuses is
    not looked at here: the call fails before these values are used."""
    if type(specs) is not list:
        return None
    fields = []
    for spec in specs:
        if type(spec) is not dict:
            return None
        get = spec.get
        if (
            get("idempotency_key") is not None
            or get("depends_on") is not None
            or get("concurrency_key") is not None
        ):
            return None
        job_type = get("type")
        queue = get("queue") or "default"
        priority = get("priority") or 0
        max_attempts = get("max_attempts") or 10
        timeout_seconds = get("timeout_seconds") or 300
        if (
            type(job_type) is not str
            or type(queue) is not str
            or type(priority) is not int
            or type(max_attempts) is not int
            or type(timeout_seconds) is not int
        ):
            return None
        fields.append((job_type, get("args") or {}, queue, priority, max_attempts, timeout_seconds))
    return fields

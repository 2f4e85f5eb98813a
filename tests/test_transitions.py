"""Every transition of sql/0002_transitions.sql against a zoo of jobs in every status.

Each test checks the rows that changed and the rows that did not; each refusal is checked
for its SQLSTATE (through pgq.queries: the pgq exception and its ``__cause__``; through raw
SQL: ``exc.sqlstate``). Time is never waited for: leases and run_at are backdated, and
"x seconds from now" is read on the database clock inside the transaction that set it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from pgq import db, queries
from pgq.errors import InvalidArgument, JobNotFound, TransitionNotAllowed

from .zoo import (
    ME,
    OTHER,
    ZOO,
    bulk_insert,
    changed,
    db_delta,
    expect_refusal,
    expect_sqlstate,
    make_zoo,
    rows_read,
    snapshot,
    wait_until_blocked,
)

UNKNOWN = 987_654_321


@pytest.fixture
async def zoo(conn: asyncpg.Connection) -> dict[str, int]:
    return await make_zoo(conn)


def secs(delta: timedelta) -> float:
    return delta.total_seconds()


async def status_of(conn: asyncpg.Connection, job_id: int) -> str:
    return await conn.fetchval("SELECT status FROM pgq.jobs WHERE id = $1", job_id)


async def backdate_run_at(conn: asyncpg.Connection, job_id: int) -> None:
    await conn.execute(
        "UPDATE pgq.jobs SET run_at = now() - interval '1 second' WHERE id = $1", job_id
    )


async def expire_now(conn: asyncpg.Connection, job_id: int) -> None:
    """Backdate a running job's lease past its end and run the rescuer."""
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job_id
    )
    assert await queries.expire_leases(conn) == 1


# -- complete / fail / heartbeat: fenced by worker and attempt ------------------------------

Fenced = Callable[[asyncpg.Connection, int, str, "int | None"], Awaitable[Any]]

FENCED: dict[str, Fenced] = {
    "complete": lambda c, i, w, a=None: queries.complete(c, i, w, {"r": 1}, attempt=a),
    "fail": lambda c, i, w, a=None: queries.fail(c, i, w, "err", attempt=a),
    "heartbeat": lambda c, i, w, a=None: queries.heartbeat(c, i, w, attempt=a),
}
RAW_FENCED = {
    "complete": "SELECT pgq.complete($1, $2)",
    "fail": "SELECT pgq.fail($1, $2, '\"err\"')",
    "heartbeat": "SELECT pgq.heartbeat($1, $2)",
}


@pytest.mark.smoke
@pytest.mark.parametrize("action", FENCED)
async def test_fenced_transition_refuses_every_job_but_the_holders(
    conn: asyncpg.Connection, zoo: dict[str, int], action: str
) -> None:
    before = await snapshot(conn)
    for name in ZOO:
        if name == "running":
            continue
        match = "not held by worker 'worker-me'" if name == "other" else "is not running"
        refused = await expect_refusal(
            FENCED[action](conn, zoo[name], ME, None), TransitionNotAllowed, "PQ409", match
        )
        assert "worker-other" not in str(refused)  # a refusal never names the holder
        await expect_sqlstate(conn, RAW_FENCED[action], zoo[name], ME, sqlstate="PQ409")
    await expect_refusal(
        FENCED[action](conn, UNKNOWN, ME, None), JobNotFound, "PQ404", f"job {UNKNOWN}"
    )
    await expect_sqlstate(conn, RAW_FENCED[action], UNKNOWN, ME, sqlstate="PQ404")
    assert changed(zoo, before, await snapshot(conn)) == set()


async def test_complete_changes_only_the_held_job(
    conn: asyncpg.Connection, zoo: dict[str, int]
) -> None:
    before = await snapshot(conn)
    async with conn.transaction():
        job = await queries.complete(conn, zoo["running"], ME, {"title": "Heat"}, attempt=1)
        assert job.finished_at == await conn.fetchval("SELECT now()")
    assert changed(zoo, before, await snapshot(conn)) == {"running"}
    assert (job.status, job.result, job.attempt, job.worker_id) == (
        "succeeded",
        {"title": "Heat"},
        1,
        ME,
    )
    assert job.lease_expires_at is None
    # the other worker may complete its own job
    other = await queries.complete(conn, zoo["other"], OTHER)
    assert (other.status, other.result) == ("succeeded", None)
    await expect_refusal(
        queries.complete(conn, zoo["running"], ME), TransitionNotAllowed, "PQ409", "succeeded"
    )


async def test_fail_with_attempts_left_requeues_with_backoff(
    conn: asyncpg.Connection, zoo: dict[str, int]
) -> None:
    before = await snapshot(conn)
    async with conn.transaction():
        job = await queries.fail(conn, zoo["running"], ME, {"message": "503", "code": 503})
        assert 4 <= secs(await db_delta(conn, "run_at", job.id)) <= 8
    assert changed(zoo, before, await snapshot(conn)) == {"running"}
    assert (job.status, job.attempt, job.finished_at, job.lease_expires_at) == (
        "queued",
        1,
        None,
        None,
    )
    assert job.error["message"] == "503" and job.error["code"] == 503
    assert job.error["attempt"] == 1
    assert job.errors == [job.error]


async def test_fail_not_retryable_or_out_of_attempts_is_dead(conn: asyncpg.Connection) -> None:
    permanent, _ = await queries.enqueue(conn, "permanent")
    last, _ = await queries.enqueue(conn, "last", max_attempts=1)
    await queries.claim(conn, ME, 2)
    a = await queries.fail(conn, permanent.id, ME, "bad input", retryable=False)
    b = await queries.fail(conn, last.id, ME, "still broken")
    for job, message in ((a, "bad input"), (b, "still broken")):
        assert job.status == "dead"
        assert job.finished_at is not None and job.lease_expires_at is None
        assert job.error == {"message": message, "attempt": 1, "at": job.error["at"]}


async def test_fail_rejects_a_negative_retry_delay(
    conn: asyncpg.Connection, zoo: dict[str, int]
) -> None:
    before = await snapshot(conn)
    await expect_refusal(
        queries.fail(conn, zoo["running"], ME, "x", retry_delay=-1), InvalidArgument, "PQ400"
    )
    assert changed(zoo, before, await snapshot(conn)) == set()
    async with conn.transaction():
        job = await queries.fail(conn, zoo["running"], ME, "x", retry_delay=90)
        assert secs(await db_delta(conn, "run_at", job.id)) == 90


async def test_heartbeat_renews_the_lease_to_1_25_timeouts(conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "t", timeout_seconds=7)
    async with conn.transaction():
        [claimed] = await queries.claim(conn, ME)
        assert secs(await db_delta(conn, "lease_expires_at", job.id)) == 8.75
        assert claimed.claimed_at == await conn.fetchval("SELECT now()")
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() + interval '1 second' WHERE id = $1", job.id
    )
    before = await snapshot(conn)
    async with conn.transaction():
        beat = await queries.heartbeat(conn, job.id, ME, attempt=1)
        assert secs(await db_delta(conn, "lease_expires_at", job.id)) == 8.75
    assert (beat.status, beat.claimed_at) == ("running", claimed.claimed_at)
    after = await snapshot(conn)
    assert {k for k in after[job.id] if after[job.id][k] != before[job.id][k]} == {
        "lease_expires_at",
        "updated_at",
    }


# -- fencing by attempt -------------------------------------------------------------------


async def test_a_stale_attempt_is_fenced_off_even_when_the_same_worker_reclaimed_it(
    conn: asyncpg.Connection,
) -> None:
    job, _ = await queries.enqueue(conn, "t")
    [first] = await queries.claim(conn, ME)
    assert first.attempt == 1
    await expire_now(conn, job.id)
    # expired but not claimed again: the stale holder finds it not running
    for action in FENCED:
        await expect_refusal(
            FENCED[action](conn, job.id, ME, 1), TransitionNotAllowed, "PQ409", "not running"
        )
    await backdate_run_at(conn, job.id)
    [second] = await queries.claim(conn, ME)
    assert (second.id, second.attempt, second.worker_id) == (job.id, 2, ME)

    before = await snapshot(conn)
    for action in FENCED:
        await expect_refusal(
            FENCED[action](conn, job.id, ME, 1),
            TransitionNotAllowed,
            "PQ409",
            "is on attempt 2, not attempt 1",
        )
        await expect_refusal(FENCED[action](conn, job.id, ME, 3), TransitionNotAllowed, "PQ409")
    assert await snapshot(conn) == before

    await queries.heartbeat(conn, job.id, ME, attempt=2)
    done = await queries.complete(conn, job.id, ME, "ok", attempt=2)
    assert (done.status, done.attempt, [e["kind"] for e in done.errors]) == (
        "succeeded",
        2,
        ["lease_expired"],
    )


async def test_a_holder_whose_job_was_reclaimed_by_another_worker_is_fenced_off(
    conn: asyncpg.Connection,
) -> None:
    job, _ = await queries.enqueue(conn, "t")
    await queries.claim(conn, ME)
    await expire_now(conn, job.id)
    await backdate_run_at(conn, job.id)
    await queries.claim(conn, OTHER)
    before = await snapshot(conn)
    for action in FENCED:
        for attempt in (None, 1, 2):
            await expect_refusal(
                FENCED[action](conn, job.id, ME, attempt),
                TransitionNotAllowed,
                "PQ409",
                f"job {job.id} is not held by worker 'worker-me'",
            )
    assert await snapshot(conn) == before


# -- lease expiry ---------------------------------------------------------------------------


@pytest.mark.smoke
async def test_lease_expiry_boundary(conn: asyncpg.Connection, zoo: dict[str, int]) -> None:
    before = await snapshot(conn)
    assert await queries.expire_leases(conn) == 0
    assert changed(zoo, before, await snapshot(conn)) == set()

    job_id = zoo["other"]
    async with conn.transaction():  # now() is fixed for the whole transaction
        await conn.execute("UPDATE pgq.jobs SET lease_expires_at = now() WHERE id = $1", job_id)
        assert await queries.expire_leases(conn) == 0  # the lease runs until its end
        assert await status_of(conn, job_id) == "running"
        await conn.execute(
            "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 microsecond' WHERE id = $1",
            job_id,
        )
        assert await queries.expire_leases(conn) == 1
        assert 4 <= secs(await db_delta(conn, "run_at", job_id)) <= 8
    assert changed(zoo, before, await snapshot(conn)) == {"other"}
    job = await queries.get_job(conn, job_id)
    assert job is not None
    assert (job.status, job.attempt, job.lease_expires_at, job.finished_at) == (
        "queued",
        1,
        None,
        None,
    )
    assert job.error["kind"] == "lease_expired" and job.error["attempt"] == 1
    assert "worker-other" in job.error["message"]
    assert await queries.expire_leases(conn) == 0


async def test_lease_expiry_of_the_last_attempt_is_dead_and_dooms_dependents(
    conn: asyncpg.Connection,
) -> None:
    parent, _ = await queries.enqueue(conn, "parent", max_attempts=1)
    child, _ = await queries.enqueue(conn, "child", depends_on=[parent.id])
    await queries.claim(conn, ME)
    await expire_now(conn, parent.id)
    p, c = await queries.get_jobs(conn, [parent.id, child.id])
    assert (p.status, p.error["kind"]) == ("dead", "lease_expired")
    assert p.finished_at is not None
    assert (c.status, c.error["kind"]) == ("dead", "dependency")


async def test_concurrent_rescuers_expire_each_lease_once(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await queries.enqueue_many(conn, [{"type": "t"} for _ in range(200)])
    await queries.claim(conn, ME, 200)
    await conn.execute("UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second'")
    conns = [await db.connect(dsn) for _ in range(8)]
    try:
        counts = await asyncio.gather(*(queries.expire_leases(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sum(counts) == 200
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM pgq.jobs"
            " WHERE status = 'queued' AND jsonb_array_length(errors) = 1"
        )
        == 200
    )


# -- backoff --------------------------------------------------------------------------------


def window(n: int) -> tuple[float, float]:
    return min(3600, 4 * 2 ** (n - 1)), min(3600, 8 * 2 ** (n - 1))


async def test_backoff_window_per_attempt(conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "flaky", max_attempts=14)
    for n in range(1, 14):
        [claimed] = await queries.claim(conn, ME)
        assert claimed.attempt == n
        async with conn.transaction():
            failed = await queries.fail(conn, job.id, ME, f"failure {n}", attempt=n)
            delay = secs(await db_delta(conn, "run_at", job.id))
        lo, hi = window(n)
        assert lo <= delay <= hi, (n, delay)
        assert (failed.status, len(failed.errors), failed.error["attempt"]) == ("queued", n, n)
        await backdate_run_at(conn, job.id)
    [claimed] = await queries.claim(conn, ME)
    dead = await queries.fail(conn, job.id, ME, "failure 14", attempt=14)
    assert (dead.status, len(dead.errors)) == ("dead", 14)


async def test_backoff_is_drawn_from_the_whole_window(conn: asyncpg.Connection) -> None:
    lo, hi = await conn.fetchrow(
        "SELECT min(extract(epoch FROM pgq.backoff(1))), max(extract(epoch FROM pgq.backoff(1)))"
        "  FROM generate_series(1, 2000)"
    )
    assert 4 <= lo < 4.5 and 7.5 < hi <= 8
    for n in (2, 5, 9, 10):
        lo, hi = await conn.fetchrow(
            "SELECT min(extract(epoch FROM pgq.backoff($1))),"
            "       max(extract(epoch FROM pgq.backoff($1)))"
            "  FROM generate_series(1, 500)",
            n,
        )
        w = window(n)
        assert w[0] <= lo <= hi <= w[1], (n, lo, hi)
    assert await conn.fetchval(
        "SELECT bool_and(pgq.backoff(n) = interval '1 hour') FROM generate_series(11, 100) AS n"
    )


# -- claim ----------------------------------------------------------------------------------


async def test_claim_takes_only_due_queued_jobs(
    conn: asyncpg.Connection, zoo: dict[str, int]
) -> None:
    before = await snapshot(conn)
    claimed = await queries.claim(conn, "worker-new", 100)
    assert [j.id for j in claimed] == [zoo["queued"]]
    assert (claimed[0].status, claimed[0].attempt, claimed[0].worker_id) == (
        "running",
        1,
        "worker-new",
    )
    assert changed(zoo, before, await snapshot(conn)) == {"queued"}
    assert await queries.claim(conn, "worker-new", 100) == []


async def test_claim_order_priority_then_run_at_then_id(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        spec = [  # (name, priority, seconds before now)
            ("late_low", 5, 30),
            ("tie_b", 0, 10),
            ("tie_a", 0, 20),
            ("urgent", -3, 0),
            ("same_1", 1, 15),
            ("same_2", 1, 15),
        ]
        for name, priority, ago in spec:
            await conn.execute(
                "SELECT pgq.enqueue($1, priority => $2,"
                "                   run_at => now() - make_interval(secs => $3))",
                name,
                priority,
                ago,
            )
    order = []
    while claimed := await queries.claim(conn, ME):
        order.append(claimed[0].type)
    assert order == ["urgent", "tie_a", "tie_b", "same_1", "same_2", "late_low"]


@pytest.mark.parametrize(
    "queues", [["q1", "q2", "q3"], ["q3", "q1", "q2", "q1"], None], ids=["list", "dups", "all"]
)
async def test_claim_order_holds_across_queues(
    conn: asyncpg.Connection, queues: list[str] | None
) -> None:
    specs = [("q1", 0), ("q2", 1), ("q1", 2), ("q3", 3), ("q2", 4), ("q3", -1), ("q1", 5)]
    await queries.enqueue_many(conn, [{"type": "t", "queue": q, "priority": p} for q, p in specs])
    first = await queries.claim(conn, ME, 3, queues)
    assert sorted(j.priority for j in first) == [-1, 0, 1]
    order = []
    while claimed := await queries.claim(conn, ME, 1, queues):
        order.append(claimed[0].priority)
    assert order == [2, 3, 4, 5]


async def test_claim_filters_by_queue_and_type(conn: asyncpg.Connection) -> None:
    await queries.enqueue_many(
        conn,
        [
            {"type": "a", "queue": "q1"},
            {"type": "b", "queue": "q1"},
            {"type": "a", "queue": "q2"},
        ],
    )
    got = await queries.claim(conn, ME, 10, queues=["q2"])
    assert [(j.type, j.queue) for j in got] == [("a", "q2")]
    got = await queries.claim(conn, ME, 10, job_types=["b"])
    assert [(j.type, j.queue) for j in got] == [("b", "q1")]
    got = await queries.claim(conn, ME, 10, queues=["q1"], job_types=["a", "b"])
    assert [(j.type, j.queue) for j in got] == [("a", "q1")]


async def test_a_job_whose_run_at_is_in_the_future_is_not_claimable(
    conn: asyncpg.Connection,
) -> None:
    job, _ = await queries.enqueue(conn, "later", delay_seconds=60)
    assert await queries.claim(conn, ME, 10) == []
    async with conn.transaction():
        await conn.execute(
            "UPDATE pgq.jobs SET run_at = now() + interval '1 microsecond' WHERE id = $1", job.id
        )
        assert await queries.claim(conn, ME, 10) == []
        await conn.execute("UPDATE pgq.jobs SET run_at = now() WHERE id = $1", job.id)
        assert [j.id for j in await queries.claim(conn, ME, 10)] == [job.id]


async def test_claim_refuses_bad_arguments(conn: asyncpg.Connection) -> None:
    await expect_refusal(queries.claim(conn, "", 1), InvalidArgument, "PQ400", "worker_id")
    await expect_refusal(queries.claim(conn, ME, 0), InvalidArgument, "PQ400", "max_jobs 0")
    await expect_sqlstate(conn, "SELECT pgq.claim($1, 10001)", ME, sqlstate="PQ400")


# -- cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "effect"),
    [
        ("waiting", {"waiting"}),
        ("queued", {"queued"}),
        ("future", {"future", "waiting"}),  # its waiting dependent dies with it
        ("running", {"running"}),
        ("other", {"other"}),
    ],
)
async def test_cancel(
    conn: asyncpg.Connection, zoo: dict[str, int], name: str, effect: set[str]
) -> None:
    before = await snapshot(conn)
    job = await queries.cancel(conn, zoo[name])
    assert (job.status, job.lease_expires_at) == ("cancelled", None)
    assert job.finished_at is not None
    assert changed(zoo, before, await snapshot(conn)) == effect
    if name == "future":
        waiting = await queries.get_job(conn, zoo["waiting"])
        assert waiting is not None
        assert (waiting.status, waiting.error["kind"]) == ("dead", "dependency")
        assert str(zoo["future"]) in waiting.error["message"]


async def test_cancel_refuses_finished_jobs(conn: asyncpg.Connection, zoo: dict[str, int]) -> None:
    before = await snapshot(conn)
    for name in ("succeeded", "dead", "cancelled"):
        await expect_refusal(
            queries.cancel(conn, zoo[name]), TransitionNotAllowed, "PQ409", f"(status {name})"
        )
        await expect_sqlstate(conn, "SELECT pgq.cancel($1)", zoo[name], sqlstate="PQ409")
    await expect_refusal(queries.cancel(conn, UNKNOWN), JobNotFound, "PQ404")
    await expect_sqlstate(conn, "SELECT pgq.cancel($1)", UNKNOWN, sqlstate="PQ404")
    assert changed(zoo, before, await snapshot(conn)) == set()


async def test_a_cancelled_running_job_fences_its_runner(
    conn: asyncpg.Connection, zoo: dict[str, int]
) -> None:
    await queries.cancel(conn, zoo["running"])
    for action in FENCED:
        await expect_refusal(
            FENCED[action](conn, zoo["running"], ME, 1), TransitionNotAllowed, "PQ409", "cancelled"
        )


# -- retry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dead", "cancelled"])
async def test_retry_requeues_dead_and_cancelled_jobs(
    conn: asyncpg.Connection, zoo: dict[str, int], name: str
) -> None:
    old = await queries.get_job(conn, zoo[name])
    assert old is not None
    before = await snapshot(conn)
    async with conn.transaction():
        job = await queries.retry(conn, zoo[name], extra_attempts=3)
        assert job.run_at == await conn.fetchval("SELECT now()")
    assert changed(zoo, before, await snapshot(conn)) == {name}
    assert (job.status, job.attempt, job.max_attempts, job.finished_at) == ("queued", 1, 4, None)
    assert (job.errors, job.error) == (old.errors, old.error)
    [claimed] = await queries.claim(conn, ME, 10, job_types=[name])
    assert claimed.attempt == 2


async def test_retry_refuses_other_statuses(conn: asyncpg.Connection, zoo: dict[str, int]) -> None:
    before = await snapshot(conn)
    for name in ("waiting", "queued", "future", "running", "other", "succeeded"):
        await expect_refusal(
            queries.retry(conn, zoo[name]), TransitionNotAllowed, "PQ409", "not dead or cancelled"
        )
        await expect_sqlstate(conn, "SELECT pgq.retry($1)", zoo[name], sqlstate="PQ409")
    await expect_refusal(queries.retry(conn, UNKNOWN), JobNotFound, "PQ404")
    for extra in (0, 1001):
        await expect_refusal(
            queries.retry(conn, zoo["dead"], extra), InvalidArgument, "PQ400", "extra_attempts"
        )
    assert changed(zoo, before, await snapshot(conn)) == set()


async def test_retry_of_a_job_with_a_dead_parent_is_refused_until_the_parent_is_retried(
    conn: asyncpg.Connection,
) -> None:
    parent, _ = await queries.enqueue(conn, "parent")
    child, _ = await queries.enqueue(conn, "child", depends_on=[parent.id])
    await queries.cancel(conn, parent.id)
    await expect_refusal(
        queries.retry(conn, child.id), TransitionNotAllowed, "PQ409", "depends on job(s)"
    )
    await queries.retry(conn, parent.id)
    again = await queries.retry(conn, child.id)
    assert again.status == "waiting"  # the parent is queued again, not yet succeeded
    [p] = await queries.claim(conn, ME)
    await queries.complete(conn, p.id, ME)
    assert await status_of(conn, child.id) == "queued"


# -- enqueue and idempotency ----------------------------------------------------------------


async def test_enqueue_defaults_and_validation(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        job, created = await queries.enqueue(conn, "TMDB_SYNC", {"movieId": 1})
        assert job.run_at == await conn.fetchval("SELECT now()")
    assert created
    assert (job.queue, job.status, job.priority, job.attempt, job.max_attempts) == (
        "default",
        "queued",
        0,
        0,
        10,
    )
    assert (job.timeout_seconds, job.errors, job.error, job.depends_on) == (300, [], None, None)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"job_type": "has space"}, "job type"),
        ({"job_type": "x" * 129}, "job type"),
        ({"job_type": "t", "queue": "Default"}, "queue"),
        ({"job_type": "t", "queue": "a" * 49}, "queue"),
        ({"job_type": "t", "args": [1]}, "args must be a JSON object"),
        ({"job_type": "t", "priority": 40000}, "priority"),
        ({"job_type": "t", "max_attempts": 0}, "max_attempts"),
        ({"job_type": "t", "timeout_seconds": 0}, "timeout_seconds"),
        ({"job_type": "t", "idempotency_key": ""}, "idempotency_key"),
        ({"job_type": "t", "depends_on": [UNKNOWN]}, f"do not exist: {UNKNOWN}"),
    ]
    for kwargs, match in bad:
        await expect_refusal(queries.enqueue(conn, **kwargs), InvalidArgument, "PQ400", match)
    await expect_sqlstate(
        conn, "SELECT pgq.enqueue('t', depends_on => ARRAY[1, NULL]::bigint[])", sqlstate="PQ400"
    )
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 1


@pytest.mark.parametrize("delay", [0, 0.25, 1.7, 90, 86_400.5])
async def test_enqueue_delay_is_counted_on_the_database_clock(
    conn: asyncpg.Connection, delay: float
) -> None:
    async with conn.transaction():
        job, _ = await queries.enqueue(conn, "t", delay_seconds=delay)
        assert secs(await db_delta(conn, "run_at", job.id)) == delay


async def test_same_idempotency_key_returns_the_same_job(conn: asyncpg.Connection) -> None:
    first, created1 = await queries.enqueue(conn, "t", {"v": 1}, idempotency_key="k")
    second, created2 = await queries.enqueue(conn, "t", {"v": 2}, idempotency_key="k")
    assert (created1, created2) == (True, False)
    assert second == first
    [claimed] = await queries.claim(conn, ME)
    await queries.complete(conn, claimed.id, ME)
    third, created3 = await queries.enqueue(conn, "t", {"v": 3}, idempotency_key="k")
    assert (third.id, third.status, third.args, created3) == (
        first.id,
        "succeeded",
        {"v": 1},
        False,
    )
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 1


@pytest.mark.parametrize("first_commits", [True, False])
async def test_concurrent_enqueues_with_one_key_make_one_job(
    dsn: str, conn: asyncpg.Connection, first_commits: bool
) -> None:
    """A holds an uncommitted job with key K; eight connections enqueue K and block on it.
    When A commits they all get A's job; when A rolls back, exactly one of them inserts."""
    others = [await db.connect(dsn) for _ in range(8)]
    a = await db.connect(dsn)
    try:
        tx = a.transaction()
        await tx.start()
        job_a, _ = await queries.enqueue(a, "t", {"by": "a"}, idempotency_key="K")
        tasks = [
            asyncio.create_task(queries.enqueue(c, "t", {"by": i}, idempotency_key="K"))
            for i, c in enumerate(others)
        ]
        for c in others:
            await wait_until_blocked(conn, c.get_server_pid())
        await (tx.commit() if first_commits else tx.rollback())
        results = await asyncio.gather(*tasks)
    finally:
        for c in [a, *others]:
            await c.close()
    ids = {job.id for job, _ in results}
    assert len(ids) == 1
    if first_commits:
        assert ids == {job_a.id}
        assert not any(created for _, created in results)
    else:  # exactly one of them inserted, and everybody got its job
        job = results[0][0]
        assert [i for i, (j, _) in enumerate(results) if j.args == {"by": i}] == [job.args["by"]]
    rows = await conn.fetch("SELECT id FROM pgq.jobs")
    assert [r["id"] for r in rows] == list(ids)


async def test_concurrent_enqueues_with_one_key_without_barriers(
    dsn: str, conn: asyncpg.Connection
) -> None:
    conns = [await db.connect(dsn) for _ in range(10)]
    try:
        for _round in range(5):
            key = f"key-{_round}"
            results = await asyncio.gather(
                *(queries.enqueue(c, "t", idempotency_key=key) for c in conns)
            )
            assert len({job.id for job, _ in results}) == 1
    finally:
        for c in conns:
            await c.close()
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 5


# -- dependencies ---------------------------------------------------------------------------


async def test_a_child_is_queued_once_all_parents_succeeded(conn: asyncpg.Connection) -> None:
    p1, _ = await queries.enqueue(conn, "p1")
    p2, _ = await queries.enqueue(conn, "p2")
    child, _ = await queries.enqueue(conn, "child", depends_on=[p2.id, p1.id, p2.id])
    assert (child.status, child.depends_on) == ("waiting", [p1.id, p2.id])
    await queries.claim(conn, ME, 2, job_types=["p1", "p2"])
    await queries.complete(conn, p1.id, ME)
    assert await status_of(conn, child.id) == "waiting"
    assert await queries.claim(conn, ME, 10, job_types=["child"]) == []
    await queries.fail(conn, p2.id, ME, "transient")  # retryable: the child keeps waiting
    assert await status_of(conn, child.id) == "waiting"
    await backdate_run_at(conn, p2.id)
    await queries.claim(conn, ME, 1, job_types=["p2"])
    await queries.complete(conn, p2.id, ME)
    [claimed] = await queries.claim(conn, ME, 10, job_types=["child"])
    assert claimed.id == child.id


@pytest.mark.parametrize("end", ["fail", "cancel_running", "cancel_queued"])
async def test_a_dead_or_cancelled_parent_dooms_its_dependents_transitively(
    conn: asyncpg.Connection, end: str
) -> None:
    parent, _ = await queries.enqueue(conn, "parent")
    sibling, _ = await queries.enqueue(conn, "sibling", delay_seconds=3600)
    child, _ = await queries.enqueue(conn, "child", depends_on=[parent.id])
    grandchild, _ = await queries.enqueue(conn, "grandchild", depends_on=[child.id, sibling.id])
    bystander, _ = await queries.enqueue(conn, "bystander", depends_on=[sibling.id])
    if end != "cancel_queued":
        await queries.claim(conn, ME, 1, job_types=["parent"])
    if end == "fail":
        await queries.fail(conn, parent.id, ME, "fatal", retryable=False)
    else:
        await queries.cancel(conn, parent.id)
    c, g, b = await queries.get_jobs(conn, [child.id, grandchild.id, bystander.id])
    assert (c.status, g.status, b.status) == ("dead", "dead", "waiting")
    assert c.error["kind"] == g.error["kind"] == "dependency"
    assert f"({parent.id})" in c.error["message"] and f"({child.id})" in g.error["message"]
    assert c.finished_at is not None and c.attempt == 0


@pytest.mark.parametrize("ending", ["dead", "cancelled", "succeeded"])
async def test_enqueue_depending_on_a_finished_parent(
    conn: asyncpg.Connection, ending: str
) -> None:
    parent, _ = await queries.enqueue(conn, "parent")
    if ending == "cancelled":
        await queries.cancel(conn, parent.id)
    else:
        await queries.claim(conn, ME)
        if ending == "dead":
            await queries.fail(conn, parent.id, ME, "x", retryable=False)
        else:
            await queries.complete(conn, parent.id, ME)
    child, _ = await queries.enqueue(conn, "child", depends_on=[parent.id])
    if ending == "succeeded":
        assert child.status == "queued"
    else:
        assert (child.status, child.error["kind"]) == ("dead", "dependency")
        assert child.finished_at is not None and len(child.errors) == 1


async def test_two_parents_completing_concurrently_release_the_child(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """T1 completes p1 and holds the child locked; T2 completes p2 and must wait for T1's
    commit, then see p1 succeeded. Neither transaction may miss the other."""
    p1, _ = await queries.enqueue(conn, "p1")
    p2, _ = await queries.enqueue(conn, "p2")
    child, _ = await queries.enqueue(conn, "child", depends_on=[p1.id, p2.id])
    await queries.claim(conn, ME, 2)
    c1, c2 = await db.connect(dsn), await db.connect(dsn)
    try:
        t1, t2 = c1.transaction(), c2.transaction()
        await t1.start()
        await t2.start()
        await queries.complete(c1, p1.id, ME)
        second = asyncio.create_task(queries.complete(c2, p2.id, ME))
        await wait_until_blocked(conn, c2.get_server_pid())
        assert await status_of(conn, child.id) == "waiting"
        await t1.commit()
        await second
        await t2.commit()
    finally:
        await c1.close()
        await c2.close()
    assert await status_of(conn, child.id) == "queued"


async def test_serializable_parents_completing_concurrently_fail_safely(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """Under SERIALIZABLE Postgres catches the race instead: the second commit fails with a
    serialization error, and its retry releases the child."""
    p1, _ = await queries.enqueue(conn, "p1")
    p2, _ = await queries.enqueue(conn, "p2")
    child, _ = await queries.enqueue(conn, "child", depends_on=[p1.id, p2.id])
    await queries.claim(conn, ME, 2)
    c1, c2 = await db.connect(dsn), await db.connect(dsn)
    try:
        t1, t2 = c1.transaction(isolation="serializable"), c2.transaction(isolation="serializable")
        await t1.start()
        await t2.start()
        await c2.fetchval("SELECT 1")  # take t2's snapshot before t1 commits
        await queries.complete(c1, p1.id, ME)
        second = asyncio.create_task(queries.complete(c2, p2.id, ME))
        await wait_until_blocked(conn, c2.get_server_pid())
        await t1.commit()
        with pytest.raises(asyncpg.SerializationError):
            await second
        await t2.rollback()
        assert await status_of(conn, child.id) == "waiting"
        await queries.complete(c2, p2.id, ME)  # the retry, in a fresh transaction
    finally:
        await c1.close()
        await c2.close()
    assert await status_of(conn, child.id) == "queued"


async def test_dependency_bookkeeping_refuses_repeatable_read(conn: asyncpg.Connection) -> None:
    """Under REPEATABLE READ, ending a job could miss a dependent enqueued (or another
    parent ended) concurrently and leave that dependent waiting forever, so every call
    that settles dependencies refuses that isolation level; the others do not care."""
    parent, _ = await queries.enqueue(conn, "parent")
    running, _ = await queries.enqueue(conn, "running")
    await queries.claim(conn, ME, 2)
    dead, _ = await queries.enqueue(conn, "dead", delay_seconds=60)
    await queries.cancel(conn, dead.id)
    child, _ = await queries.enqueue(conn, "child", depends_on=[parent.id])
    await queries.cancel(conn, child.id)
    settle = "settle the dependents of job"
    refusals = [
        (lambda: queries.complete(conn, running.id, ME), settle),
        (lambda: queries.fail(conn, running.id, ME, "x", retryable=False), settle),
        (lambda: queries.cancel(conn, parent.id), settle),
        (lambda: queries.enqueue(conn, "t", depends_on=[parent.id]), "enqueue a job with"),
        (lambda: queries.retry(conn, child.id), "retry a job with depends_on"),
    ]
    for call, message in refusals:
        async with conn.transaction(isolation="repeatable_read"):
            await expect_sqlstate_of(call(), "0A000", message)
    before = await snapshot(conn)
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second',"
        " max_attempts = 1 WHERE id = $1",
        running.id,
    )
    async with conn.transaction(isolation="repeatable_read"):
        await expect_sqlstate_of(queries.expire_leases(conn), "0A000", settle)
    async with conn.transaction(isolation="repeatable_read"):  # nothing settled: fine
        await queries.heartbeat(conn, parent.id, ME)
        await queries.fail(conn, parent.id, ME, "transient")
        await queries.enqueue(conn, "t")
        await queries.retry(conn, dead.id)
        await queries.claim(conn, ME, 10)
    assert set(await snapshot(conn)) == set(before) | {max(before) + 1}


async def expect_sqlstate_of(call: Awaitable[Any], sqlstate: str, match: str) -> None:
    with pytest.raises(asyncpg.PostgresError) as info:
        await call
    assert info.value.sqlstate == sqlstate and match in str(info.value), info.value


@pytest.mark.parametrize("first", ["parent_completes", "child_enqueued"])
async def test_a_parent_completing_while_its_child_is_enqueued(
    dsn: str, conn: asyncpg.Connection, first: str
) -> None:
    parent, _ = await queries.enqueue(conn, "parent")
    await queries.claim(conn, ME)
    c1, c2 = await db.connect(dsn), await db.connect(dsn)
    try:
        t1, t2 = c1.transaction(), c2.transaction()
        await t1.start()
        await t2.start()
        if first == "parent_completes":
            await queries.complete(c1, parent.id, ME)
            late = asyncio.create_task(queries.enqueue(c2, "child", depends_on=[parent.id]))
            await wait_until_blocked(conn, c2.get_server_pid())
            await t1.commit()
            child, _ = await late
            await t2.commit()
        else:
            child, _ = await queries.enqueue(c2, "child", depends_on=[parent.id])
            assert child.status == "waiting"
            late = asyncio.create_task(queries.complete(c1, parent.id, ME))
            await wait_until_blocked(conn, c1.get_server_pid())
            await t2.commit()
            await late
            await t1.commit()
    finally:
        await c1.close()
        await c2.close()
    assert await status_of(conn, child.id) == "queued"


# -- prune, stats, next_due -----------------------------------------------------------------


async def test_prune_deletes_only_finished_jobs_older_than_asked(
    conn: asyncpg.Connection, zoo: dict[str, int]
) -> None:
    before = await snapshot(conn)
    assert await queries.prune(conn, 3600) == 0
    await conn.execute(
        "UPDATE pgq.jobs SET finished_at = now() - interval '2 hours' WHERE id = $1",
        zoo["succeeded"],
    )
    before = await snapshot(conn)
    assert await queries.prune(conn, 3600) == 1
    assert changed(zoo, before, await snapshot(conn)) == {"succeeded"}
    before = await snapshot(conn)
    assert await queries.prune(conn, 0) == 2
    assert changed(zoo, before, await snapshot(conn)) == {"dead", "cancelled"}
    assert {r["type"] for r in await conn.fetch("SELECT type FROM pgq.jobs")} == {
        "waiting",
        "queued",
        "future",
        "running",
        "other",
    }
    await expect_refusal(queries.prune(conn, -1), InvalidArgument, "PQ400", "older_than")


async def test_stats(conn: asyncpg.Connection, zoo: dict[str, int]) -> None:
    await queries.enqueue(conn, "elsewhere", queue="other_queue")
    rows = await queries.stats(conn)
    times = dict(await conn.fetch("SELECT id, run_at FROM pgq.jobs"))
    assert [(r["queue"], r["status"], r["count"]) for r in rows] == [
        ("default", "cancelled", 1),
        ("default", "dead", 1),
        ("default", "queued", 2),
        ("default", "running", 2),
        ("default", "succeeded", 1),
        ("default", "waiting", 1),
        ("other_queue", "queued", 1),
    ]
    queued = next(r for r in rows if r["status"] == "queued" and r["queue"] == "default")
    assert queued["oldest_run_at"] == min(times[zoo["queued"]], times[zoo["future"]])
    assert list(rows[0]) == ["queue", "status", "count", "oldest_run_at"]


async def test_next_due(conn: asyncpg.Connection) -> None:
    assert (await queries.next_due(conn))[:2] == (None, None)
    await queries.enqueue(conn, "soon", delay_seconds=60)
    await queries.enqueue(conn, "sooner", delay_seconds=30, queue="q2")
    await queries.enqueue(conn, "held", timeout_seconds=40)
    [held] = await queries.claim(conn, ME)
    times = dict(await conn.fetch("SELECT type, run_at FROM pgq.jobs"))
    run_at, lease, db_now = await queries.next_due(conn)
    assert (run_at, lease) == (times["sooner"], held.lease_expires_at)
    assert db_now < run_at
    assert (await queries.next_due(conn, queues=["default"]))[0] == times["soon"]
    assert (await queries.next_due(conn, job_types=["soon"]))[0] == times["soon"]
    assert (await queries.next_due(conn, queues=["nope"]))[:2] == (None, lease)


# -- enqueue_many ---------------------------------------------------------------------------


async def test_enqueue_many_keeps_input_order(conn: asyncpg.Connection) -> None:
    specs = [{"type": f"t{i % 7}", "args": {"i": i}, "priority": -i} for i in range(50)]
    jobs = await queries.enqueue_many(conn, specs)
    assert [j.args["i"] for j in jobs] == list(range(50))
    assert [j.type for j in jobs] == [s["type"] for s in specs]
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    assert [j.priority for j in jobs] == [-i for i in range(50)]


@pytest.mark.parametrize("slow_path", [False, True])
async def test_enqueue_many_is_all_or_nothing_and_names_the_bad_element(
    conn: asyncpg.Connection, slow_path: bool
) -> None:
    extra = {"idempotency_key": "k0"} if slow_path else {}
    bad_elements = [
        ({"type": "t", "queue": "Bad-Queue"}, "queue"),
        ({"type": "bad type"}, "job type"),
        ({"type": "t", "colour": "red"}, "known keys"),
        ({"type": "t", "delay_seconds": -1}, "delay_seconds"),
        ({"type": "t", "delay_seconds": 1, "run_at": "2030-01-01T00:00:00Z"}, "run_at"),
        ({"type": "t", "max_attempts": 0}, "max_attempts"),
        ("not an object", "object"),
        # values of the wrong type fail the conversion, and are still named
        ({"type": "t", "priority": "high"}, 'type integer: "high"'),
        ({"type": "t", "priority": 1e10}, "out of range"),
        ({"type": "t", "delay_seconds": "soon"}, "double precision"),
        ({"type": "t", "delay_seconds": 1e300}, "out of range"),
        ({"type": "t", "run_at": "tomorrow-ish"}, "timestamp"),
        ({"type": "t", "depends_on": "x"}, "array"),
    ]
    if slow_path:
        bad_elements += [
            ({"type": "t", "depends_on": [UNKNOWN]}, "do not exist"),
            ({"type": "t", "idempotency_key": ""}, "idempotency_key"),
        ]
    for element, match in bad_elements:
        specs = [{"type": "ok", **extra}, {"type": "ok"}, element, {"type": "ok"}]
        exc = await expect_refusal(queries.enqueue_many(conn, specs), InvalidArgument, "PQ400")
        assert str(exc).startswith("cannot enqueue jobs[2]: "), str(exc)
        assert match in str(exc), str(exc)
        assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 0
    await expect_refusal(queries.enqueue_many(conn, {"type": "t"}), InvalidArgument, "PQ400")  # type: ignore[arg-type]


async def test_enqueue_many_with_keys_and_dependencies(conn: asyncpg.Connection) -> None:
    existing, _ = await queries.enqueue(conn, "existing", idempotency_key="old")
    jobs = await queries.enqueue_many(
        conn,
        [
            {"type": "a", "idempotency_key": "new"},
            {"type": "existing", "idempotency_key": "old"},
            {"type": "a", "idempotency_key": "new"},
            {"type": "d", "depends_on": [existing.id]},
            {"type": "e", "queue": "q2"},
        ],
    )
    assert [j.type for j in jobs] == ["a", "existing", "a", "d", "e"]
    assert jobs[0].id == jobs[2].id and jobs[1].id == existing.id
    assert (jobs[3].status, jobs[3].depends_on) == ("waiting", [existing.id])
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 4


async def test_enqueue_many_delay_and_run_at(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        now = await conn.fetchval("SELECT now()")
        jobs = await queries.enqueue_many(
            conn,
            [
                {"type": "a", "delay_seconds": 30},
                {"type": "b", "run_at": (now + timedelta(hours=1)).isoformat()},
                {"type": "c"},
                {"type": "d", "delay_seconds": 0.25, "idempotency_key": "k"},
            ],
        )
    assert [j.run_at - now for j in jobs] == [
        timedelta(seconds=30),
        timedelta(hours=1),
        timedelta(0),
        timedelta(seconds=0.25),
    ]
    assert [j.id for j in await queries.claim(conn, ME, 10)] == [jobs[2].id]


# -- cost: no transition reads the whole table ----------------------------------------------


@pytest.fixture
async def backlog(conn: asyncpg.Connection) -> dict[str, int]:
    """30,000 queued jobs (a third of them delayed), plus a running parent with a waiting
    child, a running job and a dead one."""
    await bulk_insert(
        conn,
        30_000,
        queue="CASE WHEN n % 2 = 0 THEN 'default' ELSE 'other' END",
        run_at="now() + CASE WHEN n % 3 = 0 THEN interval '1 hour' ELSE interval '0' END",
    )
    parent, _ = await queries.enqueue(conn, "parent", priority=-10)
    child, _ = await queries.enqueue(conn, "child", depends_on=[parent.id])
    running, _ = await queries.enqueue(conn, "running", priority=-9)
    dead, _ = await queries.enqueue(conn, "dead", priority=-8)
    claimed = await queries.claim(conn, ME, 3, job_types=["parent", "running", "dead"])
    assert len(claimed) == 3
    await queries.fail(conn, dead.id, ME, "x", retryable=False)
    await conn.execute("ANALYZE pgq.jobs")
    return {"parent": parent.id, "child": child.id, "running": running.id, "dead": dead.id}


COSTLY: dict[str, Callable[[asyncpg.Connection, dict[str, int]], Awaitable[Any]]] = {
    "complete_releasing_a_child": lambda c, b: queries.complete(c, b["parent"], ME),
    "fail_dooming_a_child": lambda c, b: queries.fail(c, b["parent"], ME, "x", retryable=False),
    "fail_with_backoff": lambda c, b: queries.fail(c, b["running"], ME, "x"),
    "heartbeat": lambda c, b: queries.heartbeat(c, b["running"], ME),
    "cancel_a_parent": lambda c, b: queries.cancel(c, b["parent"]),
    "retry": lambda c, b: queries.retry(c, b["dead"]),
    "expire_leases": lambda c, b: queries.expire_leases(c),
    "enqueue_with_a_parent": lambda c, b: queries.enqueue(c, "t", depends_on=[b["running"]]),
    "enqueue_with_a_known_key": lambda c, b: queries.enqueue(c, "t", idempotency_key="k"),
    "next_due_one_queue": lambda c, b: queries.next_due(c, ["default"]),
    "next_due_all_queues": lambda c, b: queries.next_due(c),
}


async def test_no_transition_scans_the_backlog(
    conn: asyncpg.Connection, backlog: dict[str, int]
) -> None:
    """DESIGN: finishing a job costs in proportion to its dependents, never a scan of
    pgq.jobs; the same holds for every transition and for next_due. Each operation runs
    in its own rolled-back transaction over the same backlog."""
    await queries.enqueue(conn, "t", idempotency_key="k")
    problems = []
    for operation, call in COSTLY.items():
        _, seq, idx = await rows_read(conn, call(conn, backlog))
        if seq or idx > 50:
            problems.append(f"{operation}: {seq} rows read sequentially, {idx} through indexes")
    assert problems == []

"""Bulk enqueue (sql/0002_transitions.sql): ``Client.enqueue_many`` of plain jobs through
``pgq.enqueue_bulk``, one set-based INSERT, with the Jobs built from the input plus the
returned ids; ``pgq.enqueue_many`` for idempotency keys, dependencies and psql users.

What must not change with the fast path: all or nothing, input order, the refusals of
``pgq.enqueue`` with the element named (``jobs[i]``), one wake-up per queue, and Jobs equal
to the rows as stored.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import pgq
from pgq import queries
from pgq.errors import InvalidArgument

from .zoo import Inbox, expect_refusal, expect_sqlstate

QUEUES = ["default", "q1", "q2"]
CHANNELS = [f"pgq_{q}" for q in QUEUES]


async def stored(conn: asyncpg.Connection, ids: list[int]) -> list[pgq.Job]:
    """The jobs as the database has them, in the order of ``ids``."""
    rows = await conn.fetch(
        "SELECT j.* FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, ord)"
        "  JOIN pgq.jobs AS j ON j.id = u.id ORDER BY u.ord",
        ids,
    )
    return [pgq.Job.from_record(r) for r in rows]


async def count_jobs(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM pgq.jobs")


@pytest.fixture
async def inbox(dsn: str) -> AsyncIterator[Inbox]:
    """LISTENs on every queue's channel and is registered idle on every queue, as an idle
    runner is (an insert rings only queues with an idle listener: sql/0003_notifications.sql)."""
    box = await Inbox.open(dsn, *CHANNELS)
    try:
        assert await box.conn.fetchval("SELECT pgq.listen_idle($1)", QUEUES) == len(QUEUES)
        assert await box.conn.fetchval("SELECT pgq.wait_for_enqueuers($1)", QUEUES)
        yield box
    finally:
        await box.close()


async def test_ten_thousand_jobs_in_one_call(
    client: pgq.Client, conn: asyncpg.Connection, inbox: Inbox
) -> None:
    specs = [
        {"type": "BULK", "args": {"i": i}, "queue": "q1" if i % 3 else "q2"} for i in range(10_000)
    ]
    jobs = await client.enqueue_many(specs)

    assert len(jobs) == 10_000
    assert [j.args["i"] for j in jobs] == list(range(10_000))
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)  # ids ascend in input order
    assert len({j.id for j in jobs}) == 10_000
    assert await count_jobs(conn) == 10_000
    assert await stored(conn, [j.id for j in jobs]) == jobs  # every field, as stored
    assert {(j.status, j.attempt, j.run_at == j.created_at == j.updated_at) for j in jobs} == {
        ("queued", 0, True)
    }
    # one statement, one commit: one wake-up per queue, not one per job
    got = Counter(c for c, _ in await inbox.drain(conn, CHANNELS))
    assert got == Counter({"pgq_q1": 1, "pgq_q2": 1})


@pytest.mark.parametrize(
    ("element", "match"),
    [
        ({"type": "t", "queue": "Bad-Queue"}, "queue 'Bad-Queue' is invalid"),
        ({"type": "bad type"}, "job type 'bad type' is invalid"),
        ({"type": "t", "priority": "high"}, 'type integer: "high"'),
        ({"type": "t", "colour": "red"}, "known keys"),
        ({"type": "t", "delay_seconds": -1}, "non-negative delay_seconds"),
        ({"type": "t", "max_attempts": 1001}, "max_attempts 1001 is out of range"),
        ({"type": "t", "args": [1, 2]}, "args must be a JSON object, not array"),
        ({"type": "t", "delay_seconds": 1e300}, "out of range"),
        ("not an object", "must be an object"),
    ],
)
async def test_an_invalid_element_far_in_is_named_and_nothing_is_inserted(
    client: pgq.Client, conn: asyncpg.Connection, element: Any, match: str
) -> None:
    specs: list[Any] = [{"type": "ok", "args": {"i": i}} for i in range(10_000)]
    specs[7000] = element
    specs[9000] = {"type": "t", "queue": "Later-Bad"}  # only the first bad element is named
    with pytest.raises(InvalidArgument) as info:
        await client.enqueue_many(specs)
    assert str(info.value).startswith("cannot enqueue jobs[7000]: "), str(info.value)
    assert match in str(info.value)
    assert isinstance(info.value.__cause__, asyncpg.PostgresError)
    assert info.value.__cause__.sqlstate == "PQ400"
    assert await count_jobs(conn) == 0


async def test_mixed_queues_priorities_and_times(
    client: pgq.Client, conn: asyncpg.Connection
) -> None:
    at = datetime(2031, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    specs: list[dict[str, Any]] = [
        {"type": "a"},
        {"type": "b", "args": {"nested": {"x": [1, 2.5, None, "s"]}}, "queue": "q1"},
        {"type": "c", "priority": -5, "max_attempts": 3, "timeout_seconds": 60},
        {"type": "d", "delay_seconds": 30},
        {"type": "e", "run_at": at},
        {"type": "f", "run_at": "2031-05-04T05:02:01.123456+02:00"},
        {"type": "g", "queue": None, "priority": None, "args": None, "delay_seconds": None},
        {"type": "h", "delay_seconds": 0.25, "queue": "q2", "priority": 32767},
    ]
    async with conn.transaction():  # so that now() is the enqueue's own
        jobs = await client.enqueue_many(specs, connection=conn)
        now = await conn.fetchval("SELECT now()")

    assert await stored(conn, [j.id for j in jobs]) == jobs
    assert [j.type for j in jobs] == list("abcdefgh")
    assert [j.queue for j in jobs] == ["default", "q1"] + ["default"] * 5 + ["q2"]
    assert [j.priority for j in jobs] == [0, 0, -5, 0, 0, 0, 0, 32767]
    assert (jobs[2].max_attempts, jobs[2].timeout_seconds) == (3, 60)
    assert (jobs[0].max_attempts, jobs[0].timeout_seconds) == (10, 300)
    assert jobs[1].args == {"nested": {"x": [1, 2.5, None, "s"]}}
    assert jobs[6].args == {}
    assert [j.run_at - now for j in jobs] == [
        timedelta(0),
        timedelta(0),
        timedelta(0),
        timedelta(seconds=30),
        at - now,
        at - now,
        timedelta(0),
        timedelta(seconds=0.25),
    ]
    assert {j.created_at for j in jobs} == {now}


async def test_jobs_do_not_share_the_callers_dicts(client: pgq.Client) -> None:
    """The Jobs carry the arguments as stored (the JSON that was sent), not the caller's
    objects: a datetime argument comes back as the string the database holds."""
    args = {"when": datetime(2030, 1, 1, tzinfo=UTC), "tags": ("a", "b")}
    [job] = await client.enqueue_many([{"type": "t", "args": args}])
    args["when"] = "changed"
    assert job.args == {"when": "2030-01-01T00:00:00+00:00", "tags": ["a", "b"]}
    assert await client.get(job.id) == job


async def test_values_the_database_converts_come_back_converted(
    client: pgq.Client, conn: asyncpg.Connection
) -> None:
    """pgq.enqueue_many accepts "5" for an integer (PostgreSQL's conversion); the Job shows
    the stored 5, not the string that was sent."""
    jobs = await client.enqueue_many(
        [{"type": "t", "priority": "5", "max_attempts": " 7"}, {"type": "u"}]
    )
    assert [(j.priority, j.max_attempts) for j in jobs] == [(5, 7), (0, 10)]
    assert await stored(conn, [j.id for j in jobs]) == jobs


async def test_idempotency_keys_and_dependencies_take_the_full_path(
    client: pgq.Client, conn: asyncpg.Connection
) -> None:
    parent = await client.enqueue("parent", idempotency_key="p")
    specs: list[dict[str, Any]] = [{"type": "plain", "args": {"i": i}} for i in range(500)]
    specs[100] = {"type": "child", "depends_on": [parent.id]}
    specs[200] = {"type": "parent", "idempotency_key": "p"}  # the existing job comes back
    specs[300] = {"type": "new", "idempotency_key": "n"}
    specs[400] = {"type": "new", "idempotency_key": "n", "idempotency_key_ignored": 1}
    with pytest.raises(InvalidArgument, match=r"jobs\[400\]: each job must be an object"):
        await client.enqueue_many(specs)
    assert await count_jobs(conn) == 1

    specs[400] = {"type": "other", "idempotency_key": "n"}  # the key of a job of another type
    with pytest.raises(pgq.TransitionNotAllowed, match=r"idempotency_key 'n' is already taken"):
        await client.enqueue_many(specs)
    assert await count_jobs(conn) == 1

    specs[400] = {"type": "new", "idempotency_key": "n"}
    jobs = await client.enqueue_many(specs)
    assert len(jobs) == 500
    assert (jobs[100].status, jobs[100].depends_on) == ("waiting", [parent.id])
    assert jobs[200] == parent
    assert jobs[400] == jobs[300] and jobs[300].type == "new"
    assert await count_jobs(conn) == 1 + 498  # the parent, plus all but the two repeats
    assert await stored(conn, [j.id for j in jobs]) == jobs

    # a parent that does not exist is named like any other invalid element
    with pytest.raises(InvalidArgument, match=r"jobs\[1\]: depends_on names jobs that do not"):
        await client.enqueue_many([{"type": "a"}, {"type": "b", "depends_on": [10**12]}])


async def test_the_psql_functions(conn: asyncpg.Connection) -> None:
    """pgq.enqueue_many stays the DBA's call: full rows in input order."""
    rows = await conn.fetch(
        """SELECT id, type, queue, status, args FROM pgq.enqueue_many(
               '[{"type": "a", "args": {"n": 1}}, {"type": "b", "queue": "q1"}, {"type": "c"}]')"""
    )
    assert [(r["type"], r["queue"], r["status"], r["args"]) for r in rows] == [
        ("a", "default", "queued", {"n": 1}),
        ("b", "q1", "queued", {}),
        ("c", "default", "queued", {}),
    ]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)

    bulk = await conn.fetchrow(
        """SELECT * FROM pgq.enqueue_bulk('[{"type": "d"}, {"type": "e", "delay_seconds": 60}]')"""
    )
    assert len(bulk["ids"]) == 2 and bulk["ids"][0] < bulk["ids"][1]
    assert bulk["run_ats"] == [bulk["created_at"], bulk["created_at"] + timedelta(seconds=60)]
    no_delay = await conn.fetchrow("""SELECT * FROM pgq.enqueue_bulk('[{"type": "f"}]')""")
    assert no_delay["run_ats"] is None  # all run at created_at
    empty = await conn.fetchrow("SELECT * FROM pgq.enqueue_bulk('[]')")
    assert (empty["ids"], empty["run_ats"]) == ([], [])
    assert await conn.fetchval("SELECT count(*) FROM pgq.enqueue_many('[]')") == 0

    await expect_sqlstate(
        conn,
        """SELECT * FROM pgq.enqueue_bulk('[{"type": "g"}, {"type": "h", "depends_on": [1]}]')""",
        sqlstate="PQ400",
        match="jobs[1]: idempotency_key and depends_on are not taken here",
    )
    await expect_sqlstate(
        conn, "SELECT * FROM pgq.enqueue_bulk('{}')", sqlstate="PQ400", match="JSON array"
    )
    assert await count_jobs(conn) == 6


async def test_refusals_through_queries(conn: asyncpg.Connection) -> None:
    await expect_refusal(
        queries.enqueue_many(conn, [{"type": "t"}, {"type": "t", "timeout_seconds": 0}]),
        InvalidArgument,
        "PQ400",
        "jobs[1]: timeout_seconds 0 is out of range 1..86400",
    )
    with pytest.raises(InvalidArgument, match="JSON-serializable"):
        await queries.enqueue_many(conn, [{"type": "t", "args": {"x": object()}}])
    assert await count_jobs(conn) == 0


# Every name the original bounded patterns ('^[A-Za-z0-9_.:-]{1,128}$',
# '^[a-z][a-z0-9_]{0,47}$') took or refused, the rewritten constraints and pgq._invalid_job
# take or refuse alike.
TYPE_NAMES = ["a", "A.b:c-d_9", "x" * 128, "x" * 129, "", "a b", "é", "a\n", "\na", "a$"]
QUEUE_NAMES = ["a", "q_1", "a" * 48, "a" * 49, "", "1a", "_a", "A", "a-b", "a\n", "é"]


async def test_names_follow_the_original_patterns(conn: asyncpg.Connection) -> None:
    for name in TYPE_NAMES:
        old = await conn.fetchval("SELECT $1::text ~ '^[A-Za-z0-9_.:-]{1,128}$'", name)
        problem = await conn.fetchval(
            "SELECT pgq._invalid_job($1, '{}', 'default', 0, now(), 10, 300)", name
        )
        assert (problem is None) == old, name
        assert await inserts(conn, "type", name) == old, name
    for name in QUEUE_NAMES:
        old = await conn.fetchval("SELECT $1::text ~ '^[a-z][a-z0-9_]{0,47}$'", name)
        problem = await conn.fetchval(
            "SELECT pgq._invalid_job('t', '{}', $1, 0, now(), 10, 300)", name
        )
        assert (problem is None) == old, name
        assert await inserts(conn, "queue", name) == old, name


async def inserts(conn: asyncpg.Connection, column: str, value: str) -> bool:
    """Whether pgq.jobs' constraints take ``value`` in ``column`` (a raw INSERT, undone)."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            "INSERT INTO pgq.jobs (type, queue) VALUES ($1, $2)",
            value if column == "type" else "t",
            value if column == "queue" else "default",
        )
    except asyncpg.CheckViolationError:
        return False
    finally:
        await tx.rollback()
    return True


async def test_validation_is_inlined(conn: asyncpg.Connection) -> None:
    """pgq._invalid_job must stay STABLE (format() is): an IMMUTABLE SQL function calling a
    stable one is never inlined and costs a function call per job."""
    volatility = "SELECT provolatile::text FROM pg_proc WHERE oid = 'pgq._invalid_job'::regproc"
    assert await conn.fetchval(volatility) == "s"


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_garbage_collector_is_left_as_it_was(
    client: pgq.Client, conn: asyncpg.Connection, enabled: bool
) -> None:
    """The bulk path pauses the cyclic collector while it builds a batch's objects; after a
    batch, after a refused batch and on the full path alike, the collector is as the caller
    left it (re-enabled, or still paused when the caller had paused it)."""
    (gc.enable if enabled else gc.disable)()
    try:
        plain = await client.enqueue_many([{"type": "T", "args": {"i": i}} for i in range(3)])
        assert len(plain) == 3
        assert gc.isenabled() is enabled
        with pytest.raises(InvalidArgument):
            await client.enqueue_many([{"type": "T"}, {"type": "T", "priority": 1 << 20}])
        assert gc.isenabled() is enabled
        keyed = await client.enqueue_many([{"type": "T", "idempotency_key": "gc-k"}])
        assert [j.status for j in keyed] == ["queued"]
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
    assert await count_jobs(conn) == 4

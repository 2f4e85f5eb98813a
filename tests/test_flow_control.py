"""Flow control in SQL: pgq.pause / pgq.resume / pgq.set_limits and pgq.claim honouring them
while many connections claim at once (issue #11).

Limits are checked on what the database recorded: every claimed job's interval runs from
its claimed_at (read after the queue's lock, so after every earlier claim and completion
committed) to its finished_at (the completing transaction's start, before its commit frees
the slot), so a recorded overlap is a real one. A sampler counting running jobs under load
checks the same from outside.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest

from pgq import db

from .zoo import Inbox, expect_sqlstate

CLAIMERS = 20


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(dsn, min_size=CLAIMERS, max_size=CLAIMERS + 2)
    try:
        yield p
    finally:
        await p.close()


async def enqueue(conn: asyncpg.Connection, n: int, queue: str, keys: int | None = None) -> None:
    await conn.execute(
        "SELECT pgq.enqueue('t', jsonb_build_object('i', g), $2,"
        " concurrency_key => CASE WHEN $3::int IS NOT NULL THEN 'k' || (g % $3::int) END)"
        "  FROM generate_series(1, $1) AS g",
        n,
        queue,
        keys,
    )


async def run_claimers(
    pool: asyncpg.Pool,
    queue: str,
    *,
    hold: tuple[float, float] = (0.001, 0.01),
    until_empty: bool = True,
    seconds: float | None = None,
) -> int:
    """CLAIMERS tasks, each on its own pooled connection: claim 1-3 jobs, hold each for a
    random time, complete it; until the queue is empty (or `seconds` passed). Returns the
    number of claim calls made."""
    calls = 0
    deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds

    async def claimer(i: int) -> None:
        nonlocal calls
        async with pool.acquire() as conn:
            idle = 0
            while deadline is None or asyncio.get_running_loop().time() < deadline:
                rows = await conn.fetch(
                    "SELECT id, attempts FROM pgq.claim($1, $2, ARRAY[$3])",
                    f"w{i}",
                    random.randint(1, 3),
                    queue,
                )
                calls += 1
                if not rows:
                    left = await conn.fetchval(
                        "SELECT count(*) FROM pgq.jobs WHERE queue = $1"
                        " AND status IN ('queued', 'running')",
                        queue,
                    )
                    if until_empty and left == 0:
                        return
                    idle += 1
                    await asyncio.sleep(0.002)
                    continue
                for r in rows:
                    await asyncio.sleep(random.uniform(*hold))
                    await conn.execute(
                        "SELECT pgq.complete($1, $2, NULL, $3)", r["id"], f"w{i}", r["attempts"]
                    )

    await asyncio.gather(*(claimer(i) for i in range(CLAIMERS)))
    return calls


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end at t frees before a start at t)."""
    events = [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    events.sort(key=lambda e: (e[0], e[1]))
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


async def intervals(conn: asyncpg.Connection, queue: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, concurrency_key, claimed_at, finished_at FROM pgq.jobs"
        " WHERE queue = $1 ORDER BY claimed_at, id",
        queue,
    )


async def test_twenty_claimers_never_exceed_the_queue_concurrency(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await enqueue(conn, 300, "lim")
    await enqueue(conn, 100, "free")
    await conn.execute("SELECT pgq.set_limits('lim', concurrency => 3)")
    peak_sampled = 0
    stop = asyncio.Event()

    async def sampler() -> None:
        nonlocal peak_sampled
        while not stop.is_set():
            n = await conn.fetchval(
                "SELECT count(*) FROM pgq.jobs WHERE queue = 'lim' AND status = 'running'"
            )
            peak_sampled = max(peak_sampled, n)
            await asyncio.sleep(0)

    sampling = asyncio.create_task(sampler())
    try:
        await run_claimers(pool, "lim")
    finally:
        stop.set()
        await sampling
    rows = await intervals(conn, "lim")
    assert all(r["finished_at"] is not None for r in rows)
    assert max_overlap([(r["claimed_at"], r["finished_at"]) for r in rows]) == 3
    assert 1 <= peak_sampled <= 3
    # the unlimited queue is untouched by the other's limit
    got = await conn.fetch("SELECT id FROM pgq.claim('x', 100, '{free}')")
    assert len(got) == 100


async def test_key_concurrency_one_runs_each_key_serially_in_id_order(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await enqueue(conn, 200, "keyed", keys=5)
    await enqueue(conn, 20, "keyed")  # no key: not limited by key
    await conn.execute("SELECT pgq.set_limits('keyed', key_concurrency => 1)")
    await run_claimers(pool, "keyed")
    rows = await intervals(conn, "keyed")
    by_key: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        if r["concurrency_key"] is not None:
            by_key.setdefault(r["concurrency_key"], []).append(r)
    assert sorted(by_key) == [f"k{i}" for i in range(5)]
    for jobs in by_key.values():
        assert max_overlap([(r["claimed_at"], r["finished_at"]) for r in jobs]) == 1
        starts = sorted(jobs, key=lambda r: r["claimed_at"])
        assert [r["id"] for r in starts] == sorted(r["id"] for r in jobs)
    # different keys did run side by side
    keyed = [r for r in rows if r["concurrency_key"] is not None]
    assert max_overlap([(r["claimed_at"], r["finished_at"]) for r in keyed]) > 1


async def test_key_and_queue_limits_together(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    await enqueue(conn, 150, "both", keys=6)
    await conn.execute("SELECT pgq.set_limits('both', concurrency => 4, key_concurrency => 2)")
    await run_claimers(pool, "both")
    rows = await intervals(conn, "both")
    assert max_overlap([(r["claimed_at"], r["finished_at"]) for r in rows]) <= 4
    for k in range(6):
        of_key = [r for r in rows if r["concurrency_key"] == f"k{k}"]
        assert max_overlap([(r["claimed_at"], r["finished_at"]) for r in of_key]) <= 2


async def test_rate_ten_per_second_burst_five(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    await enqueue(conn, 200, "rated")
    await conn.execute("SELECT pgq.set_limits('rated', rate => 10, burst => 5)")
    started = await conn.fetchval("SELECT clock_timestamp()")
    await run_claimers(pool, "rated", hold=(0, 0), until_empty=False, seconds=2.0)
    ended = await conn.fetchval("SELECT clock_timestamp()")
    times = [
        r["claimed_at"]
        for r in await conn.fetch(
            "SELECT claimed_at FROM pgq.jobs WHERE queue = 'rated' AND claimed_at IS NOT NULL"
            " ORDER BY claimed_at"
        )
    ]
    # every window [times[i], times[j]] holds j - i + 1 claims: at most burst + rate * T
    for i in range(len(times)):
        for j in range(i, len(times)):
            window = (times[j] - times[i]).total_seconds()
            assert j - i + 1 <= 5 + 10 * window + 1e-6, (i, j, window)
    span = (ended - started).total_seconds()
    # and the bucket did hand out its tokens: close to 5 + 10 * span
    assert len(times) >= 5 + 10 * (span - 0.5)


async def test_pause_gives_nothing_and_resume_notifies(dsn: str, conn: asyncpg.Connection) -> None:
    await enqueue(conn, 3, "p")
    paused = await conn.fetchrow("SELECT * FROM pgq.pause('p')")
    assert paused["paused"] is True and paused["concurrency"] is None
    assert await conn.fetch("SELECT * FROM pgq.claim('w', 10, '{p}')") == []
    assert await conn.fetch("SELECT * FROM pgq.claim('w', 10)") == []  # every queue
    assert (await conn.fetchrow("SELECT * FROM pgq.next_due('{p}')"))["next_run_at"] is None
    # enqueue goes on while paused; pause is idempotent and kept in a table (survives restarts)
    await enqueue(conn, 1, "p")
    await conn.execute("SELECT pgq.pause('p')")
    assert await conn.fetchval("SELECT paused FROM pgq.queues WHERE queue = 'p'") is True

    inbox = await Inbox.open(dsn, "pgq_p")
    try:
        resumed = await conn.fetchrow("SELECT * FROM pgq.resume('p')")
        assert resumed["paused"] is False
        assert await inbox.next_on("pgq_p") == ""
    finally:
        await inbox.close()
    assert len(await conn.fetch("SELECT * FROM pgq.claim('w', 10, '{p}')")) == 4
    # resume of a queue without settings: no row is created
    none = await conn.fetchrow("SELECT * FROM pgq.resume('never_set')")
    assert none["paused"] is False
    assert await conn.fetchval("SELECT count(*) FROM pgq.queues WHERE queue = 'never_set'") == 0


async def test_a_freed_slot_notifies_and_an_unlimited_completion_does_not(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await enqueue(conn, 2, "lim")
    await enqueue(conn, 1, "free")
    await conn.execute("SELECT pgq.set_limits('lim', concurrency => 1)")
    a = await conn.fetchrow("SELECT * FROM pgq.claim('w', 5, '{lim}')")
    assert a["holds_slot"] is True
    assert await conn.fetch("SELECT * FROM pgq.claim('w', 5, '{lim}')") == []
    # at the limit, next_due has nothing to offer for the queue: wait for the notification
    assert (await conn.fetchrow("SELECT * FROM pgq.next_due('{lim}')"))["next_run_at"] is None
    f = await conn.fetchrow("SELECT * FROM pgq.claim('w', 5, '{free}')")
    assert f["holds_slot"] is False

    inbox = await Inbox.open(dsn, "pgq_lim", "pgq_free")
    try:
        await conn.execute("SELECT pgq.complete($1, 'w')", f["id"])
        assert await inbox.drain(conn, ["pgq_lim", "pgq_free"]) == []
        await conn.execute("SELECT pgq.complete($1, 'w')", a["id"])
        assert await inbox.drain(conn, ["pgq_lim", "pgq_free"]) == [("pgq_lim", "")]
    finally:
        await inbox.close()
    assert (await conn.fetchrow("SELECT * FROM pgq.next_due('{lim}')"))["next_run_at"] is not None
    assert len(await conn.fetch("SELECT * FROM pgq.claim('w', 5, '{lim}')")) == 1


async def test_an_expired_lease_frees_the_slot(conn: asyncpg.Connection) -> None:
    await enqueue(conn, 2, "lim")
    await conn.execute("SELECT pgq.set_limits('lim', concurrency => 1)")
    held = await conn.fetchrow("SELECT * FROM pgq.claim('crashed', 5, '{lim}')")
    assert await conn.fetch("SELECT * FROM pgq.claim('w', 5, '{lim}')") == []
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1", held["id"]
    )
    assert await conn.fetchval("SELECT pgq.expire_leases()") == 1
    got = await conn.fetch("SELECT id FROM pgq.claim('w', 5, '{lim}')")
    assert [r["id"] for r in got] == [held["id"] + 1]  # the other job; the expired one backs off


async def test_next_due_waits_for_the_next_token(conn: asyncpg.Connection) -> None:
    await enqueue(conn, 5, "rated")
    await conn.execute("SELECT pgq.set_limits('rated', rate => 2)")  # burst = ceil(2) = 2
    assert len(await conn.fetch("SELECT * FROM pgq.claim('w', 10, '{rated}')")) == 2
    assert await conn.fetch("SELECT * FROM pgq.claim('w', 10, '{rated}')") == []
    row = await conn.fetchrow(
        "SELECT d.next_run_at - clock_timestamp() AS wait FROM pgq.next_due('{rated}') AS d"
    )
    assert timedelta(seconds=0.3) < row["wait"] <= timedelta(seconds=0.5)
    await asyncio.sleep(row["wait"].total_seconds() + 0.02)
    assert len(await conn.fetch("SELECT * FROM pgq.claim('w', 10, '{rated}')")) == 1


async def test_next_due_at_the_slowest_rate(conn: asyncpg.Connection) -> None:
    # 0.001/s is the slowest rate set_limits takes: its next token is 1,000 s ahead and
    # next_due says so. (A slower one, which set_limits refuses, overflowed next_due.)
    await enqueue(conn, 2, "slow")
    await conn.execute("SELECT pgq.set_limits('slow', rate => 0.001)")  # burst 1
    assert len(await conn.fetch("SELECT * FROM pgq.claim('w', 10, '{slow}')")) == 1
    wait = await conn.fetchval(
        "SELECT d.next_run_at - clock_timestamp() FROM pgq.next_due('{slow}') AS d"
    )
    assert timedelta(seconds=990) < wait <= timedelta(seconds=1000)


async def test_key_limited_next_due_skips_full_keys(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pgq.set_limits('keyed', key_concurrency => 1)")
    await conn.execute("SELECT pgq.enqueue('t', '{}', 'keyed', concurrency_key => 'a')")
    await conn.execute("SELECT pgq.enqueue('t', '{}', 'keyed', concurrency_key => 'a')")
    await conn.execute(
        "SELECT pgq.enqueue('t', '{}', 'keyed', run_at => now() + interval '1 hour',"
        " concurrency_key => 'b')"
    )
    assert len(await conn.fetch("SELECT * FROM pgq.claim('w', 10, '{keyed}')")) == 1
    # 'a' is full, so its second job is not due for this runner; 'b' is due in an hour
    wait = await conn.fetchval("SELECT next_run_at - now() FROM pgq.next_due('{keyed}')")
    assert timedelta(minutes=59) < wait <= timedelta(hours=1)


async def test_set_limits_counts_jobs_already_running(conn: asyncpg.Connection) -> None:
    await enqueue(conn, 5, "late")
    assert len(await conn.fetch("SELECT * FROM pgq.claim('w', 3, '{late}')")) == 3
    await conn.execute("SELECT pgq.set_limits('late', concurrency => 3)")
    assert await conn.fetch("SELECT * FROM pgq.claim('w', 3, '{late}')") == []
    await conn.execute(
        "SELECT pgq.complete(id, 'w') FROM pgq.jobs WHERE status = 'running' ORDER BY id LIMIT 1"
    )
    assert len(await conn.fetch("SELECT * FROM pgq.claim('w', 3, '{late}')")) == 1


async def test_set_limits_replaces_all_four_and_refuses_bad_values(
    conn: asyncpg.Connection,
) -> None:
    q = await conn.fetchrow(
        "SELECT * FROM pgq.set_limits('s', concurrency => 2, key_concurrency => 1, rate => 2.5)"
    )
    assert (q["concurrency"], q["key_concurrency"], q["rate"], q["burst"]) == (2, 1, 2.5, 3)
    await conn.execute("SELECT pgq.pause('s')")
    q = await conn.fetchrow("SELECT * FROM pgq.set_limits('s', concurrency => 7)")
    assert (q["concurrency"], q["key_concurrency"], q["rate"], q["burst"]) == (7, None, None, None)
    assert q["paused"] is True  # limits leave the pause alone
    for call, field in [
        ("pgq.set_limits('s', concurrency => 0)", "concurrency"),
        ("pgq.set_limits('s', key_concurrency => -1)", "key_concurrency"),
        ("pgq.set_limits('s', rate => 0)", "rate"),
        ("pgq.set_limits('s', rate => 1, burst => 0)", "burst"),
        ("pgq.set_limits('s', burst => 3)", "burst needs a rate"),
        ("pgq.set_limits('s', rate => 1e9)", "rate"),
        ("pgq.set_limits('s', rate => 0.0009)", "rate"),
        ("pgq.set_limits('s', rate => 1e-300)", "rate"),
        ("pgq.set_limits('Bad Name')", "queue"),
        ("pgq.pause(NULL)", "queue"),
    ]:
        await expect_sqlstate(conn, f"SELECT {call}", sqlstate="PQ400", match=field)


async def test_concurrency_key_is_validated_on_every_enqueue_path(conn: asyncpg.Connection) -> None:
    await expect_sqlstate(
        conn,
        "SELECT pgq.enqueue('t', concurrency_key => '')",
        sqlstate="PQ400",
        match="concurrency_key",
    )
    long_key = "x" * 257
    await expect_sqlstate(
        conn,
        "SELECT pgq.enqueue_many(jsonb_build_array(jsonb_build_object("
        "'type', 't', 'concurrency_key', $1::text)))",
        long_key,
        sqlstate="PQ400",
        match="jobs[0]: concurrency_key",
    )
    await expect_sqlstate(
        conn,
        "SELECT pgq.enqueue_many(jsonb_build_array(jsonb_build_object("
        "'type', 't', 'idempotency_key', 'i', 'concurrency_key', $1::text)))",
        long_key,
        sqlstate="PQ400",
        match="jobs[0]: concurrency_key",
    )
    rows = await conn.fetch(
        """SELECT concurrency_key FROM pgq.enqueue_many('[
             {"type": "t", "concurrency_key": "a"}, {"type": "t"},
             {"type": "t", "concurrency_key": "b", "idempotency_key": "x"}]')"""
    )
    assert [r["concurrency_key"] for r in rows] == ["a", None, "b"]


async def test_repeatable_read_claims_from_a_limited_queue_are_refused(
    conn: asyncpg.Connection,
) -> None:
    await enqueue(conn, 1, "lim")
    await conn.execute("SELECT pgq.set_limits('lim', concurrency => 1)")
    async with conn.transaction(isolation="repeatable_read"):
        await expect_sqlstate(
            conn, "SELECT * FROM pgq.claim('w', 1, '{lim}')", sqlstate="0A000", match="limits"
        )

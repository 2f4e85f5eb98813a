"""pgq.schedules from SQL: pgq.schedule, pgq.unschedule, pgq.fire_schedules, catch_up modes,
pause, and exactly one job per (schedule, slot) under concurrent firing.

Missed slots are made by moving a schedule's next_run_at into the past, as if every pgq
process had been down since then.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import asyncpg
import pytest

from pgq import db


async def make(conn: asyncpg.Connection, name: str, cron: str, **options: object) -> asyncpg.Record:
    named = "".join(f", {k} => ${i}" for i, k in enumerate(options, start=4))
    return await conn.fetchrow(
        f"SELECT * FROM pgq.schedule($1, $2, $3{named})", name, cron, "TICK", *options.values()
    )


async def backdate(conn: asyncpg.Connection, name: str, sql_instant: str) -> None:
    await conn.execute(
        f"UPDATE pgq.schedules SET next_run_at = {sql_instant} WHERE name = $1", name
    )


async def slots(conn: asyncpg.Connection, name: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, type, run_at, scheduled_for, status FROM pgq.jobs WHERE schedule = $1 "
        "ORDER BY scheduled_for",
        name,
    )


async def test_schedule_creates_and_replaces(conn: asyncpg.Connection) -> None:
    row = await make(conn, "nightly", "0 3 * * *", timezone="Europe/Berlin", priority=5)
    want = await conn.fetchval("SELECT pgq.cron_next('0 3 * * *', now(), 'Europe/Berlin')")
    assert row["next_run_at"] == want
    assert (row["cron"], row["timezone"], row["job_type"], row["queue"], row["catch_up"]) == (
        "0 3 * * *",
        "Europe/Berlin",
        "TICK",
        "default",
        "latest",
    )
    assert (row["priority"], row["paused"], row["last_run_at"]) == (5, False, None)

    # Same timing: next_run_at is kept (a missed slot must survive a runner re-declaring it).
    await backdate(conn, "nightly", "now() - interval '1 day'")
    kept = await make(conn, "nightly", "0 3 * * *", timezone="Europe/Berlin", priority=7)
    assert kept["priority"] == 7
    assert kept["next_run_at"] < want - timedelta(hours=12)
    assert kept["created_at"] == row["created_at"]

    # New timing: computed from now.
    moved = await make(conn, "nightly", "0 4 * * *", timezone="Europe/Berlin")
    assert moved["next_run_at"] == await conn.fetchval(
        "SELECT pgq.cron_next('0 4 * * *', now(), 'Europe/Berlin')"
    )
    assert await conn.fetchval("SELECT count(*) FROM pgq.schedules") == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("Bad Name", "* * * * *", "T"), "schedule name 'Bad Name' is invalid"),
        (("ok", "* * * *", "T"), "has 4 fields"),
        (("ok", "0 0 30 2 *", "T"), "never fires"),
        (("ok", "* * * * *", "bad type!"), "job type 'bad type!' is invalid"),
    ],
)
async def test_schedule_refuses_bad_input(
    conn: asyncpg.Connection, args: tuple[str, str, str], words: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await conn.fetchrow("SELECT * FROM pgq.schedule($1, $2, $3)", *args)
    assert caught.value.sqlstate == "PQ400"
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("catch_up", "some", "catch_up 'some' is invalid"),
        ("timezone", "Nowhere/Land", "timezone 'Nowhere/Land' is not a known time zone"),
        ("queue", "Bad", "queue 'Bad' is invalid"),
        ("max_attempts", 0, "max_attempts 0 is out of range"),
        ("timeout_seconds", 86401, "timeout_seconds 86401 is out of range"),
    ],
)
async def test_schedule_refuses_bad_options(
    conn: asyncpg.Connection, option: str, value: object, words: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await make(conn, "ok", "* * * * *", **{option: value})
    assert caught.value.sqlstate == "PQ400"
    assert words in str(caught.value)


async def test_unschedule(conn: asyncpg.Connection) -> None:
    await make(conn, "gone", "* * * * *")
    await backdate(conn, "gone", "now() - interval '30 seconds'")
    assert await conn.fetchval("SELECT pgq.fire_schedules()") == 1
    row = await conn.fetchrow("SELECT * FROM pgq.unschedule('gone')")
    assert row["name"] == "gone"
    assert await conn.fetchval("SELECT count(*) FROM pgq.schedules") == 0
    assert len(await slots(conn, "gone")) == 1  # its job stays
    with pytest.raises(asyncpg.PostgresError) as caught:
        await conn.fetchrow("SELECT * FROM pgq.unschedule('gone')")
    assert caught.value.sqlstate == "PQ404"
    assert "schedule 'gone' does not exist" in str(caught.value)


async def test_schedule_changes_notify(conn: asyncpg.Connection, dsn: str) -> None:
    listener = await db.connect(dsn)
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("pgq_schedules", lambda *a: got.put_nowait(a[3]))
    try:
        await make(conn, "heard", "* * * * *")
        assert await asyncio.wait_for(got.get(), 5) == "heard"
        await conn.execute("SELECT pgq.unschedule('heard')")
        assert await asyncio.wait_for(got.get(), 5) == "heard"
    finally:
        await listener.close()


async def test_fire_on_time_creates_the_slot_job(conn: asyncpg.Connection) -> None:
    await make(conn, "tick", "* * * * *", args={"n": 1}, queue="cron_q", max_attempts=3)
    assert await conn.fetchval("SELECT pgq.fire_schedules()") == 0  # not due yet
    async with conn.transaction():  # one now() for all three
        await backdate(conn, "tick", "date_trunc('minute', now())")
        rows = await conn.fetch("SELECT * FROM pgq.fire_schedule_slots()")
        slot = await conn.fetchval("SELECT date_trunc('minute', now())")
    assert len(rows) == 1
    assert (rows[0]["schedule"], rows[0]["scheduled_for"], rows[0]["job_type"]) == (
        "tick",
        slot,
        "TICK",
    )
    job = await conn.fetchrow("SELECT * FROM pgq.jobs WHERE id = $1", rows[0]["job_id"])
    assert (job["run_at"], job["scheduled_for"], job["schedule"]) == (slot, slot, "tick")
    assert (job["queue"], job["args"], job["max_attempts"], job["status"]) == (
        "cron_q",
        {"n": 1},
        3,
        "queued",
    )
    s = await conn.fetchrow("SELECT * FROM pgq.schedules WHERE name = 'tick'")
    assert s["last_run_at"] == slot
    assert s["next_run_at"] == slot + timedelta(minutes=1)
    assert await conn.fetchval("SELECT pgq.fire_schedules()") == 0
    claimed = await conn.fetch("SELECT * FROM pgq.claim('w', 5, '{cron_q}')")
    assert [c["id"] for c in claimed] == [job["id"]]


async def test_catch_up_latest_creates_one_job_for_the_latest_missed_slot(
    conn: asyncpg.Connection,
) -> None:
    await make(conn, "latest", "*/5 * * * *")
    async with conn.transaction():  # one now() for all three
        await backdate(conn, "latest", "now() - interval '3 days'")
        assert await conn.fetchval("SELECT pgq.fire_schedules()") == 1
        newest = await conn.fetchval(
            "SELECT date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00+00')"
        )
    [job] = await slots(conn, "latest")
    assert job["scheduled_for"] == newest
    assert await conn.fetchval(
        "SELECT next_run_at FROM pgq.schedules WHERE name = 'latest'"
    ) == newest + timedelta(minutes=5)


async def test_catch_up_all_creates_every_missed_slot(conn: asyncpg.Connection) -> None:
    await make(conn, "all", "* * * * *", catch_up="all")
    async with conn.transaction():  # one now() for both
        await backdate(conn, "all", "date_trunc('minute', now()) - interval '10 minutes'")
        assert await conn.fetchval("SELECT pgq.fire_schedules()") == 11
    got = [r["scheduled_for"] for r in await slots(conn, "all")]
    assert [b - a for a, b in itertools.pairwise(got)] == [timedelta(minutes=1)] * 10


async def test_catch_up_all_stops_at_1000_per_call_and_goes_on(conn: asyncpg.Connection) -> None:
    await make(conn, "busy", "* * * * * *", catch_up="all")
    await backdate(conn, "busy", "date_trunc('second', now()) - interval '1500 seconds'")
    assert await conn.fetchval("SELECT pgq.fire_schedules()") == 1000
    assert await conn.fetchval("SELECT next_schedule_at < now() FROM pgq.next_schedule_at()")
    assert await conn.fetchval("SELECT pgq.fire_schedules()") >= 501
    got = [r["scheduled_for"] for r in await slots(conn, "busy")]
    assert len(got) == len(set(got)) >= 1501
    assert [b - a for a, b in itertools.pairwise(got)] == [timedelta(seconds=1)] * (len(got) - 1)


async def test_catch_up_none_keeps_only_slots_under_a_minute_old(conn: asyncpg.Connection) -> None:
    await make(conn, "none", "* * * * * *", catch_up="none")
    await backdate(conn, "none", "now() - interval '10 minutes'")
    assert await conn.fetchval("SELECT pgq.fire_schedules()") == 60
    now = await conn.fetchval("SELECT now()")
    got = [r["scheduled_for"] for r in await slots(conn, "none")]
    assert all(now - timedelta(seconds=60) < g <= now for g in got)
    # an hourly schedule missed by hours creates nothing, and waits for its next slot
    await conn.execute("SELECT pgq.unschedule('none')")
    await make(conn, "none_hourly", "0 * * * *", catch_up="none")
    async with conn.transaction():  # one now() throughout
        await backdate(conn, "none_hourly", "date_trunc('hour', now()) - interval '2 hours'")
        stamp = await conn.fetchval("SELECT now() - date_trunc('hour', now())")
        fired = await conn.fetchval("SELECT pgq.fire_schedules()")
        assert fired == (1 if stamp < timedelta(seconds=60) else 0)
        assert await conn.fetchval(
            "SELECT next_run_at FROM pgq.schedules WHERE name = 'none_hourly'"
        ) == await conn.fetchval("SELECT date_trunc('hour', now()) + interval '1 hour'")


async def test_paused_schedule_fires_nothing_and_resumes_from_now(
    conn: asyncpg.Connection,
) -> None:
    await make(conn, "held", "* * * * *", paused=True, catch_up="all")
    await backdate(conn, "held", "now() - interval '1 hour'")
    assert await conn.fetchval("SELECT pgq.fire_schedules()") == 0
    assert await conn.fetchval("SELECT pgq.next_schedule_at()") is None
    resumed = await make(conn, "held", "* * * * *", paused=False, catch_up="all")
    assert resumed["next_run_at"] > await conn.fetchval("SELECT now()")
    assert await conn.fetchval("SELECT pgq.fire_schedules()") == 0
    assert await conn.fetchval("SELECT pgq.next_schedule_at()") == resumed["next_run_at"]


async def test_next_schedule_at_is_the_earliest_unpaused(conn: asyncpg.Connection) -> None:
    assert await conn.fetchval("SELECT pgq.next_schedule_at()") is None
    a = await make(conn, "a", "0 0 1 1 *")
    b = await make(conn, "b", "* * * * *")
    await make(conn, "c", "* * * * * *", paused=True)
    assert await conn.fetchval("SELECT pgq.next_schedule_at()") == min(
        a["next_run_at"], b["next_run_at"]
    )


async def test_a_slot_gets_one_job_even_when_fired_again(conn: asyncpg.Connection) -> None:
    # The unique (schedule, scheduled_for) index, not the row lock, is the last word: a
    # schedule whose next_run_at is moved back re-handles its slots and creates nothing.
    await make(conn, "again", "* * * * *", catch_up="all")
    async with conn.transaction():  # one now() throughout
        await backdate(conn, "again", "date_trunc('minute', now()) - interval '5 minutes'")
        assert await conn.fetchval("SELECT pgq.fire_schedules()") == 6
        await backdate(conn, "again", "date_trunc('minute', now()) - interval '5 minutes'")
        assert await conn.fetchval("SELECT pgq.fire_schedules()") == 0
    assert len(await slots(conn, "again")) == 6


@pytest.mark.parametrize("catch_up", ["all", "latest"])
async def test_concurrent_firing_creates_each_slot_once(
    conn: asyncpg.Connection, dsn: str, catch_up: str
) -> None:
    await make(conn, "race", "* * * * * *", catch_up=catch_up)
    await backdate(conn, "race", "date_trunc('second', now()) - interval '300 seconds'")
    # a second schedule whose next_run_at is moved back under the callers' feet
    await make(conn, "race2", "* * * * *", catch_up="all")
    base = await conn.fetchval("SELECT date_trunc('minute', now()) - interval '20 minutes'")
    back = f"'{base.isoformat()}'::timestamptz"
    await backdate(conn, "race2", back)
    callers = [await db.connect(dsn) for _ in range(10)]
    try:
        for _round in range(3):
            await asyncio.gather(*(c.fetchval("SELECT pgq.fire_schedules()") for c in callers))
            await backdate(conn, "race2", back)
    finally:
        for c in callers:
            await c.close()
    for name in ("race", "race2"):
        got = [r["scheduled_for"] for r in await slots(conn, name)]
        assert len(got) == len(set(got))
        assert await conn.fetchval(
            "SELECT count(*) FROM pgq.jobs WHERE schedule = $1", name
        ) == len(got)
    race = [r["scheduled_for"] for r in await slots(conn, "race")]
    assert len(race) >= (301 if catch_up == "all" else 1)
    race2 = [r["scheduled_for"] for r in await slots(conn, "race2")]
    assert race2[0] == base and len(race2) >= 21
    assert [b - a for a, b in itertools.pairwise(race2)] == [timedelta(minutes=1)] * (
        len(race2) - 1
    )

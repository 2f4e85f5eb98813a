"""``Runner.schedule``: declared in code, upserted at start (database and HTTP mode), and
the runner's schedule timer firing schedules made anywhere, on time, without polling."""

from __future__ import annotations

import asyncio
import sys
from asyncio.subprocess import PIPE
from datetime import timedelta

import asyncpg
import orjson
import pytest

import pgq
from pgq.runner import HttpSource

from .support import REPO, coordinator, running, running_http, wait_until


def make_runner(dsn: str) -> pgq.Runner:
    runner = pgq.Runner(dsn)

    @runner.handler("TICK")
    async def tick(job: pgq.Job) -> str | None:
        return job.scheduled_for.isoformat() if job.scheduled_for else None

    return runner


def test_schedule_declarations_are_checked_at_once() -> None:
    runner = pgq.Runner()
    runner.schedule("ok", "0 3 * * *", "TICK", {"a": 1}, timezone="Europe/Berlin")
    with pytest.raises(ValueError, match="already declared"):
        runner.schedule("ok", "0 4 * * *", "TICK")
    with pytest.raises(ValueError, match="schedule name 'Bad' is invalid"):
        runner.schedule("Bad", "0 3 * * *", "TICK")
    with pytest.raises(TypeError, match="unknown option"):
        runner.schedule("other", "0 3 * * *", "TICK", tz="UTC")
    with pytest.raises(ValueError, match="args must be a dict"):
        runner.schedule("other", "0 3 * * *", "TICK", [1])  # type: ignore[arg-type]
    assert [s.name for s in runner.schedules] == ["ok"]


async def test_declared_schedules_are_upserted_at_start(dsn: str, conn: asyncpg.Connection) -> None:
    runner = make_runner(dsn)
    runner.schedule("nightly", "0 3 * * *", "TICK", {"n": 1}, timezone="Europe/Berlin")
    async with running(runner):
        row = await conn.fetchrow("SELECT * FROM pgq.schedules WHERE name = 'nightly'")
    assert (row["cron"], row["timezone"], row["job_type"], row["args"]) == (
        "0 3 * * *",
        "Europe/Berlin",
        "TICK",
        {"n": 1},
    )
    # A restart re-declares it unchanged: the next slot is kept (here: one it missed).
    await conn.execute(
        "UPDATE pgq.schedules SET next_run_at = now() - interval '1 hour' WHERE name = 'nightly'"
    )
    again = make_runner(dsn)
    again.schedule("nightly", "0 3 * * *", "TICK", {"n": 1}, timezone="Europe/Berlin")
    async with running(again):

        async def caught_up() -> int:
            return await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE schedule = 'nightly'")

        assert await wait_until(caught_up, timeout=10) == 1  # catch_up 'latest'


async def test_runner_fires_a_schedule_made_from_sql_while_it_idles(
    dsn: str, conn: asyncpg.Connection
) -> None:
    runner = make_runner(dsn)
    async with running(runner):
        await conn.execute("SELECT pgq.schedule('sql.made', '* * * * * *', 'TICK')")

        async def three_done() -> list[asyncpg.Record]:
            rows = await conn.fetch(
                "SELECT * FROM pgq.jobs WHERE schedule = 'sql.made' AND status = 'succeeded' "
                "ORDER BY scheduled_for"
            )
            return rows if len(rows) >= 3 else []

        rows = await wait_until(three_done, timeout=10)
        for r in rows:
            assert timedelta(0) <= r["created_at"] - r["scheduled_for"] < timedelta(seconds=1)
            assert r["result"] == r["scheduled_for"].isoformat()
        # unscheduling stops it at once: no job after the deletion, over more than a slot
        deleted_at = await conn.fetchval("SELECT now() FROM pgq.unschedule('sql.made')")
        await asyncio.sleep(1.5)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pgq.jobs WHERE schedule = 'sql.made' AND created_at > $1",
                deleted_at,
            )
            == 0
        )


async def test_an_http_mode_runner_declares_through_the_coordinator(
    dsn: str, conn: asyncpg.Connection
) -> None:
    runner = make_runner(dsn)
    runner.schedule("http.declared", "0 3 * * *", "TICK", catch_up="all")
    async with coordinator(dsn) as coord, running_http(runner, HttpSource(coord.url)):
        row = await wait_until(
            lambda: conn.fetchrow("SELECT * FROM pgq.schedules WHERE name = 'http.declared'")
        )
    assert (row["cron"], row["catch_up"]) == ("0 3 * * *", "all")


async def run_cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pgq", *args, cwd=REPO, stdout=PIPE, stderr=PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_pgq_schedules_lists_them(dsn: str, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "SELECT pgq.schedule('tmdb.nightly', '0 3 * * *', 'TMDB_SYNC', timezone => 'Europe/Berlin')"
    )
    await conn.execute("SELECT pgq.schedule('held', '@hourly', 'X', paused => true)")
    text = await run_cli("schedules", "--database-url", dsn)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["name", "cron", "timezone", "type"]
    assert lines[1].split()[0] == "held" and "paused" in lines[1]
    nxt = await conn.fetchval("SELECT next_run_at FROM pgq.schedules WHERE name = 'tmdb.nightly'")
    assert lines[2].split()[:7] == [
        "tmdb.nightly",
        "0",
        "3",
        "*",
        "*",
        "*",
        "Europe/Berlin",
    ]
    assert nxt.isoformat(timespec="seconds") in lines[2]
    as_json = orjson.loads(await run_cli("schedules", "--json", "--database-url", dsn))
    assert [s["name"] for s in as_json["schedules"]] == ["held", "tmdb.nightly"]

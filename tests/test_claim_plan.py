"""pgq.claim's plan cannot go bad: whatever the statistics say about pgq.jobs (never
analyzed, analyzed before a bulk load, analyzed), a claim walks jobs_claim_idx and reads a
few rows, and no query inside it is compiled by JIT, however high its estimated cost (at
10M jobs a generic plan's estimate passed jit_above_cost and each claim spent 25-270 ms
compiling)."""

from __future__ import annotations

import json
import re

import asyncpg
import pytest

from pgq import queries

from .zoo import rows_read

JOBS = 30_000


async def load(conn: asyncpg.Connection, count: int) -> None:
    """``count`` due queued jobs in two queues and five priorities, by one INSERT (no
    ANALYZE: the callers decide what the statistics know)."""
    await conn.execute(
        "INSERT INTO pgq.jobs (type, queue, priority)"
        " SELECT 'bulk', CASE WHEN n % 3 = 0 THEN 'other' ELSE 'default' END, n % 5"
        "   FROM generate_series(1, $1) AS n",
        count,
    )


async def prepare(conn: asyncpg.Connection, statistics: str) -> None:
    await conn.execute("ALTER TABLE pgq.jobs SET (autovacuum_enabled = false)")
    if statistics == "analyzed before the load":
        # the statistics describe a table of finished jobs: no queued job in the sample
        await load(conn, 1_000)
        await conn.execute(
            "UPDATE pgq.jobs SET status = 'succeeded', attempts = 1, finished_at = now()"
        )
        await conn.execute("VACUUM ANALYZE pgq.jobs")
    await load(conn, JOBS)
    if statistics == "analyzed":
        await conn.execute("ANALYZE pgq.jobs")


STATISTICS = ["never analyzed", "analyzed before the load", "analyzed"]


async def nested_plans(conn: asyncpg.Connection, calls: int, **settings: str) -> list[str]:
    """The plans auto_explain logs (with its ``settings``) for every statement, nested ones
    included, of ``calls`` claims of 10 from the default queue, each rolled back."""
    try:
        await conn.execute("LOAD 'auto_explain'")
    except asyncpg.PostgresError as exc:
        pytest.skip(f"auto_explain is not available: {exc}")
    settings = {"log_nested_statements": "on", "log_level": "notice", **settings}
    await conn.execute(
        "SET client_min_messages = notice;"
        + "".join(f" SET auto_explain.{k} = {v};" for k, v in settings.items())
        + " SET auto_explain.log_min_duration = 0"
    )
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(str(message.message)))
    try:
        for _ in range(calls):
            await rows_read(conn, queries.claim(conn, "w", 10, ["default"]))
    finally:
        await conn.execute("RESET auto_explain.log_min_duration")
    return plans


@pytest.mark.parametrize("statistics", STATISTICS)
@pytest.mark.parametrize("queues", [["default"], None], ids=["one-queue", "every-queue"])
async def test_claim_reads_a_few_rows_whatever_the_statistics(
    conn: asyncpg.Connection, statistics: str, queues: list[str] | None
) -> None:
    await prepare(conn, statistics)
    # more than five calls: PL/pgSQL's plan cache decides on its plans after the fifth
    for _ in range(7):
        jobs, seq, idx = await rows_read(conn, queries.claim(conn, "w", 10, queues))
        assert len(jobs) == 10 and {j.priority for j in jobs} == {0}
        assert seq == 0, f"claim scanned {seq} rows of pgq.jobs sequentially"
        assert idx <= 60, f"claim fetched {idx} rows through indexes"


@pytest.mark.parametrize("statistics", STATISTICS)
async def test_no_query_of_a_claim_is_compiled_by_jit(
    conn: asyncpg.Connection, statistics: str
) -> None:
    if not await conn.fetchval("SELECT pg_jit_available()"):
        pytest.skip("this PostgreSQL server has no JIT support")
    await prepare(conn, statistics)
    # every plan of the session above the threshold: as a claim's generic plans at 10M jobs
    await conn.execute(
        "SET jit = on; SET jit_above_cost = 0; SET jit_inline_above_cost = -1;"
        " SET jit_optimize_above_cost = -1"
    )
    plans = await nested_plans(conn, 7)
    nested = [p for p in plans if "jobs_claim_idx" in p]
    assert nested, f"auto_explain logged no plan of the claim's walk: {plans[:3]}"
    # the test's statements (the call, the row counts, asyncpg's type look-up) are compiled
    own = ("pgq.claim(", "pg_stat_xact_user_tables", "set_config('jit'")
    compiled = [p for p in plans if "JIT:" in p and not any(o in p for o in own)]
    assert not compiled, f"{len(compiled)} queries of pgq.claim were compiled:\n{compiled[0]}"


async def test_a_claim_steps_once_over_the_entries_of_jobs_that_left_queued(
    conn: asyncpg.Connection,
) -> None:
    """Jobs that left queued keep their jobs_claim_idx entries, at the head of their
    priority, until VACUUM. The walk finds the first queued job of the priority once and
    starts there, instead of stepping over those entries twice (hop, then pick)."""
    await conn.execute("ALTER TABLE pgq.jobs SET (autovacuum_enabled = false)")
    await conn.execute(
        "INSERT INTO pgq.jobs (type) SELECT 'bulk' FROM generate_series(1, $1)", JOBS
    )
    await conn.execute("ANALYZE pgq.jobs")
    await conn.execute(
        "UPDATE pgq.jobs SET status = 'succeeded', attempts = 1, finished_at = now()"
        " WHERE id <= (SELECT max(id) - 100 FROM pgq.jobs)"
    )
    pages = await conn.fetchval("SELECT pg_relation_size('pgq.jobs_claim_idx') / 8192")
    # the first walk visits the heap for each entry and marks the dead ones in the index
    await rows_read(conn, queries.claim(conn, "w", 10, ["default"]))
    plans = await nested_plans(conn, 1, log_analyze="on", log_buffers="on", log_timing="off")
    [walk] = [p for p in plans if "_queued_priorities" in p or "jobs_claim_idx" in p][:1]
    # the plan's first Buffers line is its total
    read = sum(
        int(n) for n in re.findall(r"(?:hit|read)=(\d+)", walk.split("Buffers:")[1].split("\n")[0])
    )
    assert read <= pages + 20, f"the walk read {read} buffers; the claim index has {pages} pages"


async def test_next_due_steps_once_over_the_entries_of_jobs_that_left_queued(
    conn: asyncpg.Connection,
) -> None:
    """pgq.next_due (a runner going idle) starts each priority at the first queued job its
    hop found, as the claim's walk does: one pass over the entries VACUUM has not removed."""
    await conn.execute("ALTER TABLE pgq.jobs SET (autovacuum_enabled = false)")
    await conn.execute(
        "INSERT INTO pgq.jobs (type, run_at) SELECT 'bulk', now() + interval '1 hour'"
        "  FROM generate_series(1, $1)",
        JOBS,
    )
    await conn.execute("ANALYZE pgq.jobs")
    await conn.execute(
        "UPDATE pgq.jobs SET status = 'succeeded', attempts = 1, finished_at = now()"
        " WHERE id <= (SELECT max(id) - 100 FROM pgq.jobs)"
    )
    pages = await conn.fetchval("SELECT pg_relation_size('pgq.jobs_claim_idx') / 8192")
    due = "SELECT next_run_at FROM pgq.next_due(ARRAY['default'])"
    first = await conn.fetchval(due)  # also marks the dead entries in the index
    assert first == await conn.fetchval("SELECT min(run_at) FROM pgq.jobs WHERE status = 'queued'")
    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {due}")
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    read = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    assert read <= pages + 20, f"next_due read {read} buffers; the claim index has {pages} pages"

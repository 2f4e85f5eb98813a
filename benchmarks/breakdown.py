"""Per-job cost of pgq's database-mode drain and of the single-job enqueue, pgq alone.

    python -m benchmarks.breakdown [--n 20000] [--batch 50] [--running 0] [--profile out.prof]

Each part runs in a fresh database ``bench_breakdown_<pid>`` (dropped at the end):

* ``drain``: N no-op jobs (``enqueue_many``), a CHECKPOINT, then one in-process
  ``pgq.Runner`` at ``--concurrency``. Per job: wall µs, this process's CPU µs (Python and
  asyncpg), the CPU µs of every Postgres backend of the database (from /proc: the server
  is on this machine); claim and
  ``complete_many`` calls; updates that were HOT; the share of the wall time the claim
  loop waited for claims (``claim_wait_share``), and the part of it with no handler
  running (``claim_idle_share``: slots idle for want of claimed jobs).
  ``--profile FILE`` runs it under cProfile and prints the top functions.
* ``sql``: the same N jobs moved by ``pgq.claim(w, batch)`` and
  ``pgq.complete_many`` in a loop on one connection: client-timed µs per job of each
  call, backend CPU per job, and ``EXPLAIN (ANALYZE, BUFFERS, WAL)`` of the statements
  inside one claim and one ``complete_many`` (auto_explain, nested statements).
  ``--running R`` first claims R more jobs for another worker and keeps them running
  (claimed after the load's ANALYZE, so the statistics say no job runs, as autovacuum
  leaves them after a bulk enqueue): a cost that grows with the running jobs shows up in
  ``rows_read`` (rows of pgq.jobs read per job, claims and completions together) and in
  the plans.
* ``enqueue``: N ``Client.enqueue`` calls, one job per transaction, on one connection,
  with a runner registered idle (so the doorbell rings) and without: µs, CPU and WAL per
  job, and how many transactions sent a NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

os.environ.setdefault("PGQ_LOG_LEVEL", "warning")

import pgq
from pgq import queries

DB = f"bench_breakdown_{os.getpid()}"
TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds used so far by these (Postgres backend) processes."""
    user = system = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / TICKS
        system += int(fields[12]) / TICKS
    return user, system


class Meter:
    """Deltas of wall time, this process's CPU, the database's backends' CPU and the jobs
    table's update counters, between start() and stop(). (Not WAL: pg_current_wal_lsn()
    counts every database of the server; the plans below give each call's own WAL.)"""

    def __init__(self, admin: asyncpg.Connection) -> None:
        self.admin = admin
        self.seen: set[int] = set()

    async def _pids(self) -> list[int]:
        rows = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", DB
        )
        self.seen |= {r["pid"] for r in rows}
        return sorted(self.seen)

    async def _snap(self) -> dict[str, float]:
        tab = await self.admin.fetchrow(
            "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd,"
            " coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0) AS rows_read"
            " FROM pg_stat_user_tables "
            "WHERE relid = 'pgq.jobs'::regclass"
        )
        pg_user, pg_sys = backend_cpu(await self._pids())
        me = os.times()
        return {
            "wall": time.perf_counter(),
            "cpu": me.user,
            "sys": me.system,
            "pg": pg_user,
            "pg_sys": pg_sys,
            **{k: float(v) for k, v in (tab or {}).items()},
        }

    async def start(self) -> None:
        await self.admin.execute("SELECT pg_stat_clear_snapshot()")
        self.t0 = await self._snap()

    async def sample(self) -> None:
        await self._pids()  # remember backends that may be gone by stop()

    async def stop(self, n: int) -> dict[str, float]:
        await asyncio.sleep(0.6)  # the statistics collector's flush (PGSTAT_MIN_INTERVAL)
        await self.admin.execute("SELECT pg_stat_clear_snapshot()")
        t1 = await self._snap()
        t1["wall"] -= 0.6
        d = {k: t1[k] - self.t0.get(k, 0.0) for k in t1}
        return {
            "wall_us": d["wall"] / n * 1e6,
            # system time is mostly the loopback TCP stack, which runs in the sender's
            # system call: it counts on whichever side sends
            "python_user_us": d["cpu"] / n * 1e6,
            "python_sys_us": d["sys"] / n * 1e6,
            "postgres_user_us": d["pg"] / n * 1e6,
            "postgres_sys_us": d["pg_sys"] / n * 1e6,
            "updates": d.get("n_tup_upd", 0.0) / n,
            "hot_updates": d.get("n_tup_hot_upd", 0.0) / n,
            "inserts": d.get("n_tup_ins", 0.0) / n,
            "rows_read": d.get("rows_read", 0.0) / n,
        }


@contextlib.asynccontextmanager
async def fresh(base: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    admin = await asyncpg.connect(base + "/postgres")
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    dsn = f"{base}/{DB}"
    local = None
    try:
        async with pgq.Client(dsn) as client:
            await client.migrate()
        local = await asyncpg.connect(dsn)
        yield dsn, local
    finally:
        if local is not None:
            await local.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        await admin.close()


async def load(dsn: str, admin: asyncpg.Connection, n: int) -> None:
    async with pgq.Client(dsn) as client:
        await client.enqueue_many([{"type": "NOOP", "args": {"i": i}} for i in range(n)])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE pgq.jobs")
    finally:
        await conn.close()
    await admin.execute("CHECKPOINT")


async def drain(base: str, n: int, concurrency: int, profile: str | None) -> dict[str, Any]:
    async with fresh(base) as (dsn, admin):
        await load(dsn, admin, n)
        runner = pgq.Runner(dsn=dsn, concurrency=concurrency)
        count = 0

        @runner.handler("NOOP")
        async def noop(job: pgq.Job) -> None:
            nonlocal count
            count += 1

        source = pgq.runner.DatabaseSource(dsn)
        claiming = {"s": 0.0, "idle_s": 0.0}
        claim = source.claim

        async def timed_claim(max_jobs: int) -> list[pgq.Job]:
            # the claim loop's wait for each claim, and the part of it with no handler
            # running (slots idle: what claiming ahead is for)
            idle = runner.running_jobs == 0
            t0 = time.perf_counter()
            try:
                return await claim(max_jobs)
            finally:
                took = time.perf_counter() - t0
                claiming["s"] += took
                if idle and runner.running_jobs == 0:
                    claiming["idle_s"] += took

        source.claim = timed_claim  # type: ignore[method-assign]
        meter = Meter(admin)
        await meter.start()
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        task = asyncio.create_task(runner.run(source=source))
        while True:
            await asyncio.sleep(0.05)
            await meter.sample()
            if runner.counts["succeeded"] >= n:
                break
            if task.done():
                task.result()
        if prof:
            prof.disable()
        wall = time.perf_counter() - meter.t0["wall"]
        result = await meter.stop(n)
        result.update(claims=source.claims, batches=source.batches)
        result["claim_wait_share"] = claiming["s"] / wall
        result["claim_idle_share"] = claiming["idle_s"] / wall
        runner.stop()
        await task
        if prof and profile:
            prof.dump_stats(profile)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return result


async def sql_loop(base: str, n: int, batch: int, running: int = 0) -> dict[str, Any]:
    async with fresh(base) as (dsn, admin):
        await load(dsn, admin, n + running)
        conn = await asyncpg.connect(dsn)
        for k in range(0, running, 10000):  # held by another worker until the end
            held = min(10000, running - k)
            await conn.execute("SELECT count(*) FROM pgq.claim('held', $1)", held)
        meter = Meter(admin)
        claim_s = complete_s = 0.0
        claim_ms: list[float] = []
        await meter.start()
        while True:
            t0 = time.perf_counter()
            rows = await conn.fetch(
                "SELECT id, attempts, lease_token FROM pgq.claim('w', $1)", batch
            )
            claim_s += time.perf_counter() - t0
            claim_ms.append((time.perf_counter() - t0) * 1000)
            if not rows:
                break
            t0 = time.perf_counter()
            await conn.fetch(
                "SELECT * FROM pgq.complete_many('w', $1, $2, NULL, $3)",
                [r["id"] for r in rows],
                [r["attempts"] for r in rows],
                [r["lease_token"] for r in rows],
            )
            complete_s += time.perf_counter() - t0
        result = await meter.stop(n)
        result.update(claim_us=claim_s / n * 1e6, complete_many_us=complete_s / n * 1e6)
        # a claim's cost as the drain goes on: the first and the last 20 claims (median ms)
        result["claim_ms_first_20"] = statistics.median(claim_ms[:20])
        result["claim_ms_last_20"] = statistics.median(claim_ms[-21:-1])
        # the plans of the statements inside one more claim and complete_many
        await queries.enqueue_many(conn, [{"type": "NOOP"} for _ in range(batch)])
        plans: list[str] = []
        conn.add_log_listener(lambda _c, msg: plans.append(msg.message))
        await conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;"
            "SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on;"
            "SET auto_explain.log_wal = on;"
            "SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice;"
        )
        rows = await conn.fetch("SELECT id, attempts, lease_token FROM pgq.claim('w', $1)", batch)
        await conn.fetch(
            "SELECT * FROM pgq.complete_many('w', $1, $2, NULL, $3)",
            [r["id"] for r in rows],
            [r["attempts"] for r in rows],
            [r["lease_token"] for r in rows],
        )
        await conn.close()
        result["plans"] = plans
        return result


async def enqueue_loop(base: str, n: int, idle_runner: bool) -> dict[str, Any]:
    async with fresh(base) as (dsn, admin):
        notified = 0
        listen = await asyncpg.connect(dsn)
        await listen.add_listener("pgq_default", lambda *_: None)
        if idle_runner:
            # a runner registered idle: every enqueue rings the doorbell
            await listen.execute("SELECT pgq.listen_idle(ARRAY['default'])")

        def on_notify(*_: object) -> None:
            nonlocal notified
            notified += 1

        await listen.add_listener("pgq_default", on_notify)
        async with pgq.Client(dsn) as client:
            await client.enqueue("NOOP", {"i": -1})  # warm up the connection
            meter = Meter(admin)
            await meter.start()
            for i in range(n):
                await client.enqueue("NOOP", {"i": i})
            result = await meter.stop(n)
        await asyncio.sleep(0.2)
        result["plans"] = await explain_enqueue(dsn)
        await listen.close()
        result["notify_per_job"] = (notified - (1 if idle_runner else 0)) / n
        return result


async def explain_enqueue(dsn: str) -> list[str]:
    """auto_explain of one Client.enqueue's statement: its time, buffers and WAL."""
    plans: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        conn.add_log_listener(lambda _c, msg: plans.append(msg.message))
        await conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;"
            "SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on;"
            "SET auto_explain.log_wal = on; SET auto_explain.log_level = notice;"
        )
        await queries.enqueue(conn, "NOOP", {"i": -2})
    finally:
        await conn.close()
    return [p for p in plans if "pgq.enqueue($1" in p]


def show(name: str, r: dict[str, Any]) -> None:
    plans = r.pop("plans", None)
    print(f"## {name}")
    for k, v in r.items():
        print(f"  {k:20} {v:,.2f}" if isinstance(v, float) else f"  {k:20} {v}")
    for plan in plans or ():
        print(plan)


async def amain() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dsn", default=os.environ.get("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432")
    )
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--running", type=int, default=0, help="sql part: jobs kept running meanwhile")
    p.add_argument("--parts", default="drain,sql,enqueue")
    p.add_argument("--profile")
    a = p.parse_args()
    parts = a.parts.split(",")
    if "drain" in parts:
        show("drain (Runner)", await drain(a.dsn, a.n, a.concurrency, a.profile))
    if "sql" in parts:
        show(
            f"claim + complete_many, batch {a.batch}, {a.running} other jobs running",
            await sql_loop(a.dsn, a.n, a.batch, a.running),
        )
    if "enqueue" in parts:
        m = min(a.n, 5000)
        show("enqueue, a runner idle (doorbell rings)", await enqueue_loop(a.dsn, m, True))
        show("enqueue, no runner idle", await enqueue_loop(a.dsn, m, False))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(amain())

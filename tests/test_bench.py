"""``pgq bench``: run as a subprocess against the test server, with tiny numbers."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ._postgres import ServerInfo
from .support import REPO


async def _pgq_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pgq", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _bench_databases(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pgq\\_bench\\_%'"
        )
    finally:
        await conn.close()
    return {r["datname"] for r in rows}


async def test_bench_reports_three_scenarios_and_cleans_up(pg_server: ServerInfo) -> None:
    before = await _bench_databases(pg_server.dsn)
    proc = await _pgq_bench(
        "--database-url", pg_server.dsn, "--jobs", "200", "--latency-samples", "10"
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^enqueue\s+200 jobs, Client\.enqueue_many\s+[\d,]+ jobs/s", out, re.M), out
    assert re.search(r"^drain\s+200 no-op jobs, Runner concurrency 50\s+[\d,]+ jobs/s", out, re.M)
    assert re.search(r"^latency\s+10 single enqueues.* p50 [\d.]+ .* max [\d.]+ ms", out, re.M)
    # 200 drained + 10 measured + 2 warm-up wake-up jobs
    assert "verified: all 212 jobs succeeded, each handler ran exactly once" in out
    name = re.search(r"scratch database (pgq_bench_[0-9a-f]+), dropped", out)
    assert name, out
    after = await _bench_databases(pg_server.dsn)
    assert name.group(1) not in after
    assert after <= before  # nothing left behind


async def test_bench_json(pg_server: ServerInfo) -> None:
    proc = await _pgq_bench(
        "--database-url", pg_server.dsn, "--jobs", "50", "--latency-samples", "5", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["enqueue"]["jobs"] == 50 and result["enqueue"]["jobs_per_s"] > 0
    assert result["drain"]["jobs"] == 50 and result["drain"]["jobs_per_s"] > 0
    latency = result["latency"]
    assert latency["samples"] == 5
    assert 0 <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert result["verification"] == {
        "ok": True,
        "jobs": 57,
        "succeeded": 57,
        "handler_calls": 57,
        "problems": [],
    }
    assert result["database"] not in await _bench_databases(pg_server.dsn)


async def test_bench_without_createdb_exits_2(pg_server: ServerInfo) -> None:
    role = f"pgq_bench_nocreatedb_{secrets.token_hex(3)}"
    password = secrets.token_hex(8)
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB PASSWORD '{password}'")
        parts = urlsplit(pg_server.dsn)
        host = parts.netloc.rpartition("@")[2]
        dsn = urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))
        proc = await _pgq_bench("--database-url", dsn, "--jobs", "10", "--latency-samples", "1")
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "CREATEDB" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""

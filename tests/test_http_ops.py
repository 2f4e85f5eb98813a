"""Operations: auth on and off, /health when the database is gone, /metrics values,
request ids and access logs, the lease monitor, and ``pgq coordinator`` as a process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

import aiohttp
import asyncpg
import pytest

import pgq
from pgq import queries
from pgq.coordinator.keys import MONITOR, POOL, WAITERS

from ._postgres import ServerInfo
from .support import dsn_for, free_port, live_app, wait_healthy, wait_until

# -- auth -----------------------------------------------------------------------------------


async def test_auth_on_requires_a_valid_bearer_token(dsn: str) -> None:
    async with live_app(dsn, api_tokens=("s3cret", "second-token")) as live:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer s3cre"},
            {"Authorization": "Basic czNjcmV0"},
            {"Authorization": "Bearer "},
            {"Authorization": "s3cret"},
        ):
            status, body, resp = await live.request(
                "POST", "/jobs", json={"type": "X"}, headers=headers
            )
            assert status == 401, headers
            assert body["error"]["code"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"] == "Bearer"
        # every /jobs… route, even one that does not exist, is behind the token
        for method, path in [("GET", "/jobs"), ("GET", "/jobs/1"), ("GET", "/jobs/nope")]:
            status, _, _ = await live.request(method, path)
            assert status == 401, path
        for token in ("s3cret", "second-token"):
            status, _, _ = await live.request(
                "POST", "/jobs", json={"type": "X"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert status == 201
        status, _, _ = await live.request(
            "GET", "/jobs", headers={"Authorization": "bearer s3cret"}
        )
        assert status == 200  # the scheme is case-insensitive
        for path in ("/health", "/metrics", "/openapi.json"):
            status, _, _ = await live.request("GET", path)
            assert status == 200, path


async def test_auth_off_needs_no_token(dsn: str) -> None:
    async with live_app(dsn) as live:
        status, _, _ = await live.request("POST", "/jobs", json={"type": "X"})
        assert status == 201


# -- /health, /metrics ------------------------------------------------------------------------


async def test_health_is_503_when_the_database_is_unreachable() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with live_app(dead, ready=False) as live:
        status, body, _ = await live.request("GET", "/health")
        assert status == 503 and body["error"]["code"] == "database_unavailable"
        status, body, _ = await live.request("POST", "/jobs", json={"type": "X"})
        assert status == 503 and body["error"]["code"] == "database_unavailable"
        status, body, _ = await live.request("GET", "/jobs/1?wait=0.2")
        assert status == 503
        status, body, _ = await live.request(
            "POST", "/jobs/claim", json={"worker_id": "w", "wait_seconds": 0.3}
        )
        assert status == 503 and body["error"]["code"] == "database_unavailable"
        # bad input is still a 400: validation comes before the database
        status, _, _ = await live.request("POST", "/jobs", json={"type": "X", "bogus": 1})
        assert status == 400
        status, text, _ = await live.request("GET", "/metrics")
        assert status == 200 and "pgq_listener_up 0.0" in text
        status, _, _ = await live.request("GET", "/openapi.json")
        assert status == 200


#: A request per kind of database use: the batcher, a plain query, a list, a batch, a
#: long-poll claim, a job wait, a transition.
_DB_ROUTES: list[tuple[str, str, object]] = [
    ("POST", "/jobs", {"type": "X"}),
    ("GET", "/jobs/1", None),
    ("GET", "/jobs?limit=5", None),
    ("POST", "/jobs/batch", {"jobs": [{"type": "X"}]}),
    ("POST", "/jobs/claim", {"worker_id": "w", "wait_seconds": 0.2}),
    ("GET", "/jobs/1?wait=0.2", None),
    ("DELETE", "/jobs/1", None),
]


async def test_a_broken_connection_is_503_not_500(dsn: str, conn: asyncpg.Connection) -> None:
    async with live_app(dsn) as live:
        status, _, _ = await live.request("POST", "/jobs", json={"type": "X"})
        assert status == 201
        # Mid-request: each statement blocks behind a lock, then its backend is terminated.
        # (The lock is held on another connection: pg_stat_activity is a snapshot taken
        # once per transaction, so the terminating one must not be inside it.)
        locker = await asyncpg.connect(dsn)
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE pgq.jobs IN ACCESS EXCLUSIVE MODE")
                tasks = [
                    asyncio.ensure_future(live.request(method, path, json=body))
                    for method, path, body in _DB_ROUTES
                    if "wait" not in path and "claim" not in path
                ]
                while not all(t.done() for t in tasks):
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    await asyncio.sleep(0.02)
        finally:
            await locker.close()
        for status, body, _ in await asyncio.gather(*tasks):
            assert status == 503 and body["error"]["code"] == "database_unavailable", body
        # A closed pool (asyncpg says InterfaceError "pool is closed"): 503 too, not a 500.
        await live.app[POOL].close()
        for method, path, body in _DB_ROUTES:
            status, answer, _ = await live.request(method, path, json=body)
            assert (status, answer["error"]["code"]) == (503, "database_unavailable"), path
        status, answer, _ = await live.request("GET", "/health")
        assert (status, answer["error"]["code"]) == (503, "database_unavailable")


def sample(text: str, line_prefix: str) -> float:
    """The value of the metric line that starts with ``line_prefix`` (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_jobs_from_the_database(dsn: str, conn: asyncpg.Connection) -> None:
    async with live_app(dsn, metrics_lag_seconds=0, metrics_cache_seconds=0) as live:
        await live.request("GET", "/metrics")  # first window starts now
        a, _ = await queries.enqueue(conn, "A")
        b, _ = await queries.enqueue(conn, "B", max_attempts=1)
        c, _ = await queries.enqueue(conn, "C", max_attempts=3)
        d, _ = await queries.enqueue(conn, "A", queue="other")
        await queries.enqueue(conn, "LATER", delay_seconds=3600)
        await conn.execute("UPDATE pgq.jobs SET run_at = run_at - interval '2 seconds'")
        await queries.claim(conn, "w", 3)
        await queries.complete(conn, a.id, "w")
        await queries.fail(conn, b.id, "w", "boom")  # no attempts left: dead
        await queries.fail(conn, c.id, "w", "boom")  # retried
        await queries.cancel(conn, d.id)
        status, text, _ = await live.request("GET", "/metrics")
        assert status == 200
        assert sample(text, 'pgq_jobs{queue="default",status="queued"}') == 2  # C, LATER
        assert sample(text, 'pgq_jobs{queue="default",status="succeeded"}') == 1
        assert sample(text, 'pgq_jobs{queue="other",status="cancelled"}') == 1
        finished = "pgq_jobs_finished_total"
        assert sample(text, f'{finished}{{outcome="succeeded",type="A"}}') == 1
        assert sample(text, f'{finished}{{outcome="dead",type="B"}}') == 1
        assert sample(text, f'{finished}{{outcome="retried",type="C"}}') == 1
        assert sample(text, f'{finished}{{outcome="cancelled",type="A"}}') == 1
        assert sample(text, 'pgq_job_duration_seconds_count{type="A"}') == 1
        assert sample(text, 'pgq_job_duration_seconds_count{type="B"}') == 1
        latency = 'pgq_job_start_latency_seconds_count{queue="default"}'
        assert sample(text, latency) == 2
        assert sample(text, 'pgq_job_start_latency_seconds_sum{queue="default"}') >= 4
        assert sample(text, 'pgq_oldest_queued_age_seconds{queue="default"}') == 0  # C backs off
        assert "pgq_notification_queue_usage " in text  # cluster-wide, so not exactly 0
        assert 0 <= sample(text, "pgq_notification_queue_usage") < 0.5
        assert "pgq_listener_up 1.0" in text
        # a second scrape counts nothing twice
        _, again, _ = await live.request("GET", "/metrics")
        assert sample(again, f'{finished}{{outcome="succeeded",type="A"}}') == 1
        assert sample(again, f'{finished}{{outcome="retried",type="C"}}') == 1
        assert 'pgq_http_request_duration_seconds_count{method="GET",route="/metrics"}' in again


async def test_oldest_queued_age_and_parked_requests(dsn: str, conn: asyncpg.Connection) -> None:
    await queries.enqueue(conn, "OLD")
    await conn.execute("UPDATE pgq.jobs SET run_at = now() - interval '90 seconds'")
    async with live_app(dsn) as live:
        claim = asyncio.create_task(
            live.request(
                "POST",
                "/jobs/claim",
                json={"worker_id": "w", "queues": ["idle"], "wait_seconds": 30},
            )
        )
        await wait_until(lambda: live.app[WAITERS].waiting == 1)
        _, text, _ = await live.request("GET", "/metrics")
        assert 90 <= sample(text, 'pgq_oldest_queued_age_seconds{queue="default"}') < 120
        assert sample(text, "pgq_long_polls_waiting") == 1
        await live.runner.cleanup()
        status, body, _ = await claim
        assert (status, body) == (200, {"jobs": []})


# -- request ids and access logs ------------------------------------------------------------


async def test_request_id_is_echoed_or_generated_and_logged(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgq.coordinator.access")
    async with live_app(dsn) as live:
        _, _, resp = await live.request("GET", "/health", headers={"X-Request-Id": "abc-123"})
        assert resp.headers["X-Request-Id"] == "abc-123"
        _, _, resp = await live.request("GET", "/nope")
        generated = resp.headers["X-Request-Id"]
        assert len(generated) == 32
        _, _, resp = await live.request(
            "GET", "/health", headers={"X-Request-Id": "bad id\twith spaces"}
        )
        assert resp.headers["X-Request-Id"] not in ("bad id\twith spaces", generated)
    lines = [r for r in caplog.records if getattr(r, "event", None) == "http.request"]
    by_id = {r.request_id: r for r in lines}  # type: ignore[attr-defined]
    assert by_id["abc-123"].status == 200 and by_id["abc-123"].path == "/health"  # type: ignore[attr-defined]
    assert by_id[generated].status == 404  # type: ignore[attr-defined]
    assert all(isinstance(r.duration_ms, float) for r in lines)  # type: ignore[attr-defined]


# -- the lease monitor ----------------------------------------------------------------------


async def test_lease_monitor_expires_a_silent_runners_job(
    dsn: str, client: pgq.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgq.coordinator.monitor")
    dead, _ = await queries.enqueue(client.pool, "SILENT", max_attempts=1, timeout_seconds=1)
    again, _ = await queries.enqueue(client.pool, "SILENT", max_attempts=5, timeout_seconds=1)
    async with live_app(dsn, lease_recheck_seconds=0.2) as live:
        status, body, _ = await live.request(
            "POST", "/jobs/claim", json={"worker_id": "crashed", "max_jobs": 2}
        )
        assert status == 200 and len(body["jobs"]) == 2
        # the lease is 1.25 s; nobody heartbeats; the monitor expires both
        done = await client.wait(dead.id, timeout=10)
        assert done.status == "dead" and done.error["kind"] == "lease_expired"
        await wait_until(lambda: live.app[MONITOR].expired == 2)
        requeued = await client.get(again.id)
        assert requeued is not None and requeued.status == "queued" and requeued.attempt == 1
    expired = [r for r in caplog.records if getattr(r, "event", None) == "job.lease_expired"]
    assert {r.job_id for r in expired} == {dead.id, again.id}  # type: ignore[attr-defined]
    assert {r.worker_id for r in expired} == {"crashed"}  # type: ignore[attr-defined]


# -- pgq coordinator, the process ----------------------------------------------------------


def coordinator_env(dsn: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env.pop("DATABASE_URL", None)
    if dsn:
        env["PGQ_DATABASE_URL"] = dsn
    env.update(extra)
    return env


def test_refuses_a_public_address_without_tokens() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgq", "coordinator", "--host", "0.0.0.0", "--port", "1"],
        env=coordinator_env("postgresql://nobody@127.0.0.1:1/x"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "PGQ_API_TOKENS" in proc.stderr and "Traceback" not in proc.stderr


def test_refuses_an_unmigrated_database(empty_dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgq", "coordinator", "--port", str(free_port())],
        env=coordinator_env(empty_dsn),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pgq migrate" in proc.stderr and "Traceback" not in proc.stderr


def test_refuses_a_database_it_cannot_use(pg_server: ServerInfo) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgq", "coordinator", "--port", str(free_port())],
        env=coordinator_env(dsn_for(pg_server.dsn, "pgq_no_such_database")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pgq_no_such_database" in proc.stderr and "Traceback" not in proc.stderr


async def test_sigterm_releases_long_polls_and_exits_0(dsn: str) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgq",
        "coordinator",
        "--port",
        str(port),
        env=coordinator_env(dsn),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, url, proc)

            async def claim() -> tuple[int, object]:
                async with http.post(
                    url + "/jobs/claim", json={"worker_id": "w", "wait_seconds": 60}
                ) as r:
                    return r.status, await r.json()

            waiting = asyncio.create_task(claim())

            async def parked() -> bool:
                async with http.get(url + "/metrics") as r:
                    return "pgq_long_polls_waiting 1.0" in await r.text()

            await wait_until(parked, timeout=10, interval=0.02)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            status, body = await asyncio.wait_for(waiting, 10)
            assert (status, body) == (200, {"jobs": []})
            code = await asyncio.wait_for(proc.wait(), 20)
            assert code == 0
            assert time.monotonic() - started < 10
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "coordinator.stopped" in stderr and "Traceback" not in stderr

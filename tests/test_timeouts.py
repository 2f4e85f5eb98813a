"""Timeouts on the coordinator's pool connections: a table locked by someone else, or a
pool with every connection taken, costs a request a 503 with ``Retry-After`` within the
configured timeouts, never a request that hangs; long polls are not cut by them."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg
import pytest

import pgq
from pgq.coordinator.keys import POOL

from .support import live_app

#: One of each kind of database use that a locked pgq.jobs blocks.
_REQUESTS: list[tuple[str, str, object]] = [
    ("POST", "/jobs", {"type": "X"}),
    ("GET", "/jobs/{id}", None),
    ("GET", "/jobs?limit=5", None),
    ("POST", "/jobs/batch", {"jobs": [{"type": "X"}]}),
    ("DELETE", "/jobs/{id}", None),
    ("POST", "/jobs/claim", {"worker_id": "w"}),
]


@pytest.mark.parametrize(
    "timeouts",
    [
        {"lock_timeout": 1.0, "statement_timeout": 0.0, "acquire_timeout": 2.0},
        {"lock_timeout": 0.0, "statement_timeout": 1.0, "acquire_timeout": 2.0},
    ],
    ids=["lock_timeout", "statement_timeout"],
)
async def test_a_locked_jobs_table_answers_503_within_the_timeouts(
    dsn: str, client: pgq.Client, timeouts: dict[str, float]
) -> None:
    job = await client.enqueue("X")
    # A small pool, so most of the 24 requests also wait for a connection (acquire timeout).
    async with live_app(dsn, pool_max_size=3, **timeouts) as live:
        locker = await asyncpg.connect(dsn)
        try:
            # held up to 40 s: far longer than any answer may take
            tx = locker.transaction()
            await tx.start()
            await locker.execute("SET statement_timeout = '40s'")
            await locker.execute("LOCK TABLE pgq.jobs IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            answers = await asyncio.gather(
                *(
                    live.request(
                        method,
                        path.format(id=job.id),
                        json=body,
                        timeout=aiohttp.ClientTimeout(total=20),
                    )
                    for _ in range(4)
                    for method, path, body in _REQUESTS
                )
            )
            elapsed = time.monotonic() - t0
            await tx.rollback()
        finally:
            await locker.close()
        for status, body, resp in answers:
            assert status == 503, body
            assert body["error"]["code"] in ("database_busy", "database_unavailable"), body
            assert resp.headers["Retry-After"] == "1"
        assert any(body["error"]["code"] == "database_busy" for _, body, _ in answers)
        # lock/statement (1 s) after waiting for a connection (≤ 2 s): seconds, not 40 s
        assert elapsed < 15, elapsed
        # and once the lock is gone, the same pool serves again
        status, body, _ = await live.request("GET", f"/jobs/{job.id}")
        assert status == 200 and body["id"] == job.id


async def test_long_polls_are_not_cut_by_the_statement_timeout(
    dsn: str, client: pgq.Client
) -> None:
    job = await client.enqueue("X", queue="slow")
    async with live_app(dsn, statement_timeout=0.5, lock_timeout=0.5) as live:
        t0 = time.monotonic()
        status, body, _ = await live.request("GET", f"/jobs/{job.id}?wait=2")
        assert status == 200 and body["status"] == "queued"
        status, body, _ = await live.request(
            "POST", "/jobs/claim", json={"worker_id": "w", "queues": ["empty"], "wait_seconds": 2}
        )
        assert (status, body) == (200, {"jobs": []})
        assert time.monotonic() - t0 >= 3.5  # both waited their full time


async def test_pool_connections_carry_the_timeouts(dsn: str) -> None:
    async with live_app(dsn, statement_timeout=12, lock_timeout=3) as live:
        pool = live.app[POOL]
        assert await pool.fetchval("SHOW statement_timeout") == "12s"
        assert await pool.fetchval("SHOW lock_timeout") == "3s"

"""Parked long polls: ended when their client leaves, capped, counted, and the LISTEN
channels of queues nobody waits on any more give their place to new ones."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson

from pgq import queries
from pgq.coordinator import waiters as waiters_module
from pgq.coordinator.keys import LISTENER, WAITERS

from .support import live_app, wait_until
from .test_http_ops import sample


async def _send_and_leave(url: str, request: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    await asyncio.sleep(0.05)  # let the server read it and park
    writer.close()


def _claim_request(queues: list[str], wait: float = 60) -> bytes:
    body = orjson.dumps({"worker_id": "gone", "queues": queues, "wait_seconds": wait})
    return (
        b"POST /jobs/claim HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


async def test_abandoned_long_polls_end_at_once(dsn: str, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X", queue="elsewhere")
    async with live_app(dsn) as live:
        waiters = live.app[WAITERS]
        job_wait = b"GET /jobs/%d?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % job.id
        await asyncio.gather(
            *(_send_and_leave(live.url, job_wait) for _ in range(150)),
            *(_send_and_leave(live.url, _claim_request(["gone"])) for _ in range(150)),
        )
        # every one of them ends when its client leaves, not 60 s later
        await wait_until(lambda: waiters.waiting == 0, timeout=15)
        # claims that were already in the database when their client left have finished
        await wait_until(lambda: waiters.orphaned_claims == 0, timeout=15)
        # and no claim is left parked to take a job nobody would receive
        await queries.enqueue(conn, "Y", queue="gone")
        await asyncio.sleep(0.5)
        status = await conn.fetchval("SELECT status FROM pgq.jobs WHERE queue = 'gone'")
        assert status == "queued"


async def test_a_claim_cut_off_mid_flight_gives_its_jobs_back(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(dsn) as live:
        waiters = live.app[WAITERS]
        job, _ = await queries.enqueue(conn, "X", queue="held")
        # the claim blocks inside the database behind a table lock; its client leaves
        async with conn.transaction():
            await conn.execute("LOCK TABLE pgq.jobs IN EXCLUSIVE MODE")
            await _send_and_leave(live.url, _claim_request(["held"], 5))
            await wait_until(lambda: waiters.waiting == 0, timeout=15)
        # the lock gone, the claim completes, and the job it took goes back at once
        row = await wait_until(
            lambda: conn.fetchrow(
                "SELECT status, last_error FROM pgq.jobs WHERE id = $1 AND status = 'queued' "
                "AND last_error IS NOT NULL",
                job.id,
            ),
            timeout=15,
        )
        assert row["last_error"]["kind"] == "released"
        assert "the client went away" in str(row["last_error"])


async def test_parked_requests_are_capped_and_counted(dsn: str, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X", queue="elsewhere")
    async with live_app(dsn, max_waiters=3) as live:
        waiters = live.app[WAITERS]
        parked = [
            asyncio.create_task(
                live.request(
                    "POST",
                    "/jobs/claim",
                    json={"worker_id": "w", "queues": ["idle"], "wait_seconds": 30},
                )
            ),
            asyncio.create_task(live.request("GET", f"/jobs/{job.id}?wait=30")),
            asyncio.create_task(live.request("GET", f"/jobs/{job.id}?wait=30")),
        ]
        await wait_until(lambda: waiters.waiting == 3)
        for method, path, body in [
            ("POST", "/jobs/claim", {"worker_id": "w", "wait_seconds": 5}),
            ("GET", f"/jobs/{job.id}?wait=5", None),
        ]:
            status, answer, resp = await live.request(method, path, json=body)
            assert status == 503 and answer["error"]["code"] == "too_many_waiters"
            assert resp.headers["Retry-After"] == "1"
        # what does not wait is served as usual
        status, _, _ = await live.request("GET", f"/jobs/{job.id}")
        assert status == 200
        status, _, _ = await live.request(
            "POST", "/jobs/claim", json={"worker_id": "w", "queues": ["idle"]}
        )
        assert status == 200
        _, text, _ = await live.request("GET", "/metrics")
        assert sample(text, "pgq_long_polls_waiting") == 3
        waiters.close()
        for task in parked:
            status, _, _ = await task
            assert status == 200


async def test_the_gauge_counts_polled_waiters_too(dsn: str, monkeypatch: object) -> None:
    monkeypatch.setattr(waiters_module, "MAX_CHANNELS", 1)  # type: ignore[attr-defined]
    async with live_app(dsn) as live:
        waiters = live.app[WAITERS]
        tasks = [
            asyncio.create_task(
                live.request(
                    "POST",
                    "/jobs/claim",
                    json={"worker_id": "w", "queues": [q], "wait_seconds": 30},
                )
            )
            for q in ("one", "two")  # "two" finds no room: it is polled
        ]
        await wait_until(lambda: waiters.waiting == 2)
        _, text, _ = await live.request("GET", "/metrics")
        assert sample(text, "pgq_long_polls_waiting") == 2
        waiters.close()
        await asyncio.gather(*tasks)


async def test_junk_queues_do_not_keep_a_fresh_queue_from_its_notifications(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(dsn) as live:
        waiters = live.app[WAITERS]
        listener = live.app[LISTENER]
        # 1,200 junk queue names in long polls, 100 per request (the most a claim takes)
        for n in range(12):
            junk = [f"junk_{n}_{i}" for i in range(100)]
            status, _, _ = await live.request(
                "POST",
                "/jobs/claim",
                json={"worker_id": "junk", "queues": junk, "wait_seconds": 0.05},
            )
            assert status == 200
        assert waiters.channels <= waiters_module.MAX_CHANNELS
        # a fresh queue is LISTENed, armed and woken by its notification
        claim = asyncio.create_task(
            live.request(
                "POST",
                "/jobs/claim",
                json={"worker_id": "w", "queues": ["fresh"], "wait_seconds": 20},
            )
        )
        await wait_until(lambda: listener.listening("pgq_fresh"), timeout=10)
        await wait_until(lambda: waiters.doorbell.armed(["fresh"]), timeout=10)
        started = time.monotonic()
        job, _ = await queries.enqueue(conn, "X", queue="fresh")
        status, answer, _ = await claim
        latency = time.monotonic() - started
        assert status == 200 and [j["id"] for j in answer["jobs"]] == [job.id]
        assert latency < 0.9, latency  # by notification; the polled path sleeps 1 s
        # evicted channels are UNLISTENed on the connection too
        await wait_until(lambda: not listener.listening("pgq_junk_0_0"), timeout=10)

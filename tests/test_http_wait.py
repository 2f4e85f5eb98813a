"""Event-driven long-polls: claim woken by an enqueue, ?wait woken by completion, a delayed
job waking its waiter without any notification, listener loss, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import pytest

from pgq import db, queries
from pgq.coordinator.keys import LISTENER, WAITERS

from .support import Live, live_app, wait_until


def parked(live: Live, n: int):
    return lambda: live.app[WAITERS].waiting == n


async def test_claim_long_poll_is_woken_by_an_enqueue(dsn: str, conn: asyncpg.Connection) -> None:
    async with live_app(dsn) as live:
        started = time.monotonic()
        claim = asyncio.create_task(
            live.request("POST", "/jobs/claim", json={"worker_id": "w", "wait_seconds": 30})
        )
        await wait_until(parked(live, 1))
        job, _ = await queries.enqueue(conn, "TMDB_SYNC", {"movieId": 1})  # another connection
        status, body, _ = await asyncio.wait_for(claim, 10)
        elapsed = time.monotonic() - started
    assert status == 200
    assert [j["id"] for j in body["jobs"]] == [job.id]
    assert body["jobs"][0]["status"] == "running"
    assert elapsed < 5, elapsed  # woken, not timed out (the wait was 30 s)


async def test_one_notification_many_waiters_each_job_claimed_once(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(dsn) as live:
        claims = [
            asyncio.create_task(
                live.request("POST", "/jobs/claim", json={"worker_id": f"w{i}", "wait_seconds": 30})
            )
            for i in range(3)
        ]
        await wait_until(parked(live, 3))
        first, _ = await queries.enqueue(conn, "X")
        done, pending = await asyncio.wait(claims, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        # the two others woke, found nothing and went back to waiting
        await wait_until(parked(live, 2))
        assert not any(c.done() for c in pending)
        await queries.enqueue_many(conn, [{"type": "X"}, {"type": "X"}])
        results = await asyncio.wait_for(asyncio.gather(*claims), 10)
    ids = [j["id"] for _, body, _ in results for j in body["jobs"]]
    assert len(ids) == 3 == len(set(ids))
    assert first.id in ids


async def test_claim_wakes_when_a_delayed_job_becomes_due(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(dsn) as live:
        claim = asyncio.create_task(
            live.request("POST", "/jobs/claim", json={"worker_id": "w", "wait_seconds": 30})
        )
        await wait_until(parked(live, 1))
        job, _ = await queries.enqueue(conn, "LATER", delay_seconds=1.0)
        started = time.monotonic()
        status, body, _ = await asyncio.wait_for(claim, 10)
        elapsed = time.monotonic() - started
    assert status == 200 and [j["id"] for j in body["jobs"]] == [job.id]
    assert 0.5 < elapsed < 4, elapsed  # slept until due (pgq.next_due), not until 30 s


async def test_claim_wait_ends_empty(dsn: str) -> None:
    async with live_app(dsn) as live:
        started = time.monotonic()
        status, body, _ = await live.request(
            "POST", "/jobs/claim", json={"worker_id": "w", "wait_seconds": 0.3}
        )
        elapsed = time.monotonic() - started
        assert live.app[WAITERS].waiting == 0
    assert (status, body) == (200, {"jobs": []})
    assert 0.25 < elapsed < 3


async def test_get_wait_is_woken_by_completion(dsn: str, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X")
    [claimed] = await queries.claim(conn, "w", 1)
    async with live_app(dsn) as live:
        started = time.monotonic()
        wait = asyncio.create_task(live.request("GET", f"/jobs/{job.id}?wait=30"))
        await wait_until(parked(live, 1))
        await queries.complete(conn, claimed.id, "w", {"ok": True})
        status, body, _ = await asyncio.wait_for(wait, 10)
        elapsed = time.monotonic() - started
    assert status == 200 and body["status"] == "succeeded" and body["result"] == {"ok": True}
    assert elapsed < 5


async def test_get_wait_answers_the_job_as_it_stands_when_the_wait_ends(
    dsn: str, conn: asyncpg.Connection
) -> None:
    job, _ = await queries.enqueue(conn, "X")
    async with live_app(dsn) as live:
        status, body, _ = await live.request("GET", f"/jobs/{job.id}?wait=0.2")
        assert (status, body["status"]) == (200, "queued")
        status, body, _ = await live.request("GET", "/jobs/424242?wait=5")
        assert status == 404 and body["error"]["code"] == "job_not_found"
        # already finished: answers at once
        await queries.cancel(conn, job.id)
        started = time.monotonic()
        status, body, _ = await live.request("GET", f"/jobs/{job.id}?wait=30")
        assert (status, body["status"]) == (200, "cancelled")
        assert time.monotonic() - started < 2


async def test_waiters_survive_losing_every_connection(dsn: str, conn: asyncpg.Connection) -> None:
    """Terminate the coordinator's connections (pool and LISTEN) while a claim waits: the
    listener reconnects, the waiter re-checks, and a job enqueued afterwards is claimed."""
    async with live_app(dsn) as live:
        listener = live.app[LISTENER]
        await listener.wait_connected(10)
        connects = listener.connects
        claim = asyncio.create_task(
            live.request("POST", "/jobs/claim", json={"worker_id": "w", "wait_seconds": 30})
        )
        await wait_until(parked(live, 1))
        killed = await conn.fetchval(
            """
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
            """
        )
        assert killed >= 1
        await wait_until(lambda: listener.connected and listener.connects > connects)
        # the reconnect also replaced the pool's dead idle connections: no request fails
        for _ in range(3):
            status, _, _ = await live.request("GET", "/jobs")
            assert status == 200
        job, _ = await queries.enqueue(conn, "AFTER")
        status, body, _ = await asyncio.wait_for(claim, 10)
        assert status == 200 and [j["id"] for j in body["jobs"]] == [job.id]
        status, _, _ = await live.request("GET", "/health")
        assert status == 200


async def test_a_claim_whose_client_left_claims_nothing(dsn: str, conn: asyncpg.Connection) -> None:
    async with live_app(dsn) as live:
        claim = asyncio.create_task(
            live.request("POST", "/jobs/claim", json={"worker_id": "gone", "wait_seconds": 30})
        )
        await wait_until(parked(live, 1))
        claim.cancel()  # the client gives up: its connection is closed
        with contextlib.suppress(asyncio.CancelledError):
            await claim
        server = live.runner.server
        assert server is not None
        # the server saw it close (the handler, still parked, keeps its entry)
        await wait_until(lambda: all(c.transport is None for c in server.connections))
        job, _ = await queries.enqueue(conn, "X")
        await wait_until(parked(live, 0))  # the waiter woke, saw its client gone, left
        assert (await queries.get_job(conn, job.id)).status == "queued"  # type: ignore[union-attr]


async def test_shutdown_releases_waiting_requests(dsn: str, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X", queue="other")
    async with live_app(dsn) as live:
        claim = asyncio.create_task(
            live.request("POST", "/jobs/claim", json={"worker_id": "w", "wait_seconds": 60})
        )
        wait = asyncio.create_task(live.request("GET", f"/jobs/{job.id}?wait=60"))
        await wait_until(parked(live, 2))
        started = time.monotonic()
        await live.runner.cleanup()  # what SIGTERM does
        (s1, b1, _), (s2, b2, _) = await asyncio.wait_for(asyncio.gather(claim, wait), 10)
        elapsed = time.monotonic() - started
    assert (s1, b1) == (200, {"jobs": []})
    assert (s2, b2["id"], b2["status"]) == (200, job.id, "queued")
    assert elapsed < 5
    # nothing was claimed on the way out
    assert (await queries.get_job(conn, job.id)).status == "queued"  # type: ignore[union-attr]


@pytest.mark.parametrize("wait", [0, 2])
async def test_claim_never_hands_a_job_to_two_waiters(
    dsn: str, conn: asyncpg.Connection, wait: float
) -> None:
    async with live_app(dsn) as live:
        await queries.enqueue_many(conn, [{"type": "X"} for _ in range(40)])
        results = await asyncio.gather(
            *(
                live.request(
                    "POST",
                    "/jobs/claim",
                    json={"worker_id": f"w{i}", "max_jobs": 3, "wait_seconds": wait},
                )
                for i in range(20)
            )
        )
    ids = [j["id"] for _, body, _ in results for j in body["jobs"]]
    assert len(ids) == len(set(ids)) == 40


async def test_one_listen_connection_serves_every_waiter(
    dsn: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    async with live_app(dsn) as live:
        await live.app[LISTENER].wait_connected(10)
        claims = [
            asyncio.create_task(
                live.request(
                    "POST",
                    "/jobs/claim",
                    json={"worker_id": f"w{i}", "wait_seconds": 30, "queues": [f"q{i}"]},
                )
            )
            for i in range(40)
        ]
        await wait_until(parked(live, 40))
        # 40 new channels subscribed at once, all really LISTENed on the one connection
        listener = live.app[LISTENER]
        await wait_until(lambda: all(listener.listening(f"pgq_q{i}") for i in range(40)))
        listening = await conn.fetchval(
            """
            SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND query ILIKE 'LISTEN%'
            """
        )
        # all 40 parked requests hold no connection: only the listener is LISTENing
        assert listening == 1
        await queries.enqueue_many(conn, [{"type": "X", "queue": f"q{i}"} for i in range(40)])
        results = await asyncio.wait_for(asyncio.gather(*claims), 15)
    assert sum(len(body["jobs"]) for _, body, _ in results) == 40
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_dedicated_listener_and_pool_are_separate(dsn: str) -> None:
    # sanity for the test above: a LISTEN issued by the listener shows up as its last query
    conn = await db.connect(dsn)
    try:
        await conn.execute("LISTEN pgq_probe")
        other = await db.connect(dsn)
        try:
            q = await other.fetchval(
                "SELECT query FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
            )
        finally:
            await other.close()
    finally:
        await conn.close()
    assert q.upper().startswith("LISTEN")

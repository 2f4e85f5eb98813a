"""Progress over HTTP, bulk retry and cancel, and the server-sent event streams
(``GET /events``, ``GET /jobs/{id}/events``) read by a real streaming HTTP client."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from pgq import queries
from pgq.coordinator import events as events_module
from pgq.coordinator.events import EVENT_HUB, Stream

from .support import live_app, wait_until

ME = "http-worker"


#: A well-formed lease token (no claim minted it).
T = "00000000-0000-4000-8000-000000000000"


async def claimed(conn: asyncpg.Connection, job_type: str = "T", **options: Any) -> int:
    job, _ = await queries.enqueue(conn, job_type, **options)
    [c] = await queries.claim(conn, ME, 1, job_types=[job_type])
    assert c.id == job.id
    return job.id


class SSE:
    """Reads an event stream frame by frame: (event name, data) or ("comment", text)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, timeout: float = 5.0) -> tuple[str, Any]:
        name, data = "message", ""
        while True:
            line = (await asyncio.wait_for(self.resp.content.readline(), timeout)).decode()
            if line == "":
                return ("eof", None)
            line = line.rstrip("\n")
            if line == "":
                if data:
                    return (name, orjson.loads(data))
                continue
            if line.startswith(":"):
                return ("comment", line[1:].strip())
            key, _, value = line.partition(": ")
            if key == "event":
                name = value
            elif key == "data":
                data += value

    async def next_event(self, timeout: float = 5.0) -> tuple[str, Any]:
        while True:
            name, data = await self.next(timeout)
            if name != "comment":
                return name, data


# -- progress -------------------------------------------------------------------------------


async def test_progress_is_stored_and_shown_in_job_json(dsn: str, conn: asyncpg.Connection) -> None:
    job_id = await claimed(conn)
    token = await conn.fetchval("SELECT lease_token::text FROM pgq.jobs WHERE id = $1", job_id)
    async with live_app(dsn) as live:
        status, body, _ = await live.request(
            "POST",
            f"/jobs/{job_id}/progress",
            json={"worker_id": ME, "attempt": 1, "lease_token": token,
                  "progress": {"done": 2, "total": 8}},
        )  # fmt: skip
        assert status == 200, body
        assert body["progress"] == {"done": 2, "total": 8}
        status, body, _ = await live.request("GET", f"/jobs/{job_id}")
        assert body["progress"] == {"done": 2, "total": 8}
        status, body, _ = await live.request(
            "POST",
            f"/jobs/{job_id}/progress",
            json={"worker_id": "other", "lease_token": token, "progress": {}},
        )
        assert status == 409, body
        status, body, _ = await live.request(
            "POST",
            f"/jobs/{job_id}/progress",
            json={"worker_id": ME, "lease_token": str(uuid.uuid4()), "progress": {}},
        )
        assert status == 409 and body["error"]["code"] == "lease_mismatch", body


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"progress": {"a": 1}, "lease_token": T}, "worker_id"),
        ({"worker_id": ME, "progress": {"a": 1}}, "lease_token"),
        ({"worker_id": ME, "lease_token": T}, "progress"),
        ({"worker_id": ME, "lease_token": T, "progress": [1]}, "progress"),
        ({"worker_id": ME, "lease_token": T, "progress": None}, "progress"),
        ({"worker_id": ME, "lease_token": T, "progress": {"log": "x" * 9000}}, "progress"),
        ({"worker_id": ME, "lease_token": T, "progress": {}, "attempt": 0}, "attempt"),
        ({"worker_id": ME, "lease_token": T, "progress": {}, "extra": 1}, "extra"),
    ],
)
async def test_progress_bad_bodies_are_400_naming_the_field(
    dsn: str, conn: asyncpg.Connection, payload: dict[str, Any], field: str
) -> None:
    job_id = await claimed(conn)
    async with live_app(dsn) as live:
        status, body, _ = await live.request("POST", f"/jobs/{job_id}/progress", json=payload)
        assert status == 400, body
        assert field in body["error"]["message"], body
    assert (await queries.get_job(conn, job_id)).progress is None


# -- bulk actions ---------------------------------------------------------------------------


async def test_bulk_retry_and_cancel(dsn: str, conn: asyncpg.Connection) -> None:
    dead = []
    for _ in range(3):
        job_id = await claimed(conn, "D", max_attempts=1)
        await queries.fail(conn, job_id, ME, "boom")
        dead.append(job_id)
    waiting = [(await queries.enqueue(conn, "W", queue="other"))[0].id for _ in range(2)]
    async with live_app(dsn) as live:
        status, body, _ = await live.request("POST", "/jobs/retry", json={"type": "nope"})
        assert (status, body) == (200, {"count": 0})
        status, body, _ = await live.request(
            "POST", "/jobs/retry", json={"statuses": ["dead"], "spread_seconds": 30}
        )
        assert (status, body) == (200, {"count": 3})
        status, body, _ = await live.request("POST", "/jobs/cancel", json={"queue": "other"})
        assert (status, body) == (200, {"count": 2})
        status, body, _ = await live.request("POST", "/jobs/cancel")  # no body: defaults
        assert (status, body) == (200, {"count": 3})  # the replayed ones were queued
        for bad, field in [
            ({"statuses": ["queued"]}, "statuses[0]"),
            ({"statuses": []}, "statuses"),
            ({"queue": "Bad Queue"}, "queue"),
            ({"spread_seconds": -1}, "spread_seconds"),
            ({"bogus": 1}, "bogus"),
        ]:
            status, body, _ = await live.request("POST", "/jobs/retry", json=bad)
            assert status == 400 and field in body["error"]["message"], (bad, body)
        status, body, _ = await live.request("POST", "/jobs/cancel", json={"spread_seconds": 1})
        assert status == 400 and "spread_seconds" in body["error"]["message"]
    rows = dict(await conn.fetch("SELECT id, status FROM pgq.jobs"))
    assert {rows[i] for i in dead} == {"cancelled"}
    assert {rows[i] for i in waiting} == {"cancelled"}


# -- event streams --------------------------------------------------------------------------


@pytest.fixture
async def live(dsn: str) -> AsyncIterator[Any]:
    async with live_app(dsn) as app:
        yield app


async def open_stream(live: Any, path: str) -> tuple[aiohttp.ClientResponse, SSE]:
    resp = await live.http.get(live.url + path, timeout=aiohttp.ClientTimeout(total=None))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    sse = SSE(resp)
    assert await sse.next() == ("comment", "connected")
    return resp, sse


async def test_events_stream_every_status_change_from_psql(
    live: Any, conn: asyncpg.Connection
) -> None:
    resp, sse = await open_stream(live, "/events")
    try:
        hub = live.app[EVENT_HUB]
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) FROM pgq.event_watchers"), timeout=5
        )
        assert hub.streams == 1
        job_id = await claimed(conn, "PSQL", max_attempts=1)
        assert await sse.next_event() == (
            "job",
            {"id": job_id, "status": "running", "queue": "default", "type": "PSQL"},
        )
        await conn.execute("SELECT pgq.progress($1, $2, '{\"percent\": 50}')", job_id, ME)
        name, data = await sse.next_event()
        assert (name, data["id"], data["event"]) == ("progress", job_id, "progress")
        started = time.monotonic()
        await conn.execute("SELECT pgq.fail($1, $2, '\"broken\"')", job_id, ME)
        assert await sse.next_event() == (
            "job",
            {"id": job_id, "status": "dead", "queue": "default", "type": "PSQL"},
        )
        assert time.monotonic() - started < 1.0
    finally:
        resp.close()
    # the browser went away: the stream is dropped and claims stop being announced
    await wait_until(lambda: live.app[EVENT_HUB].streams == 0, timeout=20)
    await wait_until(
        lambda: conn.fetchval("SELECT count(*) = 0 FROM pgq.event_watchers"), timeout=5
    )


async def test_events_filter_by_queue_and_type(live: Any, conn: asyncpg.Connection) -> None:
    resp, sse = await open_stream(live, "/events?queue=wanted&type=A")
    try:
        for queue, job_type in [("other", "A"), ("wanted", "B"), ("wanted", "A")]:
            job, _ = await queries.enqueue(conn, job_type, queue=queue)
            await queries.cancel(conn, job.id)
        name, data = await sse.next_event()
        assert (name, data["queue"], data["type"], data["status"]) == (
            "job",
            "wanted",
            "A",
            "cancelled",
        )
    finally:
        resp.close()
    for bad in ("/events?queue=Bad!", "/events?status=dead", "/events?type=" + "x" * 200):
        status, body, _ = await live.request("GET", bad)
        assert status == 400, (bad, body)


async def test_job_events_follow_one_job_until_it_ends(live: Any, conn: asyncpg.Connection) -> None:
    job_id = await claimed(conn, "ONE")
    other = await claimed(conn, "TWO")
    resp, sse = await open_stream(live, f"/jobs/{job_id}/events")
    try:
        name, data = await sse.next_event()
        assert (name, data["status"], data["progress"]) == ("job", "running", None)
        await queries.progress(conn, other, ME, {"percent": 10})  # another job: not here
        for pct in (25, 75):
            await queries.progress(conn, job_id, ME, {"percent": pct})
            name, data = await sse.next_event()
            assert (name, data["progress"]) == ("progress", {"percent": pct})
        await queries.complete(conn, job_id, ME, {"ok": True})
        name, data = await sse.next_event()
        assert (name, data["status"]) == ("job", "succeeded")
        assert await sse.next_event() == ("eof", None)  # closed after the terminal status
    finally:
        resp.close()
    status, body, _ = await live.request("GET", "/jobs/999999/events")
    assert status == 404, body


async def test_idle_streams_get_a_comment_and_end_on_shutdown(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "KEEPALIVE_SECONDS", 0.2)
    async with live_app(dsn, shutdown_timeout=10.0) as app:
        resp, sse = await open_stream(app, "/events")
        assert await sse.next(timeout=2) == ("comment", "keep-alive")
        started = time.monotonic()
        await app.runner.cleanup()
        assert await sse.next(timeout=5) == ("eof", None)
        assert time.monotonic() - started < 5  # not the 10 s shutdown timeout
        resp.close()


def test_a_slow_stream_keeps_a_bounded_buffer_and_is_told_to_resync() -> None:
    stream = Stream(queue=None, job_type=None, job_id=None)
    for i in range(events_module.BUFFER * 3):
        stream.offer({"id": i, "status": "queued", "queue": "default", "type": "T"})
    assert stream.items.qsize() <= events_module.BUFFER
    assert stream.overflowed == 2
    # the backlog was dropped: what is left starts with a resync, then newer events
    first = stream.items.get_nowait()
    assert first == {"event": "resync"}
    assert stream.items.get_nowait()["id"] > events_module.BUFFER

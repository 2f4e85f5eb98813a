"""The /queues endpoints, concurrency_key on every enqueue path (HTTP, Client), the flow
metrics and the CLI's queues / pause / resume (issue #11)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

import pgq
from pgq import queries

from .support import REPO, Live, live_app
from .test_http_api import conforms, is_error


@pytest.fixture
async def live(dsn: str) -> AsyncIterator[Live]:
    # /metrics afresh on every scrape (the tests read it before and after a change)
    async with live_app(dsn, metrics_cache_seconds=0) as app:
        yield app


async def test_get_queues_lists_queues_with_jobs_or_settings(live: Live, conn) -> None:
    await conn.execute("SELECT pgq.enqueue('t', '{}', 'mail')")
    await conn.execute("SELECT pgq.pause('reports')")
    status, body, _ = await live.request("GET", "/queues")
    assert status == 200
    names = [q["queue"] for q in body["queues"]]
    assert names == ["mail", "reports"]
    for q in body["queues"]:
        conforms(q, "Queue")
    mail = body["queues"][0]
    assert mail["paused"] is False and mail["counts"]["queued"] == 1
    assert mail["oldest_queued_at"] is not None
    assert body["queues"][1]["paused"] is True
    # an unknown valid name: zeros; an invalid name: 400 naming the field
    status, body, _ = await live.request("GET", "/queues/nothing_here")
    assert status == 200 and body["counts"]["queued"] == 0 and body["concurrency"] is None
    status, body, _ = await live.request("GET", "/queues/Bad-Name")
    assert status == 400 and is_error(body, "invalid_field") and "queue" in body["error"]["message"]


async def test_pause_resume_and_limits_over_http(live: Live, conn) -> None:
    await conn.execute("SELECT pgq.enqueue('t', '{}', 'mail')")
    status, body, _ = await live.request("POST", "/queues/mail/pause")
    assert status == 200 and body["paused"] is True
    conforms(body, "Queue")
    assert await queries.claim(conn, "w", 5, ["mail"]) == []
    status, body, _ = await live.request("POST", "/queues/mail/resume")
    assert status == 200 and body["paused"] is False

    limits = {"concurrency": 3, "key_concurrency": 1, "rate": 2.5}
    status, body, _ = await live.request("PUT", "/queues/mail/limits", json=limits)
    assert status == 200
    assert {k: body[k] for k in ("concurrency", "key_concurrency", "rate", "burst")} == {
        **limits,
        "burst": 3,
    }
    # absent = no limit
    status, body, _ = await live.request("PUT", "/queues/mail/limits", json={})
    assert status == 200 and body["concurrency"] is None and body["rate"] is None

    for bad, field in [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "3"}, "concurrency"),
        ({"concurrency": None}, "concurrency"),
        ({"key_concurrency": 1.5}, "key_concurrency"),
        ({"rate": 0}, "rate"),
        ({"rate": 0.0009}, "rate"),
        ({"rate": 1e-300}, "rate"),
        ({"rate": True}, "rate"),
        ({"burst": 5}, "burst"),
        ({"bogus": 1}, "bogus"),
    ]:
        status, body, _ = await live.request("PUT", "/queues/mail/limits", json=bad)
        assert status == 400, (bad, body)
        assert body["error"]["message"].startswith(field), (bad, body)
    status, body, _ = await live.request("POST", "/queues/mail/pause?x=1")
    assert status == 400


async def test_concurrency_key_on_post_jobs_and_the_client(live: Live, dsn: str, conn) -> None:
    status, body, _ = await live.request(
        "POST", "/jobs", json={"type": "t", "queue": "k", "concurrency_key": "customer-1"}
    )
    assert status == 201 and body["concurrency_key"] == "customer-1"
    conforms(body, "Job")
    status, body, _ = await live.request(
        "POST", "/jobs", json={"type": "t", "concurrency_key": "x" * 257}
    )
    assert status == 400 and body["error"]["message"].startswith("concurrency_key")
    status, body, _ = await live.request(
        "POST", "/jobs/batch", json={"jobs": [{"type": "t", "concurrency_key": "a"}, {"type": "t"}]}
    )
    assert status == 201 and [j["concurrency_key"] for j in body["jobs"]] == ["a", None]

    async with pgq.Client(dsn) as client:
        job = await client.enqueue("t", {}, queue="k", concurrency_key="customer-1")
        assert job.concurrency_key == "customer-1"
        jobs = await client.enqueue_many(
            [{"type": "t", "queue": "k", "concurrency_key": "customer-2"}, {"type": "t"}]
        )
        assert [j.concurrency_key for j in jobs] == ["customer-2", None]
        await client.set_limits("k", key_concurrency=1)
        got = await queries.claim(conn, "w", 10, ["k"])
        assert sorted(j.concurrency_key for j in got) == ["customer-1", "customer-2"]
        [k] = [q for q in await client.queues() if q["queue"] == "k"]
        assert k["key_concurrency"] == 1 and k["counts"]["running"] == 2


async def test_metrics_show_pause_limits_and_held_jobs(
    live: Live, conn: asyncpg.Connection
) -> None:
    await conn.execute("SELECT pgq.enqueue('t', '{}', 'held') FROM generate_series(1, 4)")
    await conn.execute("SELECT pgq.set_limits('held', concurrency => 1, rate => 5)")
    await conn.execute("SELECT pgq.pause('held')")
    status, text, _ = await live.request("GET", "/metrics")
    assert status == 200
    assert 'pgq_queue_paused{queue="held"} 1.0' in text
    assert 'pgq_queue_limit{limit="concurrency",queue="held"} 1.0' in text
    assert 'pgq_queue_limit{limit="rate",queue="held"} 5.0' in text
    assert 'pgq_queue_held_jobs{queue="held"} 4.0' in text
    await conn.execute("SELECT pgq.resume('held')")
    await queries.claim(conn, "w", 5, ["held"])  # one slot: 1 runs, 3 are held back
    _, text, _ = await live.request("GET", "/metrics")
    assert 'pgq_queue_paused{queue="held"} 0.0' in text
    assert 'pgq_queue_held_jobs{queue="held"} 3.0' in text


def test_cli_queues_pause_resume(dsn: str) -> None:
    def pgq_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgq", *args, "--database-url", dsn],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = pgq_cli("pause", "mail")
    assert out.returncode == 0, out.stderr
    assert "mail" in out.stdout and "paused" in out.stdout
    out = pgq_cli("queues")
    assert out.returncode == 0 and "paused" in out.stdout
    out = pgq_cli("resume", "mail")
    assert out.returncode == 0 and "active" in out.stdout
    out = pgq_cli("pause", "Not Valid")
    assert out.returncode == 2 and "invalid" in out.stderr


async def test_a_long_poll_waits_out_a_pause_and_is_woken_by_resume(live: Live, conn) -> None:
    await conn.execute("SELECT pgq.enqueue('t', '{}', 'mail')")
    await conn.execute("SELECT pgq.pause('mail')")
    claim = asyncio.create_task(
        live.request(
            "POST",
            "/jobs/claim",
            json={"worker_id": "w", "queues": ["mail"], "wait_seconds": 20},
        )
    )
    await asyncio.sleep(1.0)
    assert not claim.done()  # paused: the long poll holds, it gets nothing
    resumed_at = asyncio.get_running_loop().time()
    await conn.execute("SELECT pgq.resume('mail')")
    status, body, _ = await asyncio.wait_for(claim, 10)
    woke = asyncio.get_running_loop().time() - resumed_at
    assert status == 200 and len(body["jobs"]) == 1
    assert woke < 2.0, woke  # the resume notification, not the end of the wait

"""Lease tokens: every claim mints a secret per job; complete, fail, heartbeat, release
(and progress) refuse a wrong or stale one. Over HTTP the token is required, so knowing a
job's public worker_id and attempt is not enough to report on it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from pgq import LeaseMismatch, queries

from .support import Live, live_app, wait_until
from .zoo import expect_refusal, expect_sqlstate

VICTIM = "victim-worker-7f3a"


@pytest.fixture
async def live(dsn: str) -> AsyncIterator[Live]:
    async with live_app(dsn) as app:
        yield app


async def test_a_forged_completion_is_refused_and_the_job_stays_with_its_holder(
    live: Live, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    job, _ = await queries.enqueue(conn, "PAYMENT")
    status, claimed, _ = await live.request("POST", "/jobs/claim", json={"worker_id": VICTIM})
    assert status == 200
    [mine] = claimed["jobs"]
    token = mine["lease_token"]
    assert str(uuid.UUID(token)) == token

    # What anyone with a token for the API can read: the holder's name and the attempt.
    status, public, _ = await live.request("GET", f"/jobs/{job.id}")
    assert (public["worker_id"], public["attempts"]) == (VICTIM, 1)
    forged = {"worker_id": VICTIM, "attempt": 1, "success": True, "result": {"forged": True}}
    path = f"/jobs/{job.id}/complete"

    status, body, _ = await live.request("POST", path, json=forged)
    assert status == 400 and body["error"]["code"] == "invalid_field"
    assert "lease_token" in body["error"]["message"]
    wrong = str(uuid.uuid4())
    status, body, _ = await live.request("POST", path, json=forged | {"lease_token": wrong})
    assert status == 409 and body["error"]["code"] == "lease_mismatch"
    assert VICTIM not in body["error"]["message"] and token not in body["error"]["message"]
    for other in ("heartbeat", "release"):
        status, body, _ = await live.request(
            "POST",
            f"/jobs/{job.id}/{other}",
            json={"worker_id": VICTIM, "attempt": 1, "lease_token": wrong},
        )
        assert status == 409 and body["error"]["code"] == "lease_mismatch", other

    row = await conn.fetchrow(
        "SELECT status, worker_id, result FROM pgq.jobs WHERE id = $1", job.id
    )
    assert tuple(row) == ("running", VICTIM, None)

    # The token shows nowhere but in the claim answer.
    status, page, _ = await live.request("GET", "/jobs?status=running")
    assert status == 200 and token not in str(page) and token not in str(public)
    status, beat, _ = await live.request(
        "POST",
        f"/jobs/{job.id}/heartbeat",
        json={"worker_id": VICTIM, "attempt": 1, "lease_token": token},
    )
    assert status == 200 and "lease_token" not in beat

    status, done, _ = await live.request(
        "POST", path, json={"worker_id": VICTIM, "attempt": 1, "lease_token": token,
                            "success": True, "result": {"paid": 1}},
    )  # fmt: skip
    assert status == 200 and (done["status"], done["result"]) == ("succeeded", {"paid": 1})
    assert token not in str(done)
    assert token not in caplog.text


async def test_every_claim_mints_a_fresh_token_and_leaving_running_clears_it(
    conn: asyncpg.Connection,
) -> None:
    job, _ = await queries.enqueue(conn, "X", max_attempts=5)
    [first] = await queries.claim(conn, "w")
    assert first.lease_token is not None and first.lease_token not in repr(first)
    assert "lease_token" not in first.to_json()
    await queries.release(conn, job.id, "w", lease_token=first.lease_token)
    assert await conn.fetchval("SELECT lease_token FROM pgq.jobs WHERE id = $1", job.id) is None
    [second] = await queries.claim(conn, "w")
    assert second.lease_token not in (None, first.lease_token)

    # the first claim's token is stale now: every fenced call refuses it, and changes nothing
    before = dict(await conn.fetchrow("SELECT * FROM pgq.jobs WHERE id = $1", job.id))
    stale = first.lease_token
    calls = {
        "complete": queries.complete(conn, job.id, "w", None, None, stale),
        "fail": queries.fail(conn, job.id, "w", "x", lease_token=stale),
        "heartbeat": queries.heartbeat(conn, job.id, "w", None, stale),
        "release": queries.release(conn, job.id, "w", lease_token=stale),
        "progress": queries.progress(conn, job.id, "w", {"p": 1}, None, stale),
    }
    for action, call in calls.items():
        refused = await expect_refusal(call, LeaseMismatch, "PQ419", "is not held")
        assert "'w'" not in str(refused) and stale not in str(refused), action
    await expect_sqlstate(
        conn, "SELECT pgq.complete($1, 'w', NULL, NULL, $2)", job.id, stale, sqlstate="PQ419"
    )
    assert dict(await conn.fetchrow("SELECT * FROM pgq.jobs WHERE id = $1", job.id)) == before

    # a batch skips the job whose token is stale, and completes the one whose token is right
    other, _ = await queries.enqueue(conn, "X")
    [third] = await queries.claim(conn, "w")
    rows = await queries.complete_many(
        conn, "w", [job.id, other.id], [2, 1], [None, None], [stale, third.lease_token]
    )
    assert rows == [(job.id, False, "running"), (other.id, True, "succeeded")]

    # the right token, or none at all (a trusted SQL caller), is accepted
    await queries.heartbeat(conn, job.id, "w", 2, second.lease_token)
    done = await queries.complete(conn, job.id, "w")
    assert done.status == "succeeded"
    assert await conn.fetchval("SELECT lease_token FROM pgq.jobs WHERE id = $1", job.id) is None


async def test_a_token_cannot_outlive_running(conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X")
    with pytest.raises(asyncpg.CheckViolationError, match="jobs_lease_token_only_running"):
        await conn.execute(
            "UPDATE pgq.jobs SET lease_token = gen_random_uuid() WHERE id = $1", job.id
        )


async def test_jobs_claimed_for_a_client_that_left_are_given_back(
    live: Live, dsn: str, conn: asyncpg.Connection
) -> None:
    """The claim answer is the only place the lease tokens travel: when the client hangs up
    while its claim runs, the coordinator releases what it claimed instead of leaving the
    jobs to their lease."""
    job, _ = await queries.enqueue(conn, "X")
    blocker = await asyncpg.connect(dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE pgq.queues IN ACCESS EXCLUSIVE MODE")  # claim waits
        session = aiohttp.ClientSession()
        request = asyncio.ensure_future(
            session.post(live.url + "/jobs/claim", json={"worker_id": "left"})
        )

        async def claim_blocked() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%pgq.claim%'"
                )
            )

        await wait_until(claim_blocked)
        request.cancel()  # the client hangs up mid-claim
        await session.close()
        await asyncio.sleep(0.2)  # the coordinator's transport sees the close
        await tx.rollback()
    finally:
        await blocker.close()

    async def released() -> bool:
        row = await conn.fetchrow("SELECT status, attempts FROM pgq.jobs WHERE id = $1", job.id)
        return tuple(row) == ("queued", 1)

    await wait_until(released)
    stored = await queries.get_job(conn, job.id)
    assert stored is not None and stored.error["kind"] == "released"
    assert stored.max_attempts == job.max_attempts + 1  # the attempt was given back

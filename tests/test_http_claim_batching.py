"""Claim coalescing (``pgq.coordinator.claims``, ``pgq.claim_many``): concurrent
``POST /jobs/claim`` requests share a transaction, yet each gets its own jobs, held by its
own worker with their own lease tokens; a bad request fails alone; a client that left
gets nothing, or its jobs go back at once.

Claims pile up deterministically: a test connection holds ``LOCK TABLE pgq.jobs`` so the
first flush blocks in the database while the others queue behind it; claims started in
the same turn of the event loop form one batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from pgq import queries
from pgq.coordinator.keys import WAITERS
from pgq.errors import InvalidArgument, TransitionNotAllowed

from .support import live_app, wait_until


@asynccontextmanager
async def jobs_locked(dsn: str) -> AsyncIterator[None]:
    """Every claim blocks inside the database until the block ends."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE pgq.jobs IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def test_claim_many_deals_one_claim_out_to_each_worker(conn: asyncpg.Connection) -> None:
    await queries.enqueue_many(conn, [{"type": "D", "priority": i % 3} for i in range(5)])
    jobs = await queries.claim_many(conn, ["a", "b", "a", "c"], [2, 1, 1, 3])
    # claim order (priority, run_at, id); a got 2 then 1 more, b 1, c what was left
    ordered = await conn.fetch("SELECT id FROM pgq.jobs ORDER BY priority, run_at, id")
    assert [j.id for j in jobs] == [r["id"] for r in ordered]
    holders = [
        r["worker_id"]
        for r in await conn.fetch("SELECT worker_id FROM pgq.jobs ORDER BY priority, run_at, id")
    ]
    assert holders == ["a", "a", "b", "a", "c"]
    assert [j.worker_id for j in jobs] == holders
    assert {j.status for j in jobs} == {"running"} and {j.attempt for j in jobs} == {1}
    assert len({j.lease_token for j in jobs}) == 5
    # each holds its own: the right worker and token complete, another worker cannot
    b_job = next(j for j in jobs if j.worker_id == "b")
    with pytest.raises(TransitionNotAllowed):
        await queries.complete(conn, b_job.id, "a", None, 1, b_job.lease_token)
    done = await queries.complete(conn, b_job.id, "b", None, 1, b_job.lease_token)
    assert done.status == "succeeded"
    # nothing left: an empty answer, not an error
    assert await queries.claim_many(conn, ["a", "b"], [1, 1]) == []


@pytest.mark.parametrize(
    ("worker_ids", "max_jobs"),
    [([], []), (["a", "b"], [1]), (["a", ""], [1, 1]), (["a"], [0]), (["a", "b"], [9000, 1001])],
)
async def test_claim_many_refuses_bad_lists(
    conn: asyncpg.Connection, worker_ids: list[str], max_jobs: list[int]
) -> None:
    await queries.enqueue(conn, "D")
    with pytest.raises(InvalidArgument):
        await queries.claim_many(conn, worker_ids, max_jobs)
    assert await conn.fetchval("SELECT status FROM pgq.jobs") == "queued"


async def test_concurrent_http_claims_share_a_transaction_with_their_own_jobs(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await queries.enqueue_many(conn, [{"type": "A", "args": {"i": i}} for i in range(40)])
    await queries.enqueue_many(conn, [{"type": "B"} for _ in range(5)])
    await queries.enqueue_many(conn, [{"type": "A", "queue": "other"} for _ in range(5)])
    bodies = [{"worker_id": f"w{i}", "max_jobs": 1 + i % 3} for i in range(16)]
    bodies[3]["types"] = ["B"]
    bodies[5]["queues"] = ["other"]
    bodies[9]["worker_id"] = "w0"  # one worker, two claims at once
    async with live_app(dsn, enqueue_flushes=1) as live:
        claims = live.app[WAITERS].claims
        async with jobs_locked(dsn):
            tasks = [
                asyncio.ensure_future(live.request("POST", "/jobs/claim", json=b)) for b in bodies
            ]
            await wait_until(lambda: claims.pending + claims.sent >= len(bodies))
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks)
        results = await asyncio.gather(*tasks)
        # at most the first claims held by the lock, then everything that queued behind
        assert claims.batches <= 2 and claims.sent == len(bodies)
        assert [status for status, _, _ in results] == [200] * 16
        seen: set[int] = set()
        for body, (_, answer, _) in zip(bodies, results, strict=True):
            jobs = answer["jobs"]
            assert len(jobs) == body["max_jobs"]
            assert {j["worker_id"] for j in jobs} == {body["worker_id"]}
            assert {j["type"] for j in jobs} == set(body.get("types", ["A"]))
            assert {j["queue"] for j in jobs} == set(body.get("queues", ["default"]))
            seen.update(j["id"] for j in jobs)
            for job in jobs:  # each completes with its own lease token
                status, done, _ = await live.request(
                    "POST",
                    f"/jobs/{job['id']}/complete",
                    json={
                        "worker_id": body["worker_id"],
                        "success": True,
                        "attempt": 1,
                        "lease_token": job["lease_token"],
                    },
                )
                assert status == 200 and done["status"] == "succeeded"
        assert len(seen) == sum(b["max_jobs"] for b in bodies)
        tokens = await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE lease_token IS NOT NULL")
        assert tokens == 0
        assert await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE attempts > 1") == 0


async def test_a_bad_claim_in_a_batch_fails_alone(dsn: str, conn: asyncpg.Connection) -> None:
    await queries.enqueue_many(conn, [{"type": "A"} for _ in range(4)])
    async with live_app(dsn) as live:
        waiters = live.app[WAITERS]

        def claim(worker_id: str) -> asyncio.Future[list]:
            return asyncio.ensure_future(
                waiters.claim(
                    worker_id=worker_id,
                    max_jobs=2,
                    queues=["default"],
                    job_types=None,
                    wait_seconds=0,
                )
            )

        # started in one turn of the loop: one batch, which the database refuses
        good, bad, other = claim("good"), claim("x" * 300), claim("other")
        answers = await asyncio.gather(good, bad, other, return_exceptions=True)
        # one batch, refused as a whole; then each was claimed alone
        assert waiters.claims.batches == 1 and waiters.claims.sent == 3
        assert isinstance(answers[1], InvalidArgument)
        assert [j.worker_id for j in answers[0]] == ["good", "good"]  # type: ignore[union-attr]
        assert [j.worker_id for j in answers[2]] == ["other", "other"]  # type: ignore[union-attr]


async def test_a_caller_gone_while_its_batch_is_in_the_database_gets_its_jobs_released(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await queries.enqueue_many(conn, [{"type": "A"} for _ in range(4)])
    async with live_app(dsn) as live:
        waiters = live.app[WAITERS]

        def claim(worker_id: str) -> asyncio.Future[list]:
            return asyncio.ensure_future(
                waiters.claim(
                    worker_id=worker_id,
                    max_jobs=2,
                    queues=["default"],
                    job_types=None,
                    wait_seconds=0,
                )
            )

        async with jobs_locked(dsn):
            gone, stays = claim("gone"), claim("stays")
            await wait_until(lambda: waiters.claims.batches == 1)  # both, blocked inside
            gone.cancel()
            await asyncio.sleep(0)
            assert waiters.orphaned_claims == 1
        kept = await stays
        assert [j.worker_id for j in kept] == ["stays", "stays"]
        await wait_until(lambda: waiters.orphaned_claims == 0, timeout=15)
        rows = await conn.fetch(
            "SELECT status, last_error FROM pgq.jobs WHERE NOT (id = ANY ($1))",
            [j.id for j in kept],
        )
        assert [r["status"] for r in rows] == ["queued", "queued"]
        assert all(r["last_error"]["kind"] == "released" for r in rows)


async def test_a_caller_gone_before_its_batch_left_claims_nothing(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await queries.enqueue_many(conn, [{"type": "A"} for _ in range(4)])
    async with live_app(dsn) as live:
        waiters = live.app[WAITERS]

        def claim(worker_id: str) -> asyncio.Future[list]:
            return asyncio.ensure_future(
                waiters.claim(
                    worker_id=worker_id,
                    max_jobs=1,
                    queues=["default"],
                    job_types=None,
                    wait_seconds=0,
                )
            )

        async with jobs_locked(dsn):
            first = claim("first")
            await wait_until(lambda: waiters.claims.batches == 1)
            gone, later = claim("gone"), claim("later")
            await wait_until(lambda: waiters.claims.pending == 2)
            gone.cancel()
            await asyncio.sleep(0)
        assert len(await first) == 1 and len(await later) == 1
        assert waiters.orphaned_claims == 0
        holders = await conn.fetch("SELECT worker_id FROM pgq.jobs WHERE status = 'running'")
        assert sorted(r["worker_id"] for r in holders) == ["first", "later"]
        assert (
            await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE last_error IS NOT NULL") == 0
        )


async def test_claim_many_counts_a_concurrency_limit_once_for_all(
    conn: asyncpg.Connection,
) -> None:
    await queries.enqueue_many(conn, [{"type": "L", "queue": "lim"} for _ in range(6)])
    await conn.execute("SELECT pgq.set_limits('lim', concurrency => 3)")
    jobs = await queries.claim_many(conn, ["a", "b", "c", "d"], [1, 1, 1, 2], ["lim"])
    # three slots: the first three claimers get one each, the last none
    assert [j.worker_id for j in jobs] == ["a", "b", "c"]
    assert await queries.claim_many(conn, ["e", "f"], [1, 1], ["lim"]) == []
    running = await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE status = 'running'")
    assert running == 3

"""POST /jobs commit coalescing (``pgq.batching``): concurrent requests share a
transaction, yet each gets its own job and its own answer, only after the commit.

The tests make requests pile up deterministically: a test connection holds
``LOCK TABLE pgq.jobs`` so the first flush blocks in the database while the others queue
behind it (one flush in flight at a time), then lets go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from pgq import db, queries
from pgq.batching import Batcher, EnqueueBatcher
from pgq.coordinator.keys import BATCHER, COMPLETER
from pgq.errors import DatabaseUnavailable

from .support import Live, live_app, wait_until


@asynccontextmanager
async def table_locked(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Block every INSERT into pgq.jobs until the block ends."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE pgq.jobs IN EXCLUSIVE MODE")
            yield conn
    finally:
        await conn.close()


async def piled_up(live: Live, requests: list[Awaitable[Any]], queued: int) -> list[Any]:
    """Start ``requests``, wait until ``queued`` of them reached the batcher, return the
    tasks (still waiting: the caller holds the lock)."""
    batcher = live.app[BATCHER]
    tasks = [asyncio.ensure_future(r) for r in requests]
    await wait_until(lambda: batcher.pending + batcher.jobs >= queued)
    return tasks


async def test_concurrent_posts_share_a_transaction_and_each_gets_its_own_job(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(dsn, enqueue_flushes=1) as live:
        batcher = live.app[BATCHER]
        bodies = [
            {"type": "FAN", "arguments": {"i": i}, "priority": i % 5, "queue": f"q{i % 3}"}
            for i in range(50)
        ]
        bodies[7]["delay_seconds"] = 3600
        bodies[8]["run_at"] = "2040-01-02T03:04:05.25Z"
        async with table_locked(dsn):
            tasks = await piled_up(
                live, [live.request("POST", "/jobs", json=b) for b in bodies], queued=50
            )
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks), "answered before the commit"
        results = await asyncio.gather(*tasks)

        assert [status for status, _, _ in results] == [201] * 50
        jobs = [job for _, job, _ in results]
        assert len({j["id"] for j in jobs}) == 50
        for body, job, (_, _, resp) in zip(bodies, jobs, results, strict=True):
            assert job["arguments"] == body["arguments"]
            assert (job["priority"], job["queue"]) == (body["priority"], body["queue"])
            assert resp.headers["Location"] == f"/jobs/{job['id']}"
        assert jobs[8]["run_at"] == "2040-01-02T03:04:05.250000Z"
        assert jobs[7]["run_at"] > jobs[7]["created_at"]
        # one flush held by the lock (with whatever arrived with the first request), then
        # everything that queued behind it as one more
        assert batcher.batches <= 2 and batcher.jobs == 50
        rows = await conn.fetch("SELECT id, args FROM pgq.jobs ORDER BY id")
        assert {r["id"]: r["args"] for r in rows} == {j["id"]: j["arguments"] for j in jobs}

        _, text, _ = await live.request("GET", "/metrics")
        assert f"pgq_enqueue_batch_jobs_count {batcher.batches:.1f}" in text
        assert "pgq_enqueue_batch_jobs_sum 50.0" in text


async def test_a_job_the_database_refuses_fails_alone(dsn: str, conn: asyncpg.Connection) -> None:
    # A refusal only the database makes (Python's validation cannot foresee it).
    await conn.execute(
        """
        CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.type = 'POISON' THEN
                RAISE EXCEPTION 'cannot enqueue: POISON is refused here' USING ERRCODE = 'PQ400';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON pgq.jobs
            FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();
        """
    )
    async with live_app(dsn, enqueue_flushes=1) as live:
        batcher = live.app[BATCHER]
        bodies: list[dict[str, Any]] = [{"type": "OK", "arguments": {"i": i}} for i in range(12)]
        bodies[5] = {"type": "POISON", "arguments": {"i": 5}}
        bodies[9] = {"type": "OK", "priority": 10**6}  # refused by validation, before batching
        async with table_locked(dsn):
            tasks = await piled_up(
                live, [live.request("POST", "/jobs", json=b) for b in bodies], queued=11
            )
        results = await asyncio.gather(*tasks)

    statuses = [status for status, _, _ in results]
    assert statuses == [201] * 5 + [400] + [201] * 3 + [400] + [201] * 2
    poison, invalid = results[5][1], results[9][1]
    assert poison["error"]["code"] == "invalid_argument"
    assert poison["error"]["message"] == "cannot enqueue: POISON is refused here"
    assert invalid["error"]["code"] == "invalid_field"
    assert "priority" in invalid["error"]["message"]
    created = {job["id"]: job["arguments"] for status, job, _ in results if status == 201}
    rows = await conn.fetch("SELECT id, args FROM pgq.jobs")
    assert {r["id"]: r["args"] for r in rows} == created
    assert sorted(a["i"] for a in created.values()) == [0, 1, 2, 3, 4, 6, 7, 8, 10, 11]
    # at most one held flush and one refused batch (then each of its jobs on its own)
    assert batcher.batches <= 2 and batcher.jobs == 11


async def test_idempotent_repeats_make_one_job_one_201_and_the_rest_200(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(dsn, enqueue_flushes=1) as live:
        body = {"type": "EMAIL", "arguments": {"to": "a@b.c"}, "idempotency_key": "once"}
        plain = [{"type": "OTHER", "arguments": {"i": i}} for i in range(5)]
        async with table_locked(dsn):
            keyed = [
                asyncio.ensure_future(live.request("POST", "/jobs", json=body)) for _ in range(8)
            ]
            others = await piled_up(
                live, [live.request("POST", "/jobs", json=b) for b in plain], queued=5
            )
            await wait_until(
                lambda: conn.fetchval(
                    "SELECT count(*) = 9 FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )  # 8 keyed enqueues and the flush of the plain ones, all blocked on the lock
        keyed_results = await asyncio.gather(*keyed)
        other_results = await asyncio.gather(*others)

    assert sorted(status for status, _, _ in keyed_results) == [200] * 7 + [201]
    assert len({job["id"] for _, job, _ in keyed_results}) == 1
    assert [status for status, _, _ in other_results] == [201] * 5
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE type = 'EMAIL'") == 1
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 6


async def test_created_is_exact_within_one_transaction(conn: asyncpg.Connection) -> None:
    # The 201-or-200 of POST /jobs: two enqueues of one key in one transaction (same now()).
    async with conn.transaction():
        first, created_first = await queries.enqueue(conn, "X", idempotency_key="k")
        again, created_again = await queries.enqueue(conn, "X", idempotency_key="k")
        other, created_other = await queries.enqueue(conn, "X")
    assert (created_first, created_again, created_other) == (True, False, True)
    assert again.id == first.id != other.id


async def test_a_batch_that_loses_its_connection_is_not_retried(
    dsn: str, conn: asyncpg.Connection
) -> None:
    # The commit of a batch whose connection died may or may not have happened: answering
    # 503 is honest, enqueueing its jobs again could make duplicates.
    async with live_app(dsn, enqueue_flushes=1) as live:
        batcher = live.app[BATCHER]
        async with table_locked(dsn):
            tasks = await piled_up(
                live,
                [
                    live.request("POST", "/jobs", json={"type": "X", "arguments": {"i": i}})
                    for i in range(6)
                ],
                queued=6,
            )
            while not all(t.done() for t in tasks):  # kill each flush blocked on the lock
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                await asyncio.sleep(0.02)
            results = await asyncio.gather(*tasks)
        assert [status for status, _, _ in results] == [503] * 6
        assert {body["error"]["code"] for _, body, _ in results} == {"database_unavailable"}
        assert batcher.batches <= 2 and batcher.jobs == 6  # so one batch held several
        assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 0
        # and the coordinator carries on with fresh connections
        status, _, _ = await live.request("POST", "/jobs", json={"type": "X"})
        assert status == 201


async def test_batching_off_gives_each_request_its_own_transaction(dsn: str) -> None:
    async with live_app(dsn, enqueue_batch_max=1) as live:
        results = await asyncio.gather(
            *(live.request("POST", "/jobs", json={"type": "X"}) for _ in range(10))
        )
        assert [status for status, _, _ in results] == [201] * 10
        assert live.app[BATCHER].batches == 0


async def test_a_request_cancelled_while_queued_gets_no_job(
    dsn: str, conn: asyncpg.Connection
) -> None:
    pool = await db.create_pool(dsn, min_size=1, max_size=4)
    try:
        batcher = EnqueueBatcher(pool)
        async with table_locked(dsn):
            first = asyncio.ensure_future(batcher.enqueue({"job_type": "FIRST"}))
            await wait_until(lambda: batcher.jobs == 1)  # its flush waits for the lock
            kept = asyncio.ensure_future(batcher.enqueue({"job_type": "KEPT"}))
            gone = asyncio.ensure_future(batcher.enqueue({"job_type": "GONE"}))
            await wait_until(lambda: batcher.pending == 2)
            gone.cancel()
        (job_first, created_first), (job_kept, created_kept) = await asyncio.gather(first, kept)
        await batcher.close()
    finally:
        await pool.close()
    assert (job_first.type, created_first, job_kept.type, created_kept) == (
        "FIRST",
        True,
        "KEPT",
        True,
    )
    assert gone.cancelled()
    types = await conn.fetch("SELECT type FROM pgq.jobs ORDER BY id")
    assert [r["type"] for r in types] == ["FIRST", "KEPT"]
    assert batcher.jobs == 2


async def test_close_gives_up_on_a_flush_the_database_holds(dsn: str) -> None:
    pool = await db.create_pool(dsn, min_size=1, max_size=4)
    try:
        batcher = EnqueueBatcher(pool)
        async with table_locked(dsn):
            stuck = asyncio.ensure_future(batcher.enqueue({"job_type": "STUCK"}))
            await wait_until(lambda: batcher.jobs == 1)
            await batcher.close(timeout=0.1)
            with pytest.raises(DatabaseUnavailable):
                await stuck
    finally:
        await pool.close()


async def test_a_request_arriving_as_a_flush_ends_is_sent_at_once(dsn: str) -> None:
    # The first enqueue's caller resumes in the loop turn right after its flush found the
    # queue empty and ended. A flusher that left the in-flight set only in a done-callback
    # (one turn later) was still "in flight" then: the second enqueue started no flush and
    # stayed pending until some other request came along (forever, here).
    pool = await db.create_pool(dsn, min_size=1, max_size=4)
    try:
        batcher = EnqueueBatcher(pool)
        for i in range(3):
            # awaited in this task (asyncio.wait_for would add a task, hence a loop turn)
            async with asyncio.timeout(5):
                job, created = await batcher.enqueue({"job_type": "NEXT", "args": {"i": i}})
            assert (job.args, created) == ({"i": i}, True)
        assert batcher.batches == 3
        await batcher.close()
    finally:
        await pool.close()


async def test_items_that_queue_during_a_flush_go_as_the_next_batch() -> None:
    # The generic batcher without a database: a flush held open by the test.
    release = asyncio.Event()
    sent: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | BaseException]:
        sent.append(items)
        await release.wait()
        return [ValueError("odd") if i % 2 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_batch=3)
    futures = [batcher.submit(0)]
    await wait_until(lambda: sent == [[0]])
    futures += [batcher.submit(i) for i in range(1, 6)]
    assert batcher.pending == 5 and batcher.in_flight == 1
    release.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert sent == [[0], [1, 2, 3], [4, 5]]
    assert [r if isinstance(r, int) else "odd" for r in results] == [0, "odd", 20, "odd", 40, "odd"]
    assert batcher.in_flight == 0
    # and the next item, submitted after the last flush ended, starts a flush of its own
    assert await batcher.submit(6) == 60


# -- POST /jobs/{id}/complete ---------------------------------------------------------------


async def test_concurrent_completions_share_a_transaction_and_each_gets_its_own_answer(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "SELECT count(*) FROM pgq.enqueue_many((SELECT jsonb_agg(jsonb_build_object("
        "'type', 'DONE', 'args', jsonb_build_object('i', g))) FROM generate_series(1, 30) g))"
    )
    held = [
        (worker, r["id"], r["attempts"], str(r["lease_token"]))
        for worker, n in (("a", 20), ("b", 10))
        for r in await conn.fetch(
            "SELECT id, attempts, lease_token FROM pgq.claim($1, $2)", worker, n
        )
    ]
    assert len(held) == 30

    def body(worker: str, attempt: int, token: str, i: int) -> dict[str, Any]:
        return {
            "worker_id": worker,
            "success": True,
            "attempt": attempt,
            "lease_token": token,
            "result": [i, {"n": i}],
        }

    async with live_app(dsn, enqueue_flushes=1) as live:
        completer = live.app[COMPLETER]
        worker, first_id, attempt, token = held[0]
        requests = [
            live.request("POST", f"/jobs/{job_id}/complete", json=body(w, att, tok, job_id))
            for w, job_id, att, tok in held
        ]
        requests += [
            # held by a, not b: refused, alone
            live.request("POST", f"/jobs/{first_id}/complete", json=body("b", attempt, token, 0)),
            # the same job twice in one batch: the second finds it succeeded
            live.request(
                "POST", f"/jobs/{first_id}/complete", json=body(worker, attempt, token, 0)
            ),
            live.request("POST", "/jobs/999999/complete", json=body("a", 1, token, 0)),
        ]
        async with table_locked(dsn):
            tasks = [asyncio.ensure_future(r) for r in requests]
            await wait_until(lambda: completer.batches >= 1)
            await asyncio.sleep(0.2)  # the rest pile up behind the held flush
            assert not any(t.done() for t in tasks), "answered before the commit"
        results = await asyncio.gather(*tasks)
        assert completer.batches <= 3

    statuses = [status for status, _, _ in results]
    assert statuses[:30] == [200] * 30
    assert statuses[30:] == [409, 409, 404], results[30:]
    for (_, job_id, _, _), (_, job, _) in zip(held, results[:30], strict=True):
        assert job["id"] == job_id and job["status"] == "succeeded"
        assert job["result"] == [job_id, {"n": job_id}]
    rows = await conn.fetch("SELECT id, status, result FROM pgq.jobs ORDER BY id")
    assert {r["status"] for r in rows} == {"succeeded"}
    assert {r["id"]: r["result"] for r in rows} == {j: [j, {"n": j}] for _, j, _, _ in held}

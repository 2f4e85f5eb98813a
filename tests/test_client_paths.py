"""Client paths that must hold under trust and outages: transactional enqueue on any
asyncpg connection (one without pgq's codecs too), commit and rollback with the caller;
enqueues with an idempotency key ride out a short outage, enqueues without one say so at
once; a stored result nested too deep to encode is refused with a clear error, never a 500."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

import pgq

from .support import live_app, silent_proxy

ARGS = {"n": 1, "nested": {"list": [1, 2, {"deep": True}]}, "text": "é\u00e9"}


async def test_enqueue_commits_and_rolls_back_with_a_plain_asyncpg_connection(
    dsn: str, client: pgq.Client
) -> None:
    plain = await asyncpg.connect(dsn)  # the application's own: no pgq codecs on it
    try:
        async with plain.transaction():
            job = await client.enqueue("TX", ARGS, connection=plain)
            assert (job.args, job.status, job.errors) == (ARGS, "queued", [])
            bulk = await client.enqueue_many(
                [{"type": "TX", "args": {"i": i}} for i in range(3)], connection=plain
            )
            keyed = await client.enqueue_many(
                [{"type": "TX", "args": {"k": 1}, "idempotency_key": "tx-k"}], connection=plain
            )
            assert [j.args for j in bulk] == [{"i": 0}, {"i": 1}, {"i": 2}]
            assert keyed[0].args == {"k": 1} and keyed[0].idempotency_key == "tx-k"
            assert await client.get(job.id) is None  # not before the caller commits
        stored = await client.get(job.id)
        assert stored is not None and stored.args == ARGS
        assert all([await client.get(j.id) for j in (*bulk, *keyed)])

        tx = plain.transaction()
        await tx.start()
        rolled = await client.enqueue("TX", {"n": 2}, connection=plain)
        rolled_many = await client.enqueue_many(
            [{"type": "TX", "args": {"n": 3}}], connection=plain
        )
        await tx.rollback()
        assert await client.get(rolled.id) is None
        assert await client.get(rolled_many[0].id) is None
        # pgq left the caller's connection as it was: jsonb is still text there
        assert await plain.fetchval("""SELECT '{"a": 1}'::jsonb""") == '{"a": 1}'
    finally:
        await plain.close()


async def test_enqueue_on_a_connection_of_the_applications_own_pool(
    dsn: str, client: pgq.Client
) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            job = await client.enqueue("TX", ARGS, connection=conn)
        stored = await client.get(job.id)
        assert stored is not None and stored.args == ARGS
    finally:
        await pool.close()


async def test_a_keyed_enqueue_rides_out_an_outage_an_unkeyed_one_fails_at_once(
    dsn: str, client: pgq.Client
) -> None:
    async with silent_proxy(dsn) as (proxy, proxied):
        async with pgq.Client(proxied, min_size=1, max_size=2) as through:
            await through.enqueue("WARM", {})
            proxy.refuse = True
            proxy.drop()  # the pool's connection is dead and new ones are refused

            t0 = time.monotonic()
            with pytest.raises(pgq.DatabaseUnavailable):
                await through.enqueue("OUT", {"no": "key"})
            assert time.monotonic() - t0 < 1.0  # at once: no retry without a key

            keyed = asyncio.create_task(through.enqueue("OUT", {"k": 1}, idempotency_key="k-1"))
            await asyncio.sleep(1.5)
            assert not keyed.done()  # still retrying
            proxy.refuse = False
            job = await asyncio.wait_for(keyed, 15)
        assert job.idempotency_key == "k-1"
    # the unkeyed one was never created, the keyed one once
    assert await client.pool.fetchval("SELECT count(*) FROM pgq.jobs WHERE type = 'OUT'") == 1


async def test_a_result_too_deep_to_encode_is_refused_clearly_not_500(
    dsn: str, client: pgq.Client
) -> None:
    job = await client.enqueue("DEEP", {})
    depth = 300  # possible from psql; orjson encodes at most 254 levels
    deep = "[" * depth + "]" * depth
    await client.pool.execute(
        "UPDATE pgq.jobs SET result = $2::text::jsonb, status = 'succeeded', "
        "finished_at = now() WHERE id = $1",
        job.id,
        deep,
    )
    other = await client.enqueue("DEEP", {"fine": True})
    async with live_app(dsn) as live:
        status, body, _ = await live.request("GET", f"/jobs/{job.id}")
        assert status == 200, body  # served, with the value that cannot be encoded marked
        assert body["id"] == job.id and body["status"] == "succeeded"
        assert "nested deeper than 254 levels" in body["result"]["unencodable"]
        status, body, _ = await live.request("GET", "/jobs?type=DEEP")
        assert status == 200, body  # the list goes on past it
        by_id = {j["id"]: j for j in body["jobs"]}
        assert set(by_id) == {job.id, other.id}
        assert "unencodable" in by_id[job.id]["result"]
        assert by_id[other.id]["arguments"] == {"fine": True}


async def test_values_near_the_depth_limit_are_served_as_they_are(
    dsn: str, client: pgq.Client
) -> None:
    job = await client.enqueue("DEEP", {})
    depth = 250  # the job answer adds one level: 251 in all, within orjson's 254
    await client.pool.execute(
        "UPDATE pgq.jobs SET result = $2::text::jsonb WHERE id = $1",
        job.id,
        "[" * depth + "]" * depth,
    )
    async with live_app(dsn) as live:
        status, body, _ = await live.request("GET", f"/jobs/{job.id}")
        assert status == 200
        value, levels = body["result"], 0
        while isinstance(value, list):
            value, levels = (value[0] if value else None), levels + 1
        assert levels == depth

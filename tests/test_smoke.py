"""The shortest path through pgq: enqueue, claim, complete, wait. Runs on every harness."""

import asyncio

import pytest

import pgq
from pgq import queries

pytestmark = pytest.mark.smoke


async def test_enqueue_claim_complete_and_wait(client: pgq.Client) -> None:
    job = await client.enqueue("TMDB_SYNC", {"movieId": 123})
    assert (job.status, job.attempt, job.args) == ("queued", 0, {"movieId": 123})

    waiter = asyncio.create_task(client.wait(job.id, timeout=10))
    [claimed] = await queries.claim(client.pool, "worker-1", 5)
    assert (claimed.id, claimed.status, claimed.attempt) == (job.id, "running", 1)
    await queries.complete(client.pool, job.id, "worker-1", {"title": "Heat"}, attempt=1)

    done = await waiter
    assert (done.status, done.result) == ("succeeded", {"title": "Heat"})

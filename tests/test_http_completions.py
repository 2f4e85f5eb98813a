"""The HTTP worker path's batch: ``POST /jobs/complete`` takes one worker's successes at
once, each fenced on its own, and an HTTP-mode runner sends its successes through it in
batches. (Coalescing of concurrent single ``POST /jobs/{id}/complete`` requests is tested
in ``test_http_batching.py``.)"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from pgq import queries
from pgq.jobs import Job
from pgq.runner import HttpSource, Runner

from .support import coordinator, live_app, running_http, wait_statuses


async def claimed(conn: asyncpg.Connection, n: int, workers: int) -> list[Job]:
    """``n`` jobs, claimed round-robin by workers w0..w{workers-1}."""
    await queries.enqueue_many(conn, [{"type": "C", "args": {"i": i}} for i in range(n)])
    jobs: list[Job] = []
    for i in range(n):
        jobs += await queries.claim(conn, f"w{i % workers}", 1)
    return sorted(jobs, key=lambda j: j.id)


async def test_the_batch_endpoint_fences_each_completion_on_its_own(
    dsn: str, conn: asyncpg.Connection
) -> None:
    jobs = await claimed(conn, 4, workers=1)
    body = {
        "worker_id": "w0",
        "completions": [
            {"id": jobs[0].id, "lease_token": jobs[0].lease_token, "result": [1, 2]},
            {"id": jobs[1].id, "lease_token": str(uuid.uuid4())},
            {"id": 999999, "lease_token": jobs[2].lease_token},
            {"id": jobs[3].id, "attempt": 1, "lease_token": jobs[3].lease_token},
        ],
    }
    async with live_app(dsn) as live:
        status, answer, _ = await live.request("POST", "/jobs/complete", json=body)
        assert status == 200, answer
        assert answer == {
            "results": [
                {"id": jobs[0].id, "completed": True, "status": "succeeded"},
                {"id": jobs[1].id, "completed": False, "status": "running"},
                {"id": 999999, "completed": False, "status": None},
                {"id": jobs[3].id, "completed": True, "status": "succeeded"},
            ]
        }
        result = await conn.fetchval("SELECT result FROM pgq.jobs WHERE id = $1", jobs[0].id)
        assert result == [1, 2]

        bad = {"worker_id": "w0", "completions": [body["completions"][0], {"id": 5}]}
        status, answer, _ = await live.request("POST", "/jobs/complete", json=bad)
        assert status == 400
        assert "completions[1]" in answer["error"]["message"]
        assert "lease_token" in answer["error"]["message"]
        status, answer, _ = await live.request(
            "POST", "/jobs/complete", json={"worker_id": "w0", "completions": []}
        )
        assert status == 400 and "completions" in answer["error"]["message"]


async def test_an_http_runner_sends_its_successes_in_batches(
    dsn: str, conn: asyncpg.Connection
) -> None:
    runner = Runner(worker_id="batched", concurrency=50)

    @runner.handler("C")
    async def c(job: Job) -> dict[str, int]:
        return {"i": job.args["i"]}

    await queries.enqueue_many(conn, [{"type": "C", "args": {"i": i}} for i in range(400)])
    async with coordinator(dsn) as coord:
        source = HttpSource(coord.url)
        requests: list[int] = []
        call = source._api.call

        async def counting(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
            if path == "/jobs/complete":
                requests.append(len(args[0].completions))
            assert not path.endswith("/complete") or path == "/jobs/complete"
            return await call(method, path, *args, **kwargs)

        source._api.call = counting  # type: ignore[method-assign]
        async with running_http(runner, source):
            await wait_statuses(conn, {"succeeded": 400}, timeout=30)
    assert sum(requests) == 400
    assert len(requests) < 400 and max(requests) > 1
    rows = await conn.fetch("SELECT args, result, attempts FROM pgq.jobs")
    assert all(r["result"] == r["args"] and r["attempts"] == 1 for r in rows)

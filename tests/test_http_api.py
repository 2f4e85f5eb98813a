"""Every endpoint's success path and each documented error status, against a live app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jsonschema
import pytest

from pgq import queries
from pgq.coordinator.openapi import document

from .support import Live, live_app


@pytest.fixture
async def live(dsn: str) -> AsyncIterator[Live]:
    async with live_app(dsn) as app:
        yield app


def conforms(instance: Any, schema_name: str) -> None:
    """The instance matches components/schemas/<schema_name> of /openapi.json."""
    doc = document()
    jsonschema.validate(
        instance,
        {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]},
        cls=jsonschema.Draft202012Validator,
    )


#: A well-formed lease token that no claim minted.
FORGED_TOKEN = "00000000-0000-4000-8000-000000000000"


def is_error(body: Any, code: str) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and set(body["error"]) == {"code", "message"}
        and body["error"]["code"] == code
        and isinstance(body["error"]["message"], str)
        and body["error"]["message"]
    )


async def count_jobs(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM pgq.jobs")


# -- POST /jobs ---------------------------------------------------------------------------


async def test_create_job_with_every_field(live: Live, conn: asyncpg.Connection) -> None:
    parent, _ = await queries.enqueue(conn, "PARENT")
    run_at = "2031-05-06T07:08:09.5+02:00"
    status, job, resp = await live.request(
        "POST",
        "/jobs",
        json={
            "type": "TMDB_SYNC",
            "arguments": {"movieId": 123, "tags": ["a", {"b": None}]},
            "queue": "movies",
            "priority": -5,
            "run_at": run_at,
            "max_attempts": 3,
            "timeout_seconds": 60,
            "idempotency_key": "movie-123",
            "depends_on": [parent.id],
        },
    )
    assert status == 201, job
    assert resp.headers["Location"] == f"/jobs/{job['id']}"
    conforms(job, "Job")
    assert job["type"] == "TMDB_SYNC"
    assert job["arguments"] == {"movieId": 123, "tags": ["a", {"b": None}]}
    assert (job["queue"], job["priority"], job["max_attempts"], job["timeout_seconds"]) == (
        "movies",
        -5,
        3,
        60,
    )
    assert (job["status"], job["attempts"], job["depends_on"]) == ("waiting", 0, [parent.id])
    assert job["run_at"] == "2031-05-06T05:08:09.500000Z"  # UTC, RFC 3339
    assert job["idempotency_key"] == "movie-123"


async def test_create_job_idempotency_key_answers_200_with_the_first_job(
    live: Live, conn: asyncpg.Connection
) -> None:
    body = {"type": "EMAIL", "arguments": {"to": "a@b.c"}, "idempotency_key": "k-1"}
    s1, first, _ = await live.request("POST", "/jobs", json=body)
    s2, second, _ = await live.request("POST", "/jobs", json={**body, "arguments": {"to": "other"}})
    assert (s1, s2) == (201, 200)
    assert second["id"] == first["id"]
    assert second["arguments"] == {"to": "a@b.c"}
    assert await count_jobs(conn) == 1


async def test_create_job_minimal_defaults_and_delay(live: Live) -> None:
    status, job, _ = await live.request("POST", "/jobs", json={"type": "X"})
    assert status == 201
    assert (job["queue"], job["priority"], job["arguments"], job["status"]) == (
        "default",
        0,
        {},
        "queued",
    )
    assert (job["max_attempts"], job["timeout_seconds"]) == (10, 300)
    status, delayed, _ = await live.request(
        "POST", "/jobs", json={"type": "X", "delay_seconds": 3600}
    )
    assert status == 201
    created = datetime.fromisoformat(delayed["created_at"])
    run_at = datetime.fromisoformat(delayed["run_at"])
    assert timedelta(seconds=3599) < run_at - created < timedelta(seconds=3601)


async def test_create_job_with_unknown_parent_is_400(live: Live, conn: asyncpg.Connection) -> None:
    status, body, _ = await live.request("POST", "/jobs", json={"type": "X", "depends_on": [999]})
    assert status == 400 and is_error(body, "invalid_argument")
    assert "999" in body["error"]["message"]
    assert await count_jobs(conn) == 0


# -- POST /jobs/batch -----------------------------------------------------------------------


async def test_batch_creates_every_job_in_order(live: Live, conn: asyncpg.Connection) -> None:
    jobs = [
        {"type": "TMDB_SYNC", "arguments": {"movieId": i}, "priority": i % 3} for i in range(50)
    ]
    jobs.append({"type": "LATER", "run_at": "2040-01-01T00:00:00Z", "queue": "slow"})
    jobs.append({"type": "SOON", "delay_seconds": 1.5})
    status, body, _ = await live.request("POST", "/jobs/batch", json={"jobs": jobs})
    assert status == 201, body
    conforms(body, "CreatedJobs")  # without arguments and result: the answer stays small
    assert all("arguments" not in j and "result" not in j for j in body["jobs"])
    ids = [j["id"] for j in body["jobs"]]
    stored = await conn.fetch("SELECT id, args FROM pgq.jobs ORDER BY id")
    assert ids == [r["id"] for r in stored]
    assert [r["args"].get("movieId") for r in stored[:50]] == list(range(50))
    assert body["jobs"][50]["run_at"] == "2040-01-01T00:00:00Z"
    assert body["jobs"][50]["queue"] == "slow"
    assert body["jobs"][51]["type"] == "SOON"
    assert await count_jobs(conn) == 52


async def test_batch_is_all_or_nothing(live: Live, conn: asyncpg.Connection) -> None:
    jobs = [{"type": "OK"}, {"type": "OK", "priority": 99999}, {"type": "OK"}]
    status, body, _ = await live.request("POST", "/jobs/batch", json={"jobs": jobs})
    assert status == 400 and is_error(body, "invalid_field")
    assert "jobs[1].priority" in body["error"]["message"]
    # a refusal only the database can make (unknown parent) rolls back the whole batch too
    jobs = [{"type": "OK"}, {"type": "OK", "depends_on": [424242]}]
    status, body, _ = await live.request("POST", "/jobs/batch", json={"jobs": jobs})
    assert status == 400 and is_error(body, "invalid_argument")
    assert await count_jobs(conn) == 0


# -- GET /jobs/{id}, GET /jobs ---------------------------------------------------------------


async def test_get_job_and_404(live: Live, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X", {"a": 1})
    status, body, _ = await live.request("GET", f"/jobs/{job.id}")
    assert status == 200 and body["id"] == job.id and body["arguments"] == {"a": 1}
    conforms(body, "Job")
    status, body, _ = await live.request("GET", f"/jobs/{job.id + 1}")
    assert status == 404 and is_error(body, "job_not_found")
    status, body, _ = await live.request("GET", "/jobs/99999999999999999999999999")
    assert status == 404 and is_error(body, "job_not_found")


async def test_list_jobs_filters_and_pages(live: Live, conn: asyncpg.Connection) -> None:
    ids = []
    for i in range(5):
        job, _ = await queries.enqueue(conn, "A" if i % 2 else "B", queue="q1" if i < 3 else "q2")
        ids.append(job.id)
    await queries.cancel(conn, ids[0])

    status, page, _ = await live.request("GET", "/jobs?limit=2")
    assert status == 200
    conforms(page, "JobPage")
    assert [j["id"] for j in page["jobs"]] == ids[:2] and page["next"] == ids[1]
    _, page2, _ = await live.request("GET", f"/jobs?limit=2&after={page['next']}")
    assert [j["id"] for j in page2["jobs"]] == ids[2:4] and page2["next"] == ids[3]
    _, page3, _ = await live.request("GET", f"/jobs?limit=2&after={page2['next']}")
    assert [j["id"] for j in page3["jobs"]] == ids[4:] and page3["next"] is None

    _, q2, _ = await live.request("GET", "/jobs?queue=q2")
    assert [j["id"] for j in q2["jobs"]] == ids[3:]
    _, typed, _ = await live.request("GET", "/jobs?type=A&queue=q1")
    assert [j["id"] for j in typed["jobs"]] == [ids[1]]
    _, cancelled, _ = await live.request("GET", "/jobs?status=cancelled")
    assert [j["id"] for j in cancelled["jobs"]] == [ids[0]]
    _, none, _ = await live.request("GET", "/jobs?status=running")
    assert none == {"jobs": [], "next": None}


# -- DELETE /jobs/{id}, POST /jobs/{id}/retry ---------------------------------------------------


async def test_cancel_then_409_then_retry(live: Live, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X", max_attempts=2)
    status, body, _ = await live.request("DELETE", f"/jobs/{job.id}")
    assert status == 200 and body["status"] == "cancelled" and body["finished_at"]
    status, body, _ = await live.request("DELETE", f"/jobs/{job.id}")
    assert status == 409 and is_error(body, "transition_not_allowed")
    status, body, _ = await live.request("DELETE", "/jobs/424242")
    assert status == 404 and is_error(body, "job_not_found")

    # retry without a body: one extra attempt
    status, body, _ = await live.request("POST", f"/jobs/{job.id}/retry")
    assert status == 200 and body["status"] == "queued" and body["max_attempts"] == 1
    status, body, _ = await live.request("POST", f"/jobs/{job.id}/retry")
    assert status == 409 and is_error(body, "transition_not_allowed")
    await queries.cancel(conn, job.id)
    status, body, _ = await live.request(
        "POST", f"/jobs/{job.id}/retry", json={"extra_attempts": 4}
    )
    assert status == 200 and body["max_attempts"] == 4
    status, body, _ = await live.request("POST", "/jobs/424242/retry", json={})
    assert status == 404 and is_error(body, "job_not_found")


# -- claim, complete, heartbeat ------------------------------------------------------------


async def test_claim_complete_success(live: Live, conn: asyncpg.Connection) -> None:
    a, _ = await queries.enqueue(conn, "A", priority=1)
    b, _ = await queries.enqueue(conn, "B", priority=0)
    await queries.enqueue(conn, "A", queue="other")
    status, body, _ = await live.request(
        "POST", "/jobs/claim", json={"worker_id": "w1", "max_jobs": 5}
    )
    assert status == 200
    conforms(body, "ClaimedJobs")
    assert [j["id"] for j in body["jobs"]] == [b.id, a.id]  # priority order, queue default only
    assert all(j["status"] == "running" and j["worker_id"] == "w1" for j in body["jobs"])
    assert all(j["attempts"] == 1 and j["lease_expires_at"] for j in body["jobs"])
    token_b, token_a = (j["lease_token"] for j in body["jobs"])
    assert token_a != token_b

    status, done, _ = await live.request(
        "POST",
        f"/jobs/{a.id}/complete",
        json={"worker_id": "w1", "attempt": 1, "lease_token": token_a, "success": True,
              "result": {"title": "Heat"}},
    )  # fmt: skip
    assert status == 200 and done["status"] == "succeeded" and done["result"] == {"title": "Heat"}
    conforms(done, "Job")
    assert "lease_token" not in done
    status, body, _ = await live.request(
        "POST",
        f"/jobs/{a.id}/complete",
        json={"worker_id": "w1", "lease_token": token_a, "success": True},
    )
    assert status == 409 and is_error(body, "lease_mismatch")  # a stale token
    status, body, _ = await live.request(
        "POST",
        f"/jobs/{b.id}/complete",
        json={"worker_id": "intruder", "lease_token": token_b, "success": True},
    )
    assert status == 409 and "intruder" in body["error"]["message"]
    status, body, _ = await live.request(
        "POST",
        f"/jobs/{b.id}/complete",
        json={"worker_id": "w1", "attempt": 2, "lease_token": token_b, "success": True},
    )
    assert status == 409 and "attempt" in body["error"]["message"]
    status, body, _ = await live.request(
        "POST",
        "/jobs/424242/complete",
        json={"worker_id": "w1", "lease_token": FORGED_TOKEN, "success": True},
    )
    assert status == 404 and is_error(body, "job_not_found")


async def test_claim_filters_queues_and_types(live: Live, conn: asyncpg.Connection) -> None:
    await queries.enqueue(conn, "A", queue="q1")
    b, _ = await queries.enqueue(conn, "B", queue="q1")
    c, _ = await queries.enqueue(conn, "B", queue="q2")
    await queries.enqueue(conn, "B", queue="q3")
    status, body, _ = await live.request(
        "POST",
        "/jobs/claim",
        json={"worker_id": "w", "max_jobs": 10, "queues": ["q1", "q2"], "types": ["B"]},
    )
    assert status == 200 and sorted(j["id"] for j in body["jobs"]) == [b.id, c.id]


async def test_complete_with_failure(live: Live, conn: asyncpg.Connection) -> None:
    for _ in range(3):
        await queries.enqueue(conn, "F", max_attempts=2)
    _, claimed, _ = await live.request(
        "POST", "/jobs/claim", json={"worker_id": "w", "max_jobs": 3}
    )
    (j1, t1), (j2, t2), (j3, t3) = ((j["id"], j["lease_token"]) for j in claimed["jobs"])
    status, retried, _ = await live.request(
        "POST",
        f"/jobs/{j1}/complete",
        json={"worker_id": "w", "lease_token": t1, "success": False,
              "error": "quote service timed out"},
    )  # fmt: skip
    assert status == 200 and retried["status"] == "queued"
    assert retried["error"]["message"] == "quote service timed out"
    assert datetime.fromisoformat(retried["run_at"]) > datetime.now(UTC) + timedelta(seconds=3)
    status, dead, _ = await live.request(
        "POST",
        f"/jobs/{j2}/complete",
        json={"worker_id": "w", "attempt": 1, "lease_token": t2, "success": False,
              "retryable": False, "error": {"message": "bad movie id", "code": 7}},
    )  # fmt: skip
    assert status == 200 and dead["status"] == "dead"
    assert dead["error"]["code"] == 7 and dead["error"]["message"] == "bad movie id"
    status, default, _ = await live.request(
        "POST",
        f"/jobs/{j3}/complete",
        json={"worker_id": "w", "lease_token": t3, "success": False},
    )
    assert status == 200 and default["error"]["message"] == "failed"


async def test_complete_with_failure_and_an_explicit_retry_delay(
    live: Live, conn: asyncpg.Connection
) -> None:
    job, _ = await queries.enqueue(conn, "F")
    [claimed] = await queries.claim(conn, "w", 1)
    token = claimed.lease_token
    status, body, _ = await live.request(
        "POST",
        f"/jobs/{job.id}/complete",
        json={"worker_id": "w", "lease_token": token, "success": True, "retry_delay_seconds": 5},
    )
    assert status == 400 and "retry_delay_seconds" in body["error"]["message"]
    status, body, _ = await live.request(
        "POST",
        f"/jobs/{job.id}/complete",
        json={"worker_id": "w", "lease_token": token, "success": False, "error": "later",
              "retry_delay_seconds": 600},
    )  # fmt: skip
    assert status == 200 and body["status"] == "queued"
    delay = datetime.fromisoformat(body["run_at"]) - datetime.fromisoformat(body["updated_at"])
    assert timedelta(seconds=599) < delay < timedelta(seconds=601)  # not the 4-8 s backoff


async def test_heartbeat(live: Live, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "H", timeout_seconds=100)
    [claimed] = await queries.claim(conn, "w", 1)
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() + interval '1 second' WHERE id = $1", job.id
    )
    token = claimed.lease_token
    status, body, _ = await live.request(
        "POST",
        f"/jobs/{job.id}/heartbeat",
        json={"worker_id": "w", "attempt": 1, "lease_token": token},
    )
    assert status == 200
    lease = datetime.fromisoformat(body["lease_expires_at"])
    assert lease > datetime.now(UTC) + timedelta(seconds=100)  # 1.25 × 100 s from now
    status, body, _ = await live.request(
        "POST",
        f"/jobs/{job.id}/heartbeat",
        json={"worker_id": "w", "attempt": 2, "lease_token": token},
    )
    assert status == 409 and is_error(body, "transition_not_allowed")
    await queries.complete(conn, claimed.id, "w")
    status, body, _ = await live.request(
        "POST", f"/jobs/{job.id}/heartbeat", json={"worker_id": "w", "lease_token": token}
    )
    assert status == 409 and is_error(body, "lease_mismatch")
    assert "status succeeded" in body["error"]["message"]
    status, body, _ = await live.request(
        "POST", "/jobs/424242/heartbeat", json={"worker_id": "w", "lease_token": FORGED_TOKEN}
    )
    assert status == 404 and is_error(body, "job_not_found")


async def test_release_hands_the_job_back_without_spending_its_attempt(
    live: Live, conn: asyncpg.Connection
) -> None:
    job, _ = await queries.enqueue(conn, "R", max_attempts=1)
    [claimed] = await queries.claim(conn, "w", 1)
    token = claimed.lease_token
    path = f"/jobs/{job.id}/release"
    # fenced like complete: another worker, or another attempt, is refused
    for refused in ({"worker_id": "other", "attempt": 1}, {"worker_id": "w", "attempt": 2}):
        status, body, _ = await live.request("POST", path, json=refused | {"lease_token": token})
        assert status == 409 and is_error(body, "transition_not_allowed"), refused
    status, body, _ = await live.request(
        "POST",
        path,
        json={"worker_id": "w", "attempt": 1, "lease_token": token, "reason": "shutting down"},
    )
    assert status == 200
    assert (body["status"], body["attempts"], body["max_attempts"]) == ("queued", 1, 2)
    assert body["lease_expires_at"] is None
    assert (body["error"]["message"], body["error"]["kind"]) == ("shutting down", "released")
    assert await conn.fetchval("SELECT run_at <= now() FROM pgq.jobs WHERE id = $1", job.id)
    # the attempt was given back: the job, on its last attempt, can run again
    [again] = await queries.claim(conn, "w", 1)
    assert (again.id, again.attempt) == (job.id, 2)
    status, body, _ = await live.request(
        "POST", path, json={"worker_id": "w", "attempt": 1, "lease_token": again.lease_token}
    )
    assert status == 409 and is_error(body, "transition_not_allowed")  # a stale attempt
    status, body, _ = await live.request(
        "POST", path, json={"worker_id": "w", "attempt": 2, "lease_token": token}
    )
    assert status == 409 and is_error(body, "lease_mismatch")  # the last claim's token
    status, body, _ = await live.request(
        "POST",
        "/jobs/424242/release",
        json={"worker_id": "w", "attempt": 1, "lease_token": FORGED_TOKEN},
    )
    assert status == 404 and is_error(body, "job_not_found")


# -- the edges every endpoint shares -------------------------------------------------------


async def test_unknown_route_404_and_wrong_method_405(live: Live) -> None:
    status, body, _ = await live.request("GET", "/nope")
    assert status == 404 and is_error(body, "not_found")
    status, body, resp = await live.request("PUT", "/jobs")
    assert status == 405 and is_error(body, "method_not_allowed")
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "POST"}
    status, body, resp = await live.request("GET", "/jobs/claim")
    assert status == 405 and resp.headers["Allow"] == "POST"
    status, body, _ = await live.request("PATCH", "/jobs/1")
    assert status == 405 and is_error(body, "method_not_allowed")


async def test_413_and_415(live: Live, conn: asyncpg.Connection) -> None:
    big = b'{"type": "X", "arguments": {"blob": "' + b"x" * (1024 * 1024) + b'"}}'
    status, body, _ = await live.request(
        "POST", "/jobs", data=big, headers={"Content-Type": "application/json"}
    )
    assert status == 413 and is_error(body, "payload_too_large")
    status, body, _ = await live.request(
        "POST", "/jobs", data=b'{"type": "X"}', headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and is_error(body, "unsupported_media_type")
    # the batch endpoint has its own, larger limit
    status, body, _ = await live.request(
        "POST",
        "/jobs/batch",
        data=b'{"jobs": [' + big + b"]}",
        headers={"Content-Type": "application/json"},
    )
    assert status == 201, body
    # charset parameter is fine
    status, body, _ = await live.request(
        "POST",
        "/jobs",
        data=b'{"type": "X"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert status == 201
    assert await count_jobs(conn) == 2


async def test_body_limits_are_per_route_and_hold_for_chunked_bodies(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(dsn, max_body_bytes=200, max_batch_body_bytes=2000) as live:
        job = {"type": "X", "arguments": {"pad": "x" * 150}}
        status, _, _ = await live.request("POST", "/jobs", json=job)
        assert status == 201
        status, body, _ = await live.request("POST", "/jobs", json={**job, "more": "y" * 100})
        assert status == 413 and is_error(body, "payload_too_large")
        status, _, _ = await live.request("POST", "/jobs/batch", json={"jobs": [job] * 5})
        assert status == 201
        status, body, _ = await live.request("POST", "/jobs/batch", json={"jobs": [job] * 20})
        assert status == 413 and is_error(body, "payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read and counted
            yield b'{"type": "X", "arguments": {"pad": "'
            for _ in range(10):
                yield b"z" * 50
            yield b'"}}'

        status, body, _ = await live.request(
            "POST", "/jobs", data=chunks(), headers={"Content-Type": "application/json"}
        )
        assert status == 413 and is_error(body, "payload_too_large")
        status, _, _ = await live.request("GET", "/health")
        assert status == 200
    assert await count_jobs(conn) == 6


async def test_health_openapi_metrics(live: Live) -> None:
    status, body, _ = await live.request("GET", "/health")
    assert (status, body) == (200, {"status": "ok"})
    status, doc, _ = await live.request("GET", "/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0" and doc == document()
    status, text, resp = await live.request("GET", "/metrics")
    assert status == 200 and resp.content_type == "text/plain"
    assert "pgq_listener_up 1.0" in text
    assert 'pgq_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text


def test_every_route_is_documented_and_vice_versa(dsn: str) -> None:
    from pgq.coordinator import Settings, create_app

    app = create_app(dsn, Settings())
    routed = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
    }
    documented = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    assert routed == documented


async def test_stored_json_no_json_library_reads_is_a_documented_422(
    live: Live, conn: asyncpg.Connection
) -> None:
    # PostgreSQL keeps numbers beyond a double and nesting past 1,024 levels (from psql);
    # each answer that carries such a value is the documented 422, never a 500
    huge, _ = await queries.enqueue(conn, "STORED", {"n": 1})
    deep, _ = await queries.enqueue(conn, "STORED", {"n": 2})
    await conn.execute("UPDATE pgq.jobs SET args = '{\"n\": 1e400}' WHERE id = $1", huge.id)
    await conn.execute(
        "UPDATE pgq.jobs SET errors = jsonb_build_array($2::text::jsonb) WHERE id = $1",
        deep.id,
        "[" * 1100 + "]" * 1100,
    )
    paths = document()["paths"]
    for method, path, template in (
        ("GET", f"/jobs/{huge.id}", "/jobs/{id}"),
        ("GET", "/jobs?type=STORED", "/jobs"),
        ("GET", f"/jobs/{huge.id}/events", "/jobs/{id}/events"),
        ("GET", f"/ui/api/jobs/{deep.id}/errors", "/ui/api/jobs/{id}/errors"),
        ("DELETE", f"/jobs/{deep.id}", "/jobs/{id}"),
    ):
        status, body, _ = await live.request(method, path)
        assert status == 422 and is_error(body, "unencodable"), (path, status, body)
        assert "read it with SQL" in body["error"]["message"]
        conforms(body, "Error")
        assert "422" in paths[template][method.lower()]["responses"], (method, template)
    # every operation whose answer carries a job or a schedule documents it
    for path, operations in paths.items():
        for method, op in operations.items():
            ok = op["responses"].get("200") or op["responses"].get("201") or {}
            schema = str(ok.get("content", {}))
            if any(name in schema for name in ("Job'", "JobPage", "ClaimedJobs", "Schedule")):
                assert "422" in op["responses"], (method, path)

"""Malformed requests: every one a 4xx with a JSON error, the server still serving, and
nothing half-written (the row count equals the successful creates)."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import orjson

from pgq import queries

from .support import live_app

JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Bad:
    name: str
    method: str
    path: str
    body: bytes | None = None
    status: int = 400
    code: str = "invalid_field"
    mentions: str = ""  # the message must name this (the field)
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


#: A well-formed lease token (no claim minted it): lets a body reach the field under test.
T = "00000000-0000-4000-8000-000000000000"


def j(value: object) -> bytes:
    return orjson.dumps(value)


def nested(depth: int) -> bytes:
    return b'{"type": "X", "arguments": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


CASES = [
    # -- not JSON at all
    Bad("truncated JSON", "POST", "/jobs", b'{"type": "X",', code="invalid_json"),
    Bad("empty body", "POST", "/jobs", b"", code="invalid_json"),
    Bad("top level array", "POST", "/jobs", b"[]", code="invalid_json"),
    Bad("top level string", "POST", "/jobs", b'"job"', code="invalid_json"),
    Bad("top level null", "POST", "/jobs", b"null", code="invalid_json"),
    Bad("invalid UTF-8", "POST", "/jobs", b'{"type": "\xff\xfe"}', code="invalid_json"),
    Bad("lone surrogate", "POST", "/jobs", b'{"type": "\\ud800"}', code="invalid_json"),
    Bad("NaN literal", "POST", "/jobs", b'{"type": "X", "priority": NaN}', code="invalid_json"),
    Bad("5000 levels deep", "POST", "/jobs", nested(5000), code="invalid_json"),
    Bad(
        "number overflowing a double",
        "POST",
        "/jobs",
        b'{"type": "X", "priority": 1e400}',
        code="invalid_json",
    ),
    # -- media type and size
    Bad(
        "text/plain",
        "POST",
        "/jobs",
        j({"type": "X"}),
        415,
        "unsupported_media_type",
        headers={"Content-Type": "text/plain"},
    ),
    Bad(
        "form encoded",
        "POST",
        "/jobs",
        b"type=X",
        415,
        "unsupported_media_type",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Bad(
        "latin-1 charset",
        "POST",
        "/jobs",
        j({"type": "X"}),
        415,
        "unsupported_media_type",
        headers={"Content-Type": "application/json; charset=latin-1"},
    ),
    Bad(
        "no content type",
        "POST",
        "/jobs/claim",
        j({"worker_id": "w"}),
        415,
        "unsupported_media_type",
        headers={},
    ),
    Bad(
        "over 1 MiB",
        "POST",
        "/jobs",
        j({"type": "X", "arguments": {"s": "x" * 1_100_000}}),
        413,
        "payload_too_large",
    ),
    # -- POST /jobs fields
    Bad("missing type", "POST", "/jobs", j({"arguments": {}}), mentions="type"),
    Bad("type is a number", "POST", "/jobs", j({"type": 7}), mentions="type"),
    Bad("type too long", "POST", "/jobs", j({"type": "T" * 129}), mentions="type"),
    Bad(
        "SQL injection in type",
        "POST",
        "/jobs",
        j({"type": "X'); DROP TABLE pgq.jobs; --"}),
        mentions="type",
    ),
    Bad("NUL in type", "POST", "/jobs", j({"type": "X\u0000Y"}), mentions="type"),
    Bad("uppercase queue", "POST", "/jobs", j({"type": "X", "queue": "Default"}), mentions="queue"),
    Bad(
        "queue injection",
        "POST",
        "/jobs",
        j({"type": "X", "queue": "a; NOTIFY x"}),
        mentions="queue",
    ),
    Bad(
        "priority is a bool",
        "POST",
        "/jobs",
        j({"type": "X", "priority": True}),
        mentions="priority",
    ),
    Bad(
        "priority is a string",
        "POST",
        "/jobs",
        j({"type": "X", "priority": "5"}),
        mentions="priority",
    ),
    Bad(
        "priority is a float",
        "POST",
        "/jobs",
        j({"type": "X", "priority": 1.5}),
        mentions="priority",
    ),
    Bad(
        "priority out of range",
        "POST",
        "/jobs",
        j({"type": "X", "priority": 32768}),
        mentions="priority",
    ),
    Bad(
        "priority beyond int64",
        "POST",
        "/jobs",
        b'{"type": "X", "priority": 1e30}',
        mentions="priority",
    ),
    Bad(
        "max_attempts 0",
        "POST",
        "/jobs",
        j({"type": "X", "max_attempts": 0}),
        mentions="max_attempts",
    ),
    Bad(
        "timeout too long",
        "POST",
        "/jobs",
        j({"type": "X", "timeout_seconds": 86401}),
        mentions="timeout_seconds",
    ),
    Bad(
        "arguments null", "POST", "/jobs", j({"type": "X", "arguments": None}), mentions="arguments"
    ),
    Bad(
        "arguments array", "POST", "/jobs", j({"type": "X", "arguments": [1]}), mentions="arguments"
    ),
    Bad(
        "NUL deep in arguments",
        "POST",
        "/jobs",
        j({"type": "X", "arguments": {"a": [{"b": "x\u0000"}]}}),
        mentions="arguments.a[0].b",
    ),
    Bad(
        "NUL in an arguments key",
        "POST",
        "/jobs",
        j({"type": "X", "arguments": {"k\u0000": 1}}),
        mentions="arguments",
    ),
    Bad("arguments 100 levels deep", "POST", "/jobs", nested(100), mentions="arguments"),
    Bad(
        "run_at and delay_seconds",
        "POST",
        "/jobs",
        j({"type": "X", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}),
        mentions="delay_seconds",
    ),
    Bad(
        "negative delay",
        "POST",
        "/jobs",
        j({"type": "X", "delay_seconds": -1}),
        mentions="delay_seconds",
    ),
    Bad(
        "delay of 1e300 s",
        "POST",
        "/jobs",
        j({"type": "X", "delay_seconds": 1e300}),
        mentions="delay_seconds",
    ),
    Bad(
        "run_at not a date",
        "POST",
        "/jobs",
        j({"type": "X", "run_at": "tomorrow"}),
        mentions="run_at",
    ),
    Bad(
        "run_at 30 February",
        "POST",
        "/jobs",
        j({"type": "X", "run_at": "2030-02-30T00:00:00Z"}),
        mentions="run_at",
    ),
    Bad(
        "run_at without offset",
        "POST",
        "/jobs",
        j({"type": "X", "run_at": "2030-01-01T00:00:00"}),
        mentions="run_at",
    ),
    Bad(
        "run_at year 1",
        "POST",
        "/jobs",
        j({"type": "X", "run_at": "0001-01-01T00:00:00+01:00"}),
        mentions="run_at",
    ),
    Bad("unknown field", "POST", "/jobs", j({"type": "X", "colour": "red"}), mentions="colour"),
    Bad(
        "empty idempotency key",
        "POST",
        "/jobs",
        j({"type": "X", "idempotency_key": ""}),
        mentions="idempotency_key",
    ),
    Bad(
        "idempotency key 256 chars",
        "POST",
        "/jobs",
        j({"type": "X", "idempotency_key": "k" * 256}),
        mentions="idempotency_key",
    ),
    Bad(
        "depends_on strings",
        "POST",
        "/jobs",
        j({"type": "X", "depends_on": ["1"]}),
        mentions="depends_on[0]",
    ),
    Bad(
        "depends_on beyond bigint",
        "POST",
        "/jobs",
        j({"type": "X", "depends_on": [2**63]}),
        mentions="depends_on[0]",
    ),
    Bad(
        "depends_on unknown job",
        "POST",
        "/jobs",
        j({"type": "X", "depends_on": [987654]}),
        code="invalid_argument",
        mentions="987654",
    ),
    # -- batch
    Bad("batch without jobs", "POST", "/jobs/batch", j({}), mentions="jobs"),
    Bad("batch empty", "POST", "/jobs/batch", j({"jobs": []}), mentions="jobs"),
    Bad(
        "batch of 10001",
        "POST",
        "/jobs/batch",
        j({"jobs": [{"type": "X"}] * 10_001}),
        mentions="jobs",
    ),
    Bad(
        "batch element not an object",
        "POST",
        "/jobs/batch",
        j({"jobs": [{"type": "X"}, 5]}),
        mentions="jobs[1]",
    ),
    Bad(
        "batch element bad field",
        "POST",
        "/jobs/batch",
        j({"jobs": [{"type": "X"}, {"type": "X", "max_attempts": "3"}]}),
        mentions="jobs[1].max_attempts",
    ),
    Bad(
        "batch extra top-level field",
        "POST",
        "/jobs/batch",
        j({"jobs": [{"type": "X"}], "atomic": True}),
        mentions="atomic",
    ),
    # -- claim
    Bad("claim without worker_id", "POST", "/jobs/claim", j({}), mentions="worker_id"),
    Bad(
        "claim worker_id null", "POST", "/jobs/claim", j({"worker_id": None}), mentions="worker_id"
    ),
    Bad(
        "claim worker_id NUL",
        "POST",
        "/jobs/claim",
        j({"worker_id": "w\u0000"}),
        mentions="worker_id",
    ),
    Bad(
        "claim wait 61 s",
        "POST",
        "/jobs/claim",
        j({"worker_id": "w", "wait_seconds": 61}),
        mentions="wait_seconds",
    ),
    Bad(
        "claim max_jobs 0",
        "POST",
        "/jobs/claim",
        j({"worker_id": "w", "max_jobs": 0}),
        mentions="max_jobs",
    ),
    Bad(
        "claim queues empty",
        "POST",
        "/jobs/claim",
        j({"worker_id": "w", "queues": []}),
        mentions="queues",
    ),
    Bad(
        "claim queues not strings",
        "POST",
        "/jobs/claim",
        j({"worker_id": "w", "queues": [1]}),
        mentions="queues[0]",
    ),
    # -- complete, heartbeat, retry
    Bad(
        "complete without lease_token",
        "POST",
        "/jobs/1/complete",
        j({"worker_id": "w", "attempt": 1, "success": True}),
        mentions="lease_token",
    ),
    Bad(
        "complete lease_token not a UUID",
        "POST",
        "/jobs/1/complete",
        j({"worker_id": "w", "lease_token": "victim", "success": True}),
        mentions="lease_token",
    ),
    Bad(
        "heartbeat without lease_token",
        "POST",
        "/jobs/1/heartbeat",
        j({"worker_id": "w", "attempt": 1}),
        mentions="lease_token",
    ),
    Bad(
        "release without lease_token",
        "POST",
        "/jobs/1/release",
        j({"worker_id": "w", "attempt": 1}),
        mentions="lease_token",
    ),
    Bad(
        "complete without success",
        "POST",
        "/jobs/1/complete",
        j({"worker_id": "w", "lease_token": T}),
        mentions="success",
    ),
    Bad(
        "complete success 'yes'",
        "POST",
        "/jobs/1/complete",
        j({"worker_id": "w", "lease_token": T, "success": "yes"}),
        mentions="success",
    ),
    Bad(
        "complete failure with result",
        "POST",
        "/jobs/1/complete",
        j({"worker_id": "w", "lease_token": T, "success": False, "result": 1}),
        mentions="result",
    ),
    Bad(
        "complete error is a number",
        "POST",
        "/jobs/1/complete",
        j({"worker_id": "w", "lease_token": T, "success": False, "error": 5}),
        mentions="error",
    ),
    Bad(
        "complete attempt 0",
        "POST",
        "/jobs/1/complete",
        j({"worker_id": "w", "lease_token": T, "success": True, "attempt": 0}),
        mentions="attempt",
    ),
    Bad(
        "complete attempt beyond int32",
        "POST",
        "/jobs/1/complete",
        j({"worker_id": "w", "lease_token": T, "success": True, "attempt": 2**31}),
        mentions="attempt",
    ),
    Bad(
        "heartbeat attempt negative",
        "POST",
        "/jobs/1/heartbeat",
        j({"worker_id": "w", "lease_token": T, "attempt": -1}),
        mentions="attempt",
    ),
    Bad(
        "release without attempt",
        "POST",
        "/jobs/1/release",
        j({"worker_id": "w", "lease_token": T}),
        mentions="attempt",
    ),
    Bad(
        "release reason is a number",
        "POST",
        "/jobs/1/release",
        j({"worker_id": "w", "lease_token": T, "attempt": 1, "reason": 5}),
        mentions="reason",
    ),
    Bad(
        "release unknown field",
        "POST",
        "/jobs/1/release",
        j({"worker_id": "w", "lease_token": T, "attempt": 1, "retryable": True}),
        mentions="retryable",
    ),
    Bad(
        "retry extra_attempts 0",
        "POST",
        "/jobs/1/retry",
        j({"extra_attempts": 0}),
        mentions="extra_attempts",
    ),
    Bad(
        "retry extra_attempts string",
        "POST",
        "/jobs/1/retry",
        j({"extra_attempts": "2"}),
        mentions="extra_attempts",
    ),
    # -- query strings and paths
    Bad("status=bogus", "GET", "/jobs?status=bogus", mentions="status"),
    Bad("limit=0", "GET", "/jobs?limit=0", mentions="limit"),
    Bad("limit=abc", "GET", "/jobs?limit=abc", mentions="limit"),
    Bad("limit=1001", "GET", "/jobs?limit=1001", mentions="limit"),
    Bad("after=-1", "GET", "/jobs?after=-1", mentions="after"),
    Bad("unknown query parameter", "GET", "/jobs?sort=id", mentions="sort"),
    Bad("repeated query parameter", "GET", "/jobs?status=queued&status=dead", mentions="status"),
    Bad("query injection", "GET", "/jobs?type=X%27%20OR%201%3D1--", mentions="type"),
    Bad("wait=61", "GET", "/jobs/1?wait=61", mentions="wait"),
    Bad("wait=nan", "GET", "/jobs/1?wait=nan", mentions="wait"),
    Bad(
        "id beyond bigint", "GET", "/jobs/99999999999999999999999", status=404, code="job_not_found"
    ),
    Bad("id not a number", "GET", "/jobs/abc", status=404, code="not_found"),
    Bad("id with unicode digits", "GET", "/jobs/%D9%A3", status=404, code="not_found"),
    Bad("id with NUL", "DELETE", "/jobs/%00", status=404, code="not_found"),
]


async def test_malformed_requests_are_refused_and_nothing_is_half_written(
    dsn: str, conn: asyncpg.Connection
) -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 25
    job, _ = await queries.enqueue(conn, "EXISTING")  # id 1: a target for /jobs/1/...
    created = 1
    failures = []
    async with live_app(dsn) as live:
        for i, case in enumerate(CASES):
            status, body, _ = await live.request(
                case.method, case.path, data=case.body, headers=case.headers
            )
            error = body.get("error") if isinstance(body, dict) else None
            ok = (
                status == case.status
                and isinstance(error, dict)
                and set(body) == {"error"}
                and set(error) == {"code", "message"}
                and error["code"] == case.code
                and case.mentions in error["message"]
            )
            if not ok:
                failures.append(f"{case.name}: {status} {str(body)[:300]}")
            if i % 5 == 0:  # the server keeps serving good requests in between
                s, _, _ = await live.request("POST", "/jobs", json={"type": "GOOD"})
                assert s == 201, f"after {case.name}: {s}"
                created += 1
        status, health, _ = await live.request("GET", "/health")
        assert (status, health) == (200, {"status": "ok"})
    assert not failures, "\n".join(failures)
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == created
    assert (await queries.get_job(conn, job.id)).status == "queued"  # type: ignore[union-attr]

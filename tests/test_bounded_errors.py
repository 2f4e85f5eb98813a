"""Bounded error history and scoped idempotency keys: a stored error is at most 16 KiB
(longer ones are cut, with a marker), ``errors`` keeps the last 20, lease expiry copes with
rows stored before the cap, and an idempotency key never hands out another producer's job."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgq import queries
from pgq.errors import InvalidArgument, LimitExceeded, TransitionNotAllowed, translating

from .support import Live, live_app
from .zoo import expect_refusal

KIB = 1024
BIG = "x" * (512 * KIB)  # the 512 KiB errors


@pytest.fixture
async def live(dsn: str) -> AsyncIterator[Live]:
    async with live_app(dsn) as app:
        yield app


async def fail_once(conn: asyncpg.Connection, job_id: int, error: object) -> None:
    [claimed] = await queries.claim(conn, "w")
    assert claimed.id == job_id
    await queries.fail(conn, job_id, "w", error, retry_delay=0)


async def test_a_stored_error_is_cut_to_16_kib_and_the_history_keeps_the_last_20(
    conn: asyncpg.Connection,
) -> None:
    job, _ = await queries.enqueue(conn, "X", max_attempts=30)
    for n in range(1, 13):  # the 12 failures with 512 KiB errors
        await fail_once(conn, job.id, {"message": BIG, "kind": "boom", "n": n})
    row = await conn.fetchrow(
        "SELECT octet_length(last_error::text) AS last, octet_length(errors::text) AS all_,"
        " jsonb_array_length(errors) AS count FROM pgq.jobs WHERE id = $1",
        job.id,
    )
    assert row["last"] <= 16 * KIB and row["count"] == 12
    assert row["all_"] <= 12 * 16 * KIB  # was 6 MiB
    stored = await queries.get_job(conn, job.id)
    assert stored is not None
    cut = stored.error
    assert cut["truncated_from_bytes"] > 512 * KIB and cut["kind"] == "boom"
    assert cut["message"] == BIG[: len(cut["message"])] and cut["attempt"] == 12
    for n in range(13, 26):  # a string error, escapes that lengthen its JSON: cut too
        await fail_once(conn, job.id, "\u0001" * (20 * KIB) if n == 13 else f"error {n}")
    stored = await queries.get_job(conn, job.id)
    assert stored is not None
    assert [e["attempt"] for e in stored.errors] == list(range(6, 26))  # the last 20
    assert stored.errors[7]["truncated_from_bytes"] > 20 * KIB  # attempt 13, cut
    small = stored.errors[-1]
    assert small["message"] == "error 25" and "truncated_from_bytes" not in small


async def test_release_keeps_its_entries_bounded_too(conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "X")
    for _ in range(22):
        await queries.claim(conn, "w")
        await queries.release(conn, job.id, "w", {"message": BIG})
    stored = await queries.get_job(conn, job.id)
    assert stored is not None and len(stored.errors) == 20
    assert all(e["kind"] == "released" and "truncated_from_bytes" in e for e in stored.errors)


async def test_lease_expiry_rescues_every_job_and_trims_an_oversized_history(
    conn: asyncpg.Connection,
) -> None:
    """Rows stored before the cap (here 40 × 512 KiB of history) must not make the rescue
    of every job fail: expiry builds the trimmed history, never a bigger one."""
    poisoned, _ = await queries.enqueue(conn, "X", max_attempts=50)
    healthy, _ = await queries.enqueue(conn, "X")
    await queries.claim(conn, "w", 2)
    await conn.execute(
        """
        UPDATE pgq.jobs
           SET errors = (SELECT jsonb_agg(jsonb_build_object('message', repeat('y', 512 * 1024),
                                                             'attempt', n))
                           FROM generate_series(1, 40) AS n)
         WHERE id = $1
        """,
        poisoned.id,
    )
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second'"
        " WHERE id = ANY($1::bigint[])",
        [poisoned.id, healthy.id],
    )
    expired = await queries.expire_leases_detailed(conn)
    assert sorted(j.id for j in expired) == sorted([poisoned.id, healthy.id])
    assert {j.status for j in expired} == {"queued"}
    rows = await conn.fetch(
        "SELECT id, jsonb_array_length(errors) AS count, errors -> -1 ->> 'kind' AS kind,"
        " (errors -> 0 ->> 'attempt')::int AS oldest FROM pgq.jobs ORDER BY id"
    )
    assert [(r["count"], r["kind"]) for r in rows] == [(20, "lease_expired"), (1, "lease_expired")]
    assert rows[0]["oldest"] == 22  # entries 22..40 kept, then the expiry


async def test_an_idempotency_key_never_hands_out_a_job_of_another_type_or_queue(
    conn: asyncpg.Connection,
) -> None:
    mine, created = await queries.enqueue(
        conn, "PAYMENT", {"card": "4242-secret"}, idempotency_key="order-17"
    )
    assert created
    again, created = await queries.enqueue(
        conn, "PAYMENT", {"card": "other"}, idempotency_key="order-17"
    )
    assert (again.id, created, again.args) == (mine.id, False, {"card": "4242-secret"})
    for kwargs in ({"job_type": "REFUND"}, {"job_type": "PAYMENT", "queue": "other"}):
        refused = await expect_refusal(
            queries.enqueue(conn, **kwargs, idempotency_key="order-17"),  # type: ignore[arg-type]
            TransitionNotAllowed,
            "PQ409",
            "idempotency_key 'order-17' is already taken by a job of another type or queue",
        )
        assert "4242" not in str(refused) and f"job {mine.id}" not in str(refused)
    with pytest.raises(TransitionNotAllowed):
        await queries.enqueue_many(conn, [{"type": "REFUND", "idempotency_key": "order-17"}])
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs") == 1


async def test_over_http_a_key_of_another_type_is_409_without_the_other_jobs_arguments(
    live: Live, conn: asyncpg.Connection
) -> None:
    await queries.enqueue(conn, "PAYMENT", {"card": "4242-secret"}, idempotency_key="order-17")
    status, body, _ = await live.request(
        "POST", "/jobs", json={"type": "REFUND", "idempotency_key": "order-17"}
    )
    assert status == 409 and body["error"]["code"] == "transition_not_allowed"
    assert "order-17" in body["error"]["message"] and "4242" not in str(body)
    status, body, _ = await live.request(
        "POST", "/jobs", json={"type": "PAYMENT", "idempotency_key": "order-17"}
    )
    assert status == 200 and body["arguments"] == {"card": "4242-secret"}


async def test_program_limit_exceeded_is_a_refusal_not_a_crash(conn: asyncpg.Connection) -> None:
    with pytest.raises(LimitExceeded) as info, translating():
        await conn.fetchval("SELECT ARRAY[[[[[[[1]]]]]]]")  # 7 dimensions: SQLSTATE 54000
    assert isinstance(info.value, InvalidArgument)
    assert (info.value.http_status, info.value.code) == (400, "limit_exceeded")

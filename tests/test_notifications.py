"""NOTIFY from sql/0003_notifications.sql (the triggers and the doorbell), seen by a LISTEN
connection like a runner's.

An insert wakes ``pgq_<queue>`` only while some LISTEN session is registered idle on that
queue (``pgq.listen_idle``), so the ``inbox`` fixture registers idle on every queue it
listens to, as an idle runner does; ``deaf_inbox`` does not register. Updates that queue
jobs wake unconditionally.

"Nothing else arrived" is proven, not slept on: after the action, the acting connection
sends a sentinel on each channel, and since Postgres delivers notifications in commit
order, anything the action sent arrived before the sentinel (``Inbox.drain``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgq import queries

from .zoo import ME, Inbox, event

WAKE = "pgq_default"
EVENTS = "pgq_events"
CANCEL = "pgq_cancel"
CHANNELS = (WAKE, "pgq_q1", "pgq_q2", EVENTS, CANCEL)


QUEUES = ["default", "q1", "q2"]


@pytest.fixture
async def inbox(dsn: str) -> AsyncIterator[Inbox]:
    """LISTENs on every channel and is registered idle on every queue."""
    box = await Inbox.open(dsn, *CHANNELS)
    try:
        assert await box.conn.fetchval("SELECT pgq.listen_idle($1)", QUEUES) == 3
        assert await box.conn.fetchval("SELECT pgq.wait_for_enqueuers($1)", QUEUES)
        yield box
    finally:
        await box.close()


@pytest.fixture
async def deaf_inbox(dsn: str) -> AsyncIterator[Inbox]:
    """LISTENs on every channel, registered idle on none (a DBA's plain LISTEN in psql)."""
    box = await Inbox.open(dsn, *CHANNELS)
    try:
        yield box
    finally:
        await box.close()


async def drain(inbox: Inbox, actor: asyncpg.Connection) -> Counter[str]:
    """Channel → how many (non-sentinel) notifications the work so far sent."""
    return Counter(channel for channel, _ in await inbox.drain(actor, CHANNELS))


@pytest.mark.smoke
async def test_an_enqueue_on_another_connection_wakes_the_listener(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    await queries.enqueue(conn, "TMDB_SYNC", {"movieId": 1})
    assert await inbox.next_on(WAKE) == ""  # payload-light: never a job id
    assert await drain(inbox, conn) == Counter()


async def test_a_rolled_back_enqueue_sends_nothing(inbox: Inbox, conn: asyncpg.Connection) -> None:
    tx = conn.transaction()
    await tx.start()
    await queries.enqueue(conn, "t")
    await tx.rollback()
    assert await drain(inbox, conn) == Counter()


async def test_an_enqueue_after_a_rolled_back_savepoint_still_rings(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    """The "already rang" flag is transaction-local and rolls back with the savepoint that
    set it, as the commit-time check it queued does; one ring per queue per transaction."""
    async with conn.transaction():
        savepoint = conn.transaction()
        await savepoint.start()
        await queries.enqueue(conn, "t")
        await savepoint.rollback()
        await queries.enqueue(conn, "t")
        await queries.enqueue(conn, "t")
    assert await drain(inbox, conn) == Counter({WAKE: 1})


async def test_a_delayed_enqueue_wakes_too(inbox: Inbox, conn: asyncpg.Connection) -> None:
    """Runners re-arm their timer on it: the wake-up comes when the job enters queued."""
    await queries.enqueue(conn, "t", delay_seconds=3600, queue="q1")
    assert await drain(inbox, conn) == Counter({"pgq_q1": 1})


@pytest.mark.parametrize("how", ["enqueue_many", "one_enqueue_per_row"])
async def test_a_thousand_jobs_over_two_queues_in_one_transaction_send_one_per_queue(
    inbox: Inbox, conn: asyncpg.Connection, how: str
) -> None:
    async with conn.transaction():
        if how == "enqueue_many":
            jobs = await queries.enqueue_many(
                conn, [{"type": "t", "queue": f"q{1 + i % 2}"} for i in range(1000)]
            )
            assert len(jobs) == 1000
        else:  # 1,000 INSERT statements, each firing the statement trigger: Postgres folds them
            await conn.execute(
                "SELECT pgq.enqueue('t', queue => 'q' || (1 + n % 2))"
                "  FROM generate_series(1, 1000) AS n"
            )
    assert await drain(inbox, conn) == Counter({"pgq_q1": 1, "pgq_q2": 1})


async def test_a_retry_with_backoff_and_a_lease_expiry_wake_once_each(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    a, _ = await queries.enqueue(conn, "a")
    b, _ = await queries.enqueue(conn, "b")
    await queries.claim(conn, ME, 2)
    assert await drain(inbox, conn) == Counter({WAKE: 2})  # the two enqueues

    failed = await queries.fail(conn, a.id, ME, "transient")
    assert failed.status == "queued"
    assert await drain(inbox, conn) == Counter({WAKE: 1, EVENTS: 1})

    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", b.id
    )
    assert await queries.expire_leases(conn) == 1
    assert await drain(inbox, conn) == Counter({WAKE: 1, EVENTS: 1})


async def test_claims_heartbeats_and_completions_send_no_wake_up(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    jobs = await queries.enqueue_many(conn, [{"type": "t"} for _ in range(3)])
    await drain(inbox, conn)

    await queries.claim(conn, ME, 3)
    assert await drain(inbox, conn) == Counter()  # nobody watches events (pgq.watch_events)
    for job in jobs:
        await queries.heartbeat(conn, job.id, ME)
    assert await drain(inbox, conn) == Counter()
    await queries.complete(conn, jobs[0].id, ME, {"ok": True})
    assert await drain(inbox, conn) == Counter({EVENTS: 1})  # the waiter's event, no wake-up
    await queries.expire_leases(conn)  # nothing expired: an UPDATE of no rows
    assert await drain(inbox, conn) == Counter()


async def test_events_for_every_terminal_transition(inbox: Inbox, conn: asyncpg.Connection) -> None:
    jobs = {
        name: (await queries.enqueue(conn, name.upper(), queue="q1"))[0]
        for name in ("done", "failed", "running_cancelled", "queued_cancelled")
    }
    child, _ = await queries.enqueue(conn, "CHILD", depends_on=[jobs["failed"].id])
    await queries.claim(conn, ME, 3, job_types=["DONE", "FAILED", "RUNNING_CANCELLED"])
    await drain(inbox, conn)

    await queries.complete(conn, jobs["done"].id, ME)
    await queries.fail(conn, jobs["failed"].id, ME, "fatal", retryable=False)
    await queries.cancel(conn, jobs["running_cancelled"].id)
    await queries.cancel(conn, jobs["queued_cancelled"].id)
    orphan, _ = await queries.enqueue(conn, "ORPHAN", depends_on=[jobs["failed"].id])
    assert orphan.status == "dead"

    received = await inbox.drain(conn, CHANNELS)
    assert {channel for channel, _ in received} == {EVENTS, CANCEL}
    payloads = [event(p) for channel, p in received if channel == EVENTS]
    # runners listen for this one only: a handler to stop now, not every completion
    assert [event(p) for channel, p in received if channel == CANCEL] == [
        {
            "id": jobs["running_cancelled"].id,
            "status": "cancelled",
            "queue": "q1",
            "type": "RUNNING_CANCELLED",
        }
    ]
    for payload in payloads:
        assert set(payload) == {"id", "status", "queue", "type"}
    assert payloads == [
        {"id": jobs["done"].id, "status": "succeeded", "queue": "q1", "type": "DONE"},
        {"id": jobs["failed"].id, "status": "dead", "queue": "q1", "type": "FAILED"},
        {"id": child.id, "status": "dead", "queue": "default", "type": "CHILD"},
        {
            "id": jobs["running_cancelled"].id,
            "status": "cancelled",
            "queue": "q1",
            "type": "RUNNING_CANCELLED",
        },
        {
            "id": jobs["queued_cancelled"].id,
            "status": "cancelled",
            "queue": "q1",
            "type": "QUEUED_CANCELLED",
        },
        {"id": orphan.id, "status": "dead", "queue": "default", "type": "ORPHAN"},
    ]


async def test_replay_and_dependency_release_wake_their_queue(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    parent, _ = await queries.enqueue(conn, "parent")
    child, _ = await queries.enqueue(conn, "child", queue="q2", depends_on=[parent.id])
    assert await drain(inbox, conn) == Counter({WAKE: 1})  # a waiting job wakes nobody

    await queries.claim(conn, ME)
    await queries.complete(conn, parent.id, ME)
    assert await drain(inbox, conn) == Counter({EVENTS: 2, "pgq_q2": 1})  # succeeded, queued

    [claimed] = await queries.claim(conn, ME, 1, queues=["q2"])
    await queries.fail(conn, claimed.id, ME, "fatal", retryable=False)
    assert await drain(inbox, conn) == Counter({EVENTS: 1})  # dead
    await queries.retry(conn, child.id)
    assert await drain(inbox, conn) == Counter({"pgq_q2": 1, EVENTS: 1})


async def test_a_lease_expiry_with_no_attempt_left_announces_the_dead_job(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    job, _ = await queries.enqueue(conn, "LAST", max_attempts=1)
    await queries.claim(conn, ME)
    await drain(inbox, conn)
    await conn.execute("UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second'")
    assert await queries.expire_leases(conn) == 1
    received = await inbox.drain(conn, CHANNELS)
    assert [(c, event(p)) for c, p in received] == [
        (EVENTS, {"id": job.id, "status": "dead", "queue": "default", "type": "LAST"})
    ]


# -- the doorbell: inserts notify only queues with an idle listener -----------------------


async def test_with_no_idle_listener_an_insert_sends_nothing(
    deaf_inbox: Inbox, conn: asyncpg.Connection
) -> None:
    await queries.enqueue(conn, "t")
    await queries.enqueue(conn, "t", delay_seconds=3600, queue="q1")
    async with conn.transaction():
        await queries.enqueue_many(
            conn, [{"type": "t", "queue": f"q{1 + i % 2}"} for i in range(1000)]
        )
    assert await drain(deaf_inbox, conn) == Counter()


async def test_only_the_queues_with_an_idle_listener_are_woken(
    deaf_inbox: Inbox, conn: asyncpg.Connection
) -> None:
    assert await deaf_inbox.conn.fetchval("SELECT pgq.listen_idle('{q2}')") == 1
    async with conn.transaction():
        await queries.enqueue_many(
            conn, [{"type": "t", "queue": f"q{1 + i % 2}"} for i in range(1000)]
        )
    assert await drain(deaf_inbox, conn) == Counter({"pgq_q2": 1})

    assert await deaf_inbox.conn.fetchval("SELECT pgq.unlisten_idle()") == 1  # deregistered
    await queries.enqueue(conn, "t", queue="q2")
    assert await drain(deaf_inbox, conn) == Counter()


@pytest.mark.parametrize("isolation", ["repeatable_read", "serializable"])
async def test_repeatable_read_and_serializable_inserts_always_notify(
    deaf_inbox: Inbox, conn: asyncpg.Connection, isolation: str
) -> None:
    """Their snapshot may predate a registration, so they cannot trust the registry."""
    async with conn.transaction(isolation=isolation):
        await queries.enqueue_many(
            conn, [{"type": "t", "queue": f"q{1 + i % 2}"} for i in range(100)]
        )
    assert await drain(deaf_inbox, conn) == Counter({"pgq_q1": 1, "pgq_q2": 1})


async def test_updates_that_queue_jobs_notify_without_an_idle_listener(
    deaf_inbox: Inbox, conn: asyncpg.Connection
) -> None:
    a, _ = await queries.enqueue(conn, "a")
    b, _ = await queries.enqueue(conn, "b")
    await queries.claim(conn, ME, 2)
    assert await drain(deaf_inbox, conn) == Counter()
    await queries.fail(conn, a.id, ME, "transient")
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", b.id
    )
    assert await queries.expire_leases(conn) == 1
    assert await drain(deaf_inbox, conn) == Counter({WAKE: 2, EVENTS: 2})


async def test_claims_are_announced_while_a_session_watches_events(
    inbox: Inbox, conn: asyncpg.Connection
) -> None:
    jobs = await queries.enqueue_many(conn, [{"type": "t"} for _ in range(3)])
    pid = inbox.conn.get_server_pid()
    await conn.execute("SELECT pgq.watch_events(-1)")  # no such session: swept next time
    await conn.execute("SELECT pgq.watch_events($1)", pid)
    await drain(inbox, conn)
    await queries.claim(conn, ME, 2)
    received = await inbox.drain(conn, CHANNELS)
    assert [(c, event(p)) for c, p in received] == [
        (EVENTS, {"id": job.id, "status": "running", "queue": "default", "type": "t"})
        for job in jobs[:2]
    ]  # one event per claimed job, and still no wake-up
    assert await conn.fetchval("SELECT array_agg(listener_pid) FROM pgq.event_watchers") == [pid]
    await conn.execute("SELECT pgq.unwatch_events($1)", pid)
    await queries.claim(conn, ME, 1)
    assert await drain(inbox, conn) == Counter()

"""Shared helpers for the core tests: a zoo of jobs in every status, row snapshots,
refusal checks, notification inboxes and lock-wait barriers.

Nothing here sleeps to let time pass: waits are on conditions (a notification, a sentinel,
a backend that Postgres reports as blocked), each bounded by a timeout that fails the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Iterable
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from pgq import db, queries
from pgq.errors import PgqError

ME = "worker-me"
OTHER = "worker-other"

#: One job per status, plus a second queued one that is not due yet (the waiting job's
#: parent) and a running one held by another worker. Each job's type is its name.
ZOO = ("waiting", "queued", "future", "running", "other", "succeeded", "dead", "cancelled")


async def make_zoo(conn: asyncpg.Connection) -> dict[str, int]:
    """Create the zoo; returns name → job id. ``running``/``succeeded``/``dead``/``cancelled``
    went through claim by ``ME``; ``other`` is running, held by ``OTHER``."""
    ids: dict[str, int] = {}
    for name in ("queued", "running", "other", "succeeded", "dead", "cancelled"):
        job, _ = await queries.enqueue(conn, name, {"name": name})
        ids[name] = job.id
    future, _ = await queries.enqueue(conn, "future", {}, delay_seconds=3600)
    ids["future"] = future.id
    waiting, _ = await queries.enqueue(conn, "waiting", {}, depends_on=[future.id])
    ids["waiting"] = waiting.id

    claimed = await queries.claim(
        conn, ME, 10, job_types=["running", "succeeded", "dead", "cancelled"]
    )
    assert sorted(j.id for j in claimed) == sorted(
        ids[n] for n in ("running", "succeeded", "dead", "cancelled")
    )
    [other] = await queries.claim(conn, OTHER, 10, job_types=["other"])
    assert other.id == ids["other"]
    await queries.complete(conn, ids["succeeded"], ME, {"ok": True})
    await queries.fail(conn, ids["dead"], ME, "boom", retryable=False)
    await queries.cancel(conn, ids["cancelled"])

    statuses = dict(await conn.fetch("SELECT type, status FROM pgq.jobs"))
    assert statuses == {
        "waiting": "waiting",
        "queued": "queued",
        "future": "queued",
        "running": "running",
        "other": "running",
        "succeeded": "succeeded",
        "dead": "dead",
        "cancelled": "cancelled",
    }
    return ids


async def snapshot(conn: asyncpg.Connection) -> dict[int, dict[str, Any]]:
    """Every row of pgq.jobs, by id."""
    return {r["id"]: dict(r) for r in await conn.fetch("SELECT * FROM pgq.jobs ORDER BY id")}


def changed(
    zoo: dict[str, int], before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]
) -> set[str]:
    """Names of the zoo jobs whose row differs (or disappeared) between two snapshots."""
    return {name for name, job_id in zoo.items() if before.get(job_id) != after.get(job_id)}


async def expect_refusal(
    call: Awaitable[Any], cls: type[PgqError], sqlstate: str, match: str | None = None
) -> PgqError:
    """Await a pgq.queries call that must be refused: the pgq exception ``cls``, caused by
    the database error with ``sqlstate``; ``match`` must occur in the message."""
    with pytest.raises(cls) as info:
        await call
    exc = info.value
    assert type(exc) is cls
    assert isinstance(exc.__cause__, asyncpg.PostgresError)
    assert exc.__cause__.sqlstate == sqlstate, exc.__cause__
    if match is not None:
        assert match in str(exc), str(exc)
    return exc


async def expect_sqlstate(
    conn: asyncpg.Connection, sql: str, *args: Any, sqlstate: str, match: str | None = None
) -> asyncpg.PostgresError:
    """Run raw SQL on an asyncpg connection; it must fail with ``sqlstate``."""
    with pytest.raises(asyncpg.PostgresError) as info:
        await conn.fetch(sql, *args)
    assert info.value.sqlstate == sqlstate, info.value
    if match is not None:
        assert match in str(info.value), str(info.value)
    return info.value


async def db_delta(conn: asyncpg.Connection, column: str, job_id: int) -> timedelta:
    """``<column> - now()`` for a job, on the database's clock (in the current transaction
    when ``conn`` is in one, so it compares with the transaction's now())."""
    return await conn.fetchval(f"SELECT {column} - now() FROM pgq.jobs WHERE id = $1", job_id)


# -- notifications ----------------------------------------------------------------------


class Inbox:
    """A LISTEN connection that records every notification it receives, in order."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.received: list[tuple[str, str]] = []
        self._arrived = asyncio.Condition()

    @classmethod
    async def open(cls, dsn: str, *channels: str) -> Inbox:
        inbox = cls(await db.connect(dsn))
        for channel in channels:
            await inbox.conn.add_listener(channel, inbox._on_notification)
        return inbox

    def _on_notification(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self.received.append((channel, payload))
        asyncio.get_running_loop().create_task(self._notify_all())

    async def _notify_all(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for(self, channel: str, payload: str, timeout: float = 10.0) -> None:
        async def arrived() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: (channel, payload) in self.received)

        await asyncio.wait_for(arrived(), timeout)

    async def next_on(self, channel: str, timeout: float = 10.0) -> str:
        """The payload of the first not-yet-taken notification on ``channel``."""

        def first() -> int | None:
            return next((i for i, (c, _) in enumerate(self.received) if c == channel), None)

        async def arrived() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: first() is not None)

        await asyncio.wait_for(arrived(), timeout)
        index = first()
        assert index is not None
        return self.received.pop(index)[1]

    async def drain(
        self, actor: asyncpg.Connection, channels: Iterable[str]
    ) -> list[tuple[str, str]]:
        """Everything received so far, proven complete: ``actor`` (the connection that did
        the work) sends a sentinel on every channel, and Postgres delivers notifications in
        commit order, so whatever the work sent arrived before the sentinels did. Returns
        the notifications before the sentinels and forgets them."""
        channels = list(channels)
        token = f"sentinel-{uuid.uuid4().hex}"
        await actor.execute("SELECT pg_notify(c, $2) FROM unnest($1::text[]) AS c", channels, token)
        for channel in channels:
            await self.wait_for(channel, token)
        got = [(c, p) for c, p in self.received if p != token]
        self.received.clear()
        return got

    async def close(self) -> None:
        await self.conn.close()


def event(payload: str) -> dict[str, Any]:
    return orjson.loads(payload)


# -- lock barriers ----------------------------------------------------------------------


async def wait_until_blocked(
    observer: asyncpg.Connection, blocked_pid: int, timeout: float = 10.0
) -> None:
    """Return once the backend ``blocked_pid`` waits on a lock held by another backend,
    i.e. the statement it runs has reached the lock; fail after ``timeout``."""

    async def poll() -> None:
        # A condition poll (Postgres offers no event for "a backend started waiting").
        while True:
            if await observer.fetchval("SELECT cardinality(pg_blocking_pids($1)) > 0", blocked_pid):
                return
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


# -- cost -------------------------------------------------------------------------------


async def bulk_insert(conn: asyncpg.Connection, count: int, **columns: str) -> None:
    """Insert ``count`` queued jobs straight into pgq.jobs (fast set-up for cost tests);
    ``columns`` are SQL expressions over ``n`` (1..count), e.g. ``queue="'q' || n % 3"``."""
    names = ["type", *columns]
    values = ["'bulk'", *columns.values()]
    await conn.execute(
        f"INSERT INTO pgq.jobs ({', '.join(names)})"
        f" SELECT {', '.join(values)} FROM generate_series(1, {int(count)}) AS n"
    )
    await conn.execute("ANALYZE pgq.jobs")


async def rows_read(conn: asyncpg.Connection, call: Awaitable[Any]) -> tuple[Any, int, int]:
    """Run ``call`` (on ``conn``) in a transaction that is then rolled back; return its
    result, the rows of pgq.jobs read by sequential scans and the rows fetched through
    indexes, as counted by pg_stat_xact_user_tables for that transaction."""
    query = (
        "SELECT coalesce(seq_tup_read, 0) AS seq, coalesce(idx_tup_fetch, 0) AS idx"
        "  FROM pg_stat_xact_user_tables WHERE relid = 'pgq.jobs'::regclass"
    )
    tx = conn.transaction()
    await tx.start()
    try:
        before = await conn.fetchrow(query)
        result = await call
        after = await conn.fetchrow(query)
    finally:
        await tx.rollback()
    return result, after["seq"] - before["seq"], after["idx"] - before["idx"]

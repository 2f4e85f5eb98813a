"""The shared LISTEN connection: late subscribers, collisions with the ping, reconnects."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pgq.listener import Listener

from .support import wait_until

pytestmark = pytest.mark.smoke


async def test_channels_subscribed_at_once_while_connected_all_receive(
    dsn: str, conn: asyncpg.Connection
) -> None:
    received: dict[str, list[str]] = {}
    listener = Listener(dsn, ping_interval=0.01)  # pings constantly, to collide with LISTENs
    listener.subscribe("warmup", lambda ch, p: None)
    await listener.start()
    try:
        channels = [f"pgq_q{i}" for i in range(30)]
        for ch in channels:
            listener.subscribe(ch, lambda c, p: received.setdefault(c, []).append(p))
        await wait_until(lambda: all(listener.listening(ch) for ch in channels))
        for ch in channels:
            await conn.execute(f"NOTIFY {ch}, 'hello'")
        await wait_until(lambda: len(received) == len(channels))
        assert all(received[ch] == ["hello"] for ch in channels)
        assert listener.connects == 1  # no collision was mistaken for a dead connection
    finally:
        await listener.close()


async def test_reconnects_after_its_backend_is_terminated_and_tells_subscribers(
    dsn: str, conn: asyncpg.Connection
) -> None:
    received: list[str] = []
    reconnected = asyncio.Event()
    listener = Listener(dsn, backoff_initial=0.01)
    listener.subscribe("pgq_default", lambda ch, p: received.append(p))
    listener.on_connect(lambda: reconnected.set() if listener.connects > 1 else None)
    await listener.start()
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND query ILIKE 'LISTEN%'"
        )
        assert killed == 1
        await asyncio.wait_for(reconnected.wait(), 10)
        assert listener.connected and listener.listening("pgq_default")
        await conn.execute("NOTIFY pgq_default, 'after'")
        await wait_until(lambda: received == ["after"])
    finally:
        await listener.close()
    assert not listener.connected

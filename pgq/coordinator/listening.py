"""The coordinator's Listener: ``pgq.listener.Listener`` with dynamic channels made safe.

The coordinator LISTENs on ``pgq_<queue>`` channels as claim requests name new queues, at
any time, several at once. ``Listener.subscribe`` (pgq/listener.py) starts each such LISTEN
in a fire-and-forget task on the shared connection, which breaks in three ways observed
under load (schemathesis):

* two LISTENs at once, or a LISTEN during the keep-alive ping, collide on the connection
  (asyncpg: "another operation is in progress"); the task dies unobserved and the channel
  is never LISTENed, so waiters on that queue would never be woken;
* a ping that collides with a LISTEN is taken for a dead connection and forces a reconnect;
* a channel subscribed while ``_connect`` is LISTENing the others is missed on that
  connection.

This subclass serializes every use of the connection behind one lock, retries a LISTEN
that finds the connection busy, LISTENs whatever is missing after each (re)connect, and
records which channels are really active (``listening(channel)``), so waiters poll briefly
until their channel is live instead of guessing. It overrides private methods of
``Listener``; the same changes belong in pgq/listener.py (reported), after which this
module can go.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from ..listener import Listener

log = logging.getLogger("pgq.coordinator.listener")


class CoordinatorListener(Listener):
    def __init__(self, dsn: str, **kwargs: float) -> None:
        super().__init__(dsn, **kwargs)  # type: ignore[arg-type]
        self._conn_lock = asyncio.Lock()
        self._active: set[str] = set()
        self.on_connect(self._listen_missing)

    def listening(self, channel: str) -> bool:
        """True once LISTEN on ``channel`` is active on the live connection."""
        return self.connected and channel in self._active

    async def _listen(self, conn: asyncpg.Connection, channel: str) -> None:
        for _ in range(100):
            if conn.is_closed() or (self._conn is not None and conn is not self._conn):
                return  # a stale connection: the next _connect LISTENs on the new one
            if channel in self._active and conn is self._conn:
                return
            try:
                async with self._conn_lock:
                    await conn.add_listener(channel, self._dispatch)
            except asyncpg.InterfaceError as exc:
                if "another operation is in progress" not in str(exc):
                    raise
                await asyncio.sleep(0.01)
                continue
            except Exception as exc:
                if self._conn is conn:  # a subscribe() task: nobody awaits us, say it
                    log.warning("LISTEN %s failed (%s); reconnecting", channel, exc)
                    self._lost.set()
                    return
                raise
            self._active.add(channel)
            return
        log.warning("LISTEN %s kept finding the connection busy; reconnecting", channel)
        self._lost.set()

    async def _listen_missing(self) -> None:
        conn = self._conn
        if conn is None:
            return
        for channel in list(self._subscribers):
            if channel not in self._active:
                await self._listen(conn, channel)

    async def _drop_connection(self) -> None:
        self._active.clear()
        await super()._drop_connection()

    async def _wait_until_lost(self) -> None:
        # As Listener._wait_until_lost, but the ping takes the connection lock.
        while not self._closing:
            try:
                await asyncio.wait_for(self._lost.wait(), self._ping_interval)
                return
            except TimeoutError:
                pass
            try:
                assert self._conn is not None
                async with self._conn_lock:
                    await asyncio.wait_for(self._conn.fetchval("SELECT 1"), 5)
            except Exception:
                log.warning("listener connection stopped answering; reconnecting")
                return

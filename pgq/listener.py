"""The one LISTEN connection a pgq process keeps, and keeps alive.

A pooled connection cannot LISTEN: asyncpg's pool runs ``UNLISTEN *`` when a connection
is released. So a ``Listener`` owns one dedicated connection, LISTENs on its channels and
hands each notification to the callbacks subscribed to that channel.

Modes of the supervising task:
  connecting    (re)connect, LISTEN on every channel, then call the ``on_connect``
                callbacks: notifications sent while we were away are lost, so subscribers
                re-check the database (runners claim, waiters re-read their jobs).
  connected     wait until the connection terminates (``add_termination_listener`` tells us
                at once) or a periodic ping fails (a silent network loss).
  backing off   after a failure, sleep with exponential backoff and full jitter, capped at
                1 s (``pgq.backoff.RECONNECT_CAP``): back within a second of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from . import db, queries
from .aio import stop_task, wait_event
from .backoff import FULL, RECONNECT_BASE, RECONNECT_CAP, Backoff
from .logs import log_event

log = logging.getLogger("pgq.listener")

#: While reconnecting fails, a log line this often (and on the first failure).
_RECONNECT_LOG_EVERY = 30.0

NotificationCallback = Callable[[str, str], None]  # (channel, payload)
ConnectCallback = Callable[[], Awaitable[None] | None]


class Listener:
    """A self-healing LISTEN connection shared by every part of one process."""

    def __init__(
        self,
        dsn: str,
        *,
        ping_interval: float = 15.0,
        backoff_initial: float = RECONNECT_BASE,
        backoff_max: float = RECONNECT_CAP,
    ) -> None:
        self._dsn = dsn
        self._ping_interval = ping_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._subscribers: dict[str, list[NotificationCallback]] = {}
        self._on_connect: list[ConnectCallback] = []
        self._conn: asyncpg.Connection | None = None
        # One operation at a time on the connection: LISTENs issued by subscribe() and the
        # keep-alive ping would otherwise collide ("another operation is in progress").
        self._conn_lock = asyncio.Lock()
        #: channels LISTENed on the live connection
        self._active: set[str] = set()
        self._listen_tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._closing = False
        #: True while LISTEN is active on a live connection.
        self.connected = False
        #: time.time() of the last notification received, None before the first.
        self.last_notification_at: float | None = None
        #: How many times the connection was (re)established.
        self.connects = 0
        #: Backend pid of the live LISTEN connection (None while disconnected): the key
        #: under which this process registers as an idle listener (pgq.listen_idle).
        self.pid: int | None = None

    # -- subscription -----------------------------------------------------------------

    def subscribe(self, channel: str, callback: NotificationCallback) -> None:
        """Call ``callback(channel, payload)`` for every notification on ``channel``.

        Subscribing to a new channel while connected LISTENs on it right away (in the
        background; ``listening(channel)`` tells when it is active).
        """
        self._subscribers.setdefault(channel, []).append(callback)
        conn = self._conn
        if conn is not None and self.connected and channel not in self._active:
            task = asyncio.get_running_loop().create_task(self._listen_or_reconnect(conn, channel))
            self._listen_tasks.add(task)
            task.add_done_callback(self._listen_tasks.discard)

    def listening(self, channel: str) -> bool:
        """True once LISTEN on ``channel`` is active on the live connection."""
        return self.connected and channel in self._active

    def unsubscribe(
        self, channel: str, callback: NotificationCallback, *, unlisten: bool = False
    ) -> None:
        """Stop calling ``callback`` for ``channel``. With ``unlisten``, once no callback is
        left, UNLISTEN too (in the background), so a process does not stay LISTENed on every
        channel it ever used (the coordinator's long polls on queues nobody waits for)."""
        callbacks = self._subscribers.get(channel, [])
        with contextlib.suppress(ValueError):
            callbacks.remove(callback)
        if callbacks or not unlisten:
            return
        self._subscribers.pop(channel, None)
        conn = self._conn
        if conn is not None and channel in self._active and not self._closing:
            task = asyncio.get_running_loop().create_task(self._unlisten(conn, channel))
            self._listen_tasks.add(task)
            task.add_done_callback(self._listen_tasks.discard)

    async def _unlisten(self, conn: asyncpg.Connection, channel: str) -> None:
        async with self._conn_lock:
            # subscribed again meanwhile (its subscribe() saw the channel active: keep it),
            # or the connection is going (closing, or replaced: a new one LISTENs afresh)
            if (
                channel in self._subscribers
                or channel not in self._active
                or self._closing
                or conn is not self._conn
            ):
                return
            self._active.discard(channel)
            try:
                await conn.remove_listener(channel, self._dispatch)
            except Exception as exc:  # the connection is going; a reconnect LISTENs afresh
                log_event(log, "listener.unlisten_failed", f"UNLISTEN {channel} failed ({exc})")

    def on_connect(self, callback: ConnectCallback) -> None:
        """Call ``callback()`` after every (re)connect, once LISTEN is active again."""
        self._on_connect.append(callback)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, *, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Start the supervising task; with ``wait``, return once the first LISTEN is active."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name="pgq-listener"
            )
        if wait:
            await self.wait_connected(timeout)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        self._closing = True
        self._lost.set()
        # LISTENs and UNLISTENs in flight finish first: closing the connection under one
        # leaves asyncpg's protocol in a state it cannot get out of
        if self._listen_tasks:
            await asyncio.wait(list(self._listen_tasks), timeout=2)
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        await self._drop_connection()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until LISTEN is active; ``TimeoutError`` after ``timeout`` seconds (None: no limit)."""
        if not await wait_event(self._connected_event, timeout):
            raise TimeoutError(f"the LISTEN connection is not up after {timeout:g}s")

    # -- internals --------------------------------------------------------------------

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        self.last_notification_at = time.time()
        for callback in list(self._subscribers.get(channel, ())):
            try:
                callback(channel, str(payload))
            except Exception:
                log_event(
                    log,
                    "listener.callback_failed",
                    "notification callback failed",
                    level=logging.ERROR,
                    exc_info=True,
                    channel=channel,
                )

    def _terminated(self, _conn: object) -> None:
        self._lost.set()

    async def _listen(self, conn: asyncpg.Connection, channel: str) -> None:
        async with self._conn_lock:
            if channel not in self._active:
                await conn.add_listener(channel, self._dispatch)
                self._active.add(channel)

    async def _listen_or_reconnect(self, conn: asyncpg.Connection, channel: str) -> None:
        """LISTEN for a late subscriber; a failure means the connection is unusable."""
        try:
            await self._listen(conn, channel)
        except Exception as exc:
            if conn is self._conn:
                log_event(
                    log,
                    "listener.lost",
                    f"LISTEN {channel} failed ({exc}); reconnecting",
                    level=logging.WARNING,
                )
                self._lost.set()

    async def _connect(self) -> None:
        conn = await db.connect(self._dsn, timeout=10)
        try:
            conn.add_termination_listener(self._terminated)
            self._conn = conn
            self._active.clear()
            # subscribe() may add channels while this loop awaits; go until none is missing
            while missing := [c for c in list(self._subscribers) if c not in self._active]:
                for channel in missing:
                    await self._listen(conn, channel)
        except BaseException:
            self._conn = None
            conn.terminate()
            raise
        self._lost.clear()
        self.pid = conn.get_server_pid()
        self.connected = True
        self.connects += 1
        self._connected_event.set()
        for callback in list(self._on_connect):
            try:
                outcome = callback()
                if outcome is not None:
                    await outcome
            except Exception:
                log_event(
                    log,
                    "listener.callback_failed",
                    "on_connect callback failed",
                    level=logging.ERROR,
                    exc_info=True,
                )

    async def _drop_connection(self) -> None:
        self.connected = False
        self.pid = None
        self._active.clear()
        self._connected_event.clear()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
        elif conn is not None:
            conn.terminate()

    async def _wait_until_lost(self) -> None:
        """Return when the connection is gone: terminated, or not answering a ping."""
        while not self._closing:
            if await wait_event(self._lost, self._ping_interval):
                return
            try:
                assert self._conn is not None
                async with self._conn_lock:
                    await asyncio.wait_for(queries.ping(self._conn), 5)
            except Exception:
                log_event(
                    log,
                    "listener.lost",
                    "listener connection stopped answering; reconnecting",
                    level=logging.WARNING,
                )
                return

    async def _supervise(self) -> None:
        backoff = Backoff(self._backoff_initial, self._backoff_max, jitter=FULL)
        logged_at = 0.0
        while not self._closing:
            try:
                await self._connect()
            except Exception as exc:
                await self._drop_connection()
                sleep = backoff.next()
                # Retries come about once a second: say so on the first, then every 30 s.
                now = time.monotonic()
                if backoff.failures == 1 or now - logged_at >= _RECONNECT_LOG_EVERY:
                    logged_at = now
                    log_event(
                        log,
                        "listener.reconnecting",
                        f"listener cannot connect ({exc}); "
                        f"retrying up to {self._backoff_max:g}s apart",
                        level=logging.WARNING,
                        failures=backoff.failures,
                    )
                await asyncio.sleep(sleep)
                continue
            if self.connects > 1:
                log_event(log, "listener.connected", "listener reconnected")
            backoff.reset()
            await self._wait_until_lost()
            if not self._closing:
                log_event(log, "listener.lost", "listener connection lost", level=logging.WARNING)
            await self._drop_connection()

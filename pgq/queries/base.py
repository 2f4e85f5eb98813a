"""What every query function shares: the ``Executor`` it runs on and the translation of
database errors into pgq's exceptions."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Protocol, TypeVar

import asyncpg

from ..errors import translating, unreachable


class Executor(Protocol):
    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...
    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...


#: Connections that carry pgq's JSON codecs (``pgq.db.init_connection`` adds each one). Any
#: other connection, such as an application's own ``asyncpg.connect()`` passed to
#: ``Client.enqueue(connection=...)``, sends and returns jsonb as text.
_WITH_CODECS: weakref.WeakSet[Any] = weakref.WeakSet()


def mark_codecs(conn: Any) -> None:
    """Record that ``conn`` carries pgq's JSON codecs."""
    _WITH_CODECS.add(conn)


def has_codecs(db: Any) -> bool:
    """Whether ``db`` (a pool, a pooled connection or a connection) carries pgq's codecs."""
    if isinstance(db, asyncpg.Pool):
        return True  # pgq's pools are the only ones its queries are given
    return getattr(db, "_con", db) in _WITH_CODECS  # a pool's proxy wraps the connection


#: Every column of ``pgq.jobs`` but the secret ``lease_token``: what the reads select (a
#: ``SELECT *`` would need the column pgq_reader may not read). A test checks that it
#: names every other column of the table.
JOB_COLUMNS = (
    "id, queue, type, args, status, priority, run_at, attempts, max_attempts, timeout_seconds,"
    " worker_id, claimed_at, lease_expires_at, result, last_error, errors, idempotency_key,"
    " depends_on, created_at, updated_at, finished_at, concurrency_key, holds_slot, schedule,"
    " scheduled_for, progress, trace_context"
)

P = ParamSpec("P")
R = TypeVar("R")


def translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Re-raise database errors as pgq exceptions (``pgq.errors.SQLSTATE_ERRORS``)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with translating():
            return await fn(*args, **kwargs)

    return wrapper


def translated_read(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """``translated``, plus one retry on a fresh connection when the pooled connection it
    got had died unseen (a database restart or failover that left no FIN behind): a read
    is safe to repeat, and this spares its caller a 503 for a connection nobody used since
    the database came back. Only when ``db`` (the first argument) is a pool."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with translating():
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                pool = args[0] if args else None
                if not (isinstance(pool, asyncpg.Pool) and connection_died(exc)):
                    raise
                await pool.expire_connections()  # every idle one may be as dead: replace them
            return await fn(*args, **kwargs)

    return wrapper


def connection_died(exc: BaseException) -> bool:
    """True when ``exc`` says a connection that was open has gone (not: the database refused
    a new one, is starting up, or did not answer in time; retrying those at once is moot)."""
    return unreachable(exc) and not isinstance(exc, _NOT_A_DEAD_CONNECTION)


_NOT_A_DEAD_CONNECTION = (
    TimeoutError,
    ConnectionRefusedError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)

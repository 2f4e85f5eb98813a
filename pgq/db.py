"""Connections to PostgreSQL: the pool and the dedicated connections pgq opens.

Every connection pgq opens gets the same jsonb/json codecs (orjson, binary jsonb), so job
arguments and results cross the wire as Python objects everywhere.

A pool may also bound how long anything waits (``Timeouts``, the coordinator's): for a
free connection (``acquire``), for a statement and for a lock (``statement_timeout`` and
``lock_timeout``, set once per connection). A table locked by someone else then costs a
request a few seconds and a 503, not a coordinator whose every connection hangs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import asyncpg
import orjson

from .errors import Unencodable
from .queries.base import mark_codecs
from .queries.session import set_timeouts

#: How long closing a pool waits for connections still in use before it terminates them.
POOL_CLOSE_TIMEOUT = 5.0

#: The jsonb binary format is a version byte (1) followed by the JSON text.
_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return _decode_json(data[1:])


def _decode_json(data: bytes | str) -> Any:
    # PostgreSQL stores JSON that orjson refuses to read (1e400, nesting past 1,024 levels):
    # a clear refusal (HTTP 422) instead of a ValueError from inside the driver (a 500).
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Unencodable(
            f"a stored JSON value cannot be read ({exc}); read it with SQL "
            "(SELECT args, result, errors, progress FROM pgq.jobs WHERE id = …)"
        ) from None


async def init_connection(conn: asyncpg.Connection) -> None:
    """Register pgq's JSON codecs on a new connection (the pool's ``init`` hook)."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )
    await conn.set_type_codec(
        "json",
        schema="pg_catalog",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=_decode_json,
        format="text",
    )
    mark_codecs(conn)


async def keep_session(_conn: asyncpg.Connection) -> None:
    """A pool ``reset`` hook that does nothing.

    asyncpg's default reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: a round trip per call. pgq's pools only run single pgq
    function calls, which leave no session state behind (LISTEN lives on its own connection).
    """


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Upper bounds, in seconds, on the waits of a pool's callers; None: no bound.

    ``acquire``: for a free connection (past it, ``TimeoutError``, which pgq translates to
    ``DatabaseUnavailable``: 503). ``statement`` and ``lock``: PostgreSQL's
    ``statement_timeout`` and ``lock_timeout`` on every connection of the pool (past them,
    SQLSTATE 57014 / 55P03: ``DatabaseBusy``, 503). Not for a LISTEN connection, which
    holds no statement while it waits.
    """

    acquire: float | None = None
    statement: float | None = None
    lock: float | None = None


class Pool(asyncpg.Pool):
    """asyncpg's pool whose ``acquire`` (and so ``fetch``/``fetchrow``/``fetchval``, which
    acquire through it) waits at most ``acquire_timeout`` seconds by default."""

    def __init__(self, *args: Any, acquire_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


def _milliseconds(seconds: float | None) -> int:
    return 0 if not seconds else max(1, round(seconds * 1000))


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeouts: Timeouts | None = None,
    **kwargs: Any,
) -> asyncpg.Pool:
    """An asyncpg pool whose connections carry pgq's codecs (and skip the reset round trip),
    bounded by ``timeouts`` when given."""
    kwargs.setdefault("reset", keep_session)
    init = init_connection
    if timeouts is not None and (timeouts.statement or timeouts.lock):
        statement_ms, lock_ms = _milliseconds(timeouts.statement), _milliseconds(timeouts.lock)

        async def init(conn: asyncpg.Connection) -> None:
            await init_connection(conn)
            await set_timeouts(conn, statement_ms, lock_ms)  # the pool's reset keeps them

    pool = Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init,
        acquire_timeout=timeouts.acquire if timeouts is not None else None,
        max_queries=kwargs.pop("max_queries", 50000),
        max_inactive_connection_lifetime=kwargs.pop("max_inactive_connection_lifetime", 300.0),
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        **kwargs,
    )
    return await pool


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """A standalone connection with pgq's codecs (for LISTEN, migrations, tests)."""
    conn = await asyncpg.connect(dsn, **kwargs)
    await init_connection(conn)
    return conn


async def close_pool(pool: asyncpg.Pool, timeout: float = POOL_CLOSE_TIMEOUT) -> bool:
    """Close ``pool`` gracefully, waiting at most ``timeout`` seconds for connections still
    in use (``Pool.close`` alone waits for them forever); then terminate them. Whether the
    close was graceful: the caller logs the other case in its own words."""
    try:
        async with asyncio.timeout(timeout):
            await pool.close()
    except TimeoutError:
        pool.terminate()
        return False
    return True

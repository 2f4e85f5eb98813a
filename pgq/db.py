"""Connections to PostgreSQL: the pool and the dedicated connections pgq opens.

Every connection pgq opens gets the same jsonb/json codecs (orjson, binary jsonb), so job
arguments and results cross the wire as Python objects everywhere.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

#: The jsonb binary format is a version byte (1) followed by the JSON text.
_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


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
        decoder=orjson.loads,
        format="text",
    )


async def keep_session(_conn: asyncpg.Connection) -> None:
    """A pool ``reset`` hook that does nothing.

    asyncpg's default reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: a round trip per call. pgq's pools only run single pgq
    function calls, which leave no session state behind (LISTEN lives on its own connection).
    """


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """An asyncpg pool whose connections carry pgq's codecs (and skip the reset round trip)."""
    kwargs.setdefault("reset", keep_session)
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, **kwargs
    )


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """A standalone connection with pgq's codecs (for LISTEN, migrations, tests)."""
    conn = await asyncpg.connect(dsn, **kwargs)
    await init_connection(conn)
    return conn

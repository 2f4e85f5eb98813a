"""Calls to the pgq SQL functions as the runner's database source makes them."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from ..errors import DatabaseUnavailable, translate

__all__ = ["db_call", "is_transient"]

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is unreachable for now (worth retrying)."""
    return isinstance(translate(exc), DatabaseUnavailable)


#: asyncpg's client-side errors that are about the data or the setup, not a broken link.
_CLIENT_MISTAKES = tuple(
    getattr(asyncpg.exceptions, name)
    for name in (
        "DataError",
        "ClientConfigurationError",
        "UnsupportedClientFeatureError",
        "UnsupportedServerFeatureError",
    )
    if hasattr(asyncpg.exceptions, name)
)


async def db_call(call: Awaitable[T]) -> T:
    """Await a ``queries`` call; a connection that broke mid-operation (asyncpg reports
    some of those as ``InterfaceError`` or ``InternalClientError``, e.g. during a server
    restart) becomes ``DatabaseUnavailable`` like every other unreachable database."""
    try:
        return await call
    except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        if isinstance(exc, _CLIENT_MISTAKES):
            raise
        raise DatabaseUnavailable(f"the database connection broke: {exc}") from exc

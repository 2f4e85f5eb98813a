"""Session settings of a connection (set once, when a pool opens it)."""

from __future__ import annotations

from .base import Executor, translated


@translated
async def set_timeouts(db: Executor, statement_ms: int, lock_ms: int) -> None:
    """``statement_timeout`` and ``lock_timeout`` for the rest of the session (0: none).

    A session ``SET``, not startup parameters: poolers such as pgbouncer refuse startup
    parameters they do not know."""
    await db.fetchval(
        "SELECT set_config('statement_timeout', $1, false)"
        " || set_config('lock_timeout', $2, false)",
        f"{statement_ms}ms",
        f"{lock_ms}ms",
    )

"""The doorbell (``sql/0003_notifications.sql``): idle LISTEN sessions registered per queue, so an
enqueue rings only when someone is listening."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .base import Executor, translated


@translated
async def listen_idle(db: Executor, queues: Sequence[str], listener_pid: int) -> int:
    """``pgq.listen_idle``: register the LISTEN session ``listener_pid`` idle on ``queues``."""
    return await db.fetchval("SELECT pgq.listen_idle($1::text[], $2)", list(queues), listener_pid)


@translated
async def unlisten_idle(db: Executor, queues: Sequence[str] | None, listener_pid: int) -> int:
    """``pgq.unlisten_idle``: deregister ``listener_pid`` from ``queues`` (None: all)."""
    return await db.fetchval(
        "SELECT pgq.unlisten_idle($1::text[], $2)",
        None if queues is None else list(queues),
        listener_pid,
    )


@translated
async def wait_for_enqueuers(db: Executor, queues: Sequence[str]) -> bool:
    """``pgq.wait_for_enqueuers``: the barrier after ``listen_idle``; False on lock_timeout."""
    return await db.fetchval("SELECT pgq.wait_for_enqueuers($1::text[])", list(queues))


@translated
async def pass_barrier(pool: asyncpg.Pool, queues: Sequence[str]) -> bool:
    """``wait_for_enqueuers`` on a connection of ``pool``; a call cut off closes it.

    The barrier takes session-level advisory locks, which neither an aborted statement nor
    pgq's pools (no reset on release, see ``db.keep_session``) let go of. The function
    releases its key on every error it sees, but a call cut off from the client's side (a
    cancelled task, a reply lost in transit) leaves us unsure, and one key left held on a
    pooled connection blocks every enqueue into its queue for as long as that connection
    lives (producers were seen stalled for minutes behind one). A closed connection holds
    nothing, so that is what such a connection becomes.
    """
    async with pool.acquire() as conn:
        try:
            return await wait_for_enqueuers(conn, queues)
        except BaseException:
            conn.terminate()
            raise


@translated
async def forget_dead_listeners(db: Executor) -> int:
    """``pgq.forget_dead_listeners``: delete idle-listener rows of sessions that are gone."""
    return await db.fetchval("SELECT pgq.forget_dead_listeners()")

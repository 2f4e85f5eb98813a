"""Transactional handlers: the handler's writes and the job's success commit together.

A ``transactional=True`` handler runs with ``job.connection``: a connection of the
runner's transaction pool (``DatabaseSource``, one connection per running transactional
handler, so at most ``concurrency`` of them) in an open transaction. When the handler
returns, ``pgq.complete`` (fenced by worker, attempt and lease token) runs in that same
transaction and it commits: the handler's writes and ``succeeded`` are one commit.
Whatever else happens — the handler raises, times out, is cancelled, the runner shuts
down, or ``pgq.complete`` refuses because the lease was lost and the job is someone
else's now — the transaction
rolls back, and the attempt's failure (if any) is written in a transaction of its own. A
runner killed mid-handler leaves nothing either: PostgreSQL rolls back the transaction of
a connection that went away, and the job comes back when its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from .. import queries
from ..errors import JobNotFound, TransitionNotAllowed, translating
from ..jobs import Job

__all__ = ["DatabaseTransaction"]

#: Longest the completion (``pgq.complete`` plus COMMIT) or a rollback may take.
END_TIMEOUT = 60.0


class DatabaseTransaction:
    """``HandlerTransaction`` on an asyncpg pool connection (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        conn: asyncpg.pool.PoolConnectionProxy,
        tx: asyncpg.transaction.Transaction,
        job: Job,
        worker_id: str,
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._tx = tx
        self._job = job
        self._worker_id = worker_id

    @classmethod
    async def begin(cls, pool: asyncpg.Pool, job: Job, worker_id: str) -> DatabaseTransaction:
        """Take a connection from ``pool`` and open a transaction on it."""
        with translating():
            conn = await pool.acquire()
            try:
                tx = conn.transaction()
                await tx.start()
            except BaseException:
                await _discard(pool, conn)
                raise
        return cls(pool, conn, tx, job, worker_id)

    @property
    def connection(self) -> Any:
        return self._conn

    async def complete(self, result: Any) -> tuple[bool, str | None]:
        job = self._job
        try:
            async with asyncio.timeout(END_TIMEOUT):
                try:
                    await queries.complete(
                        self._conn,
                        job.id,
                        self._worker_id,
                        result,
                        attempt=job.attempt,
                        lease_token=job.lease_token,
                    )
                except (JobNotFound, TransitionNotAllowed):
                    await self._tx.rollback()
                    await self._pool.release(self._conn)
                    return False, None
                with translating():
                    await self._tx.commit()
        except BaseException:
            # Rolled back by the server if the COMMIT failed; a connection whose
            # transaction state is unknown is not given back to the pool.
            await _discard(self._pool, self._conn)
            raise
        await self._pool.release(self._conn)
        return True, "succeeded"

    async def rollback(self) -> None:
        try:
            async with asyncio.timeout(END_TIMEOUT):
                await self._tx.rollback()
        except Exception:
            await _discard(self._pool, self._conn)
            return
        except asyncio.CancelledError:
            await _discard(self._pool, self._conn)
            raise
        await self._pool.release(self._conn)


async def _discard(pool: asyncpg.Pool, conn: asyncpg.pool.PoolConnectionProxy) -> None:
    """Close ``conn`` (PostgreSQL rolls back whatever it had open) and give its pool slot
    back; the pool opens a fresh connection when one is needed."""
    conn.terminate()
    with contextlib.suppress(Exception):
        await pool.release(conn)

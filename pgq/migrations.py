"""Apply the forward-only migrations in ``sql/`` and record them in ``pgq.migrations``.

Order of work, after graphile-worker's migrator: each pending migration runs in its own
transaction that first takes a transaction-level advisory lock (so concurrent migrators
queue up instead of racing), re-reads the ledger, runs the file and records it. A database
already migrated by a *newer* pgq, one migrated by a pgq from before the baseline, and a
foreign ``pgq`` schema (Skytools PgQ installs one of that name), are refused with a message
that says what to do.

``sql/0001``–``0004`` are the baseline: the whole schema as of the first release, each
function defined once. Later files are deltas on top of it; ``sql/schema.sql`` is the
result, generated (``python -m tests.dump_schema``) and checked against the files by the
tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from importlib import resources
from pathlib import Path

import asyncpg
import asyncpg.pool

from .errors import ChangedMigration, MigrationError, PreBaselineDatabase
from .logs import log_event

log = logging.getLogger("pgq.migrations")

#: pg_advisory_xact_lock key shared by every pgq migrator ("pgq-migrate" as digits).
_LOCK_KEY = 0x7067712D6D6967

#: A plain connection or a pool's (Client.migrate runs on the latter).
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

#: Ledger names that only the migrations before the baseline had (they were squashed into
#: sql/0001-0004). Every database those migrations touched lists 0003_notify.
PRE_BASELINE_NAMES = frozenset(
    {"0003_notify", "0005_bulk_enqueue", "0007_release", "0008_doorbell", "0009_drain"}
)

#: How to move a pre-baseline database over. The tables those migrations left are the
#: baseline's column for column (only function comments differ), so rows copy as they are.
PRE_BASELINE_HELP = """Two ways over:
  * no jobs worth keeping (a development database, say): in psql
      DROP SCHEMA pgq CASCADE;
    then run `pgq migrate`.
  * keep the jobs: stop every runner and coordinator using this database; in psql
      ALTER SCHEMA pgq RENAME TO pgq_old;
    run `pgq migrate`; then in psql, in one transaction
      INSERT INTO pgq.jobs OVERRIDING SYSTEM VALUE SELECT * FROM pgq_old.jobs;
      SELECT setval(pg_get_serial_sequence('pgq.jobs', 'id'), max(id)) FROM pgq.jobs;
      DROP SCHEMA pgq_old CASCADE;
    and start them again (jobs that were running come back when their lease expires)."""

_LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS pgq;
CREATE TABLE IF NOT EXISTS pgq.migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgq.migrations IS 'pgq: the sql/ migrations applied to this database.';
"""


@dataclasses.dataclass(frozen=True)
class Migration:
    """One file of ``sql/``: ``0001_jobs.sql`` is named ``0001_jobs``."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def sql_dir() -> Path:
    """Where the migrations are: inside the installed package (wheel), else the repo's sql/."""
    packaged = resources.files("pgq") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "sql"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration, in order."""
    directory = directory or sql_dir()
    files = sorted(p for p in directory.iterdir() if _FILE_NAME.match(p.name))
    if not files:
        raise MigrationError(f"no migrations found in {directory}")
    return [Migration(p.stem, p.read_text()) for p in files]


async def _check_not_foreign(conn: Conn) -> None:
    """Refuse a ``pgq`` schema that pgq did not create (e.g. Skytools PgQ)."""
    row = await conn.fetchrow(
        """
        SELECT to_regclass('pgq.migrations') IS NOT NULL AS ours,
               EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgq') AS schema_exists,
               (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'pgq')
             + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'pgq') AS objects
        """
    )
    assert row is not None  # a SELECT without FROM returns one row
    if row["schema_exists"] and not row["ours"] and row["objects"] > 0:
        raise MigrationError(
            "this database already has a schema named 'pgq' that pgq did not create "
            "(Skytools PgQ uses that name too); pgq will not touch it. Use another database "
            "for pgq, or drop that schema if it is unused."
        )


async def applied_migrations(conn: Conn) -> dict[str, str]:
    """name → checksum of every migration recorded in the ledger (empty when none)."""
    if await conn.fetchval("SELECT to_regclass('pgq.migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT name, checksum FROM pgq.migrations ORDER BY name")
    return {r["name"]: r["checksum"] for r in rows}


def _check_not_pre_baseline(applied: dict[str, str]) -> None:
    old = sorted(PRE_BASELINE_NAMES & set(applied))
    if old:
        raise PreBaselineDatabase(
            "this database was migrated by a pgq from before its migrations were squashed "
            f"into one baseline (its pgq.migrations lists {', '.join(old)}); this pgq cannot "
            "migrate it in place.\n" + PRE_BASELINE_HELP
        )


def _check_compatible(applied: dict[str, str], known: list[Migration]) -> None:
    _check_not_pre_baseline(applied)
    known_names = {m.name: m for m in known}
    newer = sorted(set(applied) - set(known_names))
    if newer:
        raise MigrationError(
            f"the database has migrations this pgq does not know ({', '.join(newer)}): it was "
            "migrated by a newer pgq. Upgrade pgq (pip install -U pgq-coordinator) before "
            "running it against this database."
        )
    for name, checksum in applied.items():
        if known_names[name].checksum != checksum:
            raise ChangedMigration(
                f"migration {name} was applied with different content than this pgq ships. "
                "Applied migrations are never edited; restore the file or reinstall pgq."
            )


async def pending_migrations(conn: Conn) -> list[Migration]:
    """The migrations not yet applied, after the foreign-schema and version checks."""
    await _check_not_foreign(conn)
    known = load_migrations()
    applied = await applied_migrations(conn)
    _check_compatible(applied, known)
    return [m for m in known if m.name not in applied]


async def migrate(conn: Conn) -> list[str]:
    """Apply every pending migration; returns the names applied by this call (in order)."""
    await _check_not_foreign(conn)
    known = load_migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(_LEDGER_DDL)
    done: list[str] = []
    for migration in known:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            applied = await applied_migrations(conn)
            _check_compatible(applied, known)
            if migration.name in applied:
                continue
            await conn.execute(
                "INSERT INTO pgq.migrations (name, checksum) VALUES ($1, $2)",
                migration.name,
                migration.checksum,
            )
            await conn.execute(migration.sql)
            done.append(migration.name)
    for problem in await secure(conn):
        log_event(log, "migrate.roles", problem, level=logging.WARNING)
    return done


async def secure(conn: Conn) -> list[str]:
    """``pgq._secure()``: create the roles pgq_reader, pgq_producer, pgq_worker and
    pgq_admin when missing and apply the privilege model (sql/0008_roles.sql) to every
    function and table, so whatever a migration added is covered. Returns what could not
    be done (e.g. the migrating user may not create roles), one sentence each; the rest is
    done regardless. ``migrate`` runs it after every run."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        rows = await conn.fetch("SELECT problem FROM pgq._secure() AS problem")
    return [r["problem"] for r in rows]


async def check_up_to_date(conn: Conn) -> None:
    """Raise MigrationError unless the schema is exactly what this pgq expects."""
    pending = await pending_migrations(conn)
    if pending:
        raise MigrationError(
            f"the database is missing {len(pending)} pgq migration(s) "
            f"({', '.join(m.name for m in pending)}): run `pgq migrate` first."
        )

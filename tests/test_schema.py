"""sql/schema.sql (the committed pg_dump of a migrated database) agrees with sql/, and sql/
keeps its shape: each function defined once, under a header comment that is also its
``COMMENT ON FUNCTION``.

pg_dump's text differs between server versions, so the check compares catalogs instead:
sql/schema.sql loaded into one fresh database, the migrations applied to another, then
a fingerprint of each (relations and their options, columns, constraints, indexes,
functions, triggers, types, comments, sequences) must be equal. The pgq.migrations ledger
is left out: it records history, not schema. When this fails, regenerate the dump:
``.venv/bin/python -m tests.dump_schema``.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from pgq import db

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
SCHEMA_SQL = SQL_DIR / "schema.sql"
REGENERATE = "`.venv/bin/python -m tests.dump_schema`"
LEDGER = ("migrations", "migrations_pkey", "_migrations")

Fingerprint = dict[str, dict[str, str]]

_QUERIES = {
    "relations": """
        SELECT c.relname,
               concat_ws(' ', c.relkind::text, c.relpersistence::text,
                         array_to_string(c.reloptions, ','))
          FROM pg_class c
         WHERE c.relnamespace = 'pgq'::regnamespace AND c.relname <> ALL ($1)
    """,
    "columns": """
        SELECT c.relname || '.' || a.attname,
               concat_ws(' ', a.attnum, format_type(a.atttypid, a.atttypmod),
                         CASE WHEN a.attnotnull THEN 'NOT NULL' END,
                         'DEFAULT ' || pg_get_expr(d.adbin, d.adrelid),
                         'IDENTITY ' || nullif(a.attidentity::text, ''),
                         'GENERATED ' || nullif(a.attgenerated::text, ''),
                         'COLLATE ' || nullif(a.attcollation, 0)::regcollation::text,
                         'COMMENT ' || col_description(c.oid, a.attnum))
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'pgq'::regnamespace AND c.relname <> ALL ($1)
           AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')
           AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraints": """
        SELECT coalesce(c.relname, t.typname) || '.' || k.conname, pg_get_constraintdef(k.oid)
          FROM pg_constraint k
          LEFT JOIN pg_class c ON c.oid = k.conrelid
          LEFT JOIN pg_type t ON t.oid = k.contypid
         WHERE k.connamespace = 'pgq'::regnamespace
           AND coalesce(c.relname, t.typname) <> ALL ($1)
    """,
    "indexes": """
        SELECT i.relname, pg_get_indexdef(i.oid)
          FROM pg_index x
          JOIN pg_class i ON i.oid = x.indexrelid
          JOIN pg_class c ON c.oid = x.indrelid
         WHERE c.relnamespace = 'pgq'::regnamespace AND c.relname <> ALL ($1)
    """,
    "functions": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               concat_ws(E'\\n-- COMMENT: ', pg_get_functiondef(p.oid),
                         obj_description(p.oid, 'pg_proc'))
          FROM pg_proc p
         WHERE p.pronamespace = 'pgq'::regnamespace AND $1::text[] IS NOT NULL
    """,
    "triggers": """
        SELECT c.relname || '.' || g.tgname, pg_get_triggerdef(g.oid)
          FROM pg_trigger g
          JOIN pg_class c ON c.oid = g.tgrelid
         WHERE c.relnamespace = 'pgq'::regnamespace AND NOT g.tgisinternal
           AND c.relname <> ALL ($1)
    """,
    "types": """
        SELECT t.typname,
               concat_ws(' ', t.typtype::text, nullif(t.typbasetype, 0)::regtype::text,
                         (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                            FROM pg_enum e WHERE e.enumtypid = t.oid))
          FROM pg_type t
         WHERE t.typnamespace = 'pgq'::regnamespace AND t.typname <> ALL ($1)
    """,
    "comments": """
        SELECT 'relation ' || c.relname, obj_description(c.oid, 'pg_class')
          FROM pg_class c
         WHERE c.relnamespace = 'pgq'::regnamespace AND c.relname <> ALL ($1)
           AND obj_description(c.oid, 'pg_class') IS NOT NULL
        UNION ALL
        SELECT 'schema pgq', obj_description('pgq'::regnamespace, 'pg_namespace')
         WHERE obj_description('pgq'::regnamespace, 'pg_namespace') IS NOT NULL
    """,
    "sequences": """
        SELECT c.relname,
               concat_ws(' ', s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin,
                         s.seqmax, s.seqcache, s.seqcycle)
          FROM pg_sequence s
          JOIN pg_class c ON c.oid = s.seqrelid
         WHERE c.relnamespace = 'pgq'::regnamespace AND c.relname <> ALL ($1)
    """,
}


async def fingerprint(conn: asyncpg.Connection) -> Fingerprint:
    """The pgq schema's catalog entries, by kind and name (ledger excluded)."""
    result: Fingerprint = {}
    for kind, query in _QUERIES.items():
        rows = await conn.fetch(query, list(LEDGER))
        result[kind] = {r[0]: r[1] for r in rows}
    return result


def differences(expected: Fingerprint, actual: Fingerprint) -> list[str]:
    out = []
    for kind in expected:
        a, b = expected[kind], actual[kind]
        out += [f"{kind} {name}: only in the migrations" for name in sorted(set(a) - set(b))]
        out += [f"{kind} {name}: only in sql/schema.sql" for name in sorted(set(b) - set(a))]
        out += [
            f"{kind} {name}:\n  migrations: {a[name]}\n  schema.sql: {b[name]}"
            for name in sorted(set(a) & set(b))
            if a[name] != b[name]
        ]
    return out


async def load_dump(dsn: str) -> asyncpg.Connection:
    conn = await db.connect(dsn)
    await conn.execute("SET check_function_bodies = off")
    await conn.execute(SCHEMA_SQL.read_text())
    await conn.execute("RESET check_function_bodies")
    return conn


@pytest.mark.smoke
async def test_schema_sql_matches_the_migrations(dsn: str, empty_dsn: str) -> None:
    migrated = await db.connect(dsn)  # a copy of the session's freshly migrated template
    loaded = await load_dump(empty_dsn)
    try:
        expected, actual = await fingerprint(migrated), await fingerprint(loaded)
    finally:
        await migrated.close()
        await loaded.close()
    problems = differences(expected, actual)
    assert not problems, (
        f"sql/schema.sql disagrees with the migrations in sql/: regenerate it with {REGENERATE} "
        "and commit it:\n" + "\n".join(problems)
    )


async def test_the_fingerprint_sees_what_matters(conn: asyncpg.Connection) -> None:
    """Not vacuous: it holds the schema's parts, and any drift in them changes it."""
    before = await fingerprint(conn)
    assert "jobs.status" in before["columns"] and "enqueue_many" in str(before["functions"])
    assert {"jobs_claim_idx", "jobs_idempotency_key_idx"} <= set(before["indexes"])
    assert "jobs._500_notify_update" in before["triggers"]
    assert "jobs.jobs_status_known" in before["constraints"]
    assert "job_spec" in before["types"] and "jobs_id_seq" in before["sequences"]
    assert "relation jobs" in before["comments"]
    assert not any(name.startswith("migrations") for name in before["columns"])

    drifts = [
        "CREATE OR REPLACE FUNCTION pgq.backoff(attempt integer) RETURNS interval"
        " LANGUAGE sql VOLATILE AS $$ SELECT interval '1 second' $$",
        "COMMENT ON FUNCTION pgq.stats() IS 'changed'",
        "ALTER TABLE pgq.jobs ALTER COLUMN max_attempts SET DEFAULT 11",
        "ALTER TABLE pgq.jobs ALTER COLUMN result TYPE json",
        "DROP INDEX pgq.jobs_lease_idx",
        "ALTER TABLE pgq.jobs DROP CONSTRAINT jobs_errors_array",
        "DROP TRIGGER _500_notify_insert ON pgq.jobs",
        "ALTER TABLE pgq.jobs SET (autovacuum_vacuum_threshold = 50)",
        "ALTER TABLE pgq.idle_listeners SET LOGGED",
    ]
    for drift in drifts:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(drift)
            assert differences(before, await fingerprint(conn)), drift
        finally:
            await tx.rollback()
    assert differences(before, await fingerprint(conn)) == []


def test_schema_sql_has_no_version_noise() -> None:
    text = SCHEMA_SQL.read_text()
    for noise in (
        "\\restrict",
        "\nSET ",
        "SELECT pg_catalog.set_config(",
        "Dumped from",
        "Dumped by",
        "pg_attver",
    ):
        assert noise not in text
    assert "CREATE TABLE pgq.jobs" in text


#: A function's definition in sql/ and the run of ``--`` lines right above it.
_DEFINITION = re.compile(r"((?:^--.*\n)*)^CREATE (?:OR REPLACE )?FUNCTION pgq\.(\w+)\(", re.M)


def function_definitions() -> dict[str, list[tuple[str, str]]]:
    """name → [(file, header comment without the ``--``)] of every function defined in sql/."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(SQL_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        for m in _DEFINITION.finditer(path.read_text()):
            lines = m.group(1).rstrip("\n").split("\n") if m.group(1) else []
            header = "\n".join(re.sub(r"^-- ?", "", line) for line in lines)
            found.setdefault(m.group(2), []).append((path.name, header))
    return found


def test_each_function_is_defined_once_under_a_header() -> None:
    definitions = function_definitions()
    assert len(definitions) > 30 and "claim" in definitions
    twice = {name: [f for f, _ in defs] for name, defs in definitions.items() if len(defs) > 1}
    assert not twice, (
        f"functions defined more than once in sql/: {twice}. Each function is defined once, "
        "by a plain CREATE FUNCTION in the file its name suggests; while pgq is unreleased, "
        "change it there rather than redefining it in a later file."
    )
    for name, [(file, header)] in definitions.items():
        assert header.startswith(f"{name}: "), (
            f"{file}: pgq.{name} needs a header comment right above it, starting "
            f"'-- {name}: ' (when it applies, what it leaves behind, what it raises)"
        )


async def test_each_function_comment_is_its_header(conn: asyncpg.Connection) -> None:
    """\\df+ shows the contract: COMMENT ON FUNCTION repeats the header comment verbatim."""
    rows = await conn.fetch(
        "SELECT p.proname, obj_description(p.oid, 'pg_proc') AS comment"
        "  FROM pg_proc p WHERE p.pronamespace = 'pgq'::regnamespace"
    )
    definitions = function_definitions()
    assert sorted(r["proname"] for r in rows) == sorted(definitions)
    wrong = [
        f"pgq.{r['proname']} ({definitions[r['proname']][-1][0]})"
        for r in rows
        if r["comment"] != definitions[r["proname"]][-1][1]
    ]
    assert not wrong, (
        "COMMENT ON FUNCTION differs from the header comment (the same text without the "
        f"'-- ', lines joined by newlines) for: {', '.join(wrong)}"
    )

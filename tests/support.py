"""What the tests share: the repository path, a free port, one way to wait for a condition
with a deadline (never a bare sleep), runners in this loop and in subprocesses, and the
coordinator app on a real port.

Waiting: :func:`wait_until` polls a check, plain or async, until it returns something
truthy. Use it only for state nothing signals; where an event can be awaited, await it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
from aiohttp import web

import pgq
from pgq.coordinator import Settings, create_app
from pgq.coordinator.serve import start_site
from pgq.runner import HttpSource

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: Total timeout of each request ``Live.request`` sends.
LIVE_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)

#: What an HTTP-mode runner subprocess gets as its database: nothing listens there.
NO_DATABASE = "postgresql://nobody@127.0.0.1:1/no_database_here"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(
    check: Callable[[], T | Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.01
) -> T:
    """Call ``check()`` (awaiting it when it is a coroutine) until it returns something
    truthy, and return that; fail after ``timeout`` seconds with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


# -- the database ----------------------------------------------------------------------------


def dsn_for(admin_dsn: str, database: str) -> str:
    """The admin DSN pointed at another database on the same server."""
    return urlunsplit(urlsplit(admin_dsn)._replace(path="/" + database))


async def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (a copy of ``template``) on ``admin_dsn``'s server; its DSN."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return dsn_for(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def statuses(conn: asyncpg.Connection) -> dict[str, int]:
    """Job count per status."""
    rows = await conn.fetch("SELECT status, count(*) AS n FROM pgq.jobs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def job_row(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM pgq.jobs WHERE id = $1", job_id)


async def wait_status(
    conn: asyncpg.Connection, job_id: int, status: str, timeout: float = 10
) -> asyncpg.Record:
    """Until job ``job_id`` has ``status``; returns its row."""

    async def check() -> asyncpg.Record | None:
        row = await job_row(conn, job_id)
        return row if row["status"] == status else None

    return await wait_until(check, timeout=timeout)


async def wait_statuses(
    conn: asyncpg.Connection, expected: dict[str, int], timeout: float = 10
) -> None:
    """Until the job count per status is exactly ``expected``."""

    async def check() -> bool:
        return await statuses(conn) == expected

    try:
        await wait_until(check, timeout=timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"expected {expected}, have {await statuses(conn)}") from None


# -- runners in this loop --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(runner: pgq.Runner, *, timeout: float = 10.0) -> AsyncIterator[asyncio.Task]:
    """Run ``runner`` in this loop until the block ends; yields once it listens."""
    task = asyncio.create_task(runner.run())

    def listening() -> bool:
        if task.done():
            task.result()  # surface a start-up failure
        source = runner.health()["source"]
        return bool(source and source.get("listener_connected"))

    try:
        await wait_until(listening, timeout=timeout, interval=0.005)
        yield task
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def running_http(runner: pgq.Runner, source: HttpSource) -> AsyncIterator[Any]:
    """Run ``runner`` over ``source`` in this loop; yields once the coordinator answered it."""
    task = asyncio.create_task(runner.run(source=source))

    def started() -> bool:
        if task.done():
            task.result()  # surface a start-up failure
        return bool(source.health()["reachable"])

    try:
        await wait_until(started, timeout=10, interval=0.005)
        yield task
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)


# -- runner subprocesses ---------------------------------------------------------------------


@dataclass
class RunnerProcess:
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait(self, timeout: float) -> int:
        try:
            await wait_until(lambda: self.proc.poll() is not None, timeout=timeout, interval=0.02)
        except AssertionError:
            raise AssertionError(
                f"runner {self.pid} did not exit within {timeout}s; log:\n{self.log()[-3000:]}"
            ) from None
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def start_runner(
    dsn: str,
    tmp_path: Path,
    *args: str,
    target: str = "tests.runner_handlers:runner",
    env: dict[str, str] | None = None,
    name: str = "runner",
) -> RunnerProcess:
    """``python -m pgq runner TARGET ARGS`` with stderr (the JSON log) in a file."""
    run_log = tmp_path / "runs"
    run_log.mkdir(exist_ok=True)
    stderr_path = tmp_path / f"{name}-{time.monotonic_ns()}.stderr"
    full_env = {
        **os.environ,
        "PGQ_DATABASE_URL": dsn,
        "PGQ_TEST_RUN_LOG": str(run_log),
        "PGQ_LOG_FORMAT": "json",
        "PGQ_LOG_LEVEL": "INFO",
        **(env or {}),
    }
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgq", "runner", target, *args],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return RunnerProcess(proc, stderr_path)


def start_http_runner(
    coord: Coordinator, tmp_path: Path, *args: str, name: str = "http-runner", **kw: Any
) -> RunnerProcess:
    """``python -m pgq runner tests.runner_handlers:runner --coordinator URL ARGS`` with a
    database URL that points nowhere."""
    env = {"PGQ_DATABASE_URL": NO_DATABASE, **kw.pop("env", {})}
    return start_runner(
        NO_DATABASE, tmp_path, "--coordinator", coord.url, *args, name=name, env=env, **kw
    )


async def wait_listening(proc: RunnerProcess, timeout: float = 15.0) -> None:
    """Until the runner logged that it started (its LISTEN is active by then)."""

    def started() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"runner exited with {proc.proc.returncode}:\n{proc.log()}")
        return '"event":"runner.started"' in proc.log()

    await wait_until(started, timeout=timeout, interval=0.02)


@dataclass(frozen=True)
class Run:
    what: str
    job_id: int
    attempt: int
    pid: int
    wall: float
    mono: float


def read_runs(tmp_path: Path) -> list[Run]:
    """Every handler start/end line the subprocesses wrote (tests/runner_handlers.py)."""
    runs: list[Run] = []
    directory = tmp_path / "runs"
    if not directory.exists():
        return runs
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text().splitlines():
            what, job_id, attempt, pid, wall, mono = line.split()
            runs.append(Run(what, int(job_id), int(attempt), int(pid), float(wall), float(mono)))
    return runs


# -- the coordinator -------------------------------------------------------------------------


@dataclass
class Live:
    """A running coordinator: its app, base URL and an HTTP session to it."""

    app: web.Application
    runner: web.AppRunner
    url: str
    http: aiohttp.ClientSession

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """Send a request; returns (status, decoded JSON body or raw text, response)."""
        hdrs = dict(headers or {})
        if json is not None:
            data = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        try:
            async with self.http.request(
                method, self.url + path, data=data, headers=hdrs, **kwargs
            ) as resp:
                raw = await resp.read()
                body: Any = raw.decode()
                if resp.content_type == "application/json":
                    body = orjson.loads(raw)
                return resp.status, body, resp
        except TimeoutError as exc:
            raise AssertionError(f"{method} {path}: no complete answer in time ({exc!r})") from exc


@contextlib.asynccontextmanager
async def live_app(
    dsn: str, settings: Settings | None = None, *, ready: bool = True, **kw: Any
) -> AsyncIterator[Live]:
    """The app on 127.0.0.1:<free port>; with ``ready``, once its listener is connected."""
    settings = settings or Settings(**kw)
    app = create_app(dsn, settings)
    runner, site = await start_site(app, "127.0.0.1", 0, settings, ready_timeout=10 if ready else 0)
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    try:
        # A request the app never answers fails in a minute, naming itself, well before
        # pytest-timeout (aiohttp's own default is 300 s, the whole test's budget).
        async with aiohttp.ClientSession(timeout=LIVE_REQUEST_TIMEOUT) as http:
            yield Live(app, runner, url, http)
    finally:
        await runner.cleanup()


class Coordinator:
    """The coordinator app on 127.0.0.1:``port`` in this test's loop; ``stop()`` and
    ``start()`` again on the same port is a coordinator restart."""

    def __init__(self, dsn: str, settings: Settings) -> None:
        self.dsn = dsn
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self.starts = 0

    async def start(self) -> None:
        assert self._runner is None, "already running"
        self.app = create_app(self.dsn, self.settings)
        self._runner, _site = await start_site(self.app, "127.0.0.1", self.port, self.settings)
        self.starts += 1

    async def stop(self) -> None:
        """Like SIGTERM: parked long polls answer with no jobs, in-flight requests finish."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


@contextlib.asynccontextmanager
async def coordinator(dsn: str, **settings: Any) -> AsyncIterator[Coordinator]:
    settings.setdefault("shutdown_timeout", 5.0)
    coord = Coordinator(dsn, Settings(**settings))
    await coord.start()
    try:
        yield coord
    finally:
        await coord.stop()


async def wait_healthy(
    http: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process, timeout: float = 30
) -> None:
    """Wait until the coordinator process at ``url`` answers /health 200; fail at once if it
    exits first (a refused start says why on its stderr)."""

    async def healthy() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"the coordinator exited with {proc.returncode} before serving")
        try:
            async with http.get(url + "/health") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(healthy, timeout=timeout, interval=0.05)


# -- a proxy that loses connections silently ---------------------------------------------------


class SilentProxy:
    """A TCP proxy to PostgreSQL that can lose its connections without a word, as a
    failover behind a load balancer or a NAT that forgot its flows does: ``drop()`` closes
    every upstream side but leaves the client sides open; a client side is reset only when
    its client next sends something. New connections go through as before."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._links: list[
            tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[asyncio.Task[None]]]
        ] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self._server: asyncio.Server | None = None
        #: While True, new connections are reset at once (the database is "down").
        self.refuse = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for client, upstream, _pipes in self._links:
            client.transport.abort()
            upstream.transport.abort()
        if self._server is not None:
            self._server.close()

    def drop(self, *, keep_port: int | None = None, reset_after: float | None = None) -> None:
        """Lose every connection, but the one whose upstream side has local port
        ``keep_port`` (``pg_stat_activity.client_port`` of the backend to spare). A lost
        client side is reset when its client next sends something, or after
        ``reset_after`` seconds (a request already in flight would otherwise wait for its
        answer until a timeout)."""
        kept = [link for link in self._links if link[1].get_extra_info("sockname")[1] == keep_port]
        links, self._links = [link for link in self._links if link not in kept], kept
        for client, upstream, pipes in links:
            for task in pipes:
                task.cancel()
            upstream.transport.abort()
            self._spawn(self._reset_on_use(client, reset_after))

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        if self.refuse:  # refused while this one was connecting: it must not slip through
            up_writer.transport.abort()
            writer.transport.abort()
            return
        pipes = [
            self._spawn(self._pipe(reader, up_writer)),
            self._spawn(self._pipe(up_reader, writer)),
        ]
        self._links.append((writer, up_writer, pipes))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _reset_on_use(self, client: asyncio.StreamWriter, after: float | None) -> None:
        reader = client._protocol._stream_reader  # type: ignore[attr-defined]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(1), after)
        client.transport.abort()


@contextlib.asynccontextmanager
async def silent_proxy(dsn: str) -> AsyncIterator[tuple[SilentProxy, str]]:
    """A ``SilentProxy`` in front of the server of ``dsn``, and the DSN through it."""
    parts = urlsplit(dsn)
    proxy = SilentProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        yield proxy, urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    finally:
        await proxy.close()

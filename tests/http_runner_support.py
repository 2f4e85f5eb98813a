"""Helpers for the HTTP-mode runner tests: a coordinator on a fixed port that can be stopped
and started again (a restart), in-process HTTP runners, and runner subprocesses that are
given no usable database (so everything they do goes through the coordinator)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

import pgq
from pgq.coordinator import Settings, create_app
from pgq.coordinator.serve import start_site
from pgq.runner import HttpSource

from .http_support import free_port
from .runner_support import RunnerProcess, start_runner, wait_until

#: What an HTTP-mode runner subprocess gets as its database: nothing listens there.
NO_DATABASE = "postgresql://nobody@127.0.0.1:1/no_database_here"


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


@contextlib.asynccontextmanager
async def running_http(runner: pgq.Runner, source: HttpSource) -> AsyncIterator[Any]:
    """Run ``runner`` over ``source`` in this loop; yields once the coordinator answered it."""
    task = asyncio.create_task(runner.run(source=source))

    async def started() -> bool:
        if task.done():
            task.result()  # surface a start-up failure
        return bool(source.health()["reachable"])

    try:
        await wait_until(started, timeout=10, interval=0.005)
        yield task
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)


def start_http_runner(
    coord: Coordinator, tmp_path: Path, *args: str, name: str = "http-runner", **kw: Any
) -> RunnerProcess:
    """``python -m pgq runner tests.runner_handlers:runner --coordinator URL ARGS`` with a
    database URL that points nowhere."""
    env = {"PGQ_DATABASE_URL": NO_DATABASE, **kw.pop("env", {})}
    return start_runner(
        NO_DATABASE, tmp_path, "--coordinator", coord.url, *args, name=name, env=env, **kw
    )

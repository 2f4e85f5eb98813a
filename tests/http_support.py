"""Helpers for the HTTP tests: the coordinator app on a real port, inside the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from pgq.coordinator import Settings, create_app
from pgq.coordinator.serve import start_site


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
        async with self.http.request(
            method, self.url + path, data=data, headers=hdrs, **kwargs
        ) as resp:
            raw = await resp.read()
            body: Any = raw.decode()
            if resp.content_type == "application/json":
                body = orjson.loads(raw)
            return resp.status, body, resp


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
        async with aiohttp.ClientSession() as http:
            yield Live(app, runner, url, http)
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll ``check`` until true, failing after ``timeout`` s (for state with no event)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


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

    await eventually(healthy, timeout=timeout, interval=0.05)

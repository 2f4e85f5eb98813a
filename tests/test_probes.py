"""Probes: ``/livez`` (the process serves) apart from ``/health`` = ``/readyz`` (the
database and the listener are up), for the coordinator and for ``pgq runner --health-port``;
a coordinator that starts while the database is down serves ``/livez`` and waits for it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from pgq import db, migrations
from pgq.devtools.embedded import EmbeddedPostgres

from .support import (
    REPO,
    coordinator,
    free_port,
    live_app,
    start_http_runner,
    start_runner,
    wait_listening,
    wait_until,
)


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status, await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0, ""


async def test_without_a_database_livez_is_200_and_readiness_503_naming_no_address() -> None:
    port = free_port()
    dead = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    async with live_app(dead, ready=False) as live:
        status, body, _ = await live.request("GET", "/livez")
        assert (status, body) == (200, {"status": "ok"})
        for path in ("/health", "/readyz"):
            status, body, resp = await live.request("GET", path)
            assert status == 503 and body["error"]["code"] == "database_unavailable"
            assert resp.headers["Retry-After"] == "1"
            message = body["error"]["message"]
            assert "127.0.0.1" not in message and str(port) not in message, message


async def test_with_the_database_every_probe_is_200(dsn: str) -> None:
    async with live_app(dsn) as live:
        for path in ("/livez", "/health", "/readyz"):
            status, body, _ = await live.request("GET", path)
            assert (status, body) == (200, {"status": "ok"}), path


def _coordinator_env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env.pop("DATABASE_URL", None)
    return {**env, "PGQ_DATABASE_URL": dsn, "PGQ_LOG_FORMAT": "json"}


@pytest.mark.slow
async def test_a_coordinator_started_during_an_outage_serves_livez_and_becomes_ready(
    tmp_path: Path,
) -> None:
    """The database is down when the coordinator starts, and stays down longer than the
    old 30 s start-up check would wait for it: no exit, /livez 200, /health 503; once the
    server answers again, /health turns 200 within seconds."""
    server = EmbeddedPostgres()
    dsn = await asyncio.to_thread(server.start)
    conn = await db.connect(dsn)
    try:
        await migrations.migrate(conn)  # a migrated database that is down for a while
    finally:
        await conn.close()
    await asyncio.to_thread(server.stop, remove=False)
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    stderr = (tmp_path / "coordinator.stderr").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgq",
        "coordinator",
        "--port",
        str(http_port),
        cwd=REPO,
        env=_coordinator_env(dsn),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until(lambda: _live(http, url), timeout=30, interval=0.1)
            status, text = await get(http, url + "/health")
            assert status == 503 and "127.0.0.1" not in text, text
            # Past the old start-up limit (30 s), the process is still there and live.
            await asyncio.sleep(31)
            assert proc.returncode is None, (tmp_path / "coordinator.stderr").read_text()
            assert (await get(http, url + "/livez"))[0] == 200
            assert (await get(http, url + "/health"))[0] == 503

            await asyncio.to_thread(server.start)
            t0 = time.monotonic()

            async def ready() -> bool:
                return (await get(http, url + "/health"))[0] == 200

            # listener and start-up check retry at most 1 s apart (jittered): a few
            # seconds of margin for a loaded machine.
            await wait_until(ready, timeout=15, interval=0.05)
            assert time.monotonic() - t0 < 5.0
            assert proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        stderr.close()
        await asyncio.to_thread(server.stop, remove=True)
    assert proc.returncode == 0, (tmp_path / "coordinator.stderr").read_text()[-2000:]


async def _live(http: aiohttp.ClientSession, url: str) -> bool:
    return (await get(http, url + "/livez"))[0] == 200


async def test_runner_health_port_serves_livez_and_readyz(dsn: str, tmp_path: Path) -> None:
    port = free_port()
    proc = start_runner(dsn, tmp_path, "--health-port", str(port), name="probed")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_listening(proc)
        async with aiohttp.ClientSession() as http:
            assert await get(http, url + "/livez") == (200, '{"status": "ok"}')
            for path in ("/readyz", "/health"):
                status, text = await get(http, url + path)
                assert status == 200, text
            proc.signal(signal.SIGTERM)
            assert await proc.wait(15) == 0, proc.log()[-2000:]
    finally:
        proc.stop()


async def test_runner_readyz_is_503_while_the_database_is_unreachable(tmp_path: Path) -> None:
    port = free_port()
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    proc = start_runner(dead, tmp_path, "--health-port", str(port), name="unready")
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until(lambda: _live(http, url), timeout=15, interval=0.05)
            status, text = await get(http, url + "/readyz")
            assert status == 503 and "not_ready" in text, text
            assert "127.0.0.1" not in text
            proc.signal(signal.SIGTERM)
            assert await proc.wait(15) == 0, proc.log()[-2000:]
    finally:
        proc.stop()


async def test_http_runner_readyz_follows_the_coordinator(dsn: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with coordinator(dsn) as coord:
        proc = start_http_runner(coord, tmp_path, "--health-port", str(port))
        try:
            async with aiohttp.ClientSession() as http:

                async def readyz(expected: int) -> bool:
                    return (await get(http, url + "/readyz"))[0] == expected

                await wait_until(lambda: readyz(200), timeout=20, interval=0.1)
                await coord.stop()  # the runner's next call fails: not ready, still live
                await wait_until(lambda: readyz(503), timeout=30, interval=0.1)
                assert (await get(http, url + "/livez"))[0] == 200
                await coord.start()
                await wait_until(lambda: readyz(200), timeout=30, interval=0.1)
                proc.signal(signal.SIGTERM)
                assert await proc.wait(20) == 0, proc.log()[-2000:]
        finally:
            proc.stop()

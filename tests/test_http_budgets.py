"""No single request makes a coordinator use more than 256 MiB.

The coordinator runs as a real process (``pgq coordinator``); its peak resident size is
read from ``/proc/<pid>/status`` (``VmHWM``) after the largest list and the largest batch
the default limits allow.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from .support import free_port, wait_healthy
from .test_http_ops import coordinator_env

MiB = 1024 * 1024
CEILING = 256 * MiB

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class Process:
    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url


async def _coordinator(dsn: str, tmp_path: Path) -> AsyncIterator[Process]:
    port = free_port()
    log = (tmp_path / "coordinator.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgq",
        "coordinator",
        "--port",
        str(port),
        env=coordinator_env(dsn, PGQ_LOG_LEVEL="WARNING"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, url, proc)
        yield Process(proc, url)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        log.close()


@pytest.fixture
async def coordinator_process(dsn: str, tmp_path: Path) -> AsyncIterator[Process]:
    async for process in _coordinator(dsn, tmp_path):
        yield process


async def test_the_largest_list_stays_under_the_ceiling(
    coordinator_process: Process, conn: asyncpg.Connection
) -> None:
    # 300 jobs with 1 MB of arguments each: 300 MB of payloads
    await conn.execute(
        "SELECT pgq.enqueue('BIG', jsonb_build_object('n', i, 'pad', repeat('x', 1000000))) "
        "FROM generate_series(1, 300) AS i"
    )
    pid = coordinator_process.proc.pid
    before = peak_rss(pid)
    seen: list[int] = []
    pages = 0
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        after: int | None = 0
        while after is not None:
            async with http.get(f"{coordinator_process.url}/jobs?limit=1000&after={after}") as r:
                assert r.status == 200
                page = orjson.loads(await r.read())
            seen += [j["id"] for j in page["jobs"]]
            assert all(len(j["arguments"]["pad"]) == 1_000_000 for j in page["jobs"])
            after = page["next"]
            pages += 1
    assert len(seen) == 300 and seen == sorted(set(seen))  # all of them, each once, in order
    assert pages > 1  # the budget (8 MiB) cut the first answer short, and next went on
    peak = peak_rss(pid)
    print(f"list: peak RSS {peak / MiB:.0f} MiB, {before / MiB:.0f} MiB before, {pages} pages")
    assert peak < CEILING, f"peak RSS {peak / MiB:.0f} MiB (was {before / MiB:.0f} MiB)"


async def test_the_largest_batch_stays_under_the_ceiling(
    coordinator_process: Process, conn: asyncpg.Connection
) -> None:
    jobs = [
        {
            "type": "BATCHED",
            "arguments": {"n": i, "pad": "x" * 3_200, "tags": ["a", "b", "c", "d", "e"]},
        }
        for i in range(10_000)
    ]
    body = orjson.dumps({"jobs": jobs})
    assert 31 * MiB < len(body) <= 32 * MiB
    pid = coordinator_process.proc.pid
    before = peak_rss(pid)
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(
            f"{coordinator_process.url}/jobs/batch",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 201
        answer = orjson.loads(await r.read())
    assert len(answer["jobs"]) == 10_000
    assert "arguments" not in answer["jobs"][0] and "result" not in answer["jobs"][0]
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE type = 'BATCHED'") == 10_000
    stored = await conn.fetchval(
        "SELECT args FROM pgq.jobs WHERE type = 'BATCHED' ORDER BY id LIMIT 1"
    )
    assert stored == jobs[0]["arguments"]
    peak = peak_rss(pid)
    print(f"batch: peak RSS {peak / MiB:.0f} MiB, {before / MiB:.0f} MiB before")
    assert peak < CEILING, f"peak RSS {peak / MiB:.0f} MiB"

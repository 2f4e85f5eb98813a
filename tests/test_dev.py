"""``pgq dev`` end to end: from nothing to a finished TMDB_SYNC job, then Ctrl-C leaves no
process and no lock behind, and the data is still there on the next run."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .support import free_port, wait_healthy

pytestmark = pytest.mark.slow

#: The seed's example request, byte for byte as pgq dev prints it.
SEED_BODY = b'{"type": "TMDB_SYNC", "arguments": {"movieId": 123}}'


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Under /tmp itself: as root the server runs as 'nobody', who must reach the directory.
    path = Path("/tmp") / f"pgq-dev-test-{uuid.uuid4().hex[:12]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (postgres runs with -D it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


async def run_dev_once(
    data_dir: Path, tmp_path: Path, port: int, check: object
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env.pop("DATABASE_URL", None)
    env["PGQ_DEV_DATA_DIR"] = str(data_dir)
    out_path, err_path = tmp_path / f"dev-{port}.out", tmp_path / f"dev-{port}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pgq", "dev", "--port", str(port), env=env, stdout=out, stderr=err
        )
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                try:
                    await wait_healthy(http, url, proc, timeout=120)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; its stderr:\n{err_path.read_text()}") from None
                await check(http, url)  # type: ignore[operator]
            proc.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return code, out_path.read_text(), err_path.read_text()


async def test_pgq_dev_from_nothing_to_a_finished_job(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    seen: dict[str, object] = {}

    async def first_run(http: aiohttp.ClientSession, url: str) -> None:
        async with http.post(
            url + "/jobs", data=SEED_BODY, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 201
            job = await r.json()
        async with http.get(f"{url}/jobs/{job['id']}?wait=30") as r:
            assert r.status == 200
            seen["job"] = await r.json()
        async with http.get(f"{url}/schedules") as r:
            assert r.status == 200
            seen["schedules"] = await r.json()

    code, out, err = await run_dev_once(data_dir, tmp_path, port, first_run)
    job = seen["job"]
    assert isinstance(job, dict)
    assert job["status"] == "succeeded", job
    assert job["result"]["movieId"] == 123
    # the example runner declared its nightly schedule
    [nightly] = seen["schedules"]["schedules"]  # type: ignore[index]
    assert (nightly["name"], nightly["cron"], nightly["type"]) == (
        "tmdb_sync.nightly",
        "0 3 * * *",
        "TMDB_SYNC",
    )
    assert code == 0, err[-3000:]
    # it told the user what to try next, with its own port and the seed's body
    assert (
        f"curl -X POST localhost:{port}/jobs -H 'Content-Type: application/json' "
        f"-d '{SEED_BODY.decode()}'"
    ) in out
    assert "Traceback" not in err
    # Ctrl-C left nothing behind: no server process, no postmaster.pid, no owner lock
    assert processes_using(data_dir) == []
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    assert not (data_dir / "owner.pid").exists()
    assert not list((data_dir / "run").glob(".s.PGSQL.*"))
    assert (data_dir / "pgdata" / "PG_VERSION").exists()  # the data stays

    async def second_run(http: aiohttp.ClientSession, url: str) -> None:
        async with http.get(f"{url}/jobs/{job['id']}") as r:
            assert r.status == 200
            seen["again"] = await r.json()

    code, _, err = await run_dev_once(data_dir, tmp_path, free_port(), second_run)
    assert code == 0, err[-3000:]
    assert seen["again"]["status"] == "succeeded"  # type: ignore[index]
    assert processes_using(data_dir) == []


async def test_dev_data_from_another_build_gets_a_way_out_not_a_checksum_error(
    dsn: str, tmp_path: Path
) -> None:
    """A migration file changed since pgq dev's scratch data was made (a development build):
    pgq dev names its data directory and how to start afresh; someone's own server (no data
    directory) still gets the migration error itself."""
    from pgq import db
    from pgq.devtools import dev
    from pgq.errors import ChangedMigration

    conn = await db.connect(dsn)
    try:
        await conn.execute(
            "UPDATE pgq.migrations SET checksum = 'other build' WHERE ctid = "
            "(SELECT min(ctid) FROM pgq.migrations)"
        )
    finally:
        await conn.close()

    with pytest.raises(dev.DevError) as caught:
        await dev._migrate(dsn, tmp_path)
    message = str(caught.value)
    assert f"rm -rf '{tmp_path}'" in message and "migrations differ" in message

    with pytest.raises(ChangedMigration, match="was applied with different content"):
        await dev._migrate(dsn, None)

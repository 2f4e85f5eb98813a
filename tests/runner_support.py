"""Helpers shared by the runner tests: in-process runners, runner subprocesses, run logs,
and waiting on database state with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg

import pgq

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


async def wait_until(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


async def wait_true(predicate: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Poll a plain predicate (state in this process) until it holds."""

    async def check() -> bool:
        return predicate()

    await wait_until(check, timeout=timeout)


async def statuses(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM pgq.jobs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def job_row(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM pgq.jobs WHERE id = $1", job_id)


@contextlib.asynccontextmanager
async def running(runner: pgq.Runner, *, timeout: float = 10.0) -> AsyncIterator[asyncio.Task]:
    """Run ``runner`` in this loop until the block ends; yields once it listens."""
    task = asyncio.create_task(runner.run())

    async def listening() -> bool:
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


# -- subprocesses --------------------------------------------------------------------------


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
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"runner {self.pid} did not exit within {timeout}s; log:\n{self.log()[-3000:]}"
                )
            await asyncio.sleep(0.02)
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


async def wait_listening(proc: RunnerProcess, timeout: float = 15.0) -> None:
    """Until the runner logged that it started (its LISTEN is active by then)."""

    async def started() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"runner exited with {proc.proc.returncode}:\n{proc.log()}")
        return '"event":"runner.started"' in proc.log()

    await wait_until(started, timeout=timeout)


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
    runs = []
    directory = tmp_path / "runs"
    if not directory.exists():
        return runs
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text().splitlines():
            what, job_id, attempt, pid, wall, mono = line.split()
            runs.append(Run(what, int(job_id), int(attempt), int(pid), float(wall), float(mono)))
    return runs

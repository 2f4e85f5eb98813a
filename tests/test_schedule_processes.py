"""Schedules fired by real processes: three runners and a coordinator, no leader, one job
per slot, each created within a second of its slot."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from .support import REPO, RunnerProcess, free_port, start_runner, wait_listening, wait_until


def start_coordinator(dsn: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pgq", "coordinator", "--port", str(free_port())],
            cwd=REPO,
            env={**os.environ, "PGQ_DATABASE_URL": dsn, "PGQ_LOG_FORMAT": "json"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


@pytest.mark.slow
async def test_three_runners_and_a_coordinator_fire_each_slot_once(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    coordinator_log = tmp_path / "coordinator.stderr"
    coordinator = start_coordinator(dsn, coordinator_log)
    runners: list[RunnerProcess] = []
    try:
        for i in range(3):
            runners.append(
                start_runner(dsn, tmp_path, target="tests.schedule_handlers:runner", name=f"r{i}")
            )
        for r in runners:
            await wait_listening(r)
        started = await conn.fetchval("SELECT now()")
        await asyncio.sleep(10)
        # A slot is fired by whichever process gets there first; the others find it done.
        ended = await conn.fetchval("SELECT now()")
        await asyncio.sleep(1.5)  # let the last slot's job be worked off
        # SIGTERM, not SIGKILL: a process killed between its firing commit and its log line
        # would leave a job without its schedule.fired line.
        for r in runners:
            r.signal(signal.SIGTERM)
        coordinator.send_signal(signal.SIGTERM)
        for r in runners:
            assert await r.wait(30) == 0, r.log()[-2000:]
        await wait_until(lambda: _exited(coordinator), timeout=30)
    finally:
        for r in runners:
            r.stop()
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait(10)

    rows = await conn.fetch(
        "SELECT id, scheduled_for, run_at, created_at, status, args, result FROM pgq.jobs "
        "WHERE schedule = 'tick' ORDER BY scheduled_for"
    )
    slots = [r["scheduled_for"] for r in rows]
    assert len(slots) == len(set(slots))
    in_window = [s for s in slots if started < s <= ended]
    assert len(in_window) >= 4, slots
    # no slot missed: consecutive two-second steps from the first to the last
    assert all(b - a == timedelta(seconds=2) for a, b in itertools.pairwise(slots))
    for r in rows:
        assert r["run_at"] == r["scheduled_for"]
        assert timedelta(0) <= r["created_at"] - r["scheduled_for"] < timedelta(seconds=1), r
        assert r["args"] == {"from": "code"}
    done = [r for r in rows if r["scheduled_for"] <= ended]
    assert all(r["status"] == "succeeded" for r in done), [r["status"] for r in done]
    # one schedule.fired log line per job, from whichever processes fired
    fired: dict[int, str] = {}
    logs = {"coordinator": coordinator_log.read_text()} | {
        f"runner{i}": r.log() for i, r in enumerate(runners)
    }
    for who, text in logs.items():
        for line in text.splitlines():
            if '"schedule.fired"' in line:
                job_id = json.loads(line)["job_id"]
                assert job_id not in fired, (job_id, who, fired[job_id])
                fired[job_id] = who
    assert sorted(fired) == sorted(r["id"] for r in rows)
    print("slots fired by", Counter(fired.values()))

"""Handlers for runner test subprocesses: `python -m pgq runner tests.runner_handlers:runner`.

``TEST`` jobs do what their arguments say:

    {"sleep": s}          sleep s seconds (default 0)
    {"sleep_first": s}    on attempt 1 sleep s seconds instead of "sleep"
    {"fail": "error"}     raise an ordinary error (retried); "permanent": PermanentError

``SYNC_TEST`` jobs are a plain ``def`` that blocks in ``time.sleep(args["sleep"])``.

Every handler start and finish is appended as one line to ``$PGQ_TEST_RUN_LOG/<pid>.log``
(one ``os.write`` on an ``O_APPEND`` file, so lines never interleave and a ``kill -9``
loses nothing already written)::

    start <job_id> <attempt> <pid> <time.time()> <time.monotonic()>
    end <job_id> <attempt> <pid> <time.time()> <time.monotonic()>
"""

from __future__ import annotations

import asyncio
import os
import time

import pgq

runner = pgq.Runner()

_fd: int | None = None


def record(what: str, job: pgq.Job) -> None:
    global _fd
    directory = os.environ.get("PGQ_TEST_RUN_LOG")
    if not directory:
        return
    if _fd is None:
        path = os.path.join(directory, f"{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    line = f"{what} {job.id} {job.attempt} {os.getpid()} {time.time():.6f} {time.monotonic():.6f}\n"
    os.write(_fd, line.encode())


@runner.handler("TEST")
async def test_job(job: pgq.Job) -> dict[str, int]:
    record("start", job)
    seconds = job.args.get("sleep", 0)
    if job.attempt == 1 and "sleep_first" in job.args:
        seconds = job.args["sleep_first"]
    if seconds:
        await asyncio.sleep(seconds)
    failure = job.args.get("fail")
    if failure == "permanent":
        raise pgq.PermanentError("asked to fail permanently")
    if failure == "error":
        raise RuntimeError("asked to fail")
    record("end", job)
    return {"pid": os.getpid()}


@runner.handler("SYNC_TEST")
def sync_test(job: pgq.Job) -> dict[str, int]:
    """A plain ``def``: runs on the runner's thread pool; ``{"sleep": s}`` blocks s seconds."""
    record("start", job)
    time.sleep(job.args.get("sleep", 0))
    record("end", job)
    return {"pid": os.getpid()}


@runner.handler("NOOP")
async def noop(job: pgq.Job) -> None:
    """Nothing at all: for drain-rate measurements."""


@runner.handler("STAMP")
async def stamp(job: pgq.Job) -> None:
    """Record the handler start only: for wake-up latency measurements."""
    record("start", job)

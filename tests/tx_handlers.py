"""A runner with a transactional handler, for test subprocesses:
`python -m pgq runner tests.tx_handlers:runner` (a runner of its own: a transactional handler
cannot run through a coordinator, and tests/runner_handlers.py's runner does both).

``TX_WRITE`` jobs insert ``(job_id, attempt, pid)`` into the table ``tx_effects`` through
``job.connection``, record ``wrote`` in the run log (tests/runner_handlers.py's format),
then sleep ``args["sleep_first"]`` seconds on attempt 1 (``args["sleep"]`` after that) and
raise when ``args["fail"]`` is set.
"""

from __future__ import annotations

import asyncio
import os

import pgq

from .runner_handlers import record

runner = pgq.Runner()

TABLE = "CREATE TABLE tx_effects (job_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL)"


@runner.handler("TX_WRITE", transactional=True)
async def tx_write(job: pgq.Job) -> dict[str, int]:
    await job.connection.execute(
        "INSERT INTO tx_effects VALUES ($1, $2, $3)", job.id, job.attempt, os.getpid()
    )
    record("start", job)
    seconds = job.args.get("sleep_first", 0) if job.attempt == 1 else job.args.get("sleep", 0)
    if seconds:
        await asyncio.sleep(seconds)
    if job.args.get("fail"):
        raise RuntimeError("asked to fail")
    record("end", job)
    return {"pid": os.getpid()}

"""What only HTTP-mode runners do (``pgq runner … --coordinator URL``,
``pgq.runner.HttpSource``), against a live coordinator on a real port, over this test's
database: coordinator restarts, the long poll's stash, fencing at the source, tokens. The
runner behaviour common to both sources runs over HTTP too, in ``test_runner.py``.

Runner subprocesses get a database URL where nothing listens, so everything they do goes
through the coordinator; in-process runners are used where a test needs to hold a handler
at a given point. The coordinator's ``retry_delay_seconds`` field (added for these runners)
is tested here too.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from pgq import queries
from pgq.coordinator.keys import WAITERS
from pgq.runner import HttpSource, Runner

from .support import (
    RunnerProcess,
    coordinator,
    job_row,
    read_runs,
    running_http,
    start_http_runner,
    statuses,
    wait_status,
    wait_statuses,
    wait_until,
)

TOKEN = "http-runner-test-token"


@pytest.fixture
def procs():
    started: list[RunnerProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def handler_started(tmp_path: Path, job_id: int, timeout: float = 10):
    async def check():
        return [r for r in read_runs(tmp_path) if (r.what, r.job_id) == ("start", job_id)]

    [run] = await wait_until(check, timeout=timeout)
    return run


def make_runner(**kwargs) -> Runner:
    kwargs.setdefault("worker_id", "http-test-runner")
    return Runner(**kwargs)


# -- draining, restarts ----------------------------------------------------------------------


@pytest.mark.slow
async def test_an_http_runner_drains_jobs_through_a_live_coordinator_and_survives_its_restart(
    dsn, client, conn, tmp_path, procs
):
    async with coordinator(dsn, api_tokens=(TOKEN,)) as coord:
        proc = start_http_runner(coord, tmp_path, "--token", TOKEN, "--concurrency", "20")
        procs.append(proc)
        jobs = await client.enqueue_many(
            [{"type": "TEST", "args": {"sleep": 0.02, "n": i}} for i in range(300)]
        )

        async def some_done():
            return (await statuses(conn)).get("succeeded", 0) >= 60

        await wait_until(some_done, timeout=20)
        await coord.stop()  # mid-drain: claims and completions now fail to connect

        async def noticed():
            log = proc.log()
            return '"event":"runner.claim_failed"' in log or '"event":"runner.write_retry"' in log

        await wait_until(noticed, timeout=10)
        assert (await statuses(conn)).get("succeeded", 0) < 300
        await coord.start()  # the same port again

        await wait_statuses(conn, {"succeeded": 300}, timeout=30)
        # idle now (a long poll is parked): a new job is picked up at once
        t0 = time.monotonic()
        late = await client.enqueue("TEST", {})
        run = await handler_started(tmp_path, late.id, timeout=5)
        assert run.mono - t0 < 1.0
        await wait_statuses(conn, {"succeeded": 301}, timeout=10)

        proc.signal(signal.SIGTERM)
        assert await proc.wait(10) == 0, proc.log()[-3000:]

    log = proc.log()
    assert '"event":"runner.coordinator_reachable"' in log  # it came back after the restart
    starts = Counter(r.job_id for r in read_runs(tmp_path) if r.what == "start")
    assert set(starts) == {j.id for j in jobs} | {late.id}
    assert [job_id for job_id, n in starts.items() if n != 1] == []  # each ran exactly once
    assert await conn.fetchval("SELECT count(*) FROM pgq.jobs WHERE attempts <> 1") == 0
    rows = await conn.fetch("SELECT result FROM pgq.jobs")
    assert {r["result"]["pid"] for r in rows} == {proc.pid}


# -- fencing -----------------------------------------------------------------------------------


async def test_every_write_is_fenced_by_the_attempt_too(dsn, client, conn):
    runner = make_runner(worker_id="fenced")

    @runner.handler("X")
    async def x(job):
        return None

    job = await client.enqueue("X")
    [stale] = await queries.claim(conn, "fenced", 1)
    await conn.execute(
        "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job.id
    )
    await conn.fetchval("SELECT pgq.expire_leases()")
    await conn.execute("UPDATE pgq.jobs SET run_at = now() WHERE id = $1", job.id)
    # claimed again by the same worker id: only the attempt tells the two apart
    [current] = await queries.claim(conn, "fenced", 1)
    assert (current.id, stale.attempt, current.attempt) == (job.id, 1, 2)
    before = dict(await job_row(conn, job.id))
    async with coordinator(dsn) as coord:
        source = HttpSource(coord.url)
        await source.open(runner)
        try:
            assert await source.complete(stale, "stale") == (False, "running")
            error = {"message": "stale"}
            assert await source.fail(stale, error, retryable=True, retry_delay=0) is None
            assert await source.heartbeat(stale) is False
            assert dict(await job_row(conn, job.id)) == before
            assert await source.heartbeat(current) is True
        finally:
            await source.close()


# -- claims: the long poll, claims in doubt --------------------------------------------------


async def test_the_long_poll_stashes_its_jobs_for_the_next_claim_or_releases_them(
    dsn, client, conn
):
    runner = make_runner(worker_id="stasher")

    @runner.handler("X")
    async def x(job):
        return None

    async with coordinator(dsn) as coord:
        first = await client.enqueue("X")
        source = HttpSource(coord.url)
        await source.open(runner)
        try:
            await source.wait_for_work()  # work is there: the long poll claims it at once
            claims = source.claims
            assert [j.id for j in await source.claim(5)] == [first.id]
            assert source.claims == claims  # handed over from the stash, no request
            second = await client.enqueue("X")
            await source.wait_for_work()
            # ...and the runner stops before its next claim: close() releases the job
        finally:
            await source.close()
    row = await conn.fetchrow(
        "SELECT *, run_at <= now() AS due FROM pgq.jobs WHERE id = $1", second.id
    )
    assert (row["status"], row["attempts"], row["due"]) == ("queued", 1, True)
    assert row["max_attempts"] == second.max_attempts + 1  # the attempt was given back
    assert row["last_error"]["kind"] == "released"
    assert source.released == 1
    assert (await job_row(conn, first.id))["status"] == "running"  # held by the "runner"


async def test_a_stop_during_the_long_poll_leaves_what_an_unseen_claim_took_to_its_lease(
    dsn, client, conn
):
    runner = make_runner(worker_id="poller")

    @runner.handler("X")
    async def x(job):
        return None

    elsewhere = await client.enqueue("ELSEWHERE")  # a type this runner does not claim
    async with coordinator(dsn) as coord:
        source = HttpSource(coord.url)
        async with running_http(runner, source):
            await wait_until(lambda: coord.app[WAITERS].waiting == 1)  # parked in the long poll
            # What a claim under way as the runner hung up leaves behind: a job running under
            # the runner's name that no reply will ever deliver, nor its lease token.
            await queries.claim(conn, "poller", 1, job_types=["ELSEWHERE"])
            t0 = time.monotonic()
            # leaving the block stops the runner
        assert time.monotonic() - t0 < 2  # the 30 s long poll was aborted, not waited for
    # Without the token no HTTP client can report on it (nor release it): it stays running
    # until its lease runs out, and the runner neither ran it nor failed on it.
    row = await job_row(conn, elsewhere.id)
    assert (row["status"], row["worker_id"], row["attempts"]) == ("running", "poller", 1)
    assert source.released == 0 and runner.clean_exit


# -- the runner process: SIGTERM, tokens ----------------------------------------------------


@pytest.mark.slow
async def test_sigterm_drains_releases_what_outlives_the_grace_and_exits_0(
    dsn, client, conn, tmp_path, procs
):
    async with coordinator(dsn) as coord:
        proc = start_http_runner(coord, tmp_path, "--grace", "1.5")
        procs.append(proc)
        quick = await client.enqueue("TEST", {"sleep": 0.5})
        long = await client.enqueue("TEST", {"sleep_first": 60, "sleep": 0.05})
        await handler_started(tmp_path, quick.id)
        await handler_started(tmp_path, long.id)
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)

        async def stopping():
            return '"event":"runner.stopping"' in proc.log()

        await wait_until(stopping, timeout=5)
        late = await client.enqueue("TEST", {})  # after the stop: left for other runners
        assert await proc.wait(10) == 0, proc.log()[-3000:]
        elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 4, elapsed
    assert (await job_row(conn, quick.id))["status"] == "succeeded"
    row = await conn.fetchrow(
        "SELECT *, run_at <= now() AS due FROM pgq.jobs WHERE id = $1", long.id
    )
    assert (row["status"], row["attempts"], row["due"]) == ("queued", 1, True)
    assert row["last_error"]["kind"] == "released"
    late_row = await conn.fetchrow(
        "SELECT *, run_at <= now() AS due FROM pgq.jobs WHERE id = $1", late.id
    )
    assert (late_row["status"], late_row["due"]) == ("queued", True)
    if late_row["attempts"]:  # the aborted long poll claimed it as the runner hung up...
        assert late_row["last_error"]["kind"] == "released"  # ...so close() released it
    assert late.id not in {r.job_id for r in read_runs(tmp_path)}  # never started
    assert '"event":"runner.draining"' in proc.log()


@pytest.mark.slow
async def test_a_bad_token_stops_the_runner_with_a_clear_message(
    dsn, client, conn, tmp_path, procs
):
    job = await client.enqueue("TEST", {})
    async with coordinator(dsn, api_tokens=(TOKEN,)) as coord:
        for args, hint in [
            (("--token", "not-the-token"), "the bearer token is not valid"),
            ((), "it requires a bearer token: pass --token or set PGQ_API_TOKEN"),
        ]:
            proc = start_http_runner(coord, tmp_path, *args)
            procs.append(proc)
            assert await proc.wait(15) == 2
            assert "pgq: the coordinator at http://127.0.0.1:" in proc.log()
            assert hint in proc.log()
        assert (await job_row(conn, job.id))["attempts"] == 0  # nothing was claimed

        # Tokens that change under a running runner (the coordinator restarted with others).
        proc = start_http_runner(coord, tmp_path, "--token", TOKEN)
        procs.append(proc)
        await wait_status(conn, job.id, "succeeded")
        await coord.stop()
        coord.settings = type(coord.settings)(api_tokens=("rotated",), shutdown_timeout=5.0)
        await coord.start()
        assert await proc.wait(15) == 2
        assert "the bearer token is not valid" in proc.log()
        assert '"event":"runner.unauthorized"' in proc.log()


# -- the coordinator's retry_delay_seconds ---------------------------------------------------


async def test_the_complete_endpoint_takes_a_retry_delay(dsn, conn):
    async with coordinator(dsn) as coord, aiohttp.ClientSession() as http:

        async def post(path: str, body: dict) -> tuple[int, dict]:
            async with http.post(
                coord.url + path,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            ) as resp:
                return resp.status, orjson.loads(await resp.read())

        for _ in range(3):
            await queries.enqueue(conn, "X")
        jobs = await queries.claim(conn, "w", 3)
        delays = {}
        for job, delay in zip(jobs, (120, 0, 2.5), strict=True):
            status, body = await post(
                f"/jobs/{job.id}/complete",
                {
                    "worker_id": "w",
                    "lease_token": job.lease_token,
                    "success": False,
                    "error": "x",
                    "retry_delay_seconds": delay,
                },
            )
            assert (status, body["status"]) == (200, "queued")
            delays[job.id] = delay
        rows = await conn.fetch(
            "SELECT id, extract(epoch FROM run_at - updated_at) AS delay FROM pgq.jobs"
        )
        assert {r["id"]: float(r["delay"]) for r in rows} == pytest.approx(delays, abs=0.001)

        [job] = await queries.claim(conn, "w", 1)  # the one due now
        bad = [
            ({"success": True, "retry_delay_seconds": 1}, "is only allowed with success: false"),
            ({"success": False, "retry_delay_seconds": -1}, "between 0 and 86400"),
            ({"success": False, "retry_delay_seconds": 86_401}, "between 0 and 86400"),
            ({"success": False, "retry_delay_seconds": "5"}, "must be a number"),
            ({"success": False, "retry_delay_seconds": True}, "must be a number"),
            ({"success": False, "retry_delay_seconds": None}, "must not be null"),
        ]
        for fields, problem in bad:
            status, body = await post(
                f"/jobs/{job.id}/complete",
                {"worker_id": "w", "lease_token": job.lease_token, **fields},
            )
            assert status == 400, fields
            assert body["error"]["message"].startswith("retry_delay_seconds: ")
            assert problem in body["error"]["message"]
        assert (await job_row(conn, job.id))["status"] == "running"  # all refused

        async with http.get(coord.url + "/openapi.json") as resp:
            schema = orjson.loads(await resp.read())["components"]["schemas"]["Complete"]
        assert schema["properties"]["retry_delay_seconds"]["maximum"] == 86_400
        assert {"required": ["retry_delay_seconds"]} in schema["oneOf"][0]["not"]["anyOf"]

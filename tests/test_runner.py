"""The runner's behaviour, run over both of its sources: ``DatabaseSource`` (PostgreSQL
directly) and ``HttpSource`` (a live coordinator on a real port). Each behaviour test takes
the ``source`` fixture and runs once per source; what only one source does is tested in
``test_runner_database.py`` and ``test_http_runner.py``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

import pgq
from pgq import queries
from pgq.runner import DatabaseSource, HttpSource, JobSource, Runner, load_runner, run_from_cli

from .support import coordinator, job_row, wait_until


def make_runner(dsn: str, **kwargs) -> Runner:
    kwargs.setdefault("worker_id", "test-runner")
    return Runner(dsn, **kwargs)


@dataclass
class Source:
    """One of the runner's sources, for the test's database."""

    kind: str  # "database" or "http"
    dsn: str
    url: str | None = None  # the coordinator's, in HTTP mode

    def make(self, **http_options: Any) -> JobSource:
        """A new source; ``http_options`` go to ``HttpSource`` (ignored for the database)."""
        if self.kind == "database":
            return DatabaseSource(self.dsn)
        assert self.url is not None
        return HttpSource(self.url, **http_options)

    @contextlib.asynccontextmanager
    async def running(self, runner: Runner, **http_options: Any) -> AsyncIterator[JobSource]:
        """Run ``runner`` over a new source until the block ends; yields once the source is
        connected (LISTEN active, or the coordinator answered)."""
        source = self.make(**http_options)
        task = asyncio.create_task(runner.run(source=source))

        def connected() -> bool:
            if task.done():
                task.result()  # surface a start-up failure
            health = source.health()
            return bool(health.get("listener_connected") or health.get("reachable"))

        try:
            await wait_until(connected, timeout=10, interval=0.005)
            yield source
        finally:
            runner.stop()
            await asyncio.wait_for(task, 30)

    def put_in_doubt(self, source: JobSource) -> None:
        """As after a claim that raised (its reply lost): the database source must look for
        jobs claimed under its name before claiming more."""
        assert isinstance(source, DatabaseSource)
        source._claim_in_doubt = True


@pytest.fixture(params=["database", "http"])
async def source(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[Source]:
    if request.param == "database":
        yield Source("database", dsn)
    else:
        async with coordinator(dsn) as coord:
            yield Source("http", dsn, coord.url)


# -- API ---------------------------------------------------------------------------------


def test_handler_registration_is_checked() -> None:
    runner = Runner("postgresql://unused")

    with pytest.raises(TypeError, match="must be a function"):
        runner.handler("NOT_CALLABLE")(42)

    @runner.handler("SYNC")
    def sync(job):  # a plain def: runs on the thread pool
        return None

    @runner.handler("A", timeout=5)
    async def a(job):
        return None

    with pytest.raises(ValueError, match="already registered"):

        @runner.handler("A")
        async def again(job):
            return None

    with pytest.raises(ValueError, match="invalid"):
        runner.handler("no spaces allowed")
    with pytest.raises(ValueError, match="timeout"):
        runner.handler("B", timeout=0)
    assert runner.job_types == ("SYNC", "A")
    assert runner.handlers["A"].timeout == 5
    assert (runner.handlers["SYNC"].sync, runner.handlers["A"].sync) == (True, False)

    with pytest.raises(ValueError, match="queue"):
        Runner(queues=("Bad-Queue",))
    with pytest.raises(ValueError, match="concurrency"):
        Runner(concurrency=0)
    with pytest.raises(ValueError, match="grace"):
        Runner(grace=-1)


def test_module_level_runner_needs_no_database_until_run(monkeypatch) -> None:
    monkeypatch.delenv("PGQ_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = pgq.Runner()  # importing a module that does this must not need a database
    assert runner.queues == ("default",) and runner.concurrency == 10 and runner.grace == 30


async def test_run_refuses_without_handlers_or_database(monkeypatch) -> None:
    with pytest.raises(pgq.PgqError, match="no handlers"):
        await Runner("postgresql://unused").run()
    monkeypatch.delenv("PGQ_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = Runner()

    @runner.handler("A")
    async def a(job):
        return None

    with pytest.raises(pgq.PgqError, match="no database configured"):
        await runner.run()


def test_load_runner_and_cli_errors() -> None:  # HTTP mode: tests/test_http_runner.py
    assert load_runner("tests.runner_handlers:runner").job_types == (
        "TEST",
        "SYNC_TEST",
        "NOOP",
        "STAMP",
    )
    with pytest.raises(pgq.PgqError, match="MODULE:ATTR"):
        load_runner("tests.runner_handlers")
    with pytest.raises(pgq.PgqError, match="cannot import"):
        load_runner("tests.no_such_module:runner")
    with pytest.raises(pgq.PgqError, match="no attribute"):
        load_runner("tests.runner_handlers:nope")
    with pytest.raises(pgq.PgqError, match=r"not a pgq\.Runner"):
        load_runner("tests.runner_handlers:record")
    with pytest.raises(pgq.PgqError, match="concurrency"):
        run_from_cli(
            "tests.runner_handlers:runner",
            dsn=None,
            queues=None,
            concurrency=0,
            grace=30.0,
            coordinator=None,
            token=None,
        )


# -- outcomes ------------------------------------------------------------------------------


async def test_success_stores_the_result_and_logs_the_job(
    source, dsn, client, conn, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="pgq.runner")
    runner = make_runner(dsn)
    seen: list[pgq.Job] = []

    @runner.handler("TMDB_SYNC")
    async def sync(job: pgq.Job) -> dict:
        seen.append(job)
        return {"title": "Heat", "movieId": job.args["movieId"]}

    async with source.running(runner):
        job = await client.enqueue("TMDB_SYNC", {"movieId": 123}, queue="default")
        done = await client.wait(job.id, timeout=10)

    assert (done.status, done.result, done.attempt) == (
        "succeeded",
        {"title": "Heat", "movieId": 123},
        1,
    )
    [got] = seen
    assert (got.id, got.type, got.args, got.attempt, got.queue, got.status) == (
        job.id,
        "TMDB_SYNC",
        {"movieId": 123},
        1,
        "default",
        "running",
    )
    events = {r.event: r for r in caplog.records if getattr(r, "job_id", None) == job.id}
    assert {"job.claimed", "job.succeeded"} <= set(events)
    ok = events["job.succeeded"]
    assert (ok.job_type, ok.queue, ok.worker_id, ok.attempt) == (
        "TMDB_SYNC",
        "default",
        "test-runner",
        1,
    )
    assert ok.duration_ms >= 0


async def test_an_exception_fails_the_attempt_with_backoff(
    source, dsn, client, conn, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="pgq.runner")
    runner = make_runner(dsn)

    @runner.handler("BOOM")
    async def boom(job):
        raise ValueError("the API said no")

    async with source.running(runner):
        job = await client.enqueue("BOOM")
        row = await wait_until(
            lambda: conn.fetchrow(
                "SELECT *, run_at - now() AS wait FROM pgq.jobs WHERE id = $1 AND attempts = 1"
                " AND status = 'queued'",
                job.id,
            )
        )
    err = row["last_error"]
    assert err["message"] == "the API said no"
    assert err["type"] == "builtins.ValueError"
    assert err["kind"] == "exception"
    assert "ValueError: the API said no" in err["traceback"]
    assert timedelta(seconds=3) < row["wait"] <= timedelta(seconds=8)  # first retry: 4-8 s
    events = [r.event for r in caplog.records if getattr(r, "job_id", None) == job.id]
    assert events == ["job.claimed", "job.failed", "job.retry_scheduled"]


async def test_permanent_error_sends_the_job_to_dead_at_once(source, dsn, client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pgq.runner")
    runner = make_runner(dsn)

    @runner.handler("BAD")
    async def bad(job):
        raise pgq.PermanentError("movie 0 does not exist")

    async with source.running(runner):
        job = await client.enqueue("BAD", max_attempts=10)
        done = await client.wait(job.id, timeout=10)
    assert (done.status, done.attempt) == ("dead", 1)
    assert done.error["message"] == "movie 0 does not exist"
    assert done.error["kind"] == "permanent"
    events = [r.event for r in caplog.records if getattr(r, "job_id", None) == job.id]
    assert events == ["job.claimed", "job.failed", "job.dead"]


async def test_retry_later_runs_the_job_again_after_the_chosen_delay(source, dsn, client) -> None:
    runner = make_runner(dsn)
    starts: list[float] = []

    @runner.handler("FLAKY")
    async def flaky(job):
        starts.append(time.monotonic())
        if job.attempt == 1:
            raise pgq.RetryLater(0.5, "rate limited")
        return "ok"

    async with source.running(runner):
        job = await client.enqueue("FLAKY")
        done = await client.wait(job.id, timeout=10)
    assert (done.status, done.attempt, done.result) == ("succeeded", 2, "ok")
    assert done.errors[0]["kind"] == "retry_later" and done.errors[0]["retry_delay"] == 0.5
    gap = starts[1] - starts[0]
    assert 0.5 <= gap < 0.75, gap


async def test_the_handler_timeout_shortens_the_jobs_and_is_recorded(source, dsn, client) -> None:
    runner = make_runner(dsn)
    cancelled = asyncio.Event()

    @runner.handler("SLOW", timeout=0.3)
    async def slow(job):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with source.running(runner):
        t0 = time.monotonic()
        job = await client.enqueue("SLOW", max_attempts=1, timeout_seconds=60)
        done = await client.wait(job.id, timeout=10)
        elapsed = time.monotonic() - t0
    assert cancelled.is_set()
    assert (done.status, done.error["kind"]) == ("dead", "timeout")
    assert done.error["message"] == "handler timed out after 0.3s"
    assert 0.3 <= elapsed < 2


async def test_the_jobs_timeout_seconds_is_enforced(source, dsn, client) -> None:
    runner = make_runner(dsn)

    @runner.handler("SLOW")  # no handler timeout: the job's 1 s applies
    async def slow(job):
        await asyncio.sleep(30)

    async with source.running(runner):
        t0 = time.monotonic()
        job = await client.enqueue("SLOW", max_attempts=1, timeout_seconds=1)
        done = await client.wait(job.id, timeout=10)
        elapsed = time.monotonic() - t0
    assert (done.status, done.error["kind"]) == ("dead", "timeout")
    assert 1 <= elapsed < 3


async def test_a_result_that_is_not_json_fails_the_attempt(source, dsn, client) -> None:
    runner = make_runner(dsn)

    @runner.handler("ODD")
    async def odd(job):
        return {"when": object()}

    async with source.running(runner):
        job = await client.enqueue("ODD", max_attempts=1)
        done = await client.wait(job.id, timeout=10)
    assert done.status == "dead"
    assert "not JSON-serialisable" in done.error["message"]


async def test_results_of_every_json_shape_survive_a_shared_batch(source, dsn, client) -> None:
    runner = make_runner(dsn, concurrency=10)
    shapes = [[1, {"a": 2}], [], "text", 3.5, {"nested": [[1], [2]]}, None, True]

    @runner.handler("SHAPE")
    async def shape(job):
        return shapes[job.args["i"]]

    async with source.running(runner):
        jobs = await client.enqueue_many(
            [{"type": "SHAPE", "args": {"i": i}} for i in range(len(shapes))]
        )
        done = [await client.wait(j.id, timeout=10) for j in jobs]
    assert [j.status for j in done] == ["succeeded"] * len(shapes)
    assert [j.result for j in done] == shapes


async def test_only_registered_types_and_queues_are_claimed(source, dsn, client, conn) -> None:
    runner = make_runner(dsn, queues=("emails",))

    @runner.handler("MINE")
    async def mine(job):
        return None

    async with source.running(runner):
        other_type = await client.enqueue("THEIRS", queue="emails")
        other_queue = await client.enqueue("MINE", queue="default")
        mine_job = await client.enqueue("MINE", queue="emails")
        assert (await client.wait(mine_job.id, timeout=10)).status == "succeeded"
    assert (await client.get(other_type.id)).status == "queued"
    assert (await client.get(other_queue.id)).status == "queued"


# -- cancellation and leases ---------------------------------------------------------------


async def test_cancelling_a_running_job_stops_its_handler(source, dsn, client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pgq.runner")
    runner = make_runner(dsn)
    started = asyncio.Event()
    stopped = asyncio.Event()

    @runner.handler("LONG")
    async def long(job):
        if job.args.get("quick"):
            return "quick"
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise

    # Over HTTP there are no pgq_events: the source notices at its next check.
    async with source.running(runner, cancel_check_interval=0.5):
        job = await client.enqueue("LONG")
        await asyncio.wait_for(started.wait(), 10)
        t0 = time.monotonic()
        await client.cancel(job.id)
        await asyncio.wait_for(stopped.wait(), 5)
        latency = time.monotonic() - t0
        # the runner carries on with other work
        other = await client.enqueue("LONG", {"quick": True})
        assert (await client.wait(other.id, timeout=10)).status == "succeeded"
    # at once (a notification), or within the check interval plus a tick
    assert latency < (0.5 if source.kind == "database" else 1.5), latency
    final = await client.get(job.id)
    assert (final.status, final.result) == ("cancelled", None)
    events = [r.event for r in caplog.records if getattr(r, "job_id", None) == job.id]
    assert events == ["job.claimed", "job.cancelled"]


async def test_heartbeats_extend_the_lease_of_a_long_job(source, dsn, client, conn) -> None:
    runner = make_runner(dsn)
    started = asyncio.Event()
    release = asyncio.Event()

    @runner.handler("LONG")
    async def long(job):
        started.set()
        await release.wait()
        return "done"

    async with source.running(runner):
        # lease 1.25 × 2 s = 2.5 s, heartbeat every 2.5/3 ≈ 0.83 s
        job = await client.enqueue("LONG", timeout_seconds=2)
        await asyncio.wait_for(started.wait(), 10)
        first = (await job_row(conn, job.id))["lease_expires_at"]

        async def extended():
            row = await job_row(conn, job.id)
            return row["lease_expires_at"] > first + timedelta(seconds=0.5)

        await wait_until(extended, timeout=3)
        release.set()
        done = await client.wait(job.id, timeout=10)
    assert done.status == "succeeded"


async def test_a_runner_whose_lease_ran_out_cannot_overwrite_the_job(
    source, dsn, client, conn
) -> None:
    runner = make_runner(dsn)
    started = asyncio.Event()
    release = asyncio.Event()

    @runner.handler("LONG")
    async def long(job):
        started.set()
        await release.wait()
        return "stale result"

    # No cancellation checks over HTTP: the stale attempt must get as far as its completion.
    async with source.running(runner, cancel_check_interval=3600):
        job = await client.enqueue("LONG")
        await asyncio.wait_for(started.wait(), 10)
        # The runner stalls past its lease: expire it behind the runner's back, in one
        # transaction so the runner's own lease sweep cannot take the expiry first.
        async with conn.transaction():
            await conn.execute(
                "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
                job.id,
            )
            assert await conn.fetchval("SELECT pgq.expire_leases()") == 1
        release.set()
        await wait_until(lambda: runner.counts["lost"] == 1)
    row = await job_row(conn, job.id)
    assert (row["status"], row["attempts"], row["result"]) == ("queued", 1, None)
    assert row["last_error"]["kind"] == "lease_expired"
    assert runner.counts["succeeded"] == 0


async def test_a_refused_heartbeat_stops_the_handler_of_a_job_taken_over(
    source, dsn, client, conn
) -> None:
    runner = make_runner(dsn)
    started = asyncio.Event()
    stopped = asyncio.Event()

    @runner.handler("LONG")
    async def long(job):
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise

    async with source.running(runner):
        # lease 2.5 s, heartbeat every ~0.83 s
        job = await client.enqueue("LONG", timeout_seconds=2)
        await asyncio.wait_for(started.wait(), 10)
        # Behind the runner's back its lease runs out and another runner takes the job (in
        # one transaction, so this runner never sees the job queued).
        async with conn.transaction():
            await conn.execute(
                "UPDATE pgq.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1",
                job.id,
            )
            await conn.fetchval("SELECT pgq.expire_leases()")
            await conn.execute("UPDATE pgq.jobs SET run_at = now() WHERE id = $1", job.id)
            [taken] = await queries.claim(conn, "other-runner", 1)
        assert taken.id == job.id
        await asyncio.wait_for(stopped.wait(), 3)  # the next heartbeat is refused
    row = await job_row(conn, job.id)
    assert (row["status"], row["worker_id"], row["attempts"]) == ("running", "other-runner", 2)
    assert runner.counts["lost"] == 1


# -- shutdown ------------------------------------------------------------------------------


async def test_stop_lets_handlers_finish_then_releases_the_rest(source, dsn, client, conn) -> None:
    runner = make_runner(dsn, grace=0.5)
    started: dict[str, asyncio.Event] = {"quick": asyncio.Event(), "long": asyncio.Event()}
    cancelled = asyncio.Event()

    @runner.handler("W")
    async def work(job):
        started[job.args["name"]].set()
        try:
            await asyncio.sleep(job.args["sleep"])
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return job.args["name"]

    task = asyncio.create_task(runner.run(source=source.make()))
    quick = await client.enqueue("W", {"name": "quick", "sleep": 0.2})
    # on its last attempt: a release must give the attempt back, not make it dead
    long = await client.enqueue("W", {"name": "long", "sleep": 60}, max_attempts=1)
    await asyncio.wait_for(started["quick"].wait(), 10)
    await asyncio.wait_for(started["long"].wait(), 10)
    t0 = time.monotonic()
    runner.stop()
    late = await client.enqueue("W", {"name": "late", "sleep": 0})  # not claimed any more
    await asyncio.wait_for(task, 10)
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed < 2, elapsed
    assert cancelled.is_set()
    assert (await client.get(quick.id)).status == "succeeded"
    row = await conn.fetchrow(
        "SELECT *, run_at <= now() AS due FROM pgq.jobs WHERE id = $1", long.id
    )
    assert (row["status"], row["attempts"], row["max_attempts"], row["due"]) == (
        "queued",
        1,
        2,
        True,
    )
    assert row["last_error"]["kind"] == "released"

    # over HTTP a claim in flight at the stop is finished by the coordinator and given back
    # (its lease token would reach nobody), a moment after the runner returned
    async def late_queued() -> bool:
        late_job = await client.get(late.id)
        return late_job is not None and late_job.status == "queued"

    await wait_until(late_queued, timeout=5)
    assert runner.clean_exit and runner.counts["released"] == 1


async def test_stop_now_skips_the_grace_period(source, dsn, client, conn, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pgq.runner")
    runner = make_runner(dsn, grace=30)
    started = asyncio.Event()

    @runner.handler("W")
    async def work(job):
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(runner.run(source=source.make()))
    job = await client.enqueue("W")
    await asyncio.wait_for(started.wait(), 10)
    runner.stop()

    # a drain in progress...
    def draining() -> bool:
        return any(getattr(r, "event", "") == "runner.draining" for r in caplog.records)

    await wait_until(draining)
    t0 = time.monotonic()
    runner.stop_now()  # ...is cut short
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - t0 < 1
    assert (await client.get(job.id)).status == "queued"


async def test_cancelling_run_releases_what_it_holds_and_propagates(
    source, dsn, client, conn
) -> None:
    runner = make_runner(dsn, grace=30)
    started = asyncio.Event()

    @runner.handler("W")
    async def work(job):
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(runner.run(source=source.make()))
    job = await client.enqueue("W")
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    row = await job_row(conn, job.id)
    assert (row["status"], row["last_error"]["kind"]) == ("queued", "released")


# Database mode only: over HTTP such jobs are left to their lease, since their lease tokens
# were only in the lost answer (test_http_runner covers that).
@pytest.mark.parametrize("source", ["database"], indirect=True)
async def test_jobs_of_a_claim_whose_reply_was_lost_are_adopted(source, dsn, client, conn) -> None:
    runner = make_runner(dsn, worker_id="adopter")
    ran: list[tuple[int, int]] = []

    @runner.handler("X")
    async def x(job):
        ran.append((job.id, job.attempt))

    job = await client.enqueue("X")
    # What a claim that committed just before its connection died leaves behind: the job
    # runs under the runner's name, but the runner never saw it.
    await queries.claim(conn, "adopter", 1)
    in_doubt = source.make()
    source.put_in_doubt(in_doubt)
    task = asyncio.create_task(runner.run(source=in_doubt))
    try:
        done = await client.wait(job.id, timeout=5)
    finally:
        runner.stop()
        await task
    assert (done.status, done.attempt) == ("succeeded", 1)
    assert ran == [(job.id, 1)]


# -- claiming ahead ---------------------------------------------------------------------------


async def test_short_jobs_are_claimed_ahead_within_twice_the_concurrency(
    source, dsn, client
) -> None:
    """With handlers much shorter than a claim's round trip the runner claims beyond its
    free slots (the next batch is there when the slots free), yet never holds more than
    its concurrency plus one batch; every job runs once."""
    runner = make_runner(dsn, concurrency=5)
    ran: list[int] = []

    @runner.handler("Q")
    async def q(job):
        ran.append(job.id)

    n = 600
    await client.enqueue_many([{"type": "Q", "args": {"i": i}} for i in range(n)])
    ahead_asked: list[int] = []
    over: list[int] = []
    made = source.make()
    claim = made.claim

    async def watched(max_jobs: int) -> list[pgq.Job]:
        holding = runner.running_jobs + runner.health()["claimed_ahead"]
        ahead_asked.append(max_jobs - (5 - holding))
        jobs = await claim(max_jobs)
        holding = runner.running_jobs + runner.health()["claimed_ahead"] + len(jobs)
        if holding > 10:
            over.append(holding)
        return jobs

    made.claim = watched  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run(source=made))
    try:
        await wait_until(lambda: runner.counts["succeeded"] >= n, timeout=60)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
    assert sorted(ran) == sorted(set(ran)) and len(ran) == n
    assert over == []
    assert max(ahead_asked) > 0, ahead_asked  # claimed beyond the free slots


async def test_a_claim_never_asks_for_more_than_its_source_accepts(source, dsn, client) -> None:
    """Concurrency plus the jobs claimed ahead can pass what one claim may ask for
    (``POST /jobs/claim`` takes at most 1,000): the runner asks for at most that, and
    still runs every job once, without going idle while work is queued."""
    made = source.make()
    limit = made.max_claim
    concurrency = min(limit + 200, 10_000)
    runner = make_runner(dsn, concurrency=concurrency)
    ran: list[int] = []

    @runner.handler("Q")
    async def q(job):
        ran.append(job.id)

    n = concurrency * 2
    await client.enqueue_many([{"type": "Q", "args": {"i": i}} for i in range(n)])
    asked: list[int] = []
    claim = made.claim

    async def watched(max_jobs: int) -> list[pgq.Job]:
        asked.append(max_jobs)
        return await claim(max_jobs)

    made.claim = watched  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run(source=made))
    try:
        await wait_until(lambda: runner.counts["succeeded"] >= n or task.done(), timeout=120)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 60)
    assert len(ran) == n and len(set(ran)) == n
    assert max(asked) == limit, asked[:10]


async def test_stop_releases_the_jobs_claimed_ahead_that_never_started(
    source, dsn, client, conn
) -> None:
    runner = make_runner(dsn, concurrency=2, grace=0.2)
    runner._ahead.extra = lambda *_: 2  # type: ignore[method-assign]  # as after short handlers
    started: list[int] = []

    @runner.handler("W")
    async def work(job):
        started.append(job.id)
        await asyncio.sleep(60)

    jobs = [await client.enqueue("W") for _ in range(4)]
    task = asyncio.create_task(runner.run(source=source.make()))
    await wait_until(lambda: len(started) == 2 and runner.health()["claimed_ahead"] == 2)
    assert set(runner.held_jobs()) == {j.id for j in jobs}  # the unstarted ones too
    runner.stop()
    await asyncio.wait_for(task, 10)
    for job in jobs:
        row = await job_row(conn, job.id)
        assert (row["status"], row["last_error"]["kind"]) == ("queued", "released"), row
        assert row["attempts"] < row["max_attempts"]  # the attempt was given back
    assert runner.clean_exit and runner.counts["released"] == 4 and runner.counts["lost"] == 0
    assert runner.held_jobs() == {}


async def test_a_job_claimed_ahead_that_waited_most_of_its_lease_is_released(
    source, dsn, client, conn
) -> None:
    """Its lease runs from the claim: one that waited two thirds of it for a slot is
    handed back (and claimed afresh) rather than run on a lease about to run out."""
    runner = make_runner(dsn, concurrency=1)
    runner._ahead.extra = lambda *_: 1  # type: ignore[method-assign]
    ran: list[tuple[str, int]] = []

    @runner.handler("W")
    async def work(job):
        ran.append((job.args["name"], job.attempt))
        await asyncio.sleep(job.args["sleep"])

    first = await client.enqueue("W", {"name": "first", "sleep": 3.1})
    second = await client.enqueue("W", {"name": "second", "sleep": 0}, timeout_seconds=3)
    async with source.running(runner):
        done = await client.wait(second.id, timeout=20)
        assert (await client.wait(first.id, timeout=20)).status == "succeeded"
    # lease 3.75 s; it waited ~3.1 s > 2.5 s: released unstarted (its attempt given
    # back: max_attempts grows), then claimed again and run once
    assert (done.status, done.attempt) == ("succeeded", 2)
    assert ran == [("first", 1), ("second", 2)]
    row = await job_row(conn, second.id)
    assert (row["attempts"], row["max_attempts"]) == (2, second.max_attempts + 1)
    assert runner.counts["released"] == 1 and runner.counts["lost"] == 0

"""``HttpSource``: a ``pgq.Runner`` fed by the coordinator's HTTP API, not by the database.

::

    pgq runner myapp.jobs:runner --coordinator http://coordinator:3001 [--token T]

    await runner.run(source=HttpSource("http://coordinator:3001", token="T"))

For runners that cannot reach PostgreSQL. The handlers, the concurrency limit, timeouts,
fencing and shutdown are the same ``Runner`` as in database mode (``pgq.runner.core``); this
module is only the ``JobSource`` underneath it:

=====================  ============================================================
``wait_for_work()``    the long poll: ``POST /jobs/claim`` with ``wait_seconds`` (30 s);
                       the coordinator holds it until NOTIFY says work arrived
``claim(n)``           the jobs the long poll brought, else ``POST /jobs/claim`` with
                       no wait (a runner that is busy never waits on a poll)
``complete``           ``POST /jobs/complete {"worker_id", "completions": [...]}``:
                       the successes that finished while the previous batch was in
                       flight, one request (a lone one is sent at once)
``fail``               the same with ``"success": false, "error", "retryable",
                       "retry_delay_seconds"``
``heartbeat``          ``POST /jobs/{id}/heartbeat``
``release``            ``POST /jobs/{id}/release {"reason"}``: queued now, the attempt
                       given back (``pgq.release``)
=====================  ============================================================

Every request names this runner's ``worker_id``, the job's ``attempt`` and the
``lease_token`` the claim answered with (a secret of that claim: nobody else can report on
the job, even knowing the worker id and the attempt), so the coordinator fences them
exactly as ``pgq.complete`` / ``pgq.fail`` / ``pgq.heartbeat`` / ``pgq.release`` do in
database mode: a 409 is "no longer yours" (``complete`` → ``(False, status)``, ``fail``
and ``release`` → None, ``heartbeat`` → False), never an exception.

**The long poll claims.** Over HTTP the only way to learn that work exists is to ask for
it, so ``wait_for_work`` is a claim of the free slots (concurrency minus held jobs, at
least one) that waits up to ``wait_seconds``. The jobs it returns are stashed and it
returns; the runner's next ``claim`` hands out the stash before asking the coordinator
again. Stashed jobs are claimed jobs the runner does not know of yet, but only between two
steps of its claim loop with no I/O in between; jobs left in the stash because ``stop()``
came in that gap are *released* by ``close()``, like the jobs of a shutdown: queued again
now without spending their attempt, so another runner takes them at once.

**Claims in doubt.** A stop during the long poll cancels ``wait_for_work``, which aborts
the request. The coordinator looks for a vanished client before it claims, so usually
nothing was taken; but a claim already under way when the connection closed hands out
jobs nobody receives. The same happens to a claim whose reply is lost to a broken
connection (the coordinator restarted, say). The coordinator releases what it claimed
for a client that left before the answer; an answer lost after it was sent leaves its
jobs to their lease: their lease tokens were only in that answer, so no HTTP client can
report on them (``DatabaseSource``, a trusted SQL caller, adopts them instead).

**Cancellation** has no ``pgq_events`` over HTTP: a cancelled job is noticed at its next
heartbeat (409, then ``GET /jobs/{id}`` says ``cancelled``, then the runner's
``job_gone`` stops the handler). The runner heartbeats three times per lease, which is
every 100 s for the default 300 s timeout; so this source also heartbeats every held job
it has not heard of for ``cancel_check_interval`` seconds (5 s): a cancellation, or a
lease lost to another worker, stops the handler within about that long plus a second.

**Trouble.** A connection error, a timeout or a 5xx answer (503: the coordinator cannot
reach its database, or is stopping) raises ``CoordinatorUnavailable``, a
``pgq.DatabaseUnavailable``: the runner retries with backoff, outcome writes are retried
until they land, and the runner carries on when the coordinator comes back (a restart
answers parked long polls with no jobs, then refuses connections for a moment). A 401
raises ``CoordinatorUnauthorized``: in ``open()`` it makes ``run()`` fail (``pgq runner``
exits 2 with the message); later (the coordinator's tokens changed) the runner is stopped
and ``close()`` raises it, so ``run()`` fails with it after the drain.

No lease sweep runs here: the coordinator's lease monitor expires leases.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any
from urllib.parse import urlsplit

import msgspec
import orjson

from .. import wire
from ..aio import stop_tasks
from ..backoff import reconnecting
from ..batching import Batcher
from ..errors import InvalidArgument, JobNotFound, PgqError, TransitionNotAllowed
from ..jobs import Job
from ..logs import log_event
from .httpcall import CoordinatorApi, CoordinatorUnauthorized, CoordinatorUnavailable
from .source import RunnerHooks

__all__ = ["CoordinatorUnauthorized", "CoordinatorUnavailable", "HttpSource"]

log = logging.getLogger("pgq.runner.http")

#: How long one long poll waits for work (the coordinator holds it at most
#: ``wire.MAX_WAIT_SECONDS``).
WAIT_SECONDS = 30.0
#: Heartbeat a held job the coordinator has not been asked about for this long, so that
#: a cancellation is noticed within seconds (see the module docstring).
CANCEL_CHECK_INTERVAL = 5.0
#: Longest wait for the answer to one request (a long poll gets its wait on top).
REQUEST_TIMEOUT = 30.0
#: How long ``close()`` may spend releasing jobs the runner never started.
RELEASE_TIMEOUT = 5.0


class HttpSource:
    """``JobSource`` over the coordinator's HTTP API (see the module docstring).

    ``coordinator``: its base URL, e.g. ``http://127.0.0.1:3001``. ``token``: sent as
    ``Authorization: Bearer <token>``. ``wait_seconds``: the long poll
    (0 < s ≤ ``wire.MAX_WAIT_SECONDS``).
    ``cancel_check_interval``: heartbeat held jobs at least this often to notice
    cancellations. ``request_timeout``: the longest wait for one answer.
    """

    #: ``POST /jobs/claim``'s bound on max_jobs
    max_claim = wire.MAX_CLAIM_JOBS

    def __init__(
        self,
        coordinator: str,
        *,
        token: str | None = None,
        wait_seconds: float = WAIT_SECONDS,
        cancel_check_interval: float = CANCEL_CHECK_INTERVAL,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        parts = urlsplit(coordinator)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise PgqError(
                f"the coordinator URL {coordinator!r} must look like http://HOST:PORT "
                "(http or https, no query string)"
            )
        if token is not None and (not token.strip() or not token.isprintable() or " " in token):
            raise PgqError("the coordinator token must be printable, without spaces")
        if not 0 < wait_seconds <= wire.MAX_WAIT_SECONDS:
            raise ValueError(
                f"wait_seconds must be in (0, {wire.MAX_WAIT_SECONDS}], not {wait_seconds!r}"
            )
        if not cancel_check_interval > 0 or not request_timeout > 0:
            raise ValueError("cancel_check_interval and request_timeout must be positive")
        self.url = coordinator.rstrip("/")
        self._api = CoordinatorApi(
            self.url,
            token=token or None,
            request_timeout=float(request_timeout),
            on_unauthorized=self._unauthorized,
            on_reachable=self._reachable_again,
        )
        self._wait_seconds = float(wait_seconds)
        self._check_interval = float(cancel_check_interval)
        self._request_timeout = float(request_timeout)
        self._hooks: RunnerHooks | None = None  # the runner, from open() on
        self._stash: list[Job] = []  # claimed by the last long poll, not handed out yet
        # job id → (attempt, loop time the coordinator last confirmed we hold it)
        self._contact: dict[int, tuple[int, float]] = {}
        self._tokens: dict[int, str] = {}  # job id → lease token of the claim we hold it by
        self._checking: set[int] = set()  # job ids with a cancellation check in flight
        self._watcher: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._fatal: CoordinatorUnauthorized | None = None
        self.claims = 0  # claim requests made, long polls included (for tests and health)
        self.long_polls = 0
        self.released = 0  # jobs released by close() that the runner never started
        # Successes go in batches, one in flight (as DatabaseSource's); one whose waiter
        # gave up (a hard stop) is still sent.
        self._completions: Batcher[tuple[Job, Any], tuple[bool, str | None]] = Batcher(
            self._complete_batch,
            max_batch=wire.MAX_COMPLETE_BATCH,
            keep_cancelled=True,
            name="pgq-http-complete-batches",
        )

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def hooks(self) -> RunnerHooks:
        assert self._hooks is not None, "the source is not open"
        return self._hooks

    async def open(self, hooks: RunnerHooks) -> None:
        """Check that the coordinator answers and takes our token (``GET /jobs?limit=1``,
        the cheapest authenticated request), retrying while it is unreachable."""
        for name, items in (("queues", hooks.queues), ("job types", hooks.job_types)):
            if len(items) > wire.MAX_FILTER_ITEMS:
                raise PgqError(
                    f"a runner in HTTP mode can claim at most {wire.MAX_FILTER_ITEMS} {name}, "
                    f"not {len(items)}"
                )
        self._hooks = hooks
        self._stash = []
        self._fatal = None
        self._contact.clear()
        self._api.open(hooks.worker_id, hooks.concurrency)
        backoff = reconnecting()
        while True:
            try:
                await self._api.call("GET", "/jobs?limit=1")
                break
            except CoordinatorUnavailable as exc:
                sleep = backoff.next()
                log_event(
                    log,
                    "runner.connecting",
                    f"{exc}; retrying in {sleep:.2f}s",
                    level=logging.WARNING,
                    worker_id=hooks.worker_id,
                )
                await asyncio.sleep(sleep)
        for spec in getattr(hooks, "schedules", ()):
            await self._api.call("PUT", f"/schedules/{spec.name}", spec.http_body())
        self._watcher = asyncio.create_task(self._watch(), name="pgq-http-cancel-checks")

    async def close(self) -> None:
        """Release the jobs the runner never started (see the module docstring), close the
        session; raise the 401 that stopped the runner, if one did."""
        tasks = [t for t in (self._watcher, *self._side_tasks) if t is not None]
        await stop_tasks(tasks)
        self._watcher = None
        try:
            if self._api.is_open and self._hooks is not None and self._fatal is None:
                try:
                    async with asyncio.timeout(RELEASE_TIMEOUT):
                        await self._release_leftovers()
                except (TimeoutError, PgqError) as exc:
                    log_event(
                        log,
                        "runner.release_failed",
                        f"could not release the jobs this runner claimed but never started "
                        f"({exc or 'timed out'}); their leases will bring them back",
                        level=logging.WARNING,
                        worker_id=self.hooks.worker_id,
                    )
        finally:
            self._stash = []
            await self._completions.close()
            await self._api.close()
            fatal, self._fatal = self._fatal, None
        if fatal is not None:
            raise fatal

    async def _release_leftovers(self) -> None:
        hooks = self.hooks
        leftovers, self._stash = self._stash, []
        if not leftovers:
            return
        reason = {
            "message": f"released: runner {hooks.worker_id} stopped before starting the job",
            "kind": "released",
        }
        outcomes = await asyncio.gather(
            *(self.release(job, reason) for job in leftovers), return_exceptions=True
        )
        for job, outcome in zip(leftovers, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                self.released += 1
                log_event(
                    log,
                    "job.released",
                    "claimed as the runner stopped, never started: released to run again",
                    job_id=job.id,
                    job_type=job.type,
                    queue=job.queue,
                    worker_id=hooks.worker_id,
                    attempt=job.attempt,
                )

    def health(self) -> dict[str, Any]:
        return {
            "kind": "http",
            "coordinator": self.url,
            "reachable": self._api.reachable,
            "last_error": self._api.last_error,
            "claims": self.claims,
            "long_polls": self.long_polls,
            "released": self.released,
        }

    # -- claiming -------------------------------------------------------------------------

    async def claim(self, max_jobs: int) -> list[Job]:
        if self._stash:
            jobs = self._stash[:max_jobs]
            del self._stash[:max_jobs]
            return jobs
        return await self._claim(max_jobs, 0.0)

    async def wait_for_work(self) -> None:
        if self._stash:
            return  # work in hand
        hooks = self.hooks
        # Slots only free up while the claim loop waits here, so this never exceeds what
        # the runner's next claim asks for (held jobs include outcomes still being written).
        free = max(1, hooks.concurrency - len(hooks.held_jobs()))
        self.long_polls += 1
        self._stash.extend(await self._claim(free, self._wait_seconds))

    async def _claim(self, max_jobs: int, wait: float) -> list[Job]:
        hooks = self.hooks
        body = wire.Claim(
            worker_id=hooks.worker_id,
            max_jobs=max_jobs,
            queues=list(hooks.queues),
            types=list(hooks.job_types),
            wait_seconds=wait,
        )
        self.claims += 1
        data = await self._api.call(
            "POST", "/jobs/claim", body, timeout=wait + self._request_timeout
        )
        jobs = [Job.from_json(item) for item in data["jobs"]]
        now = asyncio.get_running_loop().time()
        for job in jobs:
            self._contact[job.id] = (job.attempt, now)
            self._tokens[job.id] = job.lease_token or ""
        return jobs

    # -- outcomes -------------------------------------------------------------------------

    def complete(self, job: Job, result: Any) -> asyncio.Future[tuple[bool, str | None]]:
        """Queue the success for the next ``POST /jobs/complete`` batch (whatever finished
        while the previous one was in flight); the future resolves once it committed."""
        return self._completions.submit((job, result))

    async def _complete_batch(
        self, batch: list[tuple[Job, Any]]
    ) -> list[tuple[bool, str | None] | BaseException]:
        body = wire.CompleteBatch(
            worker_id=self.hooks.worker_id,
            completions=[
                wire.Completion(
                    id=job.id,
                    attempt=job.attempt,
                    lease_token=job.lease_token or "",
                    result=_json(result),
                )
                for job, result in batch
            ],
        )
        data = await self._api.call("POST", "/jobs/complete", body)
        # completed: false is a fenced-off job; its status tells the runner whether a
        # retried write had landed the first time round or the job is someone else's now
        return [(r["completed"], r["status"]) for r in data["results"]]

    async def fail(
        self, job: Job, error: dict[str, Any], *, retryable: bool, retry_delay: float | None
    ) -> Job | None:
        body = wire.Complete(
            worker_id=self.hooks.worker_id,
            attempt=job.attempt,
            lease_token=job.lease_token or "",
            success=False,
            error=_json(error),
            retryable=retryable,
            # The coordinator takes at most a day; longer waits are a day.
            retry_delay_seconds=wire.UNSET
            if retry_delay is None
            else min(max(0.0, float(retry_delay)), wire.MAX_RETRY_DELAY_SECONDS),
        )
        try:
            after = await self._api.call("POST", f"/jobs/{job.id}/complete", body)
        except (JobNotFound, TransitionNotAllowed):
            return None
        return Job.from_json(after)

    async def release(self, job: Job, reason: dict[str, Any]) -> Job | None:
        body = wire.Release(
            worker_id=self.hooks.worker_id,
            attempt=job.attempt,
            lease_token=job.lease_token or "",
            reason=_json(reason),
        )
        try:
            after = await self._api.call("POST", f"/jobs/{job.id}/release", body)
        except (JobNotFound, TransitionNotAllowed):
            return None
        return Job.from_json(after)

    async def heartbeat(self, job: Job) -> bool:
        return await self._beat(job.id, job.attempt, job.lease_token or "")

    async def progress(self, job: Job, progress: dict[str, Any]) -> bool:
        try:
            body = wire.Progress(
                worker_id=self.hooks.worker_id,
                attempt=job.attempt,
                lease_token=job.lease_token or "",
                progress=progress,
            )
        except ValueError as exc:  # too big: the coordinator would refuse it the same way
            raise InvalidArgument(str(exc)) from None
        try:
            await self._api.call("POST", f"/jobs/{job.id}/progress", body)
        except (JobNotFound, TransitionNotAllowed):
            return False
        return True

    async def _beat(self, job_id: int, attempt: int, lease_token: str) -> bool:
        """Heartbeat; on a refusal, tell the runner the job is gone (with its new status)
        if it still holds that attempt, and return False."""
        body = wire.Heartbeat(
            worker_id=self.hooks.worker_id,
            attempt=attempt,
            lease_token=lease_token,
        )
        try:
            await self._api.call("POST", f"/jobs/{job_id}/heartbeat", body)
        except (JobNotFound, TransitionNotAllowed):
            status = await self._status(job_id)
            if self.hooks.held_jobs().get(job_id) == attempt:
                self.hooks.job_gone(job_id, status)
            return False
        seen = self._contact.get(job_id)
        if seen is None or seen[0] == attempt:
            self._contact[job_id] = (attempt, asyncio.get_running_loop().time())
        return True

    async def _status(self, job_id: int) -> str | None:
        try:
            job = await self._api.call("GET", f"/jobs/{job_id}")
        except PgqError:
            return None
        return job.get("status")

    # -- cancellation checks ------------------------------------------------------------

    async def _watch(self) -> None:
        """Heartbeat every held job not confirmed for ``cancel_check_interval`` seconds."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, self._check_interval / 2)
        while True:
            await asyncio.sleep(tick * random.uniform(0.9, 1.1))
            held = self.hooks.held_jobs()
            now = loop.time()
            for job_id in [j for j in self._contact if j not in held]:
                del self._contact[job_id]
            stashed = {job.id for job in self._stash}
            for job_id in [j for j in self._tokens if j not in held and j not in stashed]:
                del self._tokens[job_id]
            for job_id, attempt in held.items():
                seen = self._contact.get(job_id)
                if seen is None or seen[0] != attempt:
                    self._contact[job_id] = (attempt, now)
                elif now - seen[1] >= self._check_interval and job_id not in self._checking:
                    self._checking.add(job_id)
                    task = asyncio.create_task(self._check(job_id, attempt))
                    self._side_tasks.add(task)
                    task.add_done_callback(self._side_tasks.discard)

    async def _check(self, job_id: int, attempt: int) -> None:
        try:
            await self._beat(job_id, attempt, self._tokens.get(job_id, ""))
        except CoordinatorUnavailable:
            pass  # the next tick tries again; the claim loop reports the outage
        except PgqError as exc:
            log_event(
                log,
                "runner.heartbeat_failed",
                f"cancellation check failed: {exc}",
                level=logging.WARNING,
                job_id=job_id,
                worker_id=self.hooks.worker_id,
            )
        finally:
            self._checking.discard(job_id)

    # -- HTTP ---------------------------------------------------------------------------

    def _reachable_again(self) -> None:
        if self._hooks is not None:
            self._hooks.reconnected()

    def _unauthorized(self, exc: CoordinatorUnauthorized) -> None:
        if self._watcher is not None and self._fatal is None:
            # After open(): nothing will work until someone fixes the token. Stop the
            # runner (``Runner.stop`` drains); close() raises this so run() fails with it.
            self._fatal = exc
            log_event(log, "runner.unauthorized", str(exc), level=logging.ERROR)
            self.hooks.stop()


def _json(value: Any) -> Any:
    """A handler's result or error, encoded by orjson as in database mode (the
    executor checked it with orjson), so both modes store the same JSON."""
    return msgspec.Raw(orjson.dumps(value))

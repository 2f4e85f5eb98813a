"""The seed's example runner: ``pgq runner pgq.examples.seed:runner``.

Two job types with simulated work (a short ``asyncio.sleep``), as in the seed project:

``TMDB_SYNC`` ``{"movieId": 123}``
    pretend to fetch a movie from TMDB; returns a small record.
``BATCH_QUOTE_PROCESS`` ``{"quotes": [...]}`` or ``{"batchId": ...}``
    pretend to process a batch of quotes; returns how many were processed.

``TMDB_SYNC`` also runs nightly at 03:00 UTC (the ``tmdb_sync.nightly`` schedule; see
``pgq schedules`` or ``GET /schedules``).

``PGQ_EXAMPLE_FAILURE_RATE`` (0.0-1.0, default 0.0) makes that share of attempts fail with
an ordinary (retried) error, to watch retries and the dead-letter state. Invalid
arguments fail permanently (straight to ``dead``). Try it::

    pgq runner pgq.examples.seed:runner &
    pgq enqueue TMDB_SYNC '{"movieId": 1}' --queue tmdb     # rate-limited under pgq dev
    psql "$PGQ_DATABASE_URL" -c "SELECT pgq.enqueue('TMDB_SYNC', '{\\"movieId\\": 2}')"
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pgq
from pgq import settings

log = logging.getLogger("pgq.examples.seed")

#: TMDB's API has a rate limit, so under ``pgq dev`` the ``tmdb`` queue has one too:
#: enqueue TMDB_SYNC there (``"queue": "tmdb"``) and every runner together stays under it.
TMDB_QUEUE = "tmdb"
TMDB_RATE = 5.0  # claims per second, bursts of up to TMDB_BURST
TMDB_BURST = 10

runner = pgq.Runner(queues=("default", TMDB_QUEUE))


async def apply_limits(db: Any) -> bool:
    """Give the ``tmdb`` queue its rate limit unless it has settings already (so limits
    changed through the API or psql survive a restart). True when it set them."""
    from pgq import queries

    current = await queries.get_queue(db, TMDB_QUEUE)
    if current["paused"] or any(
        current[k] is not None for k in ("concurrency", "key_concurrency", "rate", "burst")
    ):
        return False
    await queries.set_limits(db, TMDB_QUEUE, rate=TMDB_RATE, burst=TMDB_BURST)
    return True


# A nightly re-sync, declared next to its handler: the runner creates (or updates) the
# schedule when it starts, and whichever pgq process is up at 03:00 UTC creates the job.
runner.schedule("tmdb_sync.nightly", "0 3 * * *", "TMDB_SYNC", {"movieId": 550}, queue=TMDB_QUEUE)


def _failure_rate() -> float:
    # Read per attempt, so a test (or you) can change it without restarting the runner.
    return min(1.0, max(0.0, settings.read("PGQ_EXAMPLE_FAILURE_RATE")))


async def _simulate_work(low: float = 0.05, high: float = 0.3) -> None:
    await asyncio.sleep(random.uniform(low, high))
    if random.random() < _failure_rate():
        raise RuntimeError("simulated failure (PGQ_EXAMPLE_FAILURE_RATE)")


@runner.handler("TMDB_SYNC", timeout=60)
async def tmdb_sync(job: pgq.Job) -> dict[str, Any]:
    """Sync one movie: ``{"movieId": int}``."""
    movie_id = job.args.get("movieId")
    if isinstance(movie_id, bool) or not isinstance(movie_id, int) or movie_id <= 0:
        raise pgq.PermanentError(f"movieId must be a positive integer, got {movie_id!r}")
    await _simulate_work()
    return {"movieId": movie_id, "title": f"Movie #{movie_id}", "synced": True}


@runner.handler("BATCH_QUOTE_PROCESS", timeout=120)
async def batch_quote_process(job: pgq.Job) -> dict[str, Any]:
    """Process quotes: ``{"quotes": [...]}`` or ``{"batchId": ...}``."""
    quotes = job.args.get("quotes")
    batch_id = job.args.get("batchId")
    if quotes is None and batch_id is None:
        raise pgq.PermanentError('BATCH_QUOTE_PROCESS needs "quotes" (a list) or "batchId"')
    if quotes is not None and not isinstance(quotes, list):
        raise pgq.PermanentError(f'"quotes" must be a list, got {type(quotes).__name__}')
    count = len(quotes) if quotes is not None else random.randint(1, 50)
    # in steps, reporting each, so the dashboard shows a bar move (job.report_progress)
    steps = 5
    for step in range(steps):
        await job.report_progress({"done": step * count // steps, "total": count})
        await asyncio.sleep(random.uniform(0.2, 0.6))
    await job.report_progress({"done": count, "total": count})
    await _simulate_work(0.05, min(0.3, 0.05 + 0.005 * count))
    result: dict[str, Any] = {"processed": count}
    if batch_id is not None:
        result["batchId"] = batch_id
    return result

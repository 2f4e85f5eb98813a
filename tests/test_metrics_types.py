"""``/metrics`` stays bounded however many job types and queues clients invent, and is
cached."""

from __future__ import annotations

import asyncpg

from .support import live_app
from .test_http_ops import sample


async def test_two_thousand_job_types_keep_metrics_bounded(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(
        dsn, metrics_lag_seconds=0, metrics_cache_seconds=0, metrics_max_types=50
    ) as live:
        await live.request("GET", "/metrics")  # the first window starts now
        await conn.execute("SELECT pgq.enqueue('T' || i) FROM generate_series(1, 2000) AS i")
        await conn.execute("SELECT pgq.claim('w', 2000)")
        await conn.execute("SELECT pgq.complete(id, 'w') FROM pgq.jobs")
        status, text, _ = await live.request("GET", "/metrics")
        assert status == 200
        finished = [
            line for line in text.splitlines() if line.startswith("pgq_jobs_finished_total{")
        ]
        types = {line.split('type="', 1)[1].split('"', 1)[0] for line in finished}
        assert len(types) == 51 and "other" in types
        total = sum(float(line.rsplit(" ", 1)[1]) for line in finished)
        assert total == 2000  # nothing lost: the rest counted as other
        assert sample(text, 'pgq_jobs_finished_total{outcome="succeeded",type="other"}') == 1950
        assert len(text) < 100_000  # 51 types of ~1.4 KB each; 2,000 of them would be ~2.8 MB


def _series(text: str, metric: str, label: str) -> dict[str, float]:
    """``label`` value → the sum of ``metric``'s samples with it."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            found[value] = found.get(value, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


async def test_two_thousand_queues_keep_metrics_bounded_and_totals_whole(
    dsn: str, conn: asyncpg.Connection
) -> None:
    async with live_app(
        dsn, metrics_lag_seconds=0, metrics_cache_seconds=0, metrics_max_queues=50
    ) as live:
        await live.request("GET", "/metrics")  # the first window starts now
        # two jobs in each of 2,000 queues, every queue with settings (paused, a limit)
        await conn.execute(
            "SELECT pgq.enqueue('T', '{}', 'q' || lpad(i::text, 4, '0'), run_at => "
            "now() - interval '1 minute') FROM generate_series(1, 2000) AS i, "
            "generate_series(1, 2)"
        )
        await conn.execute(
            "SELECT pgq.set_limits('q' || lpad(i::text, 4, '0'), concurrency => 5) "
            "FROM generate_series(1, 2000) AS i"
        )
        await conn.execute(
            "SELECT pgq.pause('q' || lpad(i::text, 4, '0')) FROM generate_series(1, 2000) AS i"
        )
        status, text, _ = await live.request("GET", "/metrics")
        assert status == 200
        queued = _series(text, "pgq_jobs", "queue")
        assert len(queued) == 51 and "other" in queued
        assert sum(queued.values()) == 4000  # nothing lost: the rest counted as other
        assert queued["other"] == 1950 * 2
        # the first 50 by name took labels (all have settings), the same ones every scrape
        assert sorted(set(queued) - {"other"}) == [f"q{i:04}" for i in range(1, 51)]
        ages = _series(text, "pgq_oldest_queued_age_seconds", "queue")
        assert set(ages) == set(queued) and ages["other"] >= 60
        held = _series(text, "pgq_queue_held_jobs", "queue")
        assert set(held) == set(queued) and sum(held.values()) == 4000
        assert _series(text, "pgq_queue_paused", "queue")["other"] == 1
        limits = _series(text, "pgq_queue_limit", "queue")
        assert len(limits) == 50 and "other" not in limits
        assert len(text) < 100_000  # 2,000 queues of ~0.3 KB each would be ~0.6 MB

        await conn.execute("SELECT pgq.resume(queue) FROM pgq.queues")
        await conn.execute("SELECT pgq.claim('w', 4000, queues => NULL)")
        await conn.execute("SELECT pgq.complete(id, 'w') FROM pgq.jobs")
        status, text, _ = await live.request("GET", "/metrics")
        latency = _series(text, "pgq_job_start_latency_seconds_count", "queue")
        assert len(latency) == 51 and sum(latency.values()) == 4000
        assert set(_series(text, "pgq_jobs", "queue")) == set(queued)
        assert len(text) < 100_000


async def test_scrapes_within_the_cache_window_share_one_collection(dsn: str) -> None:
    async with live_app(dsn, metrics_cache_seconds=30) as live:
        _, first, _ = await live.request("GET", "/metrics")
        await live.request("GET", "/jobs")
        _, second, _ = await live.request("GET", "/metrics")
        assert first == second  # the /jobs request is not in it yet: the same text

"""``/metrics`` stays bounded however many job types clients invent, and is cached."""

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


async def test_scrapes_within_the_cache_window_share_one_collection(dsn: str) -> None:
    async with live_app(dsn, metrics_cache_seconds=30) as live:
        _, first, _ = await live.request("GET", "/metrics")
        await live.request("GET", "/jobs")
        _, second, _ = await live.request("GET", "/metrics")
        assert first == second  # the /jobs request is not in it yet: the same text

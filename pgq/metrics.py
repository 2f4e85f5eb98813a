"""Prometheus metrics of a coordinator, each app with its own ``CollectorRegistry``.

Names (promised to the deploy manifests; do not rename):

  pgq_jobs{queue,status}                      gauge: jobs per queue and status (``pgq.stats()``)
  pgq_oldest_queued_age_seconds{queue}        gauge: age of the oldest *due* queued job, 0 if none
  pgq_jobs_finished_total{type,outcome}       counter: outcome ∈ succeeded, retried, dead, cancelled
  pgq_jobs_pruned_total{status}               counter: finished jobs deleted for retention here
  pgq_job_duration_seconds{type}              histogram: finished_at - claimed_at
  pgq_job_start_latency_seconds{queue}        histogram: claimed_at - run_at
  pgq_http_requests_total{method,route,status}
  pgq_http_request_duration_seconds{method,route}
  pgq_enqueue_batch_jobs                      histogram: POST /jobs requests per transaction
  pgq_listener_up                             gauge: 1 while the LISTEN connection is up
  pgq_notification_queue_usage                gauge: ``pg_notification_queue_usage()``, 0..1
  pgq_long_polls_waiting                      gauge: requests parked in a long-poll now
  pgq_queue_paused{queue}                     gauge: 1 while paused (queues with settings)
  pgq_queue_limit{queue,limit}                gauge: concurrency, key_concurrency, rate, burst
  pgq_queue_held_jobs{queue}                  gauge: due jobs a pause or full limit holds back

Runners do not serve HTTP, so the job metrics come from the database, read at scrape time
(``Metrics.collect``), at most once a second (``Metrics.scrape`` caches the text). The
``type`` label takes the first ``max_types`` job types seen (``PGQ_METRICS_MAX_TYPES``,
100) and the ``queue`` label the first ``max_queues`` queues seen (``PGQ_METRICS_MAX_QUEUES``,
100; queues with settings first, then by name); later ones count as ``other``, so a client
inventing types or queues cannot grow the output for good. ``other`` keeps the totals:
``pgq_jobs`` and ``pgq_queue_held_jobs`` add up the queues in it, the oldest age is the
oldest of them, ``pgq_queue_paused`` is 1 while any of them is paused, and
``pgq_queue_limit`` has no ``other`` series (limits of different queues do not add up).
What is approximate, honestly:

* Job counters and histograms cover jobs that finished *while this coordinator ran*,
  counted from the database at each scrape over the window since the previous one (lagging
  the database clock by 2 s). Every coordinator sees every job: with several coordinators,
  aggregate with ``max`` (or scrape one), not ``sum``. A job finished by a transaction that
  stayed open longer than the 2-second lag is missed; a job pruned before the next scrape
  is not counted.
* ``retried`` counts failed attempts that were requeued (handler errors and lease
  expiries), from the ``at`` stamp of each entry in ``errors``.
* Duration and start latency describe a job's *last* attempt: ``claimed_at`` is that
  attempt's claim, ``run_at`` when it became due (the enqueue time unless delayed, the end
  of the backoff after a retry). They are observed when the job finishes (succeeded or
  dead), so a job still running is not in them yet.
* ``pgq_jobs`` is ``pgq.stats()``: waiting, queued and running jobs counted exactly,
  succeeded, dead and cancelled ones estimated from the table's statistics once the table
  passes ~8 MB (exact below), so a scrape costs the same at ten million rows as at ten
  thousand.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from . import queries
from .logs import log_event

log = logging.getLogger("pgq.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST

_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OUTCOMES = ("succeeded", "retried", "dead", "cancelled")
#: The ``type`` label of job types beyond the first ``max_types`` seen.
OTHER_TYPE = "other"
#: The ``queue`` label of queues beyond the first ``max_queues`` seen.
OTHER_QUEUE = "other"


class Metrics:
    """The metrics of one coordinator app."""

    def __init__(
        self,
        *,
        lag_seconds: float = 2.0,
        max_types: int = 100,
        max_queues: int = 100,
        cache_seconds: float = 1.0,
    ) -> None:
        self._lag = lag_seconds
        self._max_types = max_types
        self._types: set[str] = set()
        self._max_queues = max_queues
        self._queues: set[str] = set()
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, bytes] | None = None
        self._scrape_lock = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Gauge("pgq_jobs", "Jobs per queue and status.", ["queue", "status"], registry=r)
        self.oldest_queued_age = Gauge(
            "pgq_oldest_queued_age_seconds",
            "Age of the oldest due queued job per queue (0 when none is due).",
            ["queue"],
            registry=r,
        )
        self.finished = Counter(
            "pgq_jobs_finished",
            "Jobs finished by type and outcome (succeeded, retried, dead, cancelled), "
            "counted from the database since this coordinator started.",
            ["type", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "pgq_job_duration_seconds",
            "Run time of a job's last attempt (finished_at - claimed_at).",
            ["type"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.start_latency = Histogram(
            "pgq_job_start_latency_seconds",
            "Delay from a job being due to being claimed (claimed_at - run_at), last attempt.",
            ["queue"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "pgq_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "pgq_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.pruned = Counter(
            "pgq_jobs_pruned",
            "Finished jobs this coordinator deleted for retention (pgq.prune_expired), by status.",
            ["status"],
            registry=r,
        )
        self.enqueue_batch = Histogram(
            "pgq_enqueue_batch_jobs",
            "POST /jobs requests enqueued per transaction (concurrent requests share one).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_paused = Gauge(
            "pgq_queue_paused", "1 while the queue is paused (pgq.pause).", ["queue"], registry=r
        )
        self.queue_limit = Gauge(
            "pgq_queue_limit",
            "A queue's flow-control limits (limit: concurrency, key_concurrency, rate, burst); "
            "absent when not set.",
            ["queue", "limit"],
            registry=r,
        )
        self.queue_held = Gauge(
            "pgq_queue_held_jobs",
            "Due queued jobs a pause or a full concurrency limit keeps from starting.",
            ["queue"],
            registry=r,
        )
        self.listener_up = Gauge(
            "pgq_listener_up", "1 while the LISTEN connection is up, else 0.", registry=r
        )
        self.notification_queue_usage = Gauge(
            "pgq_notification_queue_usage",
            "Fraction of PostgreSQL's NOTIFY queue in use (pg_notification_queue_usage()).",
            registry=r,
        )
        self.long_polls_waiting = Gauge(
            "pgq_long_polls_waiting",
            "Requests parked in a long-poll (claim with wait_seconds, GET /jobs/{id}?wait).",
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._since: datetime | None = None
        self._lock = asyncio.Lock()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled children, looked up once per (method, route, status): ``labels()``
        # validates and locks on every call, a visible share of a small request's time.
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    async def start(self, db: queries.Executor) -> None:
        """Mark the start of the first counting window (the database clock, now)."""
        try:
            self._since = (await queries.finished_since(db, None, self._lag))["until"]
        except Exception as exc:  # the first successful scrape will set it instead
            log_event(
                log,
                "metrics.unavailable",
                f"metrics: cannot read the database clock yet: {exc}",
                level=logging.WARNING,
            )

    async def collect(self, db: queries.Executor, *, listener_up: bool, waiting: int = 0) -> bool:
        """Refresh the database-derived metrics; False when the database did not answer.

        One scrape at a time: two at once would count the same window twice.
        """
        self.listener_up.set(1 if listener_up else 0)
        self.long_polls_waiting.set(waiting)
        async with self._lock:
            try:
                depths = await queries.queue_depths(db)
                usage = await queries.notification_queue_usage(db)
                window = await queries.finished_since(db, self._since, self._lag)
                flow = await queries.held_back(db)
            except Exception as exc:
                log_event(
                    log,
                    "metrics.unavailable",
                    f"metrics: database unavailable: {exc}",
                    level=logging.WARNING,
                )
                self.jobs.clear()
                self.oldest_queued_age.clear()
                return False
            self._refresh_flow(flow)  # first: queues with settings take labels first
            self._refresh_depths(depths)
            self.notification_queue_usage.set(usage or 0.0)
            self._count(window)
            self._since = window["until"]
        return True

    def _refresh_depths(self, depths: list[dict[str, Any]]) -> None:
        counts: dict[tuple[str, str], int] = {}
        ages: dict[str, float] = {}
        for row in sorted(depths, key=lambda r: r["queue"]):
            queue = self.queue_label(row["queue"])
            key = (queue, row["status"])
            counts[key] = counts.get(key, 0) + row["count"]
            age = row.get("oldest_due_age_seconds")
            ages[queue] = max(ages.get(queue, 0.0), float(age) if age is not None else 0.0)
        self.jobs.clear()
        self.oldest_queued_age.clear()
        for (queue, status), count in counts.items():
            self.jobs.labels(queue, status).set(count)
        for queue, age in ages.items():
            self.oldest_queued_age.labels(queue).set(age)

    def _refresh_flow(self, flow: list[dict[str, Any]]) -> None:
        paused: dict[str, bool] = {}
        held: dict[str, int] = {}
        for gauge in (self.queue_paused, self.queue_limit, self.queue_held):
            gauge.clear()
        for row in sorted(flow, key=lambda r: r["queue"]):
            queue = self.queue_label(row["queue"])
            paused[queue] = paused.get(queue, False) or bool(row["paused"])
            held[queue] = held.get(queue, 0) + row["held"]
            if queue != row["queue"]:
                continue  # counted in other: no limits of its own
            for limit in ("concurrency", "key_concurrency", "rate", "burst"):
                if row[limit] is not None:
                    self.queue_limit.labels(queue, limit).set(row[limit])
        for queue, is_paused in paused.items():
            self.queue_paused.labels(queue).set(1 if is_paused else 0)
            self.queue_held.labels(queue).set(held[queue])

    def queue_label(self, queue: str) -> str:
        """``queue`` while it is among the first ``max_queues`` seen, else ``other``: queue
        names come from clients too (any valid name is a queue), and each is a series."""
        return _capped(queue, self._queues, self._max_queues, OTHER_QUEUE)

    def type_label(self, job_type: str) -> str:
        """``job_type`` while it is among the first ``max_types`` seen, else ``other``:
        job types come from clients, and each label value is a series kept for good."""
        return _capped(job_type, self._types, self._max_types, OTHER_TYPE)

    def _count(self, window: dict[str, Any]) -> None:
        for row in window["finished"]:
            status = row["status"]
            if status not in ("succeeded", "dead", "cancelled"):
                continue  # finished, then replayed within the window: counted when it ends
            job_type = self.type_label(row["type"])
            self.finished.labels(job_type, status).inc()
            if status == "cancelled":
                continue
            if row["run_seconds"] is not None:
                self.duration.labels(job_type).observe(max(row["run_seconds"], 0.0))
            if row["start_latency_seconds"] is not None:
                self.start_latency.labels(self.queue_label(row["queue"])).observe(
                    max(row["start_latency_seconds"], 0.0)
                )
        for row in window["retried"]:
            self.finished.labels(self.type_label(row["type"]), "retried").inc(row["count"])

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def scrape(self, db: queries.Executor, *, listener_up: bool, waiting: int) -> bytes:
        """The text of ``/metrics``: collected and rendered at most once per
        ``cache_seconds`` however many scrapers ask, and rendered on a thread, so scrapes
        cost the event loop (every other request) next to nothing."""
        loop = asyncio.get_running_loop()
        async with self._scrape_lock:
            cached = self._cached
            if cached is not None and loop.time() - cached[0] < self._cache_seconds:
                return cached[1]
            await self.collect(db, listener_up=listener_up, waiting=waiting)
            async with self._lock:  # no collect() rewrites the series while they render
                body = await asyncio.to_thread(self.render)
            self._cached = (loop.time(), body)
            return body


def _capped(value: str, seen: set[str], cap: int, other: str) -> str:
    """``value`` if it is in ``seen`` or ``seen`` has room for it (then added), else ``other``."""
    if value in seen:
        return value
    if len(seen) < cap:
        seen.add(value)
        return value
    return other


def count_pruned(metrics: Metrics, pruned: dict[str, int]) -> None:
    """Add one retention batch (status → rows deleted) to ``pgq_jobs_pruned_total``."""
    for status, n in pruned.items():
        metrics.pruned.labels(status).inc(n)

"""``create_app``: the aiohttp application and the resources it owns.

Resources are opened in order by ``cleanup_ctx`` and closed in reverse: the pool, the
``POST /jobs`` batcher (``pgq.batching.EnqueueBatcher``, which finishes its transactions in
flight before the pool closes), the one LISTEN connection (``Listener``) with the
long-poll ``Waiters`` it feeds, the lease monitor, the schedule timer (fires due
schedules, ``pgq/schedule_timer.py``), the metrics' first counting window.
The app starts even when the database is down (``/health`` answers 503 and everything
reconnects); ``serve`` binds first, then waits for the database and checks the schema.

Shutdown (``AppRunner.cleanup``): the site stops accepting, ``on_shutdown`` releases every
parked long-poll (claims answer ``{"jobs": []}``, job waits the job as it stands),
in-flight requests finish (up to ``Settings.shutdown_timeout``), then the cleanup
contexts close the schedule timer, the monitor, the listener and the pool. Each of these
waits is bounded (``pgq.aio.stop_task`` for the background tasks, ``POOL_CLOSE_TIMEOUT``
for connections still acquired), so a shutdown always ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .. import db
from ..batching import CompleteBatcher, EnqueueBatcher
from ..listener import Listener
from ..logs import log_event
from ..metrics import Metrics, count_pruned
from ..schedule_timer import ScheduleTimer
from . import dashboard
from .access import make_access_middleware
from .auth import make_auth_middleware
from .disconnect import disconnect_middleware
from .errors import error_middleware
from .events import EVENT_HUB, EventHub
from .keys import (
    BATCHER,
    COMPLETER,
    DSN,
    LISTENER,
    METRICS,
    MONITOR,
    POOL,
    SCHEDULE_TIMER,
    SETTINGS,
    WAITERS,
)
from .monitor import LeaseMonitor
from .routes import setup_routes
from .settings import Settings
from .waiters import Waiters

log = logging.getLogger("pgq.coordinator")

#: Connect timeout of pool connections: a dead database host answers 503 in seconds.
_CONNECT_TIMEOUT = 5.0
#: At shutdown, how long the pool may wait for connections still acquired (a request
#: handler that outlived the shutdown timeout, say) before it terminates them.
POOL_CLOSE_TIMEOUT = db.POOL_CLOSE_TIMEOUT


def create_app(dsn: str, settings: Settings | None = None) -> web.Application:
    """The coordinator's HTTP application for the database at ``dsn``."""
    settings = settings or Settings.from_env()
    metrics = Metrics(
        lag_seconds=settings.metrics_lag_seconds,
        max_types=settings.metrics_max_types,
        max_queues=settings.metrics_max_queues,
        cache_seconds=settings.metrics_cache_seconds,
    )
    app = web.Application(
        middlewares=[
            make_access_middleware(metrics),
            error_middleware,
            make_auth_middleware(settings.api_tokens),
            disconnect_middleware,
        ],
        # Bodies are read by params.read_raw, which enforces the per-route limits.
        client_max_size=max(settings.max_body_bytes, settings.max_batch_body_bytes) + 1,
    )
    app[SETTINGS] = settings
    app[DSN] = dsn
    app[METRICS] = metrics
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_batcher_ctx)
    app.cleanup_ctx.append(_listener_ctx)
    app.cleanup_ctx.append(_monitor_ctx)
    app.cleanup_ctx.append(_schedule_timer_ctx)
    app.on_shutdown.append(_release_waiters)
    setup_routes(app)
    dashboard.setup(app)
    return app


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    # min_size=0: creating the pool needs no connection, so the app starts (and /health
    # can say 503) while the database is down.
    settings = app[SETTINGS]
    pool = await db.create_pool(
        app[DSN],
        min_size=0,
        max_size=settings.pool_max_size,
        timeout=_CONNECT_TIMEOUT,
        timeouts=db.Timeouts(
            acquire=settings.acquire_timeout,
            statement=settings.statement_timeout,
            lock=settings.lock_timeout,
        ),
    )
    app[POOL] = pool
    await app[METRICS].start(pool)
    yield
    if not await db.close_pool(pool, POOL_CLOSE_TIMEOUT):
        log_event(
            log,
            "coordinator.pool_close_timeout",
            f"pool connections still in use {POOL_CLOSE_TIMEOUT:g}s into shutdown; terminated them",
            level=logging.WARNING,
        )


async def _batcher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    batcher = EnqueueBatcher(
        app[POOL],
        max_batch=settings.enqueue_batch_max,
        max_flushes=settings.enqueue_flushes,
        observe=app[METRICS].enqueue_batch.observe,
    )
    app[BATCHER] = batcher
    completer = CompleteBatcher(app[POOL], max_flushes=settings.enqueue_flushes)
    app[COMPLETER] = completer
    yield
    await batcher.close()
    await completer.close()


async def _listener_ctx(app: web.Application) -> AsyncIterator[None]:
    listener = Listener(app[DSN])
    app[LISTENER] = listener
    settings = app[SETTINGS]
    app[WAITERS] = Waiters(
        app[POOL],
        listener,
        settings.max_wait_seconds,
        settings.max_waiters,
        claim_flushes=settings.enqueue_flushes,
    )
    app[EVENT_HUB] = EventHub(app[POOL], listener)
    # A lost LISTEN connection usually means the pool's idle connections died with it (a
    # restart, a failover, terminated backends): replace them rather than let each one
    # fail a request first.
    listener.on_connect(app[POOL].expire_connections)
    await listener.start(wait=False)
    yield
    app[WAITERS].close()
    await app[WAITERS].finish_claims()
    await app[EVENT_HUB].close()
    await listener.close()


async def _monitor_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]
    monitor = LeaseMonitor(
        app[POOL],
        recheck=app[SETTINGS].lease_recheck_seconds,
        on_pruned=lambda pruned: count_pruned(metrics, pruned),
    )
    app[MONITOR] = monitor
    monitor.start()
    yield
    await monitor.stop()


async def _schedule_timer_ctx(app: web.Application) -> AsyncIterator[None]:
    timer = ScheduleTimer(app[POOL], app[LISTENER])
    app[SCHEDULE_TIMER] = timer
    timer.start()
    yield
    await timer.stop()


async def _release_waiters(app: web.Application) -> None:
    if WAITERS in app:
        app[WAITERS].close()
    if EVENT_HUB in app:
        await app[EVENT_HUB].close()  # event streams end; they would hold shutdown up

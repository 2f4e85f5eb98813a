"""Typed keys of the coordinator's application state (``app[POOL]``, …)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ..batching import CompleteBatcher, EnqueueBatcher
from ..listener import Listener
from ..metrics import Metrics
from ..schedule_timer import ScheduleTimer
from .monitor import LeaseMonitor
from .settings import Settings
from .waiters import Waiters

SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
BATCHER = web.AppKey("batcher", EnqueueBatcher)
COMPLETER = web.AppKey("completer", CompleteBatcher)
LISTENER = web.AppKey("listener", Listener)
WAITERS = web.AppKey("waiters", Waiters)
MONITOR = web.AppKey("monitor", LeaseMonitor)
METRICS = web.AppKey("metrics", Metrics)
SCHEDULE_TIMER = web.AppKey("schedule_timer", ScheduleTimer)

#: Per request: the id echoed in X-Request-Id and logged with every line about it.
REQUEST_ID = web.RequestKey("request_id", str)
#: Per request, with tokens configured: the scope of the token it carried (the dashboard
#: shows only the actions that scope may take).
TOKEN_SCOPE = web.RequestKey("token_scope", str)

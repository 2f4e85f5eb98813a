"""One async function per SQL function in ``sql/``: the only Python that holds SQL text.

Each function takes ``db``, anything with asyncpg's ``fetch``/``fetchrow``/``fetchval``
(a pool, a pool connection, a plain connection, possibly inside the caller's
transaction), and raises pgq's exceptions (``pgq.errors``) instead of asyncpg's.

Split by area: :mod:`.enqueue` (creating jobs), :mod:`.queues` (flow control),
:mod:`.transitions` (what happens to jobs afterwards), :mod:`.reads`, :mod:`.doorbell` (idle
listeners), :mod:`.schedules` (cron schedules), :mod:`.session` (a connection's timeouts),
:mod:`.bench` (``pgq bench``'s scratch database, used only as ``queries.bench``). Everything
but ``bench`` is re-exported here, so callers write ``from pgq import queries`` and
``queries.claim(...)``.
"""

from . import bench
from .base import Executor
from .doorbell import (
    forget_dead_listeners,
    listen_idle,
    pass_barrier,
    unlisten_idle,
    wait_for_enqueuers,
)
from .enqueue import enqueue, enqueue_many
from .progress import (
    cancel_where,
    finished_per_minute,
    progress,
    retry_where,
    unwatch_events,
    watch_events,
)
from .queues import get_queue, held_back, list_queues, pause, resume, set_limits
from .reads import (
    finished_since,
    get_job,
    get_jobs,
    list_jobs,
    list_page,
    next_due,
    notification_queue_usage,
    ping,
    queue_depths,
    running_jobs_of,
    stats,
)
from .schedules import (
    fire_schedule_slots,
    get_schedule,
    list_schedules,
    next_schedule_at,
    schedule,
    unschedule,
)
from .session import set_timeouts
from .transitions import (
    cancel,
    claim,
    claim_many,
    complete,
    complete_grouped,
    complete_many,
    expire_leases,
    expire_leases_detailed,
    fail,
    heartbeat,
    prune,
    prune_expired,
    release,
    retry,
    set_retention,
)

__all__ = [
    "Executor",
    "bench",
    "cancel",
    "cancel_where",
    "claim",
    "claim_many",
    "complete",
    "complete_grouped",
    "complete_many",
    "enqueue",
    "enqueue_many",
    "expire_leases",
    "expire_leases_detailed",
    "fail",
    "finished_per_minute",
    "finished_since",
    "fire_schedule_slots",
    "forget_dead_listeners",
    "get_job",
    "get_jobs",
    "get_queue",
    "get_schedule",
    "heartbeat",
    "held_back",
    "list_jobs",
    "list_page",
    "list_queues",
    "list_schedules",
    "listen_idle",
    "next_due",
    "next_schedule_at",
    "notification_queue_usage",
    "pass_barrier",
    "pause",
    "ping",
    "progress",
    "prune",
    "prune_expired",
    "queue_depths",
    "release",
    "resume",
    "retry",
    "retry_where",
    "running_jobs_of",
    "schedule",
    "set_limits",
    "set_retention",
    "set_timeouts",
    "stats",
    "unlisten_idle",
    "unschedule",
    "unwatch_events",
    "wait_for_enqueuers",
    "watch_events",
]

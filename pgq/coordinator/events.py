"""Server-sent events: ``GET /events`` (every status change, the dashboard's feed) and
``GET /jobs/{id}/events`` (one job's progress and status until it ends).

Every stream is fed from the coordinator's one LISTEN connection (``pgq_events``), never a
connection per browser: ``EventHub`` subscribes once and fans each notification out to
the open streams whose filter matches. Each stream has a bounded buffer; a client too
slow to drain it loses the backlog and gets one ``resync`` event instead (re-read what
you show), so a stalled browser costs at most ``buffer`` events of memory. While a stream
is open the hub registers its LISTEN session with ``pgq.watch_events``, so claims are
announced too (they are not otherwise: a NOTIFY costs a claim the global notify lock).
After a reconnect of the LISTEN connection every stream gets ``resync`` (notifications
sent meanwhile are lost). A comment line every 15 s keeps proxies from closing an idle
stream; shutdown ends every stream.

Wire format: ``event: job`` with ``data: {"id", "status", "queue", "type"}`` per status
change, ``event: progress`` (same fields plus ``progress`` on the job stream) per progress
report, ``event: resync`` with ``data: {}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import web

from .. import queries, wire
from ..errors import DatabaseUnavailable, JobNotFound
from ..jobs import TERMINAL_STATUSES
from ..listener import Listener
from ..logs import log_event
from . import params as p
from .disconnect import parks
from .keys import POOL

log = logging.getLogger("pgq.coordinator.events")

CHANNEL = "pgq_events"
#: Events one stream may hold before it is declared too slow and resynchronised.
BUFFER = 1000
#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE_SECONDS = 15.0

_RESYNC = {"event": "resync"}
_CLOSE: dict[str, Any] = {"event": "close"}


class Stream:
    """One open SSE response's queue of events, with its filter."""

    def __init__(self, *, queue: str | None, job_type: str | None, job_id: int | None) -> None:
        self.queue = queue
        self.job_type = job_type
        self.job_id = job_id
        self.items: asyncio.Queue[dict[str, Any]] = asyncio.Queue(BUFFER)
        self.overflowed = 0

    def wants(self, event: dict[str, Any]) -> bool:
        return (
            (self.job_id is None or event.get("id") == self.job_id)
            and (self.queue is None or event.get("queue") == self.queue)
            and (self.job_type is None or event.get("type") == self.job_type)
        )

    def offer(self, event: dict[str, Any]) -> None:
        try:
            self.items.put_nowait(event)
        except asyncio.QueueFull:
            # Too slow: drop the backlog and tell the client to re-read instead.
            self.overflowed += 1
            while not self.items.empty():
                self.items.get_nowait()
            self.items.put_nowait(_RESYNC)

    def close(self) -> None:
        while not self.items.empty():
            self.items.get_nowait()
        self.items.put_nowait(_CLOSE)


class EventHub:
    """Fans ``pgq_events`` out to the open streams; registers as a watcher while any is."""

    def __init__(self, pool: Any, listener: Listener) -> None:
        self._pool = pool
        self._listener = listener
        self._streams: set[Stream] = set()
        self._closed = False
        self._watching_pid: int | None = None
        self._watch_lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[None]] = set()
        listener.subscribe(CHANNEL, self._on_event)
        listener.on_connect(self._on_connect)

    @property
    def streams(self) -> int:
        return len(self._streams)

    def _on_event(self, _channel: str, payload: str) -> None:
        if not self._streams:
            return
        try:
            event = orjson.loads(payload)
            if not isinstance(event, dict):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError):
            log_event(
                log,
                "events.malformed_payload",
                f"ignoring a malformed pgq_events payload: {payload[:200]}",
                level=logging.WARNING,
            )
            return
        for stream in self._streams:
            if stream.wants(event):
                stream.offer(event)

    def _on_connect(self) -> None:
        # Events sent while the LISTEN connection was away are lost: everyone re-reads,
        # and the new session registers as a watcher again.
        self._watching_pid = None
        for stream in self._streams:
            stream.offer(_RESYNC)
        if self._streams:
            task = asyncio.ensure_future(self._sync_watch())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sync_watch(self) -> None:
        """Make pgq.event_watchers say whether a stream is open (best effort: a failure
        only means claims go unannounced until the next change)."""
        async with self._watch_lock:
            pid = self._listener.pid
            want = bool(self._streams) and not self._closed and pid is not None
            try:
                if want and pid is not None and self._watching_pid != pid:
                    await queries.watch_events(self._pool, pid)
                    self._watching_pid = pid
                elif not want and self._watching_pid is not None:
                    await queries.unwatch_events(self._pool, self._watching_pid)
                    self._watching_pid = None
            except Exception as exc:  # the streams work without it
                log_event(
                    log,
                    "events.watch_failed",
                    f"could not update pgq.event_watchers: {exc}",
                    level=logging.WARNING,
                )

    async def open(self, stream: Stream) -> None:
        self._streams.add(stream)
        if self._closed:
            stream.close()
        await self._sync_watch()

    async def discard(self, stream: Stream) -> None:
        self._streams.discard(stream)
        if not self._streams:
            await self._sync_watch()

    async def close(self) -> None:
        """End every stream (shutdown) and stop watching."""
        self._closed = True
        for stream in self._streams:
            stream.close()
        with contextlib.suppress(Exception):
            await self._sync_watch()


#: The app's hub (set by create_app).
EVENT_HUB = web.AppKey("event_hub", EventHub)


def _frame(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n: connected\n\n")
    return response


async def _next(stream: Stream) -> dict[str, Any] | None:
    """The stream's next event, or None after KEEPALIVE_SECONDS without one."""
    try:
        async with asyncio.timeout(KEEPALIVE_SECONDS):  # not wait_for: see pgq.aio
            return await stream.items.get()
    except TimeoutError:
        return None


@parks
async def all_events(request: web.Request) -> web.StreamResponse:
    """``GET /events?queue=&type=``: every job status change (and progress report)."""
    q = wire.query(request.query.items(), wire.EventsQuery, prefix="query parameter ")
    hub: EventHub = request.app[EVENT_HUB]
    stream = Stream(queue=p.unset_none(q.queue), job_type=p.unset_none(q.type), job_id=None)
    await hub.open(stream)
    try:
        response = await _start(request)
        while True:
            event = await _next(stream)
            if event is None:
                await response.write(b": keep-alive\n\n")
            elif event is _CLOSE:
                break
            elif event is _RESYNC:
                await response.write(_frame("resync", {}))
            else:
                name = "progress" if event.get("event") == "progress" else "job"
                await response.write(_frame(name, event))
        return response
    finally:
        await hub.discard(stream)


@parks
async def job_events(request: web.Request) -> web.StreamResponse:
    """``GET /jobs/{id}/events``: the job as it stands, then one event per progress report
    and status change, closed after a terminal status."""
    job_id = p.job_id(request)
    p.no_query(request)
    hub: EventHub = request.app[EVENT_HUB]
    pool = request.app[POOL]
    stream = Stream(queue=None, job_type=None, job_id=job_id)
    await hub.open(stream)  # before the first read: nothing falls between the two
    try:
        job = await queries.get_job(pool, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        response = await _start(request)
        await response.write(_frame("job", _state(job)))
        while job.status not in TERMINAL_STATUSES:
            event = await _next(stream)
            if event is None:
                await response.write(b": keep-alive\n\n")
                continue
            if event is _CLOSE:
                break
            # Re-read rather than trust the payload: it carries no progress, and a
            # resync means events were lost.
            try:
                fresh = await queries.get_job(pool, job_id)
            except DatabaseUnavailable:
                await response.write(_frame("resync", {}))
                continue
            if fresh is None:  # pruned meanwhile
                break
            job = fresh
            name = "progress" if event.get("event") == "progress" else "job"
            await response.write(_frame(name, _state(job)))
        return response
    finally:
        await hub.discard(stream)


def _state(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "queue": job.queue,
        "type": job.type,
        "attempts": job.attempt,
        "progress": job.progress,
    }

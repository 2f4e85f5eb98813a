"""The idle registration of one process's LISTEN connection (sql/0003_notifications.sql).

An enqueue notifies ``pgq_<queue>`` only when some LISTEN session is registered idle on
that queue (``pgq.idle_listeners``), so a process that wants wake-ups must register before
it sleeps, and should deregister when it is busy (every enqueue notifies while it stays
registered, and NOTIFY serializes producers' commits).

A ``Doorbell`` keeps, per queue, what this process registered under the ``Listener``'s pid:

  unregistered   no row: enqueues into the queue do not notify us.
  registered     ``pgq.listen_idle`` committed; not yet safe to sleep, since an enqueuer
                 may have read the registry just before it.
  armed          ``pgq.wait_for_enqueuers`` returned: every enqueuer that missed the row
                 has committed. A claim that starts now sees their jobs, and every later
                 enqueue notifies. Only now may the caller sleep (after that claim).

Transitions back to unregistered (``disarm``): a notification on the queue's channel (the
caller wakes and claims; if it finds too little it arms again), the caller being busy, a
LISTEN reconnect (the rows name the old pid; they are deleted, and registration starts
again under the new pid once LISTEN is active). The rows are deleted by ``settle``, after
the claim that the wake-up triggered, so the delete never delays that claim. Registry
writes run in order, one after the other, so a deregistration can never land after the
registration that follows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

import asyncpg

from . import queries
from .errors import DatabaseUnavailable
from .listener import Listener
from .logs import log_event

log = logging.getLogger("pgq.doorbell")


class Doorbell:
    """Registers this process's LISTEN session idle on queues (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, listener: Listener) -> None:
        self._pool = pool
        self._listener = listener
        self._registered: dict[str, int] = {}  # queue → listener pid of our row
        self._armed: set[str] = set()  # registered, and the barrier has passed since
        self._unregister: dict[int, list[str]] = {}  # pid → disarmed queues, rows not deleted
        self._watched: set[str] = set()
        self._last_write: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        listener.on_connect(self.disarm_all)
        #: registrations and barriers run (for tests and metrics)
        self.registrations = 0

    def armed(self, queues: Iterable[str]) -> bool:
        """True when every queue is armed: a sleep now misses no enqueue."""
        return all(q in self._armed for q in queues)

    async def arm(self, queues: Sequence[str]) -> bool:
        """Register idle on ``queues`` and pass the barrier; True once all are armed.

        False when some queue cannot be armed yet: the LISTEN connection is down, the
        channel's LISTEN is not active yet, or the barrier timed out behind an enqueuer
        holding the queue's key. Then the caller must not sleep for long: claim, wait a
        little, try again. Raises ``DatabaseUnavailable``.
        """
        self._watch(queues)
        pid = self._listener.pid
        if pid is None or not self._listener.connected:
            return False
        ready = [q for q in dict.fromkeys(queues) if self._listener.listening(f"pgq_{q}")]
        stale = [q for q in ready if self._registered.get(q) not in (None, pid)]
        if stale:
            self.disarm(stale)
        self.settle()
        new = [q for q in ready if q not in self._registered]
        if new:
            for q in new:
                self._registered[q] = pid
            self.registrations += 1
            write = self._write(queries.listen_idle, new, pid)
            try:
                await asyncio.shield(write)
            except BaseException:
                # Unknown whether the row lands (the shielded write goes on, e.g. when a
                # stopping runner cancels its idle wait): deregister it, ordered after the
                # write like every registry write, so close() leaves no row behind.
                self.disarm([q for q in new if self._registered.get(q) == pid])
                raise
        todo = [q for q in ready if q not in self._armed and self._registered.get(q) == pid]
        if todo:
            passed = await queries.pass_barrier(self._pool, todo)
            if passed:
                # Only those still registered under this pid: a notification or a reconnect
                # during the barrier disarmed the others (and woke the caller).
                self._armed.update(q for q in todo if self._registered.get(q) == pid)
        return len(ready) == len(set(queues)) and self.armed(queues)

    def disarm(self, queues: Iterable[str]) -> None:
        """Forget our registration on ``queues``; the rows are deleted by ``settle``.

        Deferred so that a wake-up's claim does not share the database with the delete: a
        row that outlives its use only costs an extra notification."""
        for q in queues:
            self._armed.discard(q)
            pid = self._registered.pop(q, None)
            if pid is not None:
                self._unregister.setdefault(pid, []).append(q)

    def disarm_all(self) -> None:
        self.disarm(list(self._registered))

    def settle(self) -> None:
        """Start deleting the rows of disarmed queues (in the background, ordered before
        any later registration). Called after each claim; ``arm`` and ``close`` call it."""
        pending, self._unregister = self._unregister, {}
        for pid, names in pending.items():
            self._write(queries.unlisten_idle, names, pid)

    async def close(self) -> None:
        """Deregister everything and wait for the registry writes (best effort)."""
        self.disarm_all()
        self.settle()
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=5)

    def watch(self, queues: Iterable[str]) -> None:
        """Disarm a queue on every notification of its channel (``arm`` does this too)."""
        self._watch(queues)

    def unwatch(self, queues: Iterable[str]) -> None:
        """Forget ``queues``: deregister, and stop following their channels."""
        queues = [q for q in queues if q in self._watched]
        self.disarm(queues)
        for q in queues:
            self._watched.discard(q)
            self._listener.unsubscribe(f"pgq_{q}", self._rung, unlisten=True)

    # -- internals --------------------------------------------------------------------

    def _watch(self, queues: Iterable[str]) -> None:
        for q in queues:
            if q not in self._watched:
                self._watched.add(q)
                self._listener.subscribe(f"pgq_{q}", self._rung)

    def _rung(self, channel: str, _payload: str) -> None:
        # The caller wakes on the same notification and claims; it arms again if it finds
        # too little. Deregistering now is what keeps busy processes from being notified.
        self.disarm([channel.removeprefix("pgq_")])

    def _write(self, call: object, queues: list[str], pid: int) -> asyncio.Task[None]:
        previous = self._last_write

        async def write() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if call is queries.listen_idle:
                await call(self._pool, queues, pid)
                return
            try:
                await call(self._pool, queues, pid)  # type: ignore[operator]
            except Exception as exc:  # e.g. the pool closing at shutdown
                # Harmless: a row left behind only means extra notifications, until our
                # next deregistration or, once this LISTEN session is gone, the janitor.
                log_event(
                    log,
                    "doorbell.deregister_failed",
                    f"could not deregister idle listener {pid} from {queues}: {exc}",
                )

        task = asyncio.ensure_future(write())
        self._last_write = task
        self._writes.add(task)
        task.add_done_callback(self._written)
        return task

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, DatabaseUnavailable):
                log_event(
                    log,
                    "doorbell.write_failed",
                    "idle registry write failed",
                    level=logging.ERROR,
                    exc_info=exc,
                )

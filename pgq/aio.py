"""Waiting on events and stopping background tasks without losing a cancellation.

On Python 3.11, ``asyncio.wait_for(aw, timeout)`` runs ``aw`` in a task of its own and,
when the waiting task is cancelled in the same loop iteration as ``aw`` completes (an
event set just then, say), returns ``aw``'s result instead of raising ``CancelledError``:
the cancellation is lost (fixed in 3.12, CPython gh-86296). A background loop that
cancellation should end then goes on running, and whoever awaits it waits forever. So
pgq waits on its events with ``asyncio.timeout`` (which counts cancellations: none is
lost) through :func:`wait_event`, and stops its background tasks with
:func:`stop_task`, which cancels again should a cancellation not take, and gives up
after a bound rather than hang a shutdown (:func:`stop_tasks` for several at once, as a
``close`` that must end does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from .logs import log_event

log = logging.getLogger("pgq")

#: How long ``stop_task`` waits for a cancelled task to end by default.
STOP_TIMEOUT = 10.0
#: While a cancelled task goes on running, cancel it again this often.
_RECANCEL_EVERY = 0.5


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass (None: no limit); whether it
    is set. A cancellation of the caller always raises, even as the event is set."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


async def stop_task(task: asyncio.Task[object], timeout: float = STOP_TIMEOUT) -> bool:
    """Cancel ``task`` and wait until it ends, at most ``timeout`` seconds; whether it did.

    A task that goes on running after a cancellation (one lost, or swallowed by code it
    runs) is cancelled again every half second. One still running at the deadline is
    logged (``task.stop_timeout``) and left behind: a shutdown must not hang on it. An
    exception the task ended with, other than its cancellation, is raised.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log_event(
                log,
                "task.stop_timeout",
                f"task {task.get_name()} did not stop within {timeout:g}s of its cancellation",
                level=logging.ERROR,
                task=task.get_name(),
            )
            return False
        await asyncio.wait([task], timeout=min(remaining, _RECANCEL_EVERY))
    if not task.cancelled() and (exc := task.exception()) is not None:
        raise exc
    return True


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float = STOP_TIMEOUT) -> None:
    """``stop_task`` on each of ``tasks``, concurrently, all within one ``timeout``.

    For a ``close`` that must end: an exception a task ended with is logged
    (``task.failed``) rather than raised, since the caller is shutting down and the task's
    work is abandoned either way.
    """
    tasks = list(tasks)
    if not tasks:
        return
    ends = await asyncio.gather(*(stop_task(t, timeout) for t in tasks), return_exceptions=True)
    for task, end in zip(tasks, ends, strict=True):
        if isinstance(end, Exception):
            log_event(
                log,
                "task.failed",
                f"task {task.get_name()} failed before it was stopped: {end!r}",
                level=logging.WARNING,
                exc_info=end,
                task=task.get_name(),
            )

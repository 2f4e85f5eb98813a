"""Sync handlers: a plain ``def`` handler runs on a thread, off the event loop.

``ThreadPool`` is sized to the runner's concurrency (slots bound the handlers that run; the
pool bounds the threads). Its threads are daemon threads on purpose: a Python thread cannot
be killed, so a handler that overruns its timeout, or is cancelled or interrupted by shutdown,
keeps running on its thread while the runner fails or releases its job and discards the late
result — and the process can still exit without waiting for it. A timed-out handler still
holds its thread, so a later sync job may wait for a free thread (its timeout counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any

from ..jobs import Job

__all__ = ["ThreadPool", "is_sync"]

_Item = tuple[
    asyncio.AbstractEventLoop, asyncio.Future[Any], contextvars.Context, Callable[[Job], Any], Job
]


def is_sync(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a function or a callable object) is a plain, non-async callable."""
    call = type(fn).__call__ if not inspect.isfunction(fn) else None
    return not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call))


class ThreadPool:
    """Up to ``size`` daemon threads, started as needed, running sync handlers."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def run(self, fn: Callable[[Job], Any], job: Job) -> asyncio.Future[Any]:
        """Run ``fn(job)`` on a pool thread (in a copy of the caller's context); cancelling
        the returned future stops nothing: a late result or error is discarded."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((loop, future, contextvars.copy_context(), fn, job))
        if len(self._threads) < self._size:
            thread = threading.Thread(
                target=self._work, name=f"pgq-handler-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return future

    def close(self) -> None:
        """Let idle threads exit; busy ones exit after their handler returns."""
        for _ in self._threads:
            self._queue.put(None)
        self._threads.clear()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, context, fn, job = item
            if future.cancelled():  # cancelled while it waited for a thread
                continue
            try:
                result = context.run(fn, job)
                if inspect.isawaitable(result):
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
                    raise TypeError(
                        f"the handler for {job.type} returned an awaitable: declare it `async def`"
                    )
            except BaseException as exc:  # handed to the job's task as is
                settle: Callable[[], None] = _setter(future, exc, failed=True)
            else:
                settle = _setter(future, result, failed=False)
            # a closed loop (RuntimeError) means nobody waits for this result
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)


def _setter(future: asyncio.Future[Any], value: Any, *, failed: bool) -> Callable[[], None]:
    def settle() -> None:
        if future.done():  # cancelled (timeout, cancellation, shutdown): discard it
            return
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)

    return settle

"""The example's tasks: each runs under ``manage.py pgq_worker``."""

import asyncio
import time

from django.tasks import task


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="emails", priority=10)
async def send_welcome(address: str) -> dict:
    await asyncio.sleep(0)  # an async task runs on the worker's event loop
    return {"sent_to": address}


@task(takes_context=True)
def which_attempt(context) -> int:
    return context.attempt


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)  # a sync task runs in a thread: others keep going meanwhile
    return seconds


@task
def broken(message: str) -> None:
    raise ValueError(message)


@task(max_attempts=3, timeout_seconds=60)
def with_limits() -> str:
    return "ok"

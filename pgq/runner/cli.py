"""``pgq runner MODULE:ATTR``: load the application's ``pgq.Runner`` and run it until
SIGTERM/SIGINT (the first drains, a second stops at once)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from typing import Any

from ..config import database_url
from ..errors import PgqError
from ..logs import log_event
from .core import Runner
from .http import HttpSource
from .probes import start_probes

__all__ = ["load_runner", "run_from_cli"]

log = logging.getLogger("pgq.runner")


def load_runner(target: str) -> Runner:
    """Import ``MODULE:ATTR`` and return the ``pgq.Runner`` it names."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise PgqError(
            f"runner target {target!r} must look like MODULE:ATTR, e.g. myapp.jobs:runner"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current project is importable
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise PgqError(f"cannot import {module_name!r} (from {target!r}): {exc}") from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PgqError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Runner):
        raise PgqError(f"{target} is a {type(obj).__name__}, not a pgq.Runner")
    return obj


def run_from_cli(
    target: str,
    *,
    dsn: str | None,
    queues: list[str] | None,
    concurrency: int | None,
    grace: float,
    coordinator: str | None,
    token: str | None,
    health_port: int | None = None,
    health_host: str = "0.0.0.0",
) -> int:
    """``pgq runner``: load the runner, apply the flags, run it until SIGTERM/SIGINT.

    The first signal drains (grace period), a second one stops at once. Returns 0 when
    every job this runner held was completed, failed or released, 1 when some outcome could
    not be written (those jobs come back when their leases run out).

    With ``health_port``, ``/livez`` and ``/readyz`` answer on ``health_host:health_port``
    (``probes.py``) from before the runner connects until it has stopped.
    """
    runner = load_runner(target)
    try:
        runner.configure(dsn=dsn, queues=queues, concurrency=concurrency, grace=grace)
    except ValueError as exc:
        raise PgqError(str(exc)) from None
    source = HttpSource(coordinator, token=token) if coordinator else None
    if source is None:
        database_url(runner.dsn)  # fail now, with the config error, not inside the loop

    async def main() -> int:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(name: str) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log_event(
                    log,
                    "runner.stopping",
                    f"{name}: stopping, running handlers get {runner.grace:g}s "
                    "(send it again to stop at once)",
                    worker_id=runner.worker_id,
                )
                runner.stop()
            else:
                log_event(
                    log,
                    "runner.stopping",
                    f"{name} again: stopping at once",
                    level=logging.WARNING,
                    worker_id=runner.worker_id,
                )
                runner.stop_now()

        probes = None
        if health_port is not None:
            try:
                probes = await start_probes(runner, health_host, health_port)
            except OSError as exc:
                raise PgqError(
                    f"cannot serve probes on {health_host}:{health_port}: {exc.strerror or exc}"
                ) from None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            await runner.run(source=source)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if probes is not None:
                await probes.cleanup()
        return 0 if runner.clean_exit else 1

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())

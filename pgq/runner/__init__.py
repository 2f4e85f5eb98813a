"""``pgq.runner``: the runner, its job sources and the ``pgq runner`` entry point.

==============  ==================================================================
``core``        ``Runner``: handler registry, slots, the claim loop, shutdown
``executor``    one task per held job: handler, timeout, heartbeats, the outcome
``source``      the ``JobSource`` / ``RunnerHooks`` protocols (the seam)
``database``    ``DatabaseSource``: pool, LISTEN, doorbell, completion batches
``sweep``       ``LeaseSweeper``: expires leases for the database source
``http``        ``HttpSource``: the same over the coordinator's HTTP API
``cli``         ``pgq runner MODULE:ATTR`` with signal handling
==============  ==================================================================

The HTTP source and the CLI loader are imported on first use (they pull in aiohttp).
"""

from typing import TYPE_CHECKING

from .core import Runner
from .database import DatabaseSource
from .executor import Handler
from .source import JobSource, RunnerHooks

if TYPE_CHECKING:
    from .cli import load_runner, run_from_cli
    from .http import CoordinatorUnauthorized, CoordinatorUnavailable, HttpSource

__all__ = [
    "CoordinatorUnauthorized",
    "CoordinatorUnavailable",
    "DatabaseSource",
    "Handler",
    "HttpSource",
    "JobSource",
    "Runner",
    "RunnerHooks",
    "load_runner",
    "run_from_cli",
]

_LAZY = {
    "CoordinatorUnauthorized": "http",
    "CoordinatorUnavailable": "http",
    "HttpSource": "http",
    "load_runner": "cli",
    "run_from_cli": "cli",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pgq.runner' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)

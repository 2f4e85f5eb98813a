"""pgq: an event-driven job queue on PostgreSQL.

The queue is a table, every state transition is a stored procedure in ``sql/``, NOTIFY
triggers wake idle runners, and a thin aiohttp layer serves an HTTP API.
"""

from typing import TYPE_CHECKING

from .client import Client
from .errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    InvalidArgument,
    JobNotFound,
    LeaseMismatch,
    MigrationError,
    PermanentError,
    PgqError,
    RetryLater,
    TransitionNotAllowed,
    Unencodable,
)
from .jobs import Job

if TYPE_CHECKING:
    from .runner import Runner

__all__ = [
    "Client",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "InvalidArgument",
    "Job",
    "JobNotFound",
    "LeaseMismatch",
    "MigrationError",
    "PermanentError",
    "PgqError",
    "RetryLater",
    "Runner",
    "TransitionNotAllowed",
    "Unencodable",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The runner pulls in more than a client needs; load it on first use.
    if name == "Runner":
        from .runner import Runner

        return Runner
    raise AttributeError(f"module 'pgq' has no attribute {name!r}")

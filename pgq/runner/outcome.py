"""What became of one attempt of a job in a runner, and what the runner writes for it."""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import RetryLater

__all__ = ["Failure", "Outcome", "Written", "failure_of"]

T = TypeVar("T")

#: Longest stored traceback of a failed attempt (it goes into pgq.jobs.errors).
MAX_TRACEBACK_CHARS = 4000


class Outcome(enum.StrEnum):
    """How a handler's run ended; the executor writes each through the ``JobSource``."""

    #: returned a (JSON-serialisable) result → ``complete``
    SUCCESS = "success"
    #: raised → ``fail``, retryable
    ERROR = "error"
    #: raised ``pgq.PermanentError`` → ``fail``, not retryable (dead at once)
    PERMANENT = "permanent"
    #: raised ``pgq.RetryLater`` → ``fail``, retryable after its delay
    RETRY_LATER = "retry_later"
    #: ran past its timeout and was cancelled → ``fail``, retryable
    TIMEOUT = "timeout"
    #: still running when the shutdown grace period ended → ``release``
    SHUTDOWN = "shutdown"
    #: the job was cancelled → nothing to write
    CANCELLED = "cancelled"
    #: no longer held (lease expired, claimed again) → nothing to write
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Written(Generic[T]):
    """An outcome write that was made: what the source answered, and whether it took
    retries (then an earlier try may have committed with its reply lost)."""

    answer: T
    retried: bool


@dataclass(frozen=True, slots=True)
class Failure:
    """The arguments of the ``fail`` (or ``release``) write for an outcome."""

    error: dict[str, Any]
    retryable: bool = True
    retry_delay: float | None = None


def failure_of(outcome: Outcome, detail: Any, worker_id: str) -> Failure:
    """The error payload of an outcome other than SUCCESS, CANCELLED and LOST. ``detail``:
    the exception, or the timeout in seconds for TIMEOUT."""
    if outcome is Outcome.SHUTDOWN:
        message = f"released: runner {worker_id} shut down before the handler finished"
        return Failure({"message": message, "kind": "released"})
    if outcome is Outcome.TIMEOUT:
        return Failure({"message": f"handler timed out after {detail:g}s", "kind": "timeout"})
    error = error_payload(detail)
    if outcome is Outcome.PERMANENT:
        error["kind"] = "permanent"
        return Failure(error, retryable=False)
    if outcome is Outcome.RETRY_LATER:
        assert isinstance(detail, RetryLater)
        retry_delay = max(0.0, float(detail.delay))
        error["kind"] = "retry_later"
        error["retry_delay"] = retry_delay
        return Failure(error, retry_delay=retry_delay)
    return Failure(error)


def error_payload(exc: BaseException) -> dict[str, Any]:
    """A failed attempt's error as stored in pgq.jobs.last_error / errors."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > MAX_TRACEBACK_CHARS:
        tb = "…" + tb[-MAX_TRACEBACK_CHARS:]
    kind = type(exc)
    return {
        "message": str(exc) or kind.__name__,
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "kind": "exception",
        "traceback": tb,
    }

"""Schedules as Python sees them: a ``pgq.schedules`` row, a job a firing created, and a
schedule declared in code (``Runner.schedule``). The SQL calls are ``pgq.queries.schedules``.

``pgq.schedule`` refuses bad input with PQ400 and names the argument at fault as the
error's column; ``field_of`` reads it back (``cron``, ``timezone``, ``catch_up``, ...) so
the HTTP API can name the field.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import Any, Final

from .errors import InvalidArgument, PgqError
from .wire import limits as L

#: The keyword options of ``pgq.schedule`` besides name, cron, job_type and args.
SCHEDULE_OPTIONS: Final = (
    "queue",
    "timezone",
    "catch_up",
    "priority",
    "max_attempts",
    "timeout_seconds",
    "paused",
)
CATCH_UP_MODES: Final = L.CATCH_UP_MODES
NAME_PATTERN: Final = L.SCHEDULE_NAME_PATTERN
#: Channel pgq.schedule and pgq.unschedule notify (payload: the schedule's name).
CHANNEL: Final = "pgq_schedules"


class ScheduleNotFound(PgqError):
    """No such schedule."""

    http_status = 404
    code = "schedule_not_found"


@dataclasses.dataclass(slots=True, frozen=True)
class Schedule:
    """One row of ``pgq.schedules``."""

    name: str
    cron: str
    timezone: str
    job_type: str
    args: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    timeout_seconds: int
    catch_up: str
    paused: bool
    next_run_at: datetime
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, row: Any) -> Schedule:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        """The schedule as the HTTP API shows it (``type``/``arguments`` as for jobs)."""
        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "type": self.job_type,
            "arguments": self.args,
            "queue": self.queue,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "timeout_seconds": self.timeout_seconds,
            "catch_up": self.catch_up,
            "paused": self.paused,
            "next_run_at": self.next_run_at,
            "last_run_at": self.last_run_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclasses.dataclass(slots=True, frozen=True)
class FiredSlot:
    """One job ``pgq.fire_schedule_slots`` created."""

    schedule: str
    scheduled_for: datetime
    job_id: int
    job_type: str
    queue: str


@dataclasses.dataclass(slots=True, frozen=True)
class ScheduleSpec:
    """A schedule declared in code (``Runner.schedule``), upserted when the runner starts."""

    name: str
    cron: str
    job_type: str
    args: dict[str, Any]
    options: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.match(NAME_PATTERN, self.name):
            raise ValueError(f"schedule name {self.name!r} is invalid: {L.SCHEDULE_NAME_RULE}")
        if not isinstance(self.cron, str) or not self.cron.strip():
            raise ValueError(f"schedule {self.name}: cron must be a non-empty string")
        if not isinstance(self.args, dict):
            raise ValueError(f"schedule {self.name}: args must be a dict")
        unknown = sorted(set(self.options) - set(SCHEDULE_OPTIONS))
        if unknown:
            raise TypeError(
                f"schedule {self.name}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(SCHEDULE_OPTIONS)}"
            )

    def http_body(self) -> dict[str, Any]:
        """The ``PUT /schedules/{name}`` body (HTTP-mode runners declare through it)."""
        return {"cron": self.cron, "type": self.job_type, "arguments": self.args, **self.options}


def field_of(exc: InvalidArgument) -> str | None:
    """The argument a PQ400 from the schedule functions names (its COLUMN), if any."""
    return getattr(exc.__cause__, "column_name", None)

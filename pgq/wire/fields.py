"""The field types the wire bodies share: names, ids, times, JSON and bounded text.

Each is an ``Annotated`` type whose ``Meta`` is at once the check (``pgq.wire.request_body``)
and the field's JSON Schema (``pgq.wire.schemas``); the numbers come from ``limits``.
Request bodies (``requests``) and answers (``answers``) both use them, so a rule such as the
queue-name pattern is stated once for both directions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import Meta

from . import limits as L

# -- field types --------------------------------------------------------------------------
# ``extra`` is not part of the JSON Schema: ``rule`` is the wording of a pattern's refusal
# (``'X y' is invalid: <rule>``), ``problem`` replaces the whole refusal.


def bounded_text(max_length: int, description: str | None = None) -> Meta:
    """A string of 1 to ``max_length`` characters without NUL (text columns cannot hold it)."""
    return Meta(
        min_length=1,
        max_length=max_length,
        pattern=L.NO_NUL_PATTERN,
        description=description,
        extra={"problem": L.NO_NUL_RULE},
    )


QueueName = Annotated[
    str, Meta(pattern=L.QUEUE_PATTERN, description=L.QUEUE_RULE, extra={"rule": L.QUEUE_RULE})
]
TypeName = Annotated[
    str, Meta(pattern=L.TYPE_PATTERN, description=L.TYPE_RULE, extra={"rule": L.TYPE_RULE})
]
WorkerId = Annotated[
    str,
    bounded_text(
        L.MAX_WORKER_ID_LENGTH,
        "Who holds the job (any stable name of the runner process).",
    ),
]
Attempt = Annotated[
    int,
    Meta(
        ge=1,
        le=L.INT32_MAX,
        description="The attempt being reported (the claimed job's `attempts`): fences off a "
        "runner whose lease expired and whose job was claimed again.",
    ),
]
LeaseToken = Annotated[
    str,
    Meta(
        pattern=L.LEASE_TOKEN_PATTERN,
        description="The job's `lease_token` from the claim answer: proves the caller holds "
        "the lease (a wrong or stale one is 409 `lease_mismatch`).",
        extra={"problem": L.LEASE_TOKEN_RULE},
    ),
]
JobId = Annotated[int, Meta(ge=1, le=L.BIGINT_MAX)]
Priority = Annotated[
    int, Meta(ge=L.PRIORITY_MIN, le=L.PRIORITY_MAX, description="Smaller runs first.")
]
Status = Literal["waiting", "queued", "running", "succeeded", "dead", "cancelled"]
RunAt = Annotated[
    datetime,
    Meta(
        tz=True,
        description="RFC 3339 with an offset, 1970 to 9999.",
        extra_json_schema={"pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-"},
    ),
]
Time = datetime

JSON_NOTE = (
    "Any JSON; strings and keys must not contain U+0000 (jsonb cannot store it) and values "
    f"nest at most {L.MAX_JSON_DEPTH} levels."
)
JsonObject = Annotated[dict[str, Any], Meta(description=JSON_NOTE)]
JsonValue = Annotated[Any, Meta(description=JSON_NOTE)]
ErrorMessage = Annotated[
    str,
    bounded_text(L.MAX_ERROR_MESSAGE_LENGTH),
]


Cron = Annotated[
    str,
    bounded_text(
        L.MAX_CRON_LENGTH,
        "5 fields (minute hour day-of-month month day-of-week), or 6 with a "
        "leading second; *, lists, ranges, steps, month and day names, 0 or 7 for Sunday; or "
        "@yearly @annually @monthly @weekly @daily @midnight @hourly.",
    ),
]
TimeZone = Annotated[
    str,
    bounded_text(
        L.MAX_TIMEZONE_LENGTH,
        "IANA time zone the slots are computed in. A local time that does not "
        "exist (DST starts) is skipped; one that occurs twice (DST ends) fires once.",
    ),
]
CatchUp = Annotated[
    Literal["latest", "all", "none"],
    Meta(
        description="Slots missed while nothing ran: latest = one job for the most recent, "
        "all = one per slot (1,000 per firing), none = only slots under 60 s old."
    ),
]
ScheduleName = Annotated[
    str,
    Meta(
        pattern=L.SCHEDULE_NAME_PATTERN,
        description=L.SCHEDULE_NAME_RULE,
        extra={"rule": L.SCHEDULE_NAME_RULE},
    ),
]
SCHEDULE_ARGUMENTS = "The arguments of every job it creates."
PAUSED = "A paused schedule creates no jobs."

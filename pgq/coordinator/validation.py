"""Request parsing for the HTTP API: bodies, query strings and path parameters.

Every refusal is a 400 whose message names the field (``priority: must be an integer
between -32768 and 32767``; in a batch, ``jobs[3].priority: …``), except a body that is
too big (413), not JSON (415) or not parseable (400 ``invalid_json``). The rules ("HTTP
strictness" in DESIGN): unknown fields are refused, ``null`` is never a stand-in for an
absent field, booleans are not integers, integers are not strings, ``run_at`` excludes
``delay_seconds``, numbers stay inside the ranges the schema enforces, and JSON values
(``arguments``, ``result``, ``error``) hold no NUL character (jsonb cannot store one) and
nest at most ``MAX_JSON_DEPTH`` levels (so any stored value can be answered back).

The parsers return plain keyword dicts for the query layer; handlers add no checks of
their own. ``pgq/coordinator/openapi.py`` describes the same rules as JSON Schema.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import orjson
from aiohttp import web

from ..errors import JobNotFound
from ..jobs import STATUSES
from .errors import InvalidField, InvalidJson, PayloadTooLarge, UnsupportedMediaType

#: How deep ``arguments``, ``result`` and ``error`` may nest (orjson answers up to 254).
MAX_JSON_DEPTH: Final = 64
MAX_BATCH_JOBS: Final = 10_000
MAX_DEPENDS_ON: Final = 1_000
MAX_CLAIM_JOBS: Final = 1_000
MAX_FILTER_ITEMS: Final = 100
MAX_WAIT_SECONDS: Final = 60
#: ``retry_delay_seconds`` on a failed completion at most a day.
MAX_RETRY_DELAY_SECONDS: Final = 86_400
#: ``delay_seconds`` at most ten years.
MAX_DELAY_SECONDS: Final = 10 * 365 * 86_400
MAX_LIST_LIMIT: Final = 1_000
DEFAULT_LIST_LIMIT: Final = 100
INT32_MAX: Final = 2**31 - 1
BIGINT_MAX: Final = 2**63 - 1
RUN_AT_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
RUN_AT_MAX: Final = datetime(9999, 12, 31, tzinfo=UTC)

TYPE_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,128}$"
QUEUE_PATTERN: Final = r"^[a-z][a-z0-9_]{0,47}$"
_TYPE_RE = re.compile(TYPE_PATTERN, re.ASCII)
_QUEUE_RE = re.compile(QUEUE_PATTERN, re.ASCII)
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$",
    re.ASCII,
)
_DIGITS = re.compile(r"^[0-9]+$", re.ASCII)
_NUMBER = re.compile(r"^[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$", re.ASCII)

_MISSING: Final = object()

NEW_JOB_FIELDS: Final = (
    "type",
    "arguments",
    "queue",
    "priority",
    "run_at",
    "delay_seconds",
    "max_attempts",
    "timeout_seconds",
    "idempotency_key",
    "depends_on",
)


# -- the body ---------------------------------------------------------------------------


def _check_content_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        sent = request.headers.get("Content-Type")
        raise UnsupportedMediaType(
            "the request body must be JSON sent with Content-Type: application/json"
            + (f" (got {sent[:100]!r})" if sent else " (no Content-Type was sent)")
        )
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"JSON must be UTF-8, not charset={charset[:40]!r}")


async def read_body(request: web.Request, limit: int, *, optional: bool = False) -> Body | None:
    """The request's JSON object, or None when ``optional`` and no body was sent.

    Checks, in order: media type (415), declared then actual size (413), JSON syntax and
    that the top level is an object (400).
    """
    # The media type matters only when there is a body: some clients label an empty POST
    # application/octet-stream.
    if request.body_exists:
        _check_content_type(request)
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the request body is {length} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if optional:
            return None
        raise InvalidJson("the request body is empty: send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidJson(f"the request body must be a JSON object, not {_json_type(data)}")
    # Walking every JSON value costs time; a body with no "\u0000" escape and fewer
    # brackets than the depth limit cannot break either rule, so skip the walk.
    deep = b"\\u0000" in raw or raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH
    return Body(data, deep_check=deep)


class Body:
    """A JSON object being parsed: fields are taken one by one, leftovers are refused."""

    def __init__(self, data: dict[str, Any], *, prefix: str = "", deep_check: bool = True) -> None:
        self.data = data
        self.prefix = prefix
        self.deep_check = deep_check
        self._taken: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def error(self, key: str, problem: str) -> InvalidField:
        return InvalidField(self.name(key), problem)

    def has(self, key: str) -> bool:
        return key in self.data

    def take(self, key: str, *, nullable: bool = False) -> Any:
        """The field's value, ``_MISSING`` when absent; ``null`` refused unless ``nullable``."""
        self._taken.add(key)
        value = self.data.get(key, _MISSING)
        if value is None and not nullable:
            raise self.error(key, "must not be null (leave the field out to use its default)")
        return value

    def finish(self, known: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in self._taken:
                raise InvalidField(
                    self.name(_printable(key)),
                    f"unknown field; known fields are {', '.join(known)}",
                )

    # -- typed getters ---------------------------------------------------------------

    def integer(self, key: str, lo: int, hi: int, default: Any = _MISSING) -> Any:
        value = self.take(key)
        if value is _MISSING:
            return default
        return check_integer(value, self.name(key), lo, hi)

    def number(self, key: str, lo: float, hi: float) -> Any:
        value = self.take(key)
        if value is _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {_json_type(value)}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise self.error(key, f"must be a number between {lo:g} and {hi:g}")
        return value

    def boolean(self, key: str) -> Any:
        value = self.take(key)
        if value is not _MISSING and not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_json_type(value)}")
        return value

    def string(
        self,
        key: str,
        *,
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
        max_length: int = 255,
    ) -> Any:
        value = self.take(key)
        if value is _MISSING:
            return value
        return check_string(
            value, self.name(key), pattern=pattern, rule=rule, max_length=max_length
        )

    def json(self, key: str, *, nullable: bool = False) -> Any:
        value = self.take(key, nullable=nullable)
        if value is not _MISSING and self.deep_check:
            check_json(value, self.name(key))
        return value

    def obj(self, key: str) -> Any:
        value = self.take(key)
        if value is _MISSING:
            return value
        if not isinstance(value, dict):
            raise self.error(key, f"must be a JSON object, not {_json_type(value)}")
        if self.deep_check:
            check_json(value, self.name(key))
        return value

    def array(self, key: str, *, min_items: int, max_items: int) -> Any:
        value = self.take(key)
        if value is _MISSING:
            return value
        if not isinstance(value, list):
            raise self.error(key, f"must be an array, not {_json_type(value)}")
        if not min_items <= len(value) <= max_items:
            raise self.error(key, f"must have {min_items} to {max_items} items, not {len(value)}")
        return value


def check_integer(value: Any, field: str, lo: int, hi: int) -> int:
    """An integer in lo..hi. As in JSON Schema, 3.0 is the integer 3; true is not 1."""
    if isinstance(value, float) and value.is_integer():
        if not lo <= value <= hi:
            raise InvalidField(field, f"must be an integer between {lo} and {hi}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(field, f"must be an integer, not {_json_type(value)}")
    if not lo <= value <= hi:
        raise InvalidField(field, f"must be an integer between {lo} and {hi}")
    return value


def check_string(
    value: Any,
    field: str,
    *,
    pattern: re.Pattern[str] | None = None,
    rule: str = "",
    max_length: int = 255,
) -> str:
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string, not {_json_type(value)}")
    if pattern is not None:
        if not pattern.match(value):
            shown = _printable(value[:60]) + ("…" if len(value) > 60 else "")
            raise InvalidField(field, f"{shown!r} is invalid: {rule}")
        return value
    if not 1 <= len(value) <= max_length:
        raise InvalidField(field, f"must be 1 to {max_length} characters, not {len(value)}")
    if "\x00" in value:
        raise InvalidField(field, "must not contain a NUL character (\\u0000)")
    return value


def check_json(value: Any, field: str) -> None:
    """Refuse NUL characters (in strings and keys) and nesting deeper than MAX_JSON_DEPTH."""
    stack: list[tuple[Any, int, str]] = [(value, 1, field)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidField(path, "must not contain a NUL character (\\u0000)")
        elif isinstance(item, dict):
            if depth > MAX_JSON_DEPTH:
                raise InvalidField(field, f"nests deeper than {MAX_JSON_DEPTH} levels")
            for k, v in item.items():
                if "\x00" in k:
                    raise InvalidField(path, "has a key with a NUL character (\\u0000)")
                if isinstance(v, dict | list | str):
                    stack.append((v, depth + 1, f"{path}.{k}"))
        elif isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                raise InvalidField(field, f"nests deeper than {MAX_JSON_DEPTH} levels")
            for i, v in enumerate(item):
                if isinstance(v, dict | list | str):
                    stack.append((v, depth + 1, f"{path}[{i}]"))


def parse_rfc3339(value: Any, field: str) -> datetime:
    """An RFC 3339 date-time with an offset, between 1970 and 9999 (UTC)."""
    if not isinstance(value, str):
        raise InvalidField(field, f"must be an RFC 3339 date-time string, not {_json_type(value)}")
    m = _RFC3339.match(value)
    problem = "must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T12:00:00Z"
    if m is None:
        raise InvalidField(field, problem)
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    try:
        if z:
            tz = UTC
        else:
            if int(oh) > 23 or int(om) > 59:
                raise ValueError("offset out of range")
            offset = timedelta(hours=int(oh), minutes=int(om))
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((frac or "0")[:6].ljust(6, "0"))
        dt = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
    except (ValueError, OverflowError):
        raise InvalidField(field, problem + " (this one is not a valid date or time)") from None
    if not RUN_AT_MIN <= dt <= RUN_AT_MAX:
        raise InvalidField(field, "must be between 1970-01-01T00:00:00Z and 9999-12-31T00:00:00Z")
    return dt


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")[:80]


# -- endpoint bodies ----------------------------------------------------------------------


def parse_new_job(body: Body) -> dict[str, Any]:
    """``POST /jobs`` (and each element of ``/jobs/batch``) → ``queries.enqueue`` keywords."""
    job_type = body.take("type")
    if job_type is _MISSING:
        raise body.error("type", "is required")
    job_type = check_string(
        job_type,
        body.name("type"),
        pattern=_TYPE_RE,
        rule="use 1-128 characters of A-Z a-z 0-9 _ . : -",
    )
    out: dict[str, Any] = {"job_type": job_type}
    if (args := body.obj("arguments")) is not _MISSING:
        out["args"] = args
    queue = body.string(
        "queue", pattern=_QUEUE_RE, rule="use a lowercase letter, then up to 47 of a-z 0-9 _"
    )
    if queue is not _MISSING:
        out["queue"] = queue
    if (priority := body.integer("priority", -32768, 32767)) is not _MISSING:
        out["priority"] = priority
    if body.has("run_at") and body.has("delay_seconds"):
        raise body.error("delay_seconds", "give run_at or delay_seconds, not both")
    run_at = body.take("run_at")
    if run_at is not _MISSING:
        out["run_at"] = parse_rfc3339(run_at, body.name("run_at"))
    if (delay := body.number("delay_seconds", 0, MAX_DELAY_SECONDS)) is not _MISSING:
        out["delay_seconds"] = float(delay)
    if (max_attempts := body.integer("max_attempts", 1, 1000)) is not _MISSING:
        out["max_attempts"] = max_attempts
    if (timeout := body.integer("timeout_seconds", 1, 86_400)) is not _MISSING:
        out["timeout_seconds"] = timeout
    if (key := body.string("idempotency_key", max_length=255)) is not _MISSING:
        out["idempotency_key"] = key
    deps = body.array("depends_on", min_items=0, max_items=MAX_DEPENDS_ON)
    if deps is not _MISSING:
        out["depends_on"] = [
            check_integer(d, f"{body.name('depends_on')}[{i}]", 1, BIGINT_MAX)
            for i, d in enumerate(deps)
        ]
    body.finish(NEW_JOB_FIELDS)
    return out


def parse_batch(body: Body) -> list[dict[str, Any]]:
    """``POST /jobs/batch`` → ``queries.enqueue_many`` dicts (HTTP ``arguments`` → ``args``)."""
    jobs = body.array("jobs", min_items=1, max_items=MAX_BATCH_JOBS)
    if jobs is _MISSING:
        raise body.error("jobs", "is required")
    body.finish(("jobs",))
    specs = []
    for i, item in enumerate(jobs):
        if not isinstance(item, dict):
            raise InvalidField(f"jobs[{i}]", f"must be a JSON object, not {_json_type(item)}")
        job = parse_new_job(Body(item, prefix=f"jobs[{i}].", deep_check=body.deep_check))
        spec: dict[str, Any] = {"type": job.pop("job_type")}
        if "run_at" in job:
            job["run_at"] = job["run_at"].isoformat()
        spec.update(job)
        specs.append(spec)
    return specs


def parse_claim(body: Body) -> dict[str, Any]:
    """``POST /jobs/claim`` → worker_id, max_jobs, queues, job_types, wait_seconds."""
    worker_id = body.string("worker_id", max_length=255)
    if worker_id is _MISSING:
        raise body.error("worker_id", "is required")
    out: dict[str, Any] = {
        "worker_id": worker_id,
        "max_jobs": body.integer("max_jobs", 1, MAX_CLAIM_JOBS, default=1),
        "queues": ["default"],
        "job_types": None,
        "wait_seconds": 0.0,
    }
    queues = body.array("queues", min_items=1, max_items=MAX_FILTER_ITEMS)
    if queues is not _MISSING:
        out["queues"] = sorted(
            {
                check_string(
                    q,
                    f"queues[{i}]",
                    pattern=_QUEUE_RE,
                    rule="use a lowercase letter, then up to 47 of a-z 0-9 _",
                )
                for i, q in enumerate(queues)
            }
        )
    types = body.array("types", min_items=1, max_items=MAX_FILTER_ITEMS)
    if types is not _MISSING:
        out["job_types"] = sorted(
            {
                check_string(
                    t, f"types[{i}]", pattern=_TYPE_RE, rule="use 1-128 of A-Z a-z 0-9 _ . : -"
                )
                for i, t in enumerate(types)
            }
        )
    if (wait := body.number("wait_seconds", 0, MAX_WAIT_SECONDS)) is not _MISSING:
        out["wait_seconds"] = float(wait)
    body.finish(("worker_id", "max_jobs", "queues", "types", "wait_seconds"))
    return out


def parse_complete(body: Body) -> dict[str, Any]:
    """``POST /jobs/{id}/complete`` → success, worker_id, attempt, result | error, retryable,
    retry_delay (seconds before the retry instead of the backoff; None: the backoff)."""
    worker_id = body.string("worker_id", max_length=255)
    if worker_id is _MISSING:
        raise body.error("worker_id", "is required")
    success = body.boolean("success")
    if success is _MISSING:
        raise body.error("success", "is required (true or false)")
    out: dict[str, Any] = {
        "worker_id": worker_id,
        "success": success,
        "attempt": None,
    }
    if (attempt := body.integer("attempt", 1, INT32_MAX)) is not _MISSING:
        out["attempt"] = attempt
    if success:
        for key in ("error", "retryable", "retry_delay_seconds"):
            if body.has(key):
                raise body.error(key, "is only allowed with success: false")
        result = body.json("result", nullable=True)
        out["result"] = None if result is _MISSING else result
    else:
        if body.has("result"):
            raise body.error("result", "is only allowed with success: true")
        out["error"] = _error_value(body, "error", default="failed")
        retryable = body.boolean("retryable")
        out["retryable"] = True if retryable is _MISSING else retryable
        delay = body.number("retry_delay_seconds", 0, MAX_RETRY_DELAY_SECONDS)
        out["retry_delay"] = None if delay is _MISSING else float(delay)
    body.finish(
        ("worker_id", "attempt", "success", "result", "error", "retryable", "retry_delay_seconds")
    )
    return out


def parse_heartbeat(body: Body) -> dict[str, Any]:
    """``POST /jobs/{id}/heartbeat`` → worker_id, attempt."""
    worker_id = body.string("worker_id", max_length=255)
    if worker_id is _MISSING:
        raise body.error("worker_id", "is required")
    attempt = body.integer("attempt", 1, INT32_MAX, default=None)
    body.finish(("worker_id", "attempt"))
    return {"worker_id": worker_id, "attempt": attempt}


def parse_release(body: Body) -> dict[str, Any]:
    """``POST /jobs/{id}/release`` → worker_id, attempt (both required: the release is
    fenced like complete), reason (a string or an object; None: "released by its runner")."""
    worker_id = body.string("worker_id", max_length=255)
    if worker_id is _MISSING:
        raise body.error("worker_id", "is required")
    attempt = body.integer("attempt", 1, INT32_MAX)
    if attempt is _MISSING:
        raise body.error("attempt", "is required (the attempt this worker holds)")
    reason = _error_value(body, "reason", default=None)
    body.finish(("worker_id", "attempt", "reason"))
    return {"worker_id": worker_id, "attempt": attempt, "reason": reason}


def _error_value(body: Body, key: str, *, default: Any) -> Any:
    """An error or reason field: a string (≤ 64 KiB) or a JSON object."""
    value = body.take(key)
    if value is _MISSING:
        return default
    if isinstance(value, str):
        check_string(value, body.name(key), max_length=65_536)
    elif isinstance(value, dict):
        if body.deep_check:
            check_json(value, body.name(key))
    else:
        raise body.error(key, f"must be a string or an object, not {_json_type(value)}")
    return value


def parse_retry(body: Body | None) -> int:
    """``POST /jobs/{id}/retry`` → extra_attempts (default 1); the body is optional."""
    if body is None:
        return 1
    extra = body.integer("extra_attempts", 1, 1000, default=1)
    body.finish(("extra_attempts",))
    return extra


# -- path and query -------------------------------------------------------------------


def job_id(request: web.Request) -> int:
    """The ``{id}`` of the path; an id no bigint can hold names no job (404)."""
    raw = request.match_info["id"].lstrip("0") or "0"
    if len(raw) > 19 or int(raw) > BIGINT_MAX:
        raise JobNotFound(f"job {raw[:40]} does not exist")
    return int(raw)


def _single_params(query: Mapping[str, str], known: tuple[str, ...]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for key, value in query.items():  # MultiDict: repeated keys appear repeatedly
        if key not in known:
            allowed = ", ".join(known) if known else "none"
            raise InvalidField(
                f"query parameter {_printable(key)}", f"unknown; allowed here: {allowed}"
            )
        if key in seen:
            raise InvalidField(f"query parameter {key}", "given more than once")
        seen[key] = value
    return seen


def no_query(request: web.Request) -> None:
    if request.rel_url.raw_query_string:  # usually empty: skip building the MultiDict
        _single_params(request.query, ())


def _query_int(params: dict[str, str], key: str, lo: int, hi: int) -> int | None:
    raw = params.get(key)
    if raw is None:
        return None
    if not _DIGITS.match(raw) or len(raw.lstrip("0")) > 19 or not lo <= int(raw) <= hi:
        raise InvalidField(f"query parameter {key}", f"must be an integer between {lo} and {hi}")
    return int(raw)


def parse_list_query(request: web.Request) -> dict[str, Any]:
    """``GET /jobs?status=&queue=&type=&limit=&after=``."""
    params = _single_params(request.query, ("status", "queue", "type", "limit", "after"))
    out: dict[str, Any] = {}
    if (status := params.get("status")) is not None:
        if status not in STATUSES:
            raise InvalidField(
                "query parameter status",
                f"{_printable(status[:40])!r} is not one of {', '.join(STATUSES)}",
            )
        out["status"] = status
    if (queue := params.get("queue")) is not None:
        out["queue"] = check_string(
            queue, "query parameter queue", pattern=_QUEUE_RE, rule="not a valid queue name"
        )
    if (job_type := params.get("type")) is not None:
        out["job_type"] = check_string(
            job_type, "query parameter type", pattern=_TYPE_RE, rule="not a valid job type"
        )
    limit = _query_int(params, "limit", 1, MAX_LIST_LIMIT)
    out["limit"] = DEFAULT_LIST_LIMIT if limit is None else limit
    out["after"] = _query_int(params, "after", 0, BIGINT_MAX)
    return out


def parse_wait_query(request: web.Request) -> float:
    """``GET /jobs/{id}?wait=SECONDS`` (0-60, decimals allowed); 0 when absent."""
    params = _single_params(request.query, ("wait",))
    raw = params.get("wait")
    if raw is None:
        return 0.0
    if not _NUMBER.match(raw) or len(raw) > 40 or float(raw) > MAX_WAIT_SECONDS:
        raise InvalidField(
            "query parameter wait", f"must be a number of seconds, 0 to {MAX_WAIT_SECONDS}"
        )
    return float(raw)

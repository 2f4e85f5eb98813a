"""What a request carries, read for the handlers: body, query string, path.

The body's rules are the wire types' (``pgq.wire``); this module adds the HTTP framing
(media type 415, size 413) and turns the decoded Structs into the query layer's keywords,
so handlers add no checks of their own.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from .. import wire
from ..errors import JobNotFound
from ..wire import UNSET
from .errors import PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .keys import SETTINGS

T = TypeVar("T", bound=msgspec.Struct)


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


async def read_raw(request: web.Request, limit: int) -> bytes | bytearray:
    """The request's body bytes: media type (415), then declared and actual size (413),
    within the read timeout (408: a client dribbling its body cannot hold the request)."""
    timeout = request.app[SETTINGS].read_timeout
    try:
        async with asyncio.timeout(timeout):
            return await _read_raw(request, limit)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout:g}s (PGQ_READ_TIMEOUT_SECONDS)"
        ) from None


async def _read_raw(request: web.Request, limit: int) -> bytes | bytearray:
    # The media type matters only when there is a body: some clients label an empty POST
    # application/octet-stream.
    if request.body_exists:
        _check_content_type(request)
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the request body is {length} bytes; the limit is {limit} bytes")
    # Chunks are appended to one buffer as they come (a list joined at the end would hold
    # the body twice); msgspec and the body checks read a bytearray as they read bytes.
    body = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        if len(body) + len(chunk) > limit:
            raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        body += chunk
    return body


async def body(request: web.Request, limit: int, type_: type[T]) -> T:
    """The body as a ``type_`` (``pgq.wire.request_body``), after the framing checks."""
    no_query(request)
    return wire.request_body(await read_raw(request, limit), type_)


async def optional_body(request: web.Request, limit: int, type_: type[T]) -> T:
    """As ``body``, but no body at all means every field's default."""
    no_query(request)
    raw = await read_raw(request, limit)
    return wire.request_body(raw, type_) if raw.strip() else type_()


def job_id(request: web.Request) -> int:
    """The ``{id}`` of the path; an id no bigint can hold names no job (404)."""
    raw = request.match_info["id"].lstrip("0") or "0"
    if len(raw) > 19 or int(raw) > wire.BIGINT_MAX:
        raise JobNotFound(f"job {raw[:40]} does not exist")
    return int(raw)


class _NoQuery(msgspec.Struct, forbid_unknown_fields=True):
    pass


def no_query(request: web.Request) -> None:
    if request.rel_url.raw_query_string:  # usually empty: skip building the MultiDict
        wire.query(request.query.items(), _NoQuery, prefix="query parameter ")


def list_query(request: web.Request) -> wire.ListQuery:
    """``GET /jobs?status=&queue=&type=&limit=&after=``."""
    return wire.query(request.query.items(), wire.ListQuery, prefix="query parameter ")


def wait_query(request: web.Request) -> float:
    """``GET /jobs/{id}?wait=SECONDS``; 0 when absent."""
    if not request.rel_url.raw_query_string:
        return 0.0
    return wire.query(request.query.items(), wire.WaitQuery, prefix="query parameter ").wait


# -- wire types → the query layer's keywords ----------------------------------------------


def enqueue_kwargs(job: wire.NewJob) -> dict[str, Any]:
    """A ``NewJob`` → ``queries.enqueue`` keywords (HTTP ``arguments`` → ``args``)."""
    out: dict[str, Any] = {
        "job_type": job.type,
        "queue": job.queue,
        "priority": job.priority,
        "max_attempts": job.max_attempts,
        "timeout_seconds": job.timeout_seconds,
    }
    if job.arguments is not UNSET:
        out["args"] = job.arguments
    if job.run_at is not UNSET:
        out["run_at"] = job.run_at
    if job.delay_seconds is not UNSET:
        out["delay_seconds"] = float(job.delay_seconds)
    if job.idempotency_key is not UNSET:
        out["idempotency_key"] = job.idempotency_key
    if job.depends_on is not UNSET:
        out["depends_on"] = job.depends_on
    if job.concurrency_key is not UNSET:
        out["concurrency_key"] = job.concurrency_key
    return out


def batch_specs(batch: wire.Batch) -> list[dict[str, Any]]:
    """A ``Batch`` → ``queries.enqueue_many`` dicts."""
    specs = []
    for job in batch.jobs:
        spec = enqueue_kwargs(job)
        spec["type"] = spec.pop("job_type")
        if "run_at" in spec:
            spec["run_at"] = spec["run_at"].isoformat()
        specs.append(spec)
    return specs


def claim_kwargs(claim: wire.Claim) -> dict[str, Any]:
    """A ``Claim`` → worker_id, max_jobs, queues, job_types, wait_seconds (the filters
    without repeats, sorted)."""
    return {
        "worker_id": claim.worker_id,
        "max_jobs": claim.max_jobs,
        "queues": ["default"] if claim.queues is UNSET else sorted(set(claim.queues)),
        "job_types": None if claim.types is UNSET else sorted(set(claim.types)),
        "wait_seconds": float(claim.wait_seconds),
    }


def unset_none(value: Any) -> Any:
    """``UNSET`` (left out) → None, the query layer's "not given"."""
    return None if value is UNSET else value

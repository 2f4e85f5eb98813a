"""The one error middleware: every refusal becomes ``{"error": {"code", "message"}}``.

Three kinds of refusal reach it:
  * pgq's own exceptions (``pgq.errors.PgqError`` and the HTTP ones below), raised by
    validation, by the auth middleware or by the query layer when PostgreSQL refuses a
    transition (PQ404 → 404, PQ409 → 409, PQ400 → 400, unreachable database → 503);
    a database error that reaches it untranslated goes through ``pgq.errors.translate``
    too, so a broken connection or a closed pool is a 503 wherever it surfaces;
  * aiohttp's ``HTTPException``s raised by the router (unknown route 404, wrong method 405);
  * anything else, which is a bug: it is logged with its traceback and answered with a
    bare 500 that carries no detail.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from ..errors import InvalidField, InvalidJson, PgqError, Unencodable, translate
from ..logs import log_event
from .keys import REQUEST_ID

log = logging.getLogger("pgq.coordinator")

__all__ = [
    "BadHost",
    "Forbidden",
    "InvalidField",
    "InvalidJson",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "Unencodable",
    "UnsupportedMediaType",
]


class Unauthorized(PgqError):
    """A valid bearer token is required: send `Authorization: Bearer <token>`."""

    http_status = 401
    code = "unauthorized"


class Forbidden(PgqError):
    """This token's scope does not allow the request."""

    http_status = 403
    code = "forbidden"


class BadHost(PgqError):
    """Without tokens, only requests addressed to a loopback name or address are served."""

    http_status = 400
    code = "bad_host"


class RequestTimeout(PgqError):
    """The request body did not arrive in time."""

    http_status = 408
    code = "request_timeout"


class PayloadTooLarge(PgqError):
    """The request body is over the limit."""

    http_status = 413
    code = "payload_too_large"


class UnsupportedMediaType(PgqError):
    """The request body must be JSON, sent with `Content-Type: application/json`."""

    http_status = 415
    code = "unsupported_media_type"


#: Seconds a client should wait after a 503 (the database is away or busy): pgq itself
#: looks for the database again about once a second.
RETRY_AFTER = "1"

#: aiohttp's own HTTP errors (router, server) → our error code.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def dumps(data: Any) -> bytes:
    """orjson with RFC 3339 UTC times (``...Z``).

    orjson encodes at most 254 nested arrays/objects, and PostgreSQL stores deeper ones
    (a result written from psql): such a value, wherever it sits in an answer (a job's
    ``result`` in a list, say), is replaced by an ``{"unencodable": …}`` marker saying so,
    and the rest of the answer is served. What still cannot be encoded is a clear 422."""
    try:
        return orjson.dumps(data, option=orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError:
        pass
    try:
        return orjson.dumps(_within_depth(data, 0), option=orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError as exc:
        raise Unencodable(f"the answer cannot be encoded as JSON ({exc})") from None


#: The deepest nesting orjson encodes.
_MAX_DEPTH = 254
_TOO_DEEP = {
    "unencodable": f"nested deeper than {_MAX_DEPTH} levels, more than the HTTP API encodes; "
    "read it with SQL (SELECT result, args, errors FROM pgq.jobs WHERE id = …)"
}


def _depth(value: Any) -> int:
    """How many arrays/objects deep ``value`` nests (iteratively: it may be very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _within_depth(value: Any, at: int) -> Any:
    """``value`` (found ``at`` levels deep) with each part too deep to encode replaced:
    objects and lists of objects (an answer, its ``jobs``, a job) are opened, any other
    value too deep is replaced whole."""
    if not isinstance(value, dict | list | tuple) or at + _depth(value) <= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _within_depth(v, at + 1) for k, v in value.items()}
    if all(isinstance(v, dict) for v in value):
        return [_within_depth(v, at + 1) for v in value]
    return _TOO_DEEP


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_bytes_response(data, dumps=dumps, status=status, headers=headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def _http_exception_response(exc: web.HTTPException, request: web.Request) -> web.Response:
    status = exc.status
    code = _HTTP_CODES.get(status, "http_error")
    headers: dict[str, str] = {}
    if status == 404:
        message = f"no such route: {request.method} {request.path}"
    elif status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        message = f"method {request.method} is not allowed on {request.path}" + (
            f"; use {', '.join(allowed)}" if allowed else ""
        )
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    else:
        message = exc.reason or exc.text or "request refused"
    return error_response(status, code, message, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_exception_response(exc, request)
    except Exception as raised:
        error = translate(raised)
        if not isinstance(error, PgqError):
            log_event(
                log,
                "http.error",
                f"unhandled error while answering {request.method} {request.path}",
                level=logging.ERROR,
                exc_info=True,
                request_id=request.get(REQUEST_ID),
            )
            return error_response(
                500, "internal_error", "the coordinator failed to answer; see its logs"
            )
        headers = {"WWW-Authenticate": "Bearer"} if error.http_status == 401 else None
        message = error.message
        if error.http_status >= 500:
            log_event(
                log,
                "http.unavailable",
                error.message,
                level=logging.WARNING,
                path=request.path,
                request_id=request.get(REQUEST_ID),
            )
            # The detail (a driver error naming the database's address) stays in the log;
            # the client learns what happened and when to come back.
            message = " ".join((type(error).__doc__ or "").split()) or "try again later"
            headers = {"Retry-After": RETRY_AFTER}
        return error_response(error.http_status, error.code, message, headers)

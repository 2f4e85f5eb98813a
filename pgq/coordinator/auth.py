"""Bearer-token authentication of the HTTP API and the dashboard's data.

With tokens configured (``PGQ_API_TOKENS``), every path under ``/jobs``, ``/queues``,
``/schedules``, ``/events`` and ``/ui/api`` needs ``Authorization: Bearer <token>``,
checked before routing so an unauthenticated client learns nothing about which routes
exist. ``/health``, ``/metrics`` and
``/openapi.json`` stay open. Each configured token is compared with
``hmac.compare_digest`` (all of them, always), so timing reveals nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .errors import Unauthorized

_ROOTS = ("/jobs", "/queues", "/schedules", "/events")
# /ui itself is a page without data (a browser cannot send a bearer token when it
# navigates); its reads under /ui/api/ are protected like /jobs.
_PREFIXES = (*(root + "/" for root in _ROOTS), "/ui/api/")


def protected(path: str) -> bool:
    return path in _ROOTS or path.startswith(_PREFIXES)


def token_ok(header: str | None, tokens: Sequence[bytes]) -> bool:
    if not header:
        return False
    scheme, _, offered = header.partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        return False
    candidate = offered.strip().encode("utf-8", "surrogateescape")
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(candidate, token)
    return ok


def make_auth_middleware(tokens: Sequence[str]) -> Any:
    encoded = [t.encode() for t in tokens]

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if encoded and protected(request.path):
            header = request.headers.get("Authorization")
            if not token_ok(header, encoded):
                raise Unauthorized(
                    "a valid bearer token is required: send Authorization: Bearer <token>"
                    if not header
                    else "the bearer token is not valid"
                )
        return await handler(request)

    return auth_middleware

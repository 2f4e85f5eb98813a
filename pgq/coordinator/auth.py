"""Who may call what: bearer tokens with scopes, and the ``Host`` check without tokens.

Every route's required scope is declared once, in ``ROUTE_SCOPES`` (``None``: open to
anyone); the scopes are ``pgq.coordinator.tokens``'. A routed request whose route is
missing from the table needs ``admin`` (fail closed), and a test walks every route of the
app and of the OpenAPI document against the table, so a new route cannot go unscoped.

With tokens configured (``PGQ_API_TOKENS``, ``PGQ_API_TOKENS_FILE``):

* a protected path (``/jobs…``, ``/queues…``, ``/schedules…``, ``/events``, ``/ui/api/…``)
  without a valid ``Authorization: Bearer <token>`` is 401, even when no route matches,
  so an unauthenticated client learns nothing about which routes exist;
* a valid token whose scope does not hold the route's is 403 ``forbidden``.

The offered token is compared with every configured one through SHA-256 digests and
``hmac.compare_digest`` (all of them, always), so neither which token matched nor how
much of it matched shows in the time taken.

Without tokens the coordinator listens on loopback only, and answers only requests whose
``Host`` is a loopback name or address (400 otherwise): a web page cannot reach it through
a DNS name rebound to 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .errors import BadHost, Forbidden, Unauthorized
from .keys import TOKEN_SCOPE
from .tokens import HOLDS, Scope, parse

#: (method, route template) → the scope a token needs; None: open without a token.
ROUTE_SCOPES: dict[tuple[str, str], Scope | None] = {
    ("POST", "/jobs"): "producer",
    ("POST", "/jobs/batch"): "producer",
    ("GET", "/jobs"): "reader",
    ("GET", "/jobs/{id}"): "reader",
    ("GET", "/jobs/{id}/events"): "reader",
    ("POST", "/jobs/claim"): "worker",
    ("POST", "/jobs/complete"): "worker",
    ("POST", "/jobs/{id}/complete"): "worker",
    ("POST", "/jobs/{id}/heartbeat"): "worker",
    ("POST", "/jobs/{id}/release"): "worker",
    ("POST", "/jobs/{id}/progress"): "worker",
    ("DELETE", "/jobs/{id}"): "admin",
    ("POST", "/jobs/{id}/retry"): "admin",
    ("POST", "/jobs/retry"): "admin",
    ("POST", "/jobs/cancel"): "admin",
    ("GET", "/queues"): "reader",
    ("GET", "/queues/{queue}"): "reader",
    ("POST", "/queues/{queue}/pause"): "admin",
    ("POST", "/queues/{queue}/resume"): "admin",
    ("PUT", "/queues/{queue}/limits"): "admin",
    ("GET", "/schedules"): "reader",
    ("GET", "/schedules/{name}"): "reader",
    ("PUT", "/schedules/{name}"): "admin",
    ("DELETE", "/schedules/{name}"): "admin",
    ("GET", "/events"): "reader",
    # the dashboard's page and assets hold no data (a browser cannot send a bearer token
    # when it navigates); the page asks for a token and sends it with every data request
    ("GET", "/ui"): None,
    ("GET", "/ui/"): None,
    ("GET", "/ui/static/{name}"): None,
    ("GET", "/ui/api/session"): "reader",
    ("GET", "/ui/api/overview"): "reader",
    ("GET", "/ui/api/jobs/{id}/errors"): "reader",
    ("GET", "/health"): None,
    ("GET", "/livez"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/openapi.json"): None,
}

_PROTECTED_PREFIXES = ("/jobs", "/queues", "/schedules", "/events", "/ui/api")


def protected(path: str) -> bool:
    """Whether ``path`` needs a token even when no route matches it."""
    return any(path == p or path.startswith(p + "/") for p in _PROTECTED_PREFIXES)


def required_scope(request: web.Request) -> Scope | None:
    """The scope ``request``'s route needs (None: open); admin for a route not in the table."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None:  # no route matched: a 404 or 405 follows
        return "reader" if protected(request.path) else None
    return ROUTE_SCOPES.get((request.method, resource.canonical), "admin")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def scope_of(header: str | None, tokens: Sequence[tuple[Scope, bytes]]) -> Scope | None:
    """The scope of the token offered in an ``Authorization`` header, None if none is valid.

    ``tokens``: ``(scope, sha256 digest)`` pairs."""
    if not header:
        return None
    scheme, _, offered = header.partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        return None
    candidate = _digest(offered.strip())
    found: Scope | None = None
    for scope, digest in tokens:
        if hmac.compare_digest(candidate, digest):
            found = scope
    return found


def loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine: ``localhost`` (and ``*.localhost``,
    which browsers resolve to loopback themselves) or a loopback address, with any port."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:3001
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def make_auth_middleware(entries: Sequence[str]) -> Any:
    """The middleware for the configured token entries (``scope:token`` or bare)."""
    tokens = [(scope, _digest(token)) for scope, token in parse(entries)]

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not tokens:
            host = request.headers.get("Host")
            if host is not None and not loopback_host(host):
                raise BadHost(
                    f"Host {host[:100]!r} is not a loopback name or address: a coordinator "
                    "without PGQ_API_TOKENS serves only requests addressed to localhost"
                )
            return await handler(request)
        needed = required_scope(request)
        if needed is None:
            return await handler(request)
        header = request.headers.get("Authorization")
        scope = scope_of(header, tokens)
        if scope is None:
            raise Unauthorized(
                "a valid bearer token is required: send Authorization: Bearer <token>"
                if not header
                else "the bearer token is not valid"
            )
        if needed not in HOLDS[scope]:
            raise Forbidden(
                f"a {scope} token may not {request.method} {request.path}: "
                f"this needs a token with the {needed} scope"
            )
        request[TOKEN_SCOPE] = scope
        return await handler(request)

    return auth_middleware

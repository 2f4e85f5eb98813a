"""The web dashboard at ``/ui``: a static page (``static/``, shipped in the wheel, no build
step) that reads the HTTP API with the token the person gives it, follows ``GET /events``,
and two small reads of its own under ``/ui/api/`` (protected like ``/jobs``).

The page itself (HTML, CSS, JavaScript) holds no data and is served without a token: a
browser cannot send a bearer token when it navigates, so the page asks for one and keeps it
in ``sessionStorage`` for the tab.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .. import queries
from ..errors import JobNotFound
from . import params as p
from .errors import json_response
from .keys import POOL, SETTINGS, TOKEN_SCOPE
from .tokens import HOLDS, Scope

STATIC = Path(__file__).with_name("static")

#: The page's actions and the scope each needs (auth.ROUTE_SCOPES of the route it calls):
#: actions the token's scope does not hold are not shown (the server refuses them anyway).
_ACTIONS: dict[str, Scope] = {
    "retry": "admin",
    "cancel": "admin",
    "bulk": "admin",
    "queues": "admin",
    "schedules": "admin",
    "enqueue": "producer",
}


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "index.html", headers={"Cache-Control": "no-cache", **_SECURITY_HEADERS}
    )


_ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(
        STATIC / name,
        headers={"Content-Type": _ASSETS[name], "Cache-Control": "no-cache", **_SECURITY_HEADERS},
    )


async def redirect(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def session(request: web.Request) -> web.Response:
    """``GET /ui/api/session``: whether tokens are in use and what this token may do
    (without tokens, on loopback, everything)."""
    p.no_query(request)
    tokens = bool(request.app[SETTINGS].api_tokens)
    scope: Scope = request.get(TOKEN_SCOPE, "admin")
    served = {r.canonical for r in request.app.router.resources()}
    return json_response(
        {
            "tokens": tokens,
            "scope": scope,
            "can": [action for action, needs in _ACTIONS.items() if needs in HOLDS[scope]],
            # views that plug in when the coordinator serves their API
            "features": {name: f"/{name}" in served for name in ("queues", "schedules")},
        }
    )


async def overview(request: web.Request) -> web.Response:
    """``GET /ui/api/overview``: ``pgq.stats()`` and jobs finished per minute and status
    over the last hour (the charts), in one answer."""
    p.no_query(request)
    pool = request.app[POOL]
    stats = await queries.stats(pool)
    per_minute = await queries.finished_per_minute(pool, 60)
    return json_response({"stats": stats, "finished_per_minute": per_minute})


async def job_errors(request: web.Request) -> web.Response:
    """``GET /ui/api/jobs/{id}/errors``: every attempt's error (job JSON has the last)."""
    job_id = p.job_id(request)
    p.no_query(request)
    job = await queries.get_job(request.app[POOL], job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} does not exist")
    return json_response({"errors": job.errors})


# The page runs no inline script and loads nothing from elsewhere.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/ui", redirect, allow_head=False)
    r.add_get("/ui/", page, allow_head=False)
    r.add_get("/ui/api/session", session, allow_head=False)
    r.add_get("/ui/api/overview", overview, allow_head=False)
    r.add_get("/ui/api/jobs/{id}/errors", job_errors, allow_head=False)
    r.add_get("/ui/static/{name}", asset, allow_head=False)

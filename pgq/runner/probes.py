"""``pgq runner --health-port PORT``: the two probes of a runner process, over HTTP.

``GET /livez``   200 while the process serves (its event loop answers): liveness.
``GET /readyz``  (and ``/health``) 200 while the runner runs, is not draining, and its
                 source is connected (database mode: the LISTEN connection is up; HTTP
                 mode: the coordinator answered last time), else 503: readiness.

Both answer ``{"status": "ok"}`` or ``{"error": {"code", "message"}}`` and nothing else:
no worker id, no address, no counts, so the port may listen on every interface for the
kubelet without telling anyone anything.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .core import Runner

__all__ = ["ready", "start_probes"]

_OK = {"status": "ok"}


def ready(health: dict[str, Any]) -> str | None:
    """Why a runner with this ``Runner.health()`` is not ready, or None when it is."""
    if not health["running"]:
        return "the runner is not running yet"
    if health["stopping"]:
        return "the runner is stopping"
    source = health["source"] or {}
    if source.get("kind") == "database" and not source.get("listener_connected"):
        return "the database connection is down (reconnecting)"
    if source.get("kind") == "http" and not source.get("reachable"):
        return "the coordinator does not answer (retrying)"
    return None


def _app(runner: Runner) -> web.Application:
    async def livez(_request: web.Request) -> web.Response:
        return web.json_response(_OK)

    async def readyz(_request: web.Request) -> web.Response:
        reason = ready(runner.health())
        if reason is None:
            return web.json_response(_OK)
        return web.json_response(
            {"error": {"code": "not_ready", "message": reason}},
            status=503,
            headers={"Retry-After": "1"},
        )

    app = web.Application()
    app.router.add_get("/livez", livez, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/health", readyz, allow_head=False)
    return app


async def start_probes(runner: Runner, host: str, port: int) -> web.AppRunner:
    """Serve the probes of ``runner`` on ``host:port``; stop with ``.cleanup()``."""
    app_runner = web.AppRunner(_app(runner), access_log=None, handle_signals=False)
    await app_runner.setup()
    site = web.TCPSite(app_runner, host, port)
    try:
        await site.start()
    except BaseException:
        await app_runner.cleanup()
        raise
    return app_runner

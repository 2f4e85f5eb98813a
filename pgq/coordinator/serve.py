"""``serve``: run the coordinator until SIGTERM/SIGINT, then stop gracefully and return 0.

Runs on uvloop when it is installed (the ``bench`` extra), else on asyncio's own loop.
Refuses (exit status 2, one line on stderr): a non-loopback address without
``PGQ_API_TOKENS``, or with a token shorter than 16 characters; a port it cannot bind; a
database that refuses it (unknown database, login refused) or whose schema is not migrated
to this pgq's version.

A database that does not answer is not a refusal: the coordinator binds at once, answers
``/livez`` 200 and ``/health`` 503, and waits for the database as long as it takes (an
outage at start-up must not become a crash loop that outlasts it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import asyncpg
from aiohttp import web

from .. import db, migrations
from ..aio import stop_task
from ..backoff import reconnecting
from ..config import ConfigError
from ..errors import DatabaseUnavailable, MigrationError, translate
from ..logs import log_event
from . import tokens
from .access import quiet_malformed_http_errors
from .app import create_app
from .keys import LISTENER, WAITERS
from .settings import Settings

log = logging.getLogger("pgq.coordinator")

#: While the database does not answer at start-up, say so in the log this often.
_WAITING_LOG_EVERY = 30.0


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fail(message: str) -> int:
    print(f"pgq coordinator: {message}", file=sys.stderr)
    return 2


def serve(
    host: str,
    port: int,
    dsn: str,
    settings: Settings | None = None,
) -> int:
    """Serve the HTTP API on ``host:port`` for the database at ``dsn``; the exit status."""
    try:
        settings = settings or Settings.from_env()
    except ConfigError as exc:
        return _fail(str(exc))
    if not settings.api_tokens and not is_loopback(host):
        return _fail(
            f"refusing to listen on {host!r} without authentication: set PGQ_API_TOKENS "
            "(comma-separated bearer tokens), or bind a loopback address such as 127.0.0.1"
        )
    short = tokens.too_short(settings.api_tokens)
    if short and not is_loopback(host):
        return _fail(
            f"refusing to listen on {host!r} with short bearer tokens ({', '.join(short)}): "
            f"tokens must have at least {tokens.MIN_PUBLIC_LENGTH} characters beyond "
            "loopback (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return _run(_serve(host, port, dsn, settings))


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed (as ``pgq runner`` does): the same
    coordinator spends about a fifth less CPU per request on it than on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def check_database(dsn: str, timeout: float | None = None) -> None:
    """Wait for the database (up to ``timeout`` s; None: as long as it takes), then require
    an up-to-date schema.

    Raises DatabaseUnavailable (only with a ``timeout``), MigrationError, or the driver's
    error for a database that refuses us (unknown database, refused login).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    backoff = reconnecting()
    logged_at: float | None = None
    while True:
        try:
            conn = await db.connect(dsn, timeout=5.0 if timeout is None else min(5.0, timeout))
        except Exception as exc:
            translated = translate(exc)
            if not isinstance(translated, DatabaseUnavailable):
                raise
            delay = backoff.next()
            if deadline is not None and loop.time() + delay > deadline:
                raise translated from exc
            if logged_at is None or loop.time() - logged_at >= _WAITING_LOG_EVERY:
                logged_at = loop.time()
                log_event(
                    log,
                    "coordinator.waiting_for_database",
                    f"{translated}; serving /livez, /health answers 503 until it does",
                    level=logging.WARNING,
                )
            await asyncio.sleep(delay)
            continue
        try:
            await migrations.check_up_to_date(conn)
        finally:
            await conn.close()
        return


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    settings: Settings,
    *,
    ready_timeout: float = 10.0,
) -> tuple[web.AppRunner, web.TCPSite]:
    """Set the app up, wait up to ``ready_timeout`` s for its LISTEN connection (so the
    first /health is not a 503 for a listener still connecting), and listen. The caller
    stops it with ``runner.cleanup()``."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
        # A request's headers must arrive within read_timeout of the connection opening or
        # of the previous answer: aiohttp's keep-alive timer closes a connection that is
        # still waiting for a complete request line and headers when it fires.
        keepalive_timeout=settings.read_timeout,
        # after an answer to a request whose body was not read (a 408, a 413), the rest of
        # the body is read and dropped for this long before closing, not the default 10 s
        lingering_time=min(10.0, settings.read_timeout),
        # A client that leaves cancels its handler (disconnect.py decides what that means).
        handler_cancellation=True,
    )
    await runner.setup()
    if ready_timeout > 0:
        try:
            await app[LISTENER].wait_connected(ready_timeout)
        except TimeoutError:
            log_event(
                log,
                "coordinator.listener_not_ready",
                f"the LISTEN connection is not up after {ready_timeout:g}s; serving anyway "
                "(/health answers 503 until it is)",
                level=logging.WARNING,
            )
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


async def _serve(host: str, port: int, dsn: str, settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        quiet_malformed_http_errors()
        app = create_app(dsn, settings)
        try:
            # No wait for the LISTEN connection: /health says when it is up.
            runner, _site = await start_site(app, host, port, settings, ready_timeout=0)
        except OSError as exc:
            return _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        log_event(
            log,
            "coordinator.listening",
            f"pgq coordinator listening on http://{host}:{port}"
            + (" (bearer tokens required)" if settings.api_tokens else ""),
        )
        try:
            refusal = await _check_unless_stopped(dsn, stop)
            if refusal is not None:
                return _fail(refusal)
            await stop.wait()
            log_event(
                log,
                "coordinator.stopping",
                f"stopping: releasing {app[WAITERS].waiting} waiting request(s), "
                "finishing in-flight requests",
            )
        finally:
            await runner.cleanup()
        log_event(log, "coordinator.stopped", "pgq coordinator stopped")
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _check_unless_stopped(dsn: str, stop: asyncio.Event) -> str | None:
    """``check_database`` until it passes (None) or refuses (the reason), or until a stop
    request (None: stopping while the database is away is a clean exit)."""
    checking = asyncio.create_task(check_database(dsn))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([checking, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not checking.done():
        await stop_task(checking)  # bounded: a check that will not stop cannot hold the stop up
        return None
    try:
        checking.result()
    except MigrationError as exc:
        return str(exc)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        # a refused login, an unknown database, a malformed URL: say so, no traceback
        return f"cannot use the database: {exc}"
    return None

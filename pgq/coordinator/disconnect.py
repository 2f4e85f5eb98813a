"""What a client that disconnects mid-request does to its handler.

The server cancels a request's handler the moment its client goes away
(``handler_cancellation``, set by ``serve.start_site``), and this middleware decides what
that means. A long poll (a handler marked ``@parks``) ends at once: it would otherwise sit
parked, holding a waiter slot, until its deadline, for nobody. Every other handler is
shielded: it runs to its end as if the client were still there and its answer is
discarded, so a write a client started (an enqueue, a completion, a cancel) is never cut
off halfway because the client hung up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PARKS: set[Any] = set()


def parks(handler: Handler) -> Handler:
    """Mark ``handler`` as one that may wait long for nothing: cancelled when its client
    leaves (it must clean up in ``finally``)."""
    _PARKS.add(handler)
    return handler


@web.middleware
async def disconnect_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.match_info.handler in _PARKS:
        return await handler(request)
    return await asyncio.shield(handler(request))

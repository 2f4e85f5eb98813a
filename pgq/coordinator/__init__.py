"""The coordinator: pgq's HTTP API and lease-expiry monitor (``pgq coordinator``).

``create_app(dsn, settings)`` builds the aiohttp application; ``serve(host, port, dsn)``
runs it until SIGTERM or SIGINT and returns the process exit status.
"""

from .app import create_app
from .serve import serve
from .settings import Settings

__all__ = ["Settings", "create_app", "serve"]

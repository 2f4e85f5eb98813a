"""Configuration errors and the database URL; the variables themselves are in
:mod:`pgq.settings` (twelve-factor: the environment, which command-line flags override)."""

from __future__ import annotations

from . import settings
from .errors import PgqError


class ConfigError(PgqError):
    """The configuration is incomplete or inconsistent."""


def database_url(explicit: str | None = None) -> str:
    """The database to use: the flag, else ``PGQ_DATABASE_URL``, else ``DATABASE_URL``."""
    url = explicit or settings.read("PGQ_DATABASE_URL")
    if not url:
        raise ConfigError(
            "no database configured: pass --database-url or set PGQ_DATABASE_URL "
            "(e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
        )
    return url

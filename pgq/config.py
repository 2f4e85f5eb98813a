"""Configuration from the environment (twelve-factor); command-line flags override it."""

from __future__ import annotations

import os

from .errors import PgqError


class ConfigError(PgqError):
    """The configuration is incomplete or inconsistent."""


def database_url(explicit: str | None = None) -> str:
    """The database to use: the flag, else ``PGQ_DATABASE_URL``, else ``DATABASE_URL``."""
    url = explicit or os.environ.get("PGQ_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError(
            "no database configured: pass --database-url or set PGQ_DATABASE_URL "
            "(e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
        )
    return url


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment, with a clear error when it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A comma-separated setting, blanks dropped."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())

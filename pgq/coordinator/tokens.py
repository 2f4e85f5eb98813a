"""Bearer tokens and their scopes, as configured (``PGQ_API_TOKENS``, ``PGQ_API_TOKENS_FILE``).

An entry is ``scope:token`` or a bare ``token`` (which is ``admin``). The scopes:

  reader     every GET: jobs, queues, schedules, events, the dashboard's data
  producer   reader + ``POST /jobs``, ``POST /jobs/batch``
  worker     reader + claim, complete, heartbeat, release, progress
  admin      everything: cancel, retry, bulk actions, queues, schedules

An entry whose text before the first ``:`` is a plain lowercase word that is not a scope
(``reder:…``) is refused rather than taken as a bare admin token containing a colon: a
typo must not hand out admin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from ..config import ConfigError

Scope = Literal["reader", "producer", "worker", "admin"]
SCOPES: tuple[Scope, ...] = ("reader", "producer", "worker", "admin")

#: The scopes a token of each scope holds.
HOLDS: dict[Scope, frozenset[Scope]] = {
    "reader": frozenset({"reader"}),
    "producer": frozenset({"reader", "producer"}),
    "worker": frozenset({"reader", "worker"}),
    "admin": frozenset(SCOPES),
}

#: A token needs this many characters when the coordinator listens beyond loopback.
MIN_PUBLIC_LENGTH = 16

_WORD = re.compile(r"^[a-z]+$")


def parse(entries: Iterable[str]) -> tuple[tuple[Scope, str], ...]:
    """``(scope, token)`` per configured entry; ConfigError for an unknown scope or an
    empty token."""
    parsed: list[tuple[Scope, str]] = []
    for entry in entries:
        prefix, colon, rest = entry.partition(":")
        if colon and prefix in SCOPES:
            scope: Scope = prefix
            token = rest.strip()
        elif colon and _WORD.match(prefix):
            raise ConfigError(
                f"PGQ_API_TOKENS: unknown scope {prefix!r} (use {', '.join(SCOPES)}, "
                "or a bare token for admin)"
            )
        else:
            scope, token = "admin", entry.strip()
        if not token:
            raise ConfigError(f"PGQ_API_TOKENS: the {scope} entry has an empty token")
        parsed.append((scope, token))
    return tuple(parsed)


def read_file(path: str) -> tuple[str, ...]:
    """The entries of a token file: one per line; blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"PGQ_API_TOKENS_FILE: cannot read {path}: {exc}") from None
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def too_short(entries: Iterable[str]) -> list[Scope]:
    """The scopes of tokens shorter than ``MIN_PUBLIC_LENGTH`` (never the tokens)."""
    return [scope for scope, token in parse(entries) if len(token) < MIN_PUBLIC_LENGTH]

"""Retention, run leaderlessly: runners (on their safety re-check) and coordinators (in
the lease monitor) each call :func:`prune_batch`; ``pgq.prune_expired`` skips the rows
another caller is deleting, so any number of them can run at once."""

from __future__ import annotations

import logging
from typing import Any

from . import queries
from .logs import log_event

__all__ = ["PRUNE_BATCH", "prune_batch"]

#: Rows per batch (pgq.prune_expired's maximum): one short transaction each.
PRUNE_BATCH = 10_000


async def prune_batch(db: queries.Executor, log: logging.Logger, **fields: Any) -> dict[str, int]:
    """Delete one batch of finished jobs past their retention and log it as
    ``retention.pruned`` (with ``fields``); returns the rows deleted per status. A batch
    that deleted ``PRUNE_BATCH`` rows means more are waiting."""
    pruned = await queries.prune_expired(db, PRUNE_BATCH)
    if pruned:
        log_event(
            log,
            "retention.pruned",
            "deleted finished jobs past their retention: "
            + ", ".join(f"{n} {status}" for status, n in sorted(pruned.items())),
            **fields,
        )
    return pruned

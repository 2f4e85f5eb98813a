"""The coordinator's settings, read from the environment (twelve-factor)."""

from __future__ import annotations

import dataclasses

from .. import settings
from ..config import ConfigError
from ..wire import MAX_WAIT_SECONDS
from . import tokens


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a coordinator process may be told, besides where it listens and its database.

    ``api_tokens``: the bearer tokens accepted, each ``scope:token`` or a bare token (admin)
    (``PGQ_API_TOKENS``, comma-separated, plus the lines of ``PGQ_API_TOKENS_FILE``; see
    ``tokens``); empty means no authentication, allowed only on a loopback address.
    ``max_body_bytes`` / ``max_batch_body_bytes``: request body limits (``PGQ_MAX_BODY_BYTES``,
    1 MiB; ``PGQ_MAX_BATCH_BODY_BYTES``, 32 MiB, for ``POST /jobs/batch``).
    ``max_wait_seconds``: how long one long-poll is held at most (``PGQ_MAX_WAIT_SECONDS``,
    default and maximum 60). Requests may ask for up to 60 s; a lower cap answers earlier with
    the usual "nothing yet" result, for proxies whose idle timeout is shorter.
    ``lease_recheck_seconds``: the lease monitor re-reads the earliest lease at least this often.
    ``shutdown_timeout``: how long in-flight requests may take to finish after SIGTERM.
    ``pool_max_size``: database connections per coordinator (``PGQ_POOL_SIZE``, 20).
    ``statement_timeout`` / ``lock_timeout``: PostgreSQL's, on every pool connection
    (``PGQ_STATEMENT_TIMEOUT_SECONDS``, 30; ``PGQ_LOCK_TIMEOUT_SECONDS``, 5; 0: none).
    ``acquire_timeout``: how long a request waits for a free pool connection
    (``PGQ_ACQUIRE_TIMEOUT_SECONDS``, 5). Past any of them the request answers 503 with
    ``Retry-After``. Long polls hold no connection while they wait, so none of these cuts
    them short.
    ``enqueue_batch_max``: how many ``POST /jobs`` requests may share one transaction
    (``PGQ_ENQUEUE_BATCH_MAX``, 256; 1 gives every request its own, see ``batcher``).
    ``enqueue_flushes``: how many of those shared transactions may be in flight at once
    (default 1, group commit: while one commits, the next batch gathers).
    ``metrics_lag_seconds``: job metrics count jobs finished up to this long ago (see
    ``pgq.metrics``).
    ``metrics_max_types``: job types with a ``type`` label of their own
    (``PGQ_METRICS_MAX_TYPES``, 100; the rest count as ``other``).
    ``metrics_max_queues``: likewise, queues with a ``queue`` label of their own
    (``PGQ_METRICS_MAX_QUEUES``, 100).
    ``metrics_cache_seconds``: ``/metrics`` is collected and rendered at most this often.
    ``list_max_bytes``: a ``GET /jobs`` answer stops early once its jobs' payloads add up
    to this (``PGQ_LIST_MAX_BYTES``, 8 MiB; ``next`` says where to go on).
    ``max_waiters``: requests parked in long polls at once (``PGQ_MAX_WAITERS``, 10,000);
    past it a new long poll gets 503 with ``Retry-After``.
    ``read_timeout``: a request's headers must arrive within this many seconds of the
    connection opening (or of the previous answer on a kept-alive connection, which is also
    how long an idle one stays open), and its body within as many again
    (``PGQ_READ_TIMEOUT_SECONDS``, 30).
    """

    api_tokens: tuple[str, ...] = settings.BY_NAME["PGQ_API_TOKENS"].default
    max_body_bytes: int = settings.BY_NAME["PGQ_MAX_BODY_BYTES"].default
    max_batch_body_bytes: int = settings.BY_NAME["PGQ_MAX_BATCH_BODY_BYTES"].default
    max_wait_seconds: float = settings.BY_NAME["PGQ_MAX_WAIT_SECONDS"].default
    lease_recheck_seconds: float = 5.0
    shutdown_timeout: float = 30.0
    pool_max_size: int = settings.BY_NAME["PGQ_POOL_SIZE"].default
    statement_timeout: float = settings.BY_NAME["PGQ_STATEMENT_TIMEOUT_SECONDS"].default
    lock_timeout: float = settings.BY_NAME["PGQ_LOCK_TIMEOUT_SECONDS"].default
    acquire_timeout: float = settings.BY_NAME["PGQ_ACQUIRE_TIMEOUT_SECONDS"].default
    enqueue_batch_max: int = settings.BY_NAME["PGQ_ENQUEUE_BATCH_MAX"].default
    enqueue_flushes: int = 1
    metrics_lag_seconds: float = 2.0
    metrics_max_types: int = settings.BY_NAME["PGQ_METRICS_MAX_TYPES"].default
    metrics_max_queues: int = settings.BY_NAME["PGQ_METRICS_MAX_QUEUES"].default
    metrics_cache_seconds: float = 1.0
    max_waiters: int = settings.BY_NAME["PGQ_MAX_WAITERS"].default
    list_max_bytes: int = settings.BY_NAME["PGQ_LIST_MAX_BYTES"].default
    read_timeout: float = settings.BY_NAME["PGQ_READ_TIMEOUT_SECONDS"].default

    def __post_init__(self) -> None:
        tokens.parse(self.api_tokens)  # a bad scope is refused at start-up
        if self.max_body_bytes < 1 or self.max_batch_body_bytes < 1:
            raise ConfigError("body limits must be positive numbers of bytes")
        if not 0 <= self.max_wait_seconds <= MAX_WAIT_SECONDS:
            raise ConfigError(f"PGQ_MAX_WAIT_SECONDS must be between 0 and {MAX_WAIT_SECONDS}")
        if self.pool_max_size < 1:
            raise ConfigError("PGQ_POOL_SIZE must be at least 1")
        if self.statement_timeout < 0 or self.lock_timeout < 0:
            raise ConfigError("statement and lock timeouts must be 0 (none) or more seconds")
        if self.acquire_timeout <= 0:
            raise ConfigError("PGQ_ACQUIRE_TIMEOUT_SECONDS must be positive")
        if not 1 <= self.enqueue_batch_max <= 10_000:
            raise ConfigError("PGQ_ENQUEUE_BATCH_MAX must be between 1 and 10000")
        if self.enqueue_flushes < 1:
            raise ConfigError("the number of enqueue flushes in flight must be at least 1")
        if self.metrics_max_types < 0:
            raise ConfigError("PGQ_METRICS_MAX_TYPES must be 0 or more")
        if self.metrics_max_queues < 0:
            raise ConfigError("PGQ_METRICS_MAX_QUEUES must be 0 or more")
        if self.list_max_bytes < 1:
            raise ConfigError("PGQ_LIST_MAX_BYTES must be positive")
        if self.max_waiters < 0:
            raise ConfigError("PGQ_MAX_WAITERS must be 0 or more")
        if self.read_timeout <= 0:
            raise ConfigError("PGQ_READ_TIMEOUT_SECONDS must be positive")
        if self.lease_recheck_seconds <= 0:
            raise ConfigError("the lease re-check interval must be positive")

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            api_tokens=settings.read("PGQ_API_TOKENS") + _token_file(),
            max_body_bytes=settings.read("PGQ_MAX_BODY_BYTES"),
            max_batch_body_bytes=settings.read("PGQ_MAX_BATCH_BODY_BYTES"),
            max_wait_seconds=settings.read("PGQ_MAX_WAIT_SECONDS"),
            pool_max_size=settings.read("PGQ_POOL_SIZE"),
            statement_timeout=settings.read("PGQ_STATEMENT_TIMEOUT_SECONDS"),
            lock_timeout=settings.read("PGQ_LOCK_TIMEOUT_SECONDS"),
            acquire_timeout=settings.read("PGQ_ACQUIRE_TIMEOUT_SECONDS"),
            enqueue_batch_max=settings.read("PGQ_ENQUEUE_BATCH_MAX"),
            metrics_max_types=settings.read("PGQ_METRICS_MAX_TYPES"),
            metrics_max_queues=settings.read("PGQ_METRICS_MAX_QUEUES"),
            max_waiters=settings.read("PGQ_MAX_WAITERS"),
            list_max_bytes=settings.read("PGQ_LIST_MAX_BYTES"),
            read_timeout=settings.read("PGQ_READ_TIMEOUT_SECONDS"),
        )


def _token_file() -> tuple[str, ...]:
    path = settings.read("PGQ_API_TOKENS_FILE")
    return tokens.read_file(path) if path else ()

"""Name rules and numeric limits of the wire format: the one place Python states them.

The wire types (``pgq.wire.fields``, ``requests``, ``answers``), hence the coordinator's
validation and its OpenAPI document, the HTTP runner and the runner's own checks all take
these values from here.
SQL keeps its own CHECKs and function checks as the last line of defence
(``sql/``: the same numbers, stated again because the database trusts no client).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

#: Queue names: also the NOTIFY channel suffix (``pgq_<queue>``), hence short and lowercase.
QUEUE_PATTERN: Final = r"^[a-z][a-z0-9_]{0,47}$"
QUEUE_RE: Final = re.compile(QUEUE_PATTERN, re.ASCII)
QUEUE_RULE: Final = "use a lowercase letter, then up to 47 of a-z 0-9 _"

#: Job type names, e.g. ``TMDB_SYNC`` or ``mail.send:v2``.
TYPE_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,128}$"
TYPE_RE: Final = re.compile(TYPE_PATTERN, re.ASCII)
TYPE_RULE: Final = "use 1-128 characters of A-Z a-z 0-9 _ . : -"

#: Schedule names, e.g. ``tmdb_sync.nightly``.
SCHEDULE_NAME_PATTERN: Final = r"^[a-z][a-z0-9_.:-]{0,127}$"
SCHEDULE_NAME_RE: Final = re.compile(SCHEDULE_NAME_PATTERN, re.ASCII)
SCHEDULE_NAME_RULE: Final = "use a lowercase letter then up to 127 of a-z 0-9 _ . : -"
#: How a schedule may catch up on slots missed while nothing ran.
CATCH_UP_MODES: Final = ("latest", "all", "none")

#: Free-text strings (worker ids, idempotency keys, error messages): jsonb and text
#: columns cannot store U+0000. Written so Python's ``re`` and ECMA-262 read it alike.
NO_NUL_PATTERN: Final = r"^[^\u0000]*$"
NO_NUL_RULE: Final = "must not contain a NUL character (\\u0000)"

#: Lease tokens: the UUID a claim minted for the job, in its canonical lowercase form.
LEASE_TOKEN_PATTERN: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
LEASE_TOKEN_RULE: Final = "must be the lease_token of the claim (a UUID, as the claim answered it)"

INT32_MAX: Final = 2**31 - 1
BIGINT_MAX: Final = 2**63 - 1

PRIORITY_MIN: Final = -32768
PRIORITY_MAX: Final = 32767
MAX_ATTEMPTS: Final = 1000
MAX_TIMEOUT_SECONDS: Final = 86_400
MAX_EXTRA_ATTEMPTS: Final = 1000
#: ``delay_seconds`` at most ten years.
MAX_DELAY_SECONDS: Final = 10 * 365 * 86_400
#: ``retry_delay_seconds`` on a failed completion at most a day.
MAX_RETRY_DELAY_SECONDS: Final = 86_400
RUN_AT_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
RUN_AT_MAX: Final = datetime(9999, 12, 31, tzinfo=UTC)

MAX_WORKER_ID_LENGTH: Final = 255
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
MAX_ERROR_MESSAGE_LENGTH: Final = 65_536
#: How deep ``arguments``, ``result`` and ``error`` may nest (orjson answers up to 254).
MAX_JSON_DEPTH: Final = 64

MAX_BATCH_JOBS: Final = 10_000
MAX_DEPENDS_ON: Final = 1_000
MAX_CLAIM_JOBS: Final = 1_000
MAX_COMPLETE_BATCH: Final = 1_000
#: Items in a claim's ``queues`` or ``types`` filter.
MAX_FILTER_ITEMS: Final = 100
#: The longest long poll (``wait_seconds`` of a claim, ``?wait=`` of a job read).
MAX_WAIT_SECONDS: Final = 60
MAX_LIST_LIMIT: Final = 1_000
MAX_CONCURRENCY_KEY_LENGTH: Final = 256
MAX_CRON_LENGTH: Final = 255
MAX_TIMEZONE_LENGTH: Final = 64
#: A progress report is stored only up to this many bytes of JSON (pgq.progress checks it).
MAX_PROGRESS_BYTES: Final = 8192
#: The longest ``spread_seconds`` of a bulk replay: a week.
MAX_SPREAD_SECONDS: Final = 7 * 86_400
#: The largest queue limit (concurrency, key_concurrency, burst; rate in claims per second).
MAX_QUEUE_LIMIT: Final = 1_000_000
#: The slowest rate, in claims per second: a slower bucket's next token would lie further
#: ahead than ``pgq.next_due`` can count.
MIN_RATE: Final = 0.001
DEFAULT_LIST_LIMIT: Final = 100

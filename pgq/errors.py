"""pgq's exceptions, and the one table that maps PostgreSQL SQLSTATEs onto them.

The SQL functions in ``sql/`` refuse a transition with a custom SQLSTATE (``PQ400``,
``PQ404``, ``PQ409``, and ``PQ419`` for a lease token that does not match). asyncpg
delivers those as ``UnknownPostgresError``; map them by ``sqlstate``, never by class or
message, so psql users, runners and the HTTP API all see the same refusal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg


class PgqError(Exception):
    """Something pgq refused or could not do."""

    #: HTTP status the coordinator answers with, and the error code it puts in the body.
    http_status = 500
    code = "internal_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgument(PgqError):
    """An argument was invalid."""

    http_status = 400
    code = "invalid_argument"


class LimitExceeded(InvalidArgument):
    """A value is beyond what PostgreSQL can store or process (SQLSTATE 54000, e.g. a
    jsonb value over its size limit): send less."""

    code = "limit_exceeded"


class InvalidJson(InvalidArgument):
    """The request body is not valid JSON."""

    code = "invalid_json"


class InvalidField(InvalidArgument):
    """A field of the request is invalid; the message names it."""

    code = "invalid_field"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class JobNotFound(PgqError):
    """No such job."""

    http_status = 404
    code = "job_not_found"


class TransitionNotAllowed(PgqError):
    """The job is not in a state that allows this (or is held by another worker or attempt)."""

    http_status = 409
    code = "transition_not_allowed"


class LeaseMismatch(TransitionNotAllowed):
    """The lease is not held: the lease token is wrong, or stale (the lease expired, or the
    job was finished, cancelled or claimed again)."""

    code = "lease_mismatch"


class Unencodable(PgqError):
    """A stored JSON value cannot be read or encoded as JSON here (a number beyond a double,
    nesting deeper than the JSON library follows, written from psql); read it with SQL."""

    http_status = 422
    code = "unencodable"


class DatabaseUnavailable(PgqError):
    """The database cannot be reached."""

    http_status = 503
    code = "database_unavailable"


class DatabaseBusy(DatabaseUnavailable):
    """The database did not finish in time (statement or lock timeout): try again later."""

    code = "database_busy"


class MigrationError(PgqError):
    """The database schema cannot be brought to this version of pgq."""


class PreBaselineDatabase(MigrationError):
    """The database was migrated by a pgq from before the migrations became one baseline."""


class ChangedMigration(MigrationError):
    """A migration recorded as applied differs from the file this pgq ships."""


class PermanentError(Exception):
    """Raise from a handler to fail the job at once, without retries: it goes to dead."""


class RetryLater(Exception):
    """Raise from a handler to retry the job after ``delay`` seconds instead of the backoff.

    The attempt still counts: a job out of attempts goes to dead.
    """

    def __init__(self, delay: float, message: str = "retry requested") -> None:
        super().__init__(message)
        self.delay = delay


#: SQLSTATE → exception class. PQxxx are pgq's own (sql/0002_transitions.sql); the others
#: are PostgreSQL's answers to values no validation upstream could catch in advance.
SQLSTATE_ERRORS: dict[str, type[PgqError]] = {
    "PQ400": InvalidArgument,
    "PQ404": JobNotFound,
    "PQ409": TransitionNotAllowed,
    "PQ419": LeaseMismatch,  # a PQ409 whose lease token did not match
    "22P02": InvalidArgument,  # invalid_text_representation: a value of the wrong type
    "22P05": InvalidArgument,  # untranslatable_character: \u0000 in jsonb
    "22021": InvalidArgument,  # character_not_in_repertoire: NUL byte in text
    "22003": InvalidArgument,  # numeric_value_out_of_range
    "22007": InvalidArgument,  # invalid_datetime_format
    "22008": InvalidArgument,  # datetime_field_overflow
    "22023": InvalidArgument,  # invalid_parameter_value
    "54001": InvalidArgument,  # statement_too_complex: JSON nested too deep
    "57014": DatabaseBusy,  # query_canceled: statement_timeout (or a cancel request)
    "55P03": DatabaseBusy,  # lock_not_available: lock_timeout
    "54000": LimitExceeded,  # program_limit_exceeded: e.g. a jsonb value over its size limit
}


def translate(exc: BaseException) -> BaseException:
    """The pgq exception for a database error, or ``exc`` itself when none applies.

    The one translation: ``queries`` applies it to every call, the coordinator's error
    middleware to whatever else reaches it, the client and the runner to their pool and
    connection set-up. A refusal by SQLSTATE (``SQLSTATE_ERRORS``); every way of having no
    usable connection (refused, reset, terminated, a closed or closing pool, asyncpg's
    protocol giving up mid-reply) → ``DatabaseUnavailable`` (503).
    """
    if isinstance(exc, PgqError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        cls = SQLSTATE_ERRORS.get(exc.sqlstate or "")
        if cls is not None:
            return cls(exc.args[0] if exc.args else None)
    if unreachable(exc):
        return DatabaseUnavailable(f"the database cannot be reached: {exc}")
    return exc


@contextlib.contextmanager
def translating() -> Iterator[None]:
    """Re-raise what ``translate`` maps as the pgq exception (``raise ... from exc``)."""
    try:
        yield
    except Exception as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means "no usable connection to the database", not "bad request"."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, _CLIENT_MISTAKES):
        return False
    return isinstance(exc, _UNREACHABLE)


#: Errors that mean "no usable connection to the database" rather than "bad request".
_UNREACHABLE = (
    OSError,  # refused, reset, DNS, timeouts (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, incl. ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminated by an administrator or a restart
    asyncpg.TooManyConnectionsError,
    # asyncpg's own state machine: "connection is closed", "pool is closing" / "closed",
    # a connection the server dropped mid-reply (seen during a restart). The connection
    # or the pool is gone, not the request bad.
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

#: asyncpg's client-side errors (subclasses of the above) that are about the data or the
#: setup, not a broken link: they stay what they are.
_CLIENT_MISTAKES = (
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
    asyncpg.exceptions.UnsupportedServerFeatureError,
)

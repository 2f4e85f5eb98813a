"""Where the tests' PostgreSQL comes from.

In order: ``PGQ_TEST_DATABASE_URL`` (start nothing); a testcontainers PostgreSQL when a
Docker daemon answers a 2-second ping; the embedded server (a throwaway temp cluster).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from pgq.devtools.embedded import EmbeddedPostgres

ENV_URL = "PGQ_TEST_DATABASE_URL"
CONTAINER_IMAGE = "postgres:18-alpine"
DOCKER_PING_TIMEOUT = 2.0


@dataclass(frozen=True)
class ServerInfo:
    """A PostgreSQL server for the test session.

    ``dsn`` is an admin DSN to a maintenance database (tests create their own databases
    from it); ``kind`` is ``"env"``, ``"testcontainers"`` or ``"embedded"``; ``server`` is
    the :class:`EmbeddedPostgres` when the server is embedded (for restart tests).
    """

    dsn: str
    kind: str
    server: EmbeddedPostgres | None = None


def docker_available(timeout: float = DOCKER_PING_TIMEOUT) -> bool:
    """Whether a Docker daemon answers a ping within ``timeout`` seconds.

    docker-py waits 60 s by default on an endpoint that accepts but never answers (a
    wedged daemon, a dead tunnel); without a daemon it fails in about a millisecond.
    """
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # DockerException, requests' ConnectionError, ...: all mean "no daemon"
        return False


@contextlib.contextmanager
def provide_postgres() -> Iterator[ServerInfo]:
    """Yield the session's PostgreSQL server, stopping whatever was started for it."""
    url = os.environ.get(ENV_URL)
    if url:
        _announce(f"{ENV_URL} ({_redact(url)})")
        yield ServerInfo(dsn=url, kind="env")
        return

    if docker_available():
        container = _start_container()
        if container is not None:
            try:
                dsn = container.get_connection_url(driver=None)
                _announce(f"testcontainers ({CONTAINER_IMAGE}, {_redact(dsn)})")
                yield ServerInfo(dsn=dsn, kind="testcontainers")
            finally:
                container.stop()
            return

    with EmbeddedPostgres() as server:
        _announce(f"embedded server ({server.dsn}, {server.data_dir})")
        yield ServerInfo(dsn=server.dsn, kind="embedded", server=server)


def _start_container():  # -> PostgresContainer | None; untyped: testcontainers is optional
    """Start a PostgreSQL container, or return None when testcontainers cannot."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        return None
    container = PostgresContainer(
        CONTAINER_IMAGE, username="postgres", password="postgres", dbname="postgres", driver=None
    )
    try:
        container.start()
    except Exception as exc:
        # A daemon that cannot pull images (no registry) must not fail the whole session.
        print(
            f"pgq tests: testcontainers failed ({exc!r}); using the embedded server",
            file=sys.stderr,
        )
        try:
            container.stop()  # it may have been created before the failure
        except Exception as stop_exc:
            print(f"pgq tests: could not remove the container: {stop_exc!r}", file=sys.stderr)
        return None
    return container


def _announce(what: str) -> None:
    print(f"pgq tests: PostgreSQL from {what}", file=sys.stderr)


def _redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()

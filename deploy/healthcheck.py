#!/usr/bin/env python3
"""Docker HEALTHCHECK for the pgq image: exit 0 when healthy, 1 when not.

One image runs three roles:

- ``pgq coordinator`` (and ``pgq dev``): healthy when ``GET /health`` on
  ``127.0.0.1:$PGQ_PORT`` answers 200. pgq answers 503 when the database or its
  LISTEN connection is down, which counts as unhealthy.
- ``pgq runner`` with ``--health-port`` or ``PGQ_HEALTH_PORT``: healthy when ``GET /readyz``
  on ``127.0.0.1`` at that port answers 200 (the runner runs and reaches its database
  or coordinator).
- ``pgq runner`` without it, and ``pgq migrate``, serve no HTTP. Docker only runs this
  check while the container's main process is alive, and an alive process is all
  that can be checked from outside, so they are reported healthy.

The role is read from PID 1's command line (the ENTRYPOINT is ``pgq``; under
``docker run --init`` PID 1 is the init process, whose arguments still name
the command). Standard library only: the image has no curl. ``PGQ_HOST`` and ``PGQ_PORT``
are read through ``pgq/settings.py`` (their defaults and parsing), loaded as a file: importing
the ``pgq`` package would load asyncpg and more, every ten seconds.

Kubernetes ignores Docker's HEALTHCHECK; the manifests in ``deploy/k8s`` use
their own probes.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

HTTP_COMMANDS = {"coordinator", "dev"}
KNOWN_COMMANDS = HTTP_COMMANDS | {"runner", "migrate", "enqueue", "stats", "jobs"}


def pgq_command(cmdline: list[str]) -> str | None:
    """The pgq subcommand in a command line such as ``[python, /opt/pgq/bin/pgq, runner, m:r]``."""
    for arg in cmdline:
        if arg in KNOWN_COMMANDS:
            return arg
    return None


def flag_value(cmdline: list[str], flag: str) -> str | None:
    """The value of ``flag`` (``--flag V`` or ``--flag=V``) in a command line, if given."""
    for i, arg in enumerate(cmdline):
        if arg == flag and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def load_settings() -> ModuleType:
    """``pgq/settings.py`` of the installed pgq, without running ``pgq/__init__.py``."""
    spec = importlib.util.find_spec("pgq")  # a top-level package is found, not imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pgq-healthcheck: pgq is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "settings.py"
    module_spec = importlib.util.spec_from_file_location("pgq_settings", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses looks its module up while defining
    module_spec.loader.exec_module(module)
    return module


def main() -> int:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        cmdline = []
    command = pgq_command(cmdline)
    if command is not None and command not in HTTP_COMMANDS and command != "runner":
        return 0

    settings = load_settings()
    try:
        if command == "runner":
            port = flag_value(cmdline, "--health-port") or settings.read("PGQ_HEALTH_PORT")
            host, path = "127.0.0.1", "/readyz"
            if port is None:
                return 0  # no probe port: nothing to ask
        else:
            host, port, path = settings.read("PGQ_HOST"), settings.read("PGQ_PORT"), "/health"
    except ValueError as exc:
        print(f"pgq-healthcheck: {exc}", file=sys.stderr)
        return 1
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        # HTTPError (the 503 case) is a URLError subclass.
        print(f"pgq-healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

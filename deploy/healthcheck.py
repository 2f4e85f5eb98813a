#!/usr/bin/env python3
"""Docker HEALTHCHECK for the pgq image: exit 0 when healthy, 1 when not.

One image runs three roles, and only one of them serves HTTP:

- ``pgq coordinator`` (and ``pgq dev``): healthy when ``GET /health`` on
  ``127.0.0.1:$PGQ_PORT`` answers 200. pgq answers 503 when the database is
  unreachable, which counts as unhealthy.
- ``pgq runner`` and ``pgq migrate`` serve no HTTP. Docker only runs this check
  while the container's main process is alive, and an alive process is all
  that can be checked from outside, so they are reported healthy.

The role is read from PID 1's command line (the ENTRYPOINT is ``pgq``; under
``docker run --init`` PID 1 is the init process, whose arguments still name
the command). Standard library only: the image has no curl.

Kubernetes ignores Docker's HEALTHCHECK; the manifests in ``deploy/k8s`` use
their own probes.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

HTTP_COMMANDS = {"coordinator", "dev"}
KNOWN_COMMANDS = HTTP_COMMANDS | {"runner", "migrate", "enqueue", "stats", "jobs"}


def pgq_command(cmdline: list[str]) -> str | None:
    """The pgq subcommand in a command line such as ``[python, /opt/pgq/bin/pgq, runner, m:r]``."""
    for arg in cmdline:
        if arg in KNOWN_COMMANDS:
            return arg
    return None


def main() -> int:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        cmdline = []
    command = pgq_command(cmdline)
    if command is not None and command not in HTTP_COMMANDS:
        return 0

    host = os.environ.get("PGQ_HOST", "0.0.0.0")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = os.environ.get("PGQ_PORT", "3001")
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        # HTTPError (the 503 case) is a URLError subclass.
        print(f"pgq-healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

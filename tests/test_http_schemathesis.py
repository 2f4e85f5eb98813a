"""Property-based run of schemathesis against ``/openapi.json`` of a live coordinator.

The coordinator runs as a real process (``python -m pgq coordinator``) on this test's
database; schemathesis (its CLI, as a user would run it) generates valid and invalid
requests for every operation and checks: no 5xx, every status and content type is
documented, every response body matches its schema, and requests that break the schema
are refused. Long polls are capped at 0.2 s (``PGQ_MAX_WAIT_SECONDS``) so generated
``wait_seconds`` values do not stall the run. Bounded: a fixed seed, a few examples per
operation, one worker (schemathesis' threaded workers trip a hypothesis bug on 3.11).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import aiohttp

from .support import free_port, wait_healthy

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


def schemathesis_cli() -> str:
    local = Path(sys.executable).with_name("st")
    found = str(local) if local.exists() else shutil.which("st")
    assert found, "schemathesis is required for this test: pip install 'schemathesis>=4.3'"
    return found


async def test_schemathesis_finds_no_server_errors_and_no_schema_drift(
    dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env.update(PGQ_DATABASE_URL=dsn, PGQ_MAX_WAIT_SECONDS="0.2", PGQ_LOG_LEVEL="INFO")
    log_path = tmp_path / "coordinator.log"
    with log_path.open("wb") as log_file:
        coordinator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pgq",
            "coordinator",
            "--port",
            str(port),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                await wait_healthy(http, url, coordinator)
            st = await asyncio.create_subprocess_exec(
                schemathesis_cli(),
                "run",
                f"{url}/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                "8",
                "--seed",
                "20261128",
                "--workers",
                "1",
                "--request-timeout",
                "10",
                "--no-color",
                # event streams never end by design, and the dashboard's page is HTML:
                # both are tested by tests/test_http_events.py and the browser tests
                "--exclude-path-regex",
                "(/events$|^/ui)",
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(st.communicate(), 150)
            report = out.decode(errors="replace")
            assert st.returncode == 0, report[-6000:]
            assert "passed" in report and "failed" not in report.split("SUMMARY")[-1]
        finally:
            coordinator.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(coordinator.wait(), 30)
            except TimeoutError:
                coordinator.kill()
                await coordinator.wait()
                raise
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    # nothing on our side failed while being fuzzed: no error lines, no tracebacks
    assert '"level":"error"' not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]

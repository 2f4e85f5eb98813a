"""Token scopes over every route, the token file, short tokens, and the Host check.

The scope matrix walks the app's router and the OpenAPI document, so a route added without
an entry in ``auth.ROUTE_SCOPES`` fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from pgq import queries
from pgq.config import ConfigError
from pgq.coordinator import auth, openapi
from pgq.coordinator.settings import Settings
from pgq.coordinator.tokens import HOLDS, SCOPES

from .support import coordinator, live_app, start_http_runner, wait_status
from .test_http_ops import coordinator_env

TOKENS = {scope: f"{scope}-token-0123456789abcdef" for scope in SCOPES}
ENTRIES = tuple(f"{scope}:{token}" for scope, token in TOKENS.items())
SAMPLE = {"{id}": "1", "{name}": "nightly", "{queue}": "default"}


def _concrete(template: str) -> str:
    for placeholder, value in SAMPLE.items():
        template = template.replace(placeholder, value)
    return template


def _routes(app: object) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():  # type: ignore[attr-defined]
        if route.method in ("HEAD", "*"):
            continue
        routes.add((route.method, route.resource.canonical))
    return routes


def test_every_route_and_operation_declares_its_scope() -> None:
    from pgq.coordinator.app import create_app

    app = create_app("postgresql://nobody@127.0.0.1:1/x", Settings())
    routed = _routes(app)
    missing = sorted(r for r in routed if r not in auth.ROUTE_SCOPES)
    assert not missing, f"routes without a scope in auth.ROUTE_SCOPES: {missing}"
    for path, operations in openapi.document()["paths"].items():
        for method, op in operations.items():
            key = (method.upper(), path)
            assert key in auth.ROUTE_SCOPES, f"{key} is documented but has no scope"
            scope = auth.ROUTE_SCOPES[key]
            assert op.get("x-pgq-scope") == scope, key
            if scope is None:
                assert op["security"] == [], key
            else:
                assert "403" in op["responses"] and {"bearer": []} in op["security"], key


async def test_each_scope_may_call_exactly_its_routes(dsn: str) -> None:
    async with live_app(dsn, api_tokens=ENTRIES) as live:
        routed = _routes(live.app)
        assert ("POST", "/jobs/claim") in routed and ("DELETE", "/jobs/{id}") in routed
        for method, template in sorted(routed):
            needed = auth.ROUTE_SCOPES[(method, template)]
            url = live.url + _concrete(template)
            # an empty JSON body: handlers refuse it (400) or act on nothing, never 401/403
            kw = {"data": b"{}", "headers": {"Content-Type": "application/json"}}
            kw = kw if method in ("POST", "PUT") else {"headers": {}}
            async with live.http.request(method, url, **kw) as resp:  # type: ignore[arg-type]
                assert (resp.status == 401) == (needed is not None), (method, template)
            for scope, token in TOKENS.items():
                headers = {**kw["headers"], "Authorization": f"Bearer {token}"}  # type: ignore[dict-item]
                async with live.http.request(
                    method,
                    url,
                    data=kw.get("data"),  # type: ignore[arg-type]
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=20),
                ) as resp:
                    allowed = needed is None or needed in HOLDS[scope]
                    if allowed:
                        assert resp.status not in (401, 403), (scope, method, template)
                    else:
                        assert resp.status == 403, (scope, method, template, resp.status)
                        body = await resp.json()
                        assert body["error"]["code"] == "forbidden"
                        assert token not in body["error"]["message"]


async def test_scopes_in_practice(dsn: str) -> None:
    """A producer enqueues but cannot claim or cancel; a worker claims; a reader reads."""
    async with live_app(dsn, api_tokens=ENTRIES) as live:

        def as_(scope: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {TOKENS[scope]}"}

        status, job, _ = await live.request(
            "POST", "/jobs", json={"type": "X"}, headers=as_("producer")
        )
        assert status == 201
        for scope, method, path, body in [
            ("producer", "POST", "/jobs/claim", {"worker_id": "w"}),
            ("producer", "DELETE", f"/jobs/{job['id']}", None),
            ("reader", "POST", "/jobs", {"type": "X"}),
            ("worker", "POST", "/jobs", {"type": "X"}),
            ("worker", "POST", f"/jobs/{job['id']}/retry", None),
        ]:
            status, answer, _ = await live.request(method, path, json=body, headers=as_(scope))
            assert status == 403 and answer["error"]["code"] == "forbidden", (scope, path)
        status, answer, _ = await live.request("GET", "/jobs", headers=as_("reader"))
        assert status == 200 and [j["id"] for j in answer["jobs"]] == [job["id"]]
        status, answer, _ = await live.request(
            "POST", "/jobs/claim", json={"worker_id": "w"}, headers=as_("worker")
        )
        assert status == 200 and [j["id"] for j in answer["jobs"]] == [job["id"]]
        status, answer, _ = await live.request("DELETE", f"/jobs/{job['id']}", headers=as_("admin"))
        assert status == 200 and answer["status"] == "cancelled"
        # a bare token is admin
    async with live_app(dsn, api_tokens=("bare-token-0123456789abcdef",)) as live:
        status, _, _ = await live.request(
            "DELETE",
            f"/jobs/{job['id']}",
            headers={"Authorization": "Bearer bare-token-0123456789abcdef"},
        )
        assert status == 409  # allowed; the job is already cancelled


def test_token_entries_are_parsed_strictly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown scope 'reder'"):
        Settings(api_tokens=("reder:abcdefghijklmnopqrstuvwxyz",))
    with pytest.raises(ConfigError, match="empty token"):
        Settings(api_tokens=("worker:",))
    # a colon inside a bare token is fine when what precedes it is not a word
    Settings(api_tokens=("Ab9:cdefghijklmnopqrstuvwxyz",))

    token_file = tmp_path / "tokens"
    token_file.write_text(
        "# rotated monthly\nreader:from-the-file-0123456789\n\nadmin:second-file-token-0123\n"
    )
    monkeypatch.setenv("PGQ_API_TOKENS", "worker:from-the-env-0123456789")
    monkeypatch.setenv("PGQ_API_TOKENS_FILE", str(token_file))
    assert Settings.from_env().api_tokens == (
        "worker:from-the-env-0123456789",
        "reader:from-the-file-0123456789",
        "admin:second-file-token-0123",
    )
    monkeypatch.setenv("PGQ_API_TOKENS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="PGQ_API_TOKENS_FILE"):
        Settings.from_env()


async def test_a_token_from_the_file_is_accepted(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("reader:file-token-0123456789abcdef\n")
    monkeypatch.delenv("PGQ_API_TOKENS", raising=False)
    monkeypatch.setenv("PGQ_API_TOKENS_FILE", str(token_file))
    async with live_app(dsn, Settings.from_env()) as live:
        status, _, _ = await live.request("GET", "/jobs")
        assert status == 401
        status, _, _ = await live.request(
            "GET", "/jobs", headers={"Authorization": "Bearer file-token-0123456789abcdef"}
        )
        assert status == 200


@pytest.mark.parametrize("tokens", ["short", "reader:short,admin:long-enough-0123456789"])
def test_a_public_address_refuses_short_tokens(tokens: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgq", "coordinator", "--host", "0.0.0.0", "--port", "1"],
        env=coordinator_env("postgresql://nobody@127.0.0.1:1/x", PGQ_API_TOKENS=tokens),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "at least 16 characters" in proc.stderr and "Traceback" not in proc.stderr
    assert "short" not in proc.stderr.replace("short bearer tokens", "")  # no token echoed


async def test_without_tokens_only_loopback_hosts_are_served(dsn: str) -> None:
    async with live_app(dsn) as live:
        port = live.url.rsplit(":", 1)[1]
        for host in (
            "rebind.attacker.example",
            f"rebind.attacker.example:{port}",
            "10.0.0.1",
            "127.0.0.1.nip.io",
        ):
            status, body, _ = await live.request("GET", "/jobs", headers={"Host": host})
            assert status == 400 and body["error"]["code"] == "bad_host", host
            status, _, _ = await live.request("GET", "/health", headers={"Host": host})
            assert status == 400, host
        for host in (
            "localhost",
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            "127.8.9.1",
            f"[::1]:{port}",
            "app.localhost",
            "LOCALHOST.",
        ):
            status, _, _ = await live.request("GET", "/jobs", headers={"Host": host})
            assert status == 200, host


async def test_with_tokens_any_host_is_served(dsn: str) -> None:
    async with live_app(dsn, api_tokens=ENTRIES) as live:
        status, _, _ = await live.request(
            "GET",
            "/jobs",
            headers={"Host": "pgq.internal.example", "Authorization": f"Bearer {TOKENS['reader']}"},
        )
        assert status == 200


async def test_an_http_runner_works_with_a_worker_token_read_from_a_file(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A worker token suffices for everything a runner does (claim, complete, heartbeat,
    release), and PGQ_API_TOKEN_FILE keeps it off the runner's command line."""
    token_file = tmp_path / "runner-token"
    token_file.write_text(TOKENS["worker"] + "\n")
    job, _ = await queries.enqueue(conn, "TEST", {})
    async with coordinator(dsn, api_tokens=ENTRIES) as coord:
        proc = start_http_runner(coord, tmp_path, env={"PGQ_API_TOKEN_FILE": str(token_file)})
        try:
            await wait_status(conn, job.id, "succeeded", timeout=30)
            assert TOKENS["worker"] not in " ".join(map(str, proc.proc.args))  # not in ps
        finally:
            proc.stop()

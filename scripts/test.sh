#!/usr/bin/env bash
# Set up, lint (ruff, import-linter's layer contracts), and run every test (slow end-to-end ones
# included). pytest's exit 5 (no tests collected) is a failure like any other non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup_system.sh
scripts/setup_infra.sh  # checkov and the kubernetes client, in .venv-infra (their own pins)
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports  # the layer contracts in pyproject.toml
exec .venv/bin/python -m pytest "$@"

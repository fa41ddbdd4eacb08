#!/usr/bin/env bash
# The main job: set up, generate the embedded default data, train, evaluate, export, start
# Triton and the gateway, and recommend through the client (serves until Ctrl-C; --once exits).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/musicrec demo "$@"
